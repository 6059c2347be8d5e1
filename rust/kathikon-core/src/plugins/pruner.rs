//! The pruner: deletes finished jobs (completed, cancelled, discarded) older than the
//! retention, and forgets insert request ids older than [`REQUEST_MEMORY`], every prune
//! interval.
//!
//! A step deletes at most [`PRUNE_LIMIT`] jobs, oldest first (the store's `finished` index),
//! after the batch's commands, so a long backlog never stalls a batch for long; a full step
//! asks for the next one at once. It runs only in the writer thread's batches: a caller that
//! applies its own batch never waits for it.
//!
//! A caller's explicit `prune(age)` is a job verb (`writer/verbs.rs`); it deletes with
//! [`prune_chunk`] too, and its count is reported in the same `PrunerTick`.

use std::time::{Duration, Instant};

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::clock::Micros;
use crate::error::Result;
use crate::request::REQUEST_MEMORY;
use crate::storage::WriteTxn;
use crate::telemetry::EngineEvent;
use crate::writer::Effects;

/// Most finished jobs deleted per chunk, so pruning never stalls a batch for long.
pub(crate) const PRUNE_LIMIT: usize = 10_000;

pub(crate) struct Pruner {
    retention: Duration,
    interval: Duration,
    next_run: Instant,
    /// Jobs deleted by this batch's step, if it ran.
    pruned: Option<u64>,
    /// Whether this batch's step forgot a full chunk of request ids.
    requests_full: bool,
}

impl Pruner {
    /// A pruner deleting jobs finished more than `retention` ago, every `interval`.
    pub(crate) fn new(retention: Duration, interval: Duration) -> Pruner {
        Pruner {
            retention,
            interval,
            next_run: Instant::now() + interval,
            pruned: None,
            requests_full: false,
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
        let retention = self.retention.as_micros() as Micros;
        let pruned = prune_chunk(txn, batch.now.micros - retention)?;
        // Request ids past their memory go too: a resend comes within seconds of the first
        // send (`crate::request`). A full chunk of them asks for the next step at once.
        let memory = REQUEST_MEMORY.as_micros() as Micros;
        let forgotten = txn.forget_requests(batch.now.micros - memory, PRUNE_LIMIT)?;
        self.requests_full = forgotten >= PRUNE_LIMIT as u64;
        effects.pruned += pruned;
        self.pruned = Some(pruned);
        Ok(())
    }

    fn finished(&mut self, batch: &Batch, committed: Option<&Committed<'_>>) {
        // Whatever became of the step (or if the writer refused the batch), the next comes
        // after the interval, or at once when this one was full.
        let full = self.pruned.take().is_some_and(|n| n >= PRUNE_LIMIT as u64)
            || std::mem::take(&mut self.requests_full);
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

/// Delete up to [`PRUNE_LIMIT`] jobs that finished at or before `before`, oldest first;
/// returns how many.
pub(crate) fn prune_chunk(txn: &mut dyn WriteTxn, before: Micros) -> Result<u64> {
    let mut pruned = 0;
    for id in txn.finished(before, PRUNE_LIMIT)? {
        if let Some(job) = txn.get(id)? {
            txn.remove(&job)?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::job::tests::new_job;
    use crate::job::Outcome;
    use crate::jobs::Jobs;
    use crate::storage::{RedbStore, Store};
    use crate::{Ack, Engine, EngineConfig};

    fn batch(led: bool) -> Batch {
        Batch { now: Now { micros: 0, instant: Instant::now() }, as_of: 0, led }
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
