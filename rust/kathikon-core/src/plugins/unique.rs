//! Unique-key expiry: deletes the [`EntryKind::Unique`] entries whose period has passed, from
//! the store's expiry index (never a scan of jobs or keys), at most [`EXPIRE_LIMIT`] per step.
//!
//! Only housekeeping: the insert check compares the holder's `inserted_at` with the period
//! itself, so an expired entry still stored never blocks an insert. So the plugin runs in the
//! writer thread's batches only (never one a caller applies itself), when the earliest expiry
//! it knows of has come, and no sooner than [`SPACING`] after its last step, so that keys
//! expiring one by one are deleted in groups rather than a batch each.

use std::time::{Duration, Instant};

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::clock::Micros;
use crate::error::Result;
use crate::storage::{EntryKind, WriteTxn};
use crate::writer::Effects;

/// Most keys deleted per step.
pub(crate) const EXPIRE_LIMIT: usize = 10_000;

/// Least time between two steps that are not catching up on a full one.
const SPACING: Duration = Duration::from_secs(1);

pub(crate) struct UniqueExpiry {
    /// Whether `next` was read (it is not at open, nor after a batch that failed).
    known: bool,
    /// The earliest expiry of any stored key, when `known`.
    next: Option<Micros>,
    /// No step before this.
    not_before: Instant,
    /// What this batch's step did: how many it deleted, if it ran.
    deleted: Option<usize>,
    /// The earliest expiry as this batch's step left it.
    found: Option<Micros>,
}

impl UniqueExpiry {
    pub(crate) fn new() -> UniqueExpiry {
        UniqueExpiry {
            known: false,
            next: None,
            not_before: Instant::now(),
            deleted: None,
            found: None,
        }
    }

    fn due(&self, now: Now) -> Option<Instant> {
        let at = if self.known {
            now.instant_of(self.next?)?
        } else {
            now.instant // not read yet: look at the first chance
        };
        Some(at.max(self.not_before))
    }
}

impl Plugin for UniqueExpiry {
    fn phase(&self) -> Phase {
        Phase::AfterCommands
    }

    fn next_step(&self, now: Now) -> Option<Instant> {
        self.due(now)
    }

    fn step(&mut self, txn: &mut dyn WriteTxn, batch: &Batch, _: &mut Effects) -> Result<()> {
        if batch.led || self.due(batch.now).is_none_or(|at| at > batch.now.instant) {
            return Ok(());
        }
        let expired = txn.expired_entries(EntryKind::Unique, batch.as_of, EXPIRE_LIMIT)?;
        for name in &expired {
            txn.remove_entry(EntryKind::Unique, name)?;
        }
        self.deleted = Some(expired.len());
        self.found = txn.next_expiry(EntryKind::Unique)?;
        Ok(())
    }

    fn finished(&mut self, _: &Batch, committed: Option<&Committed<'_>>) {
        let (deleted, found) = (self.deleted.take(), self.found.take());
        let Some(committed) = committed else {
            // Nothing read or written in a failed batch counts: read again.
            self.known = false;
            return;
        };
        if let Some(deleted) = deleted {
            (self.known, self.next) = (true, found);
            let full = deleted >= EXPIRE_LIMIT;
            self.not_before = Instant::now() + if full { Duration::ZERO } else { SPACING };
        }
        if let Some(at) = committed.effects.unique_expiry {
            self.next = Some(self.next.map_or(at, |n| n.min(at)));
        }
    }
}
