//! Queues controlled at runtime (`set_queue`, `queue_settings`): a paused queue gives no
//! claim and is not reported ready until resumed, a resume wakes a waiting claim, no claim
//! succeeds once a pause has returned (a claimer racing it), the settings are stored across a
//! reopen with a generation that moves with each change, and bad changes are refused with
//! nothing stored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::common::job;
use crate::harness::{Backend, Store};
use kathikon_core::{Error, JobState, Jobs, QueueChange, QueueSettings};

fn executing(s: &dyn Jobs, queue: &str) -> u64 {
    s.counts()
        .unwrap()
        .into_iter()
        .filter(|(q, state, _)| q == queue && *state == JobState::Executing)
        .map(|(_, _, n)| n)
        .sum()
}

fn settings_of(s: &dyn Jobs, queue: &str) -> Option<QueueSettings> {
    s.queue_settings().unwrap().1.into_iter().find(|q| q.name == queue)
}

pub fn a_paused_queue_gives_no_claim_until_resumed(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    s.insert(vec![job("emails", "w"), job("emails", "w"), job("other", "w")]).unwrap();
    let paused = s.set_queue("emails", QueueChange::Pause).unwrap();
    assert!(paused.paused && paused.name == "emails", "{paused:?}");

    assert!(s.claim("emails", 10, Duration::ZERO).unwrap().is_empty(), "paused: nothing");
    let watched = vec!["emails".to_string(), "other".to_string()];
    let (_, ready) = s.wait_ready(&watched, None, Duration::ZERO).unwrap();
    assert_eq!(ready, ["other"], "a paused queue is not reported ready");
    assert_eq!(s.claim("other", 10, Duration::ZERO).unwrap().len(), 1, "other queues run");
    assert_eq!(s.ready_count("emails").unwrap(), 2, "its jobs stay available");

    let resumed = s.set_queue("emails", QueueChange::Resume).unwrap();
    assert!(!resumed.paused);
    assert_eq!(s.claim("emails", 10, Duration::ZERO).unwrap().len(), 2, "resumed: both");
    assert_eq!(settings_of(&*s, "emails"), None, "back to defaults: no stored settings");
}

pub fn a_resume_wakes_a_claim_waiting_on_the_paused_queue(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    s.set_queue("q", QueueChange::Pause).unwrap();
    s.insert(vec![job("q", "w")]).unwrap();
    let store = s.shared();
    // Waits far longer than the test: only the resume can end it with the job.
    let waiting = thread::spawn(move || store.claim("q", 1, Duration::from_secs(120)).unwrap());
    thread::sleep(Duration::from_millis(50));
    s.set_queue("q", QueueChange::Resume).unwrap();
    assert_eq!(waiting.join().unwrap().len(), 1, "the waiting claim got the job");
}

pub fn no_claim_succeeds_once_a_pause_has_returned(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let jobs: Vec<_> = (0..2_000).map(|_| job("busy", "w")).collect();
    s.insert(jobs).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let claimers: Vec<_> = (0..3)
        .map(|_| {
            let (store, stop) = (s.shared(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    store.claim("busy", 1, Duration::from_millis(5)).unwrap();
                }
            })
        })
        .collect();
    while executing(&*s, "busy") < 20 {
        thread::sleep(Duration::from_millis(1));
    }
    s.set_queue("busy", QueueChange::Pause).unwrap();
    let at_pause = executing(&*s, "busy");
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for c in claimers {
        c.join().unwrap();
    }
    assert_eq!(executing(&*s, "busy"), at_pause, "a claim succeeded after the pause returned");
    assert!(at_pause < 2_000, "the claimers were still claiming when the pause came");
}

pub fn queue_settings_are_stored_across_a_reopen(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let (first, none) = s.queue_settings().unwrap();
    assert!(none.is_empty());
    s.set_queue("emails", QueueChange::Pause).unwrap();
    s.set_queue("emails", QueueChange::Scale(Some(20))).unwrap();
    s.set_queue("imports", QueueChange::Start(Some(4))).unwrap();
    s.set_queue("imports", QueueChange::Stop).unwrap();
    let (generation, before) = s.queue_settings().unwrap();
    assert_ne!(generation, first, "each change moves the generation on");
    assert_eq!(s.queue_settings().unwrap().0, generation, "a read does not");
    let expected = vec![
        QueueSettings {
            name: "emails".into(),
            paused: true,
            concurrency: Some(20),
            ..QueueSettings::default()
        },
        QueueSettings {
            name: "imports".into(),
            started: Some(4),
            stopped: true,
            ..QueueSettings::default()
        },
    ];
    assert_eq!(before, expected);

    s.insert(vec![job("emails", "w")]).unwrap();
    s.reopen();
    assert_eq!(s.queue_settings().unwrap().1, expected, "stored across the reopen");
    assert!(s.claim("emails", 1, Duration::ZERO).unwrap().is_empty(), "still paused");
    let restarted = s.set_queue("imports", QueueChange::Start(None)).unwrap();
    assert_eq!((restarted.started, restarted.stopped), (Some(4), false));
    s.set_queue("emails", QueueChange::Scale(None)).unwrap();
    s.set_queue("emails", QueueChange::Resume).unwrap();
    assert_eq!(s.claim("emails", 1, Duration::ZERO).unwrap().len(), 1);
}

pub fn bad_queue_changes_are_refused_and_store_nothing(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    for (queue, change) in [
        ("q", QueueChange::Scale(Some(0))),
        ("q", QueueChange::Start(Some(0))),
        ("", QueueChange::Pause),
    ] {
        match s.set_queue(queue, change.clone()) {
            Err(Error::InvalidJob(why)) => assert!(why.contains("queue"), "{why}"),
            other => panic!("{queue:?} {change:?}: {other:?}"),
        }
    }
    assert!(s.queue_settings().unwrap().1.is_empty());
    // The refusals failed their own commands only: the store still writes.
    assert_eq!(s.set_queue("q", QueueChange::Scale(Some(2))).unwrap().concurrency, Some(2));
}
