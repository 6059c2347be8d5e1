//! Profile one-by-one inserts: `cargo run --release --example single`. Prints the raw rate of
//! small appends + `fdatasync` to a preallocated file in the same directory first, the floor
//! a durable one-by-one insert is measured against.
mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use kathikon_core::Jobs;
use kathikon_core::{Durability, Engine, EngineConfig, NewJob};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let raw = {
        let mut file = std::fs::File::create(dir.path().join("raw")).unwrap();
        file.write_all(&vec![0; 1024 * 1024]).unwrap();
        file.sync_all().unwrap();
        let t = Instant::now();
        for i in 0..n {
            file.write_all_at(&[1; 100], (i * 100) % (1024 * 1024 - 100)).unwrap();
            file.sync_data().unwrap();
        }
        f64::from(n as u32) / t.elapsed().as_secs_f64()
    };
    eprintln!("raw write+fdatasync: {raw:.0}/s");
    let engine =
        Engine::open(EngineConfig { path: Some(dir.path().join("p.redb")), ..Default::default() })
            .unwrap();
    let job = NewJob { worker: "m.f".into(), ..common::noop_job() };
    let t = Instant::now();
    for _ in 0..n {
        engine.insert(vec![job.clone()]).unwrap();
    }
    let dt = t.elapsed();
    let rate = f64::from(n as u32) / dt.as_secs_f64();
    eprintln!(
        "{rate:.0} inserts/s, {:.0} us each ({:.0}% of raw)",
        dt.as_micros() as f64 / f64::from(n as u32),
        100.0 * rate / raw
    );
    // The same without any fsync: the CPU cost of a commit, which the fsync adds to.
    let engine = Engine::open(EngineConfig {
        path: Some(dir.path().join("nosync.redb")),
        durability: Durability::None,
        ..Default::default()
    })
    .unwrap();
    let t = Instant::now();
    for _ in 0..n {
        engine.insert(vec![job.clone()]).unwrap();
    }
    let dt = t.elapsed();
    eprintln!(
        "without fsync: {:.0} inserts/s, {:.0} us each",
        f64::from(n as u32) / dt.as_secs_f64(),
        dt.as_micros() as f64 / f64::from(n as u32)
    );
}
