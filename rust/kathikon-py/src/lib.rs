//! `kathikon._native`: `PyO3` bindings over `kathikon-core`. A translation table and nothing
//! more: types in, types out, core errors to Python exceptions, and the GIL released around
//! every call that waits or touches storage.

mod convert;
mod cron;
mod engine;
mod errors;
mod filter;
mod job;
mod progress;
mod retention;

use kathikon_core::job::MAX_PRIORITY;
use kathikon_core::{Durability, EngineEvent, JobState, Outcome};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Rust allocations in this module (not Python's) go to mimalloc: see the workspace
/// Cargo.toml for the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    job::register(m)?;
    engine::register(m)?;
    cron::register(m)?;
    filter::register(m)?;
    m.add("FORMAT_VERSION", kathikon_core::storage::FORMAT_VERSION)?;
    add_vocabulary(m)
}

/// The names and limits the core defines, so Python spells none of them itself.
fn add_vocabulary(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    m.add("JOB_STATES", PyTuple::new(m.py(), states)?)?;
    m.add("OUTCOME_KINDS", PyTuple::new(m.py(), Outcome::KINDS)?)?;
    m.add("ENGINE_EVENTS", PyTuple::new(m.py(), EngineEvent::NAMES)?)?;
    m.add("DURABILITIES", PyTuple::new(m.py(), Durability::NAMES)?)?;
    m.add("MAX_PRIORITY", MAX_PRIORITY)?;
    Ok(())
}
