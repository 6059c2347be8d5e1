//! Unique keys in the store: the expiry plugin deletes each key's entry once its period has
//! passed on the store's clock (from the expiry index), and keeps the keys that have no period
//! or whose period has not passed; an insert resent under its request id (after its owner went
//! away) is answered with the jobs the first send stored or found, conflicts included.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{job, scratch_dir, T0};
use kathikon_core::clock::ManualClock;
use kathikon_core::storage::{EntryKind, RedbStore, Store};
use kathikon_core::{Engine, EngineConfig, Jobs, NewJob, RequestId, UniqueSpec};

const SECOND: i64 = 1_000_000;

fn unique(args: &str, period: Option<i64>) -> NewJob {
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    let spec = UniqueSpec::from_names(
        &names(&["worker", "args"]),
        vec![],
        period,
        &names(&["available", "completed"]),
        &[],
    )
    .unwrap();
    NewJob { args: args.into(), unique: Some(Box::new(spec)), ..job("q", "w") }
}

fn keys(store: &RedbStore) -> usize {
    let mut n = 0;
    store
        .read(&mut |txn| {
            n = txn.entries(EntryKind::Unique)?.len();
            Ok(())
        })
        .unwrap();
    n
}

#[test]
fn keys_are_deleted_once_their_period_passed() {
    let dir = scratch_dir();
    let store = Arc::new(RedbStore::open(Some(&dir.path().join("s.redb")), false).unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let config = EngineConfig { clock: clock.clone(), ..EngineConfig::default() };
    let engine = Engine::with_store(config, store.clone()).unwrap();
    let batch = vec![
        unique(r#"{"n":1}"#, Some(60 * SECOND)),
        unique(r#"{"n":2}"#, Some(120 * SECOND)),
        unique(r#"{"n":3}"#, None),
    ];
    engine.insert(batch).unwrap();
    assert_eq!(keys(&store), 3);

    clock.advance(61 * SECOND);
    // The plugin steps in the writer's next batches (no more often than once a second).
    let deadline = Instant::now() + Duration::from_secs(30);
    while keys(&store) != 2 {
        assert!(Instant::now() < deadline, "the expired key was never deleted");
        std::thread::sleep(Duration::from_millis(50));
        engine.sync().unwrap();
    }
    clock.advance(60 * SECOND);
    while keys(&store) != 1 {
        assert!(Instant::now() < deadline, "the second expired key was never deleted");
        std::thread::sleep(Duration::from_millis(50));
        engine.sync().unwrap();
    }
    // The key without a period stays, and still holds.
    let again = engine.insert_flagged(vec![unique(r#"{"n":3}"#, None)]).unwrap();
    assert_eq!(again.conflicts, [0]);
    engine.close();
}

#[test]
fn a_resent_unique_insert_gets_the_first_answer() {
    let dir = scratch_dir();
    let config = EngineConfig {
        path: Some(dir.path().join("s.redb")),
        clock: Arc::new(ManualClock::new(T0)),
        ..EngineConfig::default()
    };
    let engine = Engine::open(config).unwrap();
    let held = engine.insert(vec![unique(r#"{"n":0}"#, None)]).unwrap().remove(0);
    let request = RequestId::new();
    let batch =
        || vec![unique(r#"{"n":1}"#, None), unique(r#"{"n":0}"#, None), unique(r#"{"n":1}"#, None)];
    let first = engine.insert_once_flagged(request, batch()).unwrap();
    assert_eq!(first.conflicts, [1, 2]);
    assert_eq!(first.jobs[1].id, held.id);
    assert_eq!(first.jobs[2].id, first.jobs[0].id);
    let again = engine.insert_once_flagged(request, batch()).unwrap();
    assert_eq!(again, first);
    assert_eq!(engine.list(&kathikon_core::ListFilter::default()).unwrap().len(), 2);
    engine.close();
}

/// The owner's own insert that only finds existing jobs takes no id (so it changes nothing
/// and its batch needs no log write); the next job stored gets the next id.
#[test]
fn an_owners_conflicting_insert_takes_no_id() {
    let dir = scratch_dir();
    let config = EngineConfig {
        path: Some(dir.path().join("s.redb")),
        clock: Arc::new(ManualClock::new(T0)),
        ..EngineConfig::default()
    };
    let engine = Engine::open(config).unwrap();
    let first = engine.insert(vec![unique(r#"{"n":1}"#, None)]).unwrap().remove(0);
    for _ in 0..3 {
        let again = engine.insert_flagged(vec![unique(r#"{"n":1}"#, None)]).unwrap();
        assert_eq!((again.conflicts.as_slice(), again.jobs[0].id), (&[0][..], first.id));
    }
    let mixed = engine
        .insert_flagged(vec![unique(r#"{"n":1}"#, None), job("q", "w"), unique(r#"{"n":2}"#, None)])
        .unwrap();
    let ids: Vec<_> = mixed.jobs.iter().map(|j| j.id).collect();
    assert_eq!((ids, mixed.conflicts), (vec![first.id, first.id + 1, first.id + 2], vec![0]));
    engine.close();
}
