//! Proves the engine's own timers: due jobs are promoted by the writer's timer with no call
//! to wake it, and the pruner deletes old finished jobs on its own. What each ack outcome,
//! retry, cancel and prune does through the contract is in `tests/conformance`.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{claim_one, finish, insert_one, job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::Jobs;
use kathikon_core::{Clock, Engine, EngineConfig, JobState, NewJob, Outcome, SystemClock};

#[test]
fn due_jobs_are_promoted_by_the_writer_timer() {
    let engine = Engine::open(EngineConfig {
        scheduler_interval: Duration::from_secs(60), // only the due time can wake the writer
        ..EngineConfig::default()
    })
    .unwrap();
    let due = SystemClock.now() + 200_000;
    let scheduled = insert_one(&engine, NewJob { scheduled_at: Some(due), ..job("q", "w") });
    assert_eq!(scheduled.state, JobState::Scheduled);
    assert_eq!(engine.ready_count("q").unwrap(), 0);
    assert!(engine.claim("q", 1, Duration::ZERO).unwrap().is_empty());

    // No further call to the engine until the job shows up as available.
    let started = Instant::now();
    let promoted = loop {
        let job = engine.get(scheduled.id).unwrap();
        if job.state == JobState::Available {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "never promoted: {job:?}");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(SystemClock.now() >= due);
    assert_eq!(promoted.scheduled_at, due);
    // The store shows the promotion a moment before the claim queue does: wait for it.
    let claimed = engine.claim("q", 1, Duration::from_secs(1)).unwrap().pop().expect("claimable");
    assert_eq!((claimed.id, claimed.attempt), (scheduled.id, 1));

    // A waiting claimer is woken by the promotion of a retry, again with no other call.
    let retry_in = 150_000;
    let failed =
        finish(&engine, &claimed, Outcome::Fail { error: "e".into(), retry_in: Some(retry_in) });
    assert_eq!(failed.state, JobState::Retryable);
    let started = Instant::now();
    let again = engine.claim("q", 1, Duration::from_secs(2)).unwrap();
    assert_eq!(again.len(), 1, "the retry was not promoted in time");
    assert_eq!((again[0].id, again[0].attempt), (scheduled.id, 2));
    assert!(again[0].attempted_at.unwrap() >= failed.scheduled_at);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn the_pruner_runs_on_its_own() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(EngineConfig {
        prune_interval: Duration::from_millis(30),
        retention: Duration::from_secs(60).into(),
        clock: clock.clone(),
        ..EngineConfig::default()
    })
    .unwrap();
    insert_one(&engine, job("q", "w"));
    insert_one(&engine, job("q", "w"));
    let done = finish(&engine, &claim_one(&engine, "q"), Outcome::Complete);
    let kept = claim_one(&engine, "q");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(engine.get(done.id).unwrap(), done, "pruned before its retention passed");
    clock.advance(61 * SECOND);
    let started = Instant::now();
    while engine.get(done.id).is_ok() {
        assert!(started.elapsed() < Duration::from_secs(2), "the pruner never ran");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(engine.get(kept.id).unwrap(), kept);
}
