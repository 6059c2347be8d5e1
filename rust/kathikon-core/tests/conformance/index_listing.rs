//! Listing through the per-state indexes gives exactly what the walk over every job gives: on
//! stores of random jobs in every state, for random filters by state, queue, worker,
//! finishing time, id bounds, order and limit, `list` and `count` equal the full listing (a
//! walk: it names no state) filtered here, and paging by cursor gives the same jobs.

use std::time::Duration;

use crate::common::{self, job, T0};
use crate::harness::{Backend, Store};
use kathikon_core::clock::SECOND;
use kathikon_core::{Ack, Job, JobId, JobState, ListFilter, NewJob, Outcome, TimeRange};

/// A small deterministic generator (xorshift64*), so a failure names a seed to replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const QUEUES: [&str; 3] = ["a", "b", "c"];
const WORKERS: [&str; 2] = ["w1", "w2"];

/// Fill the store with `n` jobs and drive them to random states, each outcome at its own
/// time.
fn fill(s: &Store, rng: &mut Rng, n: usize) {
    let mut batch = Vec::new();
    for i in 0..n {
        let queue = QUEUES[rng.below(3) as usize];
        let worker = WORKERS[rng.below(2) as usize];
        let scheduled = rng.chance(10).then_some(T0 + 3600 * SECOND + i as i64);
        batch.push(NewJob { scheduled_at: scheduled, max_attempts: 2, ..job(queue, worker) });
    }
    s.insert(batch).expect("insert");
    for queue in QUEUES {
        // Claim most of the queue's ready jobs (uneven: queue "a" keeps a backlog).
        let take = if queue == "a" { n / 10 } else { n };
        let claimed = s.claim(queue, take, Duration::ZERO).expect("claim");
        for j in claimed {
            s.clock().advance(SECOND);
            let outcome = match rng.below(10) {
                0..=3 => Outcome::Complete,
                4 => Outcome::Discard { reason: "bad".into() },
                5 => Outcome::Cancel { reason: "no".into() },
                6 => Outcome::Fail { error: "boom".into(), retry_in: Some(3600 * SECOND) },
                7 => continue, // left executing
                _ => Outcome::Fail { error: "boom".into(), retry_in: Some(SECOND) },
            };
            s.ack(vec![Ack { id: j.id, attempt: j.attempt, outcome }]).expect("ack");
        }
    }
    // Some available jobs cancelled, some failed ones retried or deleted.
    let all = s.list(&ListFilter::default()).expect("list");
    for j in &all {
        if j.state == JobState::Available && rng.chance(5) {
            s.cancel(j.id).expect("cancel");
        } else if j.state == JobState::Discarded && rng.chance(20) {
            s.retry(j.id).expect("retry");
        }
    }
    let old = ListFilter { states: vec![JobState::Cancelled], ..Default::default() };
    let first = s.list(&ListFilter { limit: 3, ..old }).expect("list cancelled");
    if let Some(last) = first.last() {
        let doomed = ListFilter { before: Some(last.id + 1), ..Default::default() };
        let doomed = ListFilter { states: vec![JobState::Cancelled], ..doomed };
        s.bulk(kathikon_core::BulkAction::Delete { force: false }, &doomed).expect("delete");
    }
    s.sync().expect("sync");
}

/// What the filter selects of `all` (every job, in id order), as the walk decides it.
fn expected(all: &[Job], f: &ListFilter) -> Vec<JobId> {
    let mut out: Vec<JobId> = all
        .iter()
        .filter(|j| {
            f.state.is_none_or(|s| s == j.state)
                && (f.states.is_empty() || f.states.contains(&j.state))
                && f.queue.as_ref().is_none_or(|q| *q == j.queue)
                && f.worker.as_ref().is_none_or(|w| *w == j.worker)
                && f.after.is_none_or(|a| j.id > a)
                && f.before.is_none_or(|b| j.id < b)
                && (f.finished == TimeRange::default()
                    || j.finished_at().is_some_and(|at| {
                        f.finished.after.is_none_or(|a| at >= a)
                            && f.finished.before.is_none_or(|b| at < b)
                    }))
        })
        .map(|j| j.id)
        .collect();
    if f.descending {
        out.reverse();
    }
    if f.limit > 0 {
        out.truncate(f.limit);
    }
    out
}

fn random_filter(rng: &mut Rng, all: &[Job]) -> ListFilter {
    let mut f = ListFilter::default();
    let pick = |rng: &mut Rng| JobState::ALL[rng.below(7) as usize];
    match rng.below(4) {
        0 => f.state = Some(pick(rng)),
        1 => f.states = (0..=rng.below(3)).map(|_| pick(rng)).collect(),
        2 => {
            f.state = Some(pick(rng));
            f.states = vec![pick(rng), pick(rng)];
        }
        _ => {}
    }
    if rng.chance(60) {
        f.queue = Some(QUEUES[rng.below(4).min(2) as usize].into());
    }
    if rng.chance(20) {
        f.worker = Some(WORKERS[rng.below(2) as usize].into());
    }
    if rng.chance(25) {
        let at = |rng: &mut Rng| T0 + rng.below(all.len() as u64 + 10) as i64 * SECOND;
        f.finished = TimeRange {
            after: rng.chance(70).then(|| at(rng)),
            before: rng.chance(70).then(|| at(rng)),
        };
    }
    let id = |rng: &mut Rng| rng.below(all.len() as u64 + 2);
    if rng.chance(20) {
        f.after = Some(id(rng));
    }
    if rng.chance(20) {
        f.before = Some(id(rng));
    }
    f.descending = rng.chance(50);
    f.limit = [0, 1, 5, 50][rng.below(4) as usize];
    f
}

pub fn listing_by_index_equals_the_walk_on_random_stores(backend: &'static dyn Backend) {
    for seed in 1..=4_u64 {
        let s = Store::open(backend);
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        fill(&s, &mut rng, 300 + 100 * seed as usize);
        // The full listing names no state, so it is the walk over every job.
        let all = s.list(&ListFilter::default()).expect("list every job");
        for round in 0..150 {
            let f = random_filter(&mut rng, &all);
            let want = expected(&all, &f);
            assert_eq!(ids(&s.list(&f).unwrap()), want, "seed {seed} round {round}: {f:?}");
            let whole = ListFilter { limit: 0, ..f.clone() };
            let n = expected(&all, &whole).len() as u64;
            assert_eq!(s.count(&whole).unwrap(), n, "seed {seed} round {round} count: {f:?}");
            if f.limit > 0 && round % 10 == 0 {
                // Page through by cursor: the same jobs as one listing without a limit.
                let mut paged: Vec<JobId> = Vec::new();
                let mut page = f.clone();
                loop {
                    let got = ids(&s.list(&page).unwrap());
                    paged.extend(&got);
                    match got.last() {
                        Some(&last) if got.len() == f.limit => {
                            if f.descending {
                                page.before = Some(last);
                            } else {
                                page.after = Some(last);
                            }
                        }
                        _ => break,
                    }
                }
                assert_eq!(paged, expected(&all, &whole), "seed {seed} paged: {f:?}");
            }
        }
        drop(s);
    }
}

/// The newest failed jobs of one queue among many others, and a state no job of the queue is
/// in: the cases the indexes are for, checked against the walk.
pub fn newest_failed_of_one_queue_come_from_the_index(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let mut batch = Vec::new();
    for i in 0..2_000 {
        batch.push(job(if i % 100 == 0 { "rare" } else { "busy" }, "w"));
    }
    s.insert(batch).unwrap();
    let rare = s.claim("rare", 100, Duration::ZERO).unwrap();
    for (i, j) in rare.iter().enumerate() {
        let outcome = if i % 2 == 0 {
            Outcome::Discard { reason: "x".into() }
        } else {
            Outcome::Fail { error: "e".into(), retry_in: Some(3600 * SECOND) }
        };
        common::finish(&*s, j, outcome);
    }
    let all = s.list(&ListFilter::default()).unwrap();
    for state in [JobState::Discarded, JobState::Retryable, JobState::Completed] {
        let f = ListFilter {
            state: Some(state),
            queue: Some("rare".into()),
            descending: true,
            limit: 5,
            ..Default::default()
        };
        let got = ids(&s.list(&f).unwrap());
        assert_eq!(got, expected(&all, &f), "{f:?}");
        assert_eq!(got.is_empty(), state == JobState::Completed, "{f:?}");
    }
    let path = s.path();
    s.close();
    if s.has_store_file() {
        common::assert_indexes_match_records(&path);
    }
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}
