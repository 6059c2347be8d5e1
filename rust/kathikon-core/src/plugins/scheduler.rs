//! The scheduler: makes scheduled and retryable jobs available once they are due.
//!
//! It needs no thread and polls no rows: every batch ends by reading the earliest due time
//! from the store's `due` index ([`Plugin::look_ahead`]), and the writer sleeps until then.
//! Promotion runs before the batch's commands, in every batch (a store answers "nothing due"
//! from that remembered time without a read), at most [`PROMOTE_LIMIT`] jobs a step; when more
//! were due, the next due time is already past and the writer comes back at once.
//!
//! Every `interval` it also emits `SchedulerTick { promoted: 0, .. }`, a heartbeat that tells
//! listeners the scheduler is alive when there is nothing to promote; `interval` is also the
//! longest the writer sleeps without looking.

use std::time::{Duration, Instant};

use super::{Batch, Committed, Now, Phase, Plugin};
use crate::clock::Micros;
use crate::error::Result;
use crate::storage::WriteTxn;
use crate::telemetry::{EngineEvent, Telemetry};
use crate::writer::Effects;

/// Most due jobs promoted per step; the rest follow in the next batch, at once.
const PROMOTE_LIMIT: usize = 10_000;

/// The earliest due time as a transaction read it (`None`: nothing is scheduled).
struct DueTime(Option<Micros>);

pub(crate) struct Scheduler {
    /// The earliest due time of any scheduled or retryable job, as of the last commit.
    next_due: Option<Micros>,
    /// What the current batch's transaction read as the next due time; counts once it commits.
    read_due: Option<DueTime>,
    interval: Duration,
    next_tick: Instant,
}

impl Scheduler {
    /// A scheduler for a store whose earliest due time is `next_due`, with a heartbeat every
    /// `interval`.
    pub(crate) fn new(next_due: Option<Micros>, interval: Duration) -> Scheduler {
        Scheduler { next_due, read_due: None, interval, next_tick: Instant::now() + interval }
    }
}

impl Plugin for Scheduler {
    fn phase(&self) -> Phase {
        Phase::BeforeCommands
    }

    fn next_step(&self, now: Now) -> Option<Instant> {
        now.instant_of(self.next_due?)
    }

    fn step(&mut self, txn: &mut dyn WriteTxn, batch: &Batch, effects: &mut Effects) -> Result<()> {
        promote_due(txn, batch.as_of, effects)
    }

    fn look_ahead(&mut self, txn: &mut dyn WriteTxn) -> Result<()> {
        self.read_due = Some(DueTime(txn.next_due()?));
        Ok(())
    }

    fn finished(&mut self, _: &Batch, committed: Option<&Committed<'_>>) {
        let read_due = self.read_due.take();
        let Some(committed) = committed else { return };
        if let Some(DueTime(next_due)) = read_due {
            self.next_due = next_due;
        }
        let promoted = committed.effects.promoted;
        if promoted > 0 {
            let duration_us = committed.duration_us;
            committed.telemetry.emit(|| EngineEvent::SchedulerTick { promoted, duration_us });
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    fn tick(&mut self, telemetry: &Telemetry) {
        self.next_tick = Instant::now() + self.interval;
        telemetry.emit(|| EngineEvent::SchedulerTick { promoted: 0, duration_us: 0 });
    }
}

/// Make the jobs due by `until` available (at most [`PROMOTE_LIMIT`]).
fn promote_due(txn: &mut dyn WriteTxn, until: Micros, effects: &mut Effects) -> Result<()> {
    for id in txn.due(until, PROMOTE_LIMIT)? {
        let Some(mut job) = txn.get(id)? else { continue };
        let before = job.placement();
        job.promote()?;
        txn.put(Some(before), &job)?;
        effects.ready(&job);
        effects.promoted += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::clock::{ManualClock, SECOND};
    use crate::job::tests::new_job;
    use crate::jobs::Jobs;
    use crate::telemetry::EngineEvent;
    use crate::{Engine, EngineConfig, JobState};

    const T0: i64 = 1_700_000_000 * SECOND;

    #[test]
    fn the_heartbeat_comes_every_interval_with_nothing_to_promote() {
        let engine = Engine::open(EngineConfig {
            scheduler_interval: Duration::from_millis(20),
            ..EngineConfig::default()
        })
        .unwrap();
        engine.set_events(true);
        let mut beats = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while beats < 3 {
            assert!(Instant::now() < deadline, "{beats} heartbeats in 10 s");
            for event in engine.next_events(Duration::from_millis(100)) {
                assert_eq!(event, EngineEvent::SchedulerTick { promoted: 0, duration_us: 0 });
                beats += 1;
            }
        }
    }

    #[test]
    fn due_jobs_are_promoted_on_time_and_reported_with_their_count() {
        let clock = Arc::new(ManualClock::new(T0));
        let engine = Engine::open(EngineConfig {
            clock: clock.clone(),
            scheduler_interval: Duration::from_secs(3600),
            ..EngineConfig::default()
        })
        .unwrap();
        let mut job = new_job();
        job.scheduled_at = Some(T0 + 10 * SECOND);
        let jobs = engine.insert(vec![job.clone(), job]).unwrap();
        engine.set_events(true);
        engine.sync().unwrap();
        assert_eq!(engine.get(jobs[0].id).unwrap().state, JobState::Scheduled);
        // Nothing is promoted a moment early; once the clock reaches the due time, the writer
        // (sleeping until then) promotes both without being called.
        clock.advance(9 * SECOND + 999_000);
        engine.sync().unwrap();
        assert_eq!(engine.get(jobs[0].id).unwrap().state, JobState::Scheduled);
        clock.advance(1_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.get(jobs[1].id).unwrap().state != JobState::Available {
            assert!(Instant::now() < deadline, "the due jobs were never promoted");
            std::thread::sleep(Duration::from_millis(5));
        }
        let events = engine.next_events(Duration::from_secs(1));
        assert!(
            matches!(events[..], [EngineEvent::SchedulerTick { promoted: 2, .. }]),
            "{events:?}"
        );
    }
}
