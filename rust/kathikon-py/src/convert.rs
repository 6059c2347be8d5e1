//! Python values to core types.

use kathikon_core::{Ack, Outcome};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// `(id, attempt, kind, text, delay_us, result)` with kind one of `Outcome::KINDS` (exported
/// as `OUTCOME_KINDS`); `result` is the value a completed job keeps, as JSON text (see
/// [`Outcome::from_kind`]).
#[derive(FromPyObject)]
pub(crate) struct AckTuple(u64, u32, String, Option<String>, Option<i64>, Option<String>);

impl TryFrom<AckTuple> for Ack {
    type Error = PyErr;

    fn try_from(t: AckTuple) -> PyResult<Self> {
        let AckTuple(id, attempt, kind, text, delay, result) = t;
        let outcome = Outcome::from_kind(&kind, text, delay, result)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Ack { id, attempt, outcome })
    }
}
