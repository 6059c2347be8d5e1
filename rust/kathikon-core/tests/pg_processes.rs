//! `processes` on `PostgreSQL`: every node is a peer with a lease. Each node lists the others
//! (by id, with the jobs executing for them and the queues they published at their latest
//! heartbeat) and itself last, with its live queues; a node that closed is gone from the list.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, job, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::{Ack, Jobs, Outcome, ProcessRole};

#[test]
fn a_node_lists_the_jobs_and_queues_of_another_and_itself_last() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let (a, b) = (common::pg::ticking_node(&url, &clock), common::pg::ticking_node(&url, &clock));
    b.insert(vec![job("mail", "w"), job("mail", "w"), job("pdf", "w")]).unwrap();
    let by_b: Vec<u64> = b.claim("mail", 2, Duration::ZERO).unwrap().iter().map(|j| j.id).collect();
    let by_a = a.claim("pdf", 1, Duration::ZERO).unwrap().remove(0);
    clock.advance(SECOND);

    eventually("b renews, publishing its queues", || {
        let all = a.processes().unwrap();
        all.len() == 2 && all[0].queues == ["mail"] && all[0].last_seen > T0
    });
    let all = a.processes().unwrap();
    let (other, me) = (&all[0], &all[1]);
    assert!(
        all.iter().all(|p| p.role == ProcessRole::Node && p.lease_expires.is_some()),
        "{all:?}"
    );
    assert_eq!(other.jobs, by_b, "b's jobs, ascending");
    assert_eq!(me.jobs, vec![by_a.id]);
    assert_eq!(me.queues, ["pdf"], "this node's own queues, live");
    assert_eq!(b.processes().unwrap().last().unwrap().jobs, by_b, "b lists itself last");
    assert!(other.connected_at == T0 && other.lease_expires > Some(other.last_seen), "{other:?}");

    let acks = by_b.iter().map(|&id| Ack { id, attempt: 1, outcome: Outcome::Complete }).collect();
    b.ack(acks).unwrap();
    assert!(a.processes().unwrap()[0].jobs.is_empty(), "acked jobs are held by nobody");
    b.close();
    let left = a.processes().unwrap();
    assert_eq!(left.len(), 1, "a closed node is gone: {left:?}");
    assert_eq!(left[0].jobs, vec![by_a.id]);
}
