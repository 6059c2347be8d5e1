//! [`Effects`]: what a batch changes outside the store (the in-memory claim queues) and the
//! counts its telemetry reports. Verbs and plugins record them inside the transaction; the
//! claim queues see them only after the commit, so a worker never claims a job whose insert
//! or promotion could still be lost.

use foldhash::{HashSet, HashSetExt};

use std::sync::Arc;

use crate::claim::{key_of, ClaimKey, ClaimQueue, ClaimQueues};
use crate::job::{Job, JobId};
use crate::queues::QueueSettings;

/// A change to an in-memory claim queue.
enum QueueChange {
    /// The jobs became available (several when they came one after another: an insert's).
    Ready(String, Vec<ClaimKey>),
    /// The job stopped being available.
    Unready(String, ClaimKey),
}

/// What a batch did besides writing the store.
#[derive(Default)]
pub(crate) struct Effects {
    /// In the order the batch made them, so a job made available and then cancelled in the
    /// same batch ends up out of its queue, and one cancelled then retried ends up in it.
    queue_changes: Vec<QueueChange>,
    /// Jobs the scheduler made available.
    pub promoted: u64,
    /// Finished jobs deleted (by the pruner or a caller's `prune`).
    pub pruned: u64,
    /// Records moved to the quarantine table, with the reason.
    pub quarantined: Vec<(JobId, String)>,
    /// Queues whose runtime settings changed, in order, with their claim queue.
    settings: Vec<(Arc<ClaimQueue>, QueueSettings)>,
    /// The earliest expiry of the unique keys the batch wrote (`plugins::unique` looks then).
    pub unique_expiry: Option<crate::clock::Micros>,
    /// The writer's metrics counts, lent to the batch (see `crate::metrics`).
    pub rollup: crate::metrics::Rollup,
}

impl Effects {
    /// No effects yet, with the writer's metrics counts lent for the batch.
    pub(crate) fn lending(rollup: crate::metrics::Rollup) -> Effects {
        Effects { rollup, ..Effects::default() }
    }

    /// `job` became available.
    pub(crate) fn ready(&mut self, job: &Job) {
        if let Some(QueueChange::Ready(queue, keys)) = self.queue_changes.last_mut() {
            if *queue == job.queue {
                keys.push(key_of(job));
                return;
            }
        }
        self.queue_changes.push(QueueChange::Ready(job.queue.clone(), vec![key_of(job)]));
    }

    /// The job at `key` of `queue` stopped being available.
    pub(crate) fn unready(&mut self, queue: String, key: ClaimKey) {
        self.queue_changes.push(QueueChange::Unready(queue, key));
    }

    /// `queue`'s settings are `settings` now.
    pub(crate) fn settings_changed(&mut self, queue: Arc<ClaimQueue>, settings: QueueSettings) {
        self.settings.push((queue, settings));
    }

    /// Whether `queue` is paused as of this point of the batch: an earlier command of it may
    /// have paused or resumed it, not yet published.
    pub(crate) fn paused(&self, queue: &Arc<ClaimQueue>) -> bool {
        match self.settings.iter().rev().find(|(q, _)| Arc::ptr_eq(q, queue)) {
            Some((_, settings)) => settings.paused,
            None => queue.is_paused(),
        }
    }

    /// Apply the queue changes to `queues` (after the commit), and wake the claimers of each
    /// queue that got jobs, once.
    pub(crate) fn publish(&self, queues: &ClaimQueues) {
        let mut touched = HashSet::new();
        for change in &self.queue_changes {
            match change {
                QueueChange::Ready(queue, keys) => {
                    let ready = queues.get(queue);
                    for key in keys {
                        ready.push(*key);
                    }
                    touched.insert(queue.as_str());
                }
                QueueChange::Unready(queue, key) => {
                    queues.get(queue).remove(key);
                }
            }
        }
        for queue in touched {
            queues.get(queue).notify();
        }
        for (queue, settings) in &self.settings {
            queue.set_paused(settings.paused);
            queues.settings.changed(settings);
        }
    }
}
