//! Metrics history: writes the counts the verbs record in memory (see [`crate::metrics`]) as
//! one [`EntryKind::Metrics`] entry per (queue, minute) once the minute is over, or at once
//! when the batch asks ([`Batch::flush`]: a reader, or the engine closing), and deletes the
//! entries that expired, from the expiry index, in the same step.
//!
//! A minute's entry is written once when it ends (plus once per reader's flush while it
//! runs), never per ack. The step runs in the writer thread's batches only, unless the batch
//! asks for a flush, so a caller leading its own batch never pays for it.

use std::time::Instant;

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::clock::Micros;
use crate::error::Result;
use crate::metrics::MINUTE;
use crate::storage::{EntryKind, WriteTxn};
use crate::writer::Effects;

/// Most expired entries deleted per step (a day of a few queues; more wait for the next).
const EXPIRE_LIMIT: usize = 10_000;

pub(crate) struct MetricsPlugin {
    /// The earliest minute held in memory, as the last committed batch left it.
    earliest: Option<Micros>,
}

impl MetricsPlugin {
    pub(crate) fn new() -> MetricsPlugin {
        MetricsPlugin { earliest: None }
    }
}

impl Plugin for MetricsPlugin {
    fn phase(&self) -> Phase {
        Phase::AfterCommands
    }

    /// When the earliest minute held is over.
    fn next_step(&self, now: Now) -> Option<Instant> {
        now.instant_of(self.earliest? + MINUTE)
    }

    fn step(&mut self, txn: &mut dyn WriteTxn, batch: &Batch, effects: &mut Effects) -> Result<()> {
        let over = self.earliest.is_some_and(|m| m + MINUTE <= batch.now.micros);
        if !(batch.flush || over && !batch.led) {
            return Ok(());
        }
        effects.rollup.flush(txn, batch.now.micros, batch.flush)?;
        // Progress reports and rate windows expire on the same schedule.
        for kind in [EntryKind::Metrics, EntryKind::Progress, EntryKind::RateWindow] {
            for name in txn.expired_entries(kind, batch.now.micros, EXPIRE_LIMIT)? {
                txn.remove_entry(kind, &name)?;
            }
        }
        Ok(())
    }

    fn finished(&mut self, _: &Batch, committed: Option<&Committed<'_>>) {
        if let Some(committed) = committed {
            self.earliest = committed.effects.rollup.earliest();
        }
    }
}
