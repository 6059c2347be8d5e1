//! Queue limits (`QueueChange::GlobalLimit`, `QueueChange::RateLimit`): a global limit caps
//! the jobs executing at once and frees a place when one leaves the executing state (acked,
//! cancelled), a waiting claim is woken by that; a partitioned limit holds per partition and
//! takes partitions in turn; a rate limit allows N starts per sliding period on the store's
//! clock; limits and rate windows survive a reopen; bad limits are refused, storing nothing.

use std::thread;
use std::time::Duration;

use crate::common::{finish, job};
use crate::harness::{Backend, Store};
use kathikon_core::clock::SECOND;
use kathikon_core::limits::{GlobalLimit, Partition, PartitionField, RateLimit};
use kathikon_core::{Error, Jobs, NewJob, Outcome, QueueChange};

fn with_args(queue: &str, args: &str) -> NewJob {
    NewJob { args: args.into(), ..job(queue, "w") }
}

fn global(allowed: u32, partition: Option<Partition>) -> QueueChange {
    QueueChange::GlobalLimit(Some(GlobalLimit { allowed, partition }))
}

fn rate(allowed: u32, period_s: u64) -> QueueChange {
    QueueChange::RateLimit(Some(RateLimit {
        allowed,
        period_us: period_s * 1_000_000,
        partition: None,
    }))
}

fn by_customer() -> Partition {
    Partition { fields: vec![PartitionField::Args], keys: vec!["customer".into()] }
}

fn claim(s: &dyn Jobs, queue: &str, max: usize) -> Vec<kathikon_core::Job> {
    s.claim(queue, max, Duration::ZERO).unwrap()
}

pub fn a_global_limit_caps_jobs_executing_until_one_leaves(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    s.insert((0..5).map(|_| job("api", "w")).collect()).unwrap();
    let settings = s.set_queue("api", global(2, None)).unwrap();
    assert_eq!(settings.global_limit.as_ref().map(|g| g.allowed), Some(2));

    let first = claim(&*s, "api", 10);
    assert_eq!(first.len(), 2, "two places");
    assert!(claim(&*s, "api", 10).is_empty(), "full: nothing more");
    let watched = vec!["api".to_string()];
    let (_, ready) = s.wait_ready(&watched, None, Duration::ZERO).unwrap();
    assert!(ready.is_empty(), "a full queue is not reported ready");

    finish(&*s, &first[0], Outcome::Complete);
    assert_eq!(claim(&*s, "api", 10).len(), 1, "a completed job frees its place");
    s.cancel(first[1].id).unwrap();
    assert_eq!(claim(&*s, "api", 10).len(), 1, "a cancelled executing job frees its place");
    assert!(claim(&*s, "api", 10).is_empty());
    assert_eq!(s.ready_count("api").unwrap(), 1, "the rest stays available");
}

pub fn a_claim_waiting_on_a_full_global_limit_is_woken_by_a_release(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    s.set_queue("api", global(1, None)).unwrap();
    s.insert(vec![job("api", "w"), job("api", "w")]).unwrap();
    let running = claim(&*s, "api", 1);
    let store = s.shared();
    // Waits far longer than the test: only the release can end it with the job.
    let waiting = thread::spawn(move || store.claim("api", 1, Duration::from_secs(120)).unwrap());
    thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished(), "the second job waits for the place");
    finish(&*s, &running[0], Outcome::Complete);
    assert_eq!(waiting.join().unwrap().len(), 1, "the waiting claim got the job");
}

pub fn a_partitioned_limit_holds_per_partition_and_takes_them_in_turn(
    backend: &'static dyn Backend,
) {
    let s = Store::open(backend);
    s.set_queue("exports", global(1, Some(by_customer()))).unwrap();
    let mut jobs: Vec<NewJob> =
        (0..20).map(|_| with_args("exports", r#"{"customer": "big"}"#)).collect();
    jobs.push(with_args("exports", r#"{"customer": "small"}"#));
    jobs.push(with_args("exports", r#"{"customer": "other", "x": 1}"#));
    s.insert(jobs).unwrap();

    let claimed = claim(&*s, "exports", 10);
    let mut customers: Vec<String> = claimed
        .iter()
        .map(|j| {
            serde_json::from_str::<serde_json::Value>(&j.args).unwrap()["customer"].to_string()
        })
        .collect();
    customers.sort();
    assert_eq!(customers, ["\"big\"", "\"other\"", "\"small\""], "one per customer, each served");
    assert!(claim(&*s, "exports", 10).is_empty(), "every partition is at its limit");
    let usage = s.limit_usage("exports").unwrap();
    let shown: Vec<(&str, u32)> = usage.executing.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    assert_eq!(shown, [("\"big\"", 1), ("\"other\"", 1), ("\"small\"", 1)]);
    assert!(usage.windows.is_empty(), "no rate limit");
    let big = claimed.iter().find(|j| j.args.contains("big")).unwrap();
    finish(&*s, big, Outcome::Complete);
    let next = claim(&*s, "exports", 10);
    assert_eq!(next.len(), 1);
    assert!(next[0].args.contains("big"), "only the freed partition takes another");
}

pub fn a_rate_limit_allows_n_starts_per_sliding_period(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    s.set_queue("api", rate(3, 10)).unwrap();
    s.insert((0..10).map(|_| job("api", "w")).collect()).unwrap();

    let first = claim(&*s, "api", 10);
    assert_eq!(first.len(), 3);
    for j in &first {
        finish(&*s, j, Outcome::Complete);
    }
    assert!(claim(&*s, "api", 10).is_empty(), "finished jobs do not free a start");
    let usage = s.limit_usage("api").unwrap();
    assert_eq!(usage.windows, [(String::new(), 3)], "three starts in the whole queue's window");
    assert!(usage.executing.is_empty(), "none running, and no global limit");
    s.clock().advance(9 * SECOND);
    assert!(claim(&*s, "api", 10).is_empty(), "still within the period");
    s.clock().advance(SECOND);
    assert_eq!(claim(&*s, "api", 10).len(), 3, "one full period later, three more");
}

pub fn limits_and_rate_windows_survive_a_reopen(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    s.set_queue("api", rate(2, 60)).unwrap();
    s.insert((0..5).map(|_| job("api", "w")).collect()).unwrap();
    for j in claim(&*s, "api", 10) {
        finish(&*s, &j, Outcome::Complete);
    }
    s.reopen();
    let stored = s.queue_settings().unwrap().1;
    assert_eq!(stored[0].rate_limit.as_ref().map(|r| r.allowed), Some(2), "{stored:?}");
    assert!(claim(&*s, "api", 10).is_empty(), "the window's starts were stored");
    s.clock().advance(60 * SECOND);
    assert_eq!(claim(&*s, "api", 10).len(), 2);

    s.set_queue("api", QueueChange::RateLimit(None)).unwrap();
    assert_eq!(claim(&*s, "api", 10).len(), 1, "no limit: the rest at once");
    assert!(s.queue_settings().unwrap().1.is_empty(), "back to defaults: nothing stored");
}

pub fn bad_limits_are_refused_and_store_nothing(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let keys_without_args =
        Some(Partition { fields: vec![PartitionField::Worker], keys: vec!["customer".into()] });
    let bad = [
        global(0, None),
        global(1, Some(Partition { fields: vec![], keys: vec![] })),
        global(1, keys_without_args),
        QueueChange::RateLimit(Some(RateLimit { allowed: 1, period_us: 0, partition: None })),
        rate(0, 1),
    ];
    for change in bad {
        match s.set_queue("api", change.clone()) {
            Err(Error::InvalidJob(text)) => assert!(text.contains("\"api\""), "{text}"),
            other => panic!("{change:?} was not refused: {other:?}"),
        }
    }
    assert!(s.queue_settings().unwrap().1.is_empty(), "nothing stored");
    s.insert(vec![job("api", "w")]).unwrap();
    assert_eq!(claim(&*s, "api", 10).len(), 1, "the queue is not limited");
}
