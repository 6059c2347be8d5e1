//! The job verbs: what each command (insert, claim, ack, cancel, retry, prune, rescue, fence,
//! quarantine) does to jobs inside the batch's write transaction. Each decides on the job as
//! stored, lets the job's own transition (`job.rs`, checked by `state.rs`) change it, writes it
//! back, and records in [`Effects`] what the claim queues must learn after the commit.

use std::sync::Arc;

use crate::batch::{self, StoredBatch};
use crate::claim::{key_of, ClaimKey, ClaimQueue};
use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{AckResult, Job, JobId, NewJob};
use crate::metrics::Ended;
use crate::plugins::pruner::{prune_chunk, PRUNE_LIMIT};
use crate::queues;
use crate::request::RequestId;
use crate::state::JobState;
use crate::storage::{EntryKind, WriteTxn};
use crate::unique::{self, Inserted};

use super::command::{Command, Reply};
use super::effects::Effects;

/// Inserts of at least this many jobs leave them for the idle writer to file (`put_new`). A
/// smaller one files its own: saving a caller a few µs is not worth waking the writer thread,
/// which then holds the applier when the caller's next insert comes (single inserts slowed
/// down markedly when each left its job unfiled).
const FILE_LATER_FROM: usize = 32;

/// Apply one command. A refusal of the command alone (bad input, unknown id, illegal change)
/// is returned inside the `Reply` after writing nothing; an `Err` aborts the whole batch.
pub(crate) fn apply_one(
    txn: &mut dyn WriteTxn,
    cmd: &mut Command,
    now: Micros,
    effects: &mut Effects,
) -> Result<Reply> {
    Ok(match cmd {
        // Taken, not cloned: the store runs a batch once, and a failed one is answered with
        // its error alone.
        Command::Insert { jobs, request, .. } => {
            Reply::Inserted(insert(txn, std::mem::take(jobs), *request, now, effects)?)
        }
        Command::Claim { queue, keys, at, .. } => {
            Reply::Jobs(Ok(claim(txn, queue, keys, *at, effects)?))
        }
        Command::Ack { acks, .. } => Reply::Acks(Ok(ack(txn, acks, now, effects)?)),
        Command::Cancel { id, .. } => {
            let Some(old) = txn.get(*id)? else {
                return Ok(Reply::Cancelled(Err(txn.missing(*id)?)));
            };
            if old.state.is_terminal() {
                let state = old.state;
                return Ok(Reply::Cancelled(Ok((old, state))));
            }
            let mut job = old;
            let (before, was_key) = (job.placement(), key_of(&job));
            job.cancel(now, "cancelled by user".into())?;
            txn.put(Some(before), &job)?;
            effects.rollup.record(&job.queue, Ended::Cancelled, now, None);
            if before.state == JobState::Available {
                effects.unready(job.queue.clone(), was_key);
            }
            Reply::Cancelled(Ok((job, before.state)))
        }
        Command::Retry { id, .. } => {
            let Some(old) = txn.get(*id)? else {
                return Ok(Reply::Job(Err(txn.missing(*id)?)));
            };
            if old.state == JobState::Available {
                return Ok(Reply::Job(Ok(old)));
            }
            let mut job = old;
            let before = job.placement();
            if let Err(e) = job.retry(now) {
                return Ok(Reply::Job(Err(e)));
            }
            txn.put(Some(before), &job)?;
            effects.ready(&job);
            Reply::Job(Ok(job))
        }
        Command::Prune { before, .. } => {
            // Chunk after chunk, as the pruner deletes, until one is not full.
            let mut total = 0;
            loop {
                let n = prune_chunk(txn, *before)?;
                total += n;
                if n < PRUNE_LIMIT as u64 {
                    break;
                }
            }
            effects.pruned += total;
            Reply::Count(Ok(total))
        }
        Command::Bulk { action, ids, matcher, .. } => {
            Reply::Count(Ok(super::bulk::apply(txn, *action, ids, matcher, now, effects)?))
        }
        Command::Rescue { jobs, cause, .. } => {
            Reply::Count(Ok(rescue(txn, jobs, cause, now, effects)?))
        }
        Command::SetProgress { id, progress, .. } => {
            Reply::Count(Ok(u64::from(crate::progress::store(txn, *id, progress)?)))
        }
        Command::Fence { notes, .. } => Reply::Count(Ok(note_fenced(txn, notes, now)?)),
        Command::Quarantine { ids } => {
            for &id in ids.iter() {
                // Moves the record aside if it still does not decode. Damage redb itself
                // reports fails this command alone, not the batch.
                match txn.get(id) {
                    Ok(_) | Err(Error::Corrupted { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
            Reply::Unit
        }
        Command::Sync { .. } | Command::FlushMetrics { .. } | Command::Wake | Command::Shutdown => {
            Reply::Unit
        }
        Command::SetQueue { queue, name, change, .. } => {
            let result = queues::set(txn, name, change.clone())?;
            if let Ok(settings) = &result {
                effects.settings_changed(queue.clone(), settings.clone());
                if change.changes_limits() {
                    effects.limits_changed(name, queue.clone(), settings.limits());
                }
            }
            Reply::Queue(result)
        }
    })
}

/// Mark the jobs at `keys` (popped from `queue`) executing, skipping those no longer
/// available. A queue paused since the claimer looked (by an earlier batch, or earlier in this
/// one) claims nothing: its jobs go back in the queue, still available, for the resume.
fn claim(
    txn: &mut dyn WriteTxn,
    queue: &Arc<ClaimQueue>,
    keys: &mut Vec<ClaimKey>,
    now: Micros,
    effects: &mut Effects,
) -> Result<Vec<Job>> {
    if effects.paused(queue) {
        queue.give_back(&std::mem::take(keys), true);
        return Ok(Vec::new());
    }
    let mut claimed = Vec::with_capacity(keys.len());
    for &key in keys.iter() {
        let Some(mut job) = txn.get(key.2)? else {
            effects.unclaimed(queue, key);
            continue;
        };
        if job.state != JobState::Available {
            effects.unclaimed(queue, key);
            continue; // cancelled or retried since it was queued
        }
        let before = job.placement();
        job.claim(now)?;
        txn.put(Some(before), &job)?;
        claimed.push(job);
    }
    if queue.is_limited() {
        crate::limits::claimed(txn, queue, &claimed, now, effects)?;
    }
    Ok(claimed)
}

/// Append each refused report `(id, attempt, text)` to its job's history.
fn note_fenced(txn: &mut dyn WriteTxn, notes: &[(JobId, u32, String)], now: Micros) -> Result<u64> {
    let mut count = 0;
    for (id, attempt, text) in notes {
        let Some(mut job) = txn.get(*id)? else { continue };
        let before = job.placement();
        job.note_fenced(now, *attempt, text.clone());
        txn.put(Some(before), &job)?;
        count += 1;
    }
    Ok(count)
}

/// Rescue each `(id, attempt)` that is still executing that attempt.
fn rescue(
    txn: &mut dyn WriteTxn,
    jobs: &[(JobId, u32)],
    cause: &str,
    now: Micros,
    effects: &mut Effects,
) -> Result<u64> {
    let mut rescued = 0;
    for &(id, attempt) in jobs {
        let Some(mut job) = txn.get(id)? else { continue };
        if job.state != JobState::Executing || job.attempt != attempt {
            continue; // its outcome was recorded after all, or it was cancelled
        }
        let before = job.placement();
        job.rescue_because(now, &format!("{cause} during attempt {attempt}"))?;
        txn.put(Some(before), &job)?;
        // The attempt ended without a report: counted, with no duration to go by.
        let lost = if job.state == JobState::Discarded { Ended::Discarded } else { Ended::Failed };
        effects.rollup.record(&job.queue, lost, now, None);
        if job.state == JobState::Available {
            effects.ready(&job);
        }
        rescued += 1;
    }
    Ok(rescued)
}

fn insert(
    txn: &mut dyn WriteTxn,
    jobs: Vec<NewJob>,
    request: Option<RequestId>,
    now: Micros,
    effects: &mut Effects,
) -> Result<Result<Inserted>> {
    // Check every job before writing any, so a bad one leaves nothing behind.
    for (i, job) in jobs.iter().enumerate() {
        if let Err(Error::InvalidJob(msg)) = job.validate() {
            let msg = if jobs.len() > 1 { format!("job {i} of the batch: {msg}") } else { msg };
            return Ok(Err(Error::InvalidJob(msg)));
        }
    }
    if jobs.is_empty() {
        return Ok(Ok(Inserted::default()));
    }
    if let Some(request) = request {
        if let Some((first, _)) = txn.inserted_by(request)? {
            return Ok(Ok(unique::stored_by(txn, &jobs, first, now)?));
        }
    }
    if let Err(refused) = open_batches(txn, &jobs, now)? {
        return Ok(Err(refused));
    }
    // A resendable insert reserves an id for every job, even one a unique conflict does not
    // store, so its jobs stay at `first + index`, which a resent insert's answer relies on.
    // An owner's own insert with unique jobs takes an id per job it stores: then an insert
    // that only finds existing jobs changes nothing, and its batch needs no log write.
    let reserve = request.is_some() || jobs.iter().all(|job| job.unique.is_none());
    let first = if reserve { txn.allocate_ids(jobs.len() as u64)? } else { 0 };
    if let Some(request) = request {
        txn.remember_insert(request, first, jobs.len() as u64)?;
    }
    let later = jobs.len() >= FILE_LATER_FROM;
    let mut out = Inserted { jobs: Vec::with_capacity(jobs.len()), conflicts: Vec::new() };
    for (offset, mut new) in jobs.into_iter().enumerate() {
        let id = reserve.then(|| first + offset as u64);
        if let Some(spec) = new.unique.take() {
            let (job, conflict) = unique::insert(txn, new, &spec, id, now, effects)?;
            if conflict {
                out.conflicts.push(offset as u32);
            }
            out.jobs.push(job);
            continue;
        }
        let id = match id {
            Some(id) => id,
            None => txn.allocate_ids(1)?,
        };
        let job = new.into_job(id, now);
        if later {
            txn.put_new(&job)?;
        } else {
            txn.put(None, &job)?;
        }
        if job.state == JobState::Available {
            effects.ready(&job);
        }
        out.jobs.push(job);
    }
    Ok(Ok(out))
}

/// Create the batches `jobs` name that do not exist, and check that those that exist have not
/// finished and are given no callbacks, before any job is stored: a refusal (`Ok(Err)`)
/// writes nothing. The members' counts follow as they are stored (the batches plugin).
fn open_batches(txn: &mut dyn WriteTxn, jobs: &[NewJob], now: Micros) -> Result<Result<()>> {
    let joined = match batch::joined(jobs) {
        Ok(joined) => joined,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut created = Vec::new();
    for (id, callbacks) in joined {
        let stored = txn.entry(EntryKind::Batch, &id)?;
        let made = match (callbacks, stored) {
            (Some(c), Some(_)) if !c.is_empty() => Err(batch::callbacks_fixed(&id)),
            (_, Some(entry)) => {
                StoredBatch::decode(&id, &entry.value).and_then(|b| b.check_open()).map(|()| None)
            }
            (callbacks, None) => {
                StoredBatch::new(&id, callbacks.unwrap_or_default(), now).map(Some)
            }
        };
        match made {
            Ok(Some(batch)) => created.push(batch),
            Ok(None) => {}
            Err(refused) => return Ok(Err(refused)),
        }
    }
    for batch in created {
        txn.put_entry(EntryKind::Batch, &batch.status.id, &batch.encode(), None)?;
    }
    Ok(Ok(()))
}

/// Record each ack's outcome, if its attempt is still executing, and count it in the metrics.
fn ack(
    txn: &mut dyn WriteTxn,
    acks: &[crate::job::Ack],
    now: Micros,
    effects: &mut Effects,
) -> Result<Vec<AckResult>> {
    let mut results = Vec::with_capacity(acks.len());
    for ack in acks {
        let result = match txn.get(ack.id)? {
            None => AckResult::Stale(None),
            Some(old) if old.state != JobState::Executing || old.attempt != ack.attempt => {
                AckResult::Stale(Some(old.state))
            }
            Some(mut job) => {
                let before = job.placement();
                let started = job.attempted_at;
                job.finish(ack.outcome.clone(), now)?;
                txn.put(Some(before), &job)?;
                if let Some(ended) = Ended::after_ack(job.state) {
                    let duration = started.map(|at| now - at);
                    effects.rollup.record(&job.queue, ended, now, duration);
                }
                AckResult::Applied(job)
            }
        };
        results.push(result);
    }
    Ok(results)
}
