//! Unique inserts across the nodes of one `PostgreSQL` database: nodes inserting the same keys
//! at once, in opposite orders, store one job per key and never deadlock; the leader deletes
//! the keys whose period passed.
#![cfg(feature = "postgres")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::{Jobs, ListFilter, NewJob, UniqueSpec};

fn by_args(period: Option<i64>) -> UniqueSpec {
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    UniqueSpec::from_names(&names(&["worker", "args"]), vec![], period, &names(&["available"]), &[])
        .unwrap()
}

fn unique(args: String, spec: &UniqueSpec) -> NewJob {
    NewJob { args, unique: Some(Box::new(spec.clone())), ..job("q", "w") }
}

fn key_rows(url: &str) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query_one("SELECT count(*) FROM kathikon.entries WHERE kind = 1", &[]).unwrap().get(0)
}

/// Two nodes, four threads each, insert batches of the same 20 keys, half of them in reverse
/// order, 10 times over: every call succeeds (no deadlock aborts one), and each key is held
/// by exactly one stored job.
#[test]
fn batches_of_the_same_keys_in_any_order_store_one_job_per_key() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let nodes = [
        Arc::new(common::pg::ticking_node(&url, &clock)),
        Arc::new(common::pg::ticking_node(&url, &clock)),
    ];
    let spec = by_args(None);
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, start, spec) = (nodes[t % 2].clone(), start.clone(), spec.clone());
            std::thread::spawn(move || {
                let mut batch: Vec<NewJob> =
                    (0..20).map(|k| unique(format!(r#"{{"k":{k}}}"#), &spec)).collect();
                if t % 4 >= 2 {
                    batch.reverse();
                }
                start.wait();
                for _ in 0..10 {
                    store.insert_flagged(batch.clone()).expect("insert without a deadlock");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let jobs = nodes[0].list(&ListFilter::default()).unwrap();
    let mut args: Vec<&str> = jobs.iter().map(|j| j.args.as_str()).collect();
    args.sort_unstable();
    args.dedup();
    assert_eq!((jobs.len(), args.len()), (20, 20));
}

/// A key whose period passed is deleted by the leader; one within its period stays.
#[test]
fn the_leader_deletes_keys_past_their_period() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let store = common::pg::ticking_node(&url, &clock);
    store.insert_flagged(vec![unique("{}".into(), &by_args(Some(60 * SECOND)))]).unwrap();
    store.insert_flagged(vec![unique(r#"{"kept":1}"#.into(), &by_args(None))]).unwrap();
    assert_eq!(key_rows(&url), 2);
    clock.advance(60 * SECOND);
    let deadline = Instant::now() + Duration::from_secs(60);
    while key_rows(&url) != 1 {
        assert!(Instant::now() < deadline, "the expired key is still stored");
        std::thread::sleep(Duration::from_millis(5));
    }
}
