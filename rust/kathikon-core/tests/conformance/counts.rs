//! The stored per-(queue, state) counts always equal a tally of the jobs themselves, through
//! every kind of change, a prune and a reopen; `oldest_available` and `sync_promoting` do
//! what they say.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::job;
use crate::harness::{Backend, Store};
use kathikon_core::clock::Clock;
use kathikon_core::{Ack, JobState, Jobs, ListFilter, Outcome};

fn tally(store: &dyn Jobs) -> BTreeMap<(String, JobState), u64> {
    let mut out = BTreeMap::new();
    for j in store.list(&ListFilter::default()).unwrap() {
        *out.entry((j.queue.clone(), j.state)).or_default() += 1;
    }
    out
}

fn counts(store: &dyn Jobs) -> BTreeMap<(String, JobState), u64> {
    store.counts().unwrap().into_iter().map(|(q, s, n)| ((q, s), n)).collect()
}

pub fn counts_match_the_jobs_through_every_change(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let mut batch = Vec::new();
    for i in 0..30 {
        let mut j = job(if i % 3 == 0 { "a" } else { "b" }, "w");
        if i % 5 == 0 {
            j.scheduled_at = Some(i64::MAX / 2);
        }
        batch.push(j);
    }
    s.insert(batch).unwrap();
    assert_eq!(counts(&*s), tally(&*s));
    assert_eq!(counts(&*s)[&("b".to_string(), JobState::Scheduled)], 4);

    let claimed = s.claim("b", 8, Duration::ZERO).unwrap();
    assert_eq!(counts(&*s), tally(&*s));
    let outcomes = [
        Outcome::Complete,
        Outcome::Fail { error: "x".into(), retry_in: Some(3_600_000_000) },
        Outcome::Snooze { delay: 1 },
        Outcome::Cancel { reason: "r".into() },
        Outcome::Discard { reason: "r".into() },
        Outcome::Complete,
    ];
    let acks = claimed
        .iter()
        .zip(outcomes.iter().cycle())
        .map(|(j, o)| Ack { id: j.id, attempt: j.attempt, outcome: o.clone() })
        .collect();
    s.ack(acks).unwrap();
    s.cancel(1).unwrap();
    s.sync().unwrap();
    assert_eq!(counts(&*s), tally(&*s));

    assert!(s.prune(Duration::ZERO).unwrap() > 0);
    assert_eq!(counts(&*s), tally(&*s));
    s.reopen();
    assert_eq!(counts(&*s), tally(&*s));
    let total: u64 = counts(&*s).values().sum();
    assert_eq!(total as usize, s.list(&ListFilter::default()).unwrap().len());
}

pub fn oldest_available_looks_across_priorities(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let mut old = job("q", "w");
    old.priority = 9;
    old.scheduled_at = Some(1_000);
    let mut newer = job("q", "w");
    newer.priority = 0;
    newer.scheduled_at = Some(2_000);
    s.insert(vec![newer, old]).unwrap();
    assert_eq!(s.oldest_available("q").unwrap(), Some(1_000));
    assert_eq!(s.oldest_available("other").unwrap(), None);
}

pub fn sync_promoting_runs_scheduled_jobs_early(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let mut later = job("q", "w");
    let in_an_hour = s.clock().now() + 3_600_000_000;
    later.scheduled_at = Some(in_an_hour);
    let inserted = s.insert(vec![later]).unwrap();
    s.sync().unwrap();
    assert_eq!(s.get(inserted[0].id).unwrap().state, JobState::Scheduled);
    s.sync_promoting(in_an_hour).unwrap();
    assert_eq!(s.get(inserted[0].id).unwrap().state, JobState::Available);
    assert_eq!(s.claim("q", 1, Duration::from_secs(1)).unwrap().len(), 1);
}
