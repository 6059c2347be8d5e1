//! What each ack outcome, retry, cancel and prune does to stored jobs: complete, fail (retry
//! at now + `retry_in`, or discard when attempts run out), snooze, cancel and discard with
//! reasons; stale acks change no state; old finished jobs are pruned; outcomes survive a
//! reopen.

use std::time::Duration;

use crate::common::{claim_one, finish, insert_one, job, T0};
use crate::harness::{Backend, Store};
use kathikon_core::backoff::default_backoff;
use kathikon_core::clock::SECOND;
use kathikon_core::{
    Ack, AckResult, Error, Job, JobError, JobState, Jobs, ListFilter, NewJob, Outcome,
};

fn ack(store: &dyn Jobs, job: &Job, attempt: u32, outcome: Outcome) -> AckResult {
    store.ack(vec![Ack { id: job.id, attempt, outcome }]).unwrap().remove(0)
}

pub fn complete_records_when(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, job("q", "w"));
    s.clock().advance(SECOND);
    let running = claim_one(&*s, "q");
    assert_eq!(running.attempted_at, Some(T0 + SECOND));
    s.clock().advance(2 * SECOND);
    let done = finish(&*s, &running, Outcome::Complete);
    assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    assert_eq!(done.completed_at, Some(T0 + 3 * SECOND));
    assert!(done.errors.is_empty());
    assert_eq!(s.get(done.id).unwrap(), done);
}

pub fn fail_retries_at_now_plus_retry_in_then_discards_when_exhausted(
    backend: &'static dyn Backend,
) {
    let s = Store::open(backend);
    let clock = s.clock();
    let inserted = insert_one(&*s, NewJob { max_attempts: 3, ..job("q", "w") });
    let first = claim_one(&*s, "q");
    clock.advance(SECOND);
    let failed =
        finish(&*s, &first, Outcome::Fail { error: "boom".into(), retry_in: Some(5 * SECOND) });
    assert_eq!(failed.state, JobState::Retryable);
    assert_eq!(failed.scheduled_at, T0 + 6 * SECOND);
    assert_eq!(failed.errors, vec![JobError { at: T0 + SECOND, attempt: 1, error: "boom".into() }]);
    assert_eq!(failed.discarded_at, None);
    assert_eq!(s.get(inserted.id).unwrap(), failed);

    // Not claimable before its time, even when the writer looks.
    clock.advance(4 * SECOND);
    s.sync().unwrap();
    assert_eq!(s.get(inserted.id).unwrap().state, JobState::Retryable);
    assert!(s.claim("q", 1, Duration::ZERO).unwrap().is_empty());
    clock.advance(SECOND); // exactly due
    s.sync().unwrap();
    assert_eq!(s.get(inserted.id).unwrap().state, JobState::Available);

    // Without retry_in the default backoff applies.
    let second = claim_one(&*s, "q");
    assert_eq!(second.attempt, 2);
    let failed = finish(&*s, &second, Outcome::Fail { error: "again".into(), retry_in: None });
    assert_eq!(failed.state, JobState::Retryable);
    assert_eq!(failed.scheduled_at, T0 + 6 * SECOND + default_backoff(2, inserted.id));

    s.retry(inserted.id).unwrap();
    let third = claim_one(&*s, "q");
    assert_eq!(third.attempt, 3);
    clock.advance(SECOND);
    let gone = finish(&*s, &third, Outcome::Fail { error: "last".into(), retry_in: Some(SECOND) });
    assert_eq!(gone.state, JobState::Discarded);
    assert_eq!(gone.discarded_at, Some(T0 + 7 * SECOND));
    assert_eq!(
        gone.errors.iter().map(|e| (e.attempt, e.error.as_str())).collect::<Vec<_>>(),
        vec![(1, "boom"), (2, "again"), (3, "last")]
    );
    clock.advance(10 * SECOND);
    s.sync().unwrap();
    assert!(s.claim("q", 1, Duration::ZERO).unwrap().is_empty(), "discarded job came back");
}

pub fn snooze_reschedules_without_using_up_an_attempt(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, NewJob { max_attempts: 1, ..job("q", "w") });
    let first = claim_one(&*s, "q");
    let snoozed = finish(&*s, &first, Outcome::Snooze { delay: 10 * SECOND });
    assert_eq!(snoozed.state, JobState::Scheduled);
    assert_eq!((snoozed.attempt, snoozed.max_attempts), (1, 2));
    assert_eq!(snoozed.scheduled_at, T0 + 10 * SECOND);
    assert!(snoozed.errors.is_empty());
    s.clock().advance(10 * SECOND);
    s.sync().unwrap();
    let second = claim_one(&*s, "q");
    assert_eq!((second.id, second.attempt), (first.id, 2));
    // The attempt it got back is the last one: a failure now discards it.
    let gone = finish(&*s, &second, Outcome::Fail { error: "x".into(), retry_in: Some(1) });
    assert_eq!(gone.state, JobState::Discarded);
}

pub fn interrupt_hands_a_job_back_due_at_once_without_using_up_an_attempt(
    backend: &'static dyn Backend,
) {
    let s = Store::open(backend);
    insert_one(&*s, NewJob { max_attempts: 1, ..job("q", "w") });
    let mut claimed = claim_one(&*s, "q");
    for deploy in 1..=3u32 {
        let reason = Outcome::Interrupt { reason: "interrupted by shutdown".into() };
        let back = finish(&*s, &claimed, reason);
        assert_eq!(back.state, JobState::Scheduled);
        assert_eq!((back.attempt, back.max_attempts), (deploy, deploy + 1));
        assert_eq!(back.errors.len(), deploy as usize);
        assert_eq!(back.errors.last().unwrap().error, "interrupted by shutdown");
        // Due at once: claimable again without the clock moving.
        s.sync().unwrap();
        claimed = claim_one(&*s, "q");
        assert_eq!((claimed.id, claimed.attempt), (back.id, deploy + 1));
    }
    let done = finish(&*s, &claimed, Outcome::Complete);
    assert_eq!(done.state, JobState::Completed);
}

pub fn cancel_and_discard_outcomes_record_their_reasons(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, job("q", "w"));
    insert_one(&*s, job("q", "w"));
    let a = claim_one(&*s, "q");
    let b = claim_one(&*s, "q");
    s.clock().advance(SECOND);
    let cancelled = finish(&*s, &a, Outcome::Cancel { reason: "user gave up".into() });
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.cancelled_at, Some(T0 + SECOND));
    assert_eq!(
        cancelled.errors,
        vec![JobError { at: T0 + SECOND, attempt: 1, error: "user gave up".into() }]
    );
    let discarded = finish(&*s, &b, Outcome::Discard { reason: "bad payload".into() });
    assert_eq!(discarded.state, JobState::Discarded);
    assert_eq!(discarded.discarded_at, Some(T0 + SECOND));
    assert_eq!(
        discarded.errors,
        vec![JobError { at: T0 + SECOND, attempt: 1, error: "bad payload".into() }]
    );
    assert_eq!(s.get(a.id).unwrap(), cancelled);
    assert_eq!(s.get(b.id).unwrap(), discarded);
}

/// `job` with the history entries a store that fences refused acks adds for them: one per
/// `(attempt, outcome name)`, at T0. A store that does not fence adds none.
fn with_fence_notes(s: &Store, job: &Job, refused: &[(u32, &str)]) -> Job {
    let mut job = job.clone();
    if s.fences_refused_acks() {
        for (attempt, outcome) in refused {
            job.errors.push(JobError {
                at: T0,
                attempt: *attempt,
                error: format!("fenced: {outcome} {attempt}"),
            });
        }
    }
    job
}

/// The history with each fence note cut to "fenced: OUTCOME ATTEMPT", so a test can spell it.
fn short_notes(mut job: Job) -> Job {
    for e in &mut job.errors {
        if e.error.starts_with("fenced: ") {
            let outcome = e.error.split('\'').nth(1).unwrap_or("?").to_string();
            e.error = format!("fenced: {outcome} {}", e.attempt);
        }
    }
    job
}

pub fn stale_acks_change_no_state(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, job("q", "w"));
    insert_one(&*s, job("q", "w"));
    let a = claim_one(&*s, "q");
    let b = claim_one(&*s, "q");

    // Wrong attempt.
    assert_eq!(ack(&*s, &a, 2, Outcome::Complete), AckResult::Stale(Some(JobState::Executing)));
    assert_eq!(ack(&*s, &a, 0, Outcome::Complete), AckResult::Stale(Some(JobState::Executing)));
    let a = with_fence_notes(&s, &a, &[(2, "completed"), (0, "completed")]);
    assert_eq!(short_notes(s.get(a.id).unwrap()), a);

    // After a cancel.
    let (cancelled, was) = s.cancel(b.id).unwrap();
    assert_eq!((was, cancelled.state), (JobState::Executing, JobState::Cancelled));
    assert_eq!(cancelled.errors.last().unwrap().error, "cancelled by user");
    for outcome in [
        Outcome::Complete,
        Outcome::Fail { error: "e".into(), retry_in: None },
        Outcome::Snooze { delay: 1 },
        Outcome::Discard { reason: "r".into() },
    ] {
        assert_eq!(ack(&*s, &b, 1, outcome), AckResult::Stale(Some(JobState::Cancelled)));
    }
    // The worker held attempt 1 until its first report: the later three are refused as
    // reports of an attempt it no longer holds.
    let cancelled =
        with_fence_notes(&s, &cancelled, &[(1, "failed"), (1, "snoozed"), (1, "discarded")]);
    assert_eq!(short_notes(s.get(b.id).unwrap()), cancelled);

    // In a batch, a stale ack does not hold back a good one; a second ack of the same
    // attempt is stale.
    let results = s
        .ack(vec![
            Ack { id: b.id, attempt: 1, outcome: Outcome::Complete },
            Ack { id: a.id, attempt: 1, outcome: Outcome::Complete },
            Ack { id: a.id, attempt: 1, outcome: Outcome::Discard { reason: "late".into() } },
        ])
        .unwrap();
    assert!(matches!(&results[0], AckResult::Stale(Some(JobState::Cancelled))));
    assert!(matches!(&results[1], AckResult::Applied(j) if j.state == JobState::Completed));
    assert_eq!(results[2], AckResult::Stale(Some(JobState::Completed)));
    let done = short_notes(s.get(a.id).unwrap());
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.errors, with_fence_notes(&s, &a, &[(1, "discarded")]).errors);
}

pub fn ack_nowait_is_applied_by_the_next_sync(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, job("q", "w"));
    let running = claim_one(&*s, "q");
    s.ack_nowait(vec![Ack { id: running.id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    s.sync().unwrap();
    assert_eq!(s.get(running.id).unwrap().state, JobState::Completed);
}

pub fn retry_makes_finished_jobs_available_and_refuses_executing_ones(
    backend: &'static dyn Backend,
) {
    let s = Store::open(backend);
    // Completed.
    insert_one(&*s, job("done", "w"));
    let done = finish(&*s, &claim_one(&*s, "done"), Outcome::Complete);
    s.clock().advance(SECOND);
    let retried = s.retry(done.id).unwrap();
    assert_eq!(retried.state, JobState::Available);
    assert_eq!((retried.scheduled_at, retried.completed_at), (T0 + SECOND, None));
    assert_eq!(s.get(done.id).unwrap(), retried);
    let rerun = claim_one(&*s, "done");
    assert_eq!((rerun.id, rerun.attempt), (done.id, 2));

    // Discarded after its only attempt: gets one more.
    insert_one(&*s, NewJob { max_attempts: 1, ..job("dis", "w") });
    let gone =
        finish(&*s, &claim_one(&*s, "dis"), Outcome::Fail { error: "e".into(), retry_in: None });
    assert_eq!(gone.state, JobState::Discarded);
    let retried = s.retry(gone.id).unwrap();
    assert_eq!(
        (retried.state, retried.max_attempts, retried.discarded_at),
        (JobState::Available, 2, None)
    );
    assert_eq!(retried.errors, gone.errors, "retry keeps the history");
    let rerun = claim_one(&*s, "dis");
    assert_eq!(rerun.attempt, 2);

    // Cancelled, and scheduled in the future: both run now.
    let cancelled = s.cancel(insert_one(&*s, job("can", "w")).id).unwrap().0;
    let retried = s.retry(cancelled.id).unwrap();
    assert_eq!((retried.state, retried.cancelled_at), (JobState::Available, None));
    assert_eq!(claim_one(&*s, "can").id, cancelled.id);
    let later =
        insert_one(&*s, NewJob { scheduled_at: Some(T0 + 3600 * SECOND), ..job("later", "w") });
    assert_eq!(s.retry(later.id).unwrap().state, JobState::Available);
    assert_eq!(claim_one(&*s, "later").id, later.id);

    // Available: returned unchanged, and still claimable exactly once.
    let waiting = insert_one(&*s, job("wait", "w"));
    assert_eq!(s.retry(waiting.id).unwrap(), waiting);
    assert_eq!(s.claim("wait", 10, Duration::ZERO).unwrap().len(), 1);

    // Executing: refused, unchanged.
    let running = s.get(waiting.id).unwrap();
    assert_eq!(running.state, JobState::Executing);
    let err = s.retry(running.id).unwrap_err();
    assert!(
        matches!(err, Error::IllegalTransition { id, from: JobState::Executing, action: "retried" } if id == running.id),
        "{err:?}"
    );
    assert_eq!(s.get(running.id).unwrap(), running);
}

pub fn cancel_of_a_finished_job_returns_it_unchanged(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let clock = s.clock();
    insert_one(&*s, job("q", "w"));
    let done = finish(&*s, &claim_one(&*s, "q"), Outcome::Complete);
    clock.advance(SECOND);
    let (job_now, state) = s.cancel(done.id).unwrap();
    assert_eq!((job_now.clone(), state), (done.clone(), JobState::Completed));
    assert_eq!(s.get(done.id).unwrap(), done);
    // Cancelling twice: the second returns the cancelled job unchanged.
    let scheduled =
        insert_one(&*s, NewJob { scheduled_at: Some(T0 + 3600 * SECOND), ..job("q", "w") });
    let (first, was) = s.cancel(scheduled.id).unwrap();
    assert_eq!(
        (first.state, was, first.cancelled_at),
        (JobState::Cancelled, JobState::Scheduled, Some(T0 + SECOND))
    );
    clock.advance(SECOND);
    let (second, was) = s.cancel(scheduled.id).unwrap();
    assert_eq!((second, was), (first, JobState::Cancelled));
    // A cancelled scheduled job is never promoted.
    clock.advance(7200 * SECOND);
    s.sync().unwrap();
    assert_eq!(s.get(scheduled.id).unwrap().state, JobState::Cancelled);
    assert!(s.claim("q", 1, Duration::ZERO).unwrap().is_empty());
}

pub fn prune_removes_only_old_finished_jobs(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let clock = s.clock();
    let day = 24 * 3600 * SECOND;
    let jobs = s.insert((0..7).map(|i| job(&format!("q{i}"), "w")).collect()).unwrap();
    let old_done = finish(&*s, &claim_one(&*s, "q0"), Outcome::Complete);
    let old_discarded = finish(&*s, &claim_one(&*s, "q1"), Outcome::Discard { reason: "r".into() });
    let old_cancelled = s.cancel(jobs[2].id).unwrap().0;
    let executing = claim_one(&*s, "q3");
    let available = jobs[4].clone();
    let retryable = finish(
        &*s,
        &claim_one(&*s, "q5"),
        Outcome::Fail { error: "e".into(), retry_in: Some(10 * day) },
    );
    clock.advance(2 * day);
    let recent_done = finish(&*s, &claim_one(&*s, "q6"), Outcome::Complete);
    clock.advance(day / 2);

    // Finished more than a day ago: the three from T0, not the one from half a day ago.
    assert_eq!(s.prune(Duration::from_secs(24 * 3600)).unwrap(), 3);
    for gone in [&old_done, &old_discarded, &old_cancelled] {
        assert!(matches!(s.get(gone.id), Err(Error::JobNotFound(id)) if id == gone.id));
    }
    let left: Vec<_> = s.list(&ListFilter::default()).unwrap();
    assert_eq!(left, vec![executing.clone(), available, retryable, recent_done.clone()]);
    assert_eq!(s.prune(Duration::from_secs(24 * 3600)).unwrap(), 0);
    // A late ack of a pruned job is stale; ids are never reused.
    assert_eq!(ack(&*s, &old_done, 1, Outcome::Complete), AckResult::Stale(None));
    assert_eq!(insert_one(&*s, job("q", "w")).id, 8);

    // Age zero prunes every finished job, however recent.
    assert_eq!(s.prune(Duration::ZERO).unwrap(), 1);
    assert!(matches!(s.get(recent_done.id), Err(Error::JobNotFound(_))));
    assert_eq!(s.get(executing.id).unwrap(), executing);
}

pub fn outcomes_survive_reopen(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    insert_one(&*s, job("q", "w"));
    insert_one(&*s, job("q", "w"));
    let done = finish(&*s, &claim_one(&*s, "q"), Outcome::Complete);
    let failed = finish(
        &*s,
        &claim_one(&*s, "q"),
        Outcome::Fail { error: "e".into(), retry_in: Some(3600 * SECOND) },
    );
    s.reopen();
    assert_eq!(s.get(done.id).unwrap(), done);
    assert_eq!(s.get(failed.id).unwrap(), failed);
}
