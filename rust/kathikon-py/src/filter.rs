//! `ListFilter`: which jobs a listing, a count or a bulk action selects, built once in Python
//! (which checks each value and names it when it is bad) and handed to the core as is.

use kathikon_core::{BulkAction, JobState, ListFilter, TimeRange};
use pyo3::prelude::*;

use crate::errors::{IntoPy, InvalidJobError};

/// A checked [`ListFilter`]. Times are µs since the Unix epoch; `*_after` is inclusive,
/// `*_before` exclusive.
#[pyclass(name = "ListFilter", module = "kathikon._native", frozen)]
pub(crate) struct PyListFilter {
    pub(crate) inner: ListFilter,
}

#[pymethods]
impl PyListFilter {
    #[new]
    #[pyo3(signature = (
        *, states=Vec::new(), queue=None, worker=None, tags=Vec::new(), args=None, meta=None,
        inserted_after=None, inserted_before=None, scheduled_after=None, scheduled_before=None,
        finished_after=None, finished_before=None, after=None, before=None, descending=false,
        limit=0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        states: Vec<String>,
        queue: Option<String>,
        worker: Option<String>,
        tags: Vec<String>,
        args: Option<String>,
        meta: Option<String>,
        inserted_after: Option<i64>,
        inserted_before: Option<i64>,
        scheduled_after: Option<i64>,
        scheduled_before: Option<i64>,
        finished_after: Option<i64>,
        finished_before: Option<i64>,
        after: Option<u64>,
        before: Option<u64>,
        descending: bool,
        limit: usize,
    ) -> PyResult<Self> {
        let states = states
            .into_iter()
            .map(|s| JobState::parse(&s))
            .collect::<Result<Vec<_>, _>>()
            .py_err()?;
        Ok(Self {
            inner: ListFilter {
                states,
                queue,
                worker,
                tags,
                args,
                meta,
                inserted: TimeRange { after: inserted_after, before: inserted_before },
                scheduled: TimeRange { after: scheduled_after, before: scheduled_before },
                finished: TimeRange { after: finished_after, before: finished_before },
                after,
                before,
                descending,
                limit,
                state: None,
            },
        })
    }
}

/// The bulk action named `name` (`cancel`, `retry`, `delete`).
pub(crate) fn action(name: &str, force: bool) -> PyResult<BulkAction> {
    match name {
        "cancel" => Ok(BulkAction::Cancel),
        "retry" => Ok(BulkAction::Retry),
        "delete" => Ok(BulkAction::Delete { force }),
        other => Err(InvalidJobError::new_err(format!(
            "bulk action {other:?} is not one; use cancel, retry or delete"
        ))),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyListFilter>()
}
