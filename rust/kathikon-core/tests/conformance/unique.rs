//! Unique inserts ([`kathikon_core::UniqueSpec`]): a job whose key another job holds (in the
//! spec's states, within its period) comes back as that job, flagged, and nothing is stored;
//! duplicates within one insert resolve to the first; threads racing store one job; replace
//! overwrites the named fields and moves the job's claim place; and the keys survive a reopen.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::common::job;
use crate::harness::{Backend, Store};
use kathikon_core::clock::Clock;
use kathikon_core::{Ack, JobState, Jobs, ListFilter, NewJob, Outcome, UniqueSpec};

const SECOND: i64 = 1_000_000;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

const INCOMPLETE: [&str; 4] = ["scheduled", "available", "executing", "retryable"];

fn spec(keys: &[&str], period: Option<i64>, replace: &[&str]) -> UniqueSpec {
    UniqueSpec::from_names(
        &names(&["worker", "queue", "args"]),
        names(keys),
        period,
        &names(&[&INCOMPLETE[..], &["completed"]].concat()),
        &names(replace),
    )
    .unwrap()
}

fn unique(args: &str, spec: &UniqueSpec) -> NewJob {
    NewJob { args: args.into(), unique: Some(Box::new(spec.clone())), ..job("q", "w") }
}

fn stored(store: &dyn Jobs) -> usize {
    store.list(&ListFilter::default()).unwrap().len()
}

pub fn a_held_key_returns_the_existing_job_flagged(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let by_user = spec(&["user"], Some(300 * SECOND), &[]);
    let first = s.insert_flagged(vec![unique(r#"{"user":7,"page":1}"#, &by_user)]).unwrap();
    assert!(first.conflicts.is_empty());
    let again = s.insert_flagged(vec![unique(r#"{"user":7,"page":2}"#, &by_user)]).unwrap();
    assert_eq!(again.conflicts, [0]);
    assert_eq!(again.jobs[0], first.jobs[0], "the existing job, unchanged");
    let other = s.insert_flagged(vec![unique(r#"{"user":8,"page":1}"#, &by_user)]).unwrap();
    assert!(other.conflicts.is_empty());
    // A plain insert of the same job is not unique.
    s.insert(vec![NewJob { args: r#"{"user":7}"#.into(), ..job("q", "w") }]).unwrap();
    assert_eq!(stored(&*s), 3);
}

pub fn duplicates_within_one_insert_resolve_to_the_first(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let sp = spec(&[], None, &[]);
    let batch = vec![
        unique(r#"{"a":1}"#, &sp),
        unique(r#"{"a":2}"#, &sp),
        unique(r#"{"a":1}"#, &sp),
        job("q", "w"),
        unique(r#"{"a":2}"#, &sp),
    ];
    let got = s.insert_flagged(batch).unwrap();
    assert_eq!(got.conflicts, [2, 4]);
    assert_eq!(got.jobs[2].id, got.jobs[0].id);
    assert_eq!(got.jobs[4].id, got.jobs[1].id);
    assert_eq!(stored(&*s), 3);
}

pub fn only_the_named_states_and_the_period_hold_a_key(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let incomplete = UniqueSpec::from_names(
        &names(&["worker", "args"]),
        vec![],
        Some(60 * SECOND),
        &names(&INCOMPLETE),
        &[],
    )
    .unwrap();
    let first = s.insert_flagged(vec![unique("{}", &incomplete)]).unwrap().jobs.remove(0);
    let claimed = s.claim("q", 1, Duration::ZERO).unwrap();
    let ack = Ack { id: first.id, attempt: claimed[0].attempt, outcome: Outcome::Complete };
    s.ack(vec![ack]).unwrap();
    // Completed is not among the states: the key is free.
    let second = s.insert_flagged(vec![unique("{}", &incomplete)]).unwrap();
    assert!(second.conflicts.is_empty());
    assert_ne!(second.jobs[0].id, first.id);
    // Within the period the new job holds it; once the period passed, it does not.
    s.clock().advance(59 * SECOND);
    assert_eq!(s.insert_flagged(vec![unique("{}", &incomplete)]).unwrap().conflicts, [0]);
    s.clock().advance(SECOND);
    let third = s.insert_flagged(vec![unique("{}", &incomplete)]).unwrap();
    assert!(third.conflicts.is_empty());
    assert_eq!(stored(&*s), 3);
}

pub fn threads_racing_one_key_store_one_job(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let jobs = s.shared();
    let start = Arc::new(Barrier::new(8));
    let sp = spec(&[], None, &[]);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (jobs, start, sp) = (jobs.clone(), start.clone(), sp.clone());
            std::thread::spawn(move || {
                start.wait();
                (0..20)
                    .map(|_| jobs.insert_flagged(vec![unique(r#"{"k":1}"#, &sp)]).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let new: Vec<_> = answers.iter().filter(|a| a.conflicts.is_empty()).collect();
    assert_eq!(new.len(), 1, "exactly one insert stored a job");
    assert!(answers.iter().all(|a| a.jobs[0].id == new[0].jobs[0].id));
    assert_eq!(stored(&*s), 1);
}

pub fn replace_overwrites_fields_and_moves_the_claim_place(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let now = s.clock().now();
    // Not keyed by queue, so the job can move to another queue and still hold its key.
    let sp = UniqueSpec::from_names(
        &names(&["worker", "args"]),
        names(&["k"]),
        None,
        &names(&INCOMPLETE),
        &names(&["args", "priority", "scheduled_at", "queue"]),
    )
    .unwrap();
    let first = s.insert_flagged(vec![unique(r#"{"k":1,"v":1}"#, &sp)]).unwrap().jobs.remove(0);
    assert_eq!(first.state, JobState::Available);
    // Moved an hour on: available goes back to scheduled, and is not claimable now.
    let later =
        NewJob { scheduled_at: Some(now + 3600 * SECOND), ..unique(r#"{"k":1,"v":2}"#, &sp) };
    let got = s.insert_flagged(vec![later]).unwrap();
    assert_eq!(got.conflicts, [0]);
    let job = &got.jobs[0];
    assert_eq!(
        (job.id, job.state, job.scheduled_at),
        (first.id, JobState::Scheduled, now + 3600 * SECOND)
    );
    assert_eq!(job.args, r#"{"k":1,"v":2}"#);
    assert_eq!(s.get(first.id).unwrap(), *job);
    assert!(s.claim("q", 1, Duration::ZERO).unwrap().is_empty(), "not claimable at its old place");
    // Due again now, in another queue at another priority: claimable there, and only there.
    let moved = NewJob { queue: "r".into(), priority: 3, ..unique(r#"{"k":1,"v":3}"#, &sp) };
    let got = s.insert_flagged(vec![moved]).unwrap();
    assert_eq!(got.conflicts, [0]);
    s.sync().unwrap(); // the scheduler promotes it (its due time is now)
    let job = s.get(first.id).unwrap();
    assert_eq!((job.state, job.queue.as_str(), job.priority), (JobState::Available, "r", 3));
    assert!(s.claim("q", 1, Duration::ZERO).unwrap().is_empty());
    let claimed = s.claim("r", 1, Duration::ZERO).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, first.id);
    let counts: Vec<_> = s.counts().unwrap().into_iter().filter(|c| c.2 > 0).collect();
    assert_eq!(counts, [("r".to_string(), JobState::Executing, 1)]);
    // An executing job is not replaced.
    let got = s.insert_flagged(vec![unique(r#"{"k":1,"v":4}"#, &sp)]).unwrap();
    assert_eq!(got.conflicts, [0]);
    assert_eq!(got.jobs[0].args, r#"{"k":1,"v":3}"#);
}

pub fn keys_survive_a_reopen(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let sp = spec(&[], Some(3600 * SECOND), &[]);
    let first = s.insert_flagged(vec![unique("{}", &sp)]).unwrap().jobs.remove(0);
    s.reopen();
    let again = s.insert_flagged(vec![unique("{}", &sp)]).unwrap();
    assert_eq!((again.conflicts.as_slice(), again.jobs[0].id), (&[0][..], first.id));
}

pub fn bad_specs_are_refused_naming_the_value(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let mut sp = spec(&[], None, &[]);
    sp.period = Some(-1);
    let err = s.insert_flagged(vec![unique("{}", &sp)]).unwrap_err().to_string();
    assert!(err.contains("period -1"), "{err}");
    assert_eq!(stored(&*s), 0);
}
