//! Proves damage to a store's write-ahead log, or a store cut to nothing, is reported, never
//! read as less: the files are what a `SIGKILL`ed process left (a child process inserts 200
//! jobs, each acknowledged after its log record was synced, and is killed), then damaged:
//!
//! - the log deleted: the open is refused with `Corrupted` naming the log, since the store
//!   was not closed cleanly; an empty file in the log's place is the explicit way to open
//!   the store as of its last checkpoint; after a clean close the log is not needed;
//! - a byte flipped anywhere in the log: the open either brings back exactly the records
//!   before a damaged *last* record (which a torn write looks like) or is refused with
//!   `Corrupted` naming the log and the damaged record's offset — never fewer jobs silently;
//! - a closed store truncated to 0 bytes: refused with `Corrupted` ("empty"), left as it is;
//!   only a missing path becomes a new store, which appears whole;
//! - a store written before the store recorded whether its log is open still opens without
//!   its log, as it always did.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{config, job, scratch_dir};
use kathikon_core::Jobs;
use kathikon_core::{Engine, Error, ListFilter};
use redb::{Database, TableDefinition};

/// Set for the child process of [`killed_store`].
const CHILD_STORE: &str = "KATHIKON_TEST_DAMAGED_LOG_STORE";
const CHILD_READY: &str = "KATHIKON-CHILD-INSERTED-ALL";
const JOBS: u64 = 200;

fn log_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

/// Not a test on its own: run by [`killed_store`] in a child process, which inserts the jobs
/// one call at a time, says so, and waits to be killed.
#[test]
#[ignore = "helper: runs only as the child process of killed_store"]
fn child_inserts_and_waits_to_be_killed() {
    let Ok(path) = std::env::var(CHILD_STORE) else { return };
    let engine = Engine::open(config(Path::new(&path))).unwrap();
    for _ in 0..JOBS {
        engine.insert(vec![job("q", "w")]).unwrap();
    }
    let mut out = std::io::stdout();
    writeln!(out, "{CHILD_READY}").unwrap();
    out.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(600));
}

/// The store file and its log as a child process left them when `SIGKILL`ed after inserting
/// [`JOBS`] acknowledged jobs.
fn killed_store(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let path = dir.join("killed.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_inserts_and_waits_to_be_killed", "--nocapture"])
        .env(CHILD_STORE, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.by_ref().map_while(Result::ok).any(|line| line.contains(CHILD_READY));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(ready, "the child never inserted its jobs");
    (std::fs::read(&path).unwrap(), std::fs::read(log_of(&path)).unwrap())
}

/// Write `store` and `log` (`None`: no log) as `name` in `dir` and open them; the ids of
/// the jobs, the engine closed cleanly and the files removed.
fn reopen(dir: &Path, name: &str, store: &[u8], log: Option<&[u8]>) -> Result<Vec<u64>, Error> {
    let path = dir.join(name);
    std::fs::write(&path, store).unwrap();
    let _ = std::fs::remove_file(log_of(&path));
    if let Some(log) = log {
        std::fs::write(log_of(&path), log).unwrap();
    }
    let opened = Engine::open(config(&path)).map(|engine| {
        let ids = engine.list(&ListFilter::default()).unwrap().iter().map(|j| j.id).collect();
        engine.close();
        ids
    });
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(log_of(&path));
    opened
}

/// Where each whole record of `log` starts: a 32-byte header (magic `KWAL`, checksum,
/// payload length in bytes 8..16), then the payload (see `storage/redb/wal/record.rs`).
fn record_starts(log: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = 0;
    while log.len() >= pos + 32 && &log[pos..pos + 4] == b"KWAL" {
        starts.push(pos);
        pos += 32 + u64::from_le_bytes(log[pos + 8..pos + 16].try_into().unwrap()) as usize;
    }
    starts.push(pos);
    starts
}

#[test]
fn a_log_deleted_after_a_crash_is_refused_not_read_as_empty() {
    let dir = scratch_dir();
    let (store, log) = killed_store(dir.path());
    let all: Vec<u64> = (1..=JOBS).collect();
    assert_eq!(reopen(dir.path(), "whole.redb", &store, Some(&log)).unwrap(), all);

    let err = reopen(dir.path(), "nolog.redb", &store, None).unwrap_err();
    let log_path = log_of(&dir.path().join("nolog.redb"));
    assert!(matches!(err, Error::Corrupted { job: None, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("write-ahead log {} is missing", log_path.display())), "{text}");
    assert!(text.contains("not closed cleanly"), "{text}");

    // An empty log in its place is the explicit way to open the store as of its checkpoint.
    let at_checkpoint = reopen(dir.path(), "emptylog.redb", &store, Some(b"")).unwrap();
    assert!(at_checkpoint.len() < all.len(), "the log held no jobs past the checkpoint");
    assert!(at_checkpoint.iter().zip(&all).all(|(a, b)| a == b));

    // After a clean close the log is gone and not needed: the store is one file.
    let path = dir.path().join("clean.redb");
    std::fs::write(&path, &store).unwrap();
    std::fs::write(log_of(&path), &log).unwrap();
    Engine::open(config(&path)).unwrap().close();
    assert!(!log_of(&path).exists());
    let engine = Engine::open(config(&path)).unwrap();
    assert_eq!(engine.list(&ListFilter::default()).unwrap().len(), all.len());
    engine.close();
}

#[test]
fn a_flipped_byte_in_the_log_is_recovered_exactly_as_a_torn_tail_or_refused() {
    let dir = scratch_dir();
    let (store, log) = killed_store(dir.path());
    let all: Vec<u64> = (1..=JOBS).collect();
    let starts = record_starts(&log);
    let records = starts.len() - 1;
    assert!(records >= 2, "the log holds {records} records");
    let end = *starts.last().unwrap();
    // The jobs as of the log cut at each record's start: what the records before it hold.
    let before: Vec<Vec<u64>> = starts
        .iter()
        .map(|&at| reopen(dir.path(), "cut.redb", &store, Some(&log[..at])).unwrap())
        .collect();
    assert_eq!(before[records], all);

    let log_path = log_of(&dir.path().join("flip.redb"));
    let (mut refused, mut torn) = (0, 0);
    let mut flips: Vec<usize> = (0..records)
        .flat_map(|r| {
            let (s, e) = (starts[r], starts[r + 1]);
            [s, s + 2, s + 5, s + 9, s + 17, s + 26, s + 33, usize::midpoint(s, e), e - 1]
        })
        .collect();
    flips.extend([end, end + 100, log.len() - 1]);
    for at in flips.into_iter().filter(|&at| at < log.len()) {
        let mut bad = log.clone();
        bad[at] ^= 0x5a;
        let hit = starts.iter().rposition(|&s| s <= at).unwrap();
        match reopen(dir.path(), "flip.redb", &store, Some(&bad)) {
            Ok(ids) => {
                // Only damage in the last record (or past it) can open: exactly the records
                // before the damage, as a torn last record leaves them.
                assert!(hit >= records - 1, "byte {at} of record {hit} flipped: opened {ids:?}");
                assert_eq!(ids, before[hit.min(records)], "byte {at} flipped");
                torn += 1;
            }
            Err(err) => {
                assert!(hit < records - 1, "byte {at} (last record or past it) refused: {err}");
                assert!(matches!(err, Error::Corrupted { job: None, .. }), "{err:?}");
                let text = err.to_string();
                let damaged = format!("{} is damaged at byte {}", log_path.display(), starts[hit]);
                assert!(text.contains(&damaged), "byte {at} flipped: {text}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && torn > 0, "refused {refused}, torn {torn}");
}

#[test]
fn a_store_truncated_to_nothing_is_refused_and_only_a_missing_path_is_created() {
    let dir = scratch_dir();
    let path = dir.path().join("jobs.redb");
    let engine = Engine::open(config(&path)).unwrap();
    engine.insert(vec![job("q", "w"), job("q", "w")]).unwrap();
    engine.close();
    std::fs::File::create(&path).unwrap(); // truncates the closed store to 0 bytes
    let err = Engine::open(config(&path)).unwrap_err();
    assert!(matches!(err, Error::Corrupted { job: None, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("empty"), "{text}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the empty file was changed");

    // A missing path is a new store, made whole under another name and linked into place:
    // nothing is left beside it.
    std::fs::remove_file(&path).unwrap();
    let engine = Engine::open(config(&path)).unwrap();
    assert!(engine.list(&ListFilter::default()).unwrap().is_empty());
    engine.close();
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["jobs.redb"], "{names:?}");
}

#[test]
fn a_store_from_before_the_log_mark_opens_without_its_log_as_before() {
    let dir = scratch_dir();
    let (store, _) = killed_store(dir.path());
    // The killed store with its `log_open` key removed, as older Kathikon wrote it.
    let path = dir.path().join("old.redb");
    std::fs::write(&path, &store).unwrap();
    {
        const META: TableDefinition<&str, u64> = TableDefinition::new("kathikon_meta");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().remove("log_open").unwrap().expect("the store has the key");
        txn.commit().unwrap();
    }
    let engine = Engine::open(config(&path)).unwrap();
    engine.list(&ListFilter::default()).unwrap();
    engine.close();
}
