//! `get` and `list` read jobs back exactly: each filter of `list` (state, queue, worker,
//! limit, after, and their conjunction, and paging with them), and unknown ids refused with
//! `JobNotFound` by every verb that takes one.

use crate::common::{claim_one, finish, insert_one, job, T0};
use crate::harness::{Backend, Store};
use kathikon_core::clock::SECOND;
use kathikon_core::{AckResult, Error, Job, JobId, JobState, Jobs, ListFilter, NewJob, Outcome};

fn all(store: &dyn Jobs) -> Vec<Job> {
    store.list(&ListFilter::default()).expect("list")
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// What the list test knows about a job from its own actions: id, queue, worker, state.
type Entry = (JobId, &'static str, &'static str, JobState);

pub fn list_filters_by_state_queue_worker_limit_and_after(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let now = T0;
    // Model of what we create: (id, queue, worker, state), filled from our own actions.
    let mut model: Vec<Entry> = Vec::new();
    let queues = ["a", "b"];
    let workers = ["w1", "w2", "w3"];
    for i in 0..12 {
        let (queue, worker) = (queues[i % 2], workers[i % 3]);
        let new =
            NewJob { scheduled_at: (i >= 9).then_some(now + 3600 * SECOND), ..job(queue, worker) };
        let stored = insert_one(&*s, new);
        model.push((stored.id, queue, worker, stored.state));
    }
    // Complete the first two available jobs of queue "a" (ids 1 and 3).
    for _ in 0..2 {
        let done = finish(&*s, &claim_one(&*s, "a"), Outcome::Complete);
        model.iter_mut().find(|m| m.0 == done.id).unwrap().3 = JobState::Completed;
    }
    assert_eq!(model[0].3, JobState::Completed);
    assert_eq!(model[2].3, JobState::Completed);
    // Claim one of "b" and leave it executing (id 2).
    let running = claim_one(&*s, "b");
    assert_eq!(running.id, 2);
    model[1].3 = JobState::Executing;

    let expect = |keep: &dyn Fn(&Entry) -> bool| -> Vec<JobId> {
        model.iter().filter(|m| keep(m)).map(|m| m.0).collect()
    };
    let got = |filter: ListFilter| ids(&s.list(&filter).unwrap());

    assert_eq!(got(ListFilter::default()), (1..=12).collect::<Vec<_>>());
    for state in JobState::ALL {
        let want = expect(&|m| m.3 == state);
        assert_eq!(got(ListFilter { state: Some(state), ..Default::default() }), want, "{state}");
    }
    assert_eq!(
        got(ListFilter { state: Some(JobState::Completed), ..Default::default() }),
        vec![1, 3]
    );
    assert_eq!(
        got(ListFilter { state: Some(JobState::Scheduled), ..Default::default() }),
        vec![10, 11, 12]
    );
    assert_eq!(got(ListFilter { state: Some(JobState::Executing), ..Default::default() }), vec![2]);
    for queue in queues {
        let want = expect(&|m| m.1 == queue);
        assert_eq!(want.len(), 6);
        assert_eq!(got(ListFilter { queue: Some(queue.into()), ..Default::default() }), want);
    }
    for worker in workers {
        let want = expect(&|m| m.2 == worker);
        assert_eq!(want.len(), 4);
        assert_eq!(got(ListFilter { worker: Some(worker.into()), ..Default::default() }), want);
    }
    // Combined filters are a conjunction.
    let combined = ListFilter {
        state: Some(JobState::Available),
        queue: Some("a".into()),
        worker: Some("w2".into()),
        ..Default::default()
    };
    assert_eq!(got(combined), expect(&|m| m.3 == JobState::Available && m.1 == "a" && m.2 == "w2"));
    assert_eq!(expect(&|m| m.3 == JobState::Available && m.1 == "a" && m.2 == "w2"), vec![5]);
    assert_eq!(
        got(ListFilter { queue: Some("nope".into()), ..Default::default() }),
        Vec::<JobId>::new()
    );

    // Limit counts matching jobs, not scanned ones.
    assert_eq!(got(ListFilter { limit: 3, ..Default::default() }), vec![1, 2, 3]);
    assert_eq!(
        got(ListFilter { queue: Some("b".into()), limit: 2, ..Default::default() }),
        vec![2, 4]
    );
    // After is exclusive.
    assert_eq!(got(ListFilter { after: Some(9), ..Default::default() }), vec![10, 11, 12]);
    assert_eq!(got(ListFilter { after: Some(12), ..Default::default() }), Vec::<JobId>::new());
    assert_eq!(
        got(ListFilter { after: Some(4), queue: Some("a".into()), limit: 2, ..Default::default() }),
        vec![5, 7]
    );
    // Paging with after + limit visits every job once, in id order.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = got(ListFilter { after, limit: 5, ..Default::default() });
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, (1..=12).collect::<Vec<_>>());
}

pub fn unknown_ids_are_job_not_found(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    assert!(matches!(s.get(1), Err(Error::JobNotFound(1))));
    let existing = insert_one(&*s, job("q", "w"));
    let unknown = existing.id + 1000;
    let err = s.get(unknown).unwrap_err();
    assert!(matches!(err, Error::JobNotFound(id) if id == unknown), "{err:?}");
    assert!(err.to_string().contains(&unknown.to_string()), "{err}");
    assert!(matches!(s.cancel(unknown), Err(Error::JobNotFound(id)) if id == unknown));
    assert!(matches!(s.retry(unknown), Err(Error::JobNotFound(id)) if id == unknown));
    let acked = s
        .ack(vec![kathikon_core::Ack { id: unknown, attempt: 1, outcome: Outcome::Complete }])
        .unwrap();
    assert_eq!(acked, vec![AckResult::Stale(None)]);
    // The failed lookups changed nothing.
    assert_eq!(all(&*s), vec![existing]);
}
