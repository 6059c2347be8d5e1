//! Job progress: the latest `(fraction, note)` a running attempt reported, kept as one
//! [`EntryKind::Progress`] entry per job (named by its id) beside the job record, so the record
//! format does not change and reports never rewrite the job. An entry is written only while
//! the attempt it names is executing, is kept after the job ends (the last report of a
//! finished job stays readable), is replaced by the next attempt's first report, and expires
//! [`KEEP`] after its last report through the entries' expiry index.
//!
//! Reports are not rate-limited here: the reporting process writes at most one per job every
//! 500 ms and the last one before its ack (`kathikon-py`'s `progress.rs`, behind the Python
//! `Job.progress`).

use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{Job, JobId};
use crate::metrics::KEEP;
use crate::state::JobState;
use crate::storage::{EntryKind, WriteTxn};

/// Longest note kept, in bytes.
pub const NOTE_MAX: usize = 200;

/// A job's latest reported progress.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The attempt that reported it.
    pub attempt: u32,
    /// How far along, from 0.0 to 1.0 (always finite: checked by [`check`]).
    pub fraction: f64,
    /// What it is doing, if it said.
    pub note: Option<String>,
    /// When it reported, on the engine clock.
    pub at: Micros,
}

// `fraction` is never NaN (see `check`), so equality is an equivalence.
impl Eq for Progress {}

/// Refuse a fraction outside 0.0–1.0 (or not a number) and a note over [`NOTE_MAX`] bytes,
/// naming the value.
pub fn check(fraction: f64, note: Option<&str>) -> Result<()> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::InvalidJob(format!(
            "progress fraction {fraction} is outside 0.0–1.0; pass how far along the job is, \
             e.g. 0.25 for a quarter"
        )));
    }
    if let Some(note) = note {
        if note.len() > NOTE_MAX {
            return Err(Error::InvalidJob(format!(
                "progress note of {} bytes is longer than {NOTE_MAX}; pass a short status line",
                note.len()
            )));
        }
    }
    Ok(())
}

/// An entry's name: the job's id.
pub(crate) fn entry_name(id: JobId) -> String {
    id.to_string()
}

/// A stored entry's value.
pub(crate) fn encode(progress: &Progress) -> Result<Vec<u8>> {
    serde_json::to_vec(progress).map_err(|e| Error::Storage(e.to_string()))
}

/// Decode a stored entry (`None` for bytes this version did not write).
pub(crate) fn decode(value: &[u8]) -> Option<Progress> {
    serde_json::from_slice(value).ok()
}

/// Store `progress` for job `id` if its attempt is executing now; returns whether it did (an
/// old attempt's report, or a finished or unknown job's, changes nothing).
pub(crate) fn store(txn: &mut dyn WriteTxn, id: JobId, progress: &Progress) -> Result<bool> {
    let executing = |job: &Job| job.state == JobState::Executing && job.attempt == progress.attempt;
    if !txn.get(id)?.as_ref().is_some_and(executing) {
        return Ok(false);
    }
    txn.put_entry(
        EntryKind::Progress,
        &entry_name(id),
        &encode(progress)?,
        Some(progress.at + KEEP),
    )?;
    Ok(true)
}
