//! Instruction profile of the job cycle (insert, claim, ack) for callgrind:
//! `valgrind --tool=callgrind target/release/examples/cycle`.
mod common;

use std::time::Duration;

use kathikon_core::Jobs;
use kathikon_core::{Ack, Durability, Engine, EngineConfig, NewJob, Outcome};

fn main() {
    let engine = Engine::open(EngineConfig {
        path: None,
        durability: Durability::None,
        ..EngineConfig::default()
    })
    .unwrap();
    let job = NewJob { worker: "m.f".into(), ..common::noop_job() };
    let n = 20_000;
    engine.insert(vec![job; n]).unwrap();
    loop {
        let jobs = engine.claim("default", 500, Duration::ZERO).unwrap();
        if jobs.is_empty() {
            break;
        }
        let acks = jobs
            .iter()
            .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
            .collect();
        engine.ack(acks).unwrap();
    }
}
