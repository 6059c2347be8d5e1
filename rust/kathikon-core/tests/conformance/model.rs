//! Property tests of the contract's verbs (proptest), on each backend:
//!
//! - a model test: random sequences of insert (valid and invalid; batches of 1-3 jobs, and
//!   of 32-39, which the writer files in its idle time), claim, ack with every
//!   outcome (and stale acks), cancel, retry, prune, time passing, and close + reopen of a
//!   store file, run against the store and against a plain reference model of the state
//!   machine (a `BTreeMap` of jobs, like redb's own fuzzer checks redb against one). After
//!   every step each call's answer and every stored job (state, attempt, max attempts, due
//!   time, timestamps, error history) must match the model, and the store's counts and claim
//!   queues must agree with its records;
//! - arbitrary job descriptions (any strings, priorities, attempt counts, due times) are
//!   either refused with `InvalidJob` or stored and read back exactly.
//!
//! Case counts are small by default, for CI; `PROPTEST_CASES=N` runs more.
//!
//! Where the backends differ, the reference says how: a store that fences refused acks (the
//! socket's owner) notes each in the job's history, and rescues a client's claims when it
//! disconnects rather than at the next open (so only the engine reports a recovery count).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{assert_indexes_match_records, snapshot, T0};
use crate::harness::{Backend, Store};
use kathikon_core::backoff::default_backoff;
use kathikon_core::clock::SECOND;
use kathikon_core::{Ack, AckResult, Error, Job, JobId, JobState, Jobs, Micros, NewJob, Outcome};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const QUEUES: [&str; 2] = ["q0", "q1"];

/// One step of a run.
#[derive(Debug, Clone)]
enum Step {
    /// Insert a batch; `invalid` puts one bad job in it (so nothing is inserted).
    Insert { jobs: Vec<Spec>, invalid: bool },
    /// Claim up to `max` from a queue.
    Claim { queue: usize, max: usize },
    /// Ack executing jobs (chosen by index among them), or a stale ack when `stale`.
    Ack { picks: Vec<(usize, Fate)>, stale: bool },
    /// Cancel the job chosen by `pick` (past the last id: an unknown job).
    Cancel { pick: usize },
    /// Retry the job chosen by `pick`.
    Retry { pick: usize },
    /// Prune jobs finished at least `age_s` seconds ago.
    Prune { age_s: u64 },
    /// Let `secs` seconds pass, then wait for due jobs to be promoted.
    Advance { secs: i64 },
    /// Close the store and open it again (executing jobs are rescued).
    Reopen,
}

#[derive(Debug, Clone)]
struct Spec {
    queue: usize,
    priority: u8,
    max_attempts: u32,
    delay_s: Option<i64>,
}

#[derive(Debug, Clone)]
enum Fate {
    Complete,
    Fail(Option<i64>),
    Snooze(i64),
    Cancel,
    Discard,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0..QUEUES.len(), 0..=9_u8, 1..=3_u32, prop::option::weighted(0.3, 0..=120_i64)).prop_map(
        |(queue, priority, max_attempts, delay_s)| Spec { queue, priority, max_attempts, delay_s },
    )
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        3 => Just(Fate::Complete),
        3 => prop::option::of(0..=60_i64).prop_map(Fate::Fail),
        1 => (0..=60_i64).prop_map(Fate::Snooze),
        1 => Just(Fate::Cancel),
        1 => Just(Fate::Discard),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::collection::vec(spec(), 1..4), prop::bool::weighted(0.1))
            .prop_map(|(jobs, invalid)| Step::Insert { jobs, invalid }),
        // Big enough that the writer leaves the jobs for its idle time to file.
        1 => (prop::collection::vec(spec(), 32..40), prop::bool::weighted(0.1))
            .prop_map(|(jobs, invalid)| Step::Insert { jobs, invalid }),
        4 => (0..QUEUES.len(), 1..4_usize).prop_map(|(queue, max)| Step::Claim { queue, max }),
        4 => (prop::collection::vec((0..8_usize, fate()), 1..3), prop::bool::weighted(0.1))
            .prop_map(|(picks, stale)| Step::Ack { picks, stale }),
        1 => (0..40_usize).prop_map(|pick| Step::Cancel { pick }),
        1 => (0..40_usize).prop_map(|pick| Step::Retry { pick }),
        1 => prop_oneof![Just(0_u64), Just(30), Just(3600)].prop_map(|age_s| Step::Prune { age_s }),
        2 => (1..=90_i64).prop_map(|secs| Step::Advance { secs }),
        1 => Just(Step::Reopen),
    ]
}

/// What the model knows of a job: everything the store keeps but its texts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    id: JobId,
    state: JobState,
    queue: String,
    priority: u8,
    attempt: u32,
    max_attempts: u32,
    inserted_at: Micros,
    scheduled_at: Micros,
    attempted_at: Option<Micros>,
    completed_at: Option<Micros>,
    cancelled_at: Option<Micros>,
    discarded_at: Option<Micros>,
    /// `(at, attempt)` of each error entry.
    errors: Vec<(Micros, u32)>,
}

impl Model {
    fn of(job: &Job) -> Model {
        Model {
            id: job.id,
            state: job.state,
            queue: job.queue.clone(),
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            inserted_at: job.inserted_at,
            scheduled_at: job.scheduled_at,
            attempted_at: job.attempted_at,
            completed_at: job.completed_at,
            cancelled_at: job.cancelled_at,
            discarded_at: job.discarded_at,
            errors: job.errors.iter().map(|e| (e.at, e.attempt)).collect(),
        }
    }

    fn finished_at(&self) -> Option<Micros> {
        match self.state {
            JobState::Completed => self.completed_at,
            JobState::Cancelled => self.cancelled_at,
            JobState::Discarded => self.discarded_at,
            _ => None,
        }
    }

    fn cancel(&mut self, now: Micros) {
        self.state = JobState::Cancelled;
        self.cancelled_at = Some(now);
        self.errors.push((now, self.attempt));
    }

    fn discard(&mut self, now: Micros) {
        self.state = JobState::Discarded;
        self.discarded_at = Some(now);
        self.errors.push((now, self.attempt));
    }
}

/// The reference: jobs by id, the next id, and the time.
#[derive(Debug, Default)]
struct Reference {
    jobs: BTreeMap<JobId, Model>,
    next_id: JobId,
    now: Micros,
    /// For a store that fences refused acks: the attempt its one client holds, by job (the
    /// client claimed it and has not reported on it yet).
    held: Option<BTreeMap<JobId, u32>>,
}

impl Reference {
    /// Due scheduled or retryable jobs become available (every write batch starts so).
    fn promote(&mut self) {
        for job in self.jobs.values_mut() {
            if job.state.is_waiting() && job.scheduled_at <= self.now {
                job.state = JobState::Available;
            }
        }
    }

    /// The ids a claim of `max` from `queue` takes: most urgent, then oldest, then first.
    fn claimable(&self, queue: &str, max: usize) -> Vec<JobId> {
        let mut ready: Vec<&Model> = self
            .jobs
            .values()
            .filter(|j| j.queue == queue && j.state == JobState::Available)
            .collect();
        ready.sort_by_key(|j| (j.priority, j.scheduled_at, j.id));
        ready.iter().take(max).map(|j| j.id).collect()
    }

    fn executing(&self) -> Vec<JobId> {
        self.jobs.values().filter(|j| j.state == JobState::Executing).map(|j| j.id).collect()
    }

    /// The job chosen by `pick` among every id ever given out, and one past them.
    fn pick(&self, pick: usize) -> JobId {
        (pick as u64 % self.next_id.max(1)) + 1
    }

    /// Whether an ack of `attempt` of `id` passes the fence; one that passes lets the job go.
    fn passes_fence(&mut self, id: JobId, attempt: u32) -> bool {
        match &mut self.held {
            None => true,
            Some(held) if held.get(&id) == Some(&attempt) => {
                held.remove(&id);
                true
            }
            Some(_) => {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.errors.push((self.now, attempt));
                }
                false
            }
        }
    }

    /// What an open (or the owner, when its client leaves) does to jobs left executing:
    /// `(rescued, discarded)`.
    fn rescue(&mut self) -> (u64, u64) {
        let now = self.now;
        let (mut rescued, mut discarded) = (0, 0);
        for job in self.jobs.values_mut().filter(|j| j.state == JobState::Executing) {
            if job.attempt >= job.max_attempts {
                job.discard(now);
                discarded += 1;
            } else {
                job.state = JobState::Available;
                job.scheduled_at = now;
                job.errors.push((now, job.attempt));
                rescued += 1;
            }
        }
        (rescued, discarded)
    }
}

fn new_job(spec: &Spec, now: Micros) -> NewJob {
    NewJob {
        queue: QUEUES[spec.queue].into(),
        worker: "w".into(),
        args: "{}".into(),
        meta: "{}".into(),
        tags: Vec::new(),
        max_attempts: spec.max_attempts,
        priority: spec.priority,
        scheduled_at: spec.delay_s.map(|d| now + d * SECOND),
        unique: None,
        batch: None,
    }
}

/// Apply `step` to the store and the reference, checking the store's answer.
#[allow(clippy::too_many_lines)] // one arm per kind of step reads best in one place
fn apply(store: &mut Store, model: &mut Reference, step: &Step) -> Result<(), TestCaseError> {
    let now = model.now;
    match step {
        Step::Insert { jobs, invalid } => {
            let mut batch: Vec<NewJob> = jobs.iter().map(|s| new_job(s, now)).collect();
            if *invalid {
                batch[0].priority = 10;
            }
            let got = store.insert(batch.clone());
            if *invalid {
                prop_assert!(matches!(got, Err(Error::InvalidJob(_))), "{got:?}");
                return Ok(());
            }
            model.promote();
            let got = got.expect("insert");
            prop_assert_eq!(got.len(), batch.len());
            for (new, job) in batch.iter().zip(&got) {
                let scheduled_at = new.scheduled_at.unwrap_or(now);
                let expected = Model {
                    id: model.next_id + 1,
                    state: if scheduled_at > now {
                        JobState::Scheduled
                    } else {
                        JobState::Available
                    },
                    queue: new.queue.clone(),
                    priority: new.priority,
                    attempt: 0,
                    max_attempts: new.max_attempts,
                    inserted_at: now,
                    scheduled_at,
                    attempted_at: None,
                    completed_at: None,
                    cancelled_at: None,
                    discarded_at: None,
                    errors: Vec::new(),
                };
                prop_assert_eq!(&Model::of(job), &expected);
                model.next_id += 1;
                model.jobs.insert(expected.id, expected);
            }
        }
        Step::Claim { queue, max } => {
            model.promote();
            let queue = QUEUES[*queue];
            let expected = model.claimable(queue, *max);
            let got = store.claim(queue, *max, Duration::ZERO).expect("claim");
            prop_assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), expected.clone());
            for id in expected {
                let job = model.jobs.get_mut(&id).unwrap();
                job.state = JobState::Executing;
                job.attempt += 1;
                job.attempted_at = Some(now);
                if let Some(held) = &mut model.held {
                    held.insert(id, job.attempt);
                }
            }
        }
        Step::Ack { picks, stale } => {
            model.promote();
            let executing = model.executing();
            let mut acks = Vec::new();
            let mut expected = Vec::new();
            if *stale || executing.is_empty() {
                // An old attempt, or a job that is not executing at all.
                let id = model.pick(picks[0].0);
                let (attempt, state) = match model.jobs.get(&id) {
                    Some(j) if j.state == JobState::Executing => (j.attempt - 1, Some(j.state)),
                    Some(j) => (j.attempt, Some(j.state)),
                    None => (1, None),
                };
                acks.push(Ack { id, attempt, outcome: Outcome::Complete });
                expected.push(Err(state));
                model.passes_fence(id, attempt);
            } else {
                let mut used = Vec::new();
                for (pick, fate) in picks {
                    let id = executing[pick % executing.len()];
                    if used.contains(&id) {
                        continue; // a second report on one attempt is stale; tested above
                    }
                    used.push(id);
                    let attempt = model.jobs[&id].attempt;
                    prop_assert!(model.passes_fence(id, attempt), "job {id} is not held");
                    let job = model.jobs.get_mut(&id).unwrap();
                    let outcome = match fate {
                        Fate::Complete => {
                            job.state = JobState::Completed;
                            job.completed_at = Some(now);
                            Outcome::Complete
                        }
                        Fate::Fail(retry_s) => {
                            if job.attempt >= job.max_attempts {
                                job.discard(now);
                            } else {
                                job.state = JobState::Retryable;
                                job.errors.push((now, job.attempt));
                                let delay = retry_s.map_or_else(
                                    || default_backoff(job.attempt, id),
                                    |s| s * SECOND,
                                );
                                job.scheduled_at = now + delay;
                            }
                            Outcome::Fail {
                                error: "boom".into(),
                                retry_in: retry_s.map(|s| s * SECOND),
                            }
                        }
                        Fate::Snooze(s) => {
                            job.state = JobState::Scheduled;
                            job.max_attempts += 1;
                            job.scheduled_at = now + s * SECOND;
                            Outcome::Snooze { delay: s * SECOND }
                        }
                        Fate::Cancel => {
                            job.cancel(now);
                            Outcome::Cancel { reason: "stop".into() }
                        }
                        Fate::Discard => {
                            job.discard(now);
                            Outcome::Discard { reason: "bad".into() }
                        }
                    };
                    acks.push(Ack { id, attempt: job.attempt, outcome });
                    expected.push(Ok(job.clone()));
                }
            }
            let got = store.ack(acks).expect("ack");
            prop_assert_eq!(got.len(), expected.len());
            for (got, want) in got.iter().zip(&expected) {
                match (got, want) {
                    (AckResult::Applied(job), Ok(model)) => prop_assert_eq!(&Model::of(job), model),
                    (AckResult::Stale(found), Err(state)) => prop_assert_eq!(found, state),
                    _ => prop_assert!(false, "ack gave {got:?}, expected {want:?}"),
                }
            }
        }
        Step::Cancel { pick } => {
            model.promote();
            let id = model.pick(*pick);
            let got = store.cancel(id);
            match model.jobs.get_mut(&id) {
                None => prop_assert!(matches!(got, Err(Error::JobNotFound(i)) if i == id)),
                Some(job) => {
                    let (after, before) = got.expect("cancel");
                    prop_assert_eq!(before, job.state);
                    if !job.state.is_terminal() {
                        job.cancel(now);
                    }
                    prop_assert_eq!(&Model::of(&after), job);
                }
            }
        }
        Step::Retry { pick } => {
            model.promote();
            let id = model.pick(*pick);
            let got = store.retry(id);
            match model.jobs.get_mut(&id) {
                None => prop_assert!(matches!(got, Err(Error::JobNotFound(i)) if i == id)),
                Some(job) if job.state == JobState::Executing => {
                    prop_assert!(
                        matches!(got, Err(Error::IllegalTransition { id: i, .. }) if i == id),
                        "{got:?}"
                    );
                }
                Some(job) => {
                    if job.state != JobState::Available {
                        job.state = JobState::Available;
                        job.max_attempts = job.max_attempts.max(job.attempt + 1);
                        job.scheduled_at = now;
                        job.completed_at = None;
                        job.cancelled_at = None;
                        job.discarded_at = None;
                    }
                    prop_assert_eq!(&Model::of(&got.expect("retry")), job);
                }
            }
        }
        Step::Prune { age_s } => {
            model.promote();
            let before = now - *age_s as i64 * SECOND;
            let doomed: Vec<JobId> = model
                .jobs
                .values()
                .filter(|j| j.finished_at().is_some_and(|at| at <= before))
                .map(|j| j.id)
                .collect();
            let got = store.prune(Duration::from_secs(*age_s)).expect("prune");
            prop_assert_eq!(got, doomed.len() as u64);
            for id in doomed {
                model.jobs.remove(&id);
            }
        }
        Step::Advance { secs } => {
            store.clock().advance(secs * SECOND);
            model.now += secs * SECOND;
            store.sync().expect("sync");
            model.promote();
        }
        Step::Reopen => {
            store.close();
            if store.has_store_file() {
                assert_indexes_match_records(&store.path());
            }
            store.reopen();
            let (rescued, discarded) = model.rescue();
            if let Some(held) = &mut model.held {
                held.clear();
            }
            if let Some(recovery) = store.recovery() {
                prop_assert_eq!((recovery.rescued, recovery.discarded), (rescued, discarded));
            }
        }
    }
    Ok(())
}

/// Every stored job matches the model, and the store agrees with itself.
fn compare(store: &dyn Jobs, model: &mut Reference) -> Result<(), TestCaseError> {
    store.sync().expect("sync");
    model.promote();
    let snap = snapshot(store);
    let got: BTreeMap<JobId, Model> = snap.jobs.iter().map(|j| (j.id, Model::of(j))).collect();
    prop_assert_eq!(&got, &model.jobs);
    Ok(())
}

fn run(backend: &'static dyn Backend, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut store = Store::open_with(backend, |config| {
        config.prune_interval = Duration::from_secs(3600);
        config.scheduler_interval = Duration::from_secs(3600);
    });
    let held = store.fences_refused_acks().then(BTreeMap::new);
    let mut model = Reference { now: T0, held, ..Reference::default() };
    for (i, step) in steps.iter().enumerate() {
        apply(&mut store, &mut model, step)
            .map_err(|e| TestCaseError::fail(format!("step {i} {step:?}: {e}")))?;
        compare(&*store, &mut model)
            .map_err(|e| TestCaseError::fail(format!("after step {i} {step:?}: {e}")))?;
    }
    store.close();
    if store.has_store_file() {
        assert_indexes_match_records(&store.path());
    }
    Ok(())
}

/// Proptest's runner with `cases` cases (failures are saved beside this file, as
/// `proptest!` does).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    })
}

pub fn matches_the_reference_model(backend: &'static dyn Backend) {
    let steps = prop::collection::vec(step(), 1..48);
    if let Err(e) = runner(cases(24)).run(&steps, |steps| run(backend, &steps)) {
        panic!("{e}");
    }
}

/// Any string, including empty ones, control characters and non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}",
        any::<String>(),
        prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
    ]
}

/// JSON-ish text: valid JSON of many shapes, or anything at all.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{}".to_string()),
        Just("null".to_string()),
        Just("[1, 2.5e300, -0, \"\\u0000\", {\"a\": [[[]]]}]".to_string()),
        any::<String>().prop_map(|s| serde_json::to_string(&*s).unwrap()),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(|v| serde_json::to_string(&v).unwrap()),
        Just("[".repeat(64) + &"]".repeat(64)),
        Just("NaN".to_string()),
        Just("{\"a\":1,}".to_string()),
        any::<String>(),
    ]
}

/// A job description made of anything: any strings, priorities, attempt counts, due times.
fn any_new_job() -> impl Strategy<Value = NewJob> {
    (
        text(),
        text(),
        json_text(),
        json_text(),
        prop::collection::vec(text(), 0..4),
        prop_oneof![Just(0_u32), 1..5_u32, Just(u32::MAX)],
        any::<u8>(),
        prop::option::of(prop_oneof![any::<i64>(), (T0 - 10)..(T0 + 10)]),
    )
        .prop_map(|(queue, worker, args, meta, tags, max_attempts, priority, scheduled_at)| {
            NewJob {
                queue,
                worker,
                args,
                meta,
                tags,
                max_attempts,
                priority,
                scheduled_at,
                unique: None,
                batch: None,
            }
        })
}

pub fn any_job_description_is_refused_or_stored_exactly(backend: &'static dyn Backend) {
    // One store for every case: opening one per case would only measure opens.
    let store = Store::open(backend);
    let checked = runner(cases(128)).run(&any_new_job(), |new| {
        let valid = store.validate(&new);
        match store.insert(vec![new.clone()]) {
            Ok(jobs) => {
                prop_assert!(valid.is_ok());
                let job = &jobs[0];
                prop_assert_eq!(&store.get(job.id).unwrap(), job);
                prop_assert_eq!(
                    (&job.queue, &job.worker, &job.args, &job.meta, &job.tags),
                    (&new.queue, &new.worker, &new.args, &new.meta, &new.tags)
                );
                prop_assert_eq!((job.max_attempts, job.priority), (new.max_attempts, new.priority));
                prop_assert_eq!(job.scheduled_at, new.scheduled_at.unwrap_or(job.inserted_at));
            }
            Err(Error::InvalidJob(msg)) => {
                prop_assert!(valid.is_err());
                prop_assert!(!msg.is_empty());
            }
            Err(other) => prop_assert!(false, "insert gave {other:?}"),
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
}
