//! Profile `insert` of 1,000-job batches into a file store with the default durability:
//! `cargo run --release --example insert_all` for the rate, or under
//! `valgrind --tool=callgrind` for where the instructions go.
mod common;

use std::time::Instant;

use kathikon_core::Jobs;
use kathikon_core::{Engine, EngineConfig};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        Engine::open(EngineConfig { path: Some(dir.path().join("p.redb")), ..Default::default() })
            .unwrap();
    let job = common::noop_job();
    let (batches, size): (u32, u32) = (100, 1000);
    let t = Instant::now();
    for _ in 0..batches {
        engine.insert(vec![job.clone(); size as usize]).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    let n = f64::from(batches * size);
    eprintln!("{:.0} jobs/s, {:.2} µs each", n / dt, dt / n * 1e6);
}
