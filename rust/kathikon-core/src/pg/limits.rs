//! Queue limits on `PostgreSQL` ([`crate::limits`]): enforced in the claim, exactly, across
//! every node, by the core's own [`Limiter`] fed from the database.
//!
//! A claim of a limited queue takes, after the queue's shared lock ([`super::queues`]), the
//! queue's *limit lock* exclusively (a transaction-level advisory lock), so claims of one
//! limited queue run one at a time over all nodes; then, each statement seeing what the
//! previous holder committed:
//!
//! - the queue's executing jobs, counted per global partition (every executing job counts,
//!   however it was claimed: the table is the count, so a completed, cancelled or rescued job
//!   frees its place the moment it commits);
//! - the rate window's starts per rate partition, from `kathikon.rate_starts`;
//! - the queue's ready jobs, at most as many per bucket as the claim asks for (a claim never
//!   takes more than that from one bucket), and the bucket the last claim served last
//!   (`kathikon.limit_turns`), where this claim's round-robin starts after.
//!
//! The [`Limiter`] takes from them as it does in the embedded store; the chosen jobs are
//! claimed, their starts recorded, and the turn moved on, in the same transaction. Partition
//! values are computed by SQL as JSON arrays (`jsonb`, so `1.5` and `1.50` are one value) and
//! turned into the core's values by [`Partition::value_of_parts`]. Times are the claiming
//! node's clock, as for every other time the store writes: nodes' clocks that disagree move a
//! rate window by the difference.
//!
//! An unlimited queue never comes here: its claim reads its settings row in the statement
//! that takes its lock ([`super::claim`]) and pays nothing more.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use postgres::types::ToSql;
use postgres::GenericClient;

use super::claim::claiming;
use super::connection::Prepared;
use super::queues::{not_paused, settings_of};
use super::row::{code, job};
use crate::claim::ClaimKey;
use crate::clock::{Clock, Micros};
use crate::error::{Error, Result};
use crate::job::{Job, JobId};
use crate::limits::{Bucket, Limiter, Limits, Partition, Usage, Window};
use crate::state::JobState;

/// The first key of each limited queue's limit lock (the ASCII of "kl"); the second is the
/// queue name's `hashtext`.
const LIMIT_LOCKS: i32 = 0x6b6c;

/// What a claim got, and when a rate window that held back ready jobs has room again.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// The jobs, in claim order.
    pub(crate) jobs: Vec<Job>,
    /// The earliest time a bucket left out for its rate limit may start a job.
    pub(crate) retry_at: Option<Micros>,
}

/// The SQL of a queue's two partitions over the jobs aliased `j`, and the args keys they
/// read, as parameters numbered from the query's own.
struct Shape {
    global: String,
    rate: String,
    keys: Vec<Vec<String>>,
}

impl Shape {
    /// The expressions of the `global` and `rate` partitions, their keys' parameters
    /// numbered from `first`.
    fn of(global: Option<&Partition>, rate: Option<&Partition>, first: usize) -> Shape {
        let mut keys = Vec::new();
        let global = partition_sql(global, first, &mut keys);
        let rate = partition_sql(rate, first, &mut keys);
        Shape { global, rate, keys }
    }

    /// `leading` parameters, then the keys'.
    fn params<'a>(&'a self, leading: &[&'a (dyn ToSql + Sync)]) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut params = leading.to_vec();
        params.extend(self.keys.iter().map(|k| k as &(dyn ToSql + Sync)));
        params
    }
}

/// A partition's value as a `jsonb` array: the worker, the whole args or each key's value, in
/// the partition's order; the empty array without a partition. Keys are read from an array
/// parameter (numbered `first` + the ones before), never spliced into the text.
fn partition_sql(
    partition: Option<&Partition>,
    first: usize,
    keys: &mut Vec<Vec<String>>,
) -> String {
    use crate::limits::PartitionField::{Args, Worker};
    let Some(partition) = partition else { return "'[]'::jsonb".to_string() };
    let mut parts = Vec::new();
    for field in &partition.fields {
        match field {
            Worker => parts.push("j.worker".to_string()),
            Args if partition.keys.is_empty() => parts.push("j.args::jsonb".to_string()),
            Args => {
                let param = first + keys.len();
                keys.push(partition.keys.clone());
                for i in 1..=partition.keys.len() {
                    parts.push(format!("j.args::jsonb -> (${param}::text[])[{i}]"));
                }
            }
        }
    }
    format!("jsonb_build_array({})", parts.join(", "))
}

/// The core's value of `partition` from the JSON array text SQL computed for it.
fn value(partition: Option<&Partition>, text: &str) -> Result<String> {
    let Some(partition) = partition else { return Ok(String::new()) };
    let parts: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
        Error::Storage(format!("a partition value {text:?} is no JSON array ({e})"))
    })?;
    partition.value_of_parts(&parts).ok_or_else(|| {
        Error::Storage(format!("a partition value {text:?} does not fit its partition"))
    })
}

/// A row's bigint as an id.
fn id_of(id: i64) -> JobId {
    id as JobId
}

/// A limited queue's counts as the database holds them at `now`: executing jobs per global
/// partition and the rate windows, in a [`Limiter`]; with `per_bucket`, also the ready jobs
/// (up to that many per bucket), their buckets by id, and the round-robin starting after the
/// bucket the last claim served last.
fn load(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    queue: &str,
    limits: &Limits,
    now: Micros,
    per_bucket: Option<usize>,
) -> Result<(Limiter, HashMap<JobId, Bucket>)> {
    let global_partition = limits.global.as_ref().and_then(|g| g.partition.as_ref());
    let rate_partition = limits.rate.as_ref().and_then(|r| r.partition.as_ref());
    let mut limiter = Limiter::new(limits.clone());
    if limits.global.is_some() {
        let shape = Shape::of(global_partition, None, 3);
        let sql = format!(
            "SELECT g::text, n FROM (SELECT {g} AS g, count(*) AS n FROM kathikon.jobs j
                 WHERE j.queue = $1 AND j.state = $2 GROUP BY 1) c",
            g = shape.global
        );
        let statement = prepared.get(client, &sql)?;
        let executing = code(JobState::Executing);
        for row in client.query(&statement, &shape.params(&[&queue, &executing]))? {
            let n = u32::try_from(row.get::<_, i64>(1)).unwrap_or(u32::MAX);
            limiter.count_executing(value(global_partition, row.get(0))?, n);
        }
    }
    if let Some(rate) = &limits.rate {
        let statement = prepared.get(
            client,
            "SELECT partition, started_at, n FROM kathikon.rate_starts
             WHERE queue = $1 AND started_at > $2 ORDER BY partition, started_at",
        )?;
        let since = now.saturating_sub(rate.period_us as Micros);
        let mut windows: BTreeMap<String, Vec<(Micros, u32)>> = BTreeMap::new();
        for row in client.query(&statement, &[&queue, &since])? {
            let n = u32::try_from(row.get::<_, i32>(2)).unwrap_or(0);
            windows.entry(row.get(0)).or_default().push((row.get(1), n));
        }
        for (partition, starts) in windows {
            limiter.load_window(&partition, Window::from_starts(starts));
        }
    }
    let mut buckets = HashMap::new();
    let Some(per_bucket) = per_bucket else { return Ok((limiter, buckets)) };
    let shape = Shape::of(global_partition, rate_partition, 4);
    let ready = if global_partition.is_some() || rate_partition.is_some() {
        format!(
            "SELECT id, priority, scheduled_at, g::text, r::text FROM (
                 SELECT c.*, row_number() OVER (PARTITION BY g, r
                                                ORDER BY priority, scheduled_at, id) AS rn
                 FROM (SELECT j.id, j.priority, j.scheduled_at, {g} AS g, {r} AS r
                       FROM kathikon.jobs j WHERE j.queue = $1 AND j.state = $2) c) d
             WHERE rn <= $3",
            g = shape.global,
            r = shape.rate
        )
    } else {
        // One bucket: the claim order's first jobs, from the claim index.
        "SELECT id, priority, scheduled_at, '[]', '[]' FROM kathikon.jobs
         WHERE queue = $1 AND state = $2 ORDER BY priority, scheduled_at, id LIMIT $3"
            .to_string()
    };
    let statement = prepared.get(client, &ready)?;
    let available = code(JobState::Available);
    let limit = i64::try_from(per_bucket).unwrap_or(i64::MAX);
    let mut by_bucket: BTreeMap<Bucket, Vec<ClaimKey>> = BTreeMap::new();
    for row in client.query(&statement, &shape.params(&[&queue, &available, &limit]))? {
        let bucket = Bucket {
            global: value(global_partition, row.get(3))?,
            rate: value(rate_partition, row.get(4))?,
        };
        let key: ClaimKey = (row.get::<_, i16>(1) as u8, row.get(2), id_of(row.get::<_, i64>(0)));
        buckets.insert(key.2, bucket.clone());
        by_bucket.entry(bucket).or_default().push(key);
    }
    // The round-robin starts with the first bucket after the one served last.
    let turn = prepared
        .get(client, "SELECT last_global, last_rate FROM kathikon.limit_turns WHERE queue = $1")?;
    let last = client
        .query_opt(&turn, &[&queue])?
        .map(|row| Bucket { global: row.get(0), rate: row.get(1) });
    let mut order: Vec<(Bucket, Vec<ClaimKey>)> = by_bucket.into_iter().collect();
    if let Some(last) = last {
        let after = order.partition_point(|(bucket, _)| *bucket <= last);
        order.rotate_left(after);
    }
    for (bucket, keys) in order {
        for key in keys {
            limiter.push(key, bucket.clone());
        }
    }
    Ok((limiter, buckets))
}

/// The statement that claims chosen jobs: those of `$4` still available in queue `$1`, unless
/// it is paused, for node `$3` at `$2`.
fn claim_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        claiming(&format!(
            "SELECT id FROM kathikon.jobs
             WHERE id = ANY($4) AND queue = $1 AND state = {available} AND {not_paused}
             FOR UPDATE SKIP LOCKED",
            available = code(JobState::Available),
            not_paused = not_paused("$1"),
        ))
    })
}

/// What a claim records: its starts per rate partition, the bucket it served last, and the
/// queue's starts that left the window deleted.
const RECORD: &str = "WITH s AS (
         INSERT INTO kathikon.rate_starts (queue, partition, started_at, n)
         SELECT $1, p, $2, n FROM unnest($3::text[], $4::int[]) AS u(p, n)),
     t AS (
         INSERT INTO kathikon.limit_turns (queue, last_global, last_rate) VALUES ($1, $5, $6)
         ON CONFLICT (queue) DO UPDATE
         SET last_global = excluded.last_global, last_rate = excluded.last_rate),
     d AS (DELETE FROM kathikon.rate_starts WHERE queue = $1 AND started_at <= $7)
     SELECT 1";

/// In `tx` (which holds queue `queue`'s shared lock and promoted its due jobs), claim up to
/// `max` of its jobs under its limits, for node `node`. `None` when the queue has no limits
/// (any more): the caller claims as for any queue.
///
/// The claim's time (its starts', and the jobs' `attempted_at`) is read from `clock` once the
/// limit lock is held, so the claims of a queue take times in the order they hold the lock: a
/// claim that waited for it with an older time could otherwise find starts it needs to count
/// already deleted as out of the window by a claim with a later time.
pub(crate) fn claim(
    tx: &mut impl GenericClient,
    prepared: &mut Prepared,
    queue: &str,
    max: usize,
    clock: &dyn Clock,
    node: i64,
) -> Result<Option<Claimed>> {
    let lock = prepared.get(tx, "SELECT pg_advisory_xact_lock($1, hashtext($2))")?;
    tx.execute(&lock, &[&LIMIT_LOCKS, &queue])?;
    let now = clock.now();
    let limits = settings_of(tx, prepared, queue)?.map(|s| s.limits()).unwrap_or_default();
    if limits.is_none() {
        return Ok(None);
    }
    let (mut limiter, buckets) = load(tx, prepared, queue, &limits, now, Some(max))?;
    let taken = limiter.take(max, now);
    let mut claimed = Claimed { jobs: Vec::new(), retry_at: taken.retry_at };
    let Some(last) = taken.keys.last() else { return Ok(Some(claimed)) };
    let last = buckets.get(&last.2).cloned().unwrap_or_default();
    let ids: Vec<i64> = taken.keys.iter().map(|k| k.2 as i64).collect();
    let statement = prepared.get(tx, claim_sql())?;
    let rows = tx.query(&statement, &[&queue, &now, &node, &ids])?;
    let mut jobs = rows.iter().map(job).collect::<Result<Vec<Job>>>()?;
    // In the order taken: one bucket after another, as the round-robin served them.
    let order: HashMap<JobId, usize> =
        taken.keys.iter().enumerate().map(|(i, k)| (k.2, i)).collect();
    jobs.sort_unstable_by_key(|j| order.get(&j.id).copied().unwrap_or(usize::MAX));
    let mut starts: BTreeMap<&str, i32> = BTreeMap::new();
    if limits.rate.is_some() {
        for j in &jobs {
            if let Some(bucket) = buckets.get(&j.id) {
                *starts.entry(bucket.rate.as_str()).or_default() += 1;
            }
        }
    }
    let (partitions, counts): (Vec<&str>, Vec<i32>) = starts.into_iter().unzip();
    let expired = limits
        .rate
        .as_ref()
        .map_or(Micros::MIN, |rate| now.saturating_sub(rate.period_us as Micros));
    let record = prepared.get(tx, RECORD)?;
    tx.query_one(
        &record,
        &[&queue, &now, &partitions, &counts, &last.global, &last.rate, &expired],
    )?;
    claimed.jobs = jobs;
    Ok(Some(claimed))
}

/// Whether a claim of limited queue `queue` at `now` would take a job; if not, when a rate
/// window next makes room (`Err(None)`: only a job leaving the executing state, or a new job,
/// can). Read without the limit lock: an answer for a waiter, which the claim checks again.
pub(crate) fn claimable(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    queue: &str,
    limits: &Limits,
    now: Micros,
) -> Result<std::result::Result<(), Option<Micros>>> {
    let (mut limiter, _) = load(client, prepared, queue, limits, now, Some(1))?;
    Ok(limiter.claimable(now))
}

/// How much of its limits queue `queue` uses at `now` (nothing when it has none).
pub(crate) fn usage(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    queue: &str,
    now: Micros,
) -> Result<Usage> {
    let limits = settings_of(client, prepared, queue)?.map(|s| s.limits()).unwrap_or_default();
    if limits.is_none() {
        return Ok(Usage::default());
    }
    let (mut limiter, _) = load(client, prepared, queue, &limits, now, None)?;
    Ok(limiter.usage(now))
}

/// Delete every rate-window start older than the longest period, at `now` (the leader's
/// upkeep: the starts of queues whose rate limit was removed). How many were deleted.
pub(crate) fn expire_starts(client: &mut impl GenericClient, now: Micros) -> Result<u64> {
    let before = now.saturating_sub(crate::limits::MAX_PERIOD_US as Micros);
    Ok(client.execute("DELETE FROM kathikon.rate_starts WHERE started_at <= $1", &[&before])?)
}
