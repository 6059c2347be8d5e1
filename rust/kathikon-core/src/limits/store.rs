//! Limits and the store: a limiter is built from the store (at open, and after a change of a
//! queue's limits commits), and a claim stores the rate windows it moved in its own
//! transaction, so a restart finds every start that committed.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::claim::{ClaimKey, ClaimQueue, ClaimQueues};
use crate::clock::Micros;
use crate::error::Result;
use crate::job::{Job, JobId};
use crate::jobs::ListFilter;
use crate::listing::{self, Matcher};
use crate::state::JobState;
use crate::storage::{EntryKind, ReadTxn, Store, WriteTxn};
use crate::writer::Effects;

use super::Window;
use super::{split_window_entry_name, window_entry_name, window_expiry, Bucket, Limiter, Limits};

/// After `claimed` were claimed from limited `queue` at `now`, inside the claim's
/// transaction: store the rate windows they moved, and count any job its limiter did not
/// take (claimed from the queue just before it became limited).
pub(crate) fn claimed(
    txn: &mut dyn WriteTxn,
    queue: &Arc<ClaimQueue>,
    claimed: &[Job],
    now: Micros,
    effects: &mut Effects,
) -> Result<()> {
    let Some(first) = claimed.first() else { return Ok(()) };
    let mut windows = Vec::new();
    {
        let guard = queue.limiter();
        let Some(limiter) = guard.as_ref() else { return Ok(()) };
        let mut moved = BTreeSet::new();
        for job in claimed {
            match limiter.rate_partition_of(job.id) {
                Some(rate) => {
                    moved.insert(rate.to_string());
                }
                None => effects.adopted(queue, job.id, limiter.limits().bucket_of(job), now),
            }
        }
        if let Some(rate) = &limiter.limits().rate {
            for partition in moved {
                if let Some(window) = limiter.window(&partition) {
                    let expires = window_expiry(now, rate);
                    windows.push((
                        window_entry_name(&first.queue, &partition),
                        window.encode(),
                        expires,
                    ));
                }
            }
        }
    }
    for (name, value, expires) in windows {
        txn.put_entry(EntryKind::RateWindow, &name, &value, Some(expires))?;
    }
    Ok(())
}

/// Enforce `limits` on queue `name` from now on (none: make it unlimited), refiling its
/// ready jobs by bucket and counting its executing ones, read from `store`. A read that
/// fails files every job in one bucket: the limits then hold for the queue as a whole, which
/// never lets more run than a partitioned limit would.
pub(crate) fn install(
    store: &dyn Store,
    queues: &ClaimQueues,
    name: &str,
    queue: &Arc<ClaimQueue>,
    limits: &Limits,
    now: Micros,
) {
    if limits.is_none() {
        queue.rebuild(|_, _| None);
        return;
    }
    queues.note_limited(queue);
    queue.rebuild(|ready, old| {
        let mut windows = None;
        let mut in_flight = Vec::new();
        if let Some(old) = old {
            let same_rate = old.limits().rate.as_ref().map(|r| &r.partition)
                == limits.rate.as_ref().map(|r| &r.partition);
            let (held, old_windows) = old.into_parts();
            in_flight = held;
            if same_rate {
                windows = Some(old_windows);
            }
        }
        let mut limiter = Limiter::new(limits.clone());
        let filled = store.read(&mut |txn| {
            limiter = Limiter::new(limits.clone());
            fill(txn, name, &mut limiter, ready, &in_flight, now, windows.is_none())
        });
        if filled.is_err() {
            limiter = Limiter::new(limits.clone());
            for &key in ready {
                limiter.push(key, Bucket::default());
            }
            for &id in &in_flight {
                limiter.adopt(id, Bucket::default(), now);
            }
        }
        for (partition, window) in windows.into_iter().flatten() {
            limiter.load_window(&partition, window);
        }
        Some(limiter)
    });
}

/// Fill `limiter` for queue `name` from `txn`: `ready` jobs into their buckets, the queue's
/// executing jobs and the `in_flight` ones (taken by the limiter before, claim not yet
/// applied) counted, and, if `stored_windows`, the rate windows as stored.
fn fill(
    txn: &mut dyn ReadTxn,
    name: &str,
    limiter: &mut Limiter,
    ready: &[ClaimKey],
    in_flight: &[JobId],
    now: Micros,
    stored_windows: bool,
) -> Result<()> {
    let limits = limiter.limits().clone();
    for &id in in_flight {
        if let Some(job) = txn.get(id)? {
            if job.state == JobState::Available {
                limiter.adopt(id, limits.bucket_of(&job), now);
            }
        }
    }
    for &key in ready {
        if limiter.holds(key.2) {
            continue;
        }
        if let Some(job) = txn.get(key.2)? {
            if job.state == JobState::Available {
                limiter.push(key, limits.bucket_of(&job));
            }
        }
    }
    let filter = ListFilter {
        state: Some(JobState::Executing),
        queue: Some(name.to_string()),
        ..ListFilter::default()
    };
    let matcher = Matcher::new(&filter)?;
    let mut executing = Vec::new();
    listing::walk(txn, &matcher, &mut Vec::new(), &mut |job| {
        executing.push((job.id, limits.bucket_of(&job), job.attempted_at.unwrap_or(now)));
        true
    })?;
    for (id, bucket, at) in executing {
        limiter.adopt(id, bucket, at);
    }
    if stored_windows && limits.rate.is_some() {
        for entry in txn.entries(EntryKind::RateWindow)? {
            if let Some((queue, partition)) = split_window_entry_name(&entry.name) {
                if queue == name {
                    limiter.load_window(partition, Window::decode(&entry.value)?);
                }
            }
        }
    }
    Ok(())
}

/// At open (at `now`): build the limiter of every queue whose stored settings have limits.
pub(crate) fn load(store: &dyn Store, queues: &ClaimQueues, now: Micros) {
    for settings in queues.settings.snapshot().1 {
        let limits = settings.limits();
        if !limits.is_none() {
            install(store, queues, &settings.name, &queues.get(&settings.name), &limits, now);
        }
    }
}
