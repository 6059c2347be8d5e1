//! Wake-ups across nodes by `LISTEN/NOTIFY`: a claim or `wait_ready` waiting in one store
//! (node) is woken by a commit in another — an insert, or a promotion by the other's upkeep —
//! long before its poll interval, which is set to 30 s so that only a notification can wake
//! it within the 10 s the tests allow; and after its listening connection is cut, the node
//! listens again and is woken as before. A wait for a job to finish is woken the same way
//! (`kathikon_done`) by the ack in another node.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{eventually, job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Jobs, NewJob};

const POLL: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(60);
const WITHIN: Duration = Duration::from_secs(10);

/// A node polling only every 30 s, with its upkeep thread (`upkeep`) or without.
fn node(url: &str, clock: &Arc<ManualClock>, upkeep: bool) -> Arc<PgStore> {
    Arc::new(
        PgStore::open(PgConfig {
            clock: clock.clone(),
            poll_interval: POLL,
            heartbeat: upkeep.then_some(Duration::from_millis(10)),
            tick: Duration::from_millis(10),
            ..PgConfig::new(url)
        })
        .expect("open"),
    )
}

/// The backend pids of the listening connections on this test's database.
fn listeners(url: &str) -> Vec<i32> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query = 'LISTEN kathikon_jobs' ORDER BY pid",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Claim from `store` on another thread, waiting up to [`WAIT`]; joined by the caller.
fn claiming(store: &Arc<PgStore>) -> thread::JoinHandle<(Vec<u64>, Duration)> {
    let store = store.clone();
    thread::spawn(move || {
        let started = Instant::now();
        let jobs = store.claim("q", 1, WAIT).unwrap();
        (jobs.iter().map(|j| j.id).collect(), started.elapsed())
    })
}

/// Give a just-started waiter time to make its first look (if it has not, it finds the job
/// at once and the test proves less, but never fails wrongly).
fn let_it_wait() {
    thread::sleep(Duration::from_millis(300));
}

#[test]
fn an_insert_in_one_node_wakes_a_claim_waiting_in_another() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (node(&url, &clock, true), node(&url, &clock, true));
    eventually("both nodes listen", || listeners(&url).len() == 2);
    let waiter = claiming(&b);
    let_it_wait();
    let id = a.insert(vec![job("q", "w")]).unwrap()[0].id;
    let (claimed, took) = waiter.join().unwrap();
    assert_eq!(claimed, vec![id]);
    assert!(took < WITHIN, "woken after {took:?}: by the poll, not the notification");
}

#[test]
fn a_promotion_by_another_nodes_upkeep_wakes_a_waiting_claim() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    // Only A runs upkeep (promotion); B's claim can learn of the due job only from A.
    let (a, b) = (node(&url, &clock, true), node(&url, &clock, false));
    eventually("both nodes listen", || listeners(&url).len() == 2);
    let id = a
        .insert(vec![NewJob { scheduled_at: Some(T0 + 10 * SECOND), ..job("q", "w") }])
        .unwrap()[0]
        .id;
    let waiter = claiming(&b);
    let_it_wait();
    clock.advance(10 * SECOND);
    let (claimed, took) = waiter.join().unwrap();
    assert_eq!(claimed, vec![id]);
    assert!(took < WITHIN + Duration::from_millis(300), "woken after {took:?}");
}

#[test]
fn wait_ready_in_one_node_is_woken_by_an_insert_in_another() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (node(&url, &clock, true), node(&url, &clock, true));
    eventually("both nodes listen", || listeners(&url).len() == 2);
    let watched = vec!["p".to_string(), "q".to_string()];
    let (generation, ready) = b.wait_ready(&watched, None, Duration::ZERO).unwrap();
    assert!(ready.is_empty());
    let waiter = {
        let b = b.clone();
        thread::spawn(move || {
            let started = Instant::now();
            (b.wait_ready(&watched, Some(generation), WAIT).unwrap(), started.elapsed())
        })
    };
    let_it_wait();
    a.insert(vec![job("q", "w")]).unwrap();
    let ((after, ready), took) = waiter.join().unwrap();
    assert_ne!(after, generation);
    assert_eq!(ready, ["q"]);
    assert!(took < WITHIN, "woken after {took:?}");
}

#[test]
fn a_node_whose_listening_connection_is_cut_listens_again_and_is_woken() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (node(&url, &clock, true), node(&url, &clock, true));
    eventually("both nodes listen", || listeners(&url).len() == 2);
    let before = listeners(&url);
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for pid in &before {
        admin.execute("SELECT pg_terminate_backend($1)", &[pid]).unwrap();
    }
    eventually("both nodes listen again on new connections", || {
        let now = listeners(&url);
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    });
    let waiter = claiming(&b);
    let_it_wait();
    let id = a.insert(vec![job("q", "w")]).unwrap()[0].id;
    let (claimed, took) = waiter.join().unwrap();
    assert_eq!(claimed, vec![id]);
    assert!(took < WITHIN, "woken after {took:?}");
}

#[test]
fn a_wait_for_a_job_in_one_node_is_woken_by_its_ack_in_another() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (node(&url, &clock, true), node(&url, &clock, true));
    eventually("both nodes listen", || listeners(&url).len() == 2);
    let id = a.insert(vec![job("q", "w")]).unwrap()[0].id;
    let waiter = {
        let b = b.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let found = b.wait_finished(id, Duration::from_secs(120)).unwrap();
            (found, started.elapsed())
        })
    };
    let_it_wait();
    let claimed = a.claim("q", 1, Duration::ZERO).unwrap();
    let result = Ok(r#"{"done":true}"#.to_string());
    let ack = kathikon_core::Ack {
        id,
        attempt: claimed[0].attempt,
        outcome: kathikon_core::Outcome::Return { result },
    };
    a.ack(vec![ack]).unwrap();
    let (found, took) = waiter.join().unwrap();
    assert_eq!(found.result.as_deref(), Some(r#"{"done":true}"#));
    assert!(took < WITHIN, "woken after {took:?}: by the poll, not the notification");
    // Its registration went with the wait: a job nobody awaits notifies no one.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM kathikon.awaited", &[]).unwrap().get(0);
    assert_eq!(rows, 0);
}
