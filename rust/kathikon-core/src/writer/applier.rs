//! [`Applier`]: applies one batch of commands, with the plugins' steps, as one store write;
//! then answers the callers, updates the claim queues and lets the plugins report. It is held
//! by one thread at a time (the writer thread, or a caller leading its own batch: see
//! [`super::lead`]); after a failed commit it refuses every later batch.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::claim::ClaimQueues;
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::finished::Finished;
use crate::plugins::{Batch, Committed, Now, Phase, Plugins};
use crate::storage::Store;
use crate::telemetry::{EngineEvent, Telemetry};

use super::command::Command;
use super::effects::Effects;
use super::verbs::apply_one;

/// New jobs filed at a time by the idle writer, so a caller that arrives meanwhile never waits
/// long for it (well under a millisecond).
const FILE_CHUNK: usize = 128;

pub(crate) struct Applier {
    store: Arc<dyn Store>,
    queues: Arc<ClaimQueues>,
    telemetry: Arc<Telemetry>,
    /// The periodic work that runs in every batch (scheduler, pruner).
    plugins: Plugins,
    /// Set after a failed commit: redb refuses writes until reopened, and the batch's outcome
    /// is unknown, so every later command is refused naming this failure. Shared with the
    /// engine, which tells its host (and the clients it serves) without taking the applier.
    failed: Arc<OnceLock<Error>>,
    /// The metrics counts held in memory, lent to each batch's [`Effects`].
    rollup: crate::metrics::Rollup,
    /// The waits for jobs to finish, woken after each commit.
    finished: Arc<Finished>,
}

impl Applier {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        queues: Arc<ClaimQueues>,
        telemetry: Arc<Telemetry>,
        plugins: Plugins,
        finished: Arc<Finished>,
    ) -> Applier {
        Applier {
            store,
            queues,
            telemetry,
            plugins,
            failed: Arc::default(),
            rollup: crate::metrics::Rollup::default(),
            finished,
        }
    }

    /// Where the failure that stopped this applier is kept (empty while it writes).
    pub(crate) fn failure(&self) -> Arc<OnceLock<Error>> {
        self.failed.clone()
    }

    /// How long the writer thread may sleep, as of `now`, before a plugin wants it.
    pub(super) fn wait(&self, now: Now) -> std::time::Duration {
        self.plugins.wait(now)
    }

    /// Whether a plugin wants a batch now, commands or not.
    pub(super) fn plugins_due(&self, now: Now) -> bool {
        self.plugins.due(now)
    }

    /// Run the plugins' work outside transactions that has come by `at` (heartbeats).
    pub(super) fn tick(&mut self, at: Instant) {
        self.plugins.tick(at, &self.telemetry);
    }

    /// Apply one caller's command in the caller's thread, as a batch of its own. Returns
    /// whether the writer thread must be woken: the batch brought a plugin's next step
    /// forward (the thread sleeps until the old one), or left the store work for its idle time.
    pub(crate) fn apply_own(&mut self, cmd: Command, now: Micros) -> bool {
        let now = Now { micros: now, instant: Instant::now() };
        let before = self.plugins.next_step(now);
        self.apply(&mut vec![cmd], now, true);
        self.plugins.next_step(now).is_some_and(|at| before.is_none_or(|b| at < b))
            || self.store.has_background_work()
    }

    /// Checkpoint the store (see [`Store::checkpoint`]), unless the writer stopped.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        if let Some(cause) = self.failed.get() {
            return Err(stopped(cause));
        }
        self.store.checkpoint().inspect_err(|error| self.fail(error))
    }

    /// Stop writing after `error` (outside a batch, whatever failed is storage), naming it in
    /// every later refusal.
    fn fail(&mut self, error: &Error) {
        let _ = self.failed.set(root_cause(error).clone());
    }

    /// Do a piece of the work the store put off (filing new jobs); returns
    /// whether more waits. A failure stops the engine's writes, as a failed batch does.
    pub(super) fn background_work(&mut self) -> bool {
        if self.failed.get().is_some() || !self.store.has_background_work() {
            return false;
        }
        match self.store.do_background_work(FILE_CHUNK) {
            Ok(more) => more,
            Err(error) => {
                self.fail(&error);
                false
            }
        }
    }

    /// Apply `batch` (emptying it) in one transaction, then answer and publish. `led`: a
    /// caller applies it itself.
    pub(super) fn apply(&mut self, batch: &mut Vec<Command>, now: Now, led: bool) {
        let flush = batch.iter().any(|c| matches!(c, Command::FlushMetrics { .. }));
        self.apply_flushing(batch, now, led, flush);
    }

    /// Write the metrics held in memory, in a batch of their own (the engine closes).
    pub(super) fn flush_metrics(&mut self, now: Now) {
        self.apply_flushing(&mut Vec::new(), now, false, true);
    }

    fn apply_flushing(&mut self, batch: &mut Vec<Command>, now: Now, led: bool, flush: bool) {
        let as_of = batch
            .iter()
            .filter_map(|c| match c {
                Command::Sync { promote_until, .. } => *promote_until,
                _ => None,
            })
            .fold(now.micros, Micros::max);
        let info = Batch { now, as_of, led, flush };
        if let Some(cause) = self.failed.get() {
            for cmd in batch.drain(..) {
                // Put claimed keys back, so every later claim fails with this error too
                // instead of finding an empty queue and waiting quietly.
                requeue_claim(&cmd);
                cmd.fail(&|| stopped(cause));
            }
            self.plugins.finished(&info, None);
            return;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let limited = self.queues.any_limited().then(|| self.queues.clone());
        let mut effects = Effects::lending(std::mem::take(&mut self.rollup), limited.clone());
        let plugins = &mut self.plugins;
        let result = self.store.write(&mut |txn| {
            replies.clear();
            let mut rollup = std::mem::take(&mut effects.rollup);
            rollup.abort();
            effects = Effects::lending(rollup, limited.clone());
            plugins.step(Phase::BeforeCommands, txn, &info, &mut effects)?;
            for cmd in batch.iter_mut() {
                replies.push(apply_one(txn, cmd, now.micros, &mut effects)?);
            }
            plugins.step(Phase::AfterCommands, txn, &info, &mut effects)?;
            plugins.look_ahead(txn)?;
            effects.quarantined = txn.take_quarantined();
            effects.left_executing = txn.take_left_executing();
            effects.ended = txn.take_ended();
            Ok(())
        });
        let duration_us = now.instant.elapsed().as_micros() as u64;
        match result {
            Ok(()) => {
                effects.rollup.commit();
                effects.publish(&self.queues);
                self.finished.ended(&effects.ended);
                for (name, queue, limits) in effects.take_limit_changes() {
                    crate::limits::install(
                        &*self.store,
                        &self.queues,
                        &name,
                        &queue,
                        &limits,
                        now.micros,
                    );
                }
                for (cmd, reply) in batch.drain(..).zip(replies) {
                    cmd.answer(reply);
                }
                let telemetry = &*self.telemetry;
                self.plugins.finished(
                    &info,
                    Some(&Committed { effects: &effects, duration_us, telemetry }),
                );
                for (id, reason) in std::mem::take(&mut effects.quarantined) {
                    self.telemetry.emit(|| EngineEvent::Quarantined { id, reason });
                }
                self.rollup = std::mem::take(&mut effects.rollup);
            }
            Err(error) => {
                // Every caller gets the batch's error; one that is neither a storage failure nor
                // damage is reported as a storage failure in its words, and does not stop the
                // writer.
                let fatal = error.stops_writer();
                let error = match error {
                    e if fatal => e,
                    e @ Error::Corrupted { .. } => e,
                    other => Error::Storage(other.to_string()),
                };
                for cmd in batch.drain(..) {
                    requeue_claim(&cmd);
                    cmd.fail(&|| error.clone());
                }
                if fatal {
                    self.fail(&error);
                }
                effects.rollup.abort();
                self.rollup = std::mem::take(&mut effects.rollup);
                self.plugins.finished(&info, None);
            }
        }
    }
}

/// What every write is refused with once the writer stopped after the storage failure `cause`
/// (a refusal that stopped it already names the original failure, and is not wrapped again).
fn stopped(cause: &Error) -> Error {
    match cause {
        Error::WriterStopped { .. } => cause.clone(),
        _ => Error::WriterStopped { cause: Box::new(cause.clone()) },
    }
}

/// The failure that stopped a writer, without the refusals that name it (a store may refuse
/// with [`Error::WriterStopped`] itself, after its own earlier failure).
fn root_cause(error: &Error) -> &Error {
    match error {
        Error::WriterStopped { cause } => root_cause(cause),
        other => other,
    }
}

/// A failed claim's jobs are still available on disk: make them claimable again.
fn requeue_claim(cmd: &Command) {
    if let Command::Claim { queue, keys, .. } = cmd {
        queue.give_back(keys, true);
        queue.notify();
    }
}
