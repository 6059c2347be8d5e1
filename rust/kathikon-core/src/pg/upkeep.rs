//! A node's upkeep thread: it renews the node's lease every `heartbeat` (flushing the node's
//! metrics counts with it, [`super::metrics`]); every `tick` it rescues the nodes whose lease
//! expired ([`super::rescue`]), tries to lead, and while it leads does the leader's periodic
//! work ([`super::leader`]): promotion, pruning every `prune_interval`, cron. It keeps one
//! connection of its own; when that breaks it connects again at the next tick, so a database restart
//! costs at most a few ticks (the lease outlasts them by design: heartbeat ≈ lease / 3).
//!
//! The thread proves the process is alive, not that a job makes progress (job timeouts cover
//! that), as the socket client's heartbeat does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::Client;

use super::claimers::ClaimerLog;
use super::connection::Connections;
use super::cron::Cron;
use super::metrics::Tally;
use super::{leader, nodes, rescue};
use crate::clock::{Clock, Micros};
use crate::error::Result;
use crate::retention::Retention;

/// What the upkeep of one node does, and how often.
pub(crate) struct Upkeep {
    pub(crate) node: i64,
    pub(crate) connections: Connections,
    pub(crate) clock: Arc<dyn Clock>,
    /// The lease each renewal grants, in µs.
    pub(crate) lease_us: Micros,
    /// How often the lease is renewed.
    pub(crate) heartbeat: Duration,
    /// How often the periodic work runs.
    pub(crate) tick: Duration,
    /// How often the leader prunes, and what it keeps.
    pub(crate) prune_interval: Duration,
    pub(crate) retention: Retention,
    /// This node's claimers, published with each renewal.
    pub(crate) claimers: Arc<ClaimerLog>,
    /// This node's metrics counts, written with each renewal.
    pub(crate) metrics: Arc<Tally>,
    /// Whether this node leads, as the thread last found.
    pub(crate) leading: Arc<AtomicBool>,
    /// This node's crontab, and the entries it fires while it leads.
    pub(crate) cron: Arc<Mutex<Cron>>,
}

/// The running thread; stopping it (or dropping this) ends it and closes its connection.
pub(crate) struct UpkeepThread {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upkeep {
    /// Start the thread.
    pub(crate) fn start(self) -> std::io::Result<UpkeepThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread =
            std::thread::Builder::new().name("kathikon-pg-upkeep".into()).spawn(move || {
                let mut state = State {
                    client: None,
                    renewed: Instant::now(),
                    pruned: Instant::now(),
                    connected: Instant::now(),
                    failing: false,
                };
                // Ends when the store stops it (a message, or the sender dropped).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(self.tick) {
                    match self.round(&mut state) {
                        Ok(()) => state.failing = false,
                        Err(e) => {
                            // The next tick tries again on a new connection; meanwhile the
                            // lease runs on, and calls report their own errors. Said once
                            // per streak of failures.
                            // Dropping the connection gives up leadership, if held.
                            state.client = None;
                            self.leading.store(false, Ordering::SeqCst);
                            if !std::mem::replace(&mut state.failing, true) {
                                eprintln!(
                                    "kathikon: PostgreSQL node {}: upkeep failed, retrying \
                                     every {:?}: {e}",
                                    self.node, self.tick
                                );
                            }
                        }
                    }
                }
            })?;
        Ok(UpkeepThread { stop: Some(stop), thread: Some(thread) })
    }

    /// One tick's work.
    fn round(&self, state: &mut State) -> Result<()> {
        let client = match &mut state.client {
            Some(client) if !client.is_closed() => client,
            slot => {
                state.connected = Instant::now();
                slot.insert(self.connections.connect()?)
            }
        };
        if state.renewed.elapsed() >= self.heartbeat {
            let claimers = self.claimers.published();
            if nodes::renew(client, self.node, self.clock.now(), self.lease_us, &claimers)? {
                self.cron().republish(client, self.node, self.clock.now())?;
            }
            self.metrics.flush(client)?;
            state.renewed = Instant::now();
        }
        if !self.leading.load(Ordering::SeqCst) {
            let leads = leader::try_lead(client)?;
            self.leading.store(leads, Ordering::SeqCst);
            if leads {
                // A new leader prunes after a full interval, as the embedded pruner starts.
                state.pruned = Instant::now();
            }
        }
        let leading = self.leading.load(Ordering::SeqCst);
        // Every node rescues, once its connection has been up for two heartbeats: after the
        // database was unreachable (a restart), the nodes that were only cut off as this one
        // was get the time to renew before anyone rescues their running jobs.
        if state.connected.elapsed() >= 2 * self.heartbeat {
            rescue::rescue_expired(client, self.node, self.clock.now(), &self.metrics, leading)?;
        }
        if leading {
            let prune = state.pruned.elapsed() >= self.prune_interval;
            let retention = prune.then_some(&self.retention);
            leader::lead(client, self.clock.now(), retention)?;
            if prune {
                state.pruned = Instant::now();
            }
            self.cron().step(client, self.node, self.clock.now())?;
        }
        Ok(())
    }

    fn cron(&self) -> std::sync::MutexGuard<'_, Cron> {
        self.cron.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the thread keeps between ticks.
struct State {
    client: Option<Client>,
    renewed: Instant,
    /// When the leader last pruned.
    pruned: Instant,
    /// When the connection was made.
    connected: Instant,
    /// Whether the last round failed.
    failing: bool,
}

impl UpkeepThread {
    /// Stop the thread and wait for it (at most one round of work).
    pub(crate) fn stop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for UpkeepThread {
    fn drop(&mut self) {
        self.stop();
    }
}
