//! Job results through the contract: a value returned is kept in the job and read back (over
//! the socket and on `PostgreSQL` too), across a reopen, and goes with the job when it is
//! retried or pruned; a value not kept leaves the reason in the job's history. A wait for a
//! job to finish (`wait_finished`) is woken when it finishes — not by polling: a wait of
//! 120 s ends as soon as the job does — keeps waiting through a retry, and ends on a cancel,
//! a deletion or its timeout.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{claim_one, finish, insert_one, job};
use crate::harness::{Backend, Store};
use kathikon_core::{BulkAction, Error, JobState, ListFilter, Outcome};

fn keep(json: &str) -> Outcome {
    Outcome::Return { result: Ok(json.into()) }
}

pub fn a_returned_value_is_kept_with_the_job_and_goes_with_it(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let kept = insert_one(&*s, job("q", "w"));
    let dropped = insert_one(&*s, job("q", "w"));
    let plain = insert_one(&*s, job("q", "w"));
    assert_eq!(kept.result, None);

    let running = claim_one(&*s, "q");
    let done = finish(&*s, &running, keep(r#"{"rows": [1, 2], "name": "é"}"#));
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result.as_deref(), Some(r#"{"rows": [1, 2], "name": "é"}"#));
    let why = "result not stored: the value returned is 9 bytes".to_string();
    let running = claim_one(&*s, "q");
    let done = finish(&*s, &running, Outcome::Return { result: Err(why.clone()) });
    assert_eq!((done.state, done.result.as_deref()), (JobState::Completed, None));
    assert_eq!(done.errors.last().map(|e| e.error.as_str()), Some(why.as_str()));
    let running = claim_one(&*s, "q");
    assert_eq!(finish(&*s, &running, Outcome::Complete).result, None);

    s.reopen();
    assert_eq!(s.get(kept.id).unwrap().result.as_deref(), Some(r#"{"rows": [1, 2], "name": "é"}"#));
    let listed = s.list(&ListFilter::default()).unwrap();
    let results: Vec<_> = listed.iter().map(|j| (j.id, j.result.clone())).collect();
    assert_eq!(
        results,
        vec![
            (kept.id, Some(r#"{"rows": [1, 2], "name": "é"}"#.to_string())),
            (dropped.id, None),
            (plain.id, None)
        ]
    );

    // Retried, it is unfinished again: the old result goes, and the next one is kept.
    assert_eq!(s.retry(kept.id).unwrap().result, None);
    assert_eq!(s.get(kept.id).unwrap().result, None);
    let running = claim_one(&*s, "q");
    assert_eq!(finish(&*s, &running, keep("2")).result.as_deref(), Some("2"));
    // Pruned, the job and its result are gone.
    s.clock().advance(kathikon_core::clock::SECOND);
    assert_eq!(s.prune(Duration::ZERO).unwrap(), 3);
    assert!(matches!(s.get(kept.id), Err(Error::JobNotFound(_))));
}

pub fn a_wait_for_a_job_is_woken_when_it_finishes(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let inserted = insert_one(&*s, job("q", "w"));
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let jobs = s.shared();
        std::thread::spawn(move || {
            let started = Instant::now();
            let found = jobs.wait_finished(inserted.id, Duration::from_secs(120));
            tx.send((found, started.elapsed())).unwrap();
        })
    };
    let quiet = |what: &str| {
        if let Ok((found, _)) = rx.recv_timeout(Duration::from_millis(300)) {
            panic!("the wait ended {what}: {found:?}");
        }
    };
    quiet("while the job was available");
    let running = claim_one(&*s, "q");
    quiet("while the job was executing");
    finish(&*s, &running, Outcome::Fail { error: "boom".into(), retry_in: Some(0) });
    quiet("while the job was retryable");
    s.sync().unwrap();
    let running = claim_one(&*s, "q");
    finish(&*s, &running, keep(r#"["done"]"#));
    let (found, took) = rx.recv_timeout(Duration::from_secs(20)).expect("woken");
    waiter.join().unwrap();
    let found = found.unwrap();
    assert_eq!((found.state, found.result.as_deref()), (JobState::Completed, Some(r#"["done"]"#)));
    assert!(took < Duration::from_secs(30), "waited {took:?}");

    // A job finished already: at once, as it is.
    let again = s.wait_finished(inserted.id, Duration::from_secs(120)).unwrap();
    assert_eq!(again.result.as_deref(), Some(r#"["done"]"#));
}

pub fn a_wait_ends_on_a_cancel_a_deletion_or_its_timeout(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let cancelled = insert_one(&*s, job("q", "w"));
    let deleted = insert_one(&*s, job("q", "gone"));
    let waiting = insert_one(&*s, job("q", "w"));

    let waits: Vec<_> = [cancelled.id, deleted.id]
        .into_iter()
        .map(|id| {
            let jobs = s.shared();
            std::thread::spawn(move || jobs.wait_finished(id, Duration::from_secs(120)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    s.cancel(cancelled.id).unwrap();
    let gone = ListFilter { worker: Some("gone".into()), ..ListFilter::default() };
    assert_eq!(s.bulk(BulkAction::Delete { force: true }, &gone).unwrap(), 1);
    let mut waits = waits.into_iter();
    let found = waits.next().unwrap().join().unwrap().unwrap();
    assert_eq!(found.state, JobState::Cancelled);
    match waits.next().unwrap().join().unwrap() {
        Err(Error::JobNotFound(id)) => assert_eq!(id, deleted.id),
        other => panic!("{other:?}"),
    }

    let started = Instant::now();
    let found = s.wait_finished(waiting.id, Duration::from_millis(100)).unwrap();
    assert_eq!(found.state, JobState::Available);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(matches!(s.wait_finished(999_999, Duration::from_secs(5)), Err(Error::JobNotFound(_))));
}
