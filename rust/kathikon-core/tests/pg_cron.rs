//! Cron across the nodes of one `PostgreSQL` database: whoever fires — the leader at its
//! ticks, any node's `sync`, several at once — each slot is inserted once; the leader fires
//! the entries of every node, its own crontab empty or not; `@reboot` fires once per start of
//! the cluster; a node's entries go when it closes.
#![cfg(feature = "postgres")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{eventually, job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{CatchUp, CronEntry, Jobs, ListFilter};

/// A node doing its rounds every few ms; `leads: false` never renews nor leads (its upkeep
/// does not run).
fn node(url: &str, clock: &Arc<ManualClock>, leads: bool) -> PgStore {
    PgStore::open(PgConfig {
        clock: clock.clone(),
        heartbeat: leads.then_some(Duration::from_millis(10)),
        tick: Duration::from_millis(10),
        ..PgConfig::new(url)
    })
    .expect("open")
}

fn entry(name: &str, expression: &str) -> CronEntry {
    CronEntry {
        name: name.into(),
        expression: expression.into(),
        timezone: "UTC".into(),
        catch_up: CatchUp::Skip,
        catch_up_limit: 100,
        job: job("default", "tick"),
    }
}

/// The `meta["cron"]["slot"]` of every job of entry `name`, in insert order.
fn fired(store: &dyn Jobs, name: &str) -> Vec<String> {
    store
        .list(&ListFilter::default())
        .unwrap()
        .iter()
        .filter_map(|j| {
            let meta: serde_json::Value = serde_json::from_str(&j.meta).unwrap();
            (meta["cron"]["name"] == name).then(|| meta["cron"]["slot"].to_string())
        })
        .collect()
}

/// Three nodes declare the same every-second entry; the leader ticks while every node syncs
/// from its own threads at each second the clock moves on: 30 slots, 30 jobs, none twice.
#[test]
fn each_slot_fires_once_whoever_fires_it() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let nodes: Vec<Arc<PgStore>> = (0..3).map(|_| Arc::new(node(&url, &clock, true))).collect();
    for n in &nodes {
        n.set_crontab(vec![entry("tick", "* * * * * *")]).unwrap();
    }
    for _ in 0..30 {
        clock.advance(SECOND);
        let start = Arc::new(Barrier::new(nodes.len()));
        let syncs: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (n, start) = (n.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    n.sync().unwrap();
                })
            })
            .collect();
        for s in syncs {
            s.join().unwrap();
        }
    }
    let slots = fired(&*nodes[0], "tick");
    let mut unique = slots.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(slots.len(), 30, "{slots:?}");
    assert_eq!(unique.len(), 30, "a slot fired twice: {slots:?}");
}

/// A node that declares no crontab (a web server that only inserts) leads all the same, and
/// fires the entries the other nodes declared; they go when their node closes.
#[test]
fn the_leader_fires_every_nodes_entries_until_their_node_closes() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let web = node(&url, &clock, true);
    eventually("the web node leads", || web.is_leader());
    let worker = node(&url, &clock, false);
    worker.set_crontab(vec![entry("report", "*/10 * * * * *")]).unwrap();
    clock.advance(10 * SECOND);
    eventually("the leader fires the worker's entry", || fired(&web, "report").len() == 1);
    worker.close();
    clock.advance(10 * SECOND);
    // Ticks of the leader after the worker left fire nothing more.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(fired(&web, "report").len(), 1);
}

/// `@reboot` fires once when the cluster starts, not again as more nodes join, and again
/// once every node of the last start is gone.
#[test]
fn reboot_fires_once_per_start_of_the_cluster() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let boot = vec![entry("warm", "@reboot")];
    let first = node(&url, &clock, true);
    first.set_crontab(boot.clone()).unwrap();
    assert_eq!(fired(&first, "warm").len(), 1);
    clock.advance(SECOND);
    let second = node(&url, &clock, true);
    second.set_crontab(boot.clone()).unwrap();
    second.sync().unwrap();
    assert_eq!(fired(&first, "warm").len(), 1, "a node joining is not a start");
    first.close();
    second.close();
    clock.advance(SECOND);
    let restarted = node(&url, &clock, true);
    restarted.set_crontab(boot).unwrap();
    assert_eq!(fired(&restarted, "warm").len(), 2);
}
