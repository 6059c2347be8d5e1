//! The pruner: deletes finished jobs (completed, cancelled, discarded) older than their
//! state's retention, and forgets insert request ids older than [`REQUEST_MEMORY`], every
//! prune interval.
//!
//! A step deletes at most [`PRUNE_LIMIT`] jobs per chunk, oldest first (the store's `finished`
//! index, keyed `(finished_at, id)` over every terminal state), after the batch's commands, so
//! a long backlog never stalls a batch for long; a full chunk asks for the next step at once.
//! It runs only in the writer thread's batches: a caller that applies its own batch never
//! waits for it.
//!
//! Retention per state ([`Retention`]) never makes a step re-read the jobs it keeps. Every job
//! finished before the longest period goes, whatever its state: that chunk reads only jobs it
//! deletes. Between that cutoff and each shorter period's cutoff, a job goes only if its own
//! state's period has passed, so its state is read; a cursor per shorter period remembers
//! the last key it read, and the next step reads on from there. Every key is read at most
//! once per shorter period (two at most) until the longest cutoff passes it. A key that lands
//! behind a cursor (the clock moved back) waits for the longest cutoff: kept longer, never
//! deleted early.
//!
//! A caller's explicit `prune(age)` is a job verb (`writer/verbs.rs`); it deletes with
//! [`prune_chunk`] too, and its count is reported in the same `PrunerTick`.

use std::time::{Duration, Instant};

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::clock::Micros;
use crate::error::Result;
use crate::job::JobId;
use crate::request::REQUEST_MEMORY;
use crate::retention::Retention;
use crate::storage::WriteTxn;
use crate::telemetry::EngineEvent;
use crate::writer::Effects;

/// Most finished jobs deleted (or read, for a shorter period) per chunk, so pruning never
/// stalls a batch for long.
pub(crate) const PRUNE_LIMIT: usize = 10_000;

/// A key of the store's `finished` index.
type FinishedKey = (Micros, JobId);

pub(crate) struct Pruner {
    retention: Retention,
    interval: Duration,
    next_run: Instant,
    /// Each of `retention.shorter()`'s periods, with the last key a step read for it.
    cursors: Vec<(Duration, Option<FinishedKey>)>,
    /// The cursors before this batch's step, put back if the batch does not commit.
    committed_cursors: Option<Vec<(Duration, Option<FinishedKey>)>>,
    /// Jobs deleted by this batch's step, if it ran.
    pruned: Option<u64>,
    /// Whether a chunk of this batch's step (jobs of a shorter period, request ids) was full.
    more: bool,
}

impl Pruner {
    /// A pruner deleting jobs finished longer ago than their state's `retention`, every
    /// `interval`.
    pub(crate) fn new(retention: impl Into<Retention>, interval: Duration) -> Pruner {
        let retention = retention.into();
        Pruner {
            retention,
            interval,
            next_run: Instant::now() + interval,
            cursors: retention.shorter().map(|period| (period, None)).collect(),
            committed_cursors: None,
            pruned: None,
            more: false,
        }
    }

    /// Whether `batch` is one this pruner steps in.
    fn runs_in(&self, batch: &Batch) -> bool {
        !batch.led && batch.now.instant >= self.next_run
    }
}

impl Plugin for Pruner {
    fn phase(&self) -> Phase {
        Phase::AfterCommands
    }

    fn next_step(&self, _: Now) -> Option<Instant> {
        Some(self.next_run)
    }

    fn step(&mut self, txn: &mut dyn WriteTxn, batch: &Batch, effects: &mut Effects) -> Result<()> {
        if !self.runs_in(batch) {
            return Ok(());
        }
        let now = batch.now.micros;
        let floor = cutoff(now, self.retention.longest());
        let mut pruned = prune_chunk(txn, floor)?;
        if !self.cursors.is_empty() {
            self.committed_cursors = Some(self.cursors.clone());
        }
        for (period, cursor) in &mut self.cursors {
            let until = cutoff(now, *period);
            let (n, read) = prune_shorter(txn, &self.retention, cursor, floor, until, now)?;
            pruned += n;
            self.more |= read >= PRUNE_LIMIT;
        }
        // Request ids past their memory go too: a resend comes within seconds of the first
        // send (`crate::request`). A full chunk of them asks for the next step at once.
        let forgotten = txn.forget_requests(cutoff(now, REQUEST_MEMORY), PRUNE_LIMIT)?;
        self.more |= forgotten >= PRUNE_LIMIT as u64;
        effects.pruned += pruned;
        self.pruned = Some(pruned);
        Ok(())
    }

    fn finished(&mut self, batch: &Batch, committed: Option<&Committed<'_>>) {
        // Whatever became of the step (or if the writer refused the batch), the next comes
        // after the interval, or at once when a chunk of this one was full. A batch that did
        // not commit deleted nothing, so the cursors go back to where they were.
        if let Some(cursors) = self.committed_cursors.take() {
            if committed.is_none() {
                self.cursors = cursors;
            }
        }
        let full = self.pruned.take().is_some_and(|n| n >= PRUNE_LIMIT as u64)
            || std::mem::take(&mut self.more);
        if self.runs_in(batch) {
            self.next_run = Instant::now() + if full { Duration::ZERO } else { self.interval };
        }
        // The count includes a caller's `prune` in the batch.
        if let Some(committed) = committed {
            let pruned = committed.effects.pruned;
            if pruned > 0 {
                let duration_us = committed.duration_us;
                committed.telemetry.emit(|| EngineEvent::PrunerTick { pruned, duration_us });
            }
        }
    }
}

/// `now` less `period`, saturating (a period of centuries reaches before any job).
fn cutoff(now: Micros, period: Duration) -> Micros {
    now.saturating_sub(Micros::try_from(period.as_micros()).unwrap_or(Micros::MAX))
}

/// Delete up to [`PRUNE_LIMIT`] jobs that finished at or before `before`, oldest first;
/// returns how many.
pub(crate) fn prune_chunk(txn: &mut dyn WriteTxn, before: Micros) -> Result<u64> {
    let mut pruned = 0;
    for (_, id) in txn.finished(None, before, PRUNE_LIMIT)? {
        if let Some(job) = txn.get(id)? {
            txn.remove(&job)?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Read up to [`PRUNE_LIMIT`] keys finished after both `cursor` and `floor` and at or before
/// `until`, delete the jobs among them whose state's retention has passed at `now`, and move
/// `cursor` to the last key read. Returns how many went, and how many keys it read.
fn prune_shorter(
    txn: &mut dyn WriteTxn,
    retention: &Retention,
    cursor: &mut Option<FinishedKey>,
    floor: Micros,
    until: Micros,
    now: Micros,
) -> Result<(u64, usize)> {
    let past_floor = (floor, JobId::MAX);
    let start = cursor.map_or(past_floor, |key| key.max(past_floor));
    let keys = txn.finished(Some(start), until, PRUNE_LIMIT)?;
    let mut pruned = 0;
    for &(finished_at, id) in &keys {
        let Some(job) = txn.get(id)? else { continue };
        if retention.of(job.state).is_some_and(|period| finished_at <= cutoff(now, period)) {
            txn.remove(&job)?;
            pruned += 1;
        }
    }
    if let Some(last) = keys.last() {
        *cursor = Some(*last);
    }
    Ok((pruned, keys.len()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::job::tests::new_job;
    use crate::job::Outcome;
    use crate::jobs::Jobs;
    use crate::state::JobState;
    use crate::storage::{RedbStore, Store};
    use crate::{Ack, Engine, EngineConfig};

    fn batch(led: bool) -> Batch {
        Batch { now: Now { micros: 0, instant: Instant::now() }, as_of: 0, led, flush: false }
    }

    #[test]
    fn a_full_step_asks_for_the_next_at_once_and_a_partial_one_waits_the_interval() {
        let hour = Duration::from_secs(3600);
        let mut pruner = Pruner::new(hour, Duration::ZERO);
        pruner.interval = hour;
        pruner.pruned = Some(PRUNE_LIMIT as u64);
        pruner.finished(&batch(false), None);
        assert!(pruner.next_run <= Instant::now(), "a full step must be followed at once");
        pruner.pruned = Some(PRUNE_LIMIT as u64 - 1);
        pruner.finished(&batch(false), None);
        assert!(pruner.next_run > Instant::now() + hour / 2, "the next step must wait");
    }

    #[test]
    fn a_batch_a_caller_leads_is_left_to_the_writer_thread() {
        let store = RedbStore::open(None, false).unwrap();
        let mut pruner = Pruner::new(Duration::ZERO, Duration::ZERO);
        let mut effects = Effects::default();
        store.write(&mut |txn| pruner.step(txn, &batch(true), &mut effects)).unwrap();
        assert_eq!(pruner.pruned, None, "stepped in a caller's batch");
        let due = pruner.next_run;
        pruner.finished(&batch(true), None);
        assert_eq!(pruner.next_run, due, "a caller's batch moved the pruner's time");
        store.write(&mut |txn| pruner.step(txn, &batch(false), &mut effects)).unwrap();
        assert_eq!(pruner.pruned, Some(0));
    }

    #[test]
    fn a_shorter_period_reads_each_kept_job_once() {
        const HOUR: Micros = 3_600_000_000;
        let retention =
            Retention::default().with(JobState::Completed, Duration::from_secs(3600)).unwrap();
        let store = RedbStore::open(None, false).unwrap();
        let finished = |txn: &mut dyn WriteTxn, id: JobId, outcome: Outcome, at: Micros| {
            let mut job = new_job().into_job(id, at);
            job.claim(at).unwrap();
            job.finish(outcome, at).unwrap();
            txn.put(None, &job)
        };
        let discard = || Outcome::Discard { reason: "no".into() };
        store
            .write(&mut |txn| {
                for id in 1..=3 {
                    finished(txn, id, discard(), 0)?;
                }
                finished(txn, 4, Outcome::Complete, 0)
            })
            .unwrap();
        let mut cursor = None;
        let mut step = |now: Micros| {
            let mut out = (0, 0);
            store
                .write(&mut |txn| {
                    out = prune_shorter(txn, &retention, &mut cursor, -HOUR, now - HOUR, now)?;
                    Ok(())
                })
                .unwrap();
            out
        };
        assert_eq!(step(2 * HOUR), (1, 4), "the completed job goes, the discarded are read");
        assert_eq!(step(3 * HOUR), (0, 0), "the kept jobs were read again");
        store.write(&mut |txn| finished(txn, 5, Outcome::Complete, HOUR)).unwrap();
        assert_eq!(step(4 * HOUR), (1, 1), "only the newly finished job is read");
    }

    #[test]
    fn a_callers_prune_is_reported_as_a_pruner_tick() {
        let engine = Engine::open(EngineConfig {
            prune_interval: Duration::from_secs(3600),
            ..EngineConfig::default()
        })
        .unwrap();
        let mut job = new_job();
        job.queue = "q".into();
        engine.insert(vec![job.clone(), job]).unwrap();
        let claimed = engine.claim("q", 2, Duration::from_secs(10)).unwrap();
        let acks = claimed
            .iter()
            .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
            .collect();
        engine.ack(acks).unwrap();
        engine.set_events(true);
        assert_eq!(engine.prune(Duration::ZERO).unwrap(), 2);
        let events = engine.next_events(Duration::from_secs(1));
        assert!(
            matches!(events[..], [crate::EngineEvent::PrunerTick { pruned: 2, .. }]),
            "{events:?}"
        );
    }
}
