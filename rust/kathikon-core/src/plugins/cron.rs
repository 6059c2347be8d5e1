//! The cron plugin: fires the crontab of the process that owns the store.
//!
//! The app hands its crontab over with [`crate::Jobs::set_crontab`], which puts it in the
//! [`Crontab`] shared with this plugin; the next batch's step arms it: each entry reads the
//! last slot stored under its name (an [`EntryKind::Cron`] entry) and decides about the slots
//! that passed since ([`CatchUp`]). From then on the plugin knows the earliest next slot of
//! any entry ([`Plugin::next_step`]), so the writer wakes for it, and the step of the batch
//! at that time inserts the slot's job and stores the slot as the entry's last, in the same
//! transaction: a slot stored is a slot inserted, and a slot at or before the stored one never
//! fires again (an owner that takes over, restarts, or re-arms reads it back first). That is
//! the unique guard "entry name + slot" of every firing.
//!
//! Which slots each step fires, and the jobs they insert, are decided in `cron/firing.rs`,
//! shared with the other stores.
//!
//! The plugin's state changes only once its batch committed ([`Plugin::finished`]): a batch
//! that fails fired nothing, and the next one tries again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::clock::Micros;
use crate::cron::firing::{self, Firing};
use crate::cron::{CronEntry, CronSlot, Schedule};
use crate::error::Result;
use crate::job::JobId;
use crate::state::JobState;
use crate::storage::{EntryKind, WriteTxn};
use crate::telemetry::EngineEvent;
use crate::writer::Effects;

/// The crontab as last handed over, shared between the engine and its cron plugin.
#[derive(Default)]
pub(crate) struct Crontab {
    entries: Mutex<Arc<Vec<(CronEntry, Schedule)>>>,
    /// Bumped by every [`Crontab::install`]; the plugin arms when it differs from its own.
    generation: AtomicU64,
}

impl Crontab {
    /// Replace the crontab (checked entries, each with its schedule); the writer's next batch
    /// arms it.
    pub(crate) fn install(&self, entries: Vec<(CronEntry, Schedule)>) {
        let mut slot = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Arc::new(entries);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn latest(&self) -> (u64, Arc<Vec<(CronEntry, Schedule)>>) {
        let slot = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        (self.generation.load(Ordering::Acquire), slot.clone())
    }
}

/// An entry being fired: its slots up to `cursor` are dealt with, `next` comes next.
#[derive(Clone)]
struct Armed {
    entry: CronEntry,
    schedule: Schedule,
    cursor: Micros,
    next: Option<Micros>,
}

/// One job a step inserted, for telemetry once it commits.
struct Fired {
    name: String,
    slot: Micros,
    id: JobId,
    lateness_us: u64,
}

/// What a step decided, kept until its batch commits.
struct Staged {
    generation: u64,
    armed: Vec<Armed>,
    fired: Vec<Fired>,
}

pub(crate) struct CronPlugin {
    crontab: Arc<Crontab>,
    /// The crontab generation `armed` was armed from.
    installed: u64,
    armed: Vec<Armed>,
    /// The earliest `next` of `armed`.
    next: Option<Micros>,
    staged: Option<Staged>,
}

impl CronPlugin {
    pub(crate) fn new(crontab: Arc<Crontab>) -> CronPlugin {
        CronPlugin { crontab, installed: 0, armed: Vec::new(), next: None, staged: None }
    }

    /// Arm `entries` as of `now`, keeping the state of those already armed on the same slots.
    fn arm(
        &self,
        txn: &mut dyn WriteTxn,
        entries: &[(CronEntry, Schedule)],
        now: Micros,
        effects: &mut Effects,
        fired: &mut Vec<Fired>,
    ) -> Result<Vec<Armed>> {
        let mut armed = Vec::with_capacity(entries.len());
        for (entry, schedule) in entries {
            let kept = self.armed.iter().find(|a| a.entry.name == entry.name);
            if let Some(old) = kept.filter(|a| a.entry.same_slots(entry)) {
                armed.push(Armed { entry: entry.clone(), schedule: schedule.clone(), ..*old });
                continue;
            }
            let stored = txn
                .entry(EntryKind::Cron, &entry.name)?
                .and_then(|e| CronSlot::decode(&entry.name, &e.value));
            let (cursor, firing) = firing::arm(entry, schedule, stored, now);
            if let Some(firing) = firing {
                write(txn, firing, now, effects, fired)?;
            }
            let next = schedule.next_after(cursor);
            armed.push(Armed { entry: entry.clone(), schedule: schedule.clone(), cursor, next });
        }
        Ok(armed)
    }
}

impl Plugin for CronPlugin {
    fn phase(&self) -> Phase {
        Phase::BeforeCommands
    }

    fn next_step(&self, now: Now) -> Option<Instant> {
        if self.crontab.generation.load(Ordering::Acquire) != self.installed {
            return Some(now.instant);
        }
        now.instant_of(self.next?)
    }

    fn step(&mut self, txn: &mut dyn WriteTxn, batch: &Batch, effects: &mut Effects) -> Result<()> {
        self.staged = None;
        let now = batch.now.micros;
        let changed = self.crontab.generation.load(Ordering::Acquire) != self.installed;
        if !changed && self.next.is_none_or(|next| next > now) {
            return Ok(());
        }
        let mut fired = Vec::new();
        let (generation, mut armed) = if changed {
            let (generation, entries) = self.crontab.latest();
            (generation, self.arm(txn, &entries, now, effects, &mut fired)?)
        } else {
            (self.installed, self.armed.clone())
        };
        for a in armed.iter_mut().filter(|a| a.next.is_some_and(|next| next <= now)) {
            if let Some(firing) = firing::slots(&a.entry, &a.schedule, a.cursor, now, true) {
                write(txn, firing, now, effects, &mut fired)?;
            }
            a.cursor = now;
            a.next = a.schedule.next_after(now);
        }
        self.staged = Some(Staged { generation, armed, fired });
        Ok(())
    }

    fn finished(&mut self, _: &Batch, committed: Option<&Committed<'_>>) {
        let staged = self.staged.take();
        let (Some(committed), Some(staged)) = (committed, staged) else { return };
        self.installed = staged.generation;
        self.armed = staged.armed;
        self.next = self.armed.iter().filter_map(|a| a.next).min();
        for Fired { name, slot, id, lateness_us } in staged.fired {
            committed.telemetry.emit(|| EngineEvent::CronInsert { name, slot, id, lateness_us });
        }
    }
}

/// Insert `firing`'s jobs at `now` and store its slot as the entry's last, in the batch's
/// transaction: a slot stored is a slot inserted.
fn write(
    txn: &mut dyn WriteTxn,
    firing: Firing,
    now: Micros,
    effects: &mut Effects,
    fired: &mut Vec<Fired>,
) -> Result<()> {
    let name = &firing.last.name;
    for (slot, new) in firing.jobs {
        let id = txn.allocate_ids(1)?;
        let job = new.into_job(id, now);
        txn.put(None, &job)?;
        if job.state == JobState::Available {
            effects.ready(&job);
        }
        let lateness_us = (now - slot).max(0) as u64;
        fired.push(Fired { name: name.clone(), slot, id, lateness_us });
    }
    txn.put_entry(EntryKind::Cron, name, &firing.last.encode(), None)
}
