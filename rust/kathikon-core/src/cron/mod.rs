//! Cron: jobs inserted on the slots of a cron expression, declared in code as a crontab.
//!
//! A [`CronEntry`] names an expression, its time zone, what to do about slots that passed
//! while no process owned the store ([`CatchUp`]), and the job each firing inserts. The app
//! hands its whole crontab to the store with [`crate::Jobs::set_crontab`]; the process that
//! owns the store fires it from a plugin of its writer (`plugins/cron.rs`), which inserts each
//! slot's job and stores the slot as the entry's last ([`CronSlot`], an
//! [`crate::storage::EntryKind::Cron`] entry) in the same transaction. Whoever owns the store
//! next reads that slot back, so no slot is inserted twice across restarts and takeovers.

pub(crate) mod firing;
mod schedule;
mod stored;

pub use schedule::{Schedule, REBOOT};
pub use stored::CronSlot;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::NewJob;

/// Most missed slots one catch-up walks back over to count them (`once` reports the count, at
/// most this); bounds the work of one writer step after a long downtime.
pub const MAX_COUNTED: usize = 10_000;

/// The default [`CronEntry::catch_up_limit`].
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 100;

/// What an owner does about an entry's slots that passed while no process owned the store (or
/// while its writer could not run), when it next can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CatchUp {
    /// Missed slots insert nothing; the next slot fires as usual.
    #[default]
    Skip,
    /// One job for all the missed slots: the newest is its slot, and `meta["cron"]["missed"]`
    /// has their count and times.
    Once,
    /// One job per missed slot, the newest [`CronEntry::catch_up_limit`] of them.
    All,
}

impl CatchUp {
    /// Every policy's name, in declaration order (the values of Python's `catch_up=`).
    pub const NAMES: [&'static str; 3] = ["skip", "once", "all"];

    /// This policy's name, one of [`CatchUp::NAMES`].
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => Self::NAMES[0],
            CatchUp::Once => Self::NAMES[1],
            CatchUp::All => Self::NAMES[2],
        }
    }

    /// The policy named `name`, if it is one of [`CatchUp::NAMES`].
    pub fn from_name(name: &str) -> Option<CatchUp> {
        [CatchUp::Skip, CatchUp::Once, CatchUp::All].into_iter().find(|c| c.as_str() == name)
    }
}

/// One line of the crontab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronEntry {
    /// Unique within the crontab; the stored last slot is kept under it.
    pub name: String,
    /// The cron expression (see [`Schedule`]).
    pub expression: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// What to do about slots missed while no process owned the store.
    pub catch_up: CatchUp,
    /// Most jobs one catch-up inserts (`all`), or slot times it lists (`once`); at least 1.
    pub catch_up_limit: u32,
    /// The job each firing inserts; its `meta` gains `"cron"`, and `scheduled_at` must be
    /// `None` (it runs when its slot comes).
    pub job: NewJob,
}

impl CronEntry {
    /// Check the entry and parse its expression. [`Error::InvalidJob`] names the bad value.
    pub fn schedule(&self) -> Result<Schedule> {
        let bad = |what: String| Error::InvalidJob(format!("cron entry {:?}: {what}", self.name));
        if self.name.is_empty() {
            return Err(Error::InvalidJob("a cron entry's name is empty; name it".into()));
        }
        if self.catch_up_limit == 0 {
            return Err(bad("catch_up_limit=0; pass at least 1".into()));
        }
        if self.job.scheduled_at.is_some() {
            return Err(bad("its job has a scheduled time; a cron job runs at its slot".into()));
        }
        self.job.validate().map_err(|e| bad(e.to_string()))?;
        let schedule = Schedule::parse(&self.expression, &self.timezone).map_err(bad)?;
        if !schedule.is_reboot() && schedule.next_after(0).is_none() {
            return Err(bad(format!(
                "cron expression {:?} names no time that exists (such as February 31); fix \
                 the day or month",
                self.expression
            )));
        }
        if serde_json::from_str::<serde_json::Value>(&self.job.meta)
            .is_ok_and(|m| !(m.is_object() || m.is_null()))
        {
            return Err(bad("its job's meta is not a JSON object".into()));
        }
        Ok(schedule)
    }

    /// Whether `other` fires on the same slots: same expression in the same zone.
    pub fn same_slots(&self, other: &CronEntry) -> bool {
        self.expression == other.expression && self.timezone == other.timezone
    }
}

/// Check every entry of a crontab, and that no two share a name; each with its schedule.
pub fn compile(entries: Vec<CronEntry>) -> Result<Vec<(CronEntry, Schedule)>> {
    let mut out: Vec<(CronEntry, Schedule)> = Vec::with_capacity(entries.len());
    for entry in entries {
        if out.iter().any(|(e, _)| e.name == entry.name) {
            return Err(Error::InvalidJob(format!(
                "two cron entries are named {:?}; give each entry its own name",
                entry.name
            )));
        }
        let schedule = entry.schedule()?;
        out.push((entry, schedule));
    }
    Ok(out)
}
