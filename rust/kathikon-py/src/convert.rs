//! Python values to core types.

use kathikon_core::{Ack, Outcome};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// `(id, attempt, kind, text, delay_us)` with kind one of complete, fail, snooze, cancel,
/// discard.
#[derive(FromPyObject)]
pub(crate) struct AckTuple(u64, u32, String, Option<String>, Option<i64>);

impl TryFrom<AckTuple> for Ack {
    type Error = PyErr;

    fn try_from(t: AckTuple) -> PyResult<Self> {
        let AckTuple(id, attempt, kind, text, delay) = t;
        let text = text.unwrap_or_default();
        let outcome = match kind.as_str() {
            "complete" => Outcome::Complete,
            "fail" => Outcome::Fail { error: text, retry_in: delay },
            "snooze" => Outcome::Snooze { delay: delay.unwrap_or(0) },
            "cancel" => Outcome::Cancel { reason: text },
            "discard" => Outcome::Discard { reason: text },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown outcome kind {other:?}; expected complete, fail, snooze, cancel or discard"
                )))
            }
        };
        Ok(Ack { id, attempt, outcome })
    }
}
