//! Time promoting many due jobs at once (a burst of jobs scheduled for the same moment):
//! `cargo run --release --example promote [jobs]`, or under `valgrind --tool=callgrind`.
mod common;

use std::time::Instant;

use kathikon_core::Jobs;
use kathikon_core::{Engine, EngineConfig, NewJob};

fn main() {
    let n: usize = std::env::args().nth(1).map_or(100_000, |a| a.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let engine =
        Engine::open(EngineConfig { path: Some(dir.path().join("p.redb")), ..Default::default() })
            .unwrap();
    let hour = 3_600_000_000;
    let later = NewJob { scheduled_at: Some(engine.clock().now() + hour), ..common::noop_job() };
    for start in (0..n).step_by(10_000) {
        engine.insert(vec![later.clone(); (n - start).min(10_000)]).unwrap();
    }
    let t = Instant::now();
    // Each transaction promotes a bounded chunk; sync until every job is ready.
    while engine.ready_count("default").unwrap() < n {
        engine.sync_promoting(engine.clock().now() + 2 * hour).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    eprintln!("promoted {n} jobs in {:.3} s ({:.2} µs each)", dt, dt / n as f64 * 1e6);
}
