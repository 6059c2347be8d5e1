//! Claimers across nodes on `PostgreSQL`: a node lists its own claims as they are and the
//! other nodes' as published with their heartbeats — a claim waiting in another node shows
//! with no idle time, and once it ends it shows as idle.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{eventually, job, T0};
use kathikon_core::clock::ManualClock;
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Claimer, Jobs};

fn node(url: &str, clock: &Arc<ManualClock>) -> Arc<PgStore> {
    Arc::new(
        PgStore::open(PgConfig {
            clock: clock.clone(),
            heartbeat: Some(Duration::from_millis(10)),
            tick: Duration::from_millis(10),
            ..PgConfig::new(url)
        })
        .expect("open"),
    )
}

fn of<'a>(claimers: &'a [Claimer], queue: &str) -> Option<&'a Claimer> {
    claimers.iter().find(|c| c.queue == queue)
}

#[test]
fn a_node_lists_the_claims_of_other_nodes_as_they_published_them() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (node(&url, &clock), node(&url, &clock));
    assert!(b.claimers().unwrap().is_empty(), "no claim yet, no claimer");
    let waiting = {
        let a = a.clone();
        thread::spawn(move || a.claim("a", 1, Duration::from_secs(60)).unwrap())
    };
    eventually("B sees A's waiting claim", || {
        of(&b.claimers().unwrap(), "a").is_some_and(|c| c.idle.is_zero())
    });
    b.insert(vec![job("b", "w")]).unwrap();
    assert_eq!(b.claim("b", 1, Duration::ZERO).unwrap().len(), 1);
    let listed = b.claimers().unwrap();
    let queues: Vec<&str> = listed.iter().map(|c| c.queue.as_str()).collect();
    assert_eq!(queues, ["a", "b"], "every node's queues, in name order");
    assert!(listed.iter().all(|c| c.pid == std::process::id()), "{listed:?}");

    a.interrupt("a");
    assert!(waiting.join().unwrap().is_empty());
    eventually("A's claim shows as ended", || {
        of(&b.claimers().unwrap(), "a").is_some_and(|c| !c.idle.is_zero())
    });
}
