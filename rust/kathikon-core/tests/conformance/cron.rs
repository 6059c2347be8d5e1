//! The crontab through the contract: `set_crontab` checks every entry (a bad expression or
//! zone, two entries of one name: `InvalidJob`, nothing kept) whichever implementation takes
//! it; the owner fires it, and `cron_slots` reads back the last slot it stored with each job,
//! also over the socket; a slot stored is never fired again by the next open.

use crate::common::{job, T0};
use crate::harness::{Backend, Store};
use kathikon_core::clock::{Clock, SECOND};
use kathikon_core::cron::Schedule;
use kathikon_core::{CatchUp, CronEntry, CronSlot, Error, ListFilter};

const EVERY_TEN_SECONDS: &str = "*/10 * * * * *";

fn entry(name: &str, expression: &str, timezone: &str) -> CronEntry {
    CronEntry {
        name: name.into(),
        expression: expression.into(),
        timezone: timezone.into(),
        catch_up: CatchUp::All,
        catch_up_limit: 100,
        job: job("default", "tick"),
    }
}

/// The entry's first slot after the time of the store's owner.
fn next_slot(s: &Store) -> i64 {
    let schedule = Schedule::parse(EVERY_TEN_SECONDS, "UTC").unwrap();
    schedule.next_after(s.clock().now()).unwrap()
}

fn cron_slots_of_jobs(s: &Store) -> Vec<String> {
    s.list(&ListFilter::default())
        .unwrap()
        .iter()
        .map(|j| {
            serde_json::from_str::<serde_json::Value>(&j.meta).unwrap()["cron"]["slot"].to_string()
        })
        .collect()
}

pub fn bad_crontabs_are_refused_whole(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    for (bad, named) in [
        (vec![entry("a", "61 * * * *", "UTC")], "61 * * * *"),
        (vec![entry("a", "* * * * *", "Mars/Olympus")], "Mars/Olympus"),
        (vec![entry("a", "* * * * *", "UTC"), entry("a", "@daily", "UTC")], "\"a\""),
    ] {
        match s.set_crontab(bad) {
            Err(Error::InvalidJob(text)) => assert!(text.contains(named), "{text}"),
            other => panic!("{other:?}"),
        }
    }
    s.set_crontab(vec![entry("a", "* * * * *", "UTC")]).unwrap();
    assert_eq!(s.cron_slots().unwrap(), vec![]);
}

pub fn the_owners_fired_slots_are_read_back_with_their_jobs(backend: &'static dyn Backend) {
    let s = Store::open(backend);
    let tick = entry("tick", EVERY_TEN_SECONDS, "UTC");
    s.set_crontab(vec![tick.clone()]).unwrap();
    s.owner().set_crontab(vec![tick]).unwrap();
    let slot = next_slot(&s);
    s.clock().advance(slot - T0);
    s.sync().unwrap();
    let stored = CronSlot {
        name: "tick".into(),
        slot,
        expression: EVERY_TEN_SECONDS.into(),
        timezone: "UTC".into(),
    };
    assert_eq!(s.cron_slots().unwrap(), vec![stored]);
    assert_eq!(cron_slots_of_jobs(&s).len(), 1);
}

pub fn a_stored_slot_is_not_fired_again_after_reopen(backend: &'static dyn Backend) {
    let mut s = Store::open(backend);
    let tick = entry("tick", EVERY_TEN_SECONDS, "UTC");
    s.owner().set_crontab(vec![tick.clone()]).unwrap();
    let slot = next_slot(&s);
    s.clock().advance(slot - T0);
    s.sync().unwrap();
    s.reopen();
    // Armed again at the very slot it stored, catching up every missed slot: none is.
    s.owner().set_crontab(vec![tick]).unwrap();
    assert_eq!(cron_slots_of_jobs(&s).len(), 1);
    s.clock().advance(10 * SECOND);
    s.sync().unwrap();
    let fired = cron_slots_of_jobs(&s);
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_ne!(fired[0], fired[1]);
    assert_eq!(s.cron_slots().unwrap()[0].slot, slot + 10 * SECOND);
}
