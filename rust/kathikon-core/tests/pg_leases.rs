//! Leases on `PostgreSQL`: each store (node) renews its lease from a thread of its own; a node
//! that stops renewing has its executing jobs rescued by a live node once its lease has run
//! out — each job exactly once — and its late ack is fenced. The stopped node is either a
//! store opened without its upkeep thread (`heartbeat: None`, as a frozen process) or a real
//! process, this test binary run again as a child, killed by SIGKILL while it holds a job.
#![cfg(feature = "postgres")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, job, T0};
use kathikon_core::clock::{ManualClock, Micros, SECOND};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Ack, AckResult, Job, JobState, Jobs, Outcome};

const LEASE: Duration = Duration::from_secs(5);

/// A node that renews its lease and does its periodic work every few ms.
fn live(url: &str, clock: &Arc<ManualClock>) -> PgStore {
    PgStore::open(PgConfig {
        clock: clock.clone(),
        lease: LEASE,
        heartbeat: Some(Duration::from_millis(10)),
        tick: Duration::from_millis(10),
        ..PgConfig::new(url)
    })
    .expect("open")
}

/// A node with no upkeep thread: it never renews its lease, as a frozen process.
fn stopped(url: &str, clock: &Arc<ManualClock>) -> PgStore {
    PgStore::open(PgConfig {
        clock: clock.clone(),
        lease: LEASE,
        heartbeat: None,
        ..PgConfig::new(url)
    })
    .expect("open")
}

fn sql(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn nodes(url: &str) -> Vec<i64> {
    sql(url)
        .query("SELECT id FROM kathikon.nodes ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn heartbeat_at(url: &str, node: i64) -> Micros {
    sql(url)
        .query_one("SELECT heartbeat_at FROM kathikon.nodes WHERE id = $1", &[&node])
        .unwrap()
        .get(0)
}

/// Wait until `node` has renewed its lease at the clock's time `at`: a round of its upkeep
/// ran at `at`, and the rounds before it finished.
fn renewed_at(url: &str, node: i64, at: Micros) {
    eventually(&format!("node {node} renews at {at}"), || heartbeat_at(url, node) == at);
}

#[test]
fn a_node_that_stops_renewing_is_rescued_after_its_lease_and_its_late_ack_is_fenced() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (stopped(&url, &clock), live(&url, &clock));
    let id = b.insert(vec![job("q", "w")]).unwrap()[0].id;
    assert_eq!(a.claim("q", 1, Duration::ZERO).unwrap()[0].id, id);

    // Within A's lease, B's rounds leave A's job alone: two renewals at times inside the
    // lease prove a whole round (renew, then rescue) ran there.
    clock.advance(4 * SECOND);
    renewed_at(&url, b.node(), T0 + 4 * SECOND);
    clock.advance(1);
    renewed_at(&url, b.node(), T0 + 4 * SECOND + 1);
    assert_eq!(b.get(id).unwrap().state, JobState::Executing, "rescued within the lease");
    assert_eq!(nodes(&url), vec![a.node(), b.node()]);

    clock.advance(2 * SECOND);
    eventually("B rescues A's job", || b.get(id).unwrap().state != JobState::Executing);
    let rescued = b.get(id).unwrap();
    assert_eq!((rescued.state, rescued.attempt), (JobState::Available, 1));
    let cause = &rescued.errors.last().unwrap().error;
    assert!(cause.starts_with(&format!("rescued: node {} ", a.node())), "{cause}");
    assert!(cause.contains("stopped renewing its lease (5.0 s)"), "{cause}");
    assert_eq!(nodes(&url), vec![b.node()], "the dead node's row is removed");

    let late = a.ack(vec![Ack { id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    assert_eq!(late, vec![AckResult::Stale(Some(JobState::Available))]);
    let fenced = b.get(id).unwrap();
    assert_eq!(fenced.state, JobState::Available, "the late ack changed nothing");
    assert!(fenced.errors.last().unwrap().error.starts_with(&format!("fenced: node {}", a.node())));

    let again = b.claim("q", 1, Duration::ZERO).unwrap().remove(0);
    assert_eq!((again.id, again.attempt), (id, 2));
    let done = b.ack(vec![Ack { id, attempt: 2, outcome: Outcome::Complete }]).unwrap();
    assert!(matches!(&done[..], [AckResult::Applied(j)] if j.state == JobState::Completed));
    // Not rescued twice meanwhile.
    let history = b.get(id).unwrap().errors;
    assert_eq!(
        history.iter().filter(|e| e.error.starts_with("rescued:")).count(),
        1,
        "{history:?}"
    );
}

#[test]
fn a_dead_nodes_jobs_are_each_rescued_once_among_live_nodes() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let dead = stopped(&url, &clock);
    let live_nodes: Vec<PgStore> = (0..3).map(|_| live(&url, &clock)).collect();
    live_nodes[0].insert((0..50).map(|_| job("q", "w")).collect()).unwrap();
    let held = dead.claim("q", 50, Duration::ZERO).unwrap();
    assert_eq!(held.len(), 50);
    // Past the dead node's lease in two steps, the live nodes renewing in between (as they
    // would on a clock that moves by itself): only the dead node's lease runs out.
    clock.advance(3 * SECOND);
    for node in &live_nodes {
        renewed_at(&url, node.node(), T0 + 3 * SECOND);
    }
    clock.advance(3 * SECOND);
    eventually("every held job is rescued", || {
        held.iter().all(|j| live_nodes[1].get(j.id).unwrap().state == JobState::Available)
    });
    for j in held {
        let entries: Vec<_> = live_nodes[2]
            .get(j.id)
            .unwrap()
            .errors
            .into_iter()
            .filter(|e| e.error.starts_with("rescued:"))
            .collect();
        assert_eq!(entries.len(), 1, "job {} rescued {} times: {entries:?}", j.id, entries.len());
    }
}

/// Run as a child by `a_killed_process_has_its_job_rescued_after_its_lease`: opens the store
/// at `KATHIKON_TEST_PG_URL`, claims one job, says which, and waits to be killed.
#[test]
#[ignore = "a node process, started and killed by the SIGKILL test"]
fn node_process_that_claims_and_hangs() {
    let Ok(url) = std::env::var("KATHIKON_TEST_PG_URL") else { return };
    let store = PgStore::open(PgConfig {
        lease: Duration::from_secs(1),
        heartbeat: Some(Duration::from_millis(100)),
        ..PgConfig::new(url)
    })
    .unwrap();
    let held: Vec<Job> = store.claim("q", 1, Duration::from_secs(30)).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "claimed {} node {}", held[0].id, store.node()).unwrap();
    out.flush().unwrap();
    loop {
        std::thread::park();
    }
}

#[test]
fn a_killed_process_has_its_job_rescued_after_its_lease() {
    let Some(url) = common::pg::database() else { return };
    let parent = PgStore::open(PgConfig {
        lease: Duration::from_secs(1),
        heartbeat: Some(Duration::from_millis(100)),
        tick: Duration::from_millis(50),
        ..PgConfig::new(url.clone())
    })
    .unwrap();
    let id = parent.insert(vec![job("q", "w")]).unwrap()[0].id;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "node_process_that_claims_and_hangs", "--ignored", "--nocapture"])
        .args(["--test-threads=1"])
        .env("KATHIKON_TEST_PG_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !said.contains("claimed") {
        said.clear();
        assert_ne!(out.read_line(&mut said).unwrap(), 0, "the child ended without claiming");
    }
    let words: Vec<&str> = said[said.find("claimed").unwrap()..].split_whitespace().collect();
    assert_eq!(words[1], id.to_string(), "{said}");
    let child_node = words[3].to_string();
    assert_eq!(parent.get(id).unwrap().state, JobState::Executing);

    child.kill().unwrap(); // SIGKILL: no close, no hand-back.
    child.wait().unwrap();
    eventually("the killed node's job is rescued", || {
        parent.get(id).unwrap().state == JobState::Available
    });
    let rescued = parent.get(id).unwrap();
    let cause = &rescued.errors.last().unwrap().error;
    assert!(cause.starts_with(&format!("rescued: node {child_node} ")), "{cause}");
    assert!(cause.contains("stopped renewing its lease"), "{cause}");
    assert_eq!(parent.claim("q", 1, Duration::ZERO).unwrap()[0].attempt, 2);
}
