//! One leader among the nodes on `PostgreSQL`: exactly one holds the leader lock; only it
//! promotes due jobs and prunes finished ones; when it closes — or when whoever holds the
//! lock drops its connection — another node takes over and does the work.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, job, T0};
use kathikon_core::clock::{Clock, ManualClock, Micros, SECOND};
use kathikon_core::pg::{PgConfig, PgStore, LEADER_LOCK};
use kathikon_core::{Ack, Error, JobState, Jobs, NewJob, Outcome, Retention};

const HOUR: Micros = 3600 * SECOND;

/// A node doing its rounds every few ms, keeping finished jobs for an hour.
fn node(url: &str, clock: &Arc<ManualClock>) -> PgStore {
    PgStore::open(PgConfig {
        clock: clock.clone(),
        heartbeat: Some(Duration::from_millis(10)),
        tick: Duration::from_millis(10),
        prune_interval: Duration::from_millis(10),
        retention: Retention::all(Duration::from_secs(3600)),
        ..PgConfig::new(url)
    })
    .expect("open")
}

fn heartbeat_at(url: &str, node: i64) -> Micros {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query_one("SELECT heartbeat_at FROM kathikon.nodes WHERE id = $1", &[&node]).unwrap().get(0)
}

/// A completed job (finished at the clock's time) and a job due in 10 s, by `store`.
fn finished_and_due(store: &PgStore, clock: &ManualClock) -> (u64, u64) {
    let done = store.insert(vec![job("q", "w")]).unwrap()[0].id;
    store.claim("q", 1, Duration::ZERO).unwrap();
    store.ack(vec![Ack { id: done, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    let due = clock.now() + 10 * SECOND;
    let due =
        store.insert(vec![NewJob { scheduled_at: Some(due), ..job("q", "w") }]).unwrap()[0].id;
    (done, due)
}

/// Whether the leader's work is done: `done` pruned and `due` promoted.
fn worked(store: &PgStore, done: u64, due: u64) -> bool {
    matches!(store.get(done), Err(Error::JobNotFound(_)))
        && store.get(due).unwrap().state == JobState::Available
}

#[test]
fn leadership_moves_to_another_node_when_the_leader_closes() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let nodes = [node(&url, &clock), node(&url, &clock)];
    eventually("a node leads", || nodes.iter().any(PgStore::is_leader));
    for _ in 0..20 {
        assert!(!nodes.iter().all(PgStore::is_leader), "two leaders");
        std::thread::sleep(Duration::from_millis(10));
    }
    let [a, b] = nodes;
    let (leader, other) = if a.is_leader() { (a, b) } else { (b, a) };
    let (done, due) = finished_and_due(&other, &clock);
    leader.close();
    eventually("the other node leads", || other.is_leader());
    clock.advance(2 * HOUR);
    eventually("the new leader prunes and promotes", || worked(&other, done, due));
}

#[test]
fn only_the_lock_holder_works_and_its_dropped_connection_hands_leadership_on() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    // A stand-in leader: a bare connection holding the lock.
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert!(holder
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .unwrap()
        .get::<_, bool>(0));
    let follower = node(&url, &clock);
    let (done, due) = finished_and_due(&follower, &clock);
    clock.advance(2 * HOUR);
    // Two of the follower's heartbeats after the move: a whole round ran since, and did
    // nothing a leader does.
    let now = clock.now();
    eventually("a round at the new time", || heartbeat_at(&url, follower.node()) == now);
    clock.advance(1);
    eventually("a second round", || heartbeat_at(&url, follower.node()) == now + 1);
    assert!(!follower.is_leader());
    assert_eq!(follower.get(due).unwrap().state, JobState::Scheduled, "promoted by a follower");
    assert!(follower.get(done).is_ok(), "pruned by a follower");

    drop(holder); // its connection ends: PostgreSQL releases the lock
    eventually("the follower leads", || follower.is_leader());
    eventually("the new leader prunes and promotes", || worked(&follower, done, due));
}
