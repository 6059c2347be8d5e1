//! The versioned schema: the migrations, in order, and [`migrate`], which creates or upgrades
//! the `kathikon` schema of a database.
//!
//! `kathikon.meta` holds one row, the schema version: the number of migrations applied. A
//! migration runs in the same transaction as the version's update, under a transaction-level
//! advisory lock, so processes that migrate at once (every node of a deploy starting) apply
//! each migration exactly once: the second waits for the first's commit, then finds nothing
//! left to do. A database migrated by a newer Kathikon is refused ([`Error::SchemaTooNew`]),
//! never downgraded.

use postgres::Client;

use crate::error::{Error, Result};

/// The migrations, in order: migration `i` (from 0) takes the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_jobs_nodes_entries.sql"),
    include_str!("migrations/002_node_claimers.sql"),
    include_str!("migrations/003_crontab.sql"),
    include_str!("migrations/004_limits.sql"),
    include_str!("migrations/005_results.sql"),
    include_str!("migrations/006_batches.sql"),
];

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock every migration holds (the ASCII of "kathikon", as a number): one key
/// for the whole schema, so migrations of the same database never run at once.
const MIGRATION_LOCK: i64 = 0x6b61_7468_696b_6f6e;

/// The statements that make sure the version table exists; idempotent, run under the lock.
const META: &str = "CREATE SCHEMA IF NOT EXISTS kathikon;
    CREATE TABLE IF NOT EXISTS kathikon.meta (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        schema_version bigint NOT NULL
    );";

/// Create or upgrade the `kathikon` schema of the database `client` is connected to, in one
/// transaction; returns the version it had before (0: none). Idempotent; safe to run from
/// many processes at once.
pub fn migrate(client: &mut Client) -> Result<i64> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(META)?;
    let found: i64 =
        tx.query_opt("SELECT schema_version FROM kathikon.meta", &[])?.map_or(0, |row| row.get(0));
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    for sql in &MIGRATIONS[found as usize..] {
        tx.batch_execute(sql)?;
    }
    if found < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO kathikon.meta (schema_version) VALUES ($1)
             ON CONFLICT (only_row) DO UPDATE SET schema_version = excluded.schema_version",
            &[&SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(found)
}

/// [`migrate`] the database at `url` (a `postgresql://` URL or a `key=value` string) on a
/// connection of its own.
pub fn migrate_url(url: &str) -> Result<i64> {
    let connections = super::connection::Connections::new(url)?;
    let mut client = connections.connect()?;
    migrate(&mut client)
}

/// Check, without changing anything, that the database holds exactly the schema this build
/// knows: an older or missing one asks for a migration, a newer one for an upgrade.
pub fn check(client: &mut Client) -> Result<()> {
    let found: i64 = match client.query_opt("SELECT schema_version FROM kathikon.meta", &[]) {
        Ok(row) => row.map_or(0, |row| row.get(0)),
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(e.into()),
    };
    match found.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => {
            Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION })
        }
        std::cmp::Ordering::Less => Err(Error::SchemaTooOld { found, supported: SCHEMA_VERSION }),
    }
}
