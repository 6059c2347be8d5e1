//! Profile one-by-one inserts: `cargo run --release --example single`.
use std::time::Instant;

use kathikon_core::{Engine, EngineConfig, NewJob};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        Engine::open(EngineConfig { path: Some(dir.path().join("p.redb")), ..Default::default() })
            .unwrap();
    let job = NewJob {
        queue: "default".into(),
        worker: "m.f".into(),
        args: "{}".into(),
        meta: "{}".into(),
        tags: vec![],
        max_attempts: 20,
        priority: 0,
        scheduled_at: None,
    };
    let n = 3000;
    let t = Instant::now();
    for _ in 0..n {
        engine.insert(vec![job.clone()]).unwrap();
    }
    let dt = t.elapsed();
    eprintln!(
        "{:.0} inserts/s, {:.0} us each",
        f64::from(n) / dt.as_secs_f64(),
        dt.as_micros() as f64 / f64::from(n)
    );
}
