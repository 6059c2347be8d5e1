//! Cron for Python: crontab entries from tuples, checked by the core's one parser, and the
//! slots of an expression (for `app.crontab()`'s next run times).

use kathikon_core::cron::{CatchUp, CronEntry, Schedule};
use pyo3::prelude::*;

use crate::errors::ConfigurationError;
use crate::job::PyJobSpec;

/// `(name, expression, timezone, catch_up, catch_up_limit, job)`, as `app.cron()` builds it.
pub(crate) type EntryTuple<'py> = (String, String, String, String, u32, Bound<'py, PyJobSpec>);

/// A crontab entry from its tuple; a bad value is `ConfigurationError` naming it.
pub(crate) fn entry(tuple: EntryTuple<'_>) -> PyResult<CronEntry> {
    let (name, expression, timezone, catch_up, catch_up_limit, job) = tuple;
    let catch_up = CatchUp::from_name(&catch_up).ok_or_else(|| {
        ConfigurationError::new_err(format!(
            "cron entry {name:?}: catch_up={catch_up:?} is not a catch-up policy; use one of \
             {}",
            CatchUp::NAMES.map(|n| format!("{n:?}")).join(", ")
        ))
    })?;
    let entry = CronEntry {
        name,
        expression,
        timezone,
        catch_up,
        catch_up_limit,
        job: job.get().job.clone(),
    };
    entry.schedule().map_err(|e| ConfigurationError::new_err(e.to_string()))?;
    Ok(entry)
}

/// The first slot of `expression` in `timezone` strictly after `after` (µs), or `None`
/// (`@reboot` has none). A bad expression or zone is `ConfigurationError` naming it.
#[pyfunction]
fn cron_next(expression: &str, timezone: &str, after: i64) -> PyResult<Option<i64>> {
    let schedule = Schedule::parse(expression, timezone).map_err(ConfigurationError::new_err)?;
    Ok(schedule.next_after(after))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cron_next, m)?)?;
    m.add("CATCH_UP_POLICIES", pyo3::types::PyTuple::new(m.py(), CatchUp::NAMES)?)
}
