//! Proves claiming takes jobs by priority, then scheduled time, then id; that a claim waits for an insert from another thread, times out empty, and returns promptly on interrupt; that cancelled jobs are never claimed; and that concurrent claimers never get the same job twice.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{finish, insert_one, job, open, store_path, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::Jobs;
use kathikon_core::{Clock, Engine, EngineConfig, JobId, JobState, NewJob, Outcome, SystemClock};

/// Jobs in a deliberately scrambled insert order: (priority, seconds ago it was due).
/// Several share a priority and due time, so only their ids can order them.
const SPECS: &[(u8, i64)] = &[
    (5, 10),
    (0, 1),
    (9, 100),
    (0, 30),
    (5, 10),
    (2, 0),
    (0, 30),
    (9, 0),
    (5, 50),
    (0, 1),
    (2, 0),
    (0, 30),
];

/// Insert `SPECS` one batch each and return the expected claim order.
fn insert_specs(engine: &Engine, now: i64) -> Vec<JobId> {
    let mut keys = Vec::new();
    for &(priority, ago) in SPECS {
        let new = NewJob { priority, scheduled_at: Some(now - ago * SECOND), ..job("q", "w") };
        let stored = insert_one(engine, new);
        assert_eq!(stored.state, JobState::Available);
        keys.push((stored.priority, stored.scheduled_at, stored.id));
    }
    keys.sort_unstable();
    keys.into_iter().map(|k| k.2).collect()
}

#[test]
fn claims_by_priority_then_scheduled_time_then_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = open(&path);
    let now = SystemClock.now();
    let expected = insert_specs(&engine, now);
    // Spelled out, so the test does not only agree with itself.
    assert_eq!(expected, vec![4, 7, 12, 2, 10, 6, 11, 9, 1, 5, 3, 8]);

    let mut got = Vec::new();
    while let Some(job) = engine.claim("q", 1, Duration::ZERO).unwrap().pop() {
        assert_eq!((job.state, job.attempt), (JobState::Executing, 1));
        got.push(job.id);
    }
    assert_eq!(got, expected);

    // A multi-job claim returns the same order, and so do queues rebuilt from the file.
    let engine2 = Engine::open(EngineConfig::default()).unwrap();
    let expected2 = insert_specs(&engine2, now);
    let batch = engine2.claim("q", 100, Duration::ZERO).unwrap();
    assert_eq!(batch.iter().map(|j| j.id).collect::<Vec<_>>(), expected2);

    drop(engine);
    std::fs::remove_file(&path).unwrap();
    let engine = open(&path);
    let expected = insert_specs(&engine, now);
    engine.close();
    drop(engine);
    let engine = open(&path);
    let mut got = Vec::new();
    while let Some(job) = engine.claim("q", 1, Duration::ZERO).unwrap().pop() {
        got.push(job.id);
    }
    assert_eq!(got, expected);
}

#[test]
fn claim_waits_for_an_insert_from_another_thread() {
    let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
    let started = Instant::now();
    let inserter = {
        let engine = engine.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            insert_one(&*engine, job("q", "w")).id
        })
    };
    let claimed = engine.claim("q", 5, Duration::from_secs(10)).unwrap();
    let waited = started.elapsed();
    let new_id = inserter.join().unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![new_id]);
    assert_eq!(claimed[0].state, JobState::Executing);
    assert!(waited >= Duration::from_millis(100), "returned before the insert: {waited:?}");
    assert!(waited < Duration::from_secs(2), "woke late: {waited:?}");
}

#[test]
fn claim_times_out_empty_and_ignores_other_queues() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    insert_one(&engine, job("other", "w"));
    let started = Instant::now();
    let claimed = engine.claim("q", 1, Duration::from_millis(150)).unwrap();
    let waited = started.elapsed();
    assert!(claimed.is_empty());
    assert!(waited >= Duration::from_millis(150), "gave up early: {waited:?}");
    assert!(waited < Duration::from_secs(1), "gave up late: {waited:?}");
    assert!(engine.claim("q", 1, Duration::ZERO).unwrap().is_empty());
    assert_eq!(engine.ready_count("other").unwrap(), 1);
}

#[test]
fn interrupt_releases_a_waiting_claim() {
    let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let blocked = {
        let engine = engine.clone();
        thread::spawn(move || {
            started_tx.send(()).unwrap();
            engine.claim("q", 1, Duration::from_secs(20)).unwrap()
        })
    };
    started_rx.recv().unwrap();
    thread::sleep(Duration::from_millis(100));
    // Interrupting another queue does not wake it, nor does an insert elsewhere.
    engine.interrupt("elsewhere");
    insert_one(&*engine, job("elsewhere", "w"));
    thread::sleep(Duration::from_millis(100));
    assert!(!blocked.is_finished(), "claim returned without an interrupt of its queue");
    let interrupt_at = Instant::now();
    engine.interrupt("q");
    let claimed = blocked.join().unwrap();
    assert!(claimed.is_empty());
    assert!(
        interrupt_at.elapsed() < Duration::from_secs(1),
        "interrupt took {:?}",
        interrupt_at.elapsed()
    );
    // An interrupt only releases claims already waiting: a later claim still gets jobs.
    insert_one(&*engine, job("q", "w"));
    assert_eq!(engine.claim("q", 1, Duration::from_secs(1)).unwrap().len(), 1);
}

#[test]
fn close_releases_a_waiting_claim() {
    let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
    let claimer = {
        let engine = engine.clone();
        thread::spawn(move || engine.claim("q", 1, Duration::from_secs(20)))
    };
    thread::sleep(Duration::from_millis(50));
    let closed = Instant::now();
    engine.close();
    let result = claimer.join().unwrap();
    assert!(matches!(result, Err(kathikon_core::Error::Closed)), "{result:?}");
    assert!(closed.elapsed() < Duration::from_secs(1));
}

#[test]
fn cancelled_available_jobs_are_never_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = open(&path);
    let ids: Vec<JobId> = engine
        .insert((0..10).map(|_| job("q", "w")).collect())
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    for id in ids.iter().filter(|id| *id % 2 == 0) {
        let (job, was) = engine.cancel(*id).unwrap();
        assert_eq!((was, job.state), (JobState::Available, JobState::Cancelled));
    }
    assert_eq!(engine.ready_count("q").unwrap(), 5);
    let claimed: Vec<JobId> =
        engine.claim("q", 100, Duration::ZERO).unwrap().iter().map(|j| j.id).collect();
    assert_eq!(claimed, vec![1, 3, 5, 7, 9]);
    for id in &claimed {
        finish(&engine, &engine.get(*id).unwrap(), Outcome::Complete);
    }
    // Nor after a reopen rebuilds the queues from the file.
    engine.close();
    drop(engine);
    let engine = open(&path);
    assert_eq!(engine.ready_count("q").unwrap(), 0);
    assert!(engine.claim("q", 100, Duration::ZERO).unwrap().is_empty());
    for id in ids.iter().filter(|id| *id % 2 == 0) {
        assert_eq!(engine.get(*id).unwrap().state, JobState::Cancelled);
        assert_eq!(engine.get(*id).unwrap().attempt, 0);
    }
}

#[test]
fn cancels_racing_claims_never_let_a_cancelled_job_run() {
    let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
    let ids: Vec<JobId> = engine
        .insert((0..200).map(|_| job("q", "w")).collect())
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let start = Arc::new(Barrier::new(3));
    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, start) = (engine.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                loop {
                    let jobs = engine.claim("q", 3, Duration::from_millis(50)).unwrap();
                    if jobs.is_empty() {
                        return got;
                    }
                    got.extend(jobs.into_iter().map(|j| j.id));
                }
            })
        })
        .collect();
    start.wait();
    let mut cancelled_while_available = HashSet::new();
    for id in ids.iter().rev() {
        let (job, was) = engine.cancel(*id).unwrap();
        assert_eq!(job.state, JobState::Cancelled);
        if was == JobState::Available {
            cancelled_while_available.insert(*id);
        }
    }
    let claimed: Vec<JobId> = claimers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let unique: HashSet<JobId> = claimed.iter().copied().collect();
    assert_eq!(unique.len(), claimed.len(), "a job was claimed twice");
    let both: Vec<_> = unique.intersection(&cancelled_while_available).collect();
    assert!(both.is_empty(), "cancelled while available, yet claimed: {both:?}");
    assert_eq!(unique.len() + cancelled_while_available.len(), ids.len());
    for id in &ids {
        let job = engine.get(*id).unwrap();
        assert_eq!(job.attempt, u32::from(unique.contains(id)), "job {id}");
    }
}

#[test]
fn concurrent_claimers_never_get_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(open(&store_path(&dir)));
    let total = 200;
    let inserted: BTreeSet<JobId> = engine
        .insert((0..total).map(|_| job("q", "w")).collect())
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let start = Arc::new(Barrier::new(4));
    let claimers: Vec<_> = (0..4_usize)
        .map(|t| {
            let (engine, start) = (engine.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                loop {
                    let jobs = engine.claim("q", 1 + t % 3, Duration::from_millis(50)).unwrap();
                    if jobs.is_empty() {
                        return got;
                    }
                    for job in jobs {
                        assert_eq!((job.state, job.attempt), (JobState::Executing, 1));
                        finish(&*engine, &job, Outcome::Complete);
                        got.push(job.id);
                    }
                }
            })
        })
        .collect();
    let per_thread: Vec<Vec<JobId>> = claimers.into_iter().map(|h| h.join().unwrap()).collect();
    let claimed: Vec<JobId> = per_thread.iter().flatten().copied().collect();
    let unique: BTreeSet<JobId> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), total, "claimed {} times for {total} jobs", claimed.len());
    assert_eq!(unique, inserted);
    for id in &inserted {
        let job = engine.get(*id).unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Completed, 1), "job {id}");
    }
    assert_eq!(engine.ready_count("q").unwrap(), 0);
}

#[test]
fn a_job_promoted_and_cancelled_in_one_commit_is_not_left_ready() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(EngineConfig {
        scheduler_interval: Duration::from_secs(60), // the writer wakes only for commands
        clock: clock.clone(),
        ..EngineConfig::default()
    })
    .unwrap();
    let due = T0 + 10 * SECOND;
    let doomed = insert_one(&engine, NewJob { scheduled_at: Some(due), ..job("q", "w") });
    let kept = insert_one(&engine, NewJob { scheduled_at: Some(due), ..job("q", "w") });
    clock.advance(20 * SECOND);
    // The cancel's own commit first promotes both due jobs, then cancels one of them.
    let (cancelled, was) = engine.cancel(doomed.id).unwrap();
    assert_eq!((was, cancelled.state), (JobState::Available, JobState::Cancelled));
    assert_eq!(engine.get(kept.id).unwrap().state, JobState::Available);
    assert_eq!(engine.ready_count("q").unwrap(), 1, "the cancelled job is still counted as ready");
    let claimed = engine.claim("q", 10, Duration::ZERO).unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![kept.id]);
    assert_eq!(engine.ready_count("q").unwrap(), 0);
}
