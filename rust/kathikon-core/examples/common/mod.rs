//! What the profiling examples share.
use kathikon_core::NewJob;

/// A no-op job for queue `default`, as the Python bench inserts it.
pub fn noop_job() -> NewJob {
    NewJob {
        queue: "default".into(),
        worker: "bench.noop".into(),
        args: "{}".into(),
        meta: "{}".into(),
        tags: vec![],
        max_attempts: 20,
        priority: 0,
        scheduled_at: None,
        unique: None,
        batch: None,
    }
}
