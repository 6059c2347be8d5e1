//! Metrics history on `PostgreSQL`: per queue and minute, the outcomes counted and the
//! histogram of attempt durations, as the embedded store keeps them ([`crate::metrics`]).
//!
//! Acks happen in every node at once, so no ack writes a shared row: each node counts what
//! its own verbs ended in memory ([`Tally`], one lock and one map entry per outcome, no round
//! trip) and flushes its counts at each heartbeat (the upkeep thread) and at close. A flush
//! merges them into one `kathikon.entries` row per (queue, minute) — kind
//! [`EntryKind::Metrics`], the embedded store's name and encoding, expiring [`KEEP`] after its
//! minute, so the leader's deletion of expired entries keeps 24 hours — taking the rows in
//! name order (`ON CONFLICT DO NOTHING`, then `FOR UPDATE`), so flushes of two nodes touching
//! the same minutes run one after the other and never deadlock. A row per (queue, minute),
//! not per node, keeps a day's read at one row per queue and minute however many nodes ran.
//!
//! A read returns the stored rows merged with this node's counts not flushed yet: everything
//! this node ended before the call counts, other nodes' outcomes as of their last flush (at
//! most a heartbeat old). A node that dies loses what it had not flushed.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use postgres::Client;

use crate::clock::Micros;
use crate::error::Result;
use crate::job::Job;
use crate::metrics::{entry_name, minute_of, points, Ended, MetricPoint, Record, KEEP, MINUTE};
use crate::state::JobState;
use crate::storage::{Entry, EntryKind};

fn kind() -> i16 {
    EntryKind::Metrics as i16
}

/// Counts by queue, then minute.
type Minutes = BTreeMap<String, BTreeMap<Micros, Record>>;

/// This node's counts not yet written to the database.
#[derive(Default)]
pub(crate) struct Tally {
    pending: Mutex<Minutes>,
    /// Held by a flush while it writes, and by a read while it merges the stored rows with
    /// `pending`, so a read never finds a flush's counts both stored and pending, or neither.
    writing: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tally {
    /// Count that a job of `queue` ended as `ended` at `at`, its attempt having taken
    /// `duration` (`None` when no attempt ended: a caller cancelled it, or its node was lost).
    /// Called once the transaction that ended it has committed.
    pub(crate) fn record(&self, queue: &str, ended: Ended, at: Micros, duration: Option<Micros>) {
        let mut pending = lock(&self.pending);
        // The queue's name is copied only the first time it counts.
        if !pending.contains_key(queue) {
            pending.insert(queue.to_string(), BTreeMap::new());
        }
        let minutes = pending.get_mut(queue).expect("inserted above");
        minutes.entry(minute_of(at)).or_insert_with(Record::new).count(ended, duration);
    }

    /// Count `jobs`, whose attempts a rescue just ended (committed): discarded when out of
    /// attempts, else failed, with no duration, as the engine counts a lost worker's jobs.
    pub(crate) fn rescued<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>, now: Micros) {
        for job in jobs {
            let lost =
                if job.state == JobState::Discarded { Ended::Discarded } else { Ended::Failed };
            self.record(&job.queue, lost, now, None);
        }
    }

    /// Merge this node's counts into the stored rows, in one transaction. On failure they
    /// stay pending for the next flush (an error after the server committed counts them
    /// twice; the commit's answer lost on the way is the only such case).
    pub(crate) fn flush(&self, client: &mut Client) -> Result<()> {
        let _writing = lock(&self.writing);
        let taken = std::mem::take(&mut *lock(&self.pending));
        if taken.is_empty() {
            return Ok(());
        }
        let written = write(client, &taken);
        if written.is_err() {
            let mut pending = lock(&self.pending);
            for (queue, minutes) in taken {
                let into = pending.entry(queue).or_default();
                for (minute, record) in minutes {
                    into.entry(minute).or_insert_with(Record::new).add(&record);
                }
            }
        }
        written
    }

    /// The minutes at or after `since`'s (every one when `None`) of `queue` (every one when
    /// `None`), not expired at `now`, oldest first: the stored rows with this node's pending
    /// counts added.
    pub(crate) fn read(
        &self,
        client: &mut Client,
        since: Option<Micros>,
        queue: Option<&str>,
        now: Micros,
    ) -> Result<Vec<MetricPoint>> {
        let _writing = lock(&self.writing);
        // Names start with the zero-padded minute, so a minute's name bounds the later ones
        // (bytewise; a negative minute's name sorts before every other, hence no bound).
        let floor =
            since.map(minute_of).filter(|m| *m >= 0).map_or(String::new(), |m| entry_name(m, ""));
        let rows = client.query(
            "SELECT name, value, expires_at FROM kathikon.entries
             WHERE kind = $1 AND name COLLATE \"C\" >= $2
               AND ($3::text IS NULL OR substr(name, strpos(name, '/') + 1) = $3)",
            &[&kind(), &floor, &queue],
        )?;
        let mut merged: BTreeMap<String, (Record, Option<Micros>)> = BTreeMap::new();
        for row in rows {
            // Bytes this version did not write are left out, as the embedded reader does.
            let Some(record) = Record::decode(row.get(1)) else { continue };
            merged.insert(row.get(0), (record, row.get(2)));
        }
        for (name, minute, record) in named(&lock(&self.pending)) {
            merged
                .entry(name)
                .or_insert_with(|| (Record::new(), Some(expiry(minute))))
                .0
                .add(record);
        }
        let entries = merged
            .into_iter()
            .map(|(name, (record, expires))| Entry { name, value: record.encode(), expires })
            .collect();
        Ok(points(entries, since, queue, now))
    }
}

/// When a minute's row expires: [`KEEP`] after the minute.
fn expiry(minute: Micros) -> Micros {
    minute.saturating_add(MINUTE).saturating_add(KEEP)
}

/// Each (queue, minute) of `minutes` as its entry's name, its minute and its counts.
fn named(minutes: &Minutes) -> impl Iterator<Item = (String, Micros, &Record)> {
    minutes.iter().flat_map(|(queue, by_minute)| {
        by_minute.iter().map(move |(minute, record)| (entry_name(*minute, queue), *minute, record))
    })
}

/// Add `minutes` to their stored rows, making the missing ones, in one transaction.
fn write(client: &mut Client, minutes: &Minutes) -> Result<()> {
    let mut rows: Vec<(String, Micros, &Record)> = named(minutes).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = rows.iter().map(|(name, ..)| name.as_str()).collect();
    let expires: Vec<Micros> = rows.iter().map(|(_, minute, _)| expiry(*minute)).collect();
    let mut tx = client.transaction()?;
    tx.execute(
        "INSERT INTO kathikon.entries (kind, name, value, expires_at)
         SELECT $1, n, ''::bytea, e FROM unnest($2::text[], $3::bigint[]) AS t(n, e)
         ORDER BY n
         ON CONFLICT DO NOTHING",
        &[&kind(), &names, &expires],
    )?;
    let stored: BTreeMap<String, Vec<u8>> = tx
        .query(
            "SELECT name, value FROM kathikon.entries WHERE kind = $1 AND name = ANY($2)
             ORDER BY name FOR UPDATE",
            &[&kind(), &names],
        )?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let values: Vec<Vec<u8>> = rows
        .iter()
        .map(|(name, _, record)| {
            // A row just made is empty: it adds nothing.
            let mut sum =
                stored.get(name).and_then(|v| Record::decode(v)).unwrap_or_else(Record::new);
            sum.add(record);
            sum.encode()
        })
        .collect();
    tx.execute(
        "UPDATE kathikon.entries e SET value = t.v
         FROM unnest($2::text[], $3::bytea[]) AS t(n, v)
         WHERE e.kind = $1 AND e.name = t.n",
        &[&kind(), &names, &values],
    )?;
    tx.commit()?;
    Ok(())
}
