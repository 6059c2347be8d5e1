//! Proves that a job record damaged on disk (one that no longer decodes, or fails its
//! checksum) is moved aside instead of poisoning the store: the rest keeps working, and the
//! record is kept in the quarantine table under its id with the reason, reported by `get`,
//! `Engine::quarantined` and a telemetry event. Each test writes a real store, closes it,
//! damages one record's bytes in the file through redb (so redb's page checksums stay valid
//! and only Kathikon's record checksum can tell), and reopens it.
//!
//! Before quarantining, a damaged scheduled or retryable job failed every writer batch (the
//! scheduler promotion met it each time): `a_damaged_due_job_no_longer_blocks_every_write`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{claim_one, finish, insert_one, job, open, open_manual, snapshot, store_path, T0};
use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::Jobs;
use kathikon_core::{EngineEvent, Error, JobState, ListFilter, NewJob, Outcome};
use redb::{Database, ReadableDatabase, TableDefinition};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");

/// Flip one bit in the middle of job `id`'s stored record, writing through redb (a bit rotted
/// inside the record, everything around it intact). Returns the damaged bytes.
fn damage_record(path: &Path, id: u64) -> Vec<u8> {
    let db = Database::create(path).unwrap();
    let mut bytes = {
        let txn = db.begin_read().unwrap();
        let jobs = txn.open_table(JOBS).unwrap();
        let bytes = jobs.get(id).unwrap().expect("the record").value().to_vec();
        bytes
    };
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    let txn = db.begin_write().unwrap();
    txn.open_table(JOBS).unwrap().insert(id, bytes.as_slice()).unwrap();
    txn.commit().unwrap();
    bytes
}

fn scheduled(queue: &str, at: i64) -> NewJob {
    NewJob { scheduled_at: Some(at), ..job(queue, "w") }
}

/// What `get` says about a quarantined job: `Corrupted`, naming the file, the job and why.
fn assert_reported_quarantined(err: &Error, path: &Path, id: u64) {
    let Error::Corrupted { path: reported, detail, .. } = err else {
        panic!("expected Corrupted, got {err:?}");
    };
    assert_eq!(reported, path);
    assert!(
        detail.starts_with(&format!(
            "job {id}'s record was damaged and was moved to the quarantine table"
        )),
        "{detail}"
    );
    assert!(detail.contains("checksum mismatch"), "{detail}");
}

#[test]
fn a_damaged_due_job_no_longer_blocks_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let clock = Arc::new(ManualClock::new(T0));
    let (bad, later, ready) = {
        let engine = open_manual(Some(&path), &clock);
        let bad = insert_one(&engine, scheduled("q", T0 + 10 * SECOND));
        let later = insert_one(&engine, scheduled("q", T0 + 20 * SECOND));
        let ready = insert_one(&engine, job("q", "w"));
        engine.close();
        (bad, later, ready)
    };
    let damaged = damage_record(&path, bad.id);

    let engine = open_manual(Some(&path), &clock);
    engine.set_events(true);
    clock.advance(30 * SECOND);
    // The batch that promotes due jobs meets the damaged one: it must still commit.
    engine.sync().expect("a batch promoting past a damaged record commits");
    let inserted = insert_one(&engine, job("q", "w"));
    let mut claimed: Vec<u64> =
        engine.claim("q", 10, Duration::ZERO).unwrap().iter().map(|j| j.id).collect();
    claimed.sort_unstable();
    assert_eq!(claimed, vec![later.id, ready.id, inserted.id], "the healthy jobs all run");

    assert_reported_quarantined(&engine.get(bad.id).unwrap_err(), &path, bad.id);
    let quarantined = engine.quarantined().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].id, bad.id);
    assert_eq!(quarantined[0].bytes, damaged, "the bytes are kept as found");
    assert!(quarantined[0].reason.contains("checksum mismatch"), "{}", quarantined[0].reason);
    let events = engine.next_events(Duration::from_secs(1));
    assert!(
        events.iter().any(|e| matches!(e, EngineEvent::Quarantined { id, reason }
            if *id == bad.id && reason.contains("checksum mismatch"))),
        "{events:?}"
    );
    // Counts and claim queues agree with the records: the damaged job is counted nowhere.
    let shown = snapshot(&engine);
    assert_eq!(shown.counts.values().sum::<u64>(), 3);
    assert!(shown.jobs.iter().all(|j| j.id != bad.id));
    engine.close();

    // It stays aside after a reopen, and the store stays consistent.
    let engine = open_manual(Some(&path), &clock);
    assert_reported_quarantined(&engine.get(bad.id).unwrap_err(), &path, bad.id);
    assert_eq!(engine.quarantined().unwrap().len(), 1);
    snapshot(&engine);
}

#[test]
fn a_damaged_available_job_is_skipped_by_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let (bad, good) = {
        let engine = open(&path);
        (insert_one(&engine, job("q", "w")), insert_one(&engine, job("q", "w")))
    };
    damage_record(&path, bad.id);
    let engine = open(&path);
    let claimed = engine.claim("q", 5, Duration::ZERO).unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![good.id]);
    finish(&engine, &claimed[0], Outcome::Complete);
    assert_eq!(
        engine.quarantined().unwrap().iter().map(|q| q.id).collect::<Vec<_>>(),
        vec![bad.id]
    );
    snapshot(&engine);
}

#[test]
fn a_damaged_executing_job_is_quarantined_by_the_rescue_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let (bad, good) = {
        let engine = open(&path);
        insert_one(&engine, job("q", "w"));
        insert_one(&engine, job("q", "w"));
        let bad = claim_one(&engine, "q");
        let good = claim_one(&engine, "q");
        (bad, good) // closed with both executing, as a dead process leaves them
    };
    damage_record(&path, bad.id);
    let engine = open(&path);
    assert_eq!(engine.recovery().rescued, 1, "the healthy executing job is rescued");
    assert_eq!(engine.get(good.id).unwrap().state, JobState::Available);
    assert_reported_quarantined(&engine.get(bad.id).unwrap_err(), &path, bad.id);
    // An ack for the quarantined job's attempt is stale, not a batch failure.
    let results = engine
        .ack(vec![kathikon_core::Ack {
            id: bad.id,
            attempt: bad.attempt,
            outcome: Outcome::Complete,
        }])
        .unwrap();
    assert_eq!(results, vec![kathikon_core::AckResult::Stale(None)]);
    snapshot(&engine);
}

#[test]
fn cancel_and_retry_of_a_damaged_job_say_so_and_change_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let (bad, other) = {
        let engine = open(&path);
        let bad = insert_one(&engine, job("q", "w"));
        let other = insert_one(&engine, job("q", "w"));
        let claimed = claim_one(&engine, "q");
        finish(&engine, &claimed, Outcome::Discard { reason: "x".into() });
        (bad, other)
    };
    damage_record(&path, bad.id);
    let engine = open(&path);
    assert_reported_quarantined(&engine.cancel(bad.id).unwrap_err(), &path, bad.id);
    assert_reported_quarantined(&engine.retry(bad.id).unwrap_err(), &path, bad.id);
    assert!(matches!(engine.cancel(999), Err(Error::JobNotFound(999))));
    assert_eq!(engine.get(other.id).unwrap().state, JobState::Available);
    snapshot(&engine);
}

#[test]
fn list_get_and_prune_move_a_damaged_record_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let ids = {
        let engine = open(&path);
        let ids: Vec<u64> = (0..4).map(|_| insert_one(&engine, job("q", "w")).id).collect();
        for _ in 0..4 {
            let j = claim_one(&engine, "q");
            finish(&engine, &j, Outcome::Complete);
        }
        ids
    };
    // list
    damage_record(&path, ids[0]);
    let engine = open(&path);
    let listed: Vec<u64> =
        engine.list(&ListFilter::default()).unwrap().iter().map(|j| j.id).collect();
    assert_eq!(listed, ids[1..].to_vec(), "list leaves the damaged record out");
    engine.sync().unwrap(); // the writer has moved it aside by now
    assert_eq!(engine.quarantined().unwrap()[0].id, ids[0]);
    snapshot(&engine);
    engine.close();
    // get: reports the damage at once, and has it moved aside
    damage_record(&path, ids[1]);
    let engine = open(&path);
    let err = engine.get(ids[1]).unwrap_err();
    assert!(
        err.to_string().contains(&format!("job {}: record checksum mismatch", ids[1])),
        "{err}"
    );
    engine.sync().unwrap();
    assert_reported_quarantined(&engine.get(ids[1]).unwrap_err(), &path, ids[1]);
    engine.close();
    // prune
    damage_record(&path, ids[2]);
    let engine = open(&path);
    assert_eq!(engine.prune(Duration::ZERO).unwrap(), 1, "the healthy finished job is pruned");
    let aside: Vec<u64> = engine.quarantined().unwrap().iter().map(|q| q.id).collect();
    assert_eq!(aside, ids[..3].to_vec());
    assert_eq!(engine.list(&ListFilter::default()).unwrap(), vec![]);
    snapshot(&engine);
}
