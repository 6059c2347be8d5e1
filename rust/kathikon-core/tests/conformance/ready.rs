//! `wait_ready` watches many queues with one waiter: it looks at once without a generation,
//! names only the watched queues that have jobs ready, waits for the next change when given
//! the generation it returned (so a backlog being drained does not end every wait), is woken
//! by an insert into any watched queue from another thread, and ends early on an interrupt of
//! a watched queue. It claims nothing and counts as claiming for `claimers`.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{insert_one, job};
use crate::harness::{Backend, Store};

fn names(queues: &[&str]) -> Vec<String> {
    queues.iter().map(ToString::to_string).collect()
}

pub fn wait_ready_names_the_watched_queues_with_jobs_ready(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, job("b", "w"));
    insert_one(&*s, job("unwatched", "w"));
    let watched = names(&["a", "b", "c"]);
    let (generation, ready) = s.wait_ready(&watched, None, Duration::from_secs(10)).unwrap();
    assert_eq!(ready, ["b"], "only watched queues with a job ready, at once without a generation");
    assert_eq!(s.ready_count("b").unwrap(), 1, "wait_ready claims nothing");
    let queues: Vec<String> = s.claimers().unwrap().into_iter().map(|c| c.queue).collect();
    assert_eq!(queues, ["a", "b", "c"], "the watched queues count as claimed from");

    // Given its generation back, it waits for a change even though "b" still holds a job.
    let started = Instant::now();
    let (same, ready) =
        s.wait_ready(&watched, Some(generation), Duration::from_millis(150)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150), "did not wait for a change");
    assert_eq!((same, ready), (generation, names(&["b"])), "nothing changed meanwhile");
}

pub fn wait_ready_is_woken_by_an_insert_into_any_watched_queue(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let watched: Vec<String> = (0..500).map(|i| format!("q{i}")).collect();
    let (generation, ready) = s.wait_ready(&watched, None, Duration::ZERO).unwrap();
    assert!(ready.is_empty());
    let started = Instant::now();
    let inserter = {
        let store = s.shared();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            insert_one(&*store, job("q377", "w"));
        })
    };
    let (after, ready) = s.wait_ready(&watched, Some(generation), Duration::from_secs(20)).unwrap();
    inserter.join().unwrap();
    assert_ne!(after, generation);
    assert_eq!(ready, ["q377"]);
    assert!(started.elapsed() < Duration::from_secs(10), "woke late: {:?}", started.elapsed());
}

pub fn interrupt_of_a_watched_queue_ends_a_wait_ready(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let watched = names(&["a", "b"]);
    let (generation, _) = s.wait_ready(&watched, None, Duration::ZERO).unwrap();
    let waiter = {
        let store = s.shared();
        thread::spawn(move || store.wait_ready(&watched, Some(generation), Duration::from_secs(30)))
    };
    thread::sleep(Duration::from_millis(100));
    let interrupted_at = Instant::now();
    s.interrupt("b");
    let (_, ready) = waiter.join().unwrap().unwrap();
    assert!(ready.is_empty());
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(10),
        "interrupt took {:?}",
        interrupted_at.elapsed()
    );
}
