//! [`Node`]: one process's hold on a store, as its owner or as a client of the owner.
//!
//! The rule: whoever opens a store first owns it and serves it; everyone else connects. When
//! an owner goes away (it stopped, closing every connection, or died), the client learns it
//! from its heartbeat's connection or from the call that finds out, and the next call either
//! connects to the new owner or, when there is none, makes this process the owner: it opens
//! the file (recovering what the old owner left executing) and starts serving
//! (`handover.rs`). Nothing a caller was told is durable can be lost in the switch, because
//! "durable" always meant "committed to the file by its owner".
//!
//! A call that was in flight when the owner went away has an unknown outcome. An insert
//! ([`Node::insert`]) is sent again to the next owner under the same request id, which the
//! store remembers with the jobs, so it is stored exactly once; the idempotent verbs and
//! claims are simply called again ([`Node::retrying`]); acks fail with [`Error::OwnerGone`]
//! (their jobs, like those of a claim answered too late, are rescued as before).
//!
//! Either way the verbs are those of [`Jobs`]: [`Node::jobs`] hands out the implementation
//! this process holds now (the engine, or the client), after the takeover check.
//!
//! A child made by `fork` inherits the node but none of its threads, and its parent's
//! connections and engine are not its own: replies would cross between the two processes.
//! The node records [`crate::fork`]'s generation when it takes the store; a child sees another
//! one at its first call and opens a session of its own (a client of the owner, which may be
//! its parent), leaving everything it inherited untouched (never used, closed nor dropped).
//!
//! One process holds a store through one node: a second open of the same file in this
//! process is refused with [`Error::StorageLocked`] whether the first one owns the store or
//! is a client of another process (two clients of one owner in one process would hold two
//! sessions whose claims and leases know nothing of each other). Closing the first releases
//! the file.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::client::{Client, ClientConfig, ConnectError};
use super::server::Server;
use crate::cron::CronEntry;
use crate::engine::{canonical, Engine, EngineConfig, Recovery};
use crate::error::{Error, Result};
use crate::job::{Job, NewJob};
use crate::jobs::Jobs;
use crate::request::RequestId;
use crate::unique::Inserted;

/// How many owner changes one call rides through before it gives up with the last error.
const MAX_SWITCHES: usize = 3;

/// Told `(store, pid of the previous owner)` when this process takes over a store whose
/// owner went away.
pub type TakeoverHook = Box<dyn Fn(&Path, u32) + Send + Sync>;

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
    /// How long a client waits for the owner's answer to one request before it fails with
    /// [`Error::OwnerNotAnswering`] (the owner waits at most a fraction of a second on a
    /// claim before answering, so this bounds only an owner that is stopped or overloaded).
    pub answer_timeout: Duration,
    /// Whether this process may own the store: open the file itself when no other process
    /// holds it, at open or after its owner went away. `false` for processes that run jobs
    /// under another that keeps the store (a pool's worker processes): a job that crashes
    /// such a process must not take the store down for every client, so it only ever
    /// connects, waiting up to `connect_timeout` for an owner to serve.
    pub takeover: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            connect: true,
            serve: true,
            lease: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            answer_timeout: super::client::DEFAULT_ANSWER_TIMEOUT,
            takeover: true,
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

/// What only the owner of the store has besides its engine.
pub(super) struct Owned {
    engine: Arc<Engine>,
    server: Mutex<Option<Server>>,
    /// Why the store is not served, when its socket could not be created.
    serve_error: Option<String>,
}

/// The store as this process holds it right now: `jobs` is the owner's engine or the client
/// of the owner, `owned` is set when it is the engine.
pub(super) struct Current {
    jobs: Arc<dyn Jobs>,
    owned: Option<Arc<Owned>>,
    /// Set when `jobs` talks to another process.
    client: Option<Arc<Client>>,
}

/// Store files a node of this process holds, owner or client (canonical paths), each with the
/// id of the process that took it: a child made by `fork` inherits the map, not the nodes.
fn open_here() -> &'static Mutex<HashMap<PathBuf, u32>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, u32>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// A store file held by a node of this process, until this is dropped.
struct HeldHere(PathBuf);

impl HeldHere {
    /// Hold `store` (canonical) for this process's only node on it; another node of this
    /// process already on it is [`Error::StorageLocked`] naming `shown` (the path as given).
    fn take(store: &std::path::Path, shown: &std::path::Path) -> Result<HeldHere> {
        let pid = std::process::id();
        let mut open = open_here().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.insert(store.to_path_buf(), pid) == Some(pid) {
            return Err(Error::StorageLocked {
                path: shown.to_path_buf(),
                holder: Some(pid),
                same_process: true,
            });
        }
        Ok(HeldHere(store.to_path_buf()))
    }
}

impl Drop for HeldHere {
    fn drop(&mut self) {
        let mut open = open_here().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.get(&self.0) == Some(&std::process::id()) {
            open.remove(&self.0);
        }
    }
}

/// A store as this process sees it. Cheap to share between threads.
pub struct Node {
    config: NodeConfig,
    store: Option<PathBuf>,
    /// Dropped by hand, and only by the process that took it: in a child made by `fork` it is
    /// the parent's (dropping a client would shut its connections down for the parent too).
    current: RwLock<ManuallyDrop<Current>>,
    /// [`crate::fork::generation`] when `current` was taken: another value now means this is
    /// a child made by `fork` that has not opened its own session yet.
    generation: AtomicU64,
    closed: AtomicBool,
    /// This process's hold on the store file; released at close.
    held: Mutex<Option<HeldHere>>,
    /// Called, outside every lock, after this process took the store over.
    on_takeover: Mutex<Option<TakeoverHook>>,
    /// How many searches for a new owner ended, and the last one that failed (its number
    /// and error), handed to the threads that waited for it.
    searches: AtomicU64,
    failed_search: Mutex<Option<(u64, Error)>>,
    /// The crontab this process declared ([`Node::set_crontab`]), handed to every engine it
    /// gets by taking the store over, so whichever process owns the store fires it.
    crontab: Mutex<Vec<CronEntry>>,
    /// Whether this process collects engine events ([`Node::set_events`]): switched on in
    /// every engine it gets by taking the store over, so handlers attached before a takeover
    /// keep hearing the scheduler, the pruner and cron after it.
    events: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("store", &self.store)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

/// One try at holding the store: open the file (when this process may own it), else connect
/// to the process that serves it. A file held by another process whose socket does not answer
/// (yet) is [`Error::StorageLocked`]; with `takeover` off, a socket that does not answer is
/// [`Error::OwnerGone`] naming `previous` (the owner this process last talked to, 0 if none).
pub(super) fn acquire(
    config: &NodeConfig,
    store: Option<&PathBuf>,
    previous: u32,
) -> Result<Current> {
    if !config.takeover {
        if let Some(store) = store {
            return connect_only(config, store, previous);
        }
    }
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
            let jobs: Arc<dyn Jobs> = engine.clone();
            let owned = Owned { engine, server: Mutex::new(server), serve_error };
            return Ok(Current { jobs, owned: Some(Arc::new(owned)), client: None });
        }
        Err(e @ Error::StorageLocked { same_process: false, .. }) if config.connect => e,
        Err(e) => return Err(e),
    };
    let Some(store) = store else { return Err(locked) };
    match connect(config, store) {
        Ok(current) => Ok(current),
        // A holder that does not serve (an older Kathikon, or one that chose not to): the
        // lock error says who it is.
        Err(ConnectError::Unreachable(_)) => Err(locked),
        Err(ConnectError::NotAnswering(waited)) => Err(Error::OwnerNotAnswering {
            path: store.clone(),
            owner: match locked {
                Error::StorageLocked { holder, .. } => holder,
                _ => None,
            },
            waited,
        }),
        Err(ConnectError::Refused(e)) => Err(e),
    }
}

/// [`acquire`] for a process that never owns the store: the owner's client, or
/// [`Error::OwnerGone`] when no process serves it.
fn connect_only(config: &NodeConfig, store: &Path, previous: u32) -> Result<Current> {
    match connect(config, store) {
        Ok(current) => Ok(current),
        Err(ConnectError::NotAnswering(waited)) => {
            Err(Error::OwnerNotAnswering { path: store.to_path_buf(), owner: None, waited })
        }
        Err(ConnectError::Unreachable(e)) => Err(Error::OwnerGone {
            path: store.to_path_buf(),
            owner: previous,
            detail: format!(
                "no process serves the store ({e}), and this process does not take stores \
                 over (takeover=False, as in a pool's worker process): it waits for the \
                 process that keeps the store (the pool's parent) to take it over"
            ),
        }),
        Err(ConnectError::Refused(e)) => Err(e),
    }
}

/// A client session with the store's owner, each wait on it bounded by the config.
fn connect(config: &NodeConfig, store: &Path) -> std::result::Result<Current, ConnectError> {
    let client_config = ClientConfig {
        store: store.to_path_buf(),
        lease: config.lease,
        connect_timeout: config.connect_timeout,
    };
    let client = Arc::new(Client::connect_bounded(&client_config, config.answer_timeout)?);
    Ok(Current { jobs: client.clone(), owned: None, client: Some(client) })
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
        let held = match (&store, &config.engine.path) {
            (Some(store), Some(shown)) => Some(HeldHere::take(store, shown)?),
            _ => None,
        };
        crate::fork::install();
        let generation = crate::fork::generation();
        // The store may be changing hands right now (its owner died and its file is being
        // released, or the next owner is opening it): the same tries as a takeover.
        let current = super::handover::next_owner(&config, store.as_ref(), 0)?;
        Ok(Node {
            config,
            store,
            current: RwLock::new(ManuallyDrop::new(current)),
            generation: AtomicU64::new(generation),
            closed: AtomicBool::new(false),
            held: Mutex::new(held),
            on_takeover: Mutex::new(None),
            searches: AtomicU64::new(0),
            failed_search: Mutex::new(None),
            crontab: Mutex::new(Vec::new()),
            events: AtomicBool::new(false),
        })
    }

    /// The store as this process holds it now, to call its verbs on. When the owner this
    /// process talked to is gone, this connects to the new owner or takes the store over
    /// (which opens the file: it may block, and may fail).
    pub fn jobs(&self) -> Result<Arc<dyn Jobs>> {
        self.checked(|current| current.jobs.clone())
    }

    /// The store as this process last held it, without the takeover check of [`Node::jobs`]:
    /// for calls that must not block, like [`Jobs::interrupt`] or [`Jobs::now`].
    pub fn jobs_as_is(&self) -> Arc<dyn Jobs> {
        self.own_after_fork();
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).jobs.clone()
    }

    /// `pick` of the store as this process holds it, after switching owners if the one it
    /// talked to is gone. Every verb passes here, so the usual case takes the read lock and
    /// clones only what `pick` takes.
    fn checked<T>(&self, pick: impl FnOnce(&Current) -> T) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.forked() {
            self.after_fork()?;
        }
        {
            let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !current.client.as_ref().is_some_and(|c| c.is_gone()) {
                return Ok(pick(&current));
            }
        }
        let searched_before = self.searches.load(Ordering::Acquire);
        let mut slot = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another thread may have switched already.
        let mut took_over_from = None;
        if let Some(client) = slot.client.clone() {
            if client.is_gone() {
                // One search at a time, and the threads that waited for it take its answer:
                // lanes of a process that finds no owner fail together after one bounded
                // wait, not one wait after another.
                let failed = self.failed_search.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((_, e)) = failed.as_ref().filter(|(n, _)| *n > searched_before) {
                    return Err(e.clone());
                }
                drop(failed);
                client.close();
                let previous = client.owner_pid();
                let found =
                    super::handover::next_owner(&self.config, self.store.as_ref(), previous);
                let number = self.searches.fetch_add(1, Ordering::AcqRel) + 1;
                let next = found.inspect_err(|e| {
                    *self.failed_search.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((number, e.clone()));
                })?;
                drop(ManuallyDrop::into_inner(std::mem::replace(
                    &mut *slot,
                    ManuallyDrop::new(next),
                )));
                if slot.owned.is_some() {
                    took_over_from = Some(client.owner_pid());
                }
            }
        }
        let picked = pick(&slot);
        let engine =
            slot.owned.as_ref().filter(|_| took_over_from.is_some()).map(|o| o.engine.clone());
        drop(slot);
        if let Some(engine) = engine {
            self.arm(&engine);
        }
        if let (Some(pid), Some(store)) = (took_over_from, &self.store) {
            let hook = self.on_takeover.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(hook) = hook.as_ref() {
                hook(store, pid);
            }
        }
        Ok(picked)
    }

    /// Take the store over (or connect to its new owner) if the owner this process talked to
    /// went away; the role this process has then. For a process that makes no calls of its
    /// own but must keep the store, such as a pool's parent, whose worker processes never
    /// take it over: it calls this periodically, so its takeover does not wait for a call.
    pub fn keep(&self) -> Result<Role> {
        self.checked(|current| if current.owned.is_some() { Role::Owner } else { Role::Client })
    }

    /// Call `hook` each time this process takes the store over from an owner that went
    /// away (to log it: the binding logs one INFO line).
    pub fn on_takeover(&self, hook: TakeoverHook) {
        *self.on_takeover.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook);
    }

    /// [`Jobs::insert`] through whoever owns the store. The owner's own inserts go straight
    /// to its engine and carry nothing new. A client's carry a request id; when the owner goes
    /// away before answering (outcome unknown), the insert is sent again under the same id to
    /// the next owner, which may be this process: the store remembers the id with the jobs,
    /// so they are stored exactly once, and the answer is the jobs stored.
    pub fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        self.insert_flagged(jobs).map(|inserted| inserted.jobs)
    }

    /// [`Node::insert`], saying which jobs existed already ([`Jobs::insert_flagged`]).
    pub fn insert_flagged(&self, jobs: Vec<NewJob>) -> Result<Inserted> {
        let client = match self.checked(|c| c.client.clone().ok_or_else(|| c.jobs.clone()))? {
            Ok(client) => client,
            Err(local) => return local.insert_flagged(jobs),
        };
        let (request, mut jobs, mut client) = (RequestId::new(), jobs, client);
        for _ in 0..MAX_SWITCHES {
            match client.insert_once_flagged(request, &mut jobs) {
                Err(Error::OwnerGone { .. }) => {}
                answer => return answer,
            }
            let next = self.checked(|c| match (&c.client, &c.owned) {
                (Some(client), _) => Ok(client.clone()),
                (None, Some(owned)) => Err(Some(owned.engine.clone())),
                (None, None) => Err(None),
            })?;
            match next {
                Ok(next) => client = next,
                Err(Some(engine)) => return engine.insert_once_flagged(request, jobs),
                Err(None) => return Err(Error::Closed),
            }
        }
        client.insert_once_flagged(request, &mut jobs)
    }

    /// `call` on the store as this process holds it, called again on the next owner when
    /// the owner went away before answering. Only for verbs that may run twice: reads,
    /// changes whose repeat is a no-op (cancel, retry, sync), and claims (jobs an unanswered
    /// claim took were held by this process's session and are rescued, as ever).
    pub fn retrying<T>(&self, call: impl Fn(&dyn Jobs) -> Result<T>) -> Result<T> {
        let mut jobs = self.jobs()?;
        for _ in 0..MAX_SWITCHES {
            match call(&*jobs) {
                Err(Error::OwnerGone { .. }) => jobs = self.jobs()?,
                answer => return answer,
            }
        }
        call(&*jobs)
    }

    /// Whether this is a child made by `fork` still holding its parent's session.
    fn forked(&self) -> bool {
        crate::fork::generation() != self.generation.load(Ordering::Acquire)
    }

    /// In a child made by `fork`, its own session (for calls that report rather than fail:
    /// an error shows at the next verb).
    fn own_after_fork(&self) {
        if self.forked() {
            let _ = self.after_fork();
        }
    }

    /// Give this child made by `fork` a session of its own: a client of the owner (its
    /// parent, when the parent owned the store), or the store itself when nobody holds it any
    /// more. The parent's session is left as it is, for the parent.
    #[cold]
    fn after_fork(&self) -> Result<()> {
        let Some(store) = &self.store else {
            return Err(Error::Storage(
                "this process was made by fork from one that holds an in-memory store, which \
                 lives in the parent's memory; create the app in the child, or use a store \
                 file"
                    .into(),
            ));
        };
        let mut slot = self.write_in_child()?;
        let generation = crate::fork::generation();
        if self.generation.load(Ordering::Acquire) == generation {
            return Ok(()); // another thread of this child did it
        }
        let own = super::handover::next_owner(&self.config, Some(store), 0)?;
        let engine = own.owned.as_ref().map(|o| o.engine.clone());
        // The parent's `Current` is not dropped: its connections, server and engine are the
        // parent's, run by threads this process does not have.
        let _parents = std::mem::replace(&mut *slot, ManuallyDrop::new(own));
        self.generation.store(generation, Ordering::Release);
        drop(slot);
        if let Some(engine) = engine {
            self.arm(&engine);
        }
        Ok(())
    }

    /// The write lock on `current` in a child made by `fork`. A thread of the parent that
    /// held it at the fork does not exist here and never releases it: after waiting long
    /// enough for a thread of this child to connect, that is an error, not a hang.
    fn write_in_child(&self) -> Result<std::sync::RwLockWriteGuard<'_, ManuallyDrop<Current>>> {
        let deadline = Instant::now() + self.config.connect_timeout + Duration::from_secs(1);
        loop {
            match self.current.try_write() {
                Ok(slot) => return Ok(slot),
                Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(Error::Storage(
                        "this process was made by fork while another thread of its parent \
                         held the store's lock, which stays held here; open the app again \
                         in the child, or start children with the spawn method"
                            .into(),
                    ))
                }
            }
        }
    }

    /// Whether this process owns the store right now.
    pub fn role(&self) -> Role {
        self.own_after_fork();
        match &self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).owned {
            Some(_) => Role::Owner,
            None => Role::Client,
        }
    }

    /// Why this owner does not serve its store to other processes, if its socket could not be
    /// created (`None` when it serves, or is a client).
    pub fn serve_error(&self) -> Option<String> {
        self.own_after_fork();
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.owned.as_ref().and_then(|o| o.serve_error.clone())
    }

    /// The owner's process id (this process's, when it is the owner).
    pub fn owner_pid(&self) -> u32 {
        self.own_after_fork();
        match &self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).client {
            Some(client) => client.owner_pid(),
            None => std::process::id(),
        }
    }

    /// The storage failure after which this process's engine stopped writing, when it owns
    /// the store (see [`Engine::failure`]); `None` while it writes, and for a client (whose
    /// calls report its owner's failure as [`Error::OwnerStopped`]).
    pub fn failure(&self) -> Option<Error> {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.owned.as_ref().and_then(|o| o.engine.failure())
    }

    /// What opening the store found and rescued (nothing, for a client).
    pub fn recovery(&self) -> Recovery {
        match self.checked(|current| current.owned.clone()) {
            Ok(Some(owned)) => owned.engine.recovery(),
            _ => Recovery::default(),
        }
    }

    /// Stop serving (clients' claims are rescued first), then close the engine or the
    /// connection. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.forked() {
            // The parent's session: not this process's to stop.
            self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            return;
        }
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(owned) = &current.owned {
            if let Some(mut server) =
                owned.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
            {
                server.stop();
            }
        }
        current.jobs.close();
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }

    /// Whether [`Node::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// [`Jobs::set_crontab`] for this process: kept, and fired by this process whenever it
    /// owns the store (now, or after it takes the store over: that arming counts as a start,
    /// so its `@reboot` entries fire then).
    pub fn set_crontab(&self, entries: Vec<CronEntry>) -> Result<()> {
        crate::cron::compile(entries.clone())?;
        self.crontab.lock().unwrap_or_else(PoisonError::into_inner).clone_from(&entries);
        self.jobs()?.set_crontab(entries)
    }

    /// [`Jobs::set_events`] for this process: kept, and applied to every engine it gets by
    /// taking the store over.
    pub fn set_events(&self, on: bool) {
        self.events.store(on, Ordering::Release);
        if let Ok(jobs) = self.jobs() {
            jobs.set_events(on);
        }
    }

    /// Hand the crontab and the events switch to `engine`, which this process just got by
    /// taking the store over. A failure shows at the next call on that engine, which fails
    /// the same way.
    fn arm(&self, engine: &Engine) {
        if self.events.load(Ordering::Acquire) {
            engine.set_events(true);
        }
        let entries = self.crontab.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if !entries.is_empty() {
            let _ = engine.set_crontab(entries);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.close();
        if !self.forked() {
            let current = self.current.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            // SAFETY: dropped once, here, and `current` is not used after.
            unsafe { ManuallyDrop::drop(current) };
        }
    }
}
