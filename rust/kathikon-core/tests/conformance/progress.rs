//! Job progress through the contract: a running attempt's report is stored and read back
//! (over the socket too), the latest one wins, an ended or superseded attempt's report changes
//! nothing, the last report is kept after the job ends and across a reopen, a new attempt's
//! report replaces it, and bad values are refused naming them before anything is stored.

use crate::common::{claim_one, finish, insert_one, job, T0};
use crate::harness::{Backend, Store};
use kathikon_core::clock::SECOND;
use kathikon_core::{Error, Outcome, Progress};

fn progress(attempt: u32, fraction: f64, note: Option<&str>, at: i64) -> Progress {
    Progress { attempt, fraction, note: note.map(str::to_string), at }
}

pub fn a_running_attempts_latest_progress_is_kept_after_it_ends(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let inserted = insert_one(&*s, job("q", "w"));
    let id = inserted.id;
    assert_eq!(s.progress(id).unwrap(), None);
    assert!(!s.set_progress(id, 1, 0.5, None).unwrap(), "not running: nothing stored");
    assert_eq!(s.progress(id).unwrap(), None);

    let running = claim_one(&*s, "q");
    assert!(s.set_progress(id, 1, 0.25, Some("a quarter".into())).unwrap());
    s.clock().advance(SECOND);
    assert!(s.set_progress(id, 1, 0.75, None).unwrap());
    assert!(!s.set_progress(id, 2, 0.9, None).unwrap(), "another attempt's report");
    assert_eq!(s.progress(id).unwrap(), Some(progress(1, 0.75, None, T0 + SECOND)));

    finish(&*s, &running, Outcome::Fail { error: "boom".into(), retry_in: Some(0) });
    assert!(!s.set_progress(id, 1, 1.0, None).unwrap(), "the attempt ended");
    s.reopen();
    assert_eq!(s.progress(id).unwrap(), Some(progress(1, 0.75, None, T0 + SECOND)));

    s.sync().unwrap();
    let again = claim_one(&*s, "q");
    assert_eq!(again.attempt, 2);
    assert!(s.set_progress(id, 2, 0.1, Some("again".into())).unwrap());
    assert_eq!(s.progress(id).unwrap(), Some(progress(2, 0.1, Some("again"), T0 + SECOND)));
    finish(&*s, &again, Outcome::Complete);
    assert_eq!(s.progress(id).unwrap(), Some(progress(2, 0.1, Some("again"), T0 + SECOND)));
}

pub fn bad_progress_is_refused_naming_the_value(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    insert_one(&*s, job("q", "w"));
    let running = claim_one(&*s, "q");
    let long = "x".repeat(201);
    for (fraction, note, named) in [
        (1.5, None, "1.5"),
        (-0.1, None, "-0.1"),
        (f64::NAN, None, "NaN"),
        (0.5, Some(long), "201 bytes"),
    ] {
        match s.set_progress(running.id, running.attempt, fraction, note) {
            Err(Error::InvalidJob(text)) => assert!(text.contains(named), "{text}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.progress(running.id).unwrap(), None);
}
