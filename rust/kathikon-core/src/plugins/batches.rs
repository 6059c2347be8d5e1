//! The batches plugin: moves each batch's counts by its members' changes of state, and
//! finishes a batch, inserting its callbacks, in the same transaction as the change that
//! finished its last member (`crate::batch`).
//!
//! Every put or delete of a member records a move in the transaction
//! ([`WriteTxn::take_batch_moves`]); the step, last of the batch, takes them all, whichever
//! command, plugin or caller's batch made them, and rewrites each batch they touch once. A
//! batch that fails to commit loses its moves with its changes, so the counts never drift
//! from the members.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::batch::StoredBatch;
use crate::clock::Micros;
use crate::error::Result;
use crate::job::Job;
use crate::state::JobState;
use crate::storage::{BatchMove, EntryKind, WriteTxn};
use crate::writer::Effects;

pub(crate) struct Batches;

/// A member's change: the state it left and the state it entered (see [`BatchMove`]).
type Change = (Option<JobState>, Option<JobState>);

impl Plugin for Batches {
    fn phase(&self) -> Phase {
        Phase::AfterCommands
    }

    fn next_step(&self, _: Now) -> Option<Instant> {
        None
    }

    fn step(&mut self, txn: &mut dyn WriteTxn, batch: &Batch, effects: &mut Effects) -> Result<()> {
        settle(txn, batch.now.micros, &mut |job| effects.ready(job))
    }

    fn finished(&mut self, _: &Batch, _: Option<&Committed<'_>>) {}
}

/// Apply the batch moves `txn` made so far to their batches, and finish each batch whose last
/// member finished, inserting its callbacks at `now`; `ready` is told of each callback job
/// stored available. Whatever writes jobs in a transaction of its own (the engine's open,
/// rescuing what a dead process left executing) calls this before committing too.
pub(crate) fn settle(
    txn: &mut dyn WriteTxn,
    now: Micros,
    ready: &mut dyn FnMut(&Job),
) -> Result<()> {
    let moves = txn.take_batch_moves();
    if moves.is_empty() {
        return Ok(());
    }
    let mut by_batch: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for BatchMove { batch, from, to } in moves {
        by_batch.entry(batch).or_default().push((from, to));
    }
    for (id, moves) in by_batch {
        // A member whose batch entry is gone or damaged moves no counts: the batch's status
        // then reads as not found or damaged, and its jobs still run.
        let Some(entry) = txn.entry(EntryKind::Batch, &id)? else { continue };
        let Ok(mut stored) = StoredBatch::decode(&id, &entry.value) else { continue };
        for (from, to) in moves {
            stored.moved(from, to);
        }
        for (event, new) in stored.finish(now) {
            let job_id = txn.allocate_ids(1)?;
            let job = new.into_job(job_id, now);
            txn.put(None, &job)?;
            if job.state == JobState::Available {
                ready(&job);
            }
            stored.fired(event, job_id);
        }
        txn.put_entry(EntryKind::Batch, &id, &stored.encode(), None)?;
    }
    Ok(())
}
