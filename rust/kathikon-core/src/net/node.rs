//! [`Node`]: one process's hold on a store, as its owner or as a client of the owner.
//!
//! The rule: whoever opens a store first owns it and serves it; everyone else connects. When
//! an owner goes away, the call that finds out fails with [`Error::OwnerGone`] (its outcome is
//! unknown), and the next call either connects to the new owner or, when there is none, makes
//! this process the owner: it opens the file (recovering what the old owner left executing)
//! and starts serving. Nothing a caller was told is durable can be lost in the switch, because
//! "durable" always meant "committed to the file by its owner".

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::client::{Client, ClientConfig, ConnectError};
use super::server::Server;
use crate::clock::{Clock, Micros, SystemClock};
use crate::engine::{canonical, Engine, EngineConfig, ListFilter, Recovery};
use crate::error::{Error, Result};
use crate::job::{Ack, AckResult, Job, JobId, NewJob};
use crate::state::JobState;
use crate::telemetry::EngineEvent;

/// How to open a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// How the engine is opened when this process owns the store.
    pub engine: EngineConfig,
    /// Connect to the owner when another process holds the store (otherwise that is an
    /// [`Error::StorageLocked`], as before multi-process support).
    pub connect: bool,
    /// Serve the store on its socket when this process owns it.
    pub serve: bool,
    /// How long the owner keeps this process's claims without hearing from it.
    pub lease: Duration,
    /// How long to keep trying to reach an owner's socket.
    pub connect_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            connect: true,
            serve: true,
            lease: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether this process owns the store or talks to its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This process opened the file (and serves it, when it has a path).
    Owner,
    /// Another process owns the file; this one uses its socket.
    Client,
}

struct Owned {
    engine: Arc<Engine>,
    server: Mutex<Option<Server>>,
    /// Why the store is not served, when its socket could not be created.
    serve_error: Option<String>,
}

#[derive(Clone)]
enum Current {
    Owner(Arc<Owned>),
    Client(Arc<Client>),
}

/// A store as this process sees it. Cheap to share between threads.
pub struct Node {
    config: NodeConfig,
    store: Option<PathBuf>,
    current: RwLock<Current>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("store", &self.store)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

fn acquire(config: &NodeConfig, store: Option<&PathBuf>) -> Result<Current> {
    let locked = match Engine::open(config.engine.clone()) {
        Ok(engine) => {
            let engine = Arc::new(engine);
            // A socket that cannot be created (a read-only directory, say) must not make the
            // store unusable to its owner: it runs unserved, and says why.
            let (server, serve_error) = match (config.serve, store) {
                (true, Some(store)) => match Server::start(engine.clone(), store) {
                    Ok(server) => (Some(server), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                _ => (None, None),
            };
            let owned = Owned { engine, server: Mutex::new(server), serve_error };
            return Ok(Current::Owner(Arc::new(owned)));
        }
        Err(e @ Error::StorageLocked { same_process: false, .. }) if config.connect => e,
        Err(e) => return Err(e),
    };
    let Some(store) = store else { return Err(locked) };
    let client_config = ClientConfig {
        store: store.clone(),
        lease: config.lease,
        connect_timeout: config.connect_timeout,
    };
    match Client::connect(&client_config) {
        Ok(client) => Ok(Current::Client(Arc::new(client))),
        // A holder that does not serve (an older Kathikon, or one that chose not to): the
        // lock error says who it is.
        Err(ConnectError::Unreachable(_)) => Err(locked),
        Err(ConnectError::Refused(e)) => Err(e),
    }
}

impl Node {
    /// Open the store: own it if nobody does, connect to its owner otherwise.
    pub fn open(config: NodeConfig) -> Result<Node> {
        let store = match &config.engine.path {
            Some(path) => Some(
                canonical(path)
                    .map_err(|e| Error::Storage(format!("bad path {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let current = acquire(&config, store.as_ref())?;
        Ok(Node { config, store, current: RwLock::new(current), closed: AtomicBool::new(false) })
    }

    fn current(&self) -> Result<Current> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let current =
            self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match &current {
            Current::Client(client) if client.is_gone() => {}
            _ => return Ok(current),
        }
        let mut slot = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another thread may have switched already.
        if let Current::Client(client) = &*slot {
            if client.is_gone() {
                client.close();
                *slot = acquire(&self.config, self.store.as_ref())?;
            }
        }
        Ok(slot.clone())
    }

    /// Whether this process owns the store right now.
    pub fn role(&self) -> Role {
        match &*self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Current::Owner(_) => Role::Owner,
            Current::Client(_) => Role::Client,
        }
    }

    /// Why this owner does not serve its store to other processes, if its socket could not be
    /// created (`None` when it serves, or is a client).
    pub fn serve_error(&self) -> Option<String> {
        match &*self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Current::Owner(o) => o.serve_error.clone(),
            Current::Client(_) => None,
        }
    }

    /// The owner's process id (this process's, when it is the owner).
    pub fn owner_pid(&self) -> u32 {
        match &*self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Current::Owner(_) => std::process::id(),
            Current::Client(client) => client.owner_pid(),
        }
    }

    /// What opening the store found and rescued (nothing, for a client).
    pub fn recovery(&self) -> Recovery {
        match self.current() {
            Ok(Current::Owner(owned)) => owned.engine.recovery(),
            _ => Recovery::default(),
        }
    }

    /// The engine's clock, in µs (a client uses the system clock, which the owner shares).
    pub fn now(&self) -> Micros {
        match self.current() {
            Ok(Current::Owner(owned)) => owned.engine.clock().now(),
            _ => SystemClock.now(),
        }
    }

    /// See [`Engine::insert`].
    pub fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        match self.current()? {
            Current::Owner(o) => o.engine.insert(jobs),
            Current::Client(c) => c.insert(jobs),
        }
    }

    /// See [`Engine::claim`].
    pub fn claim(&self, queue: &str, max: usize, timeout: Duration) -> Result<Vec<Job>> {
        match self.current()? {
            Current::Owner(o) => o.engine.claim(queue, max, timeout),
            Current::Client(c) => c.claim(queue, max, timeout),
        }
    }

    /// See [`Engine::interrupt`].
    pub fn interrupt(&self, queue: &str) {
        match self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            Current::Owner(o) => o.engine.interrupt(queue),
            Current::Client(c) => c.interrupt(queue),
        }
    }

    /// See [`Engine::ack`].
    pub fn ack(&self, acks: Vec<Ack>) -> Result<Vec<AckResult>> {
        match self.current()? {
            Current::Owner(o) => o.engine.ack(acks),
            Current::Client(c) => c.ack(acks),
        }
    }

    /// See [`Engine::ack_nowait`].
    pub fn ack_nowait(&self, acks: Vec<Ack>) -> Result<()> {
        match self.current()? {
            Current::Owner(o) => o.engine.ack_nowait(acks),
            Current::Client(c) => c.ack_nowait(acks),
        }
    }

    /// See [`Engine::cancel`].
    pub fn cancel(&self, id: JobId) -> Result<(Job, JobState)> {
        match self.current()? {
            Current::Owner(o) => o.engine.cancel(id),
            Current::Client(c) => c.cancel(id),
        }
    }

    /// See [`Engine::retry`].
    pub fn retry(&self, id: JobId) -> Result<Job> {
        match self.current()? {
            Current::Owner(o) => o.engine.retry(id),
            Current::Client(c) => c.retry(id),
        }
    }

    /// See [`Engine::get`].
    pub fn get(&self, id: JobId) -> Result<Job> {
        match self.current()? {
            Current::Owner(o) => o.engine.get(id),
            Current::Client(c) => c.get(id),
        }
    }

    /// See [`Engine::list`].
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Job>> {
        match self.current()? {
            Current::Owner(o) => o.engine.list(filter),
            Current::Client(c) => c.list(filter),
        }
    }

    /// See [`Engine::counts`].
    pub fn counts(&self) -> Result<Vec<(String, JobState, u64)>> {
        match self.current()? {
            Current::Owner(o) => o.engine.counts(),
            Current::Client(c) => c.counts(),
        }
    }

    /// See [`Engine::quarantined`].
    pub fn quarantined(&self) -> Result<Vec<crate::storage::Quarantined>> {
        match self.current()? {
            Current::Owner(o) => o.engine.quarantined(),
            Current::Client(c) => c.quarantined(),
        }
    }

    /// See [`Engine::oldest_available`].
    pub fn oldest_available(&self, queue: &str) -> Result<Option<Micros>> {
        match self.current()? {
            Current::Owner(o) => o.engine.oldest_available(queue),
            Current::Client(c) => c.oldest_available(queue),
        }
    }

    /// See [`Engine::ready_count`].
    pub fn ready_count(&self, queue: &str) -> Result<usize> {
        match self.current()? {
            Current::Owner(o) => Ok(o.engine.ready_count(queue)),
            Current::Client(c) => c.ready_count(queue),
        }
    }

    /// See [`Engine::prune`].
    pub fn prune(&self, age: Duration) -> Result<u64> {
        match self.current()? {
            Current::Owner(o) => o.engine.prune(age),
            Current::Client(c) => c.prune(age),
        }
    }

    /// See [`Engine::sync`] and [`Engine::sync_promoting`].
    pub fn sync(&self, promote_until: Option<Micros>) -> Result<()> {
        match self.current()? {
            Current::Owner(o) => match promote_until {
                Some(until) => o.engine.sync_promoting(until),
                None => o.engine.sync(),
            },
            Current::Client(c) => c.sync(promote_until),
        }
    }

    /// See [`Engine::set_events`] (a client has no engine events: they happen at the owner).
    pub fn set_events(&self, on: bool) {
        if let Ok(Current::Owner(o)) = self.current() {
            o.engine.set_events(on);
        }
    }

    /// See [`Engine::next_events`]; a client waits out `timeout` and gets none.
    pub fn next_events(&self, timeout: Duration) -> Vec<EngineEvent> {
        if let Ok(Current::Owner(o)) = self.current() {
            return o.engine.next_events(timeout);
        }
        std::thread::sleep(timeout);
        Vec::new()
    }

    /// Stop serving (clients' claims are rescued first), then close the engine or the
    /// connection. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        match &*self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Current::Owner(o) => {
                if let Some(mut server) =
                    o.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
                {
                    server.stop();
                }
                o.engine.close();
            }
            Current::Client(c) => c.close(),
        }
    }

    /// Whether [`Node::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.close();
    }
}
