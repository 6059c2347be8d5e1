//! Plugins: the engine's periodic work (the [`scheduler`] promoting due jobs, the [`pruner`]
//! deleting old finished ones), each behind the one [`Plugin`] trait that the writer drives.
//!
//! A plugin is not a thread and has no transaction of its own. It rides on the writer's
//! batches: in every batch the writer applies (on its thread, or on a caller's that found it
//! idle, see `writer::lead`), each plugin runs one [`Plugin::step`] inside the batch's write
//! transaction, before or after the batch's commands (its [`Phase`]), and its changes commit
//! (and are answered for, and lost) with the batch's. Between batches the writer sleeps until
//! the earliest [`Plugin::next_step`] of any plugin or the next command, whichever comes
//! first; when a plugin's time comes and no command is waiting, the writer applies a batch
//! with no commands, for the plugins alone. So due work happens on time without polling rows,
//! and without a second writer racing this one for the store.
//!
//! A step may read and write any job through the [`WriteTxn`], and says what it did through
//! [`Effects`]: the jobs it made available (they reach the claim queues only after the commit)
//! and the counts its telemetry reports. After the batch, [`Plugin::finished`] tells the plugin
//! whether it committed; that is where it emits its telemetry and decides when it next wants a
//! step. Work that needs no transaction (a heartbeat event) goes in [`Plugin::tick`].
//!
//! What a plugin must not do:
//! - take long: it runs on the writer, inside a batch that callers wait for, so each step does
//!   a bounded chunk (at most some thousands of jobs) and asks for another step at once
//!   (`next_step` now) when more is waiting;
//! - block, wait for anyone, or take a lock a caller may hold: the writer never waits;
//! - trust what it read in a transaction that did not commit (`finished` with `None`);
//! - do work per job of the batch on the writer's behalf: one step per plugin per batch, so a
//!   batch of 4,096 claims pays for each plugin once.
//!
//! A batch that a caller applies itself is marked [`Batch::led`]: a plugin whose work is
//! housekeeping on a timer (the pruner) leaves such a batch alone, so a caller never waits for
//! it; the writer thread does it in its next batch.

pub(crate) mod batches;
pub(crate) mod cron;
pub(crate) mod metrics;
pub(crate) mod pruner;
pub(crate) mod scheduler;
pub(crate) mod unique;

use std::time::{Duration, Instant};

use crate::clock::{Clock, Micros};
use crate::error::Result;
use crate::storage::WriteTxn;
use crate::telemetry::Telemetry;
use crate::writer::Effects;

pub(crate) use batches::Batches;
pub(crate) use cron::{CronPlugin, Crontab};
pub(crate) use metrics::MetricsPlugin;
pub(crate) use pruner::Pruner;
pub(crate) use scheduler::Scheduler;
pub(crate) use unique::UniqueExpiry;

/// Where in a batch a plugin's step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the commands: the step sees the store as the last batch left it, and the
    /// commands see what it changed (a retry of a job the scheduler just promoted finds it
    /// available, as it would have in an earlier batch).
    BeforeCommands,
    /// After the commands: the step sees what they changed (a job retried in the batch is no
    /// longer finished, so the pruner leaves it).
    AfterCommands,
}

/// One moment on both clocks: the engine's (due times, job timestamps) and the monotonic one
/// the writer sleeps on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub micros: Micros,
    pub instant: Instant,
}

impl Now {
    pub(crate) fn of(clock: &dyn Clock) -> Now {
        Now { micros: clock.now(), instant: Instant::now() }
    }

    /// The moment engine time `at` comes, on the monotonic clock (now, if it has come). `None`
    /// if it lies beyond what an `Instant` can hold.
    pub(crate) fn instant_of(&self, at: Micros) -> Option<Instant> {
        self.instant.checked_add(Duration::from_micros((at - self.micros).max(0) as u64))
    }
}

/// What a step knows of the batch it runs in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    /// When the batch started.
    pub now: Now,
    /// The engine time due work acts as of: `now`, or later when a `Sync` barrier of the
    /// batch asked for it (tests' "run scheduled jobs now").
    pub as_of: Micros,
    /// A caller applies this batch itself (see `writer::lead`): timer housekeeping waits for
    /// the writer thread's next batch.
    pub led: bool,
    /// Write what is held in memory now (a reader asked, or the engine closes).
    pub flush: bool,
}

/// What a committed batch did, for the plugins' telemetry.
pub(crate) struct Committed<'a> {
    pub effects: &'a Effects,
    /// Time the batch's transaction took, commit included (shared by everything in it).
    pub duration_us: u64,
    pub telemetry: &'a Telemetry,
}

/// Periodic work the writer runs inside its batches. See the module doc for the rules.
pub(crate) trait Plugin: Send {
    /// Where in a batch [`Plugin::step`] runs. Asked once, when the writer gets the plugin.
    fn phase(&self) -> Phase;

    /// When the plugin next wants a step, as of `now` (`None`: not until a batch changes
    /// things). A time already past means at once: the writer applies a batch for it.
    fn next_step(&self, now: Now) -> Option<Instant>;

    /// One bounded step inside `batch`'s transaction. Runs in every batch, due or not: a step
    /// with nothing to do returns at once. An `Err` fails the whole batch.
    fn step(&mut self, txn: &mut dyn WriteTxn, batch: &Batch, effects: &mut Effects) -> Result<()>;

    /// Last in the transaction, after the commands and every plugin's step: read what decides
    /// the next step (the scheduler: the earliest due time). Nothing by default.
    fn look_ahead(&mut self, txn: &mut dyn WriteTxn) -> Result<()> {
        let _ = txn;
        Ok(())
    }

    /// After the batch: `Some` once it committed (callers answered, claim queues updated),
    /// `None` if it failed or the writer refused it, in which case nothing the plugin did or
    /// read in it counts.
    fn finished(&mut self, batch: &Batch, committed: Option<&Committed<'_>>);

    /// When the plugin next wants [`Plugin::tick`] (`None`: never).
    fn next_tick(&self) -> Option<Instant> {
        None
    }

    /// Work outside any transaction, on the writer thread once `next_tick` has come.
    fn tick(&mut self, telemetry: &Telemetry) {
        let _ = telemetry;
    }
}

/// Longest the writer sleeps when no plugin wants anything sooner.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// The writer's plugins, in the order they run within a phase.
pub(crate) struct Plugins {
    plugins: Vec<(Phase, Box<dyn Plugin>)>,
}

impl Plugins {
    pub(crate) fn new(plugins: Vec<Box<dyn Plugin>>) -> Plugins {
        Plugins { plugins: plugins.into_iter().map(|p| (p.phase(), p)).collect() }
    }

    /// The earliest step any plugin wants, as of `now`.
    pub(crate) fn next_step(&self, now: Now) -> Option<Instant> {
        self.plugins.iter().filter_map(|(_, p)| p.next_step(now)).min()
    }

    /// Whether some plugin wants a step now.
    pub(crate) fn due(&self, now: Now) -> bool {
        self.next_step(now).is_some_and(|at| at <= now.instant)
    }

    /// How long the writer may sleep, as of `now`, before a plugin wants a step or a tick.
    pub(crate) fn wait(&self, now: Now) -> Duration {
        let ticks = self.plugins.iter().filter_map(|(_, p)| p.next_tick());
        match self.next_step(now).into_iter().chain(ticks).min() {
            Some(at) => at.saturating_duration_since(now.instant).min(IDLE_WAIT),
            None => IDLE_WAIT,
        }
    }

    /// Run the steps of `phase` inside `batch`'s transaction.
    pub(crate) fn step(
        &mut self,
        phase: Phase,
        txn: &mut dyn WriteTxn,
        batch: &Batch,
        effects: &mut Effects,
    ) -> Result<()> {
        for (_, plugin) in self.plugins.iter_mut().filter(|(p, _)| *p == phase) {
            plugin.step(txn, batch, effects)?;
        }
        Ok(())
    }

    /// Every plugin's [`Plugin::look_ahead`], last in the transaction.
    pub(crate) fn look_ahead(&mut self, txn: &mut dyn WriteTxn) -> Result<()> {
        for (_, plugin) in &mut self.plugins {
            plugin.look_ahead(txn)?;
        }
        Ok(())
    }

    /// Tell every plugin how `batch` ended.
    pub(crate) fn finished(&mut self, batch: &Batch, committed: Option<&Committed<'_>>) {
        for (_, plugin) in &mut self.plugins {
            plugin.finished(batch, committed);
        }
    }

    /// Run the ticks that have come by `at`.
    pub(crate) fn tick(&mut self, at: Instant, telemetry: &Telemetry) {
        for (_, plugin) in &mut self.plugins {
            if plugin.next_tick().is_some_and(|t| at >= t) {
                plugin.tick(telemetry);
            }
        }
    }
}
