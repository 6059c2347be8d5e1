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
//! Which slots a step fires, for an entry whose slots up to `cursor` are dealt with:
//! - arming an entry with a stored slot `L` of the same expression and zone: the slots in
//!   `(L, now]` passed while no process fired them; [`CatchUp`] decides (skip: none, once: one
//!   job for them all, all: one job each, the newest `catch_up_limit`);
//! - arming an entry without one (new, or its expression or zone changed): none; its first
//!   slot is the next after now. `@reboot` fires once, now, each time an owner arms it;
//! - running: the slots in `(cursor, now]`. The newest is on time; any older ones were missed
//!   while the writer could not run (a stalled disk, a suspended machine, a manual clock moved
//!   far), and [`CatchUp`] decides about them as about a downtime: skip fires the newest
//!   alone, once one job for them all, all one each.
//!
//! The plugin's state changes only once its batch committed ([`Plugin::finished`]): a batch
//! that fails fired nothing, and the next one tries again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::clock::Micros;
use crate::cron::{CatchUp, CronEntry, CronSlot, Schedule, MAX_COUNTED};
use crate::error::Result;
use crate::job::{JobId, NewJob};
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
                .and_then(|e| CronSlot::decode(&entry.name, &e.value))
                .filter(|s| s.expression == entry.expression && s.timezone == entry.timezone);
            let mut cursor = now;
            if schedule.is_reboot() {
                let id = insert(txn, entry, schedule, now, None, now, effects)?;
                fired.push(Fired { name: entry.name.clone(), slot: now, id, lateness_us: 0 });
            } else if let Some(stored) = stored {
                if stored.slot >= now {
                    cursor = stored.slot;
                } else {
                    fire(txn, entry, schedule, stored.slot, now, false, effects, fired)?;
                }
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
            fire(txn, &a.entry, &a.schedule, a.cursor, now, true, effects, &mut fired)?;
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

/// Fire `entry`'s slots in `(after, now]`: `on_time` when the newest of them is the slot the
/// writer woke for (the older ones, if any, were missed), not when arming after a downtime
/// (all were missed). [`CatchUp`] decides which jobs the missed ones get.
#[allow(clippy::too_many_arguments)] // one step's context, passed down as it is
fn fire(
    txn: &mut dyn WriteTxn,
    entry: &CronEntry,
    schedule: &Schedule,
    after: Micros,
    now: Micros,
    on_time: bool,
    effects: &mut Effects,
    fired: &mut Vec<Fired>,
) -> Result<()> {
    let keep = match entry.catch_up {
        CatchUp::Skip if on_time => 1,
        CatchUp::Skip => return Ok(()),
        CatchUp::Once | CatchUp::All => entry.catch_up_limit as usize,
    };
    let counting = entry.catch_up == CatchUp::Once;
    // Newest first: the walk back stops at `after`, at `keep` slots (or, counting them, at
    // MAX_COUNTED), so a long downtime costs a bounded walk.
    let (mut kept, mut count) = (Vec::new(), 0usize);
    let mut slot = schedule.last_until(now);
    while let Some(s) = slot.filter(|&s| s > after) {
        if kept.len() == keep && (!counting || count == MAX_COUNTED) {
            break;
        }
        count += 1;
        if kept.len() < keep {
            kept.push(s);
        }
        slot = schedule.last_before(s);
    }
    let Some(&newest) = kept.first() else { return Ok(()) };
    let mut record = |slot: Micros, id: JobId| {
        let lateness_us = (now - slot).max(0) as u64;
        fired.push(Fired { name: entry.name.clone(), slot, id, lateness_us });
    };
    match entry.catch_up {
        CatchUp::Skip => {
            let id = insert(txn, entry, schedule, newest, None, now, effects)?;
            record(newest, id);
        }
        CatchUp::Once => {
            kept.reverse();
            let missed = (count > 1 || !on_time).then_some((count, kept.as_slice()));
            let id = insert(txn, entry, schedule, newest, missed, now, effects)?;
            record(newest, id);
        }
        CatchUp::All => {
            for &s in kept.iter().rev() {
                let id = insert(txn, entry, schedule, s, None, now, effects)?;
                record(s, id);
            }
        }
    }
    let last = CronSlot {
        name: entry.name.clone(),
        slot: newest,
        expression: entry.expression.clone(),
        timezone: entry.timezone.clone(),
    };
    txn.put_entry(EntryKind::Cron, &entry.name, &last.encode(), None)
}

/// Insert `entry`'s job for `slot` (standing for the `missed` slots too, when given: their
/// count and the newest `catch_up_limit` of their times, oldest first). The job's
/// `meta["cron"]` says which entry and slot it is. A `@reboot` firing also stores its time as
/// the entry's last slot (for reads; it never decides a later firing).
fn insert(
    txn: &mut dyn WriteTxn,
    entry: &CronEntry,
    schedule: &Schedule,
    slot: Micros,
    missed: Option<(usize, &[Micros])>,
    now: Micros,
    effects: &mut Effects,
) -> Result<JobId> {
    let mut cron = Map::new();
    cron.insert("name".into(), json!(entry.name));
    cron.insert("expression".into(), json!(entry.expression));
    cron.insert("slot".into(), json!(schedule.iso(slot)));
    if let Some((count, slots)) = missed {
        let times: Vec<String> = slots.iter().map(|&s| schedule.iso(s)).collect();
        cron.insert("missed".into(), json!({ "count": count, "slots": times }));
    }
    let mut meta = match serde_json::from_str::<Value>(&entry.job.meta) {
        Ok(Value::Object(meta)) => meta,
        _ => Map::new(),
    };
    meta.insert("cron".into(), Value::Object(cron));
    let new = NewJob { meta: Value::Object(meta).to_string(), ..entry.job.clone() };
    let id = txn.allocate_ids(1)?;
    let job = new.into_job(id, now);
    txn.put(None, &job)?;
    if job.state == JobState::Available {
        effects.ready(&job);
    }
    if schedule.is_reboot() {
        let last = CronSlot {
            name: entry.name.clone(),
            slot,
            expression: entry.expression.clone(),
            timezone: entry.timezone.clone(),
        };
        txn.put_entry(EntryKind::Cron, &entry.name, &last.encode(), None)?;
    }
    Ok(id)
}
