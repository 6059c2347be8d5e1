//! Connections to the database, reused: a small stack of idle clients, each taken by one call
//! for the length of its work (a transaction or a statement) and put back after it, so calls
//! from many threads run in parallel on as many connections, and a sequential caller pays
//! for one connection only. A connection that broke is dropped, not put back; the next call
//! opens a new one.

use std::sync::{Arc, Mutex};

use postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};

/// At most this many idle connections are kept; more are closed when put back.
const MAX_IDLE: usize = 16;

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
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

/// The database's address and its idle connections.
#[derive(Clone)]
pub(crate) struct Connections {
    config: Config,
    idle: Arc<Mutex<Vec<Client>>>,
}

impl Connections {
    /// Parse `url` (a `postgresql://` URL or a `key=value` string); nothing is connected yet.
    pub(crate) fn new(url: &str) -> Result<Connections> {
        let config: Config = url.parse().map_err(|e| {
            Error::InvalidJob(format!(
                "the PostgreSQL url is not valid ({e}); pass one such as \
                 postgresql://user@host:5432/dbname"
            ))
        })?;
        Ok(Connections { config, idle: Arc::new(Mutex::new(Vec::new())) })
    }

    /// A connection of its own: idle or new.
    fn take(&self) -> Result<Client> {
        if let Some(client) =
            self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
        {
            if !client.is_closed() {
                return Ok(client);
            }
        }
        self.connect()
    }

    /// A new connection, never put back: for a thread that keeps one (the listener, the
    /// node's upkeep with its session-level leader lock).
    pub(crate) fn connect(&self) -> Result<Client> {
        self.config.connect(NoTls).map_err(|e| {
            Error::Storage(format!(
                "could not connect to PostgreSQL ({e}); is the server up and the url right?"
            ))
        })
    }

    /// Run `work` on a connection of its own, then keep the connection for the next call
    /// unless it broke.
    pub(crate) fn with<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = self.take()?;
        let result = work(&mut client);
        if !client.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(client);
            }
        }
        result
    }

    /// Close every idle connection.
    pub(crate) fn close(&self) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}
