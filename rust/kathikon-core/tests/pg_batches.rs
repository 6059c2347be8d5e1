//! Batches across the nodes of one `PostgreSQL` database (what one store cannot show; the
//! contract itself is the conformance suite's `batches`): two nodes finishing a batch's last
//! members at the same moment insert each callback once; nodes creating one batch id at once
//! make one batch; a member added while the last one finishes is either refused or keeps the
//! batch open, never added to a finished batch; members the leader prunes stay counted; a
//! database whose transactions default to a stricter isolation refuses to finish a member,
//! naming the setting.
#![cfg(feature = "postgres")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{complete_all, job, T0};
use kathikon_core::clock::ManualClock;
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{
    Ack, BatchEvent, Error, Job, JobState, Jobs, ListFilter, NewJob, Outcome, Retention,
};

fn two_nodes(url: &str) -> [Arc<PgStore>; 2] {
    let clock = Arc::new(ManualClock::new(T0));
    [
        Arc::new(common::pg::ticking_node(url, &clock)),
        Arc::new(common::pg::ticking_node(url, &clock)),
    ]
}

/// A callback of every event, each run by the worker named after its event.
fn callbacks() -> Vec<(BatchEvent, NewJob)> {
    BatchEvent::ALL
        .iter()
        .map(|event| (*event, job("callbacks", &format!("on_{}", event.as_str()))))
        .collect()
}

/// The callback jobs inserted for batch `id`, by worker name.
fn callbacks_of(store: &dyn Jobs, id: &str) -> Vec<String> {
    let filter = ListFilter { queue: Some("callbacks".into()), ..ListFilter::default() };
    let mut workers: Vec<String> = store
        .list(&filter)
        .unwrap()
        .into_iter()
        .filter(|j| {
            let meta: serde_json::Value = serde_json::from_str(&j.meta).unwrap();
            meta["batch"]["id"] == id
        })
        .map(|j| j.worker)
        .collect();
    workers.sort();
    workers
}

fn complete(store: &dyn Jobs, job: &Job) {
    let ack = Ack { id: job.id, attempt: job.attempt, outcome: Outcome::Complete };
    store.ack(vec![ack]).unwrap();
}

/// Rounds of a two-member batch: each node claims one member and completes it while a
/// transaction of the test holds the batch's row, so both finishing transactions wait at the
/// batch's lock and go on at the same moment once it is let go. Each round's batch finishes,
/// with its two callbacks inserted once each: the second to take the lock sees the first's
/// member finished.
#[test]
fn two_nodes_finishing_the_last_members_at_once_insert_each_callback_once() {
    let Some(url) = common::pg::database() else { return };
    let nodes = two_nodes(&url);
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for round in 0..5 {
        let id = format!("round-{round}");
        let queue = format!("q{round}");
        let members = vec![job(&queue, "w"), job(&queue, "w")];
        nodes[0].insert_batch(&id, Some(callbacks()), members).unwrap();
        let claimed: Vec<Job> =
            nodes.iter().map(|n| n.claim(&queue, 1, Duration::ZERO).unwrap().remove(0)).collect();
        let mut hold = holder.transaction().unwrap();
        hold.execute("SELECT 1 FROM kathikon.batches WHERE id = $1 FOR UPDATE", &[&id]).unwrap();
        let acks: Vec<_> = nodes
            .iter()
            .zip(claimed)
            .map(|(node, job)| {
                let node = node.clone();
                std::thread::spawn(move || complete(&*node, &job))
            })
            .collect();
        common::eventually("both acks wait for the batch's row", || {
            let waiting: i64 = hold
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .unwrap()
                .get(0);
            waiting == 2
        });
        hold.rollback().unwrap();
        for a in acks {
            a.join().unwrap();
        }
        assert_eq!(callbacks_of(&*nodes[1], &id), ["on_completed", "on_finished"], "{id}");
        let status = nodes[1].batch(&id).unwrap();
        assert!(status.finished_at.is_some(), "{id}: {status:?}");
        assert_eq!(status.counts[JobState::Completed as usize], 2);
    }
}

/// Four threads on each of two nodes drain one batch of 600 members a few at a time: its
/// callbacks are inserted once, and the counts end exact.
#[test]
fn two_nodes_draining_one_batch_insert_each_callback_once() {
    let Some(url) = common::pg::database() else { return };
    let nodes = two_nodes(&url);
    let members: Vec<NewJob> = (0..600).map(|_| job("q", "w")).collect();
    nodes[0].insert_batch("wide", Some(callbacks()), members).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let node = nodes[t % 2].clone();
            std::thread::spawn(move || complete_all(&*node, "q", 3))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(callbacks_of(&*nodes[0], "wide"), ["on_completed", "on_finished"]);
    let status = nodes[0].batch("wide").unwrap();
    assert_eq!((status.counts[JobState::Completed as usize], status.total()), (600, 600));
    let fired: Vec<bool> = status.callbacks.iter().map(|c| c.job.is_some()).collect();
    assert_eq!(fired, [true, false, false, true]);
}

/// Rounds in which four threads on two nodes insert into one new batch id at once: without
/// callbacks every insert joins the one batch; with callbacks one creates it and the others
/// are refused, storing nothing.
#[test]
fn nodes_creating_one_batch_at_once_make_one_batch() {
    let Some(url) = common::pg::database() else { return };
    let nodes = two_nodes(&url);
    for round in 0..20 {
        let with_callbacks = round % 2 == 1;
        let id = format!("b{round}");
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (node, start, id) = (nodes[t % 2].clone(), start.clone(), id.clone());
                std::thread::spawn(move || {
                    let members = vec![job("q", "w"), job("q", "w")];
                    let given = with_callbacks.then(callbacks);
                    start.wait();
                    node.insert_batch(&id, given, members)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let stored = results.iter().filter(|r| r.is_ok()).count();
        if with_callbacks {
            assert_eq!(stored, 1, "{id}: {results:?}");
            for refused in results.iter().filter_map(|r| r.as_ref().err()) {
                assert!(
                    matches!(refused, Error::InvalidJob(m) if m.contains("exists already")),
                    "{id}: {refused:?}"
                );
            }
        } else {
            assert_eq!(stored, 4, "{id}: {results:?}");
        }
        let status = nodes[0].batch(&id).unwrap();
        assert_eq!(status.total(), 2 * stored as u64, "{id}");
        assert_eq!(status.callbacks.len(), if with_callbacks { 4 } else { 0 }, "{id}");
        let filter = ListFilter { queue: Some("q".into()), ..ListFilter::default() };
        let members = nodes[1].list(&filter).unwrap();
        let of_batch = members.iter().filter(|j| j.batch.as_deref() == Some(id.as_str())).count();
        assert_eq!(of_batch, 2 * stored, "{id}: only the stored inserts' members exist");
    }
}

/// Rounds in which one node completes a batch's only member while the other adds a member
/// to it: either the add waited and was refused (the batch finished, its callbacks counting
/// one member), or the finish saw the new member and the batch stays open with it.
#[test]
fn a_member_added_while_the_last_one_finishes_is_refused_or_keeps_the_batch_open() {
    let Some(url) = common::pg::database() else { return };
    let nodes = two_nodes(&url);
    let (mut refused, mut joined) = (0, 0);
    for round in 0..40 {
        let id = format!("race-{round}");
        let queue = format!("q{round}");
        nodes[0].insert_batch(&id, Some(callbacks()), vec![job(&queue, "w")]).unwrap();
        let running = nodes[0].claim(&queue, 1, Duration::ZERO).unwrap().remove(0);
        let start = Arc::new(Barrier::new(2));
        let finisher = {
            let (node, start) = (nodes[0].clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                complete(&*node, &running);
            })
        };
        let adder = {
            let (node, start, id, queue) = (nodes[1].clone(), start.clone(), id.clone(), queue);
            std::thread::spawn(move || {
                start.wait();
                node.insert_batch(&id, None, vec![job(&queue, "w")])
            })
        };
        finisher.join().unwrap();
        let outcome = adder.join().unwrap();
        let status = nodes[1].batch(&id).unwrap();
        match outcome {
            Ok(_) => {
                joined += 1;
                assert_eq!((status.total(), status.pending()), (2, 1), "{id}: {status:?}");
                assert_eq!(status.finished_at, None, "{id}");
                assert!(callbacks_of(&*nodes[1], &id).is_empty(), "{id}");
            }
            Err(Error::InvalidJob(m)) if m.contains("takes no more jobs") => {
                refused += 1;
                assert_eq!(status.total(), 1, "{id}: {status:?}");
                assert_eq!(callbacks_of(&*nodes[1], &id), ["on_completed", "on_finished"]);
            }
            Err(other) => panic!("{id}: {other:?}"),
        }
    }
    eprintln!("adds refused: {refused}, adds joined: {joined}");
}

/// A database whose transactions default to a stricter isolation than `READ COMMITTED`
/// would let two transactions finishing a batch's last members each miss the other's: an
/// ack that finishes a member there is refused, naming the setting, and changes nothing.
#[test]
fn finishing_a_member_under_repeatable_read_is_refused_naming_the_setting() {
    let Some(url) = common::pg::database() else { return };
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation \
             = ''repeatable read''', current_database()); END $$",
        )
        .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = common::pg::ticking_node(&url, &clock);
    store.insert_batch("b", Some(callbacks()), vec![job("q", "w")]).unwrap();
    let running = store.claim("q", 1, Duration::ZERO).unwrap().remove(0);
    let ack = Ack { id: running.id, attempt: running.attempt, outcome: Outcome::Complete };
    match store.ack(vec![ack]) {
        Err(Error::Storage(m)) => {
            assert!(m.contains("READ COMMITTED") && m.contains("default_transaction_isolation"));
        }
        other => panic!("expected a refusal naming the isolation, got {other:?}"),
    }
    assert_eq!(store.get(running.id).unwrap().state, JobState::Executing, "nothing changed");
    assert_eq!(store.batch("b").unwrap().finished_at, None);
}

/// The leader prunes finished members by retention (completed and cancelled ones kept an
/// hour, discarded ones a day): they stay counted in their states, the unfinished member
/// stays as it is, and the callbacks fired when it finishes count every member.
#[test]
fn members_the_leader_prunes_stay_counted() {
    let Some(url) = common::pg::database() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let retention = Retention::all(Duration::from_secs(3600))
        .with(JobState::Discarded, Duration::from_secs(24 * 3600))
        .unwrap();
    let store = PgStore::open(PgConfig {
        clock: clock.clone(),
        heartbeat: Some(Duration::from_millis(10)),
        tick: Duration::from_millis(10),
        prune_interval: Duration::from_millis(10),
        retention,
        ..PgConfig::new(url)
    })
    .unwrap();
    let members: Vec<NewJob> = (0..5).map(|_| job("q", "w")).collect();
    let inserted = store.insert_batch("b", Some(callbacks()), members).unwrap();
    store.cancel(inserted[0].id).unwrap();
    for outcome in
        [Outcome::Complete, Outcome::Complete, Outcome::Discard { reason: "bad input".into() }]
    {
        let running = store.claim("q", 1, Duration::ZERO).unwrap().remove(0);
        let ack = Ack { id: running.id, attempt: running.attempt, outcome };
        store.ack(vec![ack]).unwrap();
    }
    let per_state = |store: &PgStore| {
        let status = store.batch("b").unwrap();
        [JobState::Available, JobState::Completed, JobState::Cancelled, JobState::Discarded]
            .map(|s| status.counts[s as usize])
    };
    assert_eq!(per_state(&store), [1, 2, 1, 1]);
    clock.advance(3601 * kathikon_core::clock::SECOND);
    common::eventually("the completed and cancelled members are pruned", || {
        store.count(&ListFilter::default()).unwrap() == 2
    });
    assert_eq!(per_state(&store), [1, 2, 1, 1], "pruned members stay counted");
    let last = store.claim("q", 1, Duration::ZERO).unwrap().remove(0);
    complete(&store, &last);
    let status = store.batch("b").unwrap();
    assert!(status.finished_at.is_some());
    let filter = ListFilter { queue: Some("callbacks".into()), ..ListFilter::default() };
    let fired = store.list(&filter).unwrap();
    let events: Vec<&str> = fired.iter().map(|j| j.worker.as_str()).collect();
    assert_eq!(events, ["on_discarded", "on_cancelled", "on_finished"]);
    let meta: serde_json::Value = serde_json::from_str(&fired[0].meta).unwrap();
    let counts = serde_json::json!({"completed": 3, "cancelled": 1, "discarded": 1});
    assert_eq!(
        (&meta["batch"]["counts"], &meta["batch"]["total"]),
        (&counts, &serde_json::json!(5))
    );
}
