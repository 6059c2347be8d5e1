//! `kathikon.Job`, the stored job users see, and `kathikon.JobSpec`, an unsaved one.
//!
//! Both are Rust classes rather than Python wrappers around one: a bulk insert or a claim
//! hands back thousands of jobs, and a Python object per job (with its `__init__`, and for a
//! spec a row tuple besides) was a large part of what `insert_all` cost the calling thread
//! (measured: `benches/RESULTS-archive.md`). Fields convert when read; the JSON is decoded once, on
//! first read. The bulk paths also take their objects off the garbage collector's lists
//! (`untracked`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use kathikon_core::{Job, JobState, NewJob, UniqueSpec};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString};
use pyo3::IntoPyObjectExt;
use pyo3::PyClass;

use std::sync::Arc;

use crate::errors::{IntoPy, InvalidJobError, JobStateError};
use crate::progress::Reporter;

/// Python helpers the getters call: `kathikon.job`'s `JobState` members (in `JobState::ALL`
/// order) and `from_micros`, and `json.loads`. Looked up once.
struct Helpers {
    states: Vec<Py<PyAny>>,
    from_micros: Py<PyAny>,
    loads: Py<PyAny>,
}

static HELPERS: PyOnceLock<Helpers> = PyOnceLock::new();

fn helpers(py: Python<'_>) -> PyResult<&'static Helpers> {
    HELPERS.get_or_try_init(py, || {
        let module = py.import("kathikon.job")?;
        let enum_class = module.getattr("JobState")?;
        let states = JobState::ALL
            .iter()
            .map(|s| enum_class.call1((s.as_str(),)).map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        Ok(Helpers {
            states,
            from_micros: module.getattr("from_micros")?.unbind(),
            loads: py.import("json")?.getattr("loads")?.unbind(),
        })
    })
}

/// `value` as a new Python object that the garbage collector does not track. Every `pyclass`
/// is created tracked, and a collection then walks each job of a batch still alive; but
/// neither class can close a cycle the collector could break: without `__traverse__` it
/// reports no references (a job's decoded `args` dict, the only one it holds, is invisible to
/// the collector either way). `CPython` untracks tuples and dicts of plain values the same way.
pub(crate) fn untracked<T: PyClass>(py: Python<'_>, value: T) -> PyResult<Bound<'_, T>>
where
    PyClassInitializer<T>: From<T>,
{
    let object = Bound::new(py, value)?;
    // SAFETY: `object` is a live object of a GC type (every pyclass is one); untracking an
    // object only takes it off the collector's lists, and its dealloc untracks again safely.
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(object.as_ptr().cast()) };
    Ok(object)
}

fn datetime(py: Python<'_>, micros: i64) -> PyResult<Py<PyAny>> {
    helpers(py)?.from_micros.call1(py, (micros,))
}

fn maybe_datetime(py: Python<'_>, micros: Option<i64>) -> PyResult<Option<Py<PyAny>>> {
    micros.map(|us| datetime(py, us)).transpose()
}

/// A stored job, as of when it was read. Immutable; read it again with ``app.get(id)``.
///
/// Attributes mirror the store: ``id``, ``state``, ``queue``, ``worker`` (the registered
/// name), ``args`` and ``meta`` (dicts decoded from JSON), ``tags``, ``attempt``,
/// ``max_attempts``, ``priority`` (0 runs first), ``errors`` (a list of
/// ``{"at": datetime, "attempt": int, "error": str}``), and the aware UTC datetimes
/// ``inserted_at``, ``scheduled_at``, ``attempted_at``, ``completed_at``, ``cancelled_at``,
/// ``discarded_at``; ``result``, what the worker returned (decoded from JSON; None when
/// nothing was kept); and ``conflict``, set on a job a unique insert returned because it
/// already held the key.
#[pyclass(frozen, module = "kathikon", name = "Job")]
pub(crate) struct PyJob {
    pub(crate) inner: Job,
    args: PyOnceLock<Py<PyAny>>,
    meta: PyOnceLock<Py<PyAny>>,
    result: PyOnceLock<Py<PyAny>>,
    /// An insert returned this job because it already held the insert's unique key.
    conflict: bool,
    /// Where `progress` reports go: set on a job this process claimed to run.
    reporter: Option<Arc<Reporter>>,
}

impl PyJob {
    pub(crate) fn new(inner: Job) -> Self {
        PyJob::flagged(inner, false)
    }

    /// A job an insert returned, `conflict` when it existed already (a unique insert's).
    pub(crate) fn flagged(inner: Job, conflict: bool) -> Self {
        PyJob {
            inner,
            args: PyOnceLock::new(),
            meta: PyOnceLock::new(),
            result: PyOnceLock::new(),
            conflict,
            reporter: None,
        }
    }

    /// A job this process claimed to run, whose `progress` reports go to `reporter`.
    pub(crate) fn running(inner: Job, reporter: Arc<Reporter>) -> Self {
        PyJob { reporter: Some(reporter), ..PyJob::new(inner) }
    }

    fn decoded(py: Python<'_>, cell: &PyOnceLock<Py<PyAny>>, json: &str) -> PyResult<Py<PyAny>> {
        cell.get_or_try_init(py, || helpers(py)?.loads.call1(py, (json,)))
            .map(|value| value.clone_ref(py))
    }

    fn state_member(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let index = JobState::ALL.iter().position(|s| *s == self.inner.state).unwrap_or(0);
        Ok(helpers(py)?.states[index].clone_ref(py))
    }
}

#[pymethods]
impl PyJob {
    /// Whether the insert that returned this job found it already stored (its unique key
    /// was held) instead of storing a new one. False on jobs read any other way.
    #[getter]
    fn conflict(&self) -> bool {
        self.conflict
    }
    #[getter]
    fn id(&self) -> u64 {
        self.inner.id
    }
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.state_member(py)
    }
    #[getter]
    fn queue(&self) -> &str {
        &self.inner.queue
    }
    #[getter]
    fn worker(&self) -> &str {
        &self.inner.worker
    }
    /// The job's arguments, decoded from JSON on first read (the same dict after that).
    #[getter]
    fn args(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Self::decoded(py, &self.args, &self.inner.args)
    }
    /// Metadata kept with the job, decoded from JSON on first read.
    #[getter]
    fn meta(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Self::decoded(py, &self.meta, &self.inner.meta)
    }
    /// What the worker returned, decoded from JSON on first read; None when it returned
    /// None, kept nothing (``store_result=False``, or a value it could not keep: see
    /// ``errors``), or the job has not completed.
    #[getter]
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.inner.result.as_deref().map(|json| Self::decoded(py, &self.result, json)).transpose()
    }
    /// The id of the batch the job belongs to (``app.insert_batch``); None for a job of no
    /// batch.
    #[getter]
    fn batch_id(&self) -> Option<&str> {
        self.inner.batch.as_deref()
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
    /// One ``{"at", "attempt", "error"}`` dict per failed or ended attempt, oldest first.
    #[getter]
    fn errors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for e in &self.inner.errors {
            let entry = PyDict::new(py);
            entry.set_item("at", datetime(py, e.at)?)?;
            entry.set_item("attempt", e.attempt)?;
            entry.set_item("error", &e.error)?;
            list.append(entry)?;
        }
        Ok(list)
    }
    #[getter]
    fn inserted_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.inserted_at)
    }
    #[getter]
    fn scheduled_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.scheduled_at)
    }
    #[getter]
    fn attempted_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        maybe_datetime(py, self.inner.attempted_at)
    }
    #[getter]
    fn completed_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        maybe_datetime(py, self.inner.completed_at)
    }
    #[getter]
    fn cancelled_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        maybe_datetime(py, self.inner.cancelled_at)
    }
    #[getter]
    fn discarded_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        maybe_datetime(py, self.inner.discarded_at)
    }

    /// Report how far along this running job is: `fraction` from 0.0 to 1.0 and an optional
    /// short `note`. Cheap: the latest value is written at most twice a second, and the last
    /// one before the job's outcome.
    #[pyo3(signature = (fraction, note=None))]
    fn progress(
        &self,
        fraction: &Bound<'_, PyAny>,
        note: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let fraction = progress_fraction(fraction)?;
        let note = progress_note(note)?;
        kathikon_core::progress::check(fraction, note.as_deref())
            .map_err(|e| InvalidJobError::new_err(e.to_string()))?;
        match &self.reporter {
            Some(reporter) => reporter.report(self.inner.id, self.inner.attempt, (fraction, note)),
            // The unsaved job `kathikon.testing.perform_job` runs: nothing to store.
            None if self.inner.id == 0 => {}
            None => {
                return Err(JobStateError::new_err(format!(
                    "job {} ({}) is not running in this process: call progress() on the job                      passed to the worker function while it runs",
                    self.inner.id, self.inner.state
                )))
            }
        }
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let (queue, worker) =
            (PyString::new(py, &self.inner.queue), PyString::new(py, &self.inner.worker));
        Ok(format!(
            "Job(id={}, state='{}', queue={}, worker={}, attempt={}/{})",
            self.inner.id,
            self.inner.state,
            queue.repr()?,
            worker.repr()?,
            self.inner.attempt,
            self.inner.max_attempts
        ))
    }

    /// Two reads of a job are equal when they are the same job at the same point of its life:
    /// same id, state, attempt and schedule.
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<PyJob>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (&self.inner, &other.get().inner);
        let same = (a.id, a.state, a.attempt, a.scheduled_at)
            == (b.id, b.state, b.attempt, b.scheduled_at);
        same.into_py_any(py)
    }

    /// A job is immutable: a shallow copy is the job itself (sharing its decoded `args`, as a
    /// copy of the Python class this replaced did).
    fn __copy__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The same stored job with `args` and `meta` of its own, decoded again on first read.
    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyJob {
        PyJob::new(self.inner.clone())
    }

    fn __hash__(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (self.inner.id, self.inner.state.as_str(), self.inner.attempt).hash(&mut hasher);
        hasher.finish()
    }
}

/// A progress fraction as a float; anything but a real number is refused naming it.
fn progress_fraction(value: &Bound<'_, PyAny>) -> PyResult<f64> {
    let number = !value.is_instance_of::<pyo3::types::PyBool>()
        && (value.is_instance_of::<pyo3::types::PyFloat>()
            || value.is_instance_of::<pyo3::types::PyInt>());
    match number.then(|| value.extract::<f64>()) {
        Some(Ok(fraction)) => Ok(fraction),
        _ => Err(InvalidJobError::new_err(format!(
            "progress fraction {:.60} is not a number; pass how far along the job is as a              float from 0.0 to 1.0, e.g. 0.25 for a quarter",
            value.repr()?.to_string()
        ))),
    }
}

/// A progress note: `None` or a str; anything else is refused naming it.
fn progress_note(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(None) };
    match value.cast::<PyString>() {
        Ok(text) => Ok(Some(text.extract::<String>()?)),
        Err(_) => Err(InvalidJobError::new_err(format!(
            "progress note {:.60} is not a str; pass a short status line, or None",
            value.repr()?.to_string()
        ))),
    }
}

/// The job `perform_job` (`kathikon.testing`) runs a worker on, never stored: `spec` made a
/// job (id 0) at `now` and claimed at once, as its `attempt`.
#[pyfunction]
fn unsaved_job(spec: &Bound<'_, PyJobSpec>, attempt: u32, now: i64) -> PyResult<PyJob> {
    let mut job = NewJob { scheduled_at: None, ..spec.get().job.clone() }.into_job(0, now);
    job.claim(now).py_err()?;
    job.attempt = attempt;
    Ok(PyJob::new(job))
}

/// An unsaved job, made by :meth:`Kathikon.new` or ``worker.new(...)``, for
/// :meth:`Kathikon.insert_all`. Immutable: one spec may be inserted any number of times.
#[pyclass(frozen, module = "kathikon", name = "JobSpec")]
pub(crate) struct PyJobSpec {
    pub(crate) job: NewJob,
}

#[pymethods]
impl PyJobSpec {
    #[getter]
    fn queue(&self) -> &str {
        &self.job.queue
    }
    #[getter]
    fn worker(&self) -> &str {
        &self.job.worker
    }
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.job.max_attempts
    }

    /// The same job with other args (JSON text already checked): `new()`'s cached path.
    fn _with_args<'py>(&self, py: Python<'py>, args: String) -> PyResult<Bound<'py, PyJobSpec>> {
        untracked(py, PyJobSpec { job: NewJob { args, ..self.job.clone() } })
    }

    /// Immutable and holding no Python objects: any copy is the spec itself.
    fn __copy__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: PyRef<'py, Self>, _memo: &Bound<'py, PyAny>) -> PyRef<'py, Self> {
        slf
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let (queue, worker) =
            (PyString::new(py, &self.job.queue), PyString::new(py, &self.job.worker));
        Ok(format!("JobSpec(worker={}, queue={})", worker.repr()?, queue.repr()?))
    }
}

/// A unique spec as `kathikon.unique` passes it: `(fields, keys, period µs, states, replace)`.
type UniqueNames = (Vec<String>, Vec<String>, Option<i64>, Vec<String>, Vec<String>);

/// A `JobSpec` from values `kathikon.app` has checked and encoded (not for users: nothing
/// here checks them again before they are stored).
#[pyfunction]
#[pyo3(signature = (queue, worker, args, meta, tags, max_attempts, priority, scheduled_at, unique=None))]
#[allow(clippy::too_many_arguments)] // positional, from one call site in kathikon.app
fn job_spec(
    py: Python<'_>,
    queue: String,
    worker: String,
    args: String,
    meta: String,
    tags: Vec<String>,
    max_attempts: u32,
    priority: u8,
    scheduled_at: Option<i64>,
    unique: Option<UniqueNames>,
) -> PyResult<Bound<'_, PyJobSpec>> {
    let unique = match unique {
        Some((fields, keys, period, states, replace)) => Some(Box::new(
            UniqueSpec::from_names(&fields, keys, period, &states, &replace).py_err()?,
        )),
        None => None,
    };
    let job = NewJob {
        queue,
        worker,
        args,
        meta,
        tags,
        max_attempts,
        priority,
        scheduled_at,
        unique,
        batch: None,
    };
    untracked(py, PyJobSpec { job })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJob>()?;
    m.add_class::<PyJobSpec>()?;
    m.add_function(wrap_pyfunction!(unsaved_job, m)?)?;
    m.add_function(wrap_pyfunction!(job_spec, m)?)
}
