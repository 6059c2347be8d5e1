//! What firing a cron entry inserts, decided once for every store: the embedded writer's
//! plugin (`plugins/cron.rs`) and `PostgreSQL`'s leader (`pg/cron.rs`) both ask [`arm`] what
//! an entry does when a process starts firing it, and [`slots`] which jobs the slots that
//! came since insert; each store then writes the [`Firing`] in one transaction with the
//! entry's new last slot ([`Firing::last`]).
//!
//! Which slots fire, for an entry whose slots up to `after` are dealt with:
//! - arming with a stored slot `L` of the same expression and zone: the slots in `(L, now]`
//!   passed while no process fired them; [`CatchUp`] decides (skip: none, once: one job for
//!   them all, all: one job each, the newest `catch_up_limit`);
//! - arming without one (new, or its expression or zone changed): none; its first slot is
//!   the next after now. `@reboot` fires once, now;
//! - running: the slots in `(after, now]`. The newest is on time; any older ones were missed
//!   while the store could not fire (a stalled disk, a suspended machine, a manual clock
//!   moved far), and [`CatchUp`] decides about them as about a downtime: skip fires the
//!   newest alone, once one job for them all, all one each.

use serde_json::{json, Map, Value};

use super::{CatchUp, CronEntry, CronSlot, Schedule, MAX_COUNTED};
use crate::clock::Micros;
use crate::job::NewJob;

/// The jobs one firing of an entry inserts, and the slot it stores as the entry's last.
pub(crate) struct Firing {
    /// Each job with the slot it stands for, oldest slot first.
    pub(crate) jobs: Vec<(Micros, NewJob)>,
    /// The entry's last slot once these are inserted: no slot at or before it fires again.
    pub(crate) last: CronSlot,
}

/// Arm `entry` at `now`, given the slot stored as its last (if any): the time up to which its
/// slots are dealt with, and what to insert first.
pub(crate) fn arm(
    entry: &CronEntry,
    schedule: &Schedule,
    stored: Option<CronSlot>,
    now: Micros,
) -> (Micros, Option<Firing>) {
    if schedule.is_reboot() {
        return (now, Some(reboot(entry, schedule, now)));
    }
    let stored =
        stored.filter(|s| s.expression == entry.expression && s.timezone == entry.timezone);
    match stored {
        Some(stored) if stored.slot >= now => (stored.slot, None),
        Some(stored) => (now, slots(entry, schedule, stored.slot, now, false)),
        None => (now, None),
    }
}

/// `@reboot`'s one firing, at `now`; its time is stored as the entry's last slot (for reads:
/// it never decides a later firing).
pub(crate) fn reboot(entry: &CronEntry, schedule: &Schedule, now: Micros) -> Firing {
    Firing { jobs: vec![(now, job(entry, schedule, now, None))], last: last(entry, now) }
}

/// The jobs for `entry`'s slots in `(after, now]`, if any: `on_time` when the newest of them
/// is the slot the store woke for (the older ones, if any, were missed), not when arming
/// after a downtime (all were missed). [`CatchUp`] decides which jobs the missed ones get.
pub(crate) fn slots(
    entry: &CronEntry,
    schedule: &Schedule,
    after: Micros,
    now: Micros,
    on_time: bool,
) -> Option<Firing> {
    let keep = match entry.catch_up {
        CatchUp::Skip if on_time => 1,
        CatchUp::Skip => return None,
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
    let &newest = kept.first()?;
    let jobs = match entry.catch_up {
        CatchUp::Skip => vec![(newest, job(entry, schedule, newest, None))],
        CatchUp::Once => {
            kept.reverse();
            let missed = (count > 1 || !on_time).then_some((count, kept.as_slice()));
            vec![(newest, job(entry, schedule, newest, missed))]
        }
        CatchUp::All => kept.iter().rev().map(|&s| (s, job(entry, schedule, s, None))).collect(),
    };
    Some(Firing { jobs, last: last(entry, newest) })
}

/// `entry`'s last slot stored as `slot`.
fn last(entry: &CronEntry, slot: Micros) -> CronSlot {
    CronSlot {
        name: entry.name.clone(),
        slot,
        expression: entry.expression.clone(),
        timezone: entry.timezone.clone(),
    }
}

/// `entry`'s job for `slot` (standing for the `missed` slots too, when given: their count and
/// the newest `catch_up_limit` of their times, oldest first). Its `meta["cron"]` says which
/// entry and slot it is.
fn job(
    entry: &CronEntry,
    schedule: &Schedule,
    slot: Micros,
    missed: Option<(usize, &[Micros])>,
) -> NewJob {
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
    NewJob { meta: Value::Object(meta).to_string(), ..entry.job.clone() }
}
