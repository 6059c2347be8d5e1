//! Proves what a crash leaves to the write-ahead log, with crash copies (the store file and its
//! `-wal` log copied while the engine has them open, as a `SIGKILL` or power cut leaves them —
//! every commit in these tests is fsync'd to the log, none yet checkpointed into the store):
//!
//! - the log alone brings back every acknowledged batch: the store file by itself is still at
//!   its last checkpoint;
//! - cut at every byte offset (a torn tail), or with a byte damaged in its last record, the
//!   log brings the store back to exactly the state after some whole number of batches — the
//!   batches whose records survived whole — never part of a batch, and never fewer for a
//!   longer log; a byte damaged in an earlier record is refused (`Corrupted`, naming the
//!   offset), as is a missing log beside a store that was not closed cleanly;
//! - after a replay the log is reused from its start, and batches logged after that replay
//!   survive a second crash;
//! - a log that does not belong to the store beside it (another store's, or one that starts
//!   after the store's last checkpoint) is refused with a typed error, not applied or ignored;
//! - the log is created owner-only (0600), like the store, and a clean close removes it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config, job, scratch_dir};
use kathikon_core::Jobs;
use kathikon_core::{Engine, Error, Job, ListFilter, NewJob};

fn log_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

fn list(engine: &Engine) -> Vec<Job> {
    engine.list(&ListFilter::default()).unwrap()
}

/// The store file and its log as they are now, while the engine holds them.
struct CrashCopy {
    store: Vec<u8>,
    log: Vec<u8>,
}

fn crash_copy(path: &Path) -> CrashCopy {
    CrashCopy { store: std::fs::read(path).unwrap(), log: std::fs::read(log_of(path)).unwrap() }
}

/// Write `store` and `log` (or no log) as `name` in `dir`, open them, and return the jobs
/// after checking the stored counts agree with them; the engine is closed cleanly.
fn reopen(dir: &Path, name: &str, store: &[u8], log: Option<&[u8]>) -> Result<Vec<Job>, Error> {
    let path = dir.join(name);
    std::fs::write(&path, store).unwrap();
    let _ = std::fs::remove_file(log_of(&path));
    if let Some(log) = log {
        std::fs::write(log_of(&path), log).unwrap();
    }
    let engine = Engine::open(config(&path))?;
    let snap = common::snapshot(&engine); // checks counts and claim queues against the jobs
    engine.close();
    assert!(!log_of(&path).exists(), "a clean close leaves no log");
    common::assert_indexes_match_records(&path); // the replayed batches' index entries too
    std::fs::remove_file(&path).unwrap();
    Ok(snap.jobs)
}

/// Batches with no claims (a reopen would rescue claimed jobs and so change them), each one
/// commit; returns the jobs after each batch (index 0: none yet) and the crash copy.
fn logged_batches(path: &Path) -> (Vec<Vec<Job>>, CrashCopy) {
    let engine = Engine::open(config(path)).unwrap();
    let mut states = vec![list(&engine)];
    let ops: [fn(&Engine); 7] = [
        (|e| drop(e.insert(vec![job("q", "w"), job("q", "w"), job("r", "w")]).unwrap())),
        (|e| {
            let later = NewJob { scheduled_at: Some(i64::MAX / 4), ..job("q", "w") };
            drop(e.insert(vec![later]).unwrap());
        }),
        (|e| drop(e.cancel(2).unwrap())),
        (|e| drop(e.retry(2).unwrap())),
        (|e| {
            let big = NewJob { args: format!("\"{}\"", "x".repeat(5000)), ..job("big", "w") };
            drop(e.insert(vec![big, job("r", "w")]).unwrap());
        }),
        (|e| drop(e.cancel(1).unwrap())),
        (|e| assert_eq!(e.prune(Duration::ZERO).unwrap(), 1)),
    ];
    for op in &ops {
        op(&engine);
        states.push(list(&engine));
    }
    // The copy is what a crash at this moment leaves; the original is then closed cleanly.
    let copy = crash_copy(path);
    engine.close();
    (states, copy)
}

#[test]
fn the_log_alone_brings_back_every_acknowledged_batch() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let (states, copy) = logged_batches(&path);
    let last = states.last().unwrap();
    assert_eq!(&reopen(dir.path(), "a.redb", &copy.store, Some(&copy.log)).unwrap(), last);
    // The store file alone is at its last checkpoint: the log is what made the batches durable.
    // Without it the open is refused; an empty log in its place opens it as of that checkpoint.
    let err = reopen(dir.path(), "b.redb", &copy.store, None).unwrap_err();
    assert!(err.to_string().contains("is missing"), "{err}");
    assert_eq!(reopen(dir.path(), "b.redb", &copy.store, Some(b"")).unwrap(), states[0]);
}

/// Where each record of `log` ends: a 32-byte header whose bytes 8..16 are the payload's
/// length, then the payload (see `storage/redb/wal/record.rs`).
fn record_ends(log: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while log.len() >= pos + 32 && &log[pos..pos + 4] == b"KWAL" {
        let len = u64::from_le_bytes(log[pos + 8..pos + 16].try_into().unwrap()) as usize;
        pos += 32 + len;
        ends.push(pos);
    }
    ends
}

#[test]
fn a_torn_or_damaged_log_keeps_exactly_its_whole_batches() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let (states, copy) = logged_batches(&path);
    let ends = record_ends(&copy.log);
    assert_eq!(ends.len(), states.len() - 1, "one log record per batch");
    // Batches whose records end at or before `at`.
    let whole_before = |at: usize| ends.iter().filter(|&&e| e <= at).count();
    // Cuts at, just before and just after every record's end, and inside every record: the
    // store is exactly as after the batches whose records are whole.
    let mut cuts = vec![0, 1, 31, 32, 33];
    let mut start = 0;
    for &end in &ends {
        cuts.extend([end - 1, end, end + 1]);
        cuts.extend((1..8).map(|i| start + (end - start) * i / 8));
        start = end;
    }
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|&c| c <= copy.log.len()) {
        let jobs = reopen(dir.path(), "cut.redb", &copy.store, Some(&copy.log[..cut])).unwrap();
        assert_eq!(jobs, states[whole_before(cut)], "log cut at {cut} (records end at {ends:?})");
    }
    // A damaged byte inside the last record: the records before it, as if it were torn.
    // Inside an earlier one: refused, since whole records follow (not a torn tail).
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        for at in [start, start + 5, start + 12, start + 20, start + 28, start + 33, end - 1] {
            let mut bad = copy.log.clone();
            bad[at] ^= 0x41;
            let reopened = reopen(dir.path(), "bad.redb", &copy.store, Some(&bad));
            if i + 1 == ends.len() {
                let jobs = reopened.unwrap();
                assert_eq!(jobs, states[whole_before(at)], "log byte {at} damaged (ends {ends:?})");
            } else {
                let err = reopened.unwrap_err();
                assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
                assert!(err.to_string().contains(&format!("damaged at byte {start}")), "{err}");
            }
        }
        start = end;
    }
}

#[test]
fn after_a_replay_the_log_is_reused_and_later_batches_survive_a_second_crash() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let (states, copy) = logged_batches(&path);
    // Crash 1's leftovers, opened: the replay checkpoints, then new batches go to the log.
    let second = dir.path().join("second.redb");
    std::fs::write(&second, &copy.store).unwrap();
    std::fs::write(log_of(&second), &copy.log).unwrap();
    let engine = Engine::open(config(&second)).unwrap();
    assert_eq!(&list(&engine), states.last().unwrap());
    let added = engine.insert(vec![job("after", "w")]).unwrap();
    engine.cancel(3).unwrap();
    let expected = list(&engine);
    let crash2 = crash_copy(&second);
    engine.close();
    let jobs = reopen(dir.path(), "third.redb", &crash2.store, Some(&crash2.log)).unwrap();
    assert_eq!(jobs, expected);
    assert!(jobs.iter().any(|j| j.id == added[0].id));
}

#[test]
fn a_log_that_does_not_follow_its_store_is_refused() {
    let dir = scratch_dir();
    let (_, copy) = logged_batches(&dir.path().join("one.redb"));
    // Another store's log beside a fresh store.
    let fresh = dir.path().join("fresh.redb");
    std::fs::write(log_of(&fresh), &copy.log).unwrap();
    let err = Engine::open(config(&fresh)).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("move the log away"), "{err}");
    // Another store's log beside an existing store.
    let (_, other) = logged_batches(&dir.path().join("two.redb"));
    let mixed = dir.path().join("mixed.redb");
    std::fs::write(&mixed, &other.store).unwrap();
    std::fs::write(log_of(&mixed), &copy.log).unwrap();
    let err = Engine::open(config(&mixed)).unwrap_err();
    assert!(err.to_string().contains("belongs to another store"), "{err}");
    // Moving the log away opens the store as its file has it (an empty log in its place:
    // the store was not closed cleanly, so a missing log would be refused).
    std::fs::write(log_of(&mixed), b"").unwrap();
    Engine::open(config(&mixed)).unwrap().close();
}

#[test]
fn a_store_file_behind_its_log_is_refused() {
    // The store file is copied at a checkpoint; later batches are checkpointed and the log
    // reused, so the log starts after the old copy's checkpoint: replaying it would skip
    // batches, so the open refuses.
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let engine = Engine::open(config(&path)).unwrap();
    engine.insert(vec![job("q", "w")]).unwrap();
    engine.checkpoint().unwrap();
    let old_store = std::fs::read(&path).unwrap();
    engine.insert(vec![job("q", "w")]).unwrap();
    engine.checkpoint().unwrap();
    engine.insert(vec![job("q", "w")]).unwrap();
    let newer_log = std::fs::read(log_of(&path)).unwrap();
    engine.close();
    let behind = dir.path().join("behind.redb");
    std::fs::write(&behind, &old_store).unwrap();
    std::fs::write(log_of(&behind), &newer_log).unwrap();
    let err = Engine::open(config(&behind)).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("lost commits or is an older copy"), "{err}");
}

#[test]
fn the_log_is_owner_only_and_a_clean_close_removes_it() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let engine = Engine::open(config(&path)).unwrap();
    engine.insert(vec![job("q", "w")]).unwrap();
    let mode = std::fs::metadata(log_of(&path)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "log mode {mode:o}");
    let store_mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(store_mode & 0o777, 0o600, "store mode {store_mode:o}");
    engine.close();
    assert!(!log_of(&path).exists());
}

/// With `durability="none"` the log is written all the same, only never synced: what a
/// killed process leaves (the files as the page cache holds them) still has every batch it
/// acknowledged. (What a power loss would take, the unsynced tail, cannot be made here.)
#[test]
fn without_fsync_the_log_is_never_synced_and_still_keeps_what_a_killed_process_acknowledged() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let faults = std::sync::Arc::new(common::faulty::Faults::default());
    let config = kathikon_core::EngineConfig {
        durability: kathikon_core::Durability::None,
        ..config(&path)
    };
    let engine = common::faulty::open_engine(config, &faults, None).unwrap();
    let faults = &faults.log;
    let ids: Vec<u64> = (0..3).map(|_| engine.insert(vec![job("q", "w")]).unwrap()[0].id).collect();
    assert!(faults.write.seen() >= 3, "the batches were not logged");
    assert_eq!(faults.sync.seen(), 0, "a batch was synced");
    let copy = crash_copy(&path);
    engine.close();
    let jobs = reopen(dir.path(), "copy.redb", &copy.store, Some(&copy.log)).unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
}

/// Batches are applied in one redb transaction that stays open between them (it is committed
/// only when a reader needs it, or at a checkpoint). A batch that fails part way leaves that
/// transaction holding its partial changes: they must vanish, and every batch logged before
/// it must stay, both for readers now and after a crash.
#[test]
fn a_batch_that_fails_part_way_leaves_exactly_the_batches_before_it() {
    use kathikon_core::storage::{RedbStore, Store};
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let store = RedbStore::open(Some(&path), true).unwrap();
    let insert = |txn: &mut dyn kathikon_core::storage::WriteTxn, queue: &str| {
        let id = txn.allocate_ids(1)?;
        txn.put(None, &job(queue, "w").into_job(id, 1_000))?;
        Ok::<Job, Error>(txn.get(id)?.expect("just put"))
    };
    let mut first = None;
    store
        .write(&mut |txn| {
            first = Some(insert(txn, "kept")?);
            Ok(())
        })
        .unwrap();
    let first = first.unwrap();
    let failed = store.write(&mut |txn| {
        insert(txn, "lost")?;
        Err(Error::Storage("the batch fails after writing".into()))
    });
    assert!(failed.is_err());
    let mut third = None;
    store
        .write(&mut |txn| {
            third = Some(insert(txn, "after")?);
            Ok(())
        })
        .unwrap();
    let third = third.unwrap();
    assert_eq!(third.id, first.id + 1, "the failed batch's id allocation is undone too");

    let (jobs, counts) = common::store_contents(&store);
    assert_eq!(jobs, vec![first.clone(), third.clone()]);
    let queues: Vec<&str> = counts.iter().map(|(q, _, _)| q.as_str()).collect();
    assert_eq!(queues, ["after", "kept"], "{counts:?}");

    // A crash now (the reads above committed redb without a sync; nothing is checkpointed).
    let copy = crash_copy(&path);
    drop(store);
    let back = reopen(dir.path(), "copy.redb", &copy.store, Some(&copy.log)).unwrap();
    assert_eq!(back, vec![first, third]);
}
