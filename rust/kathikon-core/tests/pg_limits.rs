//! Queue limits across the nodes of one `PostgreSQL` database: a global limit holds while
//! nodes claim at once from many threads (per partition too), a place freed on one node wakes
//! a claim waiting on another without polling, a rate window is shared by every node, and
//! partitions take turns across claims of different nodes.
#![cfg(feature = "postgres")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::limits::{GlobalLimit, Partition, PartitionField, RateLimit};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Ack, Job, JobState, Jobs, NewJob, Outcome, QueueChange};

fn node(url: &str, clock: &Arc<ManualClock>, poll: Duration) -> Arc<PgStore> {
    let config = PgConfig { clock: clock.clone(), poll_interval: poll, ..PgConfig::new(url) };
    Arc::new(PgStore::open(config).expect("open"))
}

fn by_customer() -> Partition {
    Partition { fields: vec![PartitionField::Args], keys: vec!["customer".into()] }
}

fn customer_job(queue: &str, customer: &str) -> NewJob {
    NewJob { args: format!(r#"{{"customer": "{customer}"}}"#), ..job(queue, "w") }
}

fn customer(job: &Job) -> String {
    let args: serde_json::Value = serde_json::from_str(&job.args).unwrap();
    args["customer"].as_str().unwrap().to_string()
}

fn complete(store: &dyn Jobs, job: &Job) {
    let ack = Ack { id: job.id, attempt: job.attempt, outcome: Outcome::Complete };
    store.ack(vec![ack]).unwrap();
}

/// Three nodes, two threads each, claim up to three jobs at a time from a queue limited to 4
/// executing at once, hold them a moment and complete them. What the threads hold (counted
/// after a claim returns, uncounted before its ack is sent, so never more than the database
/// has executing) never passes 4, and reaches it: the threads could have taken 18.
#[test]
fn a_global_limit_holds_while_nodes_claim_at_once() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let nodes: Vec<_> = (0..3).map(|_| node(&url, &clock, Duration::from_millis(20))).collect();
    let limit = GlobalLimit { allowed: 4, partition: None };
    nodes[0].set_queue("api", QueueChange::GlobalLimit(Some(limit))).unwrap();
    nodes[0].insert((0..300).map(|_| job("api", "w")).collect()).unwrap();
    let held = Arc::new(AtomicI64::new(0));
    let most = Arc::new(AtomicI64::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (store, held, most) = (nodes[i % 3].clone(), held.clone(), most.clone());
            std::thread::spawn(move || loop {
                let jobs = store.claim("api", 3, Duration::from_millis(200)).unwrap();
                if jobs.is_empty() {
                    if store.ready_count("api").unwrap() == 0 {
                        return;
                    }
                    continue;
                }
                let now = held.fetch_add(jobs.len() as i64, Ordering::SeqCst) + jobs.len() as i64;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
                held.fetch_sub(jobs.len() as i64, Ordering::SeqCst);
                for j in &jobs {
                    complete(&*store, j);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counts = nodes[0].counts().unwrap();
    let completed: u64 = counts.iter().filter(|c| c.1 == JobState::Completed).map(|c| c.2).sum();
    assert_eq!(completed, 300, "every job ran: {counts:?}");
    assert_eq!(most.load(Ordering::SeqCst), 4, "the limit was reached and never passed");
}

/// The same with one place per customer: per customer, what the threads hold never passes 1.
#[test]
fn a_partitioned_global_limit_holds_per_partition_across_nodes() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let nodes: Vec<_> = (0..2).map(|_| node(&url, &clock, Duration::from_millis(20))).collect();
    let limit = GlobalLimit { allowed: 1, partition: Some(by_customer()) };
    nodes[0].set_queue("exports", QueueChange::GlobalLimit(Some(limit))).unwrap();
    let jobs = (0..60).map(|i| customer_job("exports", ["a", "b", "c"][i % 3])).collect();
    nodes[0].insert(jobs).unwrap();
    let held: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let most = Arc::new(AtomicI64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (store, held, most) = (nodes[i % 2].clone(), held.clone(), most.clone());
            std::thread::spawn(move || loop {
                let jobs = store.claim("exports", 2, Duration::from_millis(200)).unwrap();
                if jobs.is_empty() {
                    if store.ready_count("exports").unwrap() == 0 {
                        return;
                    }
                    continue;
                }
                {
                    let mut held = held.lock().unwrap();
                    for j in &jobs {
                        let n = held.entry(customer(j)).or_default();
                        *n += 1;
                        most.fetch_max(*n, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
                for j in &jobs {
                    *held.lock().unwrap().get_mut(&customer(j)).unwrap() -= 1;
                    complete(&*store, j);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "one job per customer at a time");
    let counts = nodes[0].counts().unwrap();
    assert!(counts.iter().all(|c| c.1 == JobState::Completed), "every job ran: {counts:?}");
}

/// Nodes that would otherwise only poll once a minute: a job completed on one node wakes the
/// claim waiting on another for the place at once (the ack notifies the limited queue).
#[test]
fn a_place_freed_on_one_node_wakes_a_claim_waiting_on_another() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) =
        (node(&url, &clock, Duration::from_secs(60)), node(&url, &clock, Duration::from_secs(60)));
    let limit = GlobalLimit { allowed: 1, partition: None };
    a.set_queue("api", QueueChange::GlobalLimit(Some(limit))).unwrap();
    a.insert(vec![job("api", "w"), job("api", "w")]).unwrap();
    let running = a.claim("api", 1, Duration::ZERO).unwrap();
    assert_eq!(running.len(), 1);
    let waiting = {
        let b = b.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let jobs = b.claim("api", 1, Duration::from_secs(120)).unwrap();
            (jobs, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "the second job waits for the place");
    complete(&*a, &running[0]);
    let (jobs, waited) = waiting.join().unwrap();
    assert_eq!(jobs.len(), 1, "the waiting claim got the job");
    assert!(waited < Duration::from_secs(30), "woken by the release, not a poll: {waited:?}");
}

/// A rate limit of 5 starts per 10 s is one window for every node: two nodes together start
/// 5, and 5 more one period later; the usage each node reads is the same.
#[test]
fn a_rate_window_is_shared_by_every_node() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (
        node(&url, &clock, Duration::from_millis(20)),
        node(&url, &clock, Duration::from_millis(20)),
    );
    let limit = RateLimit { allowed: 5, period_us: 10 * SECOND as u64, partition: None };
    a.set_queue("api", QueueChange::RateLimit(Some(limit))).unwrap();
    a.insert((0..20).map(|_| job("api", "w")).collect()).unwrap();
    let mut started = 0;
    for _ in 0..4 {
        started += a.claim("api", 2, Duration::ZERO).unwrap().len();
        started += b.claim("api", 2, Duration::ZERO).unwrap().len();
    }
    assert_eq!(started, 5, "five starts in the window, over both nodes");
    assert_eq!(a.limit_usage("api").unwrap(), b.limit_usage("api").unwrap());
    assert_eq!(b.limit_usage("api").unwrap().windows, [(String::new(), 5)]);
    clock.advance(10 * SECOND);
    assert_eq!(b.claim("api", 10, Duration::ZERO).unwrap().len(), 5, "one period later");
}

/// A big customer's 40 jobs were inserted before a small one's 4: claims of one job at a time,
/// alternating between two nodes, still serve the two customers in turn (the turn is stored,
/// not kept by each node), so the small customer is done within its first eight claims.
#[test]
fn partitions_take_turns_across_the_claims_of_different_nodes() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (
        node(&url, &clock, Duration::from_millis(20)),
        node(&url, &clock, Duration::from_millis(20)),
    );
    let limit = GlobalLimit { allowed: 100, partition: Some(by_customer()) };
    a.set_queue("exports", QueueChange::GlobalLimit(Some(limit))).unwrap();
    a.insert((0..40).map(|_| customer_job("exports", "big")).collect()).unwrap();
    a.insert((0..4).map(|_| customer_job("exports", "small")).collect()).unwrap();
    let served: Vec<String> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { &a } else { &b };
            let jobs = store.claim("exports", 1, Duration::ZERO).unwrap();
            assert_eq!(jobs.len(), 1);
            customer(&jobs[0])
        })
        .collect();
    let small = served.iter().filter(|c| *c == "small").count();
    assert_eq!(small, 4, "every other claim served the small customer: {served:?}");
}

/// Two nodes, three threads each, claim from a queue limited to 20 starts per 200 ms on the
/// real clock for a second: in no 200 ms window of the claims' stored times are there more
/// than 20, and the limit was reached.
#[test]
fn a_rate_limit_holds_in_every_window_while_nodes_claim_at_once() {
    let Some(url) = common::pg::database() else { return };
    let open = || {
        let config = PgConfig { poll_interval: Duration::from_millis(20), ..PgConfig::new(&url) };
        Arc::new(PgStore::open(config).expect("open"))
    };
    let nodes = [open(), open()];
    let limit = RateLimit { allowed: 20, period_us: 200_000, partition: None };
    nodes[0].set_queue("api", QueueChange::RateLimit(Some(limit))).unwrap();
    nodes[0].insert((0..400).map(|_| job("api", "w")).collect()).unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let store = nodes[i % 2].clone();
            std::thread::spawn(move || {
                let mut times = Vec::new();
                while Instant::now() < until {
                    for j in store.claim("api", 1 + i % 3, Duration::from_millis(50)).unwrap() {
                        times.push(j.attempted_at.unwrap());
                        complete(&*store, &j);
                    }
                }
                times
            })
        })
        .collect();
    let mut times: Vec<i64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    times.sort_unstable();
    let busiest = times
        .iter()
        .map(|&s| times.iter().filter(|&&t| s <= t && t < s + 200_000).count())
        .max()
        .unwrap();
    assert_eq!(busiest, 20, "starts in the busiest 200 ms");
}
