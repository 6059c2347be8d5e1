//! Helpers shared by the integration tests: engines on real store files, job builders, clocks.
#![allow(dead_code)] // every test binary uses its own subset of these helpers

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kathikon_core::clock::{ManualClock, SECOND};
use kathikon_core::{Ack, AckResult, Engine, EngineConfig, Job, Micros, NewJob, Outcome};

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
    }
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
pub fn insert_one(engine: &Engine, new: NewJob) -> Job {
    let mut jobs = engine.insert(vec![new]).expect("insert");
    assert_eq!(jobs.len(), 1);
    jobs.remove(0)
}

/// Claim exactly one job from `queue`, which must have one ready.
pub fn claim_one(engine: &Engine, queue: &str) -> Job {
    let mut jobs = engine.claim(queue, 1, Duration::ZERO).expect("claim");
    assert_eq!(jobs.len(), 1, "expected a job ready in queue {queue:?}");
    jobs.remove(0)
}

/// Report `outcome` for `job`'s current attempt; the ack must apply.
pub fn finish(engine: &Engine, job: &Job, outcome: Outcome) -> Job {
    let mut results =
        engine.ack(vec![Ack { id: job.id, attempt: job.attempt, outcome }]).expect("ack");
    assert_eq!(results.len(), 1);
    match results.remove(0) {
        AckResult::Applied(job) => job,
        AckResult::Stale(state) => panic!("ack of job {} was stale (found {state:?})", job.id),
    }
}
