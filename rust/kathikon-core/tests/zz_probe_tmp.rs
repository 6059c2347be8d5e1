//! temporary probe
mod common;
use std::sync::Arc;
use std::time::Duration;
use common::{job, insert_one, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::{Engine, EngineConfig, NewJob, JobState};
#[test]
fn probe() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(EngineConfig { scheduler_interval: Duration::from_secs(60), clock: clock.clone(), ..Default::default() }).unwrap();
    let j = insert_one(&engine, NewJob { scheduled_at: Some(T0 + 10 * SECOND), ..job("q", "w") });
    clock.advance(20 * SECOND);
    let (c, was) = engine.cancel(j.id).unwrap();
    eprintln!("was {was} now {}", c.state);
    eprintln!("ready_count {}", engine.ready_count("q"));
    eprintln!("claim {:?}", engine.claim("q", 1, Duration::ZERO).unwrap().len());
    eprintln!("ready_count {}", engine.ready_count("q"));
    assert_eq!(engine.get(j.id).unwrap().state, JobState::Cancelled);
}
