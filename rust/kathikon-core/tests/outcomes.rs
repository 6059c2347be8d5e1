//! Proves what each ack outcome, retry, cancel and prune does to stored jobs: complete, fail (retry at now + `retry_in`, or discard when attempts run out), snooze, cancel and discard with reasons; stale acks change nothing; due jobs are promoted by the writer's own timer; and old finished jobs are pruned.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{claim_one, finish, insert_one, job, open, open_manual, store_path, T0};
use kathikon_core::backoff::default_backoff;
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::Jobs;
use kathikon_core::{
    Ack, AckResult, Clock, Engine, EngineConfig, Error, Job, JobError, JobState, ListFilter,
    NewJob, Outcome, SystemClock,
};

fn manual() -> (Arc<ManualClock>, Engine) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open_manual(None, &clock);
    (clock, engine)
}

fn ack(engine: &Engine, job: &Job, attempt: u32, outcome: Outcome) -> AckResult {
    engine.ack(vec![Ack { id: job.id, attempt, outcome }]).unwrap().remove(0)
}

#[test]
fn complete_records_when() {
    let (clock, engine) = manual();
    insert_one(&engine, job("q", "w"));
    clock.advance(SECOND);
    let running = claim_one(&engine, "q");
    assert_eq!(running.attempted_at, Some(T0 + SECOND));
    clock.advance(2 * SECOND);
    let done = finish(&engine, &running, Outcome::Complete);
    assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    assert_eq!(done.completed_at, Some(T0 + 3 * SECOND));
    assert!(done.errors.is_empty());
    assert_eq!(engine.get(done.id).unwrap(), done);
}

#[test]
fn fail_retries_at_now_plus_retry_in_then_discards_when_exhausted() {
    let (clock, engine) = manual();
    let inserted = insert_one(&engine, NewJob { max_attempts: 3, ..job("q", "w") });
    let first = claim_one(&engine, "q");
    clock.advance(SECOND);
    let failed =
        finish(&engine, &first, Outcome::Fail { error: "boom".into(), retry_in: Some(5 * SECOND) });
    assert_eq!(failed.state, JobState::Retryable);
    assert_eq!(failed.scheduled_at, T0 + 6 * SECOND);
    assert_eq!(failed.errors, vec![JobError { at: T0 + SECOND, attempt: 1, error: "boom".into() }]);
    assert_eq!(failed.discarded_at, None);
    assert_eq!(engine.get(inserted.id).unwrap(), failed);

    // Not claimable before its time, even when the writer looks.
    clock.advance(4 * SECOND);
    engine.sync().unwrap();
    assert_eq!(engine.get(inserted.id).unwrap().state, JobState::Retryable);
    assert!(engine.claim("q", 1, Duration::ZERO).unwrap().is_empty());
    clock.advance(SECOND); // exactly due
    engine.sync().unwrap();
    assert_eq!(engine.get(inserted.id).unwrap().state, JobState::Available);

    // Without retry_in the default backoff applies.
    let second = claim_one(&engine, "q");
    assert_eq!(second.attempt, 2);
    let failed = finish(&engine, &second, Outcome::Fail { error: "again".into(), retry_in: None });
    assert_eq!(failed.state, JobState::Retryable);
    assert_eq!(failed.scheduled_at, T0 + 6 * SECOND + default_backoff(2, inserted.id));

    engine.retry(inserted.id).unwrap();
    let third = claim_one(&engine, "q");
    assert_eq!(third.attempt, 3);
    clock.advance(SECOND);
    let gone =
        finish(&engine, &third, Outcome::Fail { error: "last".into(), retry_in: Some(SECOND) });
    assert_eq!(gone.state, JobState::Discarded);
    assert_eq!(gone.discarded_at, Some(T0 + 7 * SECOND));
    assert_eq!(
        gone.errors.iter().map(|e| (e.attempt, e.error.as_str())).collect::<Vec<_>>(),
        vec![(1, "boom"), (2, "again"), (3, "last")]
    );
    clock.advance(10 * SECOND);
    engine.sync().unwrap();
    assert!(engine.claim("q", 1, Duration::ZERO).unwrap().is_empty(), "discarded job came back");
}

#[test]
fn snooze_reschedules_without_using_up_an_attempt() {
    let (clock, engine) = manual();
    insert_one(&engine, NewJob { max_attempts: 1, ..job("q", "w") });
    let first = claim_one(&engine, "q");
    let snoozed = finish(&engine, &first, Outcome::Snooze { delay: 10 * SECOND });
    assert_eq!(snoozed.state, JobState::Scheduled);
    assert_eq!((snoozed.attempt, snoozed.max_attempts), (1, 2));
    assert_eq!(snoozed.scheduled_at, T0 + 10 * SECOND);
    assert!(snoozed.errors.is_empty());
    clock.advance(10 * SECOND);
    engine.sync().unwrap();
    let second = claim_one(&engine, "q");
    assert_eq!((second.id, second.attempt), (first.id, 2));
    // The attempt it got back is the last one: a failure now discards it.
    let gone = finish(&engine, &second, Outcome::Fail { error: "x".into(), retry_in: Some(1) });
    assert_eq!(gone.state, JobState::Discarded);
}

#[test]
fn cancel_and_discard_outcomes_record_their_reasons() {
    let (clock, engine) = manual();
    insert_one(&engine, job("q", "w"));
    insert_one(&engine, job("q", "w"));
    let a = claim_one(&engine, "q");
    let b = claim_one(&engine, "q");
    clock.advance(SECOND);
    let cancelled = finish(&engine, &a, Outcome::Cancel { reason: "user gave up".into() });
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.cancelled_at, Some(T0 + SECOND));
    assert_eq!(
        cancelled.errors,
        vec![JobError { at: T0 + SECOND, attempt: 1, error: "user gave up".into() }]
    );
    let discarded = finish(&engine, &b, Outcome::Discard { reason: "bad payload".into() });
    assert_eq!(discarded.state, JobState::Discarded);
    assert_eq!(discarded.discarded_at, Some(T0 + SECOND));
    assert_eq!(
        discarded.errors,
        vec![JobError { at: T0 + SECOND, attempt: 1, error: "bad payload".into() }]
    );
    assert_eq!(engine.get(a.id).unwrap(), cancelled);
    assert_eq!(engine.get(b.id).unwrap(), discarded);
}

#[test]
fn stale_acks_change_nothing() {
    let (_clock, engine) = manual();
    insert_one(&engine, job("q", "w"));
    insert_one(&engine, job("q", "w"));
    let a = claim_one(&engine, "q");
    let b = claim_one(&engine, "q");

    // Wrong attempt.
    assert_eq!(ack(&engine, &a, 2, Outcome::Complete), AckResult::Stale(Some(JobState::Executing)));
    assert_eq!(ack(&engine, &a, 0, Outcome::Complete), AckResult::Stale(Some(JobState::Executing)));
    assert_eq!(engine.get(a.id).unwrap(), a);

    // After a cancel.
    let (cancelled, was) = engine.cancel(b.id).unwrap();
    assert_eq!((was, cancelled.state), (JobState::Executing, JobState::Cancelled));
    assert_eq!(cancelled.errors.last().unwrap().error, "cancelled by user");
    for outcome in [
        Outcome::Complete,
        Outcome::Fail { error: "e".into(), retry_in: None },
        Outcome::Snooze { delay: 1 },
        Outcome::Discard { reason: "r".into() },
    ] {
        assert_eq!(ack(&engine, &b, 1, outcome), AckResult::Stale(Some(JobState::Cancelled)));
    }
    assert_eq!(engine.get(b.id).unwrap(), cancelled);

    // In a batch, a stale ack does not hold back a good one; a second ack of the same
    // attempt is stale.
    let results = engine
        .ack(vec![
            Ack { id: b.id, attempt: 1, outcome: Outcome::Complete },
            Ack { id: a.id, attempt: 1, outcome: Outcome::Complete },
            Ack { id: a.id, attempt: 1, outcome: Outcome::Discard { reason: "late".into() } },
        ])
        .unwrap();
    assert!(matches!(&results[0], AckResult::Stale(Some(JobState::Cancelled))));
    assert!(matches!(&results[1], AckResult::Applied(j) if j.state == JobState::Completed));
    assert_eq!(results[2], AckResult::Stale(Some(JobState::Completed)));
    let done = engine.get(a.id).unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert!(done.errors.is_empty());
}

#[test]
fn ack_nowait_is_applied_by_the_next_sync() {
    let (_clock, engine) = manual();
    insert_one(&engine, job("q", "w"));
    let running = claim_one(&engine, "q");
    engine
        .ack_nowait(vec![Ack { id: running.id, attempt: 1, outcome: Outcome::Complete }])
        .unwrap();
    engine.sync().unwrap();
    assert_eq!(engine.get(running.id).unwrap().state, JobState::Completed);
}

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
fn retry_makes_finished_jobs_available_and_refuses_executing_ones() {
    let (clock, engine) = manual();
    // Completed.
    insert_one(&engine, job("done", "w"));
    let done = finish(&engine, &claim_one(&engine, "done"), Outcome::Complete);
    clock.advance(SECOND);
    let retried = engine.retry(done.id).unwrap();
    assert_eq!(retried.state, JobState::Available);
    assert_eq!((retried.scheduled_at, retried.completed_at), (T0 + SECOND, None));
    assert_eq!(engine.get(done.id).unwrap(), retried);
    let rerun = claim_one(&engine, "done");
    assert_eq!((rerun.id, rerun.attempt), (done.id, 2));

    // Discarded after its only attempt: gets one more.
    insert_one(&engine, NewJob { max_attempts: 1, ..job("dis", "w") });
    let gone = finish(
        &engine,
        &claim_one(&engine, "dis"),
        Outcome::Fail { error: "e".into(), retry_in: None },
    );
    assert_eq!(gone.state, JobState::Discarded);
    let retried = engine.retry(gone.id).unwrap();
    assert_eq!(
        (retried.state, retried.max_attempts, retried.discarded_at),
        (JobState::Available, 2, None)
    );
    assert_eq!(retried.errors, gone.errors, "retry keeps the history");
    let rerun = claim_one(&engine, "dis");
    assert_eq!(rerun.attempt, 2);

    // Cancelled, and scheduled in the future: both run now.
    let cancelled = engine.cancel(insert_one(&engine, job("can", "w")).id).unwrap().0;
    let retried = engine.retry(cancelled.id).unwrap();
    assert_eq!((retried.state, retried.cancelled_at), (JobState::Available, None));
    assert_eq!(claim_one(&engine, "can").id, cancelled.id);
    let later =
        insert_one(&engine, NewJob { scheduled_at: Some(T0 + 3600 * SECOND), ..job("later", "w") });
    assert_eq!(engine.retry(later.id).unwrap().state, JobState::Available);
    assert_eq!(claim_one(&engine, "later").id, later.id);

    // Available: returned unchanged, and still claimable exactly once.
    let waiting = insert_one(&engine, job("wait", "w"));
    assert_eq!(engine.retry(waiting.id).unwrap(), waiting);
    assert_eq!(engine.claim("wait", 10, Duration::ZERO).unwrap().len(), 1);

    // Executing: refused, unchanged.
    let running = engine.get(waiting.id).unwrap();
    assert_eq!(running.state, JobState::Executing);
    let err = engine.retry(running.id).unwrap_err();
    assert!(
        matches!(err, Error::IllegalTransition { id, from: JobState::Executing, action: "retried" } if id == running.id),
        "{err:?}"
    );
    assert_eq!(engine.get(running.id).unwrap(), running);
}

#[test]
fn cancel_of_a_finished_job_returns_it_unchanged() {
    let (clock, engine) = manual();
    insert_one(&engine, job("q", "w"));
    let done = finish(&engine, &claim_one(&engine, "q"), Outcome::Complete);
    clock.advance(SECOND);
    let (job_now, state) = engine.cancel(done.id).unwrap();
    assert_eq!((job_now.clone(), state), (done.clone(), JobState::Completed));
    assert_eq!(engine.get(done.id).unwrap(), done);
    // Cancelling twice: the second returns the cancelled job unchanged.
    let scheduled =
        insert_one(&engine, NewJob { scheduled_at: Some(T0 + 3600 * SECOND), ..job("q", "w") });
    let (first, was) = engine.cancel(scheduled.id).unwrap();
    assert_eq!(
        (first.state, was, first.cancelled_at),
        (JobState::Cancelled, JobState::Scheduled, Some(T0 + SECOND))
    );
    clock.advance(SECOND);
    let (second, was) = engine.cancel(scheduled.id).unwrap();
    assert_eq!((second, was), (first, JobState::Cancelled));
    // A cancelled scheduled job is never promoted.
    clock.advance(7200 * SECOND);
    engine.sync().unwrap();
    assert_eq!(engine.get(scheduled.id).unwrap().state, JobState::Cancelled);
    assert!(engine.claim("q", 1, Duration::ZERO).unwrap().is_empty());
}

#[test]
fn prune_removes_only_old_finished_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open_manual(Some(&store_path(&dir)), &clock);
    let day = 24 * 3600 * SECOND;
    let jobs = engine.insert((0..7).map(|i| job(&format!("q{i}"), "w")).collect()).unwrap();
    let old_done = finish(&engine, &claim_one(&engine, "q0"), Outcome::Complete);
    let old_discarded =
        finish(&engine, &claim_one(&engine, "q1"), Outcome::Discard { reason: "r".into() });
    let old_cancelled = engine.cancel(jobs[2].id).unwrap().0;
    let executing = claim_one(&engine, "q3");
    let available = jobs[4].clone();
    let retryable = finish(
        &engine,
        &claim_one(&engine, "q5"),
        Outcome::Fail { error: "e".into(), retry_in: Some(10 * day) },
    );
    clock.advance(2 * day);
    let recent_done = finish(&engine, &claim_one(&engine, "q6"), Outcome::Complete);
    clock.advance(day / 2);

    // Finished more than a day ago: the three from T0, not the one from half a day ago.
    assert_eq!(engine.prune(Duration::from_secs(24 * 3600)).unwrap(), 3);
    for gone in [&old_done, &old_discarded, &old_cancelled] {
        assert!(matches!(engine.get(gone.id), Err(Error::JobNotFound(id)) if id == gone.id));
    }
    let left: Vec<_> = engine.list(&ListFilter::default()).unwrap();
    assert_eq!(left, vec![executing.clone(), available, retryable, recent_done.clone()]);
    assert_eq!(engine.prune(Duration::from_secs(24 * 3600)).unwrap(), 0);
    // A late ack of a pruned job is stale; ids are never reused.
    assert_eq!(ack(&engine, &old_done, 1, Outcome::Complete), AckResult::Stale(None));
    assert_eq!(insert_one(&engine, job("q", "w")).id, 8);

    // Age zero prunes every finished job, however recent.
    assert_eq!(engine.prune(Duration::ZERO).unwrap(), 1);
    assert!(matches!(engine.get(recent_done.id), Err(Error::JobNotFound(_))));
    assert_eq!(engine.get(executing.id).unwrap(), executing);
}

#[test]
fn the_pruner_runs_on_its_own() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(EngineConfig {
        prune_interval: Duration::from_millis(30),
        retention: Duration::from_secs(60),
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

#[test]
fn outcomes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = open(&path);
    insert_one(&engine, job("q", "w"));
    insert_one(&engine, job("q", "w"));
    let done = finish(&engine, &claim_one(&engine, "q"), Outcome::Complete);
    let failed = finish(
        &engine,
        &claim_one(&engine, "q"),
        Outcome::Fail { error: "e".into(), retry_in: Some(3600 * SECOND) },
    );
    drop(engine);
    let engine = open(&path);
    assert_eq!(engine.get(done.id).unwrap(), done);
    assert_eq!(engine.get(failed.id).unwrap(), failed);
}
