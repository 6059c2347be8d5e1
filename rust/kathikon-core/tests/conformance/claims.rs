//! Claiming takes jobs by priority, then scheduled time, then id; a claim waits for an insert
//! from another thread, times out empty, and returns promptly on interrupt or close; cancelled
//! jobs are never claimed; concurrent claimers never get the same job twice.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{finish, insert_one, job, T0};
use crate::harness::{Backend, Store};
use kathikon_core::clock::SECOND;
use kathikon_core::{Error, JobId, JobState, Jobs, NewJob, Outcome};

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
fn insert_specs(store: &dyn Jobs, now: i64) -> Vec<JobId> {
    let mut keys = Vec::new();
    for &(priority, ago) in SPECS {
        let new = NewJob { priority, scheduled_at: Some(now - ago * SECOND), ..job("q", "w") };
        let stored = insert_one(store, new);
        assert_eq!(stored.state, JobState::Available);
        keys.push((stored.priority, stored.scheduled_at, stored.id));
    }
    keys.sort_unstable();
    keys.into_iter().map(|k| k.2).collect()
}

/// Claim from "q" one job at a time until none is left.
fn claim_each(store: &dyn Jobs) -> Vec<JobId> {
    let mut got = Vec::new();
    while let Some(job) = store.claim("q", 1, Duration::ZERO).unwrap().pop() {
        assert_eq!((job.state, job.attempt), (JobState::Executing, 1));
        got.push(job.id);
    }
    got
}

pub fn claims_by_priority_then_scheduled_time_then_id(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let expected = insert_specs(&*s, T0);
    // Spelled out, so the test does not only agree with itself.
    assert_eq!(expected, vec![4, 7, 12, 2, 10, 6, 11, 9, 1, 5, 3, 8]);
    assert_eq!(claim_each(&*s), expected);

    // A multi-job claim returns the same order, and so do queues rebuilt from the file.
    let s = Store::open(backend);
    let expected = insert_specs(&*s, T0);
    let batch = s.claim("q", 100, Duration::ZERO).unwrap();
    assert_eq!(batch.iter().map(|j| j.id).collect::<Vec<_>>(), expected);

    let mut s = Store::open(backend);
    let expected = insert_specs(&*s, T0);
    s.reopen();
    assert_eq!(claim_each(&*s), expected);
}

pub fn claim_waits_for_an_insert_from_another_thread(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let started = Instant::now();
    let inserter = {
        let store = s.shared();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            insert_one(&*store, job("q", "w")).id
        })
    };
    let claimed = s.claim("q", 5, Duration::from_secs(10)).unwrap();
    let waited = started.elapsed();
    let new_id = inserter.join().unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![new_id]);
    assert_eq!(claimed[0].state, JobState::Executing);
    assert!(waited >= Duration::from_millis(100), "returned before the insert: {waited:?}");
    assert!(waited < Duration::from_secs(2), "woke late: {waited:?}");
}

pub fn claim_times_out_empty_and_ignores_other_queues(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, job("other", "w"));
    let started = Instant::now();
    let claimed = s.claim("q", 1, Duration::from_millis(150)).unwrap();
    let waited = started.elapsed();
    assert!(claimed.is_empty());
    assert!(waited >= Duration::from_millis(150), "gave up early: {waited:?}");
    assert!(waited < Duration::from_secs(1), "gave up late: {waited:?}");
    assert!(s.claim("q", 1, Duration::ZERO).unwrap().is_empty());
    assert_eq!(s.ready_count("other").unwrap(), 1);
}

pub fn interrupt_releases_a_waiting_claim(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let blocked = {
        let store = s.shared();
        thread::spawn(move || {
            started_tx.send(()).unwrap();
            store.claim("q", 1, Duration::from_secs(20)).unwrap()
        })
    };
    started_rx.recv().unwrap();
    thread::sleep(Duration::from_millis(100));
    // Interrupting another queue does not wake it, nor does an insert elsewhere.
    s.interrupt("elsewhere");
    insert_one(&*s, job("elsewhere", "w"));
    thread::sleep(Duration::from_millis(100));
    assert!(!blocked.is_finished(), "claim returned without an interrupt of its queue");
    let interrupt_at = Instant::now();
    s.interrupt("q");
    let claimed = blocked.join().unwrap();
    assert!(claimed.is_empty());
    assert!(
        interrupt_at.elapsed() < Duration::from_secs(1),
        "interrupt took {:?}",
        interrupt_at.elapsed()
    );
    // An interrupt only releases claims already waiting: a later claim still gets jobs.
    insert_one(&*s, job("q", "w"));
    assert_eq!(s.claim("q", 1, Duration::from_secs(1)).unwrap().len(), 1);
}

pub fn close_releases_a_waiting_claim(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let claimer = {
        let store = s.shared();
        thread::spawn(move || store.claim("q", 1, Duration::from_secs(20)))
    };
    thread::sleep(Duration::from_millis(50));
    let closed = Instant::now();
    let store = s.shared();
    store.close();
    assert!(store.is_closed());
    let result = claimer.join().unwrap();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert!(closed.elapsed() < Duration::from_secs(1));
}

pub fn cancelled_available_jobs_are_never_claimed(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let ids: Vec<JobId> =
        s.insert((0..10).map(|_| job("q", "w")).collect()).unwrap().iter().map(|j| j.id).collect();
    for id in ids.iter().filter(|id| *id % 2 == 0) {
        let (job, was) = s.cancel(*id).unwrap();
        assert_eq!((was, job.state), (JobState::Available, JobState::Cancelled));
    }
    assert_eq!(s.ready_count("q").unwrap(), 5);
    let claimed: Vec<JobId> =
        s.claim("q", 100, Duration::ZERO).unwrap().iter().map(|j| j.id).collect();
    assert_eq!(claimed, vec![1, 3, 5, 7, 9]);
    for id in &claimed {
        finish(&*s, &s.get(*id).unwrap(), Outcome::Complete);
    }
    // Nor after a reopen rebuilds the queues from the file.
    s.reopen();
    assert_eq!(s.ready_count("q").unwrap(), 0);
    assert!(s.claim("q", 100, Duration::ZERO).unwrap().is_empty());
    for id in ids.iter().filter(|id| *id % 2 == 0) {
        assert_eq!(s.get(*id).unwrap().state, JobState::Cancelled);
        assert_eq!(s.get(*id).unwrap().attempt, 0);
    }
}

pub fn cancels_racing_claims_never_let_a_cancelled_job_run(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let ids: Vec<JobId> =
        s.insert((0..200).map(|_| job("q", "w")).collect()).unwrap().iter().map(|j| j.id).collect();
    let start = Arc::new(Barrier::new(3));
    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let (store, start) = (s.shared(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                loop {
                    let jobs = store.claim("q", 3, Duration::from_millis(50)).unwrap();
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
        let (job, was) = s.cancel(*id).unwrap();
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
        let job = s.get(*id).unwrap();
        assert_eq!(job.attempt, u32::from(unique.contains(id)), "job {id}");
    }
}

pub fn concurrent_claimers_never_get_the_same_job(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let total = 200;
    let inserted: BTreeSet<JobId> = s
        .insert((0..total).map(|_| job("q", "w")).collect())
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let start = Arc::new(Barrier::new(4));
    let claimers: Vec<_> = (0..4_usize)
        .map(|t| {
            let (store, start) = (s.shared(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                loop {
                    let jobs = store.claim("q", 1 + t % 3, Duration::from_millis(50)).unwrap();
                    if jobs.is_empty() {
                        return got;
                    }
                    for job in jobs {
                        assert_eq!((job.state, job.attempt), (JobState::Executing, 1));
                        finish(&*store, &job, Outcome::Complete);
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
        let job = s.get(*id).unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Completed, 1), "job {id}");
    }
    assert_eq!(s.ready_count("q").unwrap(), 0);
}

pub fn a_job_promoted_and_cancelled_in_one_commit_is_not_left_ready(backend: &'static dyn Backend) {
    // The writer wakes only for commands.
    let s = Store::open_with(backend, |c| c.scheduler_interval = Duration::from_secs(60));
    let due = T0 + 10 * SECOND;
    let doomed = insert_one(&*s, NewJob { scheduled_at: Some(due), ..job("q", "w") });
    let kept = insert_one(&*s, NewJob { scheduled_at: Some(due), ..job("q", "w") });
    s.clock().advance(20 * SECOND);
    // The cancel's own commit first promotes both due jobs, then cancels one of them.
    let (cancelled, was) = s.cancel(doomed.id).unwrap();
    assert_eq!((was, cancelled.state), (JobState::Available, JobState::Cancelled));
    assert_eq!(s.get(kept.id).unwrap().state, JobState::Available);
    assert_eq!(s.ready_count("q").unwrap(), 1, "the cancelled job is still counted as ready");
    let claimed = s.claim("q", 10, Duration::ZERO).unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![kept.id]);
    assert_eq!(s.ready_count("q").unwrap(), 0);
}
