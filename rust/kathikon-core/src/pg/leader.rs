//! One leader among the nodes runs the periodic work every node would otherwise repeat:
//! promotion of due jobs (with their queues notified), the sweep for jobs held by nodes
//! without a row ([`super::rescue`]; every node rescues the nodes whose lease expired, since a
//! frozen leader keeps its lock), deletion of expired entries (unique keys past their period,
//! metrics minutes and progress reports past [`crate::metrics::KEEP`]) and of rate-limit
//! starts older than the longest period ([`super::limits`]), pruning by retention, and
//! cron ([`super::cron`], fired by the upkeep thread after this work).
//!
//! Leadership is a session-level advisory lock ([`LEADER_LOCK`]) held by the upkeep thread's
//! own connection: `pg_try_advisory_lock` never waits, so every node tries at each tick and
//! exactly one holds it. `PostgreSQL` releases it the moment that connection ends — the node
//! closes, its process dies, the network drops it — so leadership moves within a tick of
//! the server noticing, with no lease to wait out and no clocks to agree on (a leased leader
//! row would need both). What the leader does is safe without it anyway (promotion and
//! rescue lock the rows they change, `SKIP LOCKED`), so a leader that lost its connection
//! without knowing yet does no harm before it notices.
//!
//! The lock needs the connection's session: behind a pooler in transaction mode (`PgBouncer`)
//! the upkeep connection must bypass the pool.

use postgres::Client;

use super::{change, claim, limits};
use crate::clock::Micros;
use crate::error::Result;
use crate::retention::Retention;

/// The leader's advisory lock key (the ASCII of "kathlead"); distinct from the migration
/// lock's, since session and transaction advisory locks share one key space.
pub const LEADER_LOCK: i64 = 0x6b61_7468_6c65_6164;

/// Take leadership if no node holds it; whether this connection holds it now.
pub(crate) fn try_lead(client: &mut Client) -> Result<bool> {
    Ok(client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?.get(0))
}

/// The leader's work at `now`: promote due jobs, delete expired entries, and prune by
/// `retention` when given (pruning, and the rate starts' cleanup, run less often than the
/// rest).
pub(crate) fn lead(client: &mut Client, now: Micros, retention: Option<&Retention>) -> Result<()> {
    claim::promote(client, now, true)?;
    // A row a transaction is taking over (a unique insert renewing an expired key) is locked
    // and changed by it; the delete then finds the new expiry and keeps the row.
    client.execute("DELETE FROM kathikon.entries WHERE expires_at <= $1", &[&now])?;
    if let Some(retention) = retention {
        change::prune_by_retention(client, retention, now)?;
        limits::expire_starts(client, now)?;
    }
    Ok(())
}
