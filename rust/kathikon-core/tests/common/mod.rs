//! Helpers shared by the integration tests: engines on real store files, job builders, clocks.
#![allow(dead_code)] // every test binary uses its own subset of these helpers

pub mod faulty;
#[cfg(feature = "postgres")]
pub mod pg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::Jobs;
use kathikon_core::{
    Ack, AckResult, Engine, EngineConfig, Job, JobState, ListFilter, Micros, NewJob, Outcome,
};

/// Wait (up to 60 s) until `done` holds; fail naming `what` if it never does.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fixed, realistic start time for manual clocks (2023-11-14T22:13:20Z).
pub const T0: Micros = 1_700_000_000 * SECOND;

/// A valid job for `queue`, run by `worker`, with three attempts and priority 0, due now.
pub fn job(queue: &str, worker: &str) -> NewJob {
    NewJob {
        queue: queue.into(),
        worker: worker.into(),
        args: "{}".into(),
        meta: "{}".into(),
        tags: Vec::new(),
        max_attempts: 3,
        priority: 0,
        scheduled_at: None,
        unique: None,
        batch: None,
    }
}

/// A scratch directory for a test's stores: on /dev/shm when there is one, since tests that
/// open hundreds of stores would otherwise spend their time waiting for real fsyncs.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// The store file inside `dir`.
pub fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("jobs.redb")
}

/// Default settings on the store file at `path`.
pub fn config(path: &Path) -> EngineConfig {
    EngineConfig { path: Some(path.to_path_buf()), ..EngineConfig::default() }
}

/// Open the store file at `path` with default settings.
pub fn open(path: &Path) -> Engine {
    Engine::open(config(path)).expect("open the store")
}

/// An engine (on `path`, or in memory) whose time is `clock`; the writer looks at the clock
/// every 20 ms so moving it takes effect quickly.
pub fn open_manual(path: Option<&Path>, clock: &Arc<ManualClock>) -> Engine {
    Engine::open(EngineConfig {
        path: path.map(Path::to_path_buf),
        scheduler_interval: Duration::from_millis(20),
        clock: clock.clone(),
        ..EngineConfig::default()
    })
    .expect("open the store")
}

/// Insert one job and return it as stored.
pub fn insert_one(engine: &dyn Jobs, new: NewJob) -> Job {
    let mut jobs = engine.insert(vec![new]).expect("insert");
    assert_eq!(jobs.len(), 1);
    jobs.remove(0)
}

/// Claim exactly one job from `queue`, which must have one ready.
pub fn claim_one(engine: &dyn Jobs, queue: &str) -> Job {
    let mut jobs = engine.claim(queue, 1, Duration::ZERO).expect("claim");
    assert_eq!(jobs.len(), 1, "expected a job ready in queue {queue:?}");
    jobs.remove(0)
}

/// Report `outcome` for `job`'s current attempt; the ack must apply.
pub fn finish(engine: &dyn Jobs, job: &Job, outcome: Outcome) -> Job {
    let mut results =
        engine.ack(vec![Ack { id: job.id, attempt: job.attempt, outcome }]).expect("ack");
    assert_eq!(results.len(), 1);
    match results.remove(0) {
        AckResult::Applied(job) => job,
        AckResult::Stale(state) => panic!("ack of job {} was stale (found {state:?})", job.id),
    }
}

/// Claim up to `per_claim` jobs of `queue` at a time and complete them, until a claim finds
/// none ready; returns how many this call completed.
#[allow(dead_code)] // not every test binary that includes this module drains
pub fn complete_all(store: &dyn Jobs, queue: &str, per_claim: usize) -> usize {
    let mut done = 0;
    loop {
        let claimed = store.claim(queue, per_claim, Duration::ZERO).expect("claim");
        if claimed.is_empty() {
            return done;
        }
        done += claimed.len();
        let acks = claimed
            .iter()
            .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
            .collect();
        store.ack(acks).expect("ack");
    }
}

/// Everything a reader can see of a store, to compare two stores or one store before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every job, in id order.
    pub jobs: Vec<Job>,
    /// The stored counts per `(queue, state)`.
    pub counts: BTreeMap<(String, JobState), u64>,
    /// Jobs ready to claim per queue (the in-memory claim queues).
    pub ready: BTreeMap<String, usize>,
}

/// What `engine` shows, after checking that its indexes agree with its records: the stored
/// counts equal a tally of the jobs, and each claim queue holds exactly its available jobs.
/// Those are written in the same transaction as the records, so a half-written batch shows
/// up here as a mismatch.
pub fn snapshot(engine: &dyn Jobs) -> Snapshot {
    let jobs = engine.list(&ListFilter::default()).expect("list every job");
    let mut tally: BTreeMap<(String, JobState), u64> = BTreeMap::new();
    let mut available: BTreeMap<String, usize> = BTreeMap::new();
    for j in &jobs {
        *tally.entry((j.queue.clone(), j.state)).or_default() += 1;
        if j.state == JobState::Available {
            *available.entry(j.queue.clone()).or_default() += 1;
        }
    }
    let counts: BTreeMap<(String, JobState), u64> =
        engine.counts().expect("counts").into_iter().map(|(q, s, n)| ((q, s), n)).collect();
    assert_eq!(counts, tally, "the stored counts disagree with the jobs");
    let mut ready = BTreeMap::new();
    for queue in jobs.iter().map(|j| j.queue.clone()) {
        let n = engine.ready_count(&queue).expect("ready count");
        assert_eq!(
            n,
            available.get(&queue).copied().unwrap_or(0),
            "claim queue {queue:?} disagrees with its available jobs"
        );
        ready.insert(queue, n);
    }
    Snapshot { jobs, counts, ready }
}

/// Read the closed store at `path` with redb directly and check that its index tables hold
/// exactly the entries its job records call for: one per job, in the table of its state
/// (`available`, `due`, `executing` or `finished`), one more in `failed` for a retryable,
/// cancelled or discarded job, and nothing else. The table layout is
/// written out here on purpose, apart from the engine's own, so the check does not share
/// the code it checks.
pub fn assert_indexes_match_records(path: &Path) {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
    const AVAILABLE: TableDefinition<(&str, u8, i64, u64), ()> = TableDefinition::new("available");
    const DUE: TableDefinition<(i64, u64), ()> = TableDefinition::new("due");
    const EXECUTING: TableDefinition<u64, ()> = TableDefinition::new("executing");
    const FINISHED: TableDefinition<(i64, u64), ()> = TableDefinition::new("finished");
    const FAILED: TableDefinition<(&str, u8, u64), ()> = TableDefinition::new("failed");

    type Entries = (Vec<(String, u8, i64, u64)>, Vec<(i64, u64)>, Vec<u64>, Vec<(i64, u64)>);
    let db = redb::Database::open(path).expect("open the closed store with redb");
    let txn = db.begin_read().expect("read transaction");
    let mut expected: Entries = Default::default();
    let mut expected_failed: Vec<(String, u8, u64)> = Vec::new();
    let jobs = txn.open_table(JOBS).expect("jobs");
    for entry in jobs.iter().expect("iterate jobs") {
        let (id, bytes) = entry.expect("a jobs entry");
        let job = kathikon_core::storage::decode_record(id.value(), bytes.value()).expect("decode");
        if matches!(job.state, JobState::Retryable | JobState::Cancelled | JobState::Discarded) {
            expected_failed.push((job.queue.clone(), job.state as u8, job.id));
        }
        match job.state {
            JobState::Available => {
                expected.0.push((job.queue.clone(), job.priority, job.scheduled_at, job.id));
            }
            JobState::Scheduled | JobState::Retryable => {
                expected.1.push((job.scheduled_at, job.id));
            }
            JobState::Executing => expected.2.push(job.id),
            _ => expected.3.push((job.finished_at().expect("finished_at"), job.id)),
        }
    }
    let mut found: Entries = Default::default();
    let available = txn.open_table(AVAILABLE).expect("available");
    for e in available.iter().expect("iterate") {
        let key = e.expect("entry").0;
        let (q, p, t, id) = key.value();
        found.0.push((q.to_string(), p, t, id));
    }
    let due = txn.open_table(DUE).expect("due");
    for e in due.iter().expect("iterate") {
        found.1.push(e.expect("entry").0.value());
    }
    let executing = txn.open_table(EXECUTING).expect("executing");
    for e in executing.iter().expect("iterate") {
        found.2.push(e.expect("entry").0.value());
    }
    let finished = txn.open_table(FINISHED).expect("finished");
    for e in finished.iter().expect("iterate") {
        found.3.push(e.expect("entry").0.value());
    }
    let mut found_failed = Vec::new();
    let failed = txn.open_table(FAILED).expect("failed");
    for e in failed.iter().expect("iterate") {
        let key = e.expect("entry").0;
        let (q, s, id) = key.value();
        found_failed.push((q.to_string(), s, id));
    }
    expected_failed.sort();
    assert_eq!(found_failed, expected_failed, "the failed index disagrees with the job records");
    expected.0.sort();
    expected.1.sort_unstable();
    expected.2.sort_unstable();
    expected.3.sort_unstable();
    assert_eq!(
        found, expected,
        "index tables (available, due, executing, finished) disagree with the job records"
    );
}

/// Every job in `store` (in id order) and its counts per queue and state, as a reader sees
/// them; no record may be damaged.
pub fn store_contents(
    store: &kathikon_core::storage::RedbStore,
) -> (Vec<Job>, Vec<(String, JobState, u64)>) {
    use kathikon_core::storage::Store;
    let mut out = (Vec::new(), Vec::new());
    store
        .read(&mut |txn| {
            let mut damaged = Vec::new();
            out.0.clear();
            txn.scan(
                None,
                &mut |j| {
                    out.0.push(j);
                    true
                },
                &mut damaged,
            )?;
            assert!(damaged.is_empty(), "damaged records: {damaged:?}");
            out.1 = txn.counts()?;
            Ok(())
        })
        .expect("read the store");
    out
}
