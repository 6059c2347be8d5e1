//! The writer: the only code that changes stored jobs, on its own thread or on the thread of
//! a caller that found it idle.
//!
//! Callers send [`Command`]s. The writer takes everything waiting (up to [`MAX_BATCH`]),
//! applies it as one store write together with its plugins' steps (the scheduler's
//! promotions, the pruner's deletions: see `crate::plugins`), commits once (one fsync for the
//! whole batch: group commit), and only then answers each caller and makes new jobs claimable.
//! So a caller that got an answer knows its change is durable, and a worker can never claim a
//! job whose insert could still be lost.
//!
//! An insert that finds the writer idle (nothing queued, nobody applying) does not wait for
//! the thread: the caller takes the [`Applier`] and applies its own one-command batch, the
//! way a leader does in the group commit of `LevelDB` and `RocksDB`. That saves the two thread
//! hand-offs, a large share of a durable single insert. Calls that come meanwhile queue
//! up for the thread and form its next batch, so group commit is unchanged. When the thread
//! holds the applier only for its idle work (filing new jobs), the caller waits for the chunk
//! in hand instead of queueing ([`lead`]) and applies its own batch.
//!
//! Periodic work needs no thread of its own: the writer sleeps until the earliest time a
//! plugin wants a step (the scheduler's is the next due time, read from the `due` index after
//! every commit), so due jobs are promoted on time without polling rows.
//!
//! Here: the writer thread's loop and who holds the applier. [`command`]: what callers send;
//! [`applier`]: one batch, applied; [`verbs`]: what each command does to jobs; [`effects`]:
//! what a batch changes outside the store.

mod applier;
mod bulk;
mod command;
mod effects;
mod verbs;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::clock::Clock;
use crate::error::Error;
use crate::plugins::Now;

pub(crate) use applier::Applier;
pub(crate) use command::Command;
pub(crate) use effects::Effects;

/// Most commands applied in one transaction; bounds the latency of the batch's first caller.
pub(crate) const MAX_BATCH: usize = 4096;

/// What applies batches: the writer thread, or a caller that found it idle. `None` once the
/// writer has shut down (which releases the store).
pub(crate) type SharedApplier = Arc<Shared>;

/// The applier, and what a caller needs to know to take it from the writer's idle work.
pub(crate) struct Shared {
    applier: Mutex<Option<Applier>>,
    /// Set while the writer thread holds the applier only to file new jobs (idle work).
    filing: AtomicBool,
    /// Callers waiting for the applier until the writer's current chunk of filing ends; the
    /// writer starts no further chunk while any waits.
    waiting: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(applier: Applier) -> SharedApplier {
        Arc::new(Shared {
            applier: Mutex::new(Some(applier)),
            filing: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
        })
    }
}

pub(crate) fn lock(shared: &SharedApplier) -> MutexGuard<'_, Option<Applier>> {
    shared.applier.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The applier for a caller's own insert, or `None` when the caller should queue its command
/// for the writer thread instead (someone is applying a batch: the caller's command joins the
/// next one, group commit). When the writer thread holds the applier only to file new jobs,
/// the caller waits for the chunk in hand to end (`FILE_CHUNK`, well under a millisecond)
/// rather than hand its batch over: over the thread, the batch would be applied on the
/// writer's core while the caller's sat idle, the filing would wait for it, and the hand-off
/// costs two wake-ups (measured: `docs/architecture.md`, "An insert into an idle writer").
pub(crate) fn lead(shared: &SharedApplier) -> Option<MutexGuard<'_, Option<Applier>>> {
    match shared.applier.try_lock() {
        Ok(guard) => return Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => {}
    }
    if !shared.filing.load(Ordering::Acquire) {
        return None;
    }
    shared.waiting.fetch_add(1, Ordering::AcqRel);
    let guard = lock(shared);
    shared.waiting.fetch_sub(1, Ordering::AcqRel);
    Some(guard)
}

pub(crate) struct Writer {
    pub applier: SharedApplier,
    pub clock: Arc<dyn Clock>,
    pub rx: Receiver<Command>,
}

impl Writer {
    pub(crate) fn run(self) {
        let mut batch = Vec::new();
        loop {
            let wait = match lock(&self.applier).as_ref() {
                Some(applier) => applier.wait(Now::of(&*self.clock)),
                None => Duration::ZERO,
            };
            let mut shutdown = false;
            match self.rx.recv_timeout(wait) {
                Ok(Command::Shutdown) => shutdown = true,
                Ok(Command::Wake) => {}
                Ok(cmd) => batch.push(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => shutdown = true,
            }
            while !shutdown && batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(Command::Shutdown) => shutdown = true,
                    Ok(Command::Wake) => {}
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            {
                let mut guard = lock(&self.applier);
                let Some(applier) = guard.as_mut() else { return };
                let now = Now::of(&*self.clock);
                if !batch.is_empty() || applier.plugins_due(now) {
                    applier.apply(&mut batch, now, false);
                }
                applier.tick(Instant::now());
            }
            // With nothing else to do, do what the store put off (filing new jobs, see
            // `storage/redb/unfiled.rs`): here, on this thread, it costs no caller.
            // A caller that wants the applier meanwhile gets it after the chunk in hand (see
            // `lead`); its insert wakes this thread again if filing remains.
            while !shutdown
                && self.rx.is_empty()
                && self.applier.waiting.load(Ordering::Acquire) == 0
            {
                let mut guard = lock(&self.applier);
                let Some(applier) = guard.as_mut() else { return };
                self.applier.filing.store(true, Ordering::Release);
                let more = applier.background_work();
                self.applier.filing.store(false, Ordering::Release);
                if !more {
                    break;
                }
            }
            if shutdown {
                // The counts of the running minute are written before the store is let go.
                if let Some(applier) = lock(&self.applier).as_mut() {
                    applier.flush_metrics(Now::of(&*self.clock));
                }
                // Dropping the applier releases the store; callers find `None` from now on.
                lock(&self.applier).take();
                for cmd in self.rx.try_iter() {
                    cmd.fail(&|| Error::Closed);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::ClaimQueues;
    use crate::plugins::{Plugins, Pruner, Scheduler};
    use crate::storage::{RedbStore, Store};
    use crate::telemetry::Telemetry;
    use std::sync::mpsc;

    fn shared() -> SharedApplier {
        shared_on(Arc::new(RedbStore::open(None, false).unwrap()))
    }

    fn shared_on(store: Arc<dyn Store>) -> SharedApplier {
        let hour = Duration::from_secs(3600);
        let plugins = Plugins::new(vec![
            Box::new(Scheduler::new(None, hour)),
            Box::new(Pruner::new(Duration::from_secs(60), hour)),
        ]);
        Shared::new(Applier::new(
            store,
            Arc::new(ClaimQueues::default()),
            Arc::new(Telemetry::default()),
            plugins,
            Arc::default(),
        ))
    }

    /// Hold the applier on another thread (as the writer thread does), marked as filing or
    /// not, until told to let go; returns once it is held.
    fn hold(
        shared: &SharedApplier,
        filing: bool,
    ) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let shared = shared.clone();
        let holder = std::thread::spawn(move || {
            let guard = lock(&shared);
            shared.filing.store(filing, Ordering::Release);
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            shared.filing.store(false, Ordering::Release);
            drop(guard);
        });
        held_rx.recv().unwrap();
        (release_tx, holder)
    }

    #[test]
    fn a_caller_leads_at_once_when_the_applier_is_free() {
        assert!(lead(&shared()).is_some());
    }

    #[test]
    fn a_caller_queues_for_the_thread_while_a_batch_is_applied() {
        let shared = shared();
        let (release, holder) = hold(&shared, false);
        let (led_tx, led_rx) = mpsc::channel();
        let caller = {
            let shared = shared.clone();
            std::thread::spawn(move || led_tx.send(lead(&shared).is_some()).unwrap())
        };
        let led = led_rx.recv_timeout(Duration::from_secs(10));
        release.send(()).unwrap();
        holder.join().unwrap();
        caller.join().unwrap();
        assert_eq!(led, Ok(false), "a caller must join the next batch, not wait for this one");
    }

    #[test]
    fn a_caller_waits_out_a_chunk_of_filing_and_leads_after_it() {
        let shared = shared();
        let (release, holder) = hold(&shared, true);
        let caller = {
            let shared = shared.clone();
            std::thread::spawn(move || lead(&shared).is_some())
        };
        // The writer sees the caller waiting (and so starts no further chunk) before it lets go.
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.waiting.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "the caller never said it was waiting");
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert!(caller.join().unwrap(), "the caller went to the thread instead of waiting");
        assert_eq!(shared.waiting.load(Ordering::Acquire), 0);
        holder.join().unwrap();
    }

    #[test]
    fn the_writer_lets_a_waiting_caller_in_after_one_chunk_of_filing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(Some(&dir.path().join("s.redb")), false).unwrap());
        let shared = shared_on(store.clone());
        // Big inserts leave dozens of chunks of filing to the writer (staying under the log
        // size at which a checkpoint would file them all at once).
        for _ in 0..6 {
            let (reply, answer) = crossbeam_channel::bounded(1);
            let jobs = vec![crate::job::tests::new_job(); 1_000];
            lock(&shared)
                .as_mut()
                .unwrap()
                .apply_own(Command::Insert { jobs, request: None, reply }, 1_000);
            assert_eq!(answer.recv().unwrap().unwrap().jobs.len(), 1_000);
        }
        assert!(store.has_background_work());
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer =
            Writer { applier: shared.clone(), clock: Arc::new(crate::clock::SystemClock), rx };
        let thread = std::thread::spawn(move || writer.run());
        // Several times over: a writer that went on filing regardless would still lose the
        // race for the lock to the caller now and then (with no check of `waiting`, this test
        // failed in 4 of 10 runs), so one round would say little.
        for round in 0..3 {
            tx.send(Command::Wake).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !shared.filing.load(Ordering::Acquire) {
                assert!(Instant::now() < deadline, "round {round}: the writer never filed");
                std::thread::yield_now();
            }
            let guard = lead(&shared).expect("a caller waits out a chunk of filing");
            assert!(
                store.has_background_work(),
                "round {round}: the writer filed everything before letting the caller in"
            );
            drop(guard);
        }
        tx.send(Command::Shutdown).unwrap();
        thread.join().unwrap();
    }
}
