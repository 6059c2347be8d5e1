//! Queues controlled at runtime on `PostgreSQL`: each queue's settings (paused, scaled,
//! started, stopped) are a row of `kathikon.entries` (kind [`EntryKind::Queue`], named by the
//! queue, the embedded store's JSON as value; none while all are defaults), changed through
//! the core's [`crate::queues::changed`].
//!
//! A pause is exact across nodes: once `set_queue` returns, no claim of the queue succeeds
//! anywhere. A claim runs in a transaction that first takes the queue's lock shared
//! (`super::claim`), then claims in a later statement whose snapshot checks the paused flag
//! (`READ COMMITTED` takes one per statement); a change takes the lock exclusively. So a
//! change waits for the claims already past the lock to commit, and a claim arriving after it
//! waits for the change's commit and then sees it. The lock is a transaction-level advisory
//! lock on (a constant, the queue name's hash): queues whose names collide only wait for
//! each other a little.
//!
//! A resume notifies the queue, so claims waiting on any node look again at once.

use postgres::{Client, GenericClient};
use sha2::{Digest, Sha256};

use super::connection::Prepared;
use super::listen;
use crate::error::Result;
use crate::queues::{changed, QueueChange, QueueSettings};
use crate::storage::EntryKind;

/// The first key of every queue's advisory lock (the ASCII of "kq"); the second is the
/// queue name's `hashtext`.
pub(crate) const QUEUE_LOCKS: i32 = 0x6b71;

/// The `kind` of a queue's settings row.
fn kind() -> i16 {
    EntryKind::Queue as i16
}

/// The SQL condition "queue `$n` is not paused", for a claim's or a readiness probe's query.
pub(crate) fn not_paused(queue: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM kathikon.entries WHERE kind = {kind} AND name = {queue}
                     AND convert_from(value, 'UTF8')::jsonb @> '{{\"paused\": true}}')",
        kind = kind()
    )
}

/// The SQL condition "the settings value `value` (`jsonb`) has a global or a rate limit".
pub(crate) fn limited(value: &str) -> String {
    format!(
        "(jsonb_typeof({value} -> 'global_limit') = 'object' \
          OR jsonb_typeof({value} -> 'rate_limit') = 'object')"
    )
}

/// The SQL condition "queue `$n` is limited": its claims go through [`super::limits`].
pub(crate) fn is_limited(queue: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM kathikon.entries WHERE kind = {kind} AND name = {queue}
                 AND {limited})",
        kind = kind(),
        limited = limited("convert_from(value, 'UTF8')::jsonb"),
    )
}

/// Queue `queue`'s settings as the statement's snapshot has them (`None`: all defaults).
pub(crate) fn settings_of(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    queue: &str,
) -> Result<Option<QueueSettings>> {
    let statement =
        prepared.get(client, "SELECT value FROM kathikon.entries WHERE kind = $1 AND name = $2")?;
    let row = client.query_opt(&statement, &[&kind(), &queue])?;
    row.map(|row| QueueSettings::decode_value(queue, row.get::<_, &[u8]>(0))).transpose()
}

/// Apply `change` to queue `queue`'s settings; they as they now are, once committed.
pub(crate) fn set(client: &mut Client, queue: &str, change: QueueChange) -> Result<QueueSettings> {
    // Refused before any statement when the change or name is bad: nothing is written.
    changed(queue, None, change.clone())?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&QUEUE_LOCKS, &queue])?;
    let stored = tx.query_opt(
        "SELECT value FROM kathikon.entries WHERE kind = $1 AND name = $2 FOR UPDATE",
        &[&kind(), &queue],
    )?;
    let stored =
        stored.map(|row| QueueSettings::decode_value(queue, row.get::<_, &[u8]>(0))).transpose()?;
    let settings = changed(queue, stored, change)?;
    if settings.is_default() {
        tx.execute(
            "DELETE FROM kathikon.entries WHERE kind = $1 AND name = $2",
            &[&kind(), &queue],
        )?;
    } else {
        tx.execute(
            "INSERT INTO kathikon.entries (kind, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value",
            &[&kind(), &queue, &settings.encode()],
        )?;
    }
    if !settings.paused {
        listen::notify(&mut tx, &[queue])?;
    }
    tx.commit()?;
    Ok(settings)
}

/// Every queue with settings, by name, and a generation: a digest of them all, so it changes
/// whenever any of them does (and an answer equal to one a poller has seen reads the same).
pub(crate) fn all(client: &mut Client) -> Result<(u64, Vec<QueueSettings>)> {
    let rows = client.query(
        "SELECT name, value FROM kathikon.entries WHERE kind = $1 ORDER BY name",
        &[&kind()],
    )?;
    let mut digest = Sha256::new();
    let mut settings = Vec::with_capacity(rows.len());
    for row in &rows {
        let (name, value): (&str, &[u8]) = (row.get(0), row.get(1));
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update(value);
        digest.update([0]);
        settings.push(QueueSettings::decode_value(name, value)?);
    }
    let generation = u64::from_be_bytes(digest.finalize()[..8].try_into().expect("8 bytes"));
    Ok((generation, settings))
}
