//! Queue control across the nodes of one `PostgreSQL` database: a pause set through one node
//! holds for claims on every other node from the moment it returns, and a resume through one
//! node wakes a claim waiting on another at once.
#![cfg(feature = "postgres")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{job, T0};
use kathikon_core::clock::ManualClock;
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{JobState, Jobs, QueueChange};

fn node(url: &str, clock: &Arc<ManualClock>) -> Arc<PgStore> {
    Arc::new(PgStore::open(PgConfig { clock: clock.clone(), ..PgConfig::new(url) }).expect("open"))
}

fn executing(store: &dyn Jobs) -> u64 {
    store.counts().unwrap().iter().filter(|c| c.1 == JobState::Executing).map(|c| c.2).sum()
}

/// Two nodes claim one at a time from four threads while a third pauses the queue: from the
/// moment the pause returns, the count of executing jobs stays put.
#[test]
fn a_pause_through_one_node_holds_for_claims_on_the_others() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b, control) = (node(&url, &clock), node(&url, &clock), node(&url, &clock));
    a.insert((0..3_000).map(|_| job("busy", "w")).collect()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let claimers: Vec<_> = [&a, &a, &b, &b]
        .into_iter()
        .map(|store| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    store.claim("busy", 1, Duration::from_millis(5)).unwrap();
                }
            })
        })
        .collect();
    while executing(&*control) < 50 {
        std::thread::sleep(Duration::from_millis(1));
    }
    control.set_queue("busy", QueueChange::Pause).unwrap();
    let at_pause = executing(&*control);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in claimers {
        c.join().unwrap();
    }
    assert_eq!(executing(&*control), at_pause, "a claim succeeded after the pause returned");
    assert!(at_pause < 3_000, "the claimers were still claiming when the pause came");
}

/// A claim waiting on a paused queue on one node gets its job as soon as another node resumes
/// the queue, well before its poll would have looked.
#[test]
fn a_resume_through_one_node_wakes_a_claim_waiting_on_another() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let slow_poll = |url: &str| {
        let config = PgConfig {
            clock: clock.clone(),
            poll_interval: Duration::from_secs(60),
            ..PgConfig::new(url)
        };
        Arc::new(PgStore::open(config).expect("open"))
    };
    let (waiter, control) = (slow_poll(&url), slow_poll(&url));
    control.set_queue("q", QueueChange::Pause).unwrap();
    control.insert(vec![job("q", "w")]).unwrap();
    let store = waiter.clone();
    let waiting = std::thread::spawn(move || {
        let start = Instant::now();
        let got = store.claim("q", 1, Duration::from_secs(120)).unwrap();
        (got.len(), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    control.set_queue("q", QueueChange::Resume).unwrap();
    let (got, took) = waiting.join().unwrap();
    assert_eq!(got, 1);
    assert!(took < Duration::from_secs(30), "woken by the resume, not a poll: {took:?}");
}

/// The pause's exactness rests on one lock: a claim's transaction holds its queue's lock
/// shared from before the snapshot that checks the pause until its commit, and a change takes
/// it exclusively. So a pause does not return while a claim that might not have seen it is
/// still in flight (here a transaction holding the lock as a claim does).
#[test]
fn a_pause_waits_for_a_claim_in_flight() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let control = node(&url, &clock);
    let mut claim = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut in_flight = claim.transaction().unwrap();
    // The key the claim's transaction takes: ("kq", hashtext(queue)).
    in_flight.execute("SELECT pg_advisory_xact_lock_shared(27505, hashtext('q'))", &[]).unwrap();
    let pausing = std::thread::spawn(move || {
        control.set_queue("q", QueueChange::Pause).unwrap();
        Instant::now()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!pausing.is_finished(), "the pause returned while a claim was in flight");
    let committed = Instant::now();
    in_flight.commit().unwrap();
    assert!(pausing.join().unwrap() >= committed);
}

/// The other side of that lock: a claim waits for a change in flight (here a transaction
/// holding the lock as `set_queue` does), so it sees the change once it commits.
#[test]
fn a_claim_waits_for_a_queue_change_in_flight() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let claimer = node(&url, &clock);
    claimer.insert(vec![job("q", "w")]).unwrap();
    let mut change = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut in_flight = change.transaction().unwrap();
    in_flight.execute("SELECT pg_advisory_xact_lock(27505, hashtext('q'))", &[]).unwrap();
    let claiming = std::thread::spawn(move || claimer.claim("q", 1, Duration::ZERO).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!claiming.is_finished(), "the claim ran while a change held the queue's lock");
    in_flight.commit().unwrap();
    assert_eq!(claiming.join().unwrap().len(), 1);
}
