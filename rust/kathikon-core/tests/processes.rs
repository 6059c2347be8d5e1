//! `processes` as the owner serves it, on a real store and real Unix sockets: each client
//! session listed with its own lease, jobs and queues beside the owner's own claims, and gone
//! (its jobs rescued, held by nobody) once its connections close. The same body for the
//! engine and one client is in `conformance/processes.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{job, open, scratch_dir, store_path};
use kathikon_core::ipc::{Client, ClientConfig, Server};
use kathikon_core::{Jobs, ProcessInfo, ProcessRole};

fn client(store: &std::path::Path, lease: Duration) -> Client {
    Client::connect(&ClientConfig {
        store: store.to_path_buf(),
        lease,
        connect_timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn holding(all: &[ProcessInfo], id: u64) -> Vec<(ProcessRole, Option<i64>)> {
    all.iter()
        .filter(|p| p.jobs.contains(&id))
        .map(|p| (p.role, p.lease_expires.map(|e| e - p.last_seen)))
        .collect()
}

#[test]
fn each_session_is_listed_with_its_lease_jobs_and_queues_until_it_disconnects() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let engine = Arc::new(open(&path));
    let store = std::fs::canonicalize(&path).unwrap();
    let mut server = Server::start(engine.clone(), &store).unwrap();
    let (short, long) = (Duration::from_secs(20), Duration::from_secs(40));
    let (a, b) = (client(&store, short), client(&store, long));
    engine.insert(vec![job("mail", "w"), job("img", "w"), job("own", "w")]).unwrap();

    let by_a = a.claim("mail", 1, Duration::ZERO).unwrap().remove(0);
    let by_b = b.claim("img", 1, Duration::ZERO).unwrap().remove(0);
    let by_owner = engine.claim("own", 1, Duration::ZERO).unwrap().remove(0);
    // A wait on a queue counts as claiming from it, as an empty-handed claim does.
    b.wait_ready(&["idle".to_string()], None, Duration::ZERO).unwrap();

    // Asked through a client or of the owner itself, the answer is the same list.
    let all = a.processes().unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(engine.processes().unwrap().len(), 3);
    assert_eq!((all[0].role, all[0].pid), (ProcessRole::Owner, std::process::id()));
    let lease_of = |d: Duration| Some(d.as_micros() as i64);
    assert_eq!(holding(&all, by_owner.id), vec![(ProcessRole::Owner, None)]);
    assert_eq!(holding(&all, by_a.id), vec![(ProcessRole::Client, lease_of(short))]);
    assert_eq!(holding(&all, by_b.id), vec![(ProcessRole::Client, lease_of(long))]);
    let queues_of = |id: u64| all.iter().find(|p| p.jobs.contains(&id)).unwrap().queues.clone();
    assert_eq!(queues_of(by_owner.id), vec!["own".to_string()]);
    assert_eq!(queues_of(by_a.id), vec!["mail".to_string()]);
    assert_eq!(queues_of(by_b.id), vec!["idle".to_string(), "img".to_string()]);

    // A closes: its session goes, and the job it held is rescued, held by nobody.
    a.close();
    let mut after = engine.processes().unwrap();
    for _ in 0..500 {
        if after.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        after = engine.processes().unwrap();
    }
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(holding(&after, by_a.id).is_empty(), "{after:?}");
    assert_eq!(holding(&after, by_b.id), vec![(ProcessRole::Client, lease_of(long))]);

    b.close();
    server.stop();
    engine.close();
}
