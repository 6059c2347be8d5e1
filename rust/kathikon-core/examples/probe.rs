//! Profile claim and ack batches: `cargo run --release -p kathikon-core --example probe`.
mod common;

use kathikon_core::Jobs;
use kathikon_core::{Engine, EngineConfig, NewJob};
use std::time::{Duration, Instant};

fn job() -> NewJob {
    NewJob { worker: "m.f".into(), args: "{\"i\":1}".into(), ..common::noop_job() }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        Engine::open(EngineConfig { path: Some(dir.path().join("p.redb")), ..Default::default() })
            .unwrap();
    let n: u32 = 2000;
    let t = Instant::now();
    for _ in 0..n {
        engine.insert(vec![job()]).unwrap();
    }
    let dt = t.elapsed();
    eprintln!(
        "single insert: {:.0}/s ({:.0}us)",
        f64::from(n) / dt.as_secs_f64(),
        dt.as_micros() as f64 / f64::from(n)
    );
    let n: u32 = 200_000;
    let jobs: Vec<_> = (0..n).map(|_| job()).collect();
    let t = Instant::now();
    engine.insert(jobs).unwrap();
    let dt = t.elapsed();
    eprintln!("insert_all {n}: {:.0}/s", f64::from(n) / dt.as_secs_f64());
    let t = Instant::now();
    let mut done = 0;
    loop {
        let jobs = engine.claim("default", 1000, Duration::ZERO).unwrap();
        if jobs.is_empty() {
            break;
        }
        done += jobs.len();
        let acks = jobs
            .iter()
            .map(|j| kathikon_core::Ack {
                id: j.id,
                attempt: j.attempt,
                outcome: kathikon_core::Outcome::Complete,
            })
            .collect();
        engine.ack(acks).unwrap();
    }
    let dt = t.elapsed();
    eprintln!("claim+ack batches of 1000 ({done}): {:.0}/s", done as f64 / dt.as_secs_f64());
}
