//! Proves the engine refuses store files it must not use, with the right error and without changing them: a path already open in this process or held by another process (`StorageLocked`), garbage bytes or a foreign redb database (`NotAStore`), an empty file (`Corrupted`: a store cut to nothing), a store from a newer format (`FormatTooNew`), and a damaged record (`Corrupted`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{config, insert_one, job, open, store_path};
use kathikon_core::storage::FORMAT_VERSION;
use kathikon_core::Jobs;
use kathikon_core::{Engine, Error, ListFilter};
use redb::{Database, ReadableDatabase, TableDefinition};

const USERS: TableDefinition<&str, u64> = TableDefinition::new("users");
/// Kathikon's own tables, as a foreign writer would see them.
const META: TableDefinition<&str, u64> = TableDefinition::new("kathikon_meta");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");

/// Set for the child process of [`a_store_held_by_another_process_is_locked`].
const CHILD_STORE: &str = "KATHIKON_TEST_HOLDER_STORE";
const CHILD_READY: &str = "KATHIKON-CHILD-HOLDS-THE-STORE";

#[test]
fn a_second_open_in_this_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let first = open(&path);
    let job = insert_one(&first, job("q", "w"));

    let err = Engine::open(config(&path)).unwrap_err();
    let Error::StorageLocked { path: reported, holder, same_process } = &err else {
        panic!("expected StorageLocked, got {err:?}");
    };
    assert!(*same_process);
    assert_eq!(*holder, Some(std::process::id()));
    assert_eq!(reported, &path);
    assert!(err.to_string().contains("already open in this process"), "{err}");
    // Spelled differently, it is still this process's store.
    let relative = dir.path().join(".").join("jobs.redb");
    assert!(matches!(
        Engine::open(config(&relative)),
        Err(Error::StorageLocked { same_process: true, .. })
    ));

    // The refused open did not disturb the first engine, and closing it frees the path.
    assert_eq!(first.get(job.id).unwrap(), job);
    first.close();
    let second = open(&path);
    assert_eq!(second.get(job.id).unwrap(), job);
}

#[test]
fn a_second_open_through_another_spelling_is_refused_as_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let _first = open(&path);
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let dotdot = sub.join("..").join("jobs.redb");
    let link = dir.path().join("link.redb");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    for other in [dotdot, link] {
        let err = Engine::open(config(&other)).unwrap_err();
        assert!(
            matches!(err, Error::StorageLocked { same_process: true, .. }),
            "{}: {err:?}: {err}",
            other.display()
        );
    }
}

/// Not a test on its own: run by [`a_store_held_by_another_process_is_locked`] in a child
/// process, which holds the store open until its stdin closes.
#[test]
#[ignore = "helper: runs only as the child process of a_store_held_by_another_process_is_locked"]
fn child_holds_the_store() {
    let Ok(path) = std::env::var(CHILD_STORE) else { return };
    let engine = Engine::open(config(Path::new(&path))).unwrap();
    insert_one(&engine, job("q", "w"));
    let mut out = std::io::stdout();
    writeln!(out, "{CHILD_READY}").unwrap();
    out.flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    engine.close();
}

#[test]
fn a_store_held_by_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_holds_the_store", "--test-threads=1", "--nocapture"])
        .env(CHILD_STORE, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.by_ref().map_while(Result::ok).any(|line| line.contains(CHILD_READY)),
        "the child never opened the store"
    );

    let err = Engine::open(config(&path)).unwrap_err();
    let result = match &err {
        Error::StorageLocked { same_process: false, holder, .. } => Ok(*holder),
        _ => Err(format!("{err:?}")),
    };
    drop(child.stdin.take()); // lets the child close and exit
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    assert_eq!(result, Ok(Some(child.id())), "{err}");
    assert!(err.to_string().contains(&format!("held by another process (pid {})", child.id())));

    // Once the other process is gone, the store opens and has its job.
    let engine = open(&path);
    assert_eq!(engine.list(&ListFilter::default()).unwrap().len(), 1);
}

#[test]
fn garbage_bytes_are_not_a_store_and_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let garbage: Vec<u8> = b"these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    for _ in 0..2 {
        // Twice: a refused open must not leave the path registered as open.
        let err = Engine::open(config(&path)).unwrap_err();
        assert!(matches!(&err, Error::NotAStore { path: p, .. } if p == &path), "{err:?}");
        assert!(err.to_string().contains("is not a Kathikon store"), "{err}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the refused file was modified");
}

#[test]
fn a_redb_database_with_other_tables_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(USERS).unwrap().insert("alice", 42).unwrap();
        txn.commit().unwrap();
    }
    let err = Engine::open(config(&path)).unwrap_err();
    let Error::NotAStore { path: reported, detail } = &err else {
        panic!("expected NotAStore, got {err:?}");
    };
    assert_eq!(reported, &path);
    assert!(detail.contains("users"), "{detail}");

    // Kathikon added nothing to the foreign database.
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let names: Vec<String> =
        txn.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_string()).collect();
    assert_eq!(names, vec!["users".to_string()]);
    assert_eq!(txn.open_table(USERS).unwrap().get("alice").unwrap().unwrap().value(), 42);
}

#[test]
fn an_empty_file_is_refused_as_damaged_not_made_a_new_store() {
    // A store cut to 0 bytes must not open as a new, empty one (issue #23); only a missing
    // path is created.
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    std::fs::write(&path, b"").unwrap();
    let err = Engine::open(config(&path)).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("the file is empty (0 bytes)"), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    std::fs::remove_file(&path).unwrap();
    let engine = open(&path);
    assert_eq!(insert_one(&engine, job("q", "w")).id, 1);
}

#[test]
fn a_store_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let job = insert_one(&open(&path), job("q", "w"));
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format_version", FORMAT_VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    let err = Engine::open(config(&path)).unwrap_err();
    assert!(
        matches!(&err, Error::FormatTooNew { found, supported, .. }
            if *found == FORMAT_VERSION + 1 && *supported == FORMAT_VERSION),
        "{err:?}"
    );
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format_version", FORMAT_VERSION).unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(open(&path).get(job.id).unwrap(), job);
}

#[test]
fn a_damaged_record_is_reported_as_corrupted_with_the_store_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let job = insert_one(&open(&path), job("q", "w"));
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let bytes: &[u8] = &[FORMAT_VERSION as u8, 0xff, 0xff, 0xff];
        txn.open_table(JOBS).unwrap().insert(job.id, bytes).unwrap();
        txn.commit().unwrap();
    }
    let engine = open(&path);
    let err = engine.get(job.id).unwrap_err();
    let Error::Corrupted { path: reported, detail, .. } = &err else {
        panic!("expected Corrupted, got {err:?}");
    };
    assert_eq!(reported, &path);
    assert!(detail.contains(&format!("job {}", job.id)), "{detail}");
    // `list` leaves it out (and has it moved to the quarantine table: tests/quarantine.rs).
    assert_eq!(engine.list(&ListFilter::default()).unwrap(), vec![]);
}
