//! Batches: jobs inserted as a group, with callback jobs inserted once when the group is done
//! ([`crate::Jobs::insert_batch`], [`crate::Jobs::batch`]).
//!
//! A member job carries its batch's id ([`crate::Job::batch`]). The batch keeps, per state,
//! how many members are in it ([`StoredBatch::counts`]), moved by every change of a member's
//! state in the transaction that makes the change ([`StoredBatch::moved`]), so the counts are
//! exact whatever moves a job (an ack, a cancel, a rescue, a retry, a bulk action). When no
//! member is left unfinished, the batch is finished, once: the same transaction stores its
//! `finished_at` and inserts each callback whose condition holds ([`StoredBatch::finish`]).
//! So a callback job is inserted exactly once, crash or not: a transaction that does not
//! commit neither finished the batch nor inserted its callbacks.
//!
//! The conditions are Oban Pro's: `completed` when every member completed, `discarded` /
//! `cancelled` when at least one member ended so, `finished` in any case. A finished batch
//! stays finished: retrying a member later moves its counts, and fires nothing again. A
//! member pruned after it finished stays counted in its final state; a member deleted
//! unfinished leaves the batch.
//!
//! The rules here are shared by every store: each keeps a [`StoredBatch`] its own way and
//! calls these to move and finish it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock::Micros;
use crate::error::{Error, Result};
use crate::job::{JobId, NewJob};
use crate::state::JobState;

/// Longest batch id, in bytes.
pub const MAX_BATCH_ID_BYTES: usize = 200;

/// A batch's callback jobs, each with the event it waits for.
pub type Callbacks = Vec<(BatchEvent, NewJob)>;

/// When a callback is inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BatchEvent {
    /// Every member completed.
    Completed,
    /// Every member finished, at least one discarded.
    Discarded,
    /// Every member finished, at least one cancelled.
    Cancelled,
    /// Every member finished, in whatever state.
    Finished,
}

impl BatchEvent {
    /// Every event, in the order callbacks are inserted.
    pub const ALL: [BatchEvent; 4] =
        [BatchEvent::Completed, BatchEvent::Discarded, BatchEvent::Cancelled, BatchEvent::Finished];

    /// The lowercase name used outside Rust (`on_<name>` in Python).
    pub fn as_str(self) -> &'static str {
        match self {
            BatchEvent::Completed => "completed",
            BatchEvent::Discarded => "discarded",
            BatchEvent::Cancelled => "cancelled",
            BatchEvent::Finished => "finished",
        }
    }

    /// Parse a lowercase event name.
    pub fn parse(name: &str) -> Result<BatchEvent> {
        Self::ALL.into_iter().find(|e| e.as_str() == name).ok_or_else(|| {
            Error::InvalidJob(format!(
                "unknown batch event {name:?}; expected one of completed, discarded, \
                 cancelled, finished"
            ))
        })
    }

    /// Whether a finished batch with `counts` (per state, indexed by `JobState as usize`)
    /// meets this event's condition.
    fn holds(self, counts: &[u64; 7]) -> bool {
        let total: u64 = counts.iter().sum();
        match self {
            BatchEvent::Completed => counts[JobState::Completed as usize] == total,
            BatchEvent::Discarded => counts[JobState::Discarded as usize] > 0,
            BatchEvent::Cancelled => counts[JobState::Cancelled as usize] > 0,
            BatchEvent::Finished => true,
        }
    }
}

/// How an inserted job joins a batch ([`NewJob::batch`]). The insert creates the batch if no
/// batch has its id, else adds the job to it, if it has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinBatch {
    /// The batch.
    pub id: String,
    /// The callbacks of the batch the insert creates, on one job of the insert at most (each
    /// a template: its `args` are the batch's, and its `meta` gets a `"batch"` key saying which
    /// batch, event and counts). Refused when the batch exists: its callbacks were set when
    /// it was created.
    pub callbacks: Option<Callbacks>,
}

/// One callback of a batch, and the job it became once fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// Its event.
    pub event: BatchEvent,
    /// The callback job's worker.
    pub worker: String,
    /// The job inserted for it, once the batch finished meeting its condition.
    pub job: Option<JobId>,
}

/// A batch as [`crate::Jobs::batch`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStatus {
    /// The batch's id.
    pub id: String,
    /// When it was created.
    pub created_at: Micros,
    /// Its members per state, indexed by `JobState as usize`.
    pub counts: [u64; 7],
    /// When its last unfinished member finished.
    pub finished_at: Option<Micros>,
    /// Its callbacks, in [`BatchEvent::ALL`] order.
    pub callbacks: Vec<Callback>,
}

impl BatchStatus {
    /// Members counted, in every state.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Members not finished yet.
    pub fn pending(&self) -> u64 {
        JobState::ALL.iter().filter(|s| !s.is_terminal()).map(|&s| self.counts[s as usize]).sum()
    }
}

/// A batch as a store keeps it: its status and its callbacks' templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatch {
    /// What [`crate::Jobs::batch`] reports.
    pub status: BatchStatus,
    /// The callback jobs to insert, by event.
    pub templates: Callbacks,
}

impl StoredBatch {
    /// A new, empty batch created at `now` (its members are counted as they are stored).
    /// Refuses a bad id or callback with [`Error::InvalidJob`] naming it.
    pub fn new(id: &str, mut templates: Callbacks, now: Micros) -> Result<Self> {
        check_id(id)?;
        templates.sort_by_key(|(event, _)| *event);
        for pair in templates.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(Error::InvalidJob(format!(
                    "batch {id:?} has two on_{} callbacks; give at most one per event",
                    pair[0].0.as_str()
                )));
            }
        }
        for (event, job) in &templates {
            job.validate().map_err(|e| match e {
                Error::InvalidJob(m) => {
                    Error::InvalidJob(format!("batch {id:?}'s on_{} callback: {m}", event.as_str()))
                }
                other => other,
            })?;
            if job.unique.is_some() || job.batch.is_some() {
                return Err(Error::InvalidJob(format!(
                    "batch {id:?}'s on_{} callback is unique or in a batch itself; a callback \
                     is inserted once by the batch, so give it neither",
                    event.as_str()
                )));
            }
        }
        let callbacks = templates
            .iter()
            .map(|(event, job)| Callback { event: *event, worker: job.worker.clone(), job: None })
            .collect();
        let status = BatchStatus {
            id: id.to_string(),
            created_at: now,
            counts: [0; 7],
            finished_at: None,
            callbacks,
        };
        Ok(StoredBatch { status, templates })
    }

    /// A member moved from state `from` (`None`: it was just stored) to `to` (`None`: it was
    /// deleted). A member deleted once finished stays counted; one deleted unfinished leaves.
    pub fn moved(&mut self, from: Option<JobState>, to: Option<JobState>) {
        if to.is_none() && from.is_some_and(JobState::is_terminal) {
            return;
        }
        let counts = &mut self.status.counts;
        if let Some(from) = from {
            counts[from as usize] = counts[from as usize].saturating_sub(1);
        }
        if let Some(to) = to {
            counts[to as usize] += 1;
        }
    }

    /// If the batch has just finished (no member unfinished, and it was not finished before):
    /// mark it finished at `now` and return the callback jobs to insert, each with its event.
    /// The caller inserts them in the same transaction and records their ids with
    /// [`StoredBatch::fired`].
    pub fn finish(&mut self, now: Micros) -> Vec<(BatchEvent, NewJob)> {
        let status = &self.status;
        if status.finished_at.is_some() || status.pending() > 0 || status.total() == 0 {
            return Vec::new();
        }
        self.status.finished_at = Some(now);
        let counts = self.status.counts;
        self.templates
            .iter()
            .filter(|(event, _)| event.holds(&counts))
            .map(|(event, template)| (*event, callback_job(&self.status, *event, template)))
            .collect()
    }

    /// The callback of `event` was inserted as job `id`.
    pub fn fired(&mut self, event: BatchEvent, id: JobId) {
        if let Some(c) = self.status.callbacks.iter_mut().find(|c| c.event == event) {
            c.job = Some(id);
        }
    }

    /// Refuse adding jobs to this batch if it has finished.
    pub fn check_open(&self) -> Result<()> {
        match self.status.finished_at {
            None => Ok(()),
            Some(at) => Err(Error::InvalidJob(format!(
                "batch {:?} finished (at {at} µs) and its callbacks were inserted; it takes no \
                 more jobs: insert them in a new batch",
                self.status.id
            ))),
        }
    }

    /// The value a store keeps (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The batch stored as `bytes`, or [`Error::Corrupted`] naming it.
    pub fn decode(id: &str, bytes: &[u8]) -> Result<StoredBatch> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupted {
            path: "<store>".into(),
            detail: format!("batch {id:?}: stored record does not decode: {e}"),
            job: None,
        })
    }
}

/// Make `jobs` (at least one) members of batch `id`, the first carrying `callbacks`, for an
/// insert ([`crate::Jobs::insert_batch`]).
pub fn join(id: &str, mut callbacks: Option<Callbacks>, jobs: &mut [NewJob]) -> Result<()> {
    check_id(id)?;
    if jobs.is_empty() {
        return Err(Error::InvalidJob(format!(
            "batch {id:?}: an insert into a batch needs at least one job"
        )));
    }
    for job in jobs {
        let join = JoinBatch { id: id.to_string(), callbacks: callbacks.take() };
        job.batch = Some(Box::new(join));
    }
    Ok(())
}

/// The refusal of callbacks given for batch `id`, which exists.
pub fn callbacks_fixed(id: &str) -> Error {
    Error::InvalidJob(format!(
        "batch {id:?} exists already, and its callbacks were set when it was created; add jobs \
         to it without callbacks or args, or choose another batch id"
    ))
}

/// Refuse an empty, overlong or control-character batch id, naming it.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidJob("batch id is empty; pass a non-empty string".into()));
    }
    if id.len() > MAX_BATCH_ID_BYTES {
        return Err(Error::InvalidJob(format!(
            "batch id {:?}… is {} bytes; use at most {MAX_BATCH_ID_BYTES}",
            id.chars().take(40).collect::<String>(),
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::InvalidJob(format!(
            "batch id {id:?} holds a control character; use printable text"
        )));
    }
    Ok(())
}

/// The callback job of `event` made from `template`: its `meta` gains
/// `"batch": {"id", "event", "counts": {state: n, …}, "total"}`.
fn callback_job(status: &BatchStatus, event: BatchEvent, template: &NewJob) -> NewJob {
    let counts: Map<String, Value> = JobState::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| (s.as_str().to_string(), json!(status.counts[*s as usize])))
        .collect();
    let mut meta = match serde_json::from_str::<Value>(&template.meta) {
        Ok(Value::Object(meta)) => meta,
        _ => Map::new(),
    };
    meta.insert(
        "batch".into(),
        json!({ "id": status.id, "event": event.as_str(), "counts": counts, "total": status.total() }),
    );
    NewJob { meta: Value::Object(meta).to_string(), ..template.clone() }
}

/// Check the batch links of one insert before anything is written: no batch job is unique,
/// and at most one job per batch carries callbacks. Returns the batches it names, each with
/// the callbacks given for it, if any.
pub fn joined(jobs: &[NewJob]) -> Result<Vec<(String, Option<Callbacks>)>> {
    let mut out: Vec<(String, Option<Callbacks>)> = Vec::new();
    for job in jobs {
        let Some(join) = &job.batch else { continue };
        if job.unique.is_some() {
            return Err(Error::InvalidJob(format!(
                "a job of batch {:?} has a unique spec; batch jobs cannot be unique",
                join.id
            )));
        }
        match out.iter_mut().find(|(id, _)| *id == join.id) {
            None => out.push((join.id.clone(), join.callbacks.clone())),
            Some((id, given)) => {
                if join.callbacks.is_some() {
                    if given.is_some() {
                        return Err(Error::InvalidJob(format!(
                            "batch {id:?}'s callbacks are given twice in one insert"
                        )));
                    }
                    given.clone_from(&join.callbacks);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(worker: &str) -> NewJob {
        NewJob {
            queue: "q".into(),
            worker: worker.into(),
            args: r#"{"album":3}"#.into(),
            meta: "{}".into(),
            tags: vec![],
            max_attempts: 1,
            priority: 0,
            scheduled_at: None,
            unique: None,
            batch: None,
        }
    }

    fn batch() -> StoredBatch {
        let templates = BatchEvent::ALL.iter().map(|e| (*e, job(e.as_str()))).collect();
        StoredBatch::new("b", templates, 1).unwrap()
    }

    #[test]
    fn a_batch_finishes_once_with_the_callbacks_whose_condition_holds() {
        let mut b = batch();
        for _ in 0..3 {
            b.moved(None, Some(JobState::Available));
        }
        b.moved(Some(JobState::Available), Some(JobState::Completed));
        b.moved(Some(JobState::Available), Some(JobState::Discarded));
        assert!(b.finish(5).is_empty(), "one member is unfinished");
        b.moved(Some(JobState::Available), Some(JobState::Completed));
        let fired: Vec<_> = b.finish(6).into_iter().map(|(e, _)| e).collect();
        assert_eq!(fired, [BatchEvent::Discarded, BatchEvent::Finished]);
        assert_eq!(b.status.finished_at, Some(6));
        b.moved(Some(JobState::Discarded), Some(JobState::Available));
        b.moved(Some(JobState::Available), Some(JobState::Completed));
        assert!(b.finish(7).is_empty(), "a finished batch fires nothing again");
        assert!(b.check_open().is_err());
    }

    #[test]
    fn the_callback_carries_the_batch_and_counts_in_its_meta() {
        let mut b = batch();
        b.moved(None, Some(JobState::Available));
        b.moved(Some(JobState::Available), Some(JobState::Completed));
        let fired = b.finish(2);
        assert_eq!(fired.len(), 2);
        let meta: Value = serde_json::from_str(&fired[0].1.meta).unwrap();
        assert_eq!(meta["batch"]["id"], "b");
        assert_eq!(meta["batch"]["event"], "completed");
        assert_eq!(meta["batch"]["counts"]["completed"], 1);
        assert_eq!(meta["batch"]["total"], 1);
        assert_eq!(fired[0].1.args, r#"{"album":3}"#);
    }

    #[test]
    fn deleting_members_counts_as_the_rules_say() {
        let mut b = batch();
        b.moved(None, Some(JobState::Available));
        b.moved(None, Some(JobState::Available));
        b.moved(Some(JobState::Available), Some(JobState::Completed));
        b.moved(Some(JobState::Completed), None);
        assert_eq!(b.status.counts[JobState::Completed as usize], 1, "pruned stays counted");
        b.moved(Some(JobState::Available), None);
        assert_eq!(b.status.total(), 1, "deleted unfinished leaves");
        assert_eq!(b.finish(3).len(), 2);
    }

    #[test]
    fn bad_batches_are_refused_by_name() {
        let two = vec![(BatchEvent::Finished, job("a")), (BatchEvent::Finished, job("b"))];
        let e = StoredBatch::new("b", two, 0).unwrap_err().to_string();
        assert!(e.contains("two on_finished"), "{e}");
        assert!(check_id("").is_err());
        assert!(check_id(&"x".repeat(201)).unwrap_err().to_string().contains("201 bytes"));
        let mut bad = job("w");
        bad.args = "{".into();
        let e = StoredBatch::new("b", vec![(BatchEvent::Completed, bad)], 0).unwrap_err();
        assert!(e.to_string().contains("on_completed callback"), "{e}");
    }
}
