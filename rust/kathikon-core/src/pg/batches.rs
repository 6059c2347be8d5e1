//! Batches on `PostgreSQL` ([`crate::batch`]): a member is a row of `kathikon.jobs` naming its
//! batch (`batch_id`), and a batch is a row of `kathikon.batches` holding what the members'
//! rows cannot: when it was created and finished, its callbacks, and the members deleted once
//! finished (`kept_<state>`), which stay counted.
//!
//! **Counts.** A batch's members per state are its rows per state (the `jobs_batch` index)
//! plus the kept ones, read in one statement ([`read`]). So they are exact through every
//! change of a member — claim, promotion, ack, cancel, retry, rescue, bulk action — with
//! nothing to move and nothing to miss: only a delete of a finished member moves a count
//! (into `kept`), in the deleting transaction ([`Settle::deleted`], [`Settle::pruned`]).
//! Claims and promotions, the hottest writes, never touch a batch row.
//!
//! **Finishing, exactly once.** A transaction that finishes a member (writes it in a terminal
//! state) or deletes one unfinished settles its batches last, before it commits
//! ([`Settle::apply`]): it locks their rows (`FOR NO KEY UPDATE`, in id order), and then, in a
//! later statement — so with a snapshot taken after the locks were granted — looks for an
//! unfinished member; both in one round trip, the function `kathikon.settle_batches` (volatile,
//! so each of its statements takes a snapshot of its own under `READ COMMITTED`, which it
//! checks). If none is left and the batch has not finished, the same transaction
//! inserts the callbacks [`StoredBatch::finish`] makes (through the normal insert, which
//! notifies their queues) and stores `finished_at` and the callbacks' ids. Of two transactions
//! finishing a batch's last two members at once, the first to lock sees the other's member
//! still unfinished and finishes nothing; the second waits for its commit and then sees both
//! finished. A transaction that does not commit finished nothing and inserted nothing.
//!
//! **Joining.** An insert with members opens their batches in its transaction, after storing
//! the jobs ([`open`]): it creates a batch's row (`INSERT … ON CONFLICT DO NOTHING`: an insert
//! creating the same id on another node waits for this one's commit and then finds the row),
//! or locks the row that exists `FOR SHARE` and refuses a finished batch or callbacks given
//! again. A share lock waits for a finishing transaction and conflicts with it, so a member is
//! never added to a batch once its callbacks are in.
//!
//! **No deadlock.** Batch rows are the last locks any transaction takes, in id order: after
//! its job rows (changes lock them first, in id order) and its unique keys, and nothing waits
//! for a job's lock while holding a batch's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use postgres::{GenericClient, Row, ToStatement, Transaction};

use super::insert;
use super::row::code;
use super::validate::validate;
use crate::batch::{self, BatchStatus, Callback, Callbacks, StoredBatch};
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::state::JobState;

/// The statement that settles batches: `kathikon.settle_batches` (migration 6) locks the
/// batches `$1` and returns those of `$2` with no member in a state of `$3`.
pub(crate) const SETTLE: &str = "SELECT kathikon.settle_batches($1, $2, $3)";

/// The codes of the states a member is unfinished in.
fn unfinished() -> Vec<i16> {
    JobState::ALL.into_iter().filter(|s| !s.is_terminal()).map(code).collect()
}

/// The kept-count column of terminal state `state`.
fn kept_column(state: JobState) -> String {
    format!("kept_{}", state.as_str())
}

/// Open the batches an insert's members join, in the insert's transaction, after its jobs
/// are stored: create each that no row has (with its callbacks, if given), or check the one
/// that exists — not finished, and given no callbacks ([`batch::callbacks_fixed`]). `joined`
/// is what [`batch::joined`] found in the insert. A refusal is an error; the caller's
/// transaction then stores nothing.
pub(crate) fn open(
    tx: &mut Transaction<'_>,
    mut joined: Vec<(String, Option<Callbacks>)>,
    now: Micros,
) -> Result<()> {
    // In id order, as every transaction takes batch rows (see the module documentation).
    joined.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, callbacks) in joined {
        let given = callbacks.as_ref().is_some_and(|c| !c.is_empty());
        let made = StoredBatch::new(&id, callbacks.unwrap_or_default(), now).and_then(|b| {
            b.templates.iter().try_for_each(|(_, template)| validate(template)).map(|()| b)
        });
        if let Ok(new) = &made {
            if create(tx, new)? {
                continue;
            }
        }
        let row = tx.query_opt(
            "SELECT created_at, finished_at FROM kathikon.batches WHERE id = $1 FOR SHARE",
            &[&id],
        )?;
        let Some(row) = row else {
            // Not created, not there: the batch made was refused (rows are never deleted, so
            // a conflict leaves one to find).
            return Err(made.err().unwrap_or_else(|| {
                Error::Storage(format!("batch {id:?} was neither created nor found"))
            }));
        };
        if given {
            return Err(batch::callbacks_fixed(&id));
        }
        let mut existing = StoredBatch::new(&id, Vec::new(), row.get(0))?;
        existing.status.finished_at = row.get(1);
        existing.check_open()?;
    }
    Ok(())
}

/// Store `new` unless a row has its id (waiting for an uncommitted one's transaction);
/// whether it was stored.
fn create(tx: &mut Transaction<'_>, new: &StoredBatch) -> Result<bool> {
    let templates = serde_json::to_string(&new.templates)
        .map_err(|e| Error::Storage(format!("encode batch {:?}: {e}", new.status.id)))?;
    let callbacks = serde_json::to_string(&new.status.callbacks)
        .map_err(|e| Error::Storage(format!("encode batch {:?}: {e}", new.status.id)))?;
    let created = tx.execute(
        "INSERT INTO kathikon.batches (id, created_at, templates, callbacks)
         VALUES ($1, $2, $3::text::json, $4::text::json)
         ON CONFLICT (id) DO NOTHING",
        &[&new.status.id, &new.status.created_at, &templates, &callbacks],
    )?;
    Ok(created == 1)
}

/// What a transaction did to batch members that their batches must hear of before it
/// commits ([`Settle::apply`]): every change of a job's state returns one
/// ([`super::write::store`]), so none is forgotten.
#[derive(Debug, Default)]
#[must_use = "apply it (Settle::apply) before the transaction commits: a batch whose last \
              member it finished must finish in the same transaction"]
pub(crate) struct Settle {
    /// Batches a member of which finished or was deleted unfinished: each may have finished.
    ended: BTreeSet<String>,
    /// Finished members deleted, by batch and terminal state ([`JobState::TERMINAL`]'s order).
    kept: BTreeMap<String, [i64; 3]>,
}

impl Settle {
    /// The batches of the members among `jobs` that are finished (as written by a change).
    pub(crate) fn finished<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Settle {
        let ended = jobs
            .into_iter()
            .filter(|j| j.state.is_terminal())
            .filter_map(|j| j.batch.clone())
            .collect();
        Settle { ended, kept: BTreeMap::new() }
    }

    /// `job` was deleted: a finished member stays counted, an unfinished one leaves (and its
    /// batch may have finished with it), as [`StoredBatch::moved`] says.
    pub(crate) fn deleted(&mut self, job: &Job) {
        let Some(batch) = &job.batch else { return };
        if job.state.is_terminal() {
            self.pruned(batch, job.state, 1);
        } else {
            self.ended.insert(batch.clone());
        }
    }

    /// `n` members of `batch` finished in `state` were deleted.
    pub(crate) fn pruned(&mut self, batch: &str, state: JobState, n: i64) {
        if let Some(i) = JobState::TERMINAL.iter().position(|s| *s == state) {
            self.kept.entry(batch.to_string()).or_default()[i] += n;
        }
    }

    /// Add what `other` holds.
    pub(crate) fn merge(&mut self, other: Settle) {
        self.ended.extend(other.ended);
        for (batch, kept) in other.kept {
            let mine = self.kept.entry(batch).or_default();
            for (m, k) in mine.iter_mut().zip(kept) {
                *m += k;
            }
        }
    }

    /// In `tx`, before it commits: add the kept members to their batches, and finish each
    /// batch whose last unfinished member is gone, at `now` (see the module documentation).
    /// Costs nothing when no member was finished or deleted.
    pub(crate) fn apply(self, tx: &mut Transaction<'_>, now: Micros) -> Result<()> {
        self.apply_with(tx, SETTLE, now)
    }

    /// [`Settle::apply`], running `statement` ([`SETTLE`] or the statement prepared from it).
    pub(crate) fn apply_with<S: ?Sized + ToStatement>(
        self,
        tx: &mut Transaction<'_>,
        statement: &S,
        now: Micros,
    ) -> Result<()> {
        let Settle { ended, kept } = self;
        if ended.is_empty() && kept.is_empty() {
            return Ok(());
        }
        let locked: BTreeSet<&str> = ended.iter().chain(kept.keys()).map(String::as_str).collect();
        let locked: Vec<&str> = locked.into_iter().collect();
        let ended: Vec<&str> = ended.iter().map(String::as_str).collect();
        let finishable: Vec<String> = tx
            .query(statement, &[&locked, &ended, &unfinished()])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !kept.is_empty() {
            keep(tx, &kept)?;
        }
        for id in finishable {
            finish(tx, &id, now)?;
        }
        Ok(())
    }
}

/// Add `kept` to the kept counts of their batches (locked).
fn keep(tx: &mut Transaction<'_>, kept: &BTreeMap<String, [i64; 3]>) -> Result<()> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let columns: Vec<String> = JobState::TERMINAL.into_iter().map(kept_column).collect();
        let sets: Vec<String> = columns.iter().map(|c| format!("{c} = b.{c} + k.{c}")).collect();
        format!(
            "UPDATE kathikon.batches b SET {}
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS k(id, {})
             WHERE b.id = k.id",
            sets.join(", "),
            columns.join(", ")
        )
    });
    let ids: Vec<&str> = kept.keys().map(String::as_str).collect();
    let column = |i: usize| kept.values().map(|k| k[i]).collect::<Vec<i64>>();
    tx.execute(sql.as_str(), &[&ids, &column(0), &column(1), &column(2)])?;
    Ok(())
}

/// Finish batch `id` (locked, not finished, no member unfinished) at `now`: insert the
/// callbacks whose condition holds and store `finished_at` and their ids. A batch with no
/// member counted (every one deleted unfinished) stays open.
fn finish(tx: &mut Transaction<'_>, id: &str, now: Micros) -> Result<()> {
    let Some(mut stored) = read(tx, id)? else { return Ok(()) };
    let fired = stored.finish(now);
    if stored.status.finished_at.is_none() {
        return Ok(());
    }
    let (events, jobs): (Vec<_>, Vec<_>) = fired.into_iter().unzip();
    let inserted = insert::insert_waking_all(tx, jobs, now)?;
    for (event, job) in events.into_iter().zip(&inserted) {
        stored.fired(event, job.id);
    }
    let callbacks = serde_json::to_string(&stored.status.callbacks)
        .map_err(|e| Error::Storage(format!("encode batch {id:?}: {e}")))?;
    tx.execute(
        "UPDATE kathikon.batches SET finished_at = $2, callbacks = $3::text::json WHERE id = $1",
        &[&id, &now, &callbacks],
    )?;
    Ok(())
}

/// Batch `id` as stored, its counts as of this statement: its members' rows per state and
/// the kept ones; `None` if no batch has the id.
pub(crate) fn read(client: &mut impl GenericClient, id: &str) -> Result<Option<StoredBatch>> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let kept: Vec<String> =
            JobState::TERMINAL.into_iter().map(|s| format!("b.{}", kept_column(s))).collect();
        format!(
            "SELECT b.created_at, b.finished_at, b.templates::text, b.callbacks::text,
                 ARRAY[{}], c.states, c.ns
             FROM kathikon.batches b,
                 LATERAL (SELECT array_agg(g.state) AS states, array_agg(g.n) AS ns
                          FROM (SELECT state, count(*) AS n FROM kathikon.jobs
                                WHERE batch_id = b.id GROUP BY state) g) c
             WHERE b.id = $1",
            kept.join(", ")
        )
    });
    client.query_opt(sql.as_str(), &[&id])?.map(|row| stored(id, &row)).transpose()
}

/// The batch a row of [`read`] holds.
fn stored(id: &str, row: &Row) -> Result<StoredBatch> {
    let corrupted = |what: &str, e: serde_json::Error| {
        Error::Storage(format!("batch {id:?}'s {what} column is not Kathikon's ({e})"))
    };
    let templates: Callbacks =
        serde_json::from_str(row.get(2)).map_err(|e| corrupted("templates", e))?;
    let callbacks: Vec<Callback> =
        serde_json::from_str(row.get(3)).map_err(|e| corrupted("callbacks", e))?;
    let mut counts = [0u64; 7];
    let kept: Vec<i64> = row.get(4);
    for (state, n) in JobState::TERMINAL.into_iter().zip(kept) {
        counts[state as usize] += n as u64;
    }
    let codes: Option<Vec<i16>> = row.get(5);
    let members: Option<Vec<i64>> = row.get(6);
    for (code, n) in codes.unwrap_or_default().into_iter().zip(members.unwrap_or_default()) {
        let i = usize::try_from(code).ok().filter(|i| *i < counts.len()).ok_or_else(|| {
            Error::Storage(format!(
                "batch {id:?} has members in state number {code}, which no \
                 Kathikon state has"
            ))
        })?;
        counts[i] += n as u64;
    }
    let status = BatchStatus {
        id: id.to_string(),
        created_at: row.get(0),
        counts,
        finished_at: row.get(1),
        callbacks,
    };
    Ok(StoredBatch { status, templates })
}

/// Batch `id`'s status ([`crate::Jobs::batch`]), or [`Error::BatchNotFound`].
pub(crate) fn status(client: &mut impl GenericClient, id: &str) -> Result<BatchStatus> {
    read(client, id)?.map(|b| b.status).ok_or_else(|| Error::BatchNotFound(id.to_string()))
}
