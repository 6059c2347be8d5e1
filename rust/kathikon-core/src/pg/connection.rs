//! Connections to the database, reused: a small stack of idle clients, each taken by one call
//! for the length of its work (a transaction or a statement) and put back after it, so calls
//! from many threads run in parallel on as many connections, and a sequential caller pays
//! for one connection only.
//!
//! When the database restarts (or the network drops), every connection breaks at once. The
//! call in flight on one fails with [`Error::ConnectionLost`] (its outcome is unknown: a
//! write may or may not have committed), and the idle ones are dropped with it, so the next
//! calls do not fail one by one on dead connections. A call that needs a new connection tries
//! again with a growing pause for up to [`RECONNECT_FOR`] (a restart takes seconds), and only
//! then fails, having done nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, Config};

use super::tls::Tls;
use crate::error::{Error, Result};

/// At most this many idle connections are kept; more are closed when put back.
const MAX_IDLE: usize = 16;

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

/// The database's address, how to use TLS with it, and its idle connections.
#[derive(Clone)]
pub(crate) struct Connections {
    config: Config,
    tls: Arc<Tls>,
    idle: Arc<Mutex<Vec<Client>>>,
}

impl Connections {
    /// Parse `url` (a `postgresql://` URL or a `key=value` string, with libpq's TLS parameters)
    /// and read the TLS files it names; nothing is connected yet.
    pub(crate) fn new(url: &str) -> Result<Connections> {
        let (config, tls) = Tls::from_url(url)?;
        Ok(Connections { config, tls: Arc::new(tls), idle: Arc::new(Mutex::new(Vec::new())) })
    }

    /// A connection of its own: idle or new (trying for up to [`RECONNECT_FOR`]).
    fn take(&self) -> Result<Client> {
        if let Some(client) =
            self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
        {
            if !client.is_closed() {
                return Ok(client);
            }
        }
        let deadline = Instant::now() + RECONNECT_FOR;
        let mut pause = FIRST_PAUSE;
        loop {
            match self.connect() {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() + pause >= deadline => return Err(e),
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
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
        let mut client = self.take()?;
        let result = work(&mut client);
        let lost = matches!(result, Err(Error::ConnectionLost { .. }));
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if lost || client.is_closed() {
            idle.clear();
        } else if idle.len() < MAX_IDLE {
            idle.push(client);
        }
        result
    }

    /// Name every connection made from now on `name` (`application_name`), as this node's.
    pub(crate) fn name(&mut self, name: &str) {
        self.config.application_name(name);
    }

    /// Keep `client` (connected by [`Connections::connect`]) for the next call.
    pub(crate) fn keep(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !client.is_closed() && idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }

    /// Close every idle connection.
    pub(crate) fn close(&self) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}
