//! The `failed` index (retryable, cancelled and discarded jobs by queue, state and id) is kept
//! with the jobs through a crash and built for a store of the previous format:
//!
//! - a crash copy (store file and write-ahead log taken while the engine has them open, every
//!   batch only in the log), its log cut after each whole record, reopens with the index
//!   entries of exactly the jobs it kept, and lists each failure state as the walk does;
//! - a format 2 store (the layout before the index: no `failed` table), closed cleanly or
//!   left with a log to replay, is upgraded at open to format 3 with its index built.

mod common;

use std::path::{Path, PathBuf};

use common::{claim_one, config, finish, job, scratch_dir};
use kathikon_core::storage::FORMAT_VERSION;
use kathikon_core::{BulkAction, Engine, Job, JobId, JobState, Jobs, ListFilter, Outcome};
use redb::{ReadableDatabase, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("kathikon_meta");
const FAILED: TableDefinition<(&str, u8, u64), ()> = TableDefinition::new("failed");

fn log_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

/// Jobs of queues "q" and "r" driven into every failure state and out of some, one batch
/// per step; the engine is left open.
fn failures(engine: &Engine) {
    engine.insert((0..12).map(|i| job(if i % 3 == 0 { "r" } else { "q" }, "w")).collect()).unwrap();
    for (i, queue) in ["q", "q", "q", "r", "q", "r", "q"].iter().enumerate() {
        let j = claim_one(engine, queue);
        let outcome = match i % 3 {
            0 => Outcome::Discard { reason: "bad".into() },
            1 => Outcome::Fail { error: "boom".into(), retry_in: Some(3_600_000_000) },
            _ => Outcome::Cancel { reason: "no".into() },
        };
        finish(engine, &j, outcome);
    }
    let discarded = ListFilter { state: Some(JobState::Discarded), ..Default::default() };
    let first = engine.list(&discarded).unwrap()[0].id;
    engine.retry(first).unwrap(); // out of `failed`
    let available = ListFilter { state: Some(JobState::Available), ..Default::default() };
    let ready = engine.list(&available).unwrap()[0].id;
    engine.cancel(ready).unwrap(); // into it without running
    let r = ListFilter { queue: Some("r".into()), ..Default::default() };
    let deleted = engine.bulk(BulkAction::Delete { force: false }, &r).unwrap();
    assert!(deleted > 0, "r's finished jobs deleted, out of the index");
    let fail_again = claim_one(engine, "q");
    finish(engine, &fail_again, Outcome::Discard { reason: "again".into() });
}

/// Each failure state of each queue, newest first, as listed, against the walk (the full
/// listing, which names no state, filtered here).
fn assert_failures_list_as_the_walk(engine: &Engine) {
    let all = engine.list(&ListFilter::default()).unwrap();
    for queue in ["q", "r"] {
        for state in [JobState::Retryable, JobState::Cancelled, JobState::Discarded] {
            let f = ListFilter {
                state: Some(state),
                queue: Some(queue.into()),
                descending: true,
                limit: 50,
                ..Default::default()
            };
            let want: Vec<JobId> = all
                .iter()
                .rev()
                .filter(|j| j.state == state && j.queue == queue)
                .map(|j| j.id)
                .collect();
            let got: Vec<JobId> = engine.list(&f).unwrap().iter().map(|j| j.id).collect();
            assert_eq!(got, want, "{f:?}");
        }
    }
}

/// Open `path`, check its listings and close it; then check its index tables with redb.
fn reopen_and_check(path: &Path) -> Vec<Job> {
    let engine = Engine::open(config(path)).unwrap();
    assert_failures_list_as_the_walk(&engine);
    let jobs = engine.list(&ListFilter::default()).unwrap();
    engine.close();
    common::assert_indexes_match_records(path);
    jobs
}

/// Where each record of `log` ends (`wal.rs` in these tests reads them the same way).
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
fn a_crash_keeps_the_failed_index_with_its_jobs() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let engine = Engine::open(config(&path)).unwrap();
    failures(&engine);
    let (store, log) = (std::fs::read(&path).unwrap(), std::fs::read(log_of(&path)).unwrap());
    let last = engine.list(&ListFilter::default()).unwrap();
    engine.close();
    let ends = record_ends(&log);
    assert!(ends.len() > 10, "one log record per batch");
    for (i, &end) in ends.iter().enumerate() {
        let copy = dir.path().join(format!("cut{i}.redb"));
        std::fs::write(&copy, &store).unwrap();
        std::fs::write(log_of(&copy), &log[..end]).unwrap();
        let jobs = reopen_and_check(&copy);
        if end == log.len() {
            assert_eq!(jobs, last, "the whole log brings back every batch");
        }
    }
}

/// Make the store at `path` look as the previous format left it: no `failed` table, format 2.
fn as_format_2(path: &Path) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    assert!(txn.delete_table(FAILED).unwrap(), "a format 3 store has the failed table");
    txn.open_table(META).unwrap().insert("format_version", 2).unwrap();
    txn.commit().unwrap();
}

fn format_of(path: &Path) -> u64 {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let version = meta.get("format_version").unwrap().unwrap().value();
    version
}

#[test]
fn a_format_2_store_is_upgraded_with_its_failed_index_built() {
    assert_eq!(FORMAT_VERSION, 5);
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let engine = Engine::open(config(&path)).unwrap();
    failures(&engine);
    let before = engine.list(&ListFilter::default()).unwrap();
    engine.close();
    as_format_2(&path);
    assert_eq!(reopen_and_check(&path), before);
    assert_eq!(format_of(&path), FORMAT_VERSION);
}

#[test]
fn a_format_2_store_with_a_log_to_replay_is_upgraded_then_replayed() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let engine = Engine::open(config(&path)).unwrap();
    // Some failures checkpointed into the store file, more only in the log.
    failures(&engine);
    engine.checkpoint().unwrap();
    let more = claim_one(&engine, "q");
    finish(&engine, &more, Outcome::Cancel { reason: "late".into() });
    let retried = ListFilter { state: Some(JobState::Retryable), ..Default::default() };
    let back = engine.list(&retried).unwrap()[0].id;
    engine.retry(back).unwrap();
    let (store, log) = (std::fs::read(&path).unwrap(), std::fs::read(log_of(&path)).unwrap());
    let last = engine.list(&ListFilter::default()).unwrap();
    engine.close();
    let copy = dir.path().join("copy.redb");
    std::fs::write(&copy, &store).unwrap();
    as_format_2(&copy);
    std::fs::write(log_of(&copy), &log).unwrap();
    assert_eq!(reopen_and_check(&copy), last);
    assert_eq!(format_of(&copy), FORMAT_VERSION);
}

/// The store files an older Kathikon wrote, kept in the fuzz corpus (formats 3, 2 and 1,
/// each with a retryable and a discarded job of queue "a"): opened, they are upgraded and
/// list their failed jobs as the walk does, their jobs read without a result or a batch.
#[test]
fn stores_written_by_older_formats_open_and_list_their_failed_jobs() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/store_file");
    let dir = scratch_dir();
    for seed in ["seed-format3-store", "seed-format2-store", "seed-small-store"] {
        let path = dir.path().join(format!("{seed}.redb"));
        std::fs::copy(corpus.join(seed), &path).unwrap();
        let old = format_of(&path);
        assert!(old < FORMAT_VERSION, "{seed} is format {old}");
        let engine = Engine::open(config(&path)).unwrap();
        let all = engine.list(&ListFilter::default()).unwrap();
        assert!(all.iter().all(|j| j.result.is_none() && j.batch.is_none()), "{seed}");
        for state in [JobState::Retryable, JobState::Discarded] {
            let f = ListFilter {
                state: Some(state),
                queue: Some("a".into()),
                descending: true,
                limit: 1,
                ..Default::default()
            };
            let want: Vec<JobId> =
                all.iter().rev().filter(|j| j.state == state).take(1).map(|j| j.id).collect();
            assert!(!want.is_empty() || old == 1, "{seed} has a {state:?} job");
            let got: Vec<JobId> = engine.list(&f).unwrap().iter().map(|j| j.id).collect();
            assert_eq!(got, want, "{seed}: {f:?}");
        }
        engine.close();
        common::assert_indexes_match_records(&path);
        assert_eq!(format_of(&path), FORMAT_VERSION);
    }
}
