//! Proves retention per terminal state: the pruner deletes each finished job once its own
//! state's period has passed, and keeps the others, on a hand-moved clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{claim_one, finish, insert_one, job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::{Engine, EngineConfig, EngineEvent, JobState, Jobs, Outcome, Retention};

const HOUR: i64 = 3600 * SECOND;

/// Wait for the pruner's next step that deletes something; returns how many it deleted.
fn next_prune(engine: &Engine) -> u64 {
    for _ in 0..500 {
        for event in engine.next_events(Duration::from_millis(100)) {
            if let EngineEvent::PrunerTick { pruned, .. } = event {
                return pruned;
            }
        }
    }
    panic!("the pruner deleted nothing within 50 s");
}

#[test]
fn each_terminal_state_is_kept_for_its_own_period() {
    let clock = Arc::new(ManualClock::new(T0));
    let retention = Retention::default()
        .with(JobState::Completed, Duration::from_secs(3600))
        .and_then(|r| r.with(JobState::Cancelled, Duration::from_secs(2 * 3600)))
        .unwrap();
    let engine = Engine::open(EngineConfig {
        prune_interval: Duration::from_millis(20),
        retention,
        clock: clock.clone(),
        ..EngineConfig::default()
    })
    .unwrap();
    engine.set_events(true);
    let mut finished = Vec::new();
    for outcome in [
        Outcome::Complete,
        Outcome::Cancel { reason: "c".into() },
        Outcome::Discard { reason: "d".into() },
    ] {
        insert_one(&engine, job("q", "w"));
        finished.push(finish(&engine, &claim_one(&engine, "q"), outcome));
    }
    let [completed, cancelled, discarded] = &finished[..] else { unreachable!() };

    clock.advance(HOUR + SECOND);
    assert_eq!(next_prune(&engine), 1);
    assert!(engine.get(completed.id).is_err(), "the completed job outlived its hour");
    assert_eq!(engine.get(cancelled.id).unwrap(), *cancelled);
    assert_eq!(engine.get(discarded.id).unwrap(), *discarded);

    clock.advance(HOUR);
    assert_eq!(next_prune(&engine), 1);
    assert!(engine.get(cancelled.id).is_err(), "the cancelled job outlived its two hours");
    assert_eq!(engine.get(discarded.id).unwrap(), *discarded, "discarded before 7 days");

    clock.advance(7 * 24 * HOUR);
    assert_eq!(next_prune(&engine), 1);
    assert!(engine.get(discarded.id).is_err(), "the discarded job outlived its 7 days");
}
