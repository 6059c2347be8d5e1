//! Proves what a really full disk does: on a small tmpfs, inserts with big args go on until
//! one fails; that insert returns `Error::Storage` naming ENOSPC ("No space left on device"),
//! the engine then refuses further writes with a message saying to reopen, nothing
//! acknowledged is lost, the failed batch is all there or all absent, and once space returns
//! (a 2 MiB filler file made beforehand on the 6 MiB disk is deleted) the store reopens and work goes on: every job,
//! old and new, is claimed and completed.
//!
//! Mounting needs root (mount(2) with `CAP_SYS_ADMIN`). The test runs itself again in a private
//! mount namespace (`unshare --mount`) when it can, so the tmpfs vanishes with that process
//! even if it is killed; either way a guard unmounts it when the test ends or panics. Without
//! the permission to mount, the test says why and passes without running.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{config, job, snapshot};
use kathikon_core::Jobs;
use kathikon_core::{Ack, Engine, Error, Job, JobState, ListFilter, NewJob, Outcome};

/// Set in the child process that runs the body inside its own mount namespace.
const IN_NAMESPACE: &str = "KATHIKON_TEST_DISK_FULL_CHILD";
const TEST_NAME: &str = "a_full_disk_fails_an_insert_cleanly_and_work_continues_once_space_returns";

/// A tmpfs mounted on a fresh temporary directory; unmounted (lazily, if it is busy) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "kathikon-test"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount(8): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount(2) of a tmpfs not permitted here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path();
        let ok = Command::new("umount").arg(path).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(path).status();
        }
    }
}

#[test]
fn a_full_disk_fails_an_insert_cleanly_and_work_continues_once_space_returns() {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return full_disk_scenario();
    }
    // Run in a private mount namespace, where no mount can outlive the process.
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output();
    match child {
        Ok(out) if out.status.success() => {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("unshare failed") => {
            // No namespaces (no CAP_SYS_ADMIN, or a seccomp filter): mount here, with the guard.
            eprintln!("unshare(2) refused; running without a private mount namespace");
            full_disk_scenario();
        }
        Ok(out) => panic!(
            "the scenario failed in its mount namespace ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("unshare(1) not available ({e}); running without a private mount namespace");
            full_disk_scenario();
        }
    }
}

/// A job whose args are about `pad` bytes, tagged with `n` so every record differs.
fn big_job(n: usize, pad: usize) -> NewJob {
    let filler: String = (0..pad).map(|i| char::from(b'a' + ((i * 7 + n) % 26) as u8)).collect();
    NewJob { args: format!("{{\"n\":{n},\"pad\":\"{filler}\"}}"), ..job("fill", "w") }
}

fn assert_no_space(err: &Error, what: &str) {
    assert!(
        matches!(err, Error::Storage(_) | Error::CommitFailed { .. } | Error::WriterStopped { .. }),
        "{what}: expected a storage error, got {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("No space left on device (os error 28)"),
        "{what}: ENOSPC not named: {text}"
    );
    assert!(text.contains("the disk is full"), "{what}: {text}");
}

fn full_disk_scenario() {
    let disk = match Tmpfs::mount("6m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED {TEST_NAME}: {why}");
            return;
        }
    };
    // Space to give back later, taken before the store can have it.
    let filler: PathBuf = disk.path().join("filler");
    std::fs::write(&filler, vec![0xA5_u8; 2 * 1024 * 1024]).unwrap();
    let path = disk.path().join("jobs.redb");

    let engine = Engine::open(config(&path)).unwrap();
    let mut acknowledged: Vec<Job> = Vec::new();
    let mut n = 0;
    let error = loop {
        assert!(n < 100_000, "a 6 MiB disk never filled up");
        let batch: Vec<NewJob> = (n..n + 4).map(|i| big_job(i, 16 * 1024)).collect();
        n += 4;
        match engine.insert(batch) {
            Ok(jobs) => acknowledged.extend(jobs),
            Err(err) => break err,
        }
    };
    assert_no_space(&error, "the insert that found the disk full");
    let failed_ids: Vec<u64> = (1..=4).map(|i| acknowledged.last().unwrap().id + i).collect();
    eprintln!(
        "disk full after {} acknowledged jobs ({} batches, store file {} KiB); the error: {error}",
        acknowledged.len(),
        acknowledged.len() / 4,
        std::fs::metadata(&path).unwrap().len() / 1024
    );

    // The engine stops writing, and says why and what to do. Reads either still show every
    // acknowledged job or refuse the same way (when the failed commit was the one that would
    // have made the latest acknowledged batches visible): never a state missing one.
    let refused = engine.insert(vec![job("q", "w")]).unwrap_err();
    assert_no_space(&refused, "an insert after the failure");
    assert!(refused.to_string().contains("close the app and open it again"), "{refused}");
    assert!(engine.claim("fill", 1, Duration::ZERO).is_err());
    match engine.list(&ListFilter::default()) {
        Ok(jobs) => {
            let seen: HashSet<u64> = jobs.iter().map(|j| j.id).collect();
            assert!(
                acknowledged.iter().all(|j| seen.contains(&j.id)),
                "an acknowledged job hidden"
            );
        }
        Err(err) => {
            assert!(err.to_string().contains("close the app and open it again"), "{err}");
        }
    }
    engine.close();
    drop(engine);

    // Still full: the store opens or refuses with the same clear error; an insert then either
    // fits (freed pages can be reused) and is acknowledged, or fails the same way.
    let mut extra: Vec<Job> = Vec::new();
    match Engine::open(config(&path)) {
        Ok(engine) => match engine.insert(vec![big_job(0, 16 * 1024)]) {
            Ok(jobs) => extra = jobs,
            Err(err) => assert_no_space(&err, "an insert on a reopened full disk"),
        },
        Err(err) => assert_no_space(&err, "an open on a full disk"),
    }

    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    let engine = Engine::open(config(&path)).expect("the store opens once space returns");
    let all = engine.list(&ListFilter::default()).unwrap();
    // The failed batch's records, told apart from the extra job by their args.
    let from_failed_batch = |j: &&Job| failed_ids.contains(&j.id) && !extra.contains(j);
    let partial = all.iter().filter(from_failed_batch).count();
    assert!(partial == 0 || partial == 4, "the failed batch is half there: {partial} of 4");
    // Every acknowledged job is there exactly as acknowledged.
    let kept: Vec<&Job> = all.iter().filter(|j| !from_failed_batch(j)).collect();
    let expected: Vec<&Job> = acknowledged.iter().chain(&extra).collect();
    assert_eq!(kept, expected, "acknowledged jobs lost or changed");
    eprintln!(
        "after space returned: {} acknowledged jobs intact, failed batch {}",
        expected.len(),
        if partial == 0 { "absent" } else { "present in full" }
    );
    let before = snapshot(&engine); // also checks the indexes agree with the records

    // Work goes on: more inserts, then every job is claimed and completed.
    let more = engine.insert((0..8).map(|i| big_job(1_000_000 + i, 1024)).collect()).unwrap();
    assert!(more[0].id > all.last().unwrap().id, "ids are reused");
    let mut completed = 0;
    loop {
        let claimed = engine.claim("fill", 16, Duration::ZERO).unwrap();
        if claimed.is_empty() {
            break;
        }
        let acks: Vec<Ack> = claimed
            .iter()
            .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
            .collect();
        completed += engine.ack(acks).unwrap().len();
    }
    assert_eq!(completed, before.jobs.len() + more.len());
    let done = ListFilter { state: Some(JobState::Completed), ..ListFilter::default() };
    assert_eq!(engine.list(&done).unwrap().len(), completed);
    // And the finished jobs can be pruned to make room for good.
    assert_eq!(engine.prune(Duration::ZERO).unwrap(), completed as u64);
    engine.close();
}
