//! TLS to a real `PostgreSQL` (`ssl = on`) with libpq's url parameters. The test binary makes an
//! authority, the server's certificate (for `localhost` only) and a client's (for the role
//! `cert`) signed by it, and another authority that signed nothing, at start, with rcgen. Its
//! server admits `postgres` in plain text (the harness's own connections) and every other role
//! over TLS only (`hostssl`), `cert` with a client certificate only. Which connections are
//! encrypted is read from `pg_stat_ssl`, so a test cannot pass over a plain connection.
#![cfg(feature = "postgres-tls")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::job;
use kathikon_core::pg::{PgConfig, PgStore};
use kathikon_core::{Ack, AckResult, Error, Jobs, Outcome};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The certificates, as PEM files a client reads.
struct Pki {
    /// Keeps the files.
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// The server's files: its certificate and key, and the authority for client certificates.
    server: Vec<(String, Vec<u8>)>,
}

fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

/// A certificate signed by `issuer`, for `names` (DNS) with `common_name`: its PEM and key.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let (ca_pem, ca) = authority("kathikon test authority");
        let (other_pem, _) = authority("another authority");
        let (server_cert, server_key) =
            leaf(&ca, &["localhost"], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(&ca, &[], "cert", ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.path().join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca_pem),
            other_ca: write("other-ca.pem", &other_pem),
            client_cert: write("client.crt", &client_cert),
            client_key: write("client.key", &client_key),
            server: vec![
                ("server.crt".into(), server_cert.into_bytes()),
                ("server.key".into(), server_key.into_bytes()),
                ("client-ca.crt".into(), ca_pem.into_bytes()),
            ],
            _dir: dir,
        }
    })
}

/// A fresh database on the TLS server and the server's port; `None` without a server.
fn database() -> Option<(String, u16)> {
    static ROLES: OnceLock<()> = OnceLock::new();
    let ready = common::pg::configure(|| common::pg::Setup {
        files: pki().server.clone(),
        settings: vec![
            "ssl = on".into(),
            "ssl_cert_file = 'server.crt'".into(),
            "ssl_key_file = 'server.key'".into(),
            "ssl_ca_file = 'client-ca.crt'".into(),
        ],
        hba: "local all all trust\n\
              host all postgres 127.0.0.1/32 trust\n\
              hostssl all cert 127.0.0.1/32 trust clientcert=verify-full\n\
              hostssl all all 127.0.0.1/32 trust\n"
            .into(),
    });
    if !ready {
        return None;
    }
    let url = common::pg::database()?;
    ROLES.get_or_init(|| {
        admin(&url)
            .batch_execute("CREATE ROLE app LOGIN SUPERUSER; CREATE ROLE cert LOGIN SUPERUSER")
            .unwrap();
    });
    // postgresql://postgres@127.0.0.1:PORT/NAME
    let (_, rest) = url.rsplit_once(':').unwrap();
    let (port, name) = rest.split_once('/').unwrap();
    Some((name.to_string(), port.parse().unwrap()))
}

/// The harness's plain connection to the database of `url`.
fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn admin_of(db: &str, port: u16) -> postgres::Client {
    admin(&format!("postgresql://postgres@127.0.0.1:{port}/{db}"))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Open a store at `url`, for one job inserted, claimed and acked.
fn open(url: &str) -> Result<PgStore, Error> {
    PgStore::open(PgConfig { poll_interval: Duration::from_millis(20), ..PgConfig::new(url) })
}

fn run_a_job(store: &PgStore) {
    let id = store.insert(vec![job("default", "tls")]).unwrap()[0].id;
    let claimed = store.claim("default", 1, Duration::from_secs(5)).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    let ack = Ack { id, attempt: claimed[0].attempt, outcome: Outcome::Complete };
    assert!(matches!(store.ack(vec![ack]).unwrap()[0], AckResult::Applied(_)));
}

/// Whether each of the connections to `db` that `role` holds is encrypted, once at least
/// `at_least` are open (a store's listener and upkeep connect from threads of their own).
fn encryption(db: &str, port: u16, role: &str, at_least: usize) -> Vec<bool> {
    let mut admin = admin_of(db, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = $1 AND a.usename = $2",
                &[&db, &role],
            )
            .unwrap();
        let found: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
        if found.len() >= at_least || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn storage_error(result: Result<PgStore, Error>) -> String {
    match result {
        Err(Error::Storage(text)) => text,
        Err(other) => panic!("not a storage error: {other:?}"),
        Ok(_) => panic!("the store opened"),
    }
}

fn configuration_error(result: Result<PgStore, Error>) -> String {
    match result {
        Err(Error::InvalidJob(text)) => text,
        Err(other) => panic!("not a configuration error: {other:?}"),
        Ok(_) => panic!("the store opened"),
    }
}

#[test]
fn verify_full_with_the_authority_encrypts_every_connection_of_the_store() {
    let Some((db, port)) = database() else { return };
    let url = format!(
        "postgresql://app@localhost:{port}/{db}?hostaddr=127.0.0.1&sslmode=verify-full\
         &sslrootcert={}",
        path(&pki().ca)
    );
    let store = open(&url).unwrap();
    run_a_job(&store);
    // The pool's connection, the listener's and the upkeep's: all of them over TLS.
    let ssl = encryption(&db, port, "app", 3);
    assert!(ssl.len() >= 3 && ssl.iter().all(|s| *s), "{ssl:?}");
    store.close();
    // The same in key=value form, and `kathikon migrate`'s connection.
    let url = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=app dbname={db} \
         sslmode=verify-full sslrootcert='{}'",
        path(&pki().ca)
    );
    kathikon_core::pg::schema::migrate_url(&url).unwrap();
    open(&url).unwrap().close();
}

#[test]
fn verify_full_refuses_a_host_the_certificate_does_not_name_and_verify_ca_accepts_it() {
    let Some((db, port)) = database() else { return };
    let url = |mode: &str| {
        format!(
            "postgresql://app@127.0.0.1:{port}/{db}?sslmode={mode}&sslrootcert={}",
            path(&pki().ca)
        )
    };
    let text = storage_error(open(&url("verify-full")));
    assert!(text.contains("TLS failed under sslmode=verify-full"), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    assert!(text.contains("sslmode=verify-ca"), "{text}");

    let store = open(&url("verify-ca")).unwrap();
    run_a_job(&store);
    assert!(encryption(&db, port, "app", 1).iter().all(|s| *s));
    store.close();
}

#[test]
fn verify_full_and_verify_ca_refuse_a_certificate_another_authority_signed() {
    let Some((db, port)) = database() else { return };
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!(
            "postgresql://app@localhost:{port}/{db}?hostaddr=127.0.0.1&sslmode={mode}\
             &sslrootcert={}",
            path(&pki().other_ca)
        );
        let text = storage_error(open(&url));
        assert!(text.contains(&format!("TLS failed under sslmode={mode}")), "{text}");
        assert!(text.contains("no authority in sslrootcert="), "{text}");
    }
}

#[test]
fn require_without_a_root_certificate_encrypts_without_checking() {
    let Some((db, port)) = database() else { return };
    if std::env::home_dir().is_some_and(|h| h.join(".postgresql/root.crt").exists()) {
        eprintln!("skipped: ~/.postgresql/root.crt exists, which makes require check the chain");
        return;
    }
    // A host the certificate does not name, signed by an authority the client does not know.
    let store = open(&format!("postgresql://app@127.0.0.1:{port}/{db}?sslmode=require")).unwrap();
    run_a_job(&store);
    assert!(encryption(&db, port, "app", 1).iter().all(|s| *s));
    store.close();
}

#[test]
fn prefer_the_default_encrypts_when_the_server_offers_tls() {
    let Some((db, port)) = database() else { return };
    if std::env::home_dir().is_some_and(|h| h.join(".postgresql/root.crt").exists()) {
        eprintln!("skipped: ~/.postgresql/root.crt exists, which makes prefer check the chain");
        return;
    }
    let store = open(&format!("postgresql://postgres@127.0.0.1:{port}/{db}")).unwrap();
    run_a_job(&store);
    let ssl = encryption(&db, port, "postgres", 2);
    // The harness's own plain connection is not the store's: the store's are the encrypted.
    assert!(ssl.iter().filter(|s| **s).count() >= 1, "{ssl:?}");
    store.close();
}

#[test]
fn prefer_falls_back_to_plain_text_when_the_handshake_fails_as_libpq() {
    let Some((db, port)) = database() else { return };
    let url = |role: &str| {
        format!(
            "postgresql://{role}@127.0.0.1:{port}/{db}?sslmode=prefer&sslrootcert={}",
            path(&pki().other_ca)
        )
    };
    // postgres may connect in plain text: it does, after the refused certificate.
    let store = open(&url("postgres")).unwrap();
    run_a_job(&store);
    store.close();
    // app may not: both failures are told.
    let text = storage_error(open(&url("app")));
    assert!(text.contains("no authority in sslrootcert="), "{text}");
    assert!(text.contains("then in plain text") && text.contains("no encryption"), "{text}");
}

#[test]
fn disable_is_refused_by_a_server_that_wants_tls_and_allow_then_uses_tls() {
    let Some((db, port)) = database() else { return };
    let url = |role: &str, mode: &str| {
        format!("postgresql://{role}@127.0.0.1:{port}/{db}?sslmode={mode}")
    };
    let text = storage_error(open(&url("app", "disable")));
    assert!(text.contains("no pg_hba.conf entry") && text.contains("no encryption"), "{text}");

    // allow: plain text first, TLS once the server refuses it.
    let store = open(&url("app", "allow")).unwrap();
    run_a_job(&store);
    assert!(encryption(&db, port, "app", 1).iter().all(|s| *s));
    store.close();
    // …and plain text where it is accepted.
    let store = open(&url("postgres", "allow")).unwrap();
    run_a_job(&store);
    let mut admin = admin_of(&db, port);
    let plain: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.application_name LIKE 'kathikon node %' AND NOT s.ssl",
            &[&db],
        )
        .unwrap()
        .get(0);
    assert!(plain >= 1, "{plain}");
    store.close();
}

#[test]
fn a_client_certificate_is_offered_to_a_server_that_asks_for_one() {
    let Some((db, port)) = database() else { return };
    let base = format!(
        "postgresql://cert@localhost:{port}/{db}?hostaddr=127.0.0.1&sslmode=verify-full\
         &sslrootcert={}",
        path(&pki().ca)
    );
    let store = open(&format!(
        "{base}&sslcert={}&sslkey={}",
        path(&pki().client_cert),
        path(&pki().client_key)
    ))
    .unwrap();
    run_a_job(&store);
    assert!(encryption(&db, port, "cert", 1).iter().all(|s| *s));
    store.close();

    let text = storage_error(open(&base));
    assert!(text.contains("certificate"), "{text}");
}

#[test]
fn bad_tls_settings_are_configuration_errors_that_name_the_value() {
    let Some((db, port)) = database() else { return };
    // A url that tokio-postgres refuses says why.
    let text = configuration_error(open(&format!("postgresql://app@localhost:{port}/{db}?nope=1")));
    assert!(text.contains("unknown option `nope`"), "{text}");
    let url = |query: &str| format!("postgresql://app@localhost:{port}/{db}?{query}");
    let cases = [
        ("sslmode=verify".to_string(), "sslmode=verify "),
        (
            "sslmode=require&sslrootcert=/nonexistent/ca.pem".into(),
            "sslrootcert=/nonexistent/ca.pem",
        ),
        ("sslmode=verify-full&sslrootcert=system&sslmode=require".into(), "sslrootcert=system"),
        ("sslcrl=/x.crl".into(), "sslcrl="),
        (
            format!("sslmode=require&sslrootcert={}", path(&pki().client_key)),
            "holds no certificate",
        ),
    ];
    for (query, named) in cases {
        let text = configuration_error(open(&url(&query)));
        assert!(text.contains(named), "{query}: {text}");
        let Err(Error::InvalidJob(_)) = kathikon_core::pg::schema::migrate_url(&url(&query)) else {
            panic!("{query}: migrate did not refuse it as a configuration error");
        };
    }
}

#[test]
fn over_a_unix_socket_sslmode_is_not_used_as_in_libpq() {
    let Some((db, port)) = database() else { return };
    let dir = common::pg::socket_dir().unwrap();
    let url = format!(
        "host={} port={port} user=app dbname={db} sslmode=verify-full sslrootcert={}",
        path(&dir),
        path(&pki().ca)
    );
    let store = open(&url).unwrap();
    run_a_job(&store);
    let ssl = encryption(&db, port, "app", 1);
    assert!(!ssl.is_empty() && ssl.iter().all(|s| !*s), "{ssl:?}");
    store.close();
    // (Its listener notices the close on its own, within 100 ms.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while !encryption(&db, port, "app", 0).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Over TCP TLS is used (here without sending a server name: sslsni=0).
    let url = format!(
        "host=127.0.0.1 port={port} user=app dbname={db} sslmode=require sslsni=0 \
         sslrootcert={}",
        path(&pki().ca)
    );
    let store = open(&url).unwrap();
    run_a_job(&store);
    assert!(encryption(&db, port, "app", 1).iter().all(|s| *s));
    store.close();
}
