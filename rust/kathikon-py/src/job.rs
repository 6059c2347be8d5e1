//! `JobRecord`: a stored job handed to Python. Fields are converted only when read.

use kathikon_core::Job;
use pyo3::prelude::*;

/// A job as stored. Times are microseconds since the Unix epoch (UTC); the Python `Job`
/// wrapper turns them into aware datetimes and parses the JSON.
#[pyclass(frozen, module = "kathikon._native", name = "JobRecord")]
pub(crate) struct PyJobRecord {
    pub(crate) inner: Job,
}

#[pymethods]
impl PyJobRecord {
    #[getter]
    fn id(&self) -> u64 {
        self.inner.id
    }
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.as_str()
    }
    #[getter]
    fn queue(&self) -> &str {
        &self.inner.queue
    }
    #[getter]
    fn worker(&self) -> &str {
        &self.inner.worker
    }
    #[getter]
    fn args_json(&self) -> &str {
        &self.inner.args
    }
    #[getter]
    fn meta_json(&self) -> &str {
        &self.inner.meta
    }
    #[getter]
    fn tags(&self) -> Vec<String> {
        self.inner.tags.clone()
    }
    #[getter]
    fn attempt(&self) -> u32 {
        self.inner.attempt
    }
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }
    #[getter]
    fn priority(&self) -> u8 {
        self.inner.priority
    }
    /// `(at, attempt, error)` per entry, oldest first.
    #[getter]
    fn errors(&self) -> Vec<(i64, u32, String)> {
        self.inner.errors.iter().map(|e| (e.at, e.attempt, e.error.clone())).collect()
    }
    #[getter]
    fn inserted_at(&self) -> i64 {
        self.inner.inserted_at
    }
    #[getter]
    fn scheduled_at(&self) -> i64 {
        self.inner.scheduled_at
    }
    #[getter]
    fn attempted_at(&self) -> Option<i64> {
        self.inner.attempted_at
    }
    #[getter]
    fn completed_at(&self) -> Option<i64> {
        self.inner.completed_at
    }
    #[getter]
    fn cancelled_at(&self) -> Option<i64> {
        self.inner.cancelled_at
    }
    #[getter]
    fn discarded_at(&self) -> Option<i64> {
        self.inner.discarded_at
    }

    fn __repr__(&self) -> String {
        format!(
            "JobRecord(id={}, state={}, queue={:?}, worker={:?}, attempt={}/{})",
            self.inner.id,
            self.inner.state,
            self.inner.queue,
            self.inner.worker,
            self.inner.attempt,
            self.inner.max_attempts
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJobRecord>()
}
