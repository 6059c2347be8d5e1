//! A private `PostgreSQL` server for tests: one per test binary, started on first use from
//! Debian's server binaries (`/usr/lib/postgresql/*/bin`), listening on 127.0.0.1 on a free
//! port and on a socket in its own data directory, and stopped by PID (SIGTERM, then a wait)
//! when the test binary exits. Each test gets a fresh database of its own ([`database`]).
//!
//! `initdb` refuses to run as root, so under root the server runs as Debian's `postgres` user
//! (the data directory is handed to it). Without the binaries a test skips with a message
//! naming what is missing; under `CI` (where `make postgres` installs them) it fails instead.
//!
//! The cluster runs with `fsync=off`: it is thrown away with the test binary, and every other
//! behaviour (transactions, locks, `SKIP LOCKED`) is the real server's.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The running server: its port and data directory, and what starts it again.
struct Server {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

/// What a test binary's server starts with beyond the defaults (see [`configure`]).
pub struct Setup {
    /// Files written into the data directory by name (owned by the server's user, mode 0600,
    /// as `PostgreSQL` wants of a key), for settings to name relative to it.
    pub files: Vec<(String, Vec<u8>)>,
    /// Lines appended to `postgresql.conf` (`name = 'value'`).
    pub settings: Vec<String>,
    /// `pg_hba.conf` instead of initdb's. It must let `postgres` connect over TCP in plain
    /// text, as this module's own connections do.
    pub hba: String,
}

/// The setup of this test binary's server, given by [`configure`] before its start.
static SETUP: OnceLock<Setup> = OnceLock::new();

/// The server's PID, for the exit handler (0: none running).
static SERVER_PID: AtomicI32 = AtomicI32::new(0);
/// Its data directory, removed by the exit handler.
static SERVER_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The server of this test binary, started on first use; `Err` says why there is none.
fn server() -> &'static Result<Server, String> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// The directory holding Debian's `PostgreSQL` server binaries (the newest version installed).
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The uid and gid to run the server as: `postgres`'s when this process is root (initdb
/// refuses root), else none (run as ourselves).
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: getpwnam reads a NUL-terminated name; the returned record is read at once,
    // before any other call could reuse its static buffer (tests start the server once).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root, and there is no `postgres` user to run PostgreSQL as \
                    (initdb refuses root); install Debian's postgresql package (make postgres)"
            .into());
    }
    // SAFETY: pw is a valid passwd record (checked non-null above).
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn chown_to(path: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {} to postgres: {e}", path.display()))?;
    }
    Ok(())
}

fn command(bin: &Path, program: &str, owner: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(bin.join(program));
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command.env("LC_ALL", "C.UTF-8").env("LANG", "C.UTF-8");
    command
}

fn start() -> Result<Server, String> {
    let bin = bin_dir().ok_or_else(|| {
        "PostgreSQL's server binaries are missing (no /usr/lib/postgresql/*/bin/postgres and \
         initdb); install Debian's postgresql package: make postgres"
            .to_string()
    })?;
    let owner = run_as()?;
    let dir = tempfile::Builder::new()
        .prefix("kathikon-pg-")
        .tempdir()
        .map_err(|e| format!("a temporary directory for PostgreSQL: {e}"))?
        .keep();
    *SERVER_DIR.lock().unwrap() = Some(dir.clone());
    chown_to(&dir, owner)?;
    let data = dir.join("data");
    let out = command(&bin, "initdb", owner)
        .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"])
        .arg(&data)
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    if let Some(setup) = SETUP.get() {
        apply(setup, &data, owner)?;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("find a free port: {e}"))?
        .port();
    spawn(&bin, owner, &dir, port)?;
    // SAFETY: stop_server is an extern "C" fn without arguments, as atexit requires.
    unsafe { libc::atexit(stop_server) };
    Ok(Server { port, dir, bin, owner })
}

/// Write `setup`'s files and configuration into the cluster at `data`.
fn apply(setup: &Setup, data: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    for (name, bytes) in &setup.files {
        let path = data.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        chown_to(&path, owner)?;
    }
    let conf = data.join("postgresql.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| f.write_all(format!("\n{}\n", setup.settings.join("\n")).as_bytes()))
        .map_err(|e| format!("append to {}: {e}", conf.display()))?;
    std::fs::write(data.join("pg_hba.conf"), &setup.hba)
        .map_err(|e| format!("write pg_hba.conf: {e}"))
}

/// Start the server on `dir`'s cluster at `port` and wait until it accepts connections; its
/// PID is kept for the exit handler.
fn spawn(bin: &Path, owner: Option<(u32, u32)>, dir: &Path, port: u16) -> Result<(), String> {
    let data = dir.join("data");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .map_err(|e| format!("open the server log: {e}"))?;
    let mut server = command(bin, "postgres", owner);
    server
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(dir)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // Spawned from a thread that lives as long as the process, with the parent-death signal
    // set: should the test binary die without running its exit handler, the server follows.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; it runs in the child after the uid change
            // (which would clear the setting), before exec.
            unsafe {
                server.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let spawned = server.spawn().map(|child| child.id());
            let _ = tx.send(spawned);
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("start the server's thread: {e}"))?;
    let pid = rx
        .recv()
        .map_err(|e| format!("start postgres: {e}"))?
        .map_err(|e| format!("start postgres: {e}"))?;
    SERVER_PID.store(pid as i32, Ordering::SeqCst);

    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match postgres::Client::connect(&url, postgres::NoTls) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not accept connections in 60 s ({e}): {log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(())
}

/// Stop this test binary's server the way a crash would (SIGQUIT: an immediate shutdown, no
/// checkpoint; it recovers from its log at the next start), wait `down`, and start it again
/// on the same port and cluster; returns once it accepts connections again.
pub fn restart(down: Duration) {
    let server = server().as_ref().expect("a running server");
    let pid = SERVER_PID.swap(0, Ordering::SeqCst);
    assert!(pid > 0, "no server to restart");
    // SAFETY: pid is the server we spawned (our child); kill and waitpid have no other
    // preconditions.
    unsafe {
        libc::kill(pid, libc::SIGQUIT);
        let mut status = 0;
        libc::waitpid(pid, &raw mut status, 0);
    }
    std::thread::sleep(down);
    spawn(&server.bin, server.owner, &server.dir, server.port)
        .unwrap_or_else(|e| panic!("restart PostgreSQL: {e}"));
}

/// Stop the server by PID: SIGTERM (a smart shutdown), wait for it to be gone, then remove its
/// directory. Runs when the test binary exits.
extern "C" fn stop_server() {
    let pid = SERVER_PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: pid is the server we spawned (our child); kill and waitpid have no other
        // preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            let mut status = 0;
            libc::waitpid(pid, &raw mut status, 0);
        }
    }
    if let Ok(mut dir) = SERVER_DIR.lock() {
        if let Some(dir) = dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether this test binary has a `PostgreSQL` server (starting it on first call). Without one
/// it says why on stderr and answers `false`, for the test to skip, unless `CI` is set: then
/// a missing `PostgreSQL` fails the test.
pub fn available() -> bool {
    match server() {
        Ok(_) => true,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {why}");
            false
        }
        Err(why) => panic!("PostgreSQL is required under CI: {why}"),
    }
}

/// Whether this test binary has a `PostgreSQL` server started with `setup` (made on the first
/// call, before the server starts; a later call's is not made, as the server runs already).
/// Without a server, as [`available`].
pub fn configure(setup: impl FnOnce() -> Setup) -> bool {
    SETUP.get_or_init(setup);
    available()
}

/// The directory of the test binary's server's Unix socket, once it runs.
pub fn socket_dir() -> Option<PathBuf> {
    server().as_ref().ok().map(|server| server.dir.clone())
}

/// A fresh, empty database on the test binary's server, as a connection URL; `None` (after
/// saying why) when there is no server and `CI` is unset (see [`available`]).
pub fn database() -> Option<String> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if !available() {
        return None;
    }
    let Ok(server) = server() else { return None };
    let name = format!("test_{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let admin = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", server.port);
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to the test server ({}): {e}", server.dir.display()));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    Some(format!("postgresql://postgres@127.0.0.1:{}/{name}", server.port))
}

/// A store on the database at `url`, on `clock`, renewing its lease and doing its rounds every
/// 10 ms, so a test sees the upkeep's work soon after it moves the clock.
pub fn ticking_node(
    url: &str,
    clock: &std::sync::Arc<kathikon_core::clock::ManualClock>,
) -> kathikon_core::pg::PgStore {
    kathikon_core::pg::PgStore::open(kathikon_core::pg::PgConfig {
        clock: clock.clone(),
        heartbeat: Some(Duration::from_millis(10)),
        tick: Duration::from_millis(10),
        ..kathikon_core::pg::PgConfig::new(url)
    })
    .expect("open the PostgreSQL store")
}
