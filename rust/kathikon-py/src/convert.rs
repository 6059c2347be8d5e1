//! Python values to core types.

use kathikon_core::{Ack, NewJob, Outcome};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A job to insert, as the Python layer sends it: already validated and JSON-encoded.
#[derive(FromPyObject)]
pub(crate) struct NewJobTuple(String, String, String, String, Vec<String>, u32, u8, Option<i64>);

impl From<NewJobTuple> for NewJob {
    fn from(t: NewJobTuple) -> Self {
        let NewJobTuple(queue, worker, args, meta, tags, max_attempts, priority, scheduled_at) = t;
        NewJob { queue, worker, args, meta, tags, max_attempts, priority, scheduled_at }
    }
}

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
