//! [`AppStore`]: the store an app opens, whichever medium holds it — a store file, through an
//! [`ipc::Node`] (owned by this process, or by another one it talks to on the file's
//! socket), or a `PostgreSQL` database ([`crate::pg::PgStore`], feature `postgres`), where
//! every process is a peer node. Both implement the job-store contract ([`Jobs`]); this type
//! answers, once for the host binding, the few questions whose answers differ between them:
//! the process's role, taking the store over, and what the store's owner found or suffered.

use std::sync::Arc;

use crate::cron::CronEntry;
use crate::engine::Recovery;
use crate::error::{Error, Result};
use crate::ipc::{self, Node, TakeoverHook};
use crate::job::NewJob;
use crate::jobs::Jobs;
use crate::unique::Inserted;

/// What this process is to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppRole {
    /// It opened the store file (and serves it to other processes).
    Owner,
    /// Another process owns the store file; this one uses its socket.
    Client,
    /// One node of a database that every process uses as a peer.
    Node,
}

impl AppRole {
    /// The role's name, as hosts show it: `owner`, `client` or `node`.
    pub fn as_str(self) -> &'static str {
        match self {
            AppRole::Owner => "owner",
            AppRole::Client => "client",
            AppRole::Node => "node",
        }
    }
}

impl From<ipc::Role> for AppRole {
    fn from(role: ipc::Role) -> AppRole {
        match role {
            ipc::Role::Owner => AppRole::Owner,
            ipc::Role::Client => AppRole::Client,
        }
    }
}

/// A store file or a database, as an app opened it.
pub enum AppStore {
    /// A store file (or an in-memory store), owned here or by another process.
    File(Box<Node>),
    /// A `PostgreSQL` database.
    #[cfg(feature = "postgres")]
    Database(Arc<crate::pg::PgStore>),
}

impl AppStore {
    /// The store to call, after switching owners if a file's owner went away;
    /// [`Error::Closed`] once closed.
    pub fn jobs(&self) -> Result<Arc<dyn Jobs>> {
        match self {
            AppStore::File(node) => node.jobs(),
            #[cfg(feature = "postgres")]
            AppStore::Database(db) if db.is_closed() => Err(Error::Closed),
            #[cfg(feature = "postgres")]
            AppStore::Database(db) => Ok(db.clone()),
        }
    }

    /// The store as this process last held it, without a takeover check: for calls that must
    /// not block ([`Jobs::interrupt`], [`Jobs::now`]).
    pub fn jobs_as_is(&self) -> Arc<dyn Jobs> {
        match self {
            AppStore::File(node) => node.jobs_as_is(),
            #[cfg(feature = "postgres")]
            AppStore::Database(db) => db.clone(),
        }
    }

    /// `call` on the store, again on the new owner's if a file's owner went away during it.
    pub fn retrying<T>(&self, call: impl Fn(&dyn Jobs) -> Result<T>) -> Result<T> {
        match self {
            AppStore::File(node) => node.retrying(call),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => call(&*self.jobs()?),
        }
    }

    /// [`Jobs::insert_flagged`], sent again under the same request id to a file's new owner
    /// when the old one went away before answering ([`Node::insert_flagged`]).
    pub fn insert_flagged(&self, jobs: Vec<NewJob>) -> Result<Inserted> {
        match self {
            AppStore::File(node) => node.insert_flagged(jobs),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => self.jobs()?.insert_flagged(jobs),
        }
    }

    /// [`Jobs::set_crontab`] for this process (a file's: kept for when it takes over).
    pub fn set_crontab(&self, entries: Vec<CronEntry>) -> Result<()> {
        match self {
            AppStore::File(node) => node.set_crontab(entries),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => self.jobs()?.set_crontab(entries),
        }
    }

    /// [`Jobs::set_events`] for this process (a file's: kept for when it takes over).
    pub fn set_events(&self, on: bool) {
        match self {
            AppStore::File(node) => node.set_events(on),
            #[cfg(feature = "postgres")]
            AppStore::Database(db) => db.set_events(on),
        }
    }

    /// Release the store; idempotent.
    pub fn close(&self) {
        match self {
            AppStore::File(node) => node.close(),
            #[cfg(feature = "postgres")]
            AppStore::Database(db) => db.close(),
        }
    }

    /// Whether [`AppStore::close`] was called.
    pub fn is_closed(&self) -> bool {
        match self {
            AppStore::File(node) => node.is_closed(),
            #[cfg(feature = "postgres")]
            AppStore::Database(db) => db.is_closed(),
        }
    }

    /// This process's role now.
    pub fn role(&self) -> AppRole {
        match self {
            AppStore::File(node) => node.role().into(),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => AppRole::Node,
        }
    }

    /// Take a file over (or connect to its new owner) if its owner went away; the role then.
    /// A database has no owner to lose.
    pub fn keep(&self) -> Result<AppRole> {
        match self {
            AppStore::File(node) => node.keep().map(AppRole::from),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => self.jobs().map(|_| AppRole::Node),
        }
    }

    /// Call `hook` each time this process takes a store file over (never, for a database).
    pub fn on_takeover(&self, hook: TakeoverHook) {
        match self {
            AppStore::File(node) => node.on_takeover(hook),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => {}
        }
    }

    /// Why this owner does not serve its store file to other processes, if it could not.
    pub fn serve_error(&self) -> Option<String> {
        match self {
            AppStore::File(node) => node.serve_error(),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => None,
        }
    }

    /// The storage failure after which this process's engine stopped writing (an owner of a
    /// file whose commit failed); a database's calls report their own errors instead.
    pub fn failure(&self) -> Option<Error> {
        match self {
            AppStore::File(node) => node.failure(),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => None,
        }
    }

    /// The process id of a file's owner; this process's for a database (it is its own node).
    pub fn owner_pid(&self) -> u32 {
        match self {
            AppStore::File(node) => node.owner_pid(),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => std::process::id(),
        }
    }

    /// What opening a store file found executing and rescued; nothing for a database, whose
    /// nodes' jobs are rescued by the other nodes when their lease runs out.
    pub fn recovery(&self) -> Recovery {
        match self {
            AppStore::File(node) => node.recovery(),
            #[cfg(feature = "postgres")]
            AppStore::Database(_) => Recovery::default(),
        }
    }
}
