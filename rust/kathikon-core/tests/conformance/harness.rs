//! The backends every behaviour runs against, and the [`Store`] a test body gets.
//!
//! A body talks to the store only through [`Jobs`], so what it proves is a promise of the
//! contract, kept by each implementation: the in-process engine, and the client of an owner
//! that serves the store on its Unix socket (the owner runs in this process, but the body's
//! calls cross the real socket, framed and decoded, and go through the server's sessions),
//! and, with the `postgres` feature, the `PostgreSQL` store on a fresh database of a private
//! server (`common::pg`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{scratch_dir, T0};
use kathikon_core::clock::ManualClock;
use kathikon_core::ipc::{Client, ClientConfig, Server};
use kathikon_core::{Engine, EngineConfig, Jobs, NewJob, Recovery, Result};

/// One implementation of the contract, opened on a real store file.
pub trait Backend: Sync {
    /// Open the store file `config.path` on `config.clock`.
    fn open(&self, config: EngineConfig) -> Box<dyn Opened>;

    /// Whether an ack the store refuses is written into the job's history. A store shared
    /// between processes fences acks from a worker that does not hold the attempt (it lost
    /// the job, or reports twice) and notes each refusal; the engine alone refuses a stale
    /// ack without a trace.
    fn fences_refused_acks(&self) -> bool;

    /// Whether the store is shared by peers, each with a lease and none owning it (a
    /// database's nodes), rather than owned by one process that serves it to its clients.
    fn shared_by_peers(&self) -> bool {
        false
    }

    /// Whether the store is a redb file at [`Store::path`] (whose indexes a test may check
    /// after closing it).
    fn has_store_file(&self) -> bool {
        true
    }

    /// What this store accepts of a job description: [`NewJob::validate`], and whatever the
    /// store's medium adds.
    fn validate(&self, new: &NewJob) -> Result<()> {
        new.validate()
    }
}

/// A store a [`Backend`] opened: the contract, and what closing it in order takes.
pub trait Opened {
    /// The store as the app sees it.
    fn jobs(&self) -> Arc<dyn Jobs>;
    /// What the open found executing and rescued, where the app can see it: a socket owner
    /// rescues what its client held when the client disconnects, before any reopen.
    fn recovery(&self) -> Option<Recovery>;
    /// Release everything, so the file can be opened again.
    fn close(self: Box<Self>);
    /// The store as the process that fires a crontab sees it: the engine of the process that
    /// owns the file; on a database every node, so the store itself.
    fn owner(&self) -> Arc<dyn Jobs>;
}

/// The engine in this process.
pub struct EngineBackend;

/// A client of an owner serving the store on its socket.
pub struct SocketBackend;

pub static ENGINE: EngineBackend = EngineBackend;
pub static SOCKET: SocketBackend = SocketBackend;

struct OpenedEngine(Arc<Engine>);

impl Backend for EngineBackend {
    fn open(&self, config: EngineConfig) -> Box<dyn Opened> {
        Box::new(OpenedEngine(Arc::new(Engine::open(config).expect("open the store"))))
    }

    fn fences_refused_acks(&self) -> bool {
        false
    }
}

impl Opened for OpenedEngine {
    fn jobs(&self) -> Arc<dyn Jobs> {
        self.0.clone()
    }

    fn recovery(&self) -> Option<Recovery> {
        Some(self.0.recovery())
    }

    fn close(self: Box<Self>) {
        self.0.close();
    }

    fn owner(&self) -> Arc<dyn Jobs> {
        self.0.clone()
    }
}

struct OpenedSocket {
    engine: Arc<Engine>,
    server: Server,
    client: Arc<Client>,
}

impl Backend for SocketBackend {
    fn open(&self, config: EngineConfig) -> Box<dyn Opened> {
        let path = config.path.clone().expect("a store file");
        let engine = Arc::new(Engine::open(config).expect("open the store"));
        let store = std::fs::canonicalize(path).expect("the store's canonical path");
        let server = Server::start(engine.clone(), &store).expect("serve the store");
        let client = ClientConfig {
            store,
            lease: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        };
        let client = Client::connect(&client)
            .unwrap_or_else(|e| panic!("connect to the store's owner: {e:?}"));
        Box::new(OpenedSocket { engine, server, client: Arc::new(client) })
    }

    fn fences_refused_acks(&self) -> bool {
        true
    }
}

impl Opened for OpenedSocket {
    fn jobs(&self) -> Arc<dyn Jobs> {
        self.client.clone()
    }

    fn recovery(&self) -> Option<Recovery> {
        None
    }

    fn close(mut self: Box<Self>) {
        // The client first: its connections closing make the owner rescue what it held,
        // which the server has finished when `stop` returns.
        self.client.close();
        self.server.stop();
        self.engine.close();
    }

    fn owner(&self) -> Arc<dyn Jobs> {
        self.engine.clone()
    }
}

/// The `PostgreSQL` store, on a fresh database per store (a reopen opens the same one again).
#[cfg(feature = "postgres")]
pub struct PostgresBackend {
    databases: std::sync::Mutex<std::collections::HashMap<PathBuf, String>>,
}

#[cfg(feature = "postgres")]
pub static POSTGRES: std::sync::LazyLock<PostgresBackend> = std::sync::LazyLock::new(|| {
    PostgresBackend { databases: std::sync::Mutex::new(std::collections::HashMap::new()) }
});

/// Why the tests do not run against `PostgreSQL`, if they do not: there is none here
/// (outside CI; in CI its absence fails them).
#[cfg(feature = "postgres")]
pub fn postgres_skip() -> Option<String> {
    (!crate::common::pg::available()).then(|| "no PostgreSQL here".to_string())
}

#[cfg(feature = "postgres")]
struct OpenedPostgres(Arc<kathikon_core::pg::PgStore>);

#[cfg(feature = "postgres")]
impl Backend for PostgresBackend {
    fn open(&self, config: EngineConfig) -> Box<dyn Opened> {
        use kathikon_core::pg::{PgConfig, PgStore};
        let key = config.path.clone().expect("a store path naming the test's database");
        let url = self
            .databases
            .lock()
            .unwrap()
            .entry(key)
            .or_insert_with(|| crate::common::pg::database().expect("a PostgreSQL database"))
            .clone();
        let store = PgStore::open(PgConfig {
            clock: config.clock.clone(),
            poll_interval: Duration::from_millis(20),
            // The leader's periodic work as the suite's engine plugins do theirs.
            tick: config.scheduler_interval,
            prune_interval: config.prune_interval,
            retention: config.retention,
            ..PgConfig::new(url)
        })
        .unwrap_or_else(|e| panic!("open the PostgreSQL store: {e}"));
        Box::new(OpenedPostgres(Arc::new(store)))
    }

    fn fences_refused_acks(&self) -> bool {
        true
    }

    fn has_store_file(&self) -> bool {
        false
    }

    fn shared_by_peers(&self) -> bool {
        true
    }

    fn validate(&self, new: &NewJob) -> Result<()> {
        kathikon_core::pg::validate(new)
    }
}

#[cfg(feature = "postgres")]
impl Opened for OpenedPostgres {
    fn jobs(&self) -> Arc<dyn Jobs> {
        self.0.clone()
    }

    fn recovery(&self) -> Option<Recovery> {
        None
    }

    fn close(self: Box<Self>) {
        self.0.close();
    }

    fn owner(&self) -> Arc<dyn Jobs> {
        self.0.clone()
    }
}

/// A fresh store file for one test, opened by one backend on a manual clock at [`T0`]. It
/// derefs to the contract, so a body reads `store.insert(…)`.
pub struct Store {
    backend: &'static dyn Backend,
    config: EngineConfig,
    clock: Arc<ManualClock>,
    opened: Option<Box<dyn Opened>>,
    jobs: Arc<dyn Jobs>,
    _dir: tempfile::TempDir,
}

impl Store {
    /// A fresh store with the suite's settings: the writer looks at the clock every 20 ms
    /// (so moving it takes effect quickly) and the pruner only runs when asked.
    pub fn open(backend: &'static dyn Backend) -> Store {
        Self::open_with(backend, |_| {})
    }

    /// [`Store::open`], with the engine settings changed by `settings` first.
    pub fn open_with(
        backend: &'static dyn Backend,
        settings: impl FnOnce(&mut EngineConfig),
    ) -> Store {
        let dir = scratch_dir();
        let clock = Arc::new(ManualClock::new(T0));
        let mut config = EngineConfig {
            path: Some(dir.path().join("jobs.redb")),
            scheduler_interval: Duration::from_millis(20),
            prune_interval: Duration::from_secs(3600),
            clock: clock.clone(),
            ..EngineConfig::default()
        };
        settings(&mut config);
        let opened = backend.open(config.clone());
        let jobs = opened.jobs();
        Store { backend, config, clock, opened: Some(opened), jobs, _dir: dir }
    }

    /// The clock the store runs on.
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }

    /// The store file.
    pub fn path(&self) -> PathBuf {
        self.config.path.clone().expect("a store file")
    }

    /// The contract, to hand to other threads.
    pub fn shared(&self) -> Arc<dyn Jobs> {
        self.jobs.clone()
    }

    /// See [`Opened::recovery`].
    pub fn recovery(&self) -> Option<Recovery> {
        self.opened.as_ref().and_then(|o| o.recovery())
    }

    /// See [`Backend::fences_refused_acks`].
    pub fn fences_refused_acks(&self) -> bool {
        self.backend.fences_refused_acks()
    }

    /// See [`Backend::shared_by_peers`].
    pub fn shared_by_peers(&self) -> bool {
        self.backend.shared_by_peers()
    }

    /// See [`Backend::has_store_file`].
    pub fn has_store_file(&self) -> bool {
        self.backend.has_store_file()
    }

    /// See [`Backend::validate`].
    pub fn validate(&self, new: &NewJob) -> Result<()> {
        self.backend.validate(new)
    }

    /// See [`Opened::owner`].
    pub fn owner(&self) -> Arc<dyn Jobs> {
        self.opened.as_ref().expect("an open store").owner()
    }

    /// Close everything that holds the file; the store stays closed until [`Store::reopen`].
    pub fn close(&mut self) {
        if let Some(opened) = self.opened.take() {
            opened.close();
        }
    }

    /// Close the store and open the same file again.
    pub fn reopen(&mut self) {
        self.close();
        let opened = self.backend.open(self.config.clone());
        self.jobs = opened.jobs();
        self.opened = Some(opened);
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Jobs;

    fn deref(&self) -> &(dyn Jobs + 'static) {
        &*self.jobs
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// `#[test] fn NAME()` in module `engine`, in module `socket` and (with the `postgres`
/// feature) in module `postgres` for each body `MODULE::NAME` (a `fn(&'static dyn Backend)`),
/// like a test mixin run once per storage backend.
macro_rules! conformance {
    ($($module:ident :: $body:ident),* $(,)?) => {
        mod engine {
            $(
                #[test]
                fn $body() {
                    crate::$module::$body(&crate::harness::ENGINE);
                }
            )*
        }
        mod socket {
            $(
                #[test]
                fn $body() {
                    crate::$module::$body(&crate::harness::SOCKET);
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $body() {
                    if let Some(why) = crate::harness::postgres_skip() {
                        eprintln!("skipped on PostgreSQL: {why}");
                        return;
                    }
                    crate::$module::$body(&*crate::harness::POSTGRES);
                }
            )*
        }
    };
}
pub(crate) use conformance;
