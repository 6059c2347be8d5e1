//! `PostgreSQL` restarted under a running store (killed the way a crash would, then started
//! again): calls in flight fail with a typed error or wait for the server to come back, never
//! anything else; nothing an insert acknowledged is lost; and the store carries on by itself —
//! inserts, claims, acks, and a claim waiting across the restart woken by an insert after it.
//! Its own test binary, as the restart takes down the binary's one server.
#![cfg(feature = "postgres")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{complete_all, job};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Error, JobState, Jobs, ListFilter};

#[test]
fn a_restart_loses_nothing_acknowledged_and_the_store_carries_on() {
    let Some(url) = common::pg::database() else { return };
    let store = Arc::new(
        PgStore::open(PgConfig {
            heartbeat: Some(Duration::from_millis(100)),
            tick: Duration::from_millis(100),
            poll_interval: Duration::from_secs(300),
            ..PgConfig::new(url.as_str())
        })
        .expect("open"),
    );
    // Inserts one job at a time for the whole test: each answer is a stored job or a typed
    // error (the connection broke mid-call, or none could be made for a while).
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let inserter = {
        let (store, stop) = (store.clone(), stop.clone());
        let (acknowledged, failures) = (acknowledged.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match store.insert(vec![job("q", "w")]) {
                    Ok(jobs) => acknowledged.lock().unwrap().push(jobs[0].id),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        })
    };
    while acknowledged.lock().unwrap().len() < 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A claim of an empty queue, waiting (its poll is minutes away) across the restart.
    let waiting = {
        let store = store.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let got = store.claim("late", 1, Duration::from_secs(120));
            (got, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    common::pg::restart(Duration::from_millis(500));
    let after = acknowledged.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < after + 50 {
        assert!(Instant::now() < deadline, "inserts did not resume after the restart");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    inserter.join().unwrap();
    let failures = failures.lock().unwrap();
    // Only the call in flight when the server died fails; the next ones wait for it.
    assert!(failures.len() <= 1, "{failures:?}");
    for e in failures.iter() {
        let typed = matches!(e, Error::ConnectionLost { .. })
            || matches!(e, Error::Storage(m) if m.contains("could not connect"));
        assert!(typed, "an insert failed otherwise: {e:?}");
    }

    // Every acknowledged insert is there.
    let stored: Vec<u64> =
        store.list(&ListFilter::default()).unwrap().iter().map(|j| j.id).collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let lost: Vec<_> = acknowledged.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");

    // The listener reconnected: an insert now wakes the claim that waited across the restart.
    store.insert(vec![job("late", "w")]).unwrap();
    let (got, took) = waiting.join().unwrap();
    assert_eq!(got.unwrap().len(), 1, "the waiting claim got the job");
    assert!(took < Duration::from_secs(60), "woken, not polled: {took:?}");

    // Claims and acks work as before: every job runs to completion.
    complete_all(&*store, "q", 100);
    let counts = store.counts().unwrap();
    let open: u64 =
        counts.iter().filter(|c| c.0 == "q" && c.1 != JobState::Completed).map(|c| c.2).sum();
    assert_eq!(open, 0, "{counts:?}");
}
