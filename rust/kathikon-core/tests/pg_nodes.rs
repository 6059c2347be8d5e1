//! Several `PgStore`s on one database, as several machines' apps would be: each registers a
//! node; an ack from a node that does not hold the attempt is fenced (refused, noted in the
//! history) while the holder's is applied; closing a store hands its held jobs back; and the
//! verbs not built yet are refused by name.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Ack, AckResult, Error, JobState, Jobs, ListFilter, Outcome};

fn open(url: &str, clock: &Arc<ManualClock>) -> PgStore {
    PgStore::open(PgConfig { clock: clock.clone(), ..PgConfig::new(url) }).expect("open")
}

fn nodes(url: &str) -> Vec<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .query("SELECT id FROM kathikon.nodes ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn only_the_node_holding_the_attempt_can_ack_it() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (open(&url, &clock), open(&url, &clock));
    assert_ne!(a.node(), b.node());
    assert_eq!(nodes(&url), vec![a.node(), b.node()]);
    let inserted = b.insert(vec![job("q", "w")]).unwrap().remove(0);
    let held = a.claim("q", 1, Duration::ZERO).unwrap().remove(0);
    assert_eq!((held.id, held.attempt), (inserted.id, 1));
    assert!(b.claim("q", 1, Duration::ZERO).unwrap().is_empty(), "claimed twice");

    clock.advance(SECOND);
    let refused = b.ack(vec![Ack { id: held.id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    assert_eq!(refused, vec![AckResult::Stale(Some(JobState::Executing))]);
    let noted = a.get(held.id).unwrap();
    assert_eq!(noted.state, JobState::Executing, "a refused ack changes no state");
    assert_eq!(noted.errors.len(), 1);
    assert!(noted.errors[0].error.starts_with("fenced: "), "{:?}", noted.errors);
    assert!(noted.errors[0].error.contains(&format!("node {}", b.node())), "{:?}", noted.errors);

    let applied = a.ack(vec![Ack { id: held.id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    match &applied[..] {
        [AckResult::Applied(done)] => {
            assert_eq!((done.state, done.completed_at), (JobState::Completed, Some(T0 + SECOND)));
        }
        other => panic!("the holder's ack must apply, got {other:?}"),
    }
}

#[test]
fn closing_a_store_hands_its_held_jobs_back_and_leaves() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (open(&url, &clock), open(&url, &clock));
    a.insert(vec![job("q", "w"), job("q", "w")]).unwrap();
    let held = a.claim("q", 2, Duration::ZERO).unwrap();
    assert_eq!(held.len(), 2);
    clock.advance(SECOND);
    a.close();
    assert_eq!(nodes(&url), vec![b.node()], "the closed store's node row is gone");
    assert!(matches!(a.get(held[0].id), Err(Error::Closed)));
    let back = b.list(&ListFilter::default()).unwrap();
    for j in &back {
        assert_eq!((j.state, j.scheduled_at), (JobState::Available, T0 + SECOND));
        assert!(j.errors[0].error.starts_with("rescued: "), "{:?}", j.errors);
    }
    let again = b.claim("q", 2, Duration::ZERO).unwrap();
    assert_eq!(again.iter().map(|j| j.attempt).collect::<Vec<_>>(), vec![2, 2]);
}
