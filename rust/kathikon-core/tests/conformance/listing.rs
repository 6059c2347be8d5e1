//! `list`'s full filter (states, tags, contained JSON, time ranges, descending order, id
//! bounds), `count` and the bulk actions, each checked against a model built from the test's
//! own inserts and actions; bulk actions over more jobs than one chunk.

use crate::common::{self, claim_one, job, T0};
use crate::harness::{Backend, Store};
use kathikon_core::clock::SECOND;
use kathikon_core::{
    BulkAction, Error, Job, JobId, JobState, Jobs, ListFilter, NewJob, TimeRange, BULK_CHUNK,
};

/// What the test knows of a job: id, queue, tags, args, scheduled time, state.
#[derive(Clone)]
struct Known {
    id: JobId,
    queue: &'static str,
    tag: &'static str,
    user: u64,
    scheduled_at: i64,
    state: JobState,
}

/// Which jobs of the model a filter case selects.
type Keep = Box<dyn Fn(&Known) -> bool>;

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// Insert `n` jobs across two queues, three tags and five users; the last tenth scheduled.
fn fill(s: &dyn Jobs, n: usize) -> Vec<Known> {
    let queues = ["a", "b"];
    let tags = ["red", "green", "blue"];
    let mut batch = Vec::new();
    for i in 0..n {
        let (queue, tag, user) = (queues[i % 2], tags[i % 3], (i % 5) as u64);
        batch.push(NewJob {
            args: format!(r#"{{"user":{{"id":{user}}},"n":{i}}}"#),
            tags: vec![tag.into(), "all".into()],
            scheduled_at: (i >= n * 9 / 10).then_some(T0 + (i as i64) * SECOND),
            ..job(queue, "w")
        });
    }
    let stored = s.insert(batch).expect("insert");
    stored
        .iter()
        .enumerate()
        .map(|(i, j)| Known {
            id: j.id,
            queue: queues[i % 2],
            tag: tags[i % 3],
            user: (i % 5) as u64,
            scheduled_at: j.scheduled_at,
            state: j.state,
        })
        .collect()
}

pub fn list_and_count_follow_every_filter_in_both_orders(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let mut model = fill(&*s, 60);
    let running = claim_one(&*s, "a");
    model.iter_mut().find(|k| k.id == running.id).unwrap().state = JobState::Executing;

    let cases: Vec<(ListFilter, Keep)> = vec![
        (ListFilter::default(), Box::new(|_| true)),
        (
            ListFilter {
                states: vec![JobState::Scheduled, JobState::Executing],
                ..Default::default()
            },
            Box::new(|k| matches!(k.state, JobState::Scheduled | JobState::Executing)),
        ),
        (
            ListFilter { queue: Some("b".into()), tags: vec!["red".into()], ..Default::default() },
            Box::new(|k| k.queue == "b" && k.tag == "red"),
        ),
        (
            ListFilter { tags: vec!["all".into(), "nope".into()], ..Default::default() },
            Box::new(|_| false),
        ),
        (
            ListFilter { args: Some(r#"{"user": {"id": 3}}"#.into()), ..Default::default() },
            Box::new(|k| k.user == 3),
        ),
        (
            ListFilter {
                scheduled: TimeRange {
                    after: Some(T0 + 56 * SECOND),
                    before: Some(T0 + 58 * SECOND),
                },
                ..Default::default()
            },
            Box::new(|k| k.scheduled_at >= T0 + 56 * SECOND && k.scheduled_at < T0 + 58 * SECOND),
        ),
        (
            ListFilter {
                finished: TimeRange { after: Some(0), before: None },
                ..Default::default()
            },
            Box::new(|_| false),
        ),
        (
            ListFilter { after: Some(10), before: Some(20), ..Default::default() },
            Box::new(|k| k.id > 10 && k.id < 20),
        ),
    ];
    for (filter, keep) in &cases {
        let want: Vec<JobId> = model.iter().filter(|k| keep(k)).map(|k| k.id).collect();
        assert_eq!(ids(&s.list(filter).unwrap()), want, "{filter:?}");
        assert_eq!(s.count(filter).unwrap(), want.len() as u64, "{filter:?}");
        let desc = ListFilter { descending: true, ..filter.clone() };
        let mut reversed = want.clone();
        reversed.reverse();
        assert_eq!(ids(&s.list(&desc).unwrap()), reversed, "{desc:?}");
        // Paging newest first, three at a time, by the last id seen.
        let mut paged: Vec<JobId> = Vec::new();
        let mut page = ListFilter { limit: 3, ..desc.clone() };
        loop {
            let got = ids(&s.list(&page).unwrap());
            paged.extend(&got);
            match got.last() {
                Some(&last) if got.len() == 3 => page.before = Some(last),
                _ => break,
            }
        }
        assert_eq!(paged, reversed, "{desc:?} by pages");
    }

    let bad = ListFilter { meta: Some("{not json".into()), ..Default::default() };
    for result in [s.list(&bad).map(|_| 0), s.count(&bad), s.bulk(BulkAction::Cancel, &bad)] {
        match result {
            Err(Error::InvalidJob(text)) => assert!(text.contains("{not json"), "{text}"),
            other => panic!("a bad meta filter must be refused by name, got {other:?}"),
        }
    }
}

pub fn bulk_actions_work_in_chunks_and_delete_spares_unfinished_jobs(
    backend: &'static dyn Backend,
) {
    let mut s = Store::open(backend);
    let n = BULK_CHUNK * 2 + 500;
    let model = fill(&*s, n);
    let in_a = |k: &&Known| k.queue == "a";
    let a_unfinished = model.iter().filter(in_a).count() as u64;
    let a = ListFilter { queue: Some("a".into()), ..Default::default() };

    // Cancel every job of queue "a": more than two chunks.
    assert_eq!(s.bulk(BulkAction::Cancel, &a).unwrap(), a_unfinished);
    let cancelled = ListFilter { states: vec![JobState::Cancelled], ..a.clone() };
    assert_eq!(s.count(&cancelled).unwrap(), a_unfinished);
    assert_eq!(s.bulk(BulkAction::Cancel, &a).unwrap(), 0, "finished jobs are left alone");

    // Delete refuses unfinished jobs without force: queue "b" is untouched.
    let b = ListFilter { queue: Some("b".into()), ..Default::default() };
    let b_jobs = s.count(&b).unwrap();
    assert_eq!(s.bulk(BulkAction::Delete { force: false }, &b).unwrap(), 0);
    assert_eq!(s.count(&b).unwrap(), b_jobs);

    // Retry brings the cancelled red ones of "a" back, available.
    let red = ListFilter { tags: vec!["red".into()], ..a.clone() };
    let red_count = s.count(&red).unwrap();
    assert_eq!(s.bulk(BulkAction::Retry, &red).unwrap(), red_count);
    let available_red = ListFilter { states: vec![JobState::Available], ..red.clone() };
    let back = s.count(&available_red).unwrap()
        + s.count(&ListFilter { states: vec![JobState::Scheduled], ..red.clone() }).unwrap();
    assert_eq!(back, red_count);

    // Delete the finished jobs of "a", then force the rest of "a" and the available of "b".
    let finished_a = s.count(&cancelled).unwrap();
    assert_eq!(s.bulk(BulkAction::Delete { force: false }, &a).unwrap(), finished_a);
    assert_eq!(s.bulk(BulkAction::Delete { force: true }, &a).unwrap(), red_count);
    assert_eq!(s.count(&a).unwrap(), 0);
    let b_available = ListFilter { states: vec![JobState::Available], ..b.clone() };
    let n_b_available = s.count(&b_available).unwrap();
    assert_eq!(s.bulk(BulkAction::Delete { force: true }, &b_available).unwrap(), n_b_available);
    // Nothing deleted is claimable, and the counts agree with the records.
    let left = s.list(&ListFilter::default()).unwrap();
    assert!(left.iter().all(|j| j.queue == "b" && j.state == JobState::Scheduled));
    let counted: u64 = s.counts().unwrap().iter().map(|(_, _, n)| n).sum();
    assert_eq!(counted, left.len() as u64);
    assert!(s.claim("a", 1, std::time::Duration::ZERO).unwrap().is_empty());
    assert!(s.claim("b", 1, std::time::Duration::ZERO).unwrap().is_empty());
    let path = s.path();
    s.close();
    if s.has_store_file() {
        common::assert_indexes_match_records(&path);
    }
}
