//! Batches through the contract: members counted per state through every change, callbacks
//! inserted once when the last member finishes (with the batch and its counts in their meta),
//! jobs added to an open batch, a finished batch refusing more, bad batches refused storing
//! nothing, counts kept across a reopen, and threads finishing members at once firing each
//! callback once.

use std::time::Duration;

use crate::common::{claim_one, complete_all, finish, job};
use crate::harness::{Backend, Store};
use kathikon_core::batch::BatchStatus;
use kathikon_core::{
    BatchEvent, BulkAction, Error, Job, JobState, Jobs, ListFilter, NewJob, Outcome, UniqueSpec,
};

/// The callbacks of every event, each run by the worker named after its event, with `args`.
fn callbacks(args: &str) -> Vec<(BatchEvent, NewJob)> {
    BatchEvent::ALL
        .iter()
        .map(|event| {
            let mut cb = job("callbacks", &format!("on_{}", event.as_str()));
            cb.args = args.into();
            (*event, cb)
        })
        .collect()
}

fn count(status: &BatchStatus, state: JobState) -> u64 {
    status.counts[state as usize]
}

/// The callback jobs inserted so far, by worker name.
fn callback_jobs(s: &dyn Jobs) -> Vec<Job> {
    let filter = ListFilter { queue: Some("callbacks".into()), ..ListFilter::default() };
    s.list(&filter).unwrap()
}

fn workers(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|j| j.worker.as_str()).collect()
}

fn fired(status: &BatchStatus) -> Vec<(BatchEvent, bool)> {
    status.callbacks.iter().map(|c| (c.event, c.job.is_some())).collect()
}

pub fn a_batch_inserts_its_callbacks_once_when_its_last_job_finishes(
    backend: &'static dyn Backend,
) {
    let s = Store::open(backend);
    let members = vec![job("q", "w"), job("q", "w"), job("q", "w")];
    let inserted = s.insert_batch("album-3", Some(callbacks(r#"{"album":3}"#)), members).unwrap();
    assert_eq!(inserted.len(), 3);
    assert!(inserted.iter().all(|j| j.batch.as_deref() == Some("album-3")));
    let status = s.batch("album-3").unwrap();
    assert_eq!((count(&status, JobState::Available), status.total()), (3, 3));
    assert_eq!(status.finished_at, None);
    let workers_of: Vec<_> = status.callbacks.iter().map(|c| c.worker.as_str()).collect();
    assert_eq!(workers_of, ["on_completed", "on_discarded", "on_cancelled", "on_finished"]);

    let a = claim_one(&*s, "q");
    assert_eq!(count(&s.batch("album-3").unwrap(), JobState::Executing), 1);
    finish(&*s, &a, Outcome::Complete);
    let b = claim_one(&*s, "q");
    finish(&*s, &b, Outcome::Discard { reason: "bad image".into() });
    assert!(callback_jobs(&*s).is_empty(), "a member is unfinished: no callback yet");
    let c = claim_one(&*s, "q");
    finish(&*s, &c, Outcome::Fail { error: "timeout".into(), retry_in: Some(0) });
    assert!(callback_jobs(&*s).is_empty(), "a retryable member is unfinished");
    s.sync().unwrap();
    let c = claim_one(&*s, "q");
    finish(&*s, &c, Outcome::Complete);

    let cbs = callback_jobs(&*s);
    assert_eq!(workers(&cbs), ["on_discarded", "on_finished"]);
    for cb in &cbs {
        assert_eq!(cb.args, r#"{"album":3}"#);
        assert_eq!(cb.batch, None, "a callback is not a member");
        let meta: serde_json::Value = serde_json::from_str(&cb.meta).unwrap();
        let batch = &meta["batch"];
        assert_eq!(batch["id"], "album-3");
        assert_eq!(batch["event"], cb.worker.trim_start_matches("on_"));
        assert_eq!(
            batch["counts"],
            serde_json::json!({"completed": 2, "cancelled": 0, "discarded": 1})
        );
        assert_eq!(batch["total"], 3);
    }
    let status = s.batch("album-3").unwrap();
    assert!(status.finished_at.is_some());
    assert_eq!(
        fired(&status),
        [
            (BatchEvent::Completed, false),
            (BatchEvent::Discarded, true),
            (BatchEvent::Cancelled, false),
            (BatchEvent::Finished, true)
        ]
    );
    let ids: Vec<_> = status.callbacks.iter().filter_map(|c| c.job).collect();
    assert_eq!(ids, cbs.iter().map(|j| j.id).collect::<Vec<_>>());

    // Retried and completed, the discarded member moves the counts, and fires nothing again.
    s.retry(b.id).unwrap();
    let b = claim_one(&*s, "q");
    finish(&*s, &b, Outcome::Complete);
    let status = s.batch("album-3").unwrap();
    assert_eq!((count(&status, JobState::Completed), count(&status, JobState::Discarded)), (3, 0));
    assert_eq!(callback_jobs(&*s).len(), 2);
}

pub fn jobs_join_an_open_batch_and_a_finished_one_takes_no_more(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let first = s.insert_batch("b", Some(callbacks("{}")), vec![job("q", "w")]).unwrap();
    let later = s.insert_batch("b", None, vec![job("q", "w"), job("q", "w")]).unwrap();
    assert!(later.iter().all(|j| j.batch.as_deref() == Some("b")));
    assert_eq!(s.batch("b").unwrap().total(), 3);
    // The callbacks were set at creation: giving them again is refused, storing nothing.
    let again = s.insert_batch("b", Some(callbacks("{}")), vec![job("q", "w")]);
    assert!(
        matches!(&again, Err(Error::InvalidJob(m)) if m.contains("exists already")),
        "{again:?}"
    );
    assert_eq!(s.batch("b").unwrap().total(), 3);

    for _ in 0..3 {
        let running = claim_one(&*s, "q");
        finish(&*s, &running, Outcome::Complete);
    }
    assert_eq!(workers(&callback_jobs(&*s)), ["on_completed", "on_finished"]);
    let refused = s.insert_batch("b", None, vec![job("q", "w")]);
    assert!(matches!(&refused, Err(Error::InvalidJob(m)) if m.contains("takes no more jobs")));
    assert_eq!(s.batch("b").unwrap().total(), 3);
    assert_eq!(s.get(first[0].id).unwrap().batch.as_deref(), Some("b"));

    // A batch created without callbacks, by naming it: counted all the same.
    s.insert_batch("plain", None, vec![job("q", "w")]).unwrap();
    let status = s.batch("plain").unwrap();
    assert_eq!((status.total(), status.callbacks.len()), (1, 0));
    assert!(matches!(s.batch("never"), Err(Error::BatchNotFound(id)) if id == "never"));
}

pub fn bad_batches_are_refused_and_store_nothing(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let refused = |result: kathikon_core::Result<Vec<Job>>, words: &str| match result {
        Err(Error::InvalidJob(m)) => assert!(m.contains(words), "{m:?} lacks {words:?}"),
        other => panic!("expected a refusal naming {words:?}, got {other:?}"),
    };
    refused(s.insert_batch("b", None, vec![]), "at least one job");
    refused(s.insert_batch("", None, vec![job("q", "w")]), "batch id is empty");
    refused(s.insert_batch(&"x".repeat(300), None, vec![job("q", "w")]), "300 bytes");
    let mut unique = job("q", "w");
    let spec = UniqueSpec::from_names(&["worker".into()], vec![], None, &["available".into()], &[])
        .unwrap();
    unique.unique = Some(Box::new(spec));
    refused(s.insert_batch("b", None, vec![job("q", "w"), unique]), "cannot be unique");
    let mut bad_cb = job("callbacks", "cb");
    bad_cb.priority = 42;
    refused(
        s.insert_batch("b", Some(vec![(BatchEvent::Completed, bad_cb)]), vec![job("q", "w")]),
        "on_completed callback: priority 42",
    );
    let twice = vec![(BatchEvent::Finished, job("c", "x")), (BatchEvent::Finished, job("c", "y"))];
    refused(s.insert_batch("b", Some(twice), vec![job("q", "w")]), "two on_finished callbacks");
    let mut bad_member = job("q", "w");
    bad_member.args = "{".into();
    refused(s.insert_batch("b", None, vec![job("q", "w"), bad_member]), "args is not valid JSON");

    assert!(s.list(&ListFilter::default()).unwrap().is_empty(), "nothing stored");
    assert!(matches!(s.batch("b"), Err(Error::BatchNotFound(_))));
}

pub fn batch_counts_follow_cancels_and_deletes_and_survive_a_reopen(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let members: Vec<NewJob> = (0..4).map(|_| job("q", "w")).collect();
    let inserted = s.insert_batch("b", Some(callbacks("{}")), members).unwrap();
    s.cancel(inserted[0].id).unwrap();
    let running = claim_one(&*s, "q");
    finish(&*s, &running, Outcome::Complete);
    s.reopen();
    let status = s.batch("b").unwrap();
    let counted = |st: &BatchStatus| {
        [JobState::Available, JobState::Completed, JobState::Cancelled].map(|x| count(st, x))
    };
    assert_eq!(counted(&status), [2, 1, 1]);

    // Pruned once finished, a member stays counted; deleted unfinished, it leaves.
    s.clock().advance(kathikon_core::clock::SECOND);
    assert_eq!(s.prune(Duration::ZERO).unwrap(), 2);
    let delete = ids_after(inserted[2].id);
    assert_eq!(s.bulk(BulkAction::Delete { force: true }, &delete).unwrap(), 1);
    let status = s.batch("b").unwrap();
    assert_eq!(counted(&status), [1, 1, 1]);
    let last = claim_one(&*s, "q");
    assert_eq!(last.id, inserted[2].id);
    finish(&*s, &last, Outcome::Complete);
    assert_eq!(workers(&callback_jobs(&*s)), ["on_cancelled", "on_finished"]);
    s.reopen();
    assert!(s.batch("b").unwrap().finished_at.is_some());
}

/// A filter selecting the jobs after `id` (the batch's last member).
fn ids_after(id: u64) -> ListFilter {
    ListFilter { after: Some(id), ..ListFilter::default() }
}

pub fn threads_finishing_a_batch_at_once_insert_each_callback_once(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let members: Vec<NewJob> = (0..200).map(|_| job("q", "w")).collect();
    s.insert_batch("wide", Some(callbacks("{}")), members).unwrap();
    let workers_done: Vec<_> = (0..4)
        .map(|_| {
            let jobs = s.shared();
            std::thread::spawn(move || complete_all(&*jobs, "q", 7))
        })
        .collect();
    for w in workers_done {
        w.join().unwrap();
    }
    assert_eq!(workers(&callback_jobs(&*s)), ["on_completed", "on_finished"]);
    let status = s.batch("wide").unwrap();
    assert_eq!(count(&status, JobState::Completed), 200);
}
