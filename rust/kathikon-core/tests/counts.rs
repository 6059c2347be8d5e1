//! Proves the stored per-(queue, state) counts always equal a tally of the jobs themselves,
//! through every kind of change, a prune and a reopen; and that `oldest_available` and
//! `sync_promoting` do what they say.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{job, open, store_path};
use kathikon_core::Jobs;
use kathikon_core::{Ack, Engine, JobState, ListFilter, Outcome};

fn tally(engine: &Engine) -> BTreeMap<(String, JobState), u64> {
    let mut out = BTreeMap::new();
    for j in engine.list(&ListFilter::default()).unwrap() {
        *out.entry((j.queue.clone(), j.state)).or_default() += 1;
    }
    out
}

fn counts(engine: &Engine) -> BTreeMap<(String, JobState), u64> {
    engine.counts().unwrap().into_iter().map(|(q, s, n)| ((q, s), n)).collect()
}

#[test]
fn counts_match_the_jobs_through_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = open(&path);
    let mut batch = Vec::new();
    for i in 0..30 {
        let mut j = job(if i % 3 == 0 { "a" } else { "b" }, "w");
        if i % 5 == 0 {
            j.scheduled_at = Some(i64::MAX / 2);
        }
        batch.push(j);
    }
    engine.insert(batch).unwrap();
    assert_eq!(counts(&engine), tally(&engine));
    assert_eq!(counts(&engine)[&("b".to_string(), JobState::Scheduled)], 4);

    let claimed = engine.claim("b", 8, Duration::ZERO).unwrap();
    assert_eq!(counts(&engine), tally(&engine));
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
    engine.ack(acks).unwrap();
    engine.cancel(1).unwrap();
    engine.sync().unwrap();
    assert_eq!(counts(&engine), tally(&engine));

    assert!(engine.prune(Duration::ZERO).unwrap() > 0);
    assert_eq!(counts(&engine), tally(&engine));
    engine.close();
    let engine = open(&path);
    assert_eq!(counts(&engine), tally(&engine));
    let total: u64 = counts(&engine).values().sum();
    assert_eq!(total as usize, engine.list(&ListFilter::default()).unwrap().len());
}

#[test]
fn oldest_available_looks_across_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&store_path(&dir));
    let mut old = job("q", "w");
    old.priority = 9;
    old.scheduled_at = Some(1_000);
    let mut newer = job("q", "w");
    newer.priority = 0;
    newer.scheduled_at = Some(2_000);
    engine.insert(vec![newer, old]).unwrap();
    assert_eq!(engine.oldest_available("q").unwrap(), Some(1_000));
    assert_eq!(engine.oldest_available("other").unwrap(), None);
}

#[test]
fn sync_promoting_runs_scheduled_jobs_early() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&store_path(&dir));
    let mut later = job("q", "w");
    let in_an_hour = engine.clock().now() + 3_600_000_000;
    later.scheduled_at = Some(in_an_hour);
    let inserted = engine.insert(vec![later]).unwrap();
    engine.sync().unwrap();
    assert_eq!(engine.get(inserted[0].id).unwrap().state, JobState::Scheduled);
    engine.sync_promoting(in_an_hour).unwrap();
    assert_eq!(engine.get(inserted[0].id).unwrap().state, JobState::Available);
    assert_eq!(engine.claim("q", 1, Duration::from_secs(1)).unwrap().len(), 1);
}
