//! `kathikon._native`: `PyO3` bindings over `kathikon-core`. A translation table and nothing
//! more: types in, types out, core errors to Python exceptions, and the GIL released around
//! every call that waits or touches storage.

mod convert;
mod engine;
mod errors;
mod job;

use pyo3::prelude::*;

/// Rust allocations in this module (not Python's) go to mimalloc: see the workspace
/// Cargo.toml for the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    job::register(m)?;
    engine::register(m)?;
    m.add("FORMAT_VERSION", kathikon_core::storage::FORMAT_VERSION)?;
    Ok(())
}
