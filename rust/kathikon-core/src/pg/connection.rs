//! Connections to the database, reused: a pool of at most [`MAX_CONNECTIONS`] clients, each
//! taken by one call for the length of its work (a transaction or a statement) and put back
//! after it, so calls from many threads run in parallel on up to as many connections, a
//! sequential caller pays for one connection only, and a node with more threads than that
//! waits its turn for a connection instead of opening (and forking a server process for)
//! one per call. No call holds a connection while it waits for anything but the database,
//! and none takes a second one while it holds one, so the bound cannot deadlock.
//!
//! Each connection keeps the statements prepared on it ([`Prepared`]): a statement run often
//! is parsed and planned once per connection, and each run of it is one round trip (an
//! unprepared one is two: parse, then execute).
//!
//! When the database restarts (or the network drops), every connection breaks at once. The
//! call in flight on one fails with [`Error::ConnectionLost`] (its outcome is unknown: a
//! write may or may not have committed), and the idle ones are dropped with it, so the next
//! calls do not fail one by one on dead connections. A call that needs a new connection tries
//! again with a growing pause for up to [`RECONNECT_FOR`] (a restart takes seconds), and only
//! then fails, having done nothing.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, Config, GenericClient, Statement};

use super::tls::Tls;
use crate::error::{Error, Result};

/// At most this many connections of the pool are open at once (idle or in use); a call that
/// finds them all in use waits for one. Enough for the few calls that run at once on two
/// cores and more (a node's claims, its grouped acks, inserts), few enough that a node with
/// hundreds of lanes does not make as many server processes compete for the database's CPU.
const MAX_CONNECTIONS: usize = 16;

/// How long a call keeps trying to connect before it fails.
pub(crate) const RECONNECT_FOR: Duration = Duration::from_secs(15);

/// The first pause between two tries to connect; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Whether `e` says the connection itself broke (the server went away, shut down, or the
/// network dropped), rather than the statement being refused.
fn broke(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // Class 08 (connection exception), and the server shutting the session down.
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        // No answer from the server: the socket failed.
        None => {
            std::error::Error::source(e).is_some_and(<dyn std::error::Error>::is::<std::io::Error>)
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        if broke(&e) {
            return Error::ConnectionLost { detail: e.to_string() };
        }
        // The server's own words (with its SQLSTATE) when it sent some, else the client's.
        match e.as_db_error() {
            Some(db) => Error::Storage(format!(
                "PostgreSQL refused a statement: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            )),
            None => Error::Storage(format!("PostgreSQL: {e}")),
        }
    }
}

/// The statements prepared on one connection, by their text. A statement is valid only on
/// the connection that prepared it, so the cache lives and dies with its connection.
#[derive(Default)]
pub(crate) struct Prepared {
    statements: HashMap<String, Statement>,
}

impl Prepared {
    /// `sql` prepared on `client` (the connection this cache belongs to, or a transaction of
    /// it): prepared now, the first time (one round trip; hot statements are prepared before
    /// their transaction begins, so a failure aborts nothing), then taken from the cache. A
    /// prepared statement outlives the transaction it was prepared in. The text must be fixed
    /// for each use (arrays for lists, not a varying `IN (...)`; a limited queue's text
    /// varies with its partitions' shape only), or the cache would grow with each variant.
    pub(crate) fn get(&mut self, client: &mut impl GenericClient, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// A pooled connection and its prepared statements.
struct Conn {
    client: Client,
    prepared: Prepared,
}

/// The pool: idle connections, and how many are open (idle or in use).
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a connection is put back or closed.
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Conn>,
    open: usize,
}

impl Pool {
    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The database's address, how to use TLS with it, and its pool of connections.
#[derive(Clone)]
pub(crate) struct Connections {
    config: Config,
    tls: Arc<Tls>,
    pool: Arc<Pool>,
}

impl Connections {
    /// Parse `url` (a `postgresql://` URL or a `key=value` string, with libpq's TLS parameters)
    /// and read the TLS files it names; nothing is connected yet.
    pub(crate) fn new(url: &str) -> Result<Connections> {
        let (config, tls) = Tls::from_url(url)?;
        Ok(Connections { config, tls: Arc::new(tls), pool: Arc::default() })
    }

    /// A connection of its own: idle, or new (trying for up to [`RECONNECT_FOR`]) while
    /// fewer than [`MAX_CONNECTIONS`] are open, else the next one put back. Counted open
    /// until [`Connections::put_back`].
    fn take(&self) -> Result<Conn> {
        let mut state = self.pool.state();
        loop {
            match state.idle.pop() {
                Some(conn) if !conn.client.is_closed() => return Ok(conn),
                Some(_) => state.open -= 1,
                None if state.open < MAX_CONNECTIONS => break,
                None => {
                    state = self
                        .pool
                        .freed
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
        state.open += 1;
        drop(state);
        let deadline = Instant::now() + RECONNECT_FOR;
        let mut pause = FIRST_PAUSE;
        loop {
            match self.connect() {
                Ok(client) => return Ok(Conn { client, prepared: Prepared::default() }),
                Err(e) if Instant::now() + pause >= deadline => {
                    self.pool.state().open -= 1;
                    self.pool.freed.notify_one();
                    return Err(e);
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// Give back `conn`, taken by [`Connections::take`]: kept for the next call unless its
    /// call found the connection lost (`lost`) or it closed; then the idle ones (broken too,
    /// most likely) are closed with it.
    fn put_back(&self, conn: Conn, lost: bool) {
        let mut state = self.pool.state();
        if lost || conn.client.is_closed() {
            let closed = state.idle.len() + 1;
            state.idle.clear();
            state.open -= closed;
            drop(state);
            self.pool.freed.notify_all();
        } else {
            state.idle.push(conn);
            drop(state);
            self.pool.freed.notify_one();
        }
    }

    /// A new connection (one try), never put back: for a thread that keeps one and retries
    /// on its own schedule (the listener, the node's upkeep with its leader lock).
    pub(crate) fn connect(&self) -> Result<Client> {
        self.tls.connect(&self.config)
    }

    /// Run `work` on a connection of its own, then keep the connection for the next call
    /// unless it broke; if it did, the idle ones (broken too, most likely) are dropped.
    pub(crate) fn with<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.with_prepared(|client, _| work(client))
    }

    /// [`Connections::with`], with the statements prepared on the connection.
    pub(crate) fn with_prepared<T>(
        &self,
        work: impl FnOnce(&mut Client, &mut Prepared) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.take()?;
        let result = work(&mut conn.client, &mut conn.prepared);
        self.put_back(conn, matches!(result, Err(Error::ConnectionLost { .. })));
        result
    }

    /// Name every connection made from now on `name` (`application_name`), as this node's.
    pub(crate) fn name(&mut self, name: &str) {
        self.config.application_name(name);
    }

    /// Keep `client` (connected by [`Connections::connect`]) for the next call, if the pool
    /// has room for it.
    pub(crate) fn keep(&self, client: Client) {
        let mut state = self.pool.state();
        if !client.is_closed() && state.open < MAX_CONNECTIONS {
            state.open += 1;
            state.idle.push(Conn { client, prepared: Prepared::default() });
            drop(state);
            self.pool.freed.notify_one();
        }
    }

    /// Close every idle connection.
    pub(crate) fn close(&self) {
        let mut state = self.pool.state();
        let closed = state.idle.len();
        state.idle.clear();
        state.open -= closed;
        drop(state);
        self.pool.freed.notify_all();
    }
}
