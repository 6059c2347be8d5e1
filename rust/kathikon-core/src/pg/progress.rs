//! Job progress on `PostgreSQL`: a running attempt's latest report, one `kathikon.entries` row
//! per job (kind [`EntryKind::Progress`], the embedded store's name and encoding, see
//! [`crate::progress`]): written only while the job executes the attempt that reported, kept
//! after the job ends, replaced by the next attempt's first report, and expiring
//! [`crate::metrics::KEEP`] after its last report (the leader deletes expired entries).

use postgres::Client;

use super::row::{code, pg_id};
use crate::error::Result;
use crate::job::JobId;
use crate::metrics::KEEP;
use crate::progress::{decode, encode, entry_name, Progress};
use crate::state::JobState;
use crate::storage::EntryKind;

fn kind() -> i16 {
    EntryKind::Progress as i16
}

/// Store `progress` for job `id` if it executes the attempt that reported; whether it did.
///
/// The check and the write are one statement, and the job's row is read `FOR SHARE`: an ack
/// or cancel changing the job at the same moment either committed first (the report then
/// finds it ended and writes nothing) or waits for the report.
pub(crate) fn set(client: &mut Client, id: JobId, progress: &Progress) -> Result<bool> {
    let value = encode(progress)?;
    let written = client.execute(
        "INSERT INTO kathikon.entries (kind, name, value, expires_at)
         SELECT $1, $2, $3, $4 FROM (
             SELECT 1 FROM kathikon.jobs WHERE id = $5 AND state = $6 AND attempt = $7
             FOR SHARE) AS running
         ON CONFLICT (kind, name)
         DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        &[
            &kind(),
            &entry_name(id),
            &value,
            &progress.at.saturating_add(KEEP),
            &pg_id(id),
            &code(JobState::Executing),
            &i64::from(progress.attempt),
        ],
    )?;
    Ok(written == 1)
}

/// Job `id`'s latest stored report, if any (`None` too for bytes this version did not write).
pub(crate) fn get(client: &mut Client, id: JobId) -> Result<Option<Progress>> {
    let row = client.query_opt(
        "SELECT value FROM kathikon.entries WHERE kind = $1 AND name = $2",
        &[&kind(), &entry_name(id)],
    )?;
    Ok(row.and_then(|row| decode(row.get(0))))
}
