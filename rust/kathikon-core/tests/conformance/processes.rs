//! `processes` lists who works on the store and the jobs each one holds: a claimed job under
//! the process that claimed it, and under nobody once it is acked. A store one process owns
//! lists the owner first (no lease: it holds the file), then each client session (each with
//! a lease); a store shared by peers (a database's nodes) lists every node, each with a
//! lease. Either way this process's own hold on the store comes last.

use crate::common::{claim_one, finish, job};
use crate::harness::{Backend, Store};
use kathikon_core::{Outcome, ProcessInfo, ProcessRole};

fn holders(all: &[ProcessInfo], id: u64) -> Vec<ProcessInfo> {
    all.iter().filter(|p| p.jobs.contains(&id)).cloned().collect()
}

pub fn processes_list_who_works_on_the_store_and_who_holds_each_job(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    s.insert(vec![job("q", "w"), job("q", "w")]).unwrap();
    let claimed = claim_one(&*s, "q");

    let all = s.processes().unwrap();
    if s.shared_by_peers() {
        assert!(!all.is_empty(), "this node is listed");
        for p in &all {
            assert_eq!(p.role, ProcessRole::Node, "{all:?}: peers, none owning the store");
            assert!(p.lease_expires.is_some(), "{p:?}: every node holds a lease");
        }
    } else {
        let owner = &all[0];
        assert_eq!(owner.role, ProcessRole::Owner, "{all:?}: the owner comes first");
        assert_eq!(owner.lease_expires, None, "the owner holds the file, not a lease");
        assert!(all[1..].iter().all(|p| p.role == ProcessRole::Client), "{all:?}");
    }
    for p in &all {
        assert_eq!(p.pid, std::process::id(), "{p:?}: every process here is this one");
        assert!(p.connected_at <= p.last_seen, "{p:?}");
        if let Some(expires) = p.lease_expires {
            assert!(expires > p.last_seen, "{p:?}: a lease runs from the last time heard");
        }
    }
    // This process's own hold on the store (the owner, its client session, its node) is
    // listed last.
    let me = all.last().unwrap();
    assert_eq!(holders(&all, claimed.id), vec![me.clone()], "{all:?}: only the claimer holds it");
    assert_eq!(me.queues, vec!["q".to_string()], "the queue it claimed from");

    finish(&*s, &claimed, Outcome::Complete);
    let all = s.processes().unwrap();
    assert!(holders(&all, claimed.id).is_empty(), "{all:?}: an acked job is held by nobody");
}
