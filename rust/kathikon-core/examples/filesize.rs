//! File bytes per stored job after 200,000 inserts in batches of 10,000 (one in ten scheduled
//! for later, like `kathikon bench`'s open workload) and a clean close:
//! `cargo run --release --example filesize`. `SLEEP=ms` pauses between batches (default 15),
//! giving the writer idle time to file the jobs (`storage/redb/unfiled.rs`).
mod common;

use std::time::Duration;

use kathikon_core::Jobs;
use kathikon_core::{Engine, EngineConfig, NewJob};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.redb");
    let engine =
        Engine::open(EngineConfig { path: Some(path.clone()), ..Default::default() }).unwrap();
    let pause = std::env::var("SLEEP").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let n: u64 = 200_000;
    for offset in (0..n).step_by(10_000) {
        let batch: Vec<NewJob> = (offset..offset + 10_000)
            .map(|i| NewJob {
                scheduled_at: (i % 10 == 0).then_some(i64::MAX / 4),
                unique: None,
                batch: None,
                ..common::noop_job()
            })
            .collect();
        engine.insert(batch).unwrap();
        std::thread::sleep(Duration::from_millis(pause));
    }
    engine.close();
    let size = std::fs::metadata(&path).unwrap().len();
    eprintln!("{} bytes per job", size / n);
}
