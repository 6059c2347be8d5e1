//! Proves that jobs a dead process left executing are rescued when the store is next opened: made available again with the attempt still counted and an "orphaned" error, or discarded when no attempts remain; that `recovery()` counts them; and that no other job is touched.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{claim_one, config, finish, insert_one, job, open, store_path};
use kathikon_core::clock::SECOND;
use kathikon_core::Jobs;
use kathikon_core::{
    Ack, AckResult, Clock, Engine, EngineConfig, Job, JobState, ListFilter, NewJob, Outcome,
    Recovery, SystemClock,
};

/// Set for the child process of [`a_killed_process_leaves_its_jobs_to_be_rescued`].
const CHILD_STORE: &str = "KATHIKON_TEST_CHILD_STORE";
/// The child's exit code once its jobs are executing: proves it got that far.
const CHILD_EXIT: i32 = 17;

fn all(engine: &Engine) -> Vec<Job> {
    engine.list(&ListFilter::default()).unwrap()
}

fn assert_orphaned(job: &Job, attempt: u32, then: &str) {
    let last = job.errors.last().expect("an error entry for the rescue");
    assert!(last.error.starts_with("orphaned"), "{:?}", last.error);
    assert!(last.error.contains(then), "{:?}", last.error);
    assert_eq!(last.attempt, attempt);
}

#[test]
fn jobs_left_executing_are_rescued_or_discarded_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = open(&path);
    let far = SystemClock.now() + 3600 * SECOND;

    let retried = insert_one(&engine, NewJob { max_attempts: 3, ..job("run", "w.retried") });
    let doomed = insert_one(&engine, NewJob { max_attempts: 1, ..job("run", "w.doomed") });
    // Bystanders in every other state.
    insert_one(&engine, job("done", "w"));
    let completed = finish(&engine, &claim_one(&engine, "done"), Outcome::Complete);
    insert_one(&engine, job("fail", "w"));
    let retryable = finish(
        &engine,
        &claim_one(&engine, "fail"),
        Outcome::Fail { error: "boom".into(), retry_in: Some(3600 * SECOND) },
    );
    insert_one(&engine, NewJob { max_attempts: 1, ..job("fail", "w") });
    let discarded = finish(
        &engine,
        &claim_one(&engine, "fail"),
        Outcome::Fail { error: "fatal".into(), retry_in: None },
    );
    assert_eq!(discarded.state, JobState::Discarded);
    let cancelled = engine.cancel(insert_one(&engine, job("idle", "w")).id).unwrap().0;
    let scheduled = insert_one(&engine, NewJob { scheduled_at: Some(far), ..job("later", "w") });
    let available = insert_one(&engine, job("idle", "w"));

    let running = engine.claim("run", 2, Duration::ZERO).unwrap();
    assert_eq!(running.iter().map(|j| j.id).collect::<Vec<_>>(), vec![retried.id, doomed.id]);
    assert!(running.iter().all(|j| j.state == JobState::Executing && j.attempt == 1));
    let untouched = vec![completed, retryable, discarded, cancelled, scheduled, available];
    for job in &untouched {
        assert_eq!(&engine.get(job.id).unwrap(), job);
    }
    drop(engine); // no ack: the two claimed jobs stay executing on disk

    let before_reopen = SystemClock.now();
    let engine = open(&path);
    assert_eq!(engine.recovery(), Recovery { rescued: 1, discarded: 1 });

    let rescued = engine.get(retried.id).unwrap();
    assert_eq!(rescued.state, JobState::Available);
    assert_eq!((rescued.attempt, rescued.max_attempts), (1, 3), "the attempt still counts");
    assert_eq!(rescued.errors.len(), 1);
    assert_orphaned(&rescued, 1, "made available again");
    assert!(rescued.scheduled_at >= before_reopen);
    assert_eq!(rescued.attempted_at, running[0].attempted_at);

    let gone = engine.get(doomed.id).unwrap();
    assert_eq!(gone.state, JobState::Discarded);
    assert_eq!(gone.attempt, 1);
    assert_orphaned(&gone, 1, "discarded: no attempts left");
    assert!(gone.discarded_at.is_some_and(|at| at >= before_reopen));

    for job in &untouched {
        assert_eq!(&engine.get(job.id).unwrap(), job, "recovery touched job {}", job.id);
    }
    let executing = ListFilter { state: Some(JobState::Executing), ..Default::default() };
    assert!(engine.list(&executing).unwrap().is_empty());
    let snapshot = all(&engine);
    engine.close();
    drop(engine);

    // A clean reopen finds nothing to rescue and changes nothing.
    let engine = open(&path);
    assert_eq!(engine.recovery(), Recovery::default());
    assert_eq!(all(&engine), snapshot);

    // The rescued job runs again as attempt 2; the dead process's attempt is fenced off.
    let again = claim_one(&engine, "run");
    assert_eq!((again.id, again.attempt), (retried.id, 2));
    let stale =
        engine.ack(vec![Ack { id: again.id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    assert_eq!(stale, vec![AckResult::Stale(Some(JobState::Executing))]);
    let done = finish(&engine, &again, Outcome::Complete);
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.errors.len(), 1);
    assert!(engine.claim("run", 1, Duration::ZERO).unwrap().is_empty(), "the doomed job ran");
}

#[test]
fn in_memory_and_fresh_stores_report_no_recovery() {
    let engine = Engine::open(EngineConfig::default()).unwrap();
    assert_eq!(engine.recovery(), Recovery::default());
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(open(&store_path(&dir)).recovery(), Recovery::default());
}

/// Not a test on its own: run by [`a_killed_process_leaves_its_jobs_to_be_rescued`] in a child
/// process, which opens the store, leaves jobs executing and exits without closing anything.
#[test]
#[ignore = "helper: runs only as the child process of a_killed_process_leaves_its_jobs_to_be_rescued"]
fn child_claims_then_dies() {
    let Ok(path) = std::env::var(CHILD_STORE) else { return };
    let engine = Engine::open(config(Path::new(&path))).unwrap();
    engine
        .insert(vec![
            NewJob { max_attempts: 2, ..job("q", "w.rescued") },
            NewJob { max_attempts: 1, ..job("q", "w.doomed") },
            job("q", "w.completed"),
            job("q", "w.waiting"),
        ])
        .unwrap();
    let claimed = engine.claim("q", 3, Duration::ZERO).unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    finish(&engine, &claimed[2], Outcome::Complete);
    // Die here: no close, no destructors, the writer thread killed mid-wait.
    std::process::exit(CHILD_EXIT);
}

#[test]
fn a_killed_process_leaves_its_jobs_to_be_rescued() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_claims_then_dies", "--test-threads=1", "--nocapture"])
        .env(CHILD_STORE, &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(CHILD_EXIT),
        "child did not reach its exit: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let engine = open(&path);
    assert_eq!(engine.recovery(), Recovery { rescued: 1, discarded: 1 });
    let jobs = all(&engine);
    let states: Vec<_> = jobs.iter().map(|j| (j.id, j.state, j.attempt)).collect();
    assert_eq!(
        states,
        vec![
            (1, JobState::Available, 1),
            (2, JobState::Discarded, 1),
            (3, JobState::Completed, 1),
            (4, JobState::Available, 0),
        ]
    );
    assert_orphaned(&jobs[0], 1, "made available again");
    assert_orphaned(&jobs[1], 1, "discarded: no attempts left");
    assert!(jobs[2].errors.is_empty() && jobs[3].errors.is_empty());
    // The rescued job was made available now, so the job that waited all along goes first.
    let claimed = engine.claim("q", 10, Duration::ZERO).unwrap();
    let order: Vec<_> = claimed.iter().map(|j| (j.id, j.attempt)).collect();
    assert_eq!(order, vec![(4, 1), (1, 2)]);
}

/// The open's rescue counts in the batches of the jobs it moves: a member rescued is
/// available again in its batch's counts, and one discarded by it (no attempts left) finishes
/// its batch, whose callback the open inserts.
#[test]
fn rescues_at_open_move_their_batches_counts_and_may_finish_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let engine = open(&path);
    let callbacks = vec![(kathikon_core::BatchEvent::Discarded, job("cb", "w.alert"))];
    let again = NewJob { max_attempts: 3, ..job("run", "w") };
    engine.insert_batch("retried", None, vec![again]).unwrap();
    let doomed = NewJob { max_attempts: 1, ..job("run", "w") };
    engine.insert_batch("doomed", Some(callbacks), vec![doomed]).unwrap();
    assert_eq!(engine.claim("run", 2, Duration::ZERO).unwrap().len(), 2);
    drop(engine); // no ack: both stay executing on disk

    let engine = open(&path);
    assert_eq!(engine.recovery(), Recovery { rescued: 1, discarded: 1 });
    let retried = engine.batch("retried").unwrap();
    assert_eq!(retried.counts[JobState::Available as usize], 1);
    assert_eq!(retried.total(), 1);
    let doomed = engine.batch("doomed").unwrap();
    assert!(doomed.finished_at.is_some());
    let callback = doomed.callbacks[0].job.expect("the open inserted the callback");
    assert_eq!(engine.get(callback).unwrap().worker, "w.alert");
    assert_eq!(claim_one(&engine, "cb").id, callback, "and it is in its claim queue");
}
