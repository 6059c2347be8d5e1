//! Time the open of a store of `N` jobs (default 1,000,000: 90 % available, 10 % scheduled, as
//! `kathikon bench`'s open workload): `cargo run --release --example open_million [N] [PATH]`.
//! The store is built once at `PATH` (default: a temporary file) and opened three times.
mod common;

use std::path::PathBuf;
use std::time::Instant;

use kathikon_core::Jobs;
use kathikon_core::{Engine, EngineConfig, NewJob};

#[allow(clippy::print_stdout)]
fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(1_000_000, |a| a.parse().expect("N is a number"));
    let dir = tempfile::tempdir().unwrap();
    let path = args.next().map_or_else(|| dir.path().join("big.redb"), PathBuf::from);
    let config = || EngineConfig { path: Some(path.clone()), ..EngineConfig::default() };
    if !path.exists() {
        let engine = Engine::open(config()).unwrap();
        let far = engine.clock().now() + 3_600_000_000;
        let mut i = 0;
        while i < n {
            let batch = (i..n.min(i + 10_000))
                .map(|k| NewJob {
                    scheduled_at: (k % 10 == 0).then_some(far),
                    unique: None,
                    batch: None,
                    ..common::noop_job()
                })
                .collect();
            engine.insert(batch).unwrap();
            i += 10_000;
        }
        engine.close();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!("{n} jobs, {:.1} MB", size as f64 / 1e6);
    for round in 0..3 {
        let start = Instant::now();
        let engine = Engine::open(config()).unwrap();
        let opened = start.elapsed();
        println!(
            "open {round}: {:.3} s, {} ready",
            opened.as_secs_f64(),
            engine.ready_count("default").unwrap()
        );
        engine.close();
    }
}
