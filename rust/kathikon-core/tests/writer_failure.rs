//! What tells a store's owner that its writer stopped: `Engine::failure` holds the storage
//! failure after which the engine writes nothing more (so that a worker process can exit for
//! its supervisor to restart it, rather than stay up doing nothing), whether a caller's commit
//! failed or the writer's own upkeep did with no caller to tell; and what the owner's clients
//! are told meanwhile: `OwnerStopped`, naming the owner, for reads and writes alike.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faulty::{self, Faults};
use common::{config, job, open, scratch_dir, store_path};
use kathikon_core::ipc::{Client, ClientConfig, Server};
use kathikon_core::{Error, Jobs, ListFilter, NewJob};

/// Polls `check` until it holds; a generous bound, so a slow machine only waits longer.
fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_failed_commit_is_the_engines_failure_until_the_store_is_reopened() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let faults = Arc::new(Faults::default());
    let engine = faulty::open_engine(config(&path), &faults, None).unwrap();
    let kept = engine.insert(vec![job("q", "w")]).unwrap();
    assert!(engine.failure().is_none());

    faults.log.sync.arm(0);
    let failed = engine.insert(vec![job("q", "w")]).unwrap_err();
    assert!(matches!(failed, Error::CommitFailed { .. }), "{failed:?}");
    faults.heal();
    // Kept as the failure itself (not a refusal naming it), and it stays.
    assert_eq!(format!("{:?}", engine.failure()), format!("{:?}", Some(&failed)));
    assert!(engine.insert(vec![job("q", "w")]).is_err());
    assert_eq!(format!("{:?}", engine.failure()), format!("{:?}", Some(&failed)));
    engine.close();
    drop(engine);

    let engine = open(&path);
    assert!(engine.failure().is_none(), "a reopened store starts healthy");
    assert_eq!(engine.get(kept[0].id).unwrap(), kept[0]);
    engine.insert(vec![job("q", "w")]).unwrap();
}

#[test]
fn a_failure_of_the_writers_own_work_is_reported_with_no_caller_to_tell() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let faults = Arc::new(Faults::default());
    let engine = faulty::open_engine(config(&path), &faults, None).unwrap();
    // A job the scheduler makes available on its own, a moment from now: its promotion is a
    // commit of the writer's, whose log sync fails, and nobody is calling.
    let due = engine.now() + 300_000;
    engine.insert(vec![NewJob { scheduled_at: Some(due), ..job("q", "w") }]).unwrap();
    faults.log.sync.arm(0);
    wait_until("the promotion's failure", || engine.failure().is_some());
    let failure = engine.failure().unwrap();
    assert!(matches!(failure, Error::CommitFailed { .. }), "{failure:?}");
    assert!(failure.to_string().contains("write-ahead log"), "{failure}");
    assert_eq!(faults.log.sync.failed(), 1);
    // The next call is refused naming it.
    match engine.insert(vec![job("q", "w")]).unwrap_err() {
        Error::WriterStopped { cause } => assert_eq!(format!("{cause:?}"), format!("{failure:?}")),
        other => panic!("expected WriterStopped, got {other:?}"),
    }
}

#[test]
fn a_stopped_owner_answers_its_clients_reads_and_writes_with_owner_stopped() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let faults = Arc::new(Faults::default());
    // No page cache: every read goes to the file, which redb refuses after a failed sync.
    let engine = Arc::new(faulty::open_engine(config(&path), &faults, Some(0)).unwrap());
    let store = std::fs::canonicalize(&path).unwrap();
    let mut server = Server::start(engine.clone(), &store).unwrap();
    let client = Client::connect(&ClientConfig {
        store: store.clone(),
        lease: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
    })
    .unwrap();
    let kept = client.insert(vec![job("q", "w")]).unwrap();

    faults.sync.arm(0);
    let failure = engine.checkpoint().unwrap_err();
    faults.heal();
    // The owner's own read is refused with redb's "reopen" words, which are right for it...
    let own = engine.list(&ListFilter::default()).unwrap_err();
    assert!(own.to_string().contains("close the app and open it again"), "{own}");
    // ...and wrong for a client, which is told whose store stopped and what lets it go on.
    let stopped = |err: Error| match err {
        Error::OwnerStopped { path, owner, cause } => {
            assert_eq!((path, owner), (store.clone(), std::process::id()));
            assert_eq!(format!("{cause:?}"), format!("{failure:?}"));
        }
        other => panic!("expected OwnerStopped, got {other:?}"),
    };
    stopped(client.list(&ListFilter::default()).unwrap_err());
    stopped(client.get(kept[0].id).unwrap_err());
    stopped(client.counts().unwrap_err());
    stopped(client.insert(vec![job("q", "w")]).unwrap_err());
    stopped(client.claim("q", 1, Duration::ZERO).unwrap_err());
    client.close();
    server.stop();
}
