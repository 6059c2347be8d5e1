//! `claimers` names the queues that running processes claim from: none before any claim, a
//! queue once a claim was made on it (empty-handed or not) with the claiming process, and an
//! idle time of zero while a claim waits on it.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::job;
use crate::harness::{Backend, Store};
use kathikon_core::Claimer;

fn claimer(claimers: &[Claimer], queue: &str) -> Option<Claimer> {
    claimers.iter().find(|c| c.queue == queue).cloned()
}

pub fn claimers_name_the_queues_claimed_from_and_by_whom(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    s.insert(vec![job("unserved", "w"), job("served", "w")]).unwrap();
    assert_eq!(s.claimers().unwrap(), vec![], "no claim yet, no claimer");

    // An empty-handed claim counts: the queue is served, it just has nothing ready.
    assert!(s.claim("idle", 1, Duration::ZERO).unwrap().is_empty());
    assert_eq!(s.claim("served", 5, Duration::ZERO).unwrap().len(), 1);
    let claimers = s.claimers().unwrap();
    let queues: Vec<&str> = claimers.iter().map(|c| c.queue.as_str()).collect();
    assert_eq!(queues, ["idle", "served"], "only queues claimed from, in name order");
    for c in &claimers {
        assert_eq!(c.pid, std::process::id(), "{c:?}: the claiming process");
    }
    assert_eq!(s.ready_count("unserved").unwrap(), 1, "its job waits with nobody claiming");
}

pub fn a_waiting_claim_shows_as_a_claimer_with_no_idle_time(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let waiting = {
        let store = s.shared();
        thread::spawn(move || store.claim("q", 1, Duration::from_secs(30)).unwrap())
    };
    // Seen waiting: the claimer is reported with an idle time of zero.
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let now = claimer(&s.claimers().unwrap(), "q");
        if now.as_ref().is_some_and(|c| c.idle.is_zero()) {
            break;
        }
        assert!(Instant::now() < give_up, "the waiting claim never showed: {now:?}");
        thread::sleep(Duration::from_millis(5));
    }
    s.interrupt("q");
    assert!(waiting.join().unwrap().is_empty());
    // Its wait ended: it stays listed, as the latest claimer of the queue.
    let after = claimer(&s.claimers().unwrap(), "q").expect("q is still listed");
    assert_eq!(after.pid, std::process::id());
}
