//! TLS to `PostgreSQL`, with libpq's url parameters and their meanings, so that the url an app
//! gives psycopg or `psql` works here unchanged ([`params`] takes them out of the url):
//!
//! - `sslmode`: `disable` (plain), `allow` (plain, then TLS if the server refuses plain),
//!   `prefer` (the default: TLS, then plain if the server has no TLS or the handshake fails),
//!   `require` (TLS; the certificate is not checked unless a root certificate is given, then
//!   as `verify-ca`), `verify-ca` (TLS; the certificate chains to a trusted authority),
//!   `verify-full` (that, and it names the host the url connects to).
//! - `sslrootcert`: a PEM file of trusted authorities, or `system` (the operating system's,
//!   which makes `verify-full` the default and refuses a weaker mode, as libpq 16). Without it,
//!   libpq's `~/.postgresql/root.crt` is read when it exists; `verify-ca` and `verify-full`
//!   need one or the other.
//! - `sslcert`, `sslkey`: a client certificate and its key (PEM; the key readable by its owner
//!   only), by default libpq's `~/.postgresql/postgresql.crt` and `postgresql.key` when they
//!   exist. `sslsni=0` sends no server name.
//!
//! Everything is read and checked when the store opens (a bad value fails the open, naming it),
//! then every connection of the store — the pool, the listener, the node's upkeep — connects
//! through [`Tls::connect`]. Without the `postgres-tls` feature a url that asks for TLS is
//! refused at open, and `prefer` and `allow` connect in plain text. Over a Unix socket nothing
//! is encrypted and `sslmode` is not used, as in libpq.

#[cfg(feature = "postgres-tls")]
mod client;
mod params;
#[cfg(test)]
mod tests;

use std::path::Path;

use postgres::config::{Host, SslMode as WireMode};
use postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};
use params::split;
use params::Params;

/// libpq's `sslmode`, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Result<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.name() == text).ok_or_else(|| {
            Error::InvalidJob(format!(
                "sslmode={text} in the PostgreSQL url is not a mode; pass one of disable, allow, \
                 prefer (the default), require, verify-ca or verify-full (libpq's)"
            ))
        })
    }
}

/// How a store's connections use TLS; made once, at open.
pub(crate) struct Tls {
    /// Without the feature every mode left (disable, allow, prefer) connects in plain text.
    #[cfg_attr(not(feature = "postgres-tls"), allow(dead_code))]
    mode: SslMode,
    /// The handshake's configuration; `None` only for `disable` (a build without the feature
    /// has none at all).
    #[cfg(feature = "postgres-tls")]
    client: Option<client::Client>,
}

impl Tls {
    /// Check `params` and read the files they name (or libpq's default ones under `home`).
    pub(crate) fn new(params: &Params, home: Option<&Path>) -> Result<Tls> {
        let system = params.sslrootcert.as_deref() == Some("system");
        let mode = match params.sslmode.as_deref() {
            Some(text) => SslMode::parse(text)?,
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system && mode != SslMode::VerifyFull {
            return Err(Error::InvalidJob(format!(
                "sslmode={} cannot be used with sslrootcert=system in the PostgreSQL url: \
                 trusting every authority the system trusts is safe only when the host name is \
                 checked too; use sslmode=verify-full (the default with sslrootcert=system), as \
                 libpq does",
                mode.name()
            )));
        }
        #[cfg(feature = "postgres-tls")]
        {
            let client = match mode {
                SslMode::Disable => None,
                _ => Some(client::Client::new(mode, params, home)?),
            };
            Ok(Tls { mode, client })
        }
        #[cfg(not(feature = "postgres-tls"))]
        {
            let _ = home;
            let given = [
                ("sslrootcert", &params.sslrootcert),
                ("sslcert", &params.sslcert),
                ("sslkey", &params.sslkey),
                ("sslsni", &params.sslsni),
            ];
            // As with the feature, `disable` reads none of the others.
            let asked = match given.iter().find(|(_, value)| value.is_some()) {
                _ if mode == SslMode::Disable => None,
                Some((key, _)) => Some(format!("{key}=")),
                None => (mode >= SslMode::Require).then(|| format!("sslmode={}", mode.name())),
            };
            if let Some(asked) = asked {
                return Err(Error::InvalidJob(format!(
                    "{asked} in the PostgreSQL url asks for TLS, which this build of Kathikon \
                     lacks (kathikon-core without its `postgres-tls` feature); build it with \
                     that feature (the Python wheel has it), or connect with sslmode=disable or \
                     prefer over a network you trust"
                )));
            }
            Ok(Tls { mode })
        }
    }

    /// Parse `url` (a `postgresql://` URL or a `key=value` string, with libpq's TLS
    /// parameters): tokio-postgres's configuration for the rest, and the TLS settings.
    pub(crate) fn from_url(url: &str) -> Result<(Config, Tls)> {
        let (rest, params) = split(url)?;
        let config: Config = rest.parse().map_err(|e| {
            Error::InvalidJob(format!(
                "the PostgreSQL url is not valid ({}); pass one such as \
                 postgresql://user@host:5432/dbname",
                said(&e)
            ))
        })?;
        let tls = Tls::new(&params, std::env::home_dir().as_deref())?;
        Ok((config, tls))
    }

    /// A new connection to the database `config` names, with this TLS (one try of each way
    /// `sslmode` allows).
    #[cfg_attr(not(feature = "postgres-tls"), allow(clippy::unused_self))]
    pub(crate) fn connect(&self, config: &Config) -> Result<Client> {
        let mut config = config.clone();
        let sockets_only = !config.get_hosts().is_empty()
            && config.get_hostaddrs().is_empty()
            && config.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)));
        #[cfg(feature = "postgres-tls")]
        if let (Some(client), false) = (&self.client, sockets_only) {
            return client.connect(self.mode, &mut config);
        }
        let _ = sockets_only;
        config.ssl_mode(WireMode::Disable);
        config.connect(NoTls).map_err(|e| Error::Storage(unreachable_server(&e)))
    }
}

/// What a connection that failed for a reason other than TLS says.
fn unreachable_server(e: &postgres::Error) -> String {
    format!("could not connect to PostgreSQL ({}); is the server up and the url right?", said(e))
}

/// What `e` says: the server's own words when it refused, else the error and its causes
/// (tokio-postgres's text is only its kind: "db error", "error connecting to server").
fn said(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}
