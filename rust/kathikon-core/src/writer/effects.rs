//! [`Effects`]: what a batch changes outside the store (the in-memory claim queues) and the
//! counts its telemetry reports. Verbs and plugins record them inside the transaction; the
//! claim queues see them only after the commit, so a worker never claims a job whose insert
//! or promotion could still be lost.

use foldhash::{HashSet, HashSetExt};

use std::sync::Arc;

use crate::claim::{key_of, ClaimKey, ClaimQueue, ClaimQueues};
use crate::job::{Job, JobId};
use crate::limits::{Bucket, Limits};
use crate::queues::QueueSettings;

/// A change to an in-memory claim queue.
enum QueueChange {
    /// The jobs became available (several when they came one after another: an insert's).
    Ready(String, Vec<ClaimKey>),
    /// The job became available in a limited queue, in this bucket.
    ReadyIn(String, ClaimKey, Bucket),
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
    /// The claim queues, when some queue has limits: a job made available in a limited
    /// queue is filed in its bucket.
    limited: Option<Arc<ClaimQueues>>,
    /// Jobs claimers took that the batch did not claim (gone or no longer available).
    unclaimed: Vec<(Arc<ClaimQueue>, ClaimKey)>,
    /// Jobs claimed in a limited queue that its limiter had not counted (taken just before
    /// the queue became limited), with their bucket and claim time.
    adopted: Vec<(Arc<ClaimQueue>, JobId, Bucket, crate::clock::Micros)>,
    /// Jobs that left the executing state (their global-limit places free up).
    pub left_executing: Vec<JobId>,
    /// Jobs that finished or were deleted unfinished (their waits are woken).
    pub ended: Vec<JobId>,
    /// Queues whose limits changed, with the new ones: their claim queues are rebuilt.
    limit_changes: Vec<(String, Arc<ClaimQueue>, Limits)>,
}

impl Effects {
    /// No effects yet, with the writer's metrics counts lent for the batch; `limited`: the
    /// claim queues when some queue has limits.
    pub(crate) fn lending(
        rollup: crate::metrics::Rollup,
        limited: Option<Arc<ClaimQueues>>,
    ) -> Effects {
        Effects { rollup, limited, ..Effects::default() }
    }

    /// `job` became available.
    pub(crate) fn ready(&mut self, job: &Job) {
        if let Some(queues) = &self.limited {
            let queue = queues.get(&job.queue);
            if queue.is_limited() {
                let bucket = queue.limiter().as_ref().map(|l| l.limits().bucket_of(job));
                let bucket = bucket.unwrap_or_default();
                self.queue_changes.push(QueueChange::ReadyIn(
                    job.queue.clone(),
                    key_of(job),
                    bucket,
                ));
                return;
            }
        }
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

    /// A claimer took `key` from `queue` but the batch did not claim it.
    pub(crate) fn unclaimed(&mut self, queue: &Arc<ClaimQueue>, key: ClaimKey) {
        self.unclaimed.push((queue.clone(), key));
    }

    /// `id`, claimed from limited `queue` at `at`, was not counted by its limiter.
    pub(crate) fn adopted(
        &mut self,
        queue: &Arc<ClaimQueue>,
        id: JobId,
        bucket: Bucket,
        at: crate::clock::Micros,
    ) {
        self.adopted.push((queue.clone(), id, bucket, at));
    }

    /// `queue` (named `name`) has `limits` now.
    pub(crate) fn limits_changed(&mut self, name: &str, queue: Arc<ClaimQueue>, limits: Limits) {
        self.limit_changes.push((name.to_string(), queue, limits));
    }

    /// The queues whose limits changed, for the writer to rebuild after the commit.
    pub(crate) fn take_limit_changes(&mut self) -> Vec<(String, Arc<ClaimQueue>, Limits)> {
        std::mem::take(&mut self.limit_changes)
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
                        ready.push(*key, None);
                    }
                    touched.insert(queue.as_str());
                }
                QueueChange::ReadyIn(queue, key, bucket) => {
                    queues.get(queue).push(*key, Some(bucket));
                    touched.insert(queue.as_str());
                }
                QueueChange::Unready(queue, key) => {
                    queues.get(queue).remove(key);
                }
            }
        }
        for (queue, id, bucket, at) in &self.adopted {
            if let Some(limiter) = queue.limiter().as_mut() {
                limiter.adopt(*id, bucket.clone(), *at);
            }
        }
        for (queue, key) in &self.unclaimed {
            queue.give_back(std::slice::from_ref(key), false);
            queue.notify();
        }
        if !self.left_executing.is_empty() && queues.any_limited() {
            queues.released(&self.left_executing);
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
