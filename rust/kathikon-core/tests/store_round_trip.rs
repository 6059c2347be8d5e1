//! Proves a real store file keeps every field of every job across close and reopen, that `get` and `list` (with each filter) read jobs back exactly, that unknown ids are refused with `JobNotFound`, and that an in-memory engine works the same way.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{claim_one, finish, insert_one, job, open, store_path};
use kathikon_core::clock::SECOND;
use kathikon_core::Jobs;
use kathikon_core::{
    AckResult, Clock, Engine, EngineConfig, Error, Job, JobId, JobState, ListFilter, NewJob,
    Outcome, Recovery, SystemClock,
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

/// What the list test knows about a job from its own actions: id, queue, worker, state.
type Entry = (JobId, &'static str, &'static str, JobState);

#[test]
fn list_filters_by_state_queue_worker_limit_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&store_path(&dir));
    let now = SystemClock.now();
    // Model of what we create: (id, queue, worker, state), filled from our own actions.
    let mut model: Vec<Entry> = Vec::new();
    let queues = ["a", "b"];
    let workers = ["w1", "w2", "w3"];
    for i in 0..12 {
        let (queue, worker) = (queues[i % 2], workers[i % 3]);
        let new =
            NewJob { scheduled_at: (i >= 9).then_some(now + 3600 * SECOND), ..job(queue, worker) };
        let stored = insert_one(&engine, new);
        model.push((stored.id, queue, worker, stored.state));
    }
    // Complete the first two available jobs of queue "a" (ids 1 and 3).
    for _ in 0..2 {
        let done = finish(&engine, &claim_one(&engine, "a"), Outcome::Complete);
        model.iter_mut().find(|m| m.0 == done.id).unwrap().3 = JobState::Completed;
    }
    assert_eq!(model[0].3, JobState::Completed);
    assert_eq!(model[2].3, JobState::Completed);
    // Claim one of "b" and leave it executing (id 2).
    let running = claim_one(&engine, "b");
    assert_eq!(running.id, 2);
    model[1].3 = JobState::Executing;

    let expect = |keep: &dyn Fn(&Entry) -> bool| -> Vec<JobId> {
        model.iter().filter(|m| keep(m)).map(|m| m.0).collect()
    };
    let got = |filter: ListFilter| ids(&engine.list(&filter).unwrap());

    assert_eq!(got(ListFilter::default()), (1..=12).collect::<Vec<_>>());
    for state in JobState::ALL {
        let want = expect(&|m| m.3 == state);
        assert_eq!(got(ListFilter { state: Some(state), ..Default::default() }), want, "{state}");
    }
    assert_eq!(
        got(ListFilter { state: Some(JobState::Completed), ..Default::default() }),
        vec![1, 3]
    );
    assert_eq!(
        got(ListFilter { state: Some(JobState::Scheduled), ..Default::default() }),
        vec![10, 11, 12]
    );
    assert_eq!(got(ListFilter { state: Some(JobState::Executing), ..Default::default() }), vec![2]);
    for queue in queues {
        let want = expect(&|m| m.1 == queue);
        assert_eq!(want.len(), 6);
        assert_eq!(got(ListFilter { queue: Some(queue.into()), ..Default::default() }), want);
    }
    for worker in workers {
        let want = expect(&|m| m.2 == worker);
        assert_eq!(want.len(), 4);
        assert_eq!(got(ListFilter { worker: Some(worker.into()), ..Default::default() }), want);
    }
    // Combined filters are a conjunction.
    let combined = ListFilter {
        state: Some(JobState::Available),
        queue: Some("a".into()),
        worker: Some("w2".into()),
        ..Default::default()
    };
    assert_eq!(got(combined), expect(&|m| m.3 == JobState::Available && m.1 == "a" && m.2 == "w2"));
    assert_eq!(expect(&|m| m.3 == JobState::Available && m.1 == "a" && m.2 == "w2"), vec![5]);
    assert_eq!(
        got(ListFilter { queue: Some("nope".into()), ..Default::default() }),
        Vec::<JobId>::new()
    );

    // Limit counts matching jobs, not scanned ones.
    assert_eq!(got(ListFilter { limit: 3, ..Default::default() }), vec![1, 2, 3]);
    assert_eq!(
        got(ListFilter { queue: Some("b".into()), limit: 2, ..Default::default() }),
        vec![2, 4]
    );
    // After is exclusive.
    assert_eq!(got(ListFilter { after: Some(9), ..Default::default() }), vec![10, 11, 12]);
    assert_eq!(got(ListFilter { after: Some(12), ..Default::default() }), Vec::<JobId>::new());
    assert_eq!(
        got(ListFilter { after: Some(4), queue: Some("a".into()), limit: 2, ..Default::default() }),
        vec![5, 7]
    );
    // Paging with after + limit visits every job once, in id order.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = got(ListFilter { after, limit: 5, ..Default::default() });
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, (1..=12).collect::<Vec<_>>());
}

#[test]
fn unknown_ids_are_job_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&store_path(&dir));
    assert!(matches!(engine.get(1), Err(Error::JobNotFound(1))));
    let existing = insert_one(&engine, job("q", "w"));
    let unknown = existing.id + 1000;
    let err = engine.get(unknown).unwrap_err();
    assert!(matches!(err, Error::JobNotFound(id) if id == unknown), "{err:?}");
    assert!(err.to_string().contains(&unknown.to_string()), "{err}");
    assert!(matches!(engine.cancel(unknown), Err(Error::JobNotFound(id)) if id == unknown));
    assert!(matches!(engine.retry(unknown), Err(Error::JobNotFound(id)) if id == unknown));
    let acked = engine
        .ack(vec![kathikon_core::Ack { id: unknown, attempt: 1, outcome: Outcome::Complete }])
        .unwrap();
    assert_eq!(acked, vec![AckResult::Stale(None)]);
    // The failed lookups changed nothing.
    assert_eq!(all(&engine), vec![existing]);
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
