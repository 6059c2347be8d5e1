//! Metrics history through the contract: per queue and minute of the owner's clock, the
//! outcomes counted (completed, failed with a retry left, discarded, cancelled) and the
//! percentiles of attempt durations measured from the claim to the ack, read back by
//! `metrics` with its `since` and `queue` filters, also over the socket; the counts are kept
//! across a reopen (the closing owner writes the running minute) and for 24 hours only.

use crate::common::{claim_one, finish, insert_one, job};
use crate::harness::{Backend, Store};
use kathikon_core::clock::{Clock, SECOND};
use kathikon_core::metrics::{minute_of, MINUTE};
use kathikon_core::{MetricPoint, NewJob, Outcome};

const MILLISECOND: i64 = SECOND / 1000;

/// Run one job of `queue` for `duration` µs of the manual clock, ending it with `outcome`.
fn run(s: &Store, queue: &str, duration: i64, outcome: Outcome) {
    insert_one(&**s, NewJob { max_attempts: 3, ..job(queue, "w") });
    let running = claim_one(&**s, queue);
    s.clock().advance(duration);
    finish(&**s, &running, outcome);
}

fn point(queue: &str, minute: i64, counts: [u64; 4], p: [Option<i64>; 3]) -> MetricPoint {
    let [completed, failed, discarded, cancelled] = counts;
    let [p50, p95, p99] = p;
    MetricPoint {
        queue: queue.into(),
        minute,
        completed,
        failed,
        discarded,
        cancelled,
        p50,
        p95,
        p99,
    }
}

/// Whether `got` is within the histogram's 6.25% of `want`.
fn near(got: Option<i64>, want: i64) -> bool {
    got.is_some_and(|g| (g - want).abs() * 16 <= want)
}

pub fn metrics_count_outcomes_and_duration_percentiles_per_queue_and_minute(
    backend: &'static dyn Backend,
) {
    let s = Store::open(backend);
    assert_eq!(s.metrics(None, None).unwrap(), vec![]);
    let first = minute_of(s.clock().now());
    // 1 ms, 2 ms, ... 100 ms: p50 is 50 ms, p95 95 ms, p99 99 ms. Kept within the minute.
    s.clock().advance(first - s.clock().now());
    for ms in 1..=100 {
        run(&s, "a", ms * MILLISECOND, Outcome::Complete);
    }
    run(&s, "a", MILLISECOND, Outcome::Fail { error: "boom".into(), retry_in: None });
    run(&s, "a", MILLISECOND, Outcome::Discard { reason: "bad".into() });
    let waiting = insert_one(&*s, job("a", "w"));
    s.cancel(waiting.id).unwrap();
    run(&s, "b", 7 * MILLISECOND, Outcome::Complete);

    let points = s.metrics(None, None).unwrap();
    assert_eq!(points.len(), 2, "{points:?}");
    let a = &points[0];
    assert_eq!((a.queue.as_str(), a.minute), ("a", first));
    assert_eq!([a.completed, a.failed, a.discarded, a.cancelled], [100, 1, 1, 1]);
    assert!(near(a.p50, 50 * MILLISECOND), "{a:?}");
    assert!(near(a.p95, 95 * MILLISECOND), "{a:?}");
    assert!(near(a.p99, 99 * MILLISECOND), "{a:?}");
    let b = &points[1];
    assert_eq!([b.completed, b.failed, b.discarded, b.cancelled], [1, 0, 0, 0]);
    assert!(near(b.p50, 7 * MILLISECOND) && b.p50 == b.p99, "{b:?}");

    // The next minute is a point of its own; `since` and `queue` choose among them.
    s.clock().advance(first + MINUTE - s.clock().now());
    run(&s, "a", 3 * MILLISECOND, Outcome::Complete);
    let all = s.metrics(None, None).unwrap();
    assert_eq!(
        all.iter().map(|p| (p.queue.as_str(), p.minute)).collect::<Vec<_>>(),
        [("a", first), ("b", first), ("a", first + MINUTE)]
    );
    let p3 = Some(all[2].p50.unwrap());
    assert!(near(p3, 3 * MILLISECOND));
    let since = s.metrics(Some(first + MINUTE + 5), None).unwrap();
    assert_eq!(since, vec![point("a", first + MINUTE, [1, 0, 0, 0], [p3, p3, p3])]);
    assert_eq!(s.metrics(None, Some("b")).unwrap(), vec![all[1].clone()]);
    assert_eq!(s.metrics(None, Some("nope")).unwrap(), vec![]);
}

pub fn metrics_are_kept_across_a_reopen_and_for_24_hours(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let minute = minute_of(s.clock().now());
    s.clock().advance(minute - s.clock().now());
    run(&s, "q", MILLISECOND, Outcome::Complete);
    // Closing writes the running minute; the next owner adds to it.
    s.reopen();
    run(&s, "q", MILLISECOND, Outcome::Complete);
    let points = s.metrics(None, None).unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!((points[0].minute, points[0].completed), (minute, 2));
    // Read twice in one minute: the second read counts nothing twice.
    assert_eq!(s.metrics(None, None).unwrap(), points);

    s.clock().advance(24 * 60 * MINUTE);
    s.sync().unwrap();
    assert_eq!(s.metrics(None, None).unwrap(), points, "kept for 24 hours after its minute");
    s.clock().advance(MINUTE);
    assert_eq!(s.metrics(None, None).unwrap(), vec![], "gone once 24 hours have passed");
}
