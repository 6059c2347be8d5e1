//! Proves what a failing disk does to the engine, with redb's real file backend behind a
//! [`FaultyBackend`] that fails the n-th write, fsync, resize or read with EIO:
//!
//! - every write, fsync and resize of every kind of commit (insert, claim, acks of every
//!   outcome, cancel, retry, prune), failed in turn, makes the call return `Error::Storage`
//!   naming the failure, and the engine then refuses every later write, claims included, with a
//!   message saying to reopen; after a healthy reopen the store is exactly as it was before the
//!   call or exactly as it would be after it — never in between (redb commits are atomic; a
//!   failed commit's outcome is unknown, which is why both are allowed) — its indexes agree
//!   with its records, and ids continue without reuse;
//! - every read, failed in turn, during open, `get`, `list`, `counts`, claim, ack, cancel and
//!   insert gives a typed `Error::Storage` (never `Corrupted`, never a panic or `Closed`), and
//!   changes nothing on disk;
//! - every write and fsync of the open itself (recovery and the rescue of executing jobs) can
//!   fail the open with a typed error and leave the store to open cleanly later.
//!
//! Writes, fsyncs and resizes are failed at every position. Reads are many more, so by default
//! the read sweeps fail reads 0-7 and then every read at a position growing by half each step;
//! `KATHIKON_FAULTS_FULL=1` fails every single read in turn. `KATHIKON_FAULTS_VERBOSE=1` prints
//! the tallies (faults injected, outcomes seen) per call. Stores live on /dev/shm when there is
//! one: faults are injected, not waited for, and a real fsync per commit would only be slow.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::faulty::{self, Arm, Faults};
use common::{config, job, scratch_dir, snapshot, store_path, Snapshot, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::Jobs;
use kathikon_core::{Ack, Engine, EngineConfig, Error, JobState, ListFilter, NewJob, Outcome};

/// The operation positions a sweep fails, in order: every one when `every` (or with
/// `KATHIKON_FAULTS_FULL` set), else 0-7 and then growing by half each step.
fn positions(every: bool) -> impl Iterator<Item = u64> {
    let every = every || std::env::var_os("KATHIKON_FAULTS_FULL").is_some();
    std::iter::successors(Some(0_u64), move |&n| {
        Some(if every || n < 8 { n + 1 } else { n * 3 / 2 })
    })
}

/// Engine settings for every store in this file: time stands still at `T0`, so two runs of the
/// same calls write the very same records, and the pruner never runs on its own.
fn settings(path: &Path) -> EngineConfig {
    EngineConfig {
        clock: Arc::new(ManualClock::new(T0)),
        prune_interval: Duration::from_secs(3600),
        ..config(path)
    }
}

fn open_healthy(path: &Path) -> Engine {
    Engine::open(settings(path)).expect("a healthy open")
}

/// Open `path` through a [`FaultyBackend`] driven by `faults`; `cache_bytes` as in
/// `RedbStore::open_with_backend`.
fn open_faulty(
    path: &Path,
    faults: &Arc<Faults>,
    cache_bytes: Option<usize>,
) -> kathikon_core::Result<Engine> {
    faulty::open_engine(settings(path), faults, cache_bytes)
}

/// The store every case starts from, built once: job 1 completed, jobs 2, 3 and 4 available,
/// job 5 scheduled for later, and job 6 available in another queue with a bigger payload.
/// With `leave_executing`, jobs 2 and 3 are left executing, so the next open rescues them.
fn base_store(dir: &Path, leave_executing: bool) -> Vec<u8> {
    let path = dir.join("base.redb");
    let engine = open_healthy(&path);
    engine
        .insert(vec![
            job("q", "w"),
            job("q", "w"),
            job("q", "w"),
            job("q", "w"),
            NewJob { scheduled_at: Some(T0 + 3600 * SECOND), ..job("later", "w") },
            NewJob { args: format!("{{\"blob\":\"{}\"}}", "x".repeat(20_000)), ..job("big", "w") },
        ])
        .unwrap();
    let first = engine.claim("q", 1, Duration::ZERO).unwrap();
    assert_eq!(first[0].id, 1);
    engine.ack(vec![Ack { id: 1, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    if leave_executing {
        prelude(&engine);
    }
    engine.close();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

/// Run on every freshly opened case before the fault is armed: jobs 2 and 3 start executing
/// (a dead process's claims do not survive a reopen, so they must be made in the same run).
fn prelude(engine: &Engine) {
    let claimed = engine.claim("q", 2, Duration::ZERO).unwrap();
    assert_eq!(claimed.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(), [(2, 1), (3, 1)]);
}

type Op = fn(&Engine) -> kathikon_core::Result<()>;

/// Which trigger a sweep arms.
type Pick = fn(&Faults) -> &dyn Arm;

/// One sweep: fail the n-th operation of `pick`'s kind during `op`, for every n.
struct Sweep<'a> {
    name: &'a str,
    op: Op,
    pick: Pick,
    /// redb's page cache, as in `RedbStore::open_with_backend`.
    cache_bytes: Option<usize>,
    /// Fail every position (else 0-7, then growing by half).
    every: bool,
}

/// The calls under test; each is one commit on the base store.
const OPS: &[(&str, Op)] = &[
    ("insert", |e| {
        e.insert(vec![
            job("q", "w"),
            NewJob { priority: 5, ..job("q", "w") },
            NewJob { scheduled_at: Some(T0 + 60 * SECOND), ..job("later", "w") },
        ])
        .map(drop)
    }),
    ("claim", |e| {
        let got = e.claim("q", 1, Duration::ZERO)?;
        assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![4]);
        Ok(())
    }),
    ("ack fail+complete", |e| {
        e.ack(vec![
            Ack {
                id: 2,
                attempt: 1,
                outcome: Outcome::Fail { error: "boom".into(), retry_in: None },
            },
            Ack { id: 3, attempt: 1, outcome: Outcome::Complete },
        ])
        .map(drop)
    }),
    ("ack snooze+cancel", |e| {
        e.ack(vec![
            Ack { id: 2, attempt: 1, outcome: Outcome::Snooze { delay: 30 * SECOND } },
            Ack { id: 3, attempt: 1, outcome: Outcome::Cancel { reason: "stop".into() } },
        ])
        .map(drop)
    }),
    ("ack discard", |e| {
        e.ack(vec![Ack { id: 2, attempt: 1, outcome: Outcome::Discard { reason: "bad".into() } }])
            .map(drop)
    }),
    ("cancel", |e| e.cancel(4).map(drop)),
    ("retry", |e| e.retry(1).map(drop)),
    ("prune", |e| {
        assert_eq!(e.prune(Duration::ZERO)?, 1);
        Ok(())
    }),
    // A checkpoint is the one commit that syncs redb's own file (every other commit is made
    // durable by the write-ahead log); its failure fails the call, whose change the log holds.
    ("insert + checkpoint", |e| {
        e.insert(vec![job("q", "w")])?;
        e.checkpoint()
    }),
    // Big enough to be filed after the insert returns (`storage/redb/unfiled.rs`): by the idle
    // writer, or at the latest by the checkpoint.
    ("insert 40 + checkpoint", |e| {
        e.insert((0..40).map(|_| job("q", "w")).collect())?;
        e.checkpoint()
    }),
];

/// A fresh copy of the base store, as `name` in `dir`.
fn copy_of(base: &[u8], dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, base).unwrap();
    // A failed case leaves its write-ahead log for the next open; the copy starts without.
    let _ = std::fs::remove_file(log_of(&path));
    path
}

/// The write-ahead log beside the store at `path`.
fn log_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

/// Reopen `path` healthy, insert one probe job (so the next id is part of the comparison) and
/// return what the store shows. Checks the store's indexes agree with its records.
fn settle(path: &Path) -> Snapshot {
    let engine = open_healthy(path);
    engine.insert(vec![job("probe", "w")]).expect("insert after reopen");
    let snap = snapshot(&engine);
    engine.close();
    snap
}

/// The store after the [`prelude`] and `op` (when given), each after a reopen; with neither,
/// the base store as it opens.
fn reference(base: &[u8], dir: &Path, with_prelude: bool, op: Option<Op>) -> Snapshot {
    let path = copy_of(base, dir, "reference.redb");
    if with_prelude {
        let engine = open_healthy(&path);
        prelude(&engine);
        if let Some(op) = op {
            op(&engine).expect("the call on a healthy disk");
        }
        engine.close();
    }
    let snap = settle(&path);
    std::fs::remove_file(&path).unwrap();
    snap
}

/// Tallies for one sweep.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    injected: u64,
    failed_calls: u64,
    kept_before: u64,
    kept_after: u64,
}

fn verbose() -> bool {
    std::env::var_os("KATHIKON_FAULTS_VERBOSE").is_some()
}

/// Every error a fault may give: a storage error, never a claim of corruption (a read that
/// failed is not a damaged file), never `Closed` (that would mean the writer thread died).
fn assert_storage(err: &Error, context: &str) {
    assert!(
        matches!(err, Error::Storage(_) | Error::CommitFailed { .. } | Error::WriterStopped { .. }),
        "{context}: expected a storage error, got {err:?}"
    );
    let text = err.to_string();
    assert!(!text.contains("storage error: storage error"), "{context}: doubled prefix: {text}");
}

/// Once a write failed, the engine refuses every later write, claims included, and says so.
fn assert_refuses_writes(engine: &Engine, context: &str) {
    let stopped = |r: kathikon_core::Result<()>, what: &str| {
        let err = r.expect_err(&format!("{context}: {what} after a storage failure succeeded"));
        assert_storage(&err, context);
        assert!(matches!(err, Error::WriterStopped { .. }), "{context}: {what}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains("stopped writing after a storage failure")
                && text.contains("open it again"),
            "{context}: {what}: {text}"
        );
    };
    stopped(engine.insert(vec![job("q", "w")]).map(drop), "insert");
    stopped(engine.cancel(5).map(drop), "cancel");
    stopped(engine.sync(), "sync");
    // Claims keep failing, however often they are tried: a claim must not take the ready
    // jobs with it and leave the next one an empty queue to wait on quietly.
    if engine.ready_count("q").unwrap() > 0 {
        for _ in 0..3 {
            stopped(engine.claim("q", 100, Duration::ZERO).map(drop), "claim");
        }
    }
}

/// Fail the n-th operation of `pick`'s kind during `op`, for n = 0, 1, 2, … until `op` gets
/// through with no fault; check each case as the module doc says.
fn sweep(base: &[u8], dir: &Path, sweep: &Sweep<'_>, tally: &mut Tally) {
    let Sweep { name, op, pick, cache_bytes, every } = *sweep;
    let before = reference(base, dir, true, None);
    let after = reference(base, dir, true, Some(op));
    assert_ne!(before, after, "{name} changes nothing; the sweep would prove nothing");
    for n in positions(every) {
        assert!(n < 100_000, "{name}: still failing after {n} faults");
        let context = format!("{name}, fault at operation {n}");
        let path = copy_of(base, dir, "case.redb");
        let faults = Arc::new(Faults::default());
        let engine = open_faulty(&path, &faults, cache_bytes).expect("open before arming");
        prelude(&engine);
        pick(&faults).arm(n);
        let outcome = catch_unwind(AssertUnwindSafe(|| op(&engine)))
            .unwrap_or_else(|_| panic!("{context}: the call panicked"));
        let injected = pick(&faults).failed();
        tally.cases += 1;
        tally.injected += injected;
        match &outcome {
            Ok(()) => {}
            Err(err) => {
                tally.failed_calls += 1;
                assert_storage(err, &context);
                assert!(injected > 0, "{context}: failed with no fault injected: {err}");
                assert!(err.to_string().contains("injected"), "{context}: {err}");
                assert_refuses_writes(&engine, &context);
            }
        }
        faults.heal();
        engine.close();
        drop(engine);
        let now = settle(&path);
        if now == before {
            tally.kept_before += 1;
        } else if now == after {
            tally.kept_after += 1;
        } else {
            panic!("{context}: the store is neither as before nor as after the call:\n{now:#?}");
        }
        if outcome.is_ok() {
            assert_eq!(now, after, "{context}: the call succeeded but its change is missing");
        }
        std::fs::remove_file(&path).unwrap();
        if outcome.is_ok() && injected == 0 {
            break; // the call needs no more operations of this kind than this
        }
    }
}

#[test]
fn every_failed_write_fsync_or_resize_of_every_commit_leaves_all_or_nothing() {
    let dir = scratch_dir();
    let base = base_store(dir.path(), false);
    let kinds: [(&str, Pick); 5] = [
        ("write", |f| &f.write),
        ("fsync", |f| &f.sync),
        ("set_len", |f| &f.set_len),
        ("log write", |f| &f.log.write),
        ("log fsync", |f| &f.log.sync),
    ];
    let mut total = Tally::default();
    for (kind, pick) in kinds {
        for (name, op) in OPS {
            let mut tally = Tally::default();
            let label = format!("{name} / {kind}");
            let plan = Sweep { name: &label, op: *op, pick, cache_bytes: None, every: true };
            sweep(&base, dir.path(), &plan, &mut tally);
            if verbose() {
                eprintln!("{name} / {kind}: {tally:?}");
            }
            total.cases += tally.cases;
            total.injected += tally.injected;
            total.failed_calls += tally.failed_calls;
            total.kept_before += tally.kept_before;
            total.kept_after += tally.kept_after;
        }
    }
    eprintln!("write/fsync/resize faults: {total:?}");
    assert!(total.failed_calls >= 2 * OPS.len() as u64, "too few faults landed: {total:?}");
}

/// Read-only calls for the read sweep, beside the writing ones.
const READS: &[(&str, Op)] = &[
    ("get", |e| e.get(6).map(drop)),
    ("list", |e| e.list(&ListFilter::default()).map(drop)),
    ("counts", |e| e.counts().map(drop)),
    ("oldest_available", |e| e.oldest_available("q").map(drop)),
];

#[test]
fn every_failed_read_is_a_typed_error_and_changes_nothing() {
    let dir = scratch_dir();
    let base = base_store(dir.path(), false);
    let before = reference(&base, dir.path(), false, None);
    let mut total = Tally::default();
    // No page cache, so every page the call needs is read from the (failing) disk.
    for (name, op) in READS {
        for n in positions(false) {
            assert!(n < 100_000, "{name}: still failing after {n} read faults");
            let context = format!("{name}, read fault at read {n}");
            let path = copy_of(&base, dir.path(), "case.redb");
            let faults = Arc::new(Faults::default());
            let engine = open_faulty(&path, &faults, Some(0)).unwrap();
            faults.read.arm(n);
            let outcome = catch_unwind(AssertUnwindSafe(|| op(&engine)))
                .unwrap_or_else(|_| panic!("{context}: the call panicked"));
            total.cases += 1;
            total.injected += faults.read.failed();
            if let Err(err) = &outcome {
                total.failed_calls += 1;
                assert_storage(err, &context);
                // The store stays unusable until reopened (redb's rule), and says so.
                let again = engine.get(1).expect_err("a read after a failed read");
                assert_storage(&again, &context);
                assert!(again.to_string().contains("open it again"), "{context}: {again}");
            }
            faults.heal();
            engine.close();
            assert_eq!(settle(&path), before, "{context}: a read changed the store");
            total.kept_before += 1;
            std::fs::remove_file(&path).unwrap();
            if outcome.is_ok() && faults.read.failed() == 0 {
                break;
            }
        }
    }
    for (name, op) in OPS {
        let mut tally = Tally::default();
        let label = format!("{name} / read");
        let plan =
            Sweep { name: &label, op: *op, pick: |f| &f.read, cache_bytes: Some(0), every: false };
        sweep(&base, dir.path(), &plan, &mut tally);
        total.cases += tally.cases;
        total.injected += tally.injected;
        total.failed_calls += tally.failed_calls;
        total.kept_before += tally.kept_before;
        total.kept_after += tally.kept_after;
    }
    eprintln!("read faults: {total:?}");
    assert!(total.failed_calls >= (READS.len() + OPS.len()) as u64, "{total:?}");
}

#[test]
fn every_failed_read_write_or_fsync_of_the_open_is_a_typed_error() {
    let dir = scratch_dir();
    // The open rescues jobs 2 and 3, so it writes as well as reads.
    let base = base_store(dir.path(), true);
    let expected = reference(&base, dir.path(), false, None);
    let kinds: [(&str, Pick); 6] = [
        ("read", |f| &f.read),
        ("write", |f| &f.write),
        ("fsync", |f| &f.sync),
        ("set_len", |f| &f.set_len),
        ("log write", |f| &f.log.write),
        ("log fsync", |f| &f.log.sync),
    ];
    let mut total = Tally::default();
    for (kind, pick) in kinds {
        for n in positions(false) {
            assert!(n < 100_000, "{kind}: the open still fails after {n} faults");
            let context = format!("open, {kind} fault at operation {n}");
            let path = copy_of(&base, dir.path(), "case.redb");
            let faults = Arc::new(Faults::default());
            pick(&faults).arm(n);
            let opened = catch_unwind(AssertUnwindSafe(|| open_faulty(&path, &faults, Some(0))))
                .unwrap_or_else(|_| panic!("{context}: the open panicked"));
            total.cases += 1;
            total.injected += pick(&faults).failed();
            let clean = pick(&faults).failed() == 0;
            match opened {
                Ok(engine) => {
                    faults.heal();
                    engine.close();
                }
                Err(err) => {
                    total.failed_calls += 1;
                    assert_storage(&err, &context);
                    assert!(err.to_string().contains("injected"), "{context}: {err}");
                }
            }
            // The path is free again and the store opens to the same jobs.
            assert_eq!(settle(&path), expected, "{context}");
            std::fs::remove_file(&path).unwrap();
            if clean {
                break;
            }
        }
    }
    eprintln!("faults during open: {total:?}");
}

#[test]
fn after_a_failed_fsync_the_engine_refuses_writes_until_reopened_and_nothing_is_lost() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let faults = Arc::new(Faults::default());
    let engine = open_faulty(&path, &faults, None).unwrap();
    let acknowledged = engine.insert((0..5).map(|_| job("q", "w")).collect()).unwrap();
    let running = engine.claim("q", 1, Duration::ZERO).unwrap();

    // A batch is durable once its write-ahead log record is synced: that is the fsync.
    faults.log.sync.arm(0);
    let err = engine.insert((0..3).map(|_| job("q", "w")).collect()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err:?}");
    assert_eq!(
        text,
        format!(
            "storage error: commit to {} failed, outcome unknown: I/O error on the write-ahead \
             log {}: injected log fsync fault: Input/output error (os error 5)",
            path.display(),
            log_of(&path).display()
        )
    );
    faults.heal(); // the disk recovers, but redb requires a reopen
    assert_refuses_writes(&engine, "after a failed fsync");
    let ack = Ack { id: running[0].id, attempt: 1, outcome: Outcome::Complete };
    assert!(engine.ack(vec![ack.clone()]).is_err());
    // A fire-and-forget ack is accepted and dropped: its job stays executing, to be rescued.
    engine.ack_nowait(vec![ack]).unwrap();
    // What was committed can still be read.
    assert_eq!(engine.get(acknowledged[4].id).unwrap(), acknowledged[4]);
    engine.close();
    drop(engine);

    let engine = open_healthy(&path);
    let jobs = engine.list(&ListFilter::default()).unwrap();
    let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    // The failed batch (ids 6-8) is either all there or all absent.
    assert!(ids == [1, 2, 3, 4, 5] || ids == [1, 2, 3, 4, 5, 6, 7, 8], "{ids:?}");
    for acked in &acknowledged[1..] {
        assert_eq!(&engine.get(acked.id).unwrap(), acked);
    }
    assert_eq!(engine.recovery().rescued, 1, "the claimed job is rescued");
    // Work continues: new ids follow the old ones, and every job runs to completion.
    let new = engine.insert(vec![job("q", "w")]).unwrap();
    assert_eq!(new[0].id, ids.last().unwrap() + 1);
    let mut done = 0;
    loop {
        let batch = engine.claim("q", 100, Duration::ZERO).unwrap();
        if batch.is_empty() {
            break;
        }
        let acks = batch
            .iter()
            .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
            .collect::<Vec<_>>();
        done += engine.ack(acks).unwrap().len();
    }
    assert_eq!(done, ids.len() + 1);
    let completed = ListFilter { state: Some(JobState::Completed), ..ListFilter::default() };
    assert_eq!(engine.list(&completed).unwrap().len(), ids.len() + 1);
}
