//! New jobs that a logged batch leaves unfiled (`storage/redb/unfiled.rs`): durable and visible
//! exactly as filed ones are, whoever files them and whenever.
//!
//! - a read, a claim (a read of the job inside a batch), a commit or a clean close files them
//!   first, so nothing sees the tables without them;
//! - the writer's idle work files them a chunk at a time; a checkpoint files them all;
//! - a crash before they are filed loses nothing: the log holds them.

mod common;

use std::path::{Path, PathBuf};

use common::{job, scratch_dir, store_contents};
use kathikon_core::storage::{RedbStore, Store};
use kathikon_core::{Error, Job, JobState};

/// Insert `n` jobs of `queue` (available now) with `put_new`, as the writer does.
fn insert_new(store: &RedbStore, queue: &str, n: u64) -> Vec<Job> {
    let mut out = Vec::new();
    store
        .write(&mut |txn| {
            let first = txn.allocate_ids(n)?;
            out = (0..n).map(|i| job(queue, "w").into_job(first + i, 1_000)).collect();
            for j in &out {
                txn.put_new(j)?;
            }
            Ok(())
        })
        .unwrap();
    out
}

/// The `available` index as a reader sees it: `(queue, id)` in index order.
fn available(store: &RedbStore) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    store
        .read(&mut |txn| {
            txn.available(&mut |(queue, _, _, id)| out.push((queue, id)))?;
            Ok(())
        })
        .unwrap();
    out
}

fn log_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

/// What a `SIGKILL` leaves of the open `store` at `path` now (its file, and its log when
/// `with_log`), written as `copy.redb` beside it; `store` is dropped after the copy.
fn crash_copy(store: RedbStore, path: &Path, with_log: bool) -> PathBuf {
    let file = std::fs::read(path).unwrap();
    let log = with_log.then(|| std::fs::read(log_of(path)).unwrap());
    drop(store);
    let copy = path.with_file_name("copy.redb");
    std::fs::write(&copy, file).unwrap();
    if let Some(log) = log {
        std::fs::write(log_of(&copy), log).unwrap();
    }
    copy
}

#[test]
fn a_read_files_new_jobs_first() {
    let dir = scratch_dir();
    let store = RedbStore::open(Some(&dir.path().join("jobs.redb")), true).unwrap();
    let jobs = insert_new(&store, "q", 3);
    assert!(store.has_background_work(), "the jobs were filed at once");
    let (seen, counts) = store_contents(&store);
    assert_eq!(seen, jobs);
    assert_eq!(counts, vec![("q".to_string(), JobState::Available, 3)]);
    assert_eq!(available(&store), [1, 2, 3].map(|id| ("q".to_string(), id)));
}

#[test]
fn a_batch_that_reads_an_unfiled_job_finds_it_and_can_change_it() {
    let dir = scratch_dir();
    let store = RedbStore::open(Some(&dir.path().join("jobs.redb")), true).unwrap();
    let jobs = insert_new(&store, "q", 5);
    // A claim of job 4, as the writer makes one: read, change, put back.
    store
        .write(&mut |txn| {
            let mut job = txn.get(4)?.expect("an unfiled job reads as present");
            assert_eq!(job, jobs[3]);
            let before = job.placement();
            job.claim(2_000)?;
            txn.put(Some(before), &job)
        })
        .unwrap();
    let (seen, counts) = store_contents(&store);
    assert_eq!(seen[3].state, JobState::Executing);
    assert_eq!(
        counts,
        vec![("q".to_string(), JobState::Available, 4), ("q".to_string(), JobState::Executing, 1)]
    );
    let ids: Vec<u64> = available(&store).into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, [1, 2, 3, 5], "the claimed job left the available index");
}

#[test]
fn background_work_files_a_chunk_at_a_time_and_a_close_files_the_rest() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let store = RedbStore::open(Some(&path), true).unwrap();
    let mut jobs = insert_new(&store, "a", 200);
    jobs.extend(insert_new(&store, "b", 100));
    assert!(store.do_background_work(128).unwrap(), "128 of 300 filed: more wait");
    assert!(store.do_background_work(128).unwrap(), "256 of 300 filed: more wait");
    let more = insert_new(&store, "c", 10);
    assert!(store.has_background_work());
    assert!(!store.do_background_work(128).unwrap(), "310 of 310 filed; no checkpoint is due");
    assert!(!store.has_background_work());
    jobs.extend(more);
    assert_eq!(store_contents(&store).0, jobs);
    // Unfiled again, then a clean close: the close's checkpoint files them.
    let last = insert_new(&store, "c", 7);
    assert!(store.has_background_work());
    drop(store);
    assert!(!log_of(&path).exists(), "a clean close removes the log");
    common::assert_indexes_match_records(&path);
    jobs.extend(last);
    let store = RedbStore::open(Some(&path), true).unwrap();
    assert_eq!(store_contents(&store).0, jobs);
}

#[test]
fn a_crash_before_new_jobs_are_filed_loses_none() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let store = RedbStore::open(Some(&path), true).unwrap();
    let jobs = insert_new(&store, "q", 50);
    assert!(store.has_background_work());
    // The store file is at its last checkpoint (empty): the log holds the jobs.
    let copy = crash_copy(store, &path, true);
    let store = RedbStore::open(Some(&copy), true).unwrap();
    let (seen, counts) = store_contents(&store);
    assert_eq!(seen, jobs);
    assert_eq!(counts, vec![("q".to_string(), JobState::Available, 50)]);
    drop(store);
    common::assert_indexes_match_records(&copy);
}

#[test]
fn a_new_scheduled_job_is_due_at_once_and_read_when_due() {
    let dir = scratch_dir();
    let store = RedbStore::open(Some(&dir.path().join("jobs.redb")), true).unwrap();
    let mut later = None;
    store
        .write(&mut |txn| {
            let id = txn.allocate_ids(1)?;
            let job = kathikon_core::NewJob { scheduled_at: Some(5_000), ..job("q", "w") };
            let job = job.into_job(id, 1_000);
            txn.put_new(&job)?;
            later = Some(job);
            // The writer asks for the next due time after every batch: it must be there.
            assert_eq!(txn.next_due()?, Some(5_000));
            Ok(())
        })
        .unwrap();
    let later = later.unwrap();
    assert!(store.has_background_work(), "its record waits to be filed");
    // Promotion, as the writer makes it: the due ids, then each job read by id.
    store
        .write(&mut |txn| {
            assert_eq!(txn.due(5_000, 10)?, vec![later.id]);
            assert_eq!(txn.get(later.id)?.as_ref(), Some(&later));
            Ok(())
        })
        .unwrap();
    assert_eq!(store_contents(&store).0, vec![later]);
}

#[test]
fn a_store_without_a_log_files_new_jobs_at_once() {
    // In memory there is no log to make an unfiled job durable.
    let memory = RedbStore::open(None, true).unwrap();
    insert_new(&memory, "q", 3);
    assert!(!memory.has_background_work());
    assert_eq!(store_contents(&memory).0.len(), 3);
}

#[test]
fn a_checkpoint_files_new_jobs_and_leaves_the_store_file_complete_on_its_own() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let store = RedbStore::open(Some(&path), true).unwrap();
    let jobs = insert_new(&store, "q", 50);
    assert!(store.has_background_work());
    store.checkpoint().unwrap();
    // A crash now leaves a store file that needs no log's records: an empty log opens it (a
    // missing one is refused, since the store was not closed cleanly).
    let copy = crash_copy(store, &path, false);
    std::fs::write(log_of(&copy), b"").unwrap();
    let store = RedbStore::open(Some(&copy), true).unwrap();
    assert_eq!(store_contents(&store).0, jobs);
    drop(store);
    common::assert_indexes_match_records(&copy);
}

#[test]
fn an_invalid_batch_after_unfiled_jobs_keeps_them() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let store = RedbStore::open(Some(&path), true).unwrap();
    let jobs = insert_new(&store, "q", 4);
    let failed = store.write(&mut |txn| {
        let id = txn.allocate_ids(1)?;
        txn.put_new(&job("lost", "w").into_job(id, 1_000))?;
        Err(Error::Storage("the batch fails after writing".into()))
    });
    assert!(failed.is_err());
    let (seen, counts) = store_contents(&store);
    assert_eq!(seen, jobs, "the earlier batch's jobs stay, the failed one's go");
    assert_eq!(counts, vec![("q".to_string(), JobState::Available, 4)]);
}
