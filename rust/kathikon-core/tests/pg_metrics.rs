//! Metrics on `PostgreSQL` across nodes: each node counts its outcomes in memory and writes
//! them at its heartbeat and at close, merged into one row per queue and minute. A node sees
//! its own outcomes at once and another node's after that node's next heartbeat; acks of
//! many threads on several nodes add up exactly; a job rescued from a lost node counts at the
//! rescuer; the leader deletes minutes (and progress reports) a day old.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::metrics::{minute_of, MINUTE};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Ack, Jobs, MetricPoint, NewJob, Outcome};

/// A node renewing (and writing its counts) every 10 ms, or never (`None`).
fn node(url: &str, clock: &Arc<ManualClock>, heartbeat: Option<Duration>) -> PgStore {
    PgStore::open(PgConfig {
        clock: clock.clone(),
        heartbeat,
        tick: Duration::from_millis(10),
        lease: Duration::from_secs(30),
        ..PgConfig::new(url)
    })
    .expect("open")
}

/// Jobs each thread runs in the concurrency test.
const PER_THREAD: usize = 40;

const BEATING: Option<Duration> = Some(Duration::from_millis(10));

/// A clock at the start of a minute.
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(minute_of(T0) + MINUTE))
}

/// Insert, claim and ack one job of `queue` on `store`, `ms` ms after its claim.
fn run(store: &PgStore, clock: &ManualClock, queue: &str, ms: i64, outcome: Outcome) {
    store.insert(vec![NewJob { max_attempts: 3, ..job(queue, "w") }]).unwrap();
    let held = store.claim(queue, 1, Duration::ZERO).unwrap().remove(0);
    clock.advance(ms * SECOND / 1000);
    store.ack(vec![Ack { id: held.id, attempt: held.attempt, outcome }]).unwrap();
}

/// `(completed, failed, discarded, cancelled)` of `queue`'s points.
fn counts(points: &[MetricPoint], queue: &str) -> [u64; 4] {
    points.iter().filter(|p| p.queue == queue).fold([0; 4], |[c, f, d, x], p| {
        [c + p.completed, f + p.failed, d + p.discarded, x + p.cancelled]
    })
}

fn entries(url: &str, kind: i16) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query_one("SELECT count(*) FROM kathikon.entries WHERE kind = $1", &[&kind]).unwrap().get(0)
}

#[test]
fn each_nodes_outcomes_reach_the_other_at_its_next_heartbeat() {
    let Some(url) = common::pg::database() else { return };
    let clock = clock();
    let (a, b) = (node(&url, &clock, BEATING), node(&url, &clock, BEATING));
    run(&a, &clock, "q", 4, Outcome::Complete);
    run(&a, &clock, "q", 4, Outcome::Complete);
    run(&b, &clock, "q", 8, Outcome::Fail { error: "boom".into(), retry_in: None });
    // Each sees its own at once, whether or not it wrote them yet.
    assert!(counts(&a.metrics(None, None).unwrap(), "q")[0] >= 2);
    assert!(counts(&b.metrics(None, None).unwrap(), "q")[1] >= 1);
    let both = [2, 1, 0, 0];
    eventually("a sees b's failure", || counts(&a.metrics(None, None).unwrap(), "q") == both);
    eventually("b sees a's completions", || counts(&b.metrics(None, None).unwrap(), "q") == both);
    // Written, the counts are one row for the queue and minute, read alike from both.
    assert_eq!(entries(&url, 4), 1);
    let read = a.metrics(None, None).unwrap();
    assert_eq!(read, b.metrics(None, None).unwrap());
    assert_eq!(read.len(), 1);
    assert!(read[0].p50.is_some() && read[0].p99 > read[0].p50, "{read:?}");
}

#[test]
fn acks_of_many_threads_on_two_nodes_add_up_exactly() {
    let Some(url) = common::pg::database() else { return };
    let clock = clock();
    let nodes = [Arc::new(node(&url, &clock, BEATING)), Arc::new(node(&url, &clock, BEATING))];
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = nodes[t % 2].clone();
            std::thread::spawn(move || {
                let queue = format!("q{}", t % 3);
                for _ in 0..PER_THREAD {
                    store.insert(vec![job(&queue, "w")]).unwrap();
                    let held = store.claim(&queue, 1, Duration::ZERO).unwrap();
                    let acks = held
                        .iter()
                        .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
                        .collect();
                    store.ack(acks).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for n in &nodes {
        n.close();
    }
    let reader = node(&url, &clock, None);
    let points = reader.metrics(None, None).unwrap();
    let total: u64 = points.iter().map(|p| p.completed).sum();
    assert_eq!(total, 8 * PER_THREAD as u64, "{points:?}");
    assert_eq!(points.len(), 3, "one row per queue and minute: {points:?}");
}

#[test]
fn a_job_rescued_from_a_lost_node_counts_at_the_rescuer() {
    let Some(url) = common::pg::database() else { return };
    let clock = clock();
    let leader = node(&url, &clock, BEATING);
    eventually("the first node leads", || leader.is_leader());
    let lost = node(&url, &clock, None);
    lost.insert(vec![job("q", "w"), NewJob { max_attempts: 1, ..job("q", "w") }]).unwrap();
    assert_eq!(lost.claim("q", 2, Duration::ZERO).unwrap().len(), 2);
    clock.advance(31 * SECOND);
    // One goes back to the queue (failed, a retry left), the other is out of attempts.
    eventually("the leader rescues both", || {
        counts(&leader.metrics(None, None).unwrap(), "q") == [0, 1, 1, 0]
    });
    let point = &leader.metrics(None, None).unwrap()[0];
    assert_eq!(point.p50, None, "no attempt reported: no duration");
}

#[test]
fn the_leader_deletes_minutes_and_progress_a_day_old() {
    let Some(url) = common::pg::database() else { return };
    let clock = clock();
    let store = node(&url, &clock, BEATING);
    store.insert(vec![job("q", "w")]).unwrap();
    let held = store.claim("q", 1, Duration::ZERO).unwrap().remove(0);
    assert!(store.set_progress(held.id, 1, 0.5, None).unwrap());
    store.ack(vec![Ack { id: held.id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    eventually("the minute is written", || entries(&url, 4) == 1);
    assert_eq!(entries(&url, 5), 1);
    clock.advance(24 * 60 * MINUTE - SECOND);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!((entries(&url, 4), entries(&url, 5)), (1, 1), "kept for a day");
    clock.advance(2 * MINUTE);
    eventually("both are deleted", || entries(&url, 4) + entries(&url, 5) == 0);
    assert_eq!(store.metrics(None, None).unwrap(), vec![]);
    assert_eq!(store.progress(held.id).unwrap(), None);
}
