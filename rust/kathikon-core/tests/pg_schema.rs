//! The `PostgreSQL` store's schema on a real server: created in its own `kathikon` schema
//! beside the application's tables, idempotent, safe when many processes migrate at once, and
//! refused with a typed error when a newer Kathikon migrated it; a store opened without
//! migrating refuses a database without the schema.
#![cfg(feature = "postgres")]

mod common;

use std::sync::{Arc, Barrier};

use kathikon_core::pg::schema::{self, SCHEMA_VERSION};
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::Error;
use postgres::{Client, NoTls};

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).expect("connect to the test database")
}

fn version(client: &mut Client) -> i64 {
    client.query_one("SELECT schema_version FROM kathikon.meta", &[]).unwrap().get(0)
}

#[test]
fn migrate_creates_the_schema_once_and_leaves_the_users_tables_alone() {
    let Some(url) = common::pg::database() else { return };
    let mut client = connect(&url);
    client
        .batch_execute("CREATE TABLE public.jobs (id int PRIMARY KEY); INSERT INTO jobs VALUES (7)")
        .unwrap();
    assert_eq!(schema::migrate(&mut client).unwrap(), 0, "a fresh database has no schema");
    assert_eq!(version(&mut client), SCHEMA_VERSION);
    assert_eq!(schema::migrate(&mut client).unwrap(), SCHEMA_VERSION, "a second run finds it");
    assert_eq!(version(&mut client), SCHEMA_VERSION);
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'kathikon' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "awaited",
            "batches",
            "crontab",
            "entries",
            "jobs",
            "limit_turns",
            "meta",
            "nodes",
            "rate_starts"
        ]
    );
    let theirs: i32 = client.query_one("SELECT id FROM public.jobs", &[]).unwrap().get(0);
    assert_eq!(theirs, 7, "the application's own jobs table is untouched");
    schema::check(&mut client).expect("the schema is the one this build knows");
}

#[test]
fn threads_migrating_at_once_apply_each_migration_once() {
    for _ in 0..3 {
        let Some(url) = common::pg::database() else { return };
        let threads = 4;
        let start = Arc::new(Barrier::new(threads));
        let found: Vec<i64> = (0..threads)
            .map(|_| {
                let (url, start) = (url.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut client = connect(&url);
                    start.wait();
                    schema::migrate(&mut client).expect("migrate while others do")
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        // Exactly one of them found no schema; the others found the one it made.
        assert_eq!(found.iter().filter(|v| **v == 0).count(), 1, "{found:?}");
        assert_eq!(found.iter().filter(|v| **v == SCHEMA_VERSION).count(), threads - 1);
        assert_eq!(version(&mut connect(&url)), SCHEMA_VERSION);
    }
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let Some(url) = common::pg::database() else { return };
    let mut client = connect(&url);
    schema::migrate(&mut client).unwrap();
    let newer = SCHEMA_VERSION + 1;
    client.execute("UPDATE kathikon.meta SET schema_version = $1", &[&newer]).unwrap();
    for result in [schema::migrate(&mut client).map(drop), schema::check(&mut client)] {
        match result {
            Err(e @ Error::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (newer, SCHEMA_VERSION));
                let text = e.to_string();
                assert!(text.contains(&format!("version {newer}")), "{text}");
                assert!(text.contains("upgrade kathikon"), "{text}");
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
    assert_eq!(version(&mut client), newer, "a newer schema is never downgraded");
    let refused = PgStore::open(PgConfig::new(url.clone())).err();
    assert!(matches!(refused, Some(Error::SchemaTooNew { .. })), "{refused:?}");
}

#[test]
fn opening_without_migrating_refuses_a_database_without_the_schema() {
    let Some(url) = common::pg::database() else { return };
    let refused = PgStore::open(PgConfig { migrate: false, ..PgConfig::new(url.clone()) }).err();
    match refused {
        Some(e @ Error::SchemaTooOld { found: 0, supported: SCHEMA_VERSION }) => {
            assert!(e.to_string().contains("kathikon migrate"), "{e}");
        }
        other => panic!("expected SchemaTooOld, got {other:?}"),
    }
    PgStore::open(PgConfig::new(url.clone())).expect("open, migrating");
    PgStore::open(PgConfig { migrate: false, ..PgConfig::new(url) }).expect("open, migrated");
}

#[test]
fn a_bad_url_is_refused_naming_the_fix() {
    match PgStore::open(PgConfig::new("postgresql://host:notaport/db")).err() {
        Some(Error::InvalidJob(text)) => assert!(text.contains("postgresql://"), "{text}"),
        other => panic!("expected InvalidJob, got {other:?}"),
    }
}
