//! Proves a real store file keeps every field of every job across close and reopen, that `get` and `list` read jobs back exactly, and that an in-memory engine works the same way. `list`'s filters and unknown ids are in `tests/conformance`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{claim_one, finish, insert_one, job, open, store_path};
use kathikon_core::clock::SECOND;
use kathikon_core::Jobs;
use kathikon_core::{
    Clock, Engine, EngineConfig, Error, Job, JobId, JobState, ListFilter, NewJob, Outcome,
    Recovery, SystemClock,
};

fn all(engine: &Engine) -> Vec<Job> {
    engine.list(&ListFilter::default()).expect("list")
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// The fields a fresh job takes straight from its `NewJob`.
fn assert_fresh(job: &Job, new: &NewJob) {
    assert_eq!(job.queue, new.queue);
    assert_eq!(job.worker, new.worker);
    assert_eq!(job.args, new.args);
    assert_eq!(job.meta, new.meta);
    assert_eq!(job.tags, new.tags);
    assert_eq!(job.max_attempts, new.max_attempts);
    assert_eq!(job.priority, new.priority);
    assert_eq!(job.attempt, 0);
    assert!(job.errors.is_empty());
    assert_eq!(
        (job.attempted_at, job.completed_at, job.cancelled_at, job.discarded_at),
        (None, None, None, None)
    );
    match new.scheduled_at {
        Some(at) => assert_eq!(job.scheduled_at, at),
        None => assert_eq!(job.scheduled_at, job.inserted_at),
    }
}

#[test]
fn every_field_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let now = SystemClock.now();

    let engine = open(&path);
    let varied = NewJob {
        queue: "emails".into(),
        worker: "app.tasks.send_email".into(),
        args: r#"{"to":"zoë@example.com","n":[1,2.5,null,true],"nested":{"k":"✓"}}"#.into(),
        meta: r#"{"trace":"abc-123","retries_ok":false}"#.into(),
        tags: vec!["urgent".into(), "ünïcode".into(), String::new()],
        max_attempts: 7,
        priority: 4,
        scheduled_at: None,
        unique: None,
        batch: None,
    };
    let future = NewJob {
        queue: "reports".into(),
        priority: 9,
        scheduled_at: Some(now + 3600 * SECOND),
        args: "[1,2,3]".into(),
        ..job("reports", "app.reports.build")
    };
    let past = NewJob {
        scheduled_at: Some(now - 60 * SECOND),
        args: "\"just a string\"".into(),
        ..job("emails", "app.tasks.late")
    };
    let news = vec![varied, future, past];
    let inserted = engine.insert(news.clone()).unwrap();
    assert_eq!(ids(&inserted), vec![1, 2, 3]);
    for (job, new) in inserted.iter().zip(&news) {
        assert_fresh(job, new);
        assert_eq!(&engine.get(job.id).unwrap(), job);
    }
    assert_eq!(inserted[0].state, JobState::Available);
    assert_eq!(inserted[1].state, JobState::Scheduled);
    assert_eq!(inserted[2].state, JobState::Available);

    // Give other jobs a history: errors, timestamps, bumped attempts.
    let failed = insert_one(&engine, job("q-fail", "w.fail"));
    let running = claim_one(&engine, "q-fail");
    let failed_now = finish(
        &engine,
        &running,
        Outcome::Fail {
            error: "Traceback …\nValueError: nope".into(),
            retry_in: Some(3600 * SECOND),
        },
    );
    assert_eq!((failed_now.id, failed_now.state), (failed.id, JobState::Retryable));

    insert_one(&engine, job("q-done", "w.done"));
    let done = finish(&engine, &claim_one(&engine, "q-done"), Outcome::Complete);
    assert!(done.completed_at.is_some());

    let to_cancel = insert_one(&engine, job("q-cancel", "w.cancel"));
    let (cancelled, was) = engine.cancel(to_cancel.id).unwrap();
    assert_eq!((was, cancelled.state), (JobState::Available, JobState::Cancelled));

    insert_one(&engine, job("q-discard", "w.discard"));
    let discarded = finish(
        &engine,
        &claim_one(&engine, "q-discard"),
        Outcome::Discard { reason: "bad input".into() },
    );
    assert_eq!(discarded.errors[0].error, "bad input");

    insert_one(&engine, job("q-snooze", "w.snooze"));
    let snoozed =
        finish(&engine, &claim_one(&engine, "q-snooze"), Outcome::Snooze { delay: 3600 * SECOND });
    assert_eq!((snoozed.state, snoozed.max_attempts), (JobState::Scheduled, 4));

    let before = all(&engine);
    assert_eq!(ids(&before), (1..=8).collect::<Vec<_>>());
    for job in &before {
        assert_eq!(&engine.get(job.id).unwrap(), job);
    }
    assert_eq!(before[3], failed_now);
    assert_eq!(before[4], done);
    assert_eq!(before[5], cancelled);
    assert_eq!(before[6], discarded);
    assert_eq!(before[7], snoozed);
    engine.close();
    assert!(matches!(engine.get(1), Err(Error::Closed)));
    drop(engine);

    let engine = open(&path);
    assert_eq!(engine.recovery(), Recovery::default());
    let after = all(&engine);
    assert_eq!(after, before);
    for job in &before {
        assert_eq!(&engine.get(job.id).unwrap(), job);
    }
    // The claim queues were rebuilt from the file: the available jobs are claimable, most
    // urgent first (priority 0 job 3 before priority 4 job 1).
    let claimed = engine.claim("emails", 10, Duration::ZERO).unwrap();
    assert_eq!(ids(&claimed), vec![3, 1]);
    assert!(claimed.iter().all(|j| j.state == JobState::Executing && j.attempt == 1));
    // Ids keep ascending across reopen; none is reused.
    assert_eq!(insert_one(&engine, job("emails", "w")).id, 9);
}

#[test]
fn in_memory_engine_stores_claims_and_forgets() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    let other = Engine::open(EngineConfig::default()).unwrap(); // no file, so no lock
    let a = insert_one(&engine, NewJob { tags: vec!["t".into()], ..job("q", "w.a") });
    let b = insert_one(&engine, job("q", "w.b"));
    assert_eq!((a.id, b.id), (1, 2));
    assert_eq!(engine.get(a.id).unwrap(), a);
    assert_eq!(all(&engine), vec![a.clone(), b.clone()]);
    assert_eq!(engine.ready_count("q").unwrap(), 2);

    let claimed = claim_one(&engine, "q");
    assert_eq!((claimed.id, claimed.attempt, claimed.state), (a.id, 1, JobState::Executing));
    let done = finish(&engine, &claimed, Outcome::Complete);
    assert_eq!(engine.get(a.id).unwrap(), done);
    let filter = ListFilter { state: Some(JobState::Available), ..Default::default() };
    assert_eq!(ids(&engine.list(&filter).unwrap()), vec![b.id]);

    // Two in-memory engines share nothing.
    assert!(all(&other).is_empty());
    assert_eq!(insert_one(&other, job("q", "w")).id, 1);

    engine.close();
    assert!(engine.is_closed());
    assert!(matches!(engine.get(a.id), Err(Error::Closed)));
    assert!(matches!(engine.insert(vec![job("q", "w")]), Err(Error::Closed)));
    assert!(matches!(engine.claim("q", 1, Duration::ZERO), Err(Error::Closed)));
    engine.close(); // a second close does nothing

    let fresh = Engine::open(EngineConfig::default()).unwrap();
    assert!(all(&fresh).is_empty());
    let ids_seen: BTreeSet<JobId> = all(&other).iter().map(|j| j.id).collect();
    assert_eq!(ids_seen, BTreeSet::from([1]));
}
