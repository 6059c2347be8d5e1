//! Events the engine's own threads report (scheduler, pruner). What the open rescued is
//! returned by `Engine::recovery` instead: it happens before anyone can listen.
//!
//! The writer thread must never wait on anyone, so events go into a bounded channel that the
//! host (the Python layer) drains when it has listeners; when nobody listens the channel is
//! switched off and emitting costs one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

/// Room for events not yet collected; beyond it new ones are dropped and counted.
const CAPACITY: usize = 16 * 1024;

/// Something the engine did on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// The scheduler promoted due jobs (`promoted` may be 0 on an interval tick).
    SchedulerTick {
        /// Jobs made available.
        promoted: u64,
        /// Time the tick's transaction took, in microseconds (shared with its batch).
        duration_us: u64,
    },
    /// A job record no longer decoded (damaged on disk) and was moved to the quarantine
    /// table; the job is gone from claims, lists and counts. See `Engine::quarantined`.
    Quarantined {
        /// The job's id.
        id: u64,
        /// What the decoder said.
        reason: String,
    },
    /// The pruner deleted finished jobs past the retention period.
    PrunerTick {
        /// Jobs deleted.
        pruned: u64,
        /// Time spent, in microseconds (shared with its batch).
        duration_us: u64,
    },
    /// A cron entry's slot inserted its job (see `crate::cron`).
    CronInsert {
        /// The entry's name.
        name: String,
        /// The slot, µs since the Unix epoch.
        slot: i64,
        /// The job inserted.
        id: u64,
        /// How long after the slot the job was inserted, in microseconds.
        lateness_us: u64,
    },
}

impl EngineEvent {
    /// Every event's name, in declaration order. Defined here once and exported by the
    /// binding, so the host maps names it is sure the engine uses.
    pub const NAMES: [&'static str; 4] =
        ["scheduler.tick", "job.quarantine", "pruner.tick", "cron.insert"];

    /// This event's name, one of [`EngineEvent::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            EngineEvent::SchedulerTick { .. } => Self::NAMES[0],
            EngineEvent::Quarantined { .. } => Self::NAMES[1],
            EngineEvent::PrunerTick { .. } => Self::NAMES[2],
            EngineEvent::CronInsert { .. } => Self::NAMES[3],
        }
    }
}

/// The engine's event channel.
#[derive(Debug)]
pub struct Telemetry {
    enabled: AtomicBool,
    dropped: AtomicU64,
    tx: Sender<EngineEvent>,
    rx: Receiver<EngineEvent>,
}

impl Default for Telemetry {
    fn default() -> Self {
        let (tx, rx) = bounded(CAPACITY);
        Self { enabled: AtomicBool::new(false), dropped: AtomicU64::new(0), tx, rx }
    }
}

impl Telemetry {
    /// Start or stop collecting events.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether anyone collects events.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Report an event if anyone listens; never blocks.
    pub fn emit(&self, event: impl FnOnce() -> EngineEvent) {
        if self.enabled() && self.tx.try_send(event()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because nobody collected them in time.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait up to `timeout` for at least one event, then return all that are waiting.
    pub fn collect(&self, timeout: Duration) -> Vec<EngineEvent> {
        let mut out = Vec::new();
        if let Ok(first) = self.rx.recv_timeout(timeout) {
            out.push(first);
            out.extend(self.rx.try_iter());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_own_listed_name() {
        let events = [
            EngineEvent::SchedulerTick { promoted: 0, duration_us: 0 },
            EngineEvent::Quarantined { id: 1, reason: String::new() },
            EngineEvent::PrunerTick { pruned: 0, duration_us: 0 },
            EngineEvent::CronInsert { name: String::new(), slot: 0, id: 1, lateness_us: 0 },
        ];
        let names: Vec<&str> = events.iter().map(EngineEvent::name).collect();
        assert_eq!(names, EngineEvent::NAMES);
    }
}
