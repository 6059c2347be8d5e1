//! Profile the writer's side of a drain: jobs stored first, then claimed and acknowledged in
//! batches (as the Python lanes do, acks sent without waiting) on a file store with the
//! default durability. `cargo run --release --example drain [jobs] [batch]` prints the rate
//! and the writer thread's CPU per job; run it under `valgrind --tool=callgrind` for where the
//! instructions go.
mod common;

use std::time::{Duration, Instant};

use kathikon_core::Jobs;
use kathikon_core::{Ack, Engine, EngineConfig, Outcome};

/// CPU seconds used so far by this process's thread named `name` (Linux).
fn thread_cpu(name: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let user: f64 = fields[11].parse().unwrap();
        let system: f64 = fields[12].parse().unwrap();
        total += (user + system) / tick;
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().unwrap());
    let n = args.next().unwrap_or(200_000);
    let batch = args.next().unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let engine =
        Engine::open(EngineConfig { path: Some(dir.path().join("d.redb")), ..Default::default() })
            .unwrap();
    let job = common::noop_job();
    for start in (0..n).step_by(10_000) {
        engine.insert(vec![job.clone(); (n - start).min(10_000)]).unwrap();
    }
    engine.sync().unwrap();
    let cpu = thread_cpu("kathikon-writer");
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let jobs = engine.claim("default", batch, Duration::ZERO).unwrap();
        done += jobs.len();
        let acks = jobs
            .iter()
            .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
            .collect();
        engine.ack_nowait(acks).unwrap();
    }
    engine.sync().unwrap();
    let dt = t.elapsed().as_secs_f64();
    let writer = thread_cpu("kathikon-writer") - cpu;
    eprintln!("{:.0} jobs/s; writer CPU {:.2} µs per job", n as f64 / dt, writer / n as f64 * 1e6);
}
