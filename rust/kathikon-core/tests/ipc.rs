//! The owner's socket, end to end on real stores and real Unix sockets: every call answered
//! as the engine would answer it, claims rescued when a client's connections drop or its
//! lease runs out, late acks fenced, bad frames closing only their own connection.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{job, open, scratch_dir, store_path};
use kathikon_core::ipc::frame::{self, PROTOCOL_VERSION};
use kathikon_core::ipc::protocol::{Request, Response};
use kathikon_core::ipc::{socket_path, Client, ClientConfig, Server};
use kathikon_core::Jobs;
use kathikon_core::{Ack, AckResult, Engine, Error, JobState, ListFilter, Outcome};
use proptest::prelude::*;

struct Owned {
    engine: Arc<Engine>,
    server: Server,
    store: PathBuf,
    _dir: tempfile::TempDir,
}

fn serve() -> Owned {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let engine = Arc::new(open(&path));
    let store = std::fs::canonicalize(&path).unwrap();
    let server = Server::start(engine.clone(), &store).unwrap();
    Owned { engine, server, store, _dir: dir }
}

fn client(store: &Path, lease: Duration) -> Client {
    Client::connect(&ClientConfig {
        store: store.to_path_buf(),
        lease,
        connect_timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection speaking raw frames, for what a well-behaved client never sends.
struct Raw(UnixStream);

impl Raw {
    fn connect(store: &Path) -> Raw {
        Raw(UnixStream::connect(socket_path(store)).unwrap())
    }

    fn send(&mut self, request: &Request) {
        let mut buf = Vec::new();
        frame::encode(request, &mut buf).unwrap();
        self.0.write_all(&buf).unwrap();
    }

    fn recv(&mut self) -> Option<Response> {
        let mut payload = Vec::new();
        frame::read_frame(&mut self.0, &mut payload).ok()?;
        Some(frame::decode(&payload).unwrap())
    }

    fn call(&mut self, request: &Request) -> Response {
        self.send(request);
        self.recv().expect("the owner answers")
    }

    fn hello(store: &Path, session: u64, lease_ms: u64) -> Raw {
        let mut raw = Raw::connect(store);
        let hello = Request::Hello { version: PROTOCOL_VERSION, pid: 4242, session, lease_ms };
        match raw.call(&hello) {
            Response::Hello { version, owner_pid } => {
                assert_eq!(version, PROTOCOL_VERSION);
                assert_eq!(owner_pid, std::process::id());
            }
            other => panic!("hello answered with {other:?}"),
        }
        raw
    }

    /// Whether the owner closed this connection (reads end) within a second.
    fn closed_by_owner(&mut self) -> bool {
        self.0.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut byte = [0u8; 1];
        matches!(self.0.read(&mut byte), Ok(0))
    }
}

#[test]
fn every_call_through_the_socket_answers_as_the_engine_does() {
    let owned = serve();
    let c = client(&owned.store, Duration::from_secs(30));
    let inserted = c.insert(vec![job("default", "w"), job("default", "w")]).unwrap();
    assert_eq!(inserted.len(), 2);
    // Durable and visible at the owner the moment insert returns.
    assert_eq!(owned.engine.get(inserted[0].id).unwrap(), inserted[0]);
    assert_eq!(c.get(inserted[1].id).unwrap(), inserted[1]);
    assert_eq!(c.ready_count("default").unwrap(), 2);

    let claimed = c.claim("default", 10, Duration::from_secs(1)).unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![inserted[0].id, inserted[1].id]
    );
    assert!(claimed.iter().all(|j| j.state == JobState::Executing && j.attempt == 1));

    let acks = vec![
        Ack { id: claimed[0].id, attempt: 1, outcome: Outcome::Complete },
        Ack {
            id: claimed[1].id,
            attempt: 1,
            outcome: Outcome::Fail { error: "boom".into(), retry_in: Some(0) },
        },
    ];
    let results = c.ack(acks).unwrap();
    assert!(matches!(&results[0], AckResult::Applied(j) if j.state == JobState::Completed));
    assert!(matches!(&results[1], AckResult::Applied(j) if j.state == JobState::Retryable));

    let listed = c.list(&ListFilter { state: Some(JobState::Completed), ..ListFilter::default() });
    assert_eq!(listed.unwrap().len(), 1);
    // The failed job is due at once: the sync lets its promotion commit, so both ends read
    // the counts of one settled store (without it the promotion may land between the reads).
    c.sync().unwrap();
    let counts = c.counts().unwrap();
    assert_eq!(counts, owned.engine.counts().unwrap());

    // Typed errors cross the socket as what they are.
    assert!(matches!(c.get(999), Err(Error::JobNotFound(999))));
    let (cancelled, before) = c.cancel(inserted[1].id).unwrap();
    // Retried with no delay: promoted by the next commit, before the cancel in it.
    assert_eq!((cancelled.state, before), (JobState::Cancelled, JobState::Available));
    let bad = kathikon_core::NewJob { max_attempts: 0, ..job("default", "w") };
    assert!(matches!(c.insert(vec![bad]), Err(Error::InvalidJob(m)) if m.contains("max_attempts")));
    let again = c.retry(inserted[1].id).unwrap();
    assert_eq!(again.state, JobState::Available);
    let claimed = c.claim("default", 1, Duration::from_secs(1)).unwrap();
    assert!(matches!(
        c.retry(claimed[0].id),
        Err(Error::IllegalTransition { action: "retried", from: JobState::Executing, .. })
    ));
    c.ack_nowait(vec![Ack { id: claimed[0].id, attempt: 2, outcome: Outcome::Complete }]).unwrap();
    c.sync().unwrap();
    assert_eq!(owned.engine.get(claimed[0].id).unwrap().state, JobState::Completed);
    assert_eq!(c.prune(Duration::ZERO).unwrap(), 2);
}

#[test]
fn a_claim_waits_at_the_owner_and_is_woken_by_an_insert() {
    let owned = serve();
    let c = Arc::new(client(&owned.store, Duration::from_secs(30)));
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            (c.claim("default", 1, Duration::from_secs(5)).unwrap(), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    owned.engine.insert(vec![job("default", "w")]).unwrap();
    let (claimed, took) = waiter.join().unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // An interrupt ends a waiting claim within one slice, empty.
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || c.claim("default", 1, Duration::from_secs(30)).unwrap())
    };
    std::thread::sleep(Duration::from_millis(50));
    let asked = Instant::now();
    c.interrupt("default");
    assert!(waiter.join().unwrap().is_empty());
    assert!(asked.elapsed() < Duration::from_secs(1));
}

#[test]
fn jobs_held_by_a_client_that_disconnects_are_rescued_at_once() {
    let owned = serve();
    let ids: Vec<u64> = owned
        .engine
        .insert(vec![job("default", "w"), job("default", "w"), job("default", "w")])
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    let c = client(&owned.store, Duration::from_secs(30));
    let claimed = c.claim("default", 2, Duration::from_secs(1)).unwrap();
    assert_eq!(claimed.len(), 2);
    c.ack(vec![Ack { id: claimed[1].id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    drop(c); // every connection closes, as when the process dies
    wait_for("the rescue", || {
        owned.engine.get(claimed[0].id).unwrap().state == JobState::Available
    });
    let rescued = owned.engine.get(claimed[0].id).unwrap();
    let entry = &rescued.errors.last().unwrap().error;
    assert!(entry.starts_with("rescued: worker process"), "{entry}");
    assert!(entry.contains("disconnected") && entry.contains("during attempt 1"), "{entry}");
    // The completed one stays completed; the unclaimed one was never touched.
    assert_eq!(owned.engine.get(claimed[1].id).unwrap().state, JobState::Completed);
    assert!(owned.engine.get(ids[2]).unwrap().errors.is_empty());
    // The rescued job runs again, attempt 2.
    let again = owned.engine.claim("default", 3, Duration::from_secs(1)).unwrap();
    assert!(again.iter().any(|j| j.id == claimed[0].id && j.attempt == 2));
}

#[test]
fn a_quiet_session_loses_its_jobs_at_lease_expiry_and_its_late_ack_is_fenced() {
    let owned = serve();
    let id = owned.engine.insert(vec![job("default", "w")]).unwrap()[0].id;
    // A raw session with a 150 ms lease and no heartbeat: a frozen process.
    let mut frozen = Raw::hello(&owned.store, 77, 150);
    let Response::Jobs(claimed) =
        frozen.call(&Request::Claim { queue: "default".into(), max: 1, timeout_ms: 1000 })
    else {
        panic!("claim failed")
    };
    assert_eq!(claimed[0].id, id);
    wait_for("the lease to expire", || owned.engine.get(id).unwrap().state == JobState::Available);
    let rescued = owned.engine.get(id).unwrap();
    assert!(rescued.errors[0].error.contains("stopped renewing its lease"), "{:?}", rescued.errors);
    // Another worker takes it (attempt 2) and completes it.
    let newer = owned.engine.claim("default", 1, Duration::from_secs(1)).unwrap();
    assert_eq!(newer[0].attempt, 2);
    let late =
        Ack { id, attempt: 1, outcome: Outcome::Fail { error: "late".into(), retry_in: None } };
    // The frozen process wakes up and reports attempt 1: refused, whatever the job's state.
    let Response::Acks(results) =
        frozen.call(&Request::Ack { acks: vec![late.clone()], wait: true })
    else {
        panic!("ack failed")
    };
    assert_eq!(results, vec![AckResult::Stale(Some(JobState::Executing))]);
    owned.engine.ack(vec![Ack { id, attempt: 2, outcome: Outcome::Complete }]).unwrap();
    let Response::Acks(results) = frozen.call(&Request::Ack { acks: vec![late], wait: true })
    else {
        panic!("ack failed")
    };
    assert_eq!(results, vec![AckResult::Stale(Some(JobState::Completed))]);
    let done = owned.engine.get(id).unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Completed, 2));
    let fenced: Vec<_> = done.errors.iter().filter(|e| e.error.starts_with("fenced:")).collect();
    assert_eq!(fenced.len(), 2, "{:?}", done.errors);
    assert!(fenced.iter().all(|e| e.attempt == 1 && e.error.contains("'failed'")));
}

#[test]
fn a_session_that_keeps_talking_keeps_its_jobs_past_the_lease() {
    let owned = serve();
    let id = owned.engine.insert(vec![job("default", "w")]).unwrap()[0].id;
    // The real client: its heartbeat thread renews a 150 ms lease.
    let c = client(&owned.store, Duration::from_millis(150));
    c.claim("default", 1, Duration::from_secs(1)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(owned.engine.get(id).unwrap().state, JobState::Executing);
    let results = c.ack(vec![Ack { id, attempt: 1, outcome: Outcome::Complete }]).unwrap();
    assert!(matches!(&results[0], AckResult::Applied(j) if j.state == JobState::Completed));
}

#[test]
fn a_malformed_or_oversized_frame_closes_only_its_own_connection() {
    let owned = serve();
    let good = client(&owned.store, Duration::from_secs(30));
    let id = good.insert(vec![job("default", "w")]).unwrap()[0].id;

    // Garbage where the hello should be.
    let mut raw = Raw::connect(&owned.store);
    raw.0.write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff]).unwrap();
    assert!(raw.closed_by_owner());
    // A length prefix past the limit, after a good hello: closed without reading on.
    let mut raw = Raw::hello(&owned.store, 1, 30_000);
    raw.0.write_all(&(u32::MAX).to_le_bytes()).unwrap();
    assert!(raw.closed_by_owner());
    // A well-framed message that is not a request.
    let mut raw = Raw::hello(&owned.store, 2, 30_000);
    raw.0.write_all(&[2, 0, 0, 0, 200, 1]).unwrap();
    assert!(raw.closed_by_owner());
    // A second hello on an open connection is refused with an error, not a crash.
    let mut raw = Raw::hello(&owned.store, 3, 30_000);
    let again = Request::Hello { version: PROTOCOL_VERSION, pid: 1, session: 3, lease_ms: 1 };
    assert!(matches!(raw.call(&again), Response::Error(_)));

    // Everyone else carries on.
    assert_eq!(good.get(id).unwrap().id, id);
    assert_eq!(owned.engine.get(id).unwrap().state, JobState::Available);
}

#[test]
fn another_protocol_version_is_refused_with_both_versions_named() {
    let owned = serve();
    let mut raw = Raw::connect(&owned.store);
    let hello =
        Request::Hello { version: PROTOCOL_VERSION + 1, pid: 1, session: 9, lease_ms: 1000 };
    match raw.call(&hello) {
        Response::Error(e) => {
            let text = Error::from(e).to_string();
            assert!(text.contains(&format!("protocol {}", PROTOCOL_VERSION + 1)), "{text}");
            assert!(text.contains(&format!("speaks {PROTOCOL_VERSION}")), "{text}");
        }
        other => panic!("answered {other:?}"),
    }
    assert!(raw.closed_by_owner());
}

#[test]
fn a_stopped_owner_leaves_clients_with_a_clear_error_not_a_hang() {
    let mut owned = serve();
    let c = client(&owned.store, Duration::from_secs(30));
    let id = c.insert(vec![job("default", "w")]).unwrap()[0].id;
    owned.server.stop();
    let started = Instant::now();
    let err = c.get(id).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, Error::OwnerGone { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("pid {}", std::process::id())) && text.contains("retry"),
        "{text}"
    );
    // Later calls fail the same way at once.
    assert!(matches!(c.counts(), Err(Error::OwnerGone { .. })));
    assert!(!socket_path(&owned.store).exists(), "the socket file is removed on stop");
}

#[test]
fn an_owner_whose_directory_was_deleted_still_stops_at_once() {
    // A script that removes its temporary directory before closing the app (an exception
    // inside `with TemporaryDirectory()`) takes the socket file with it; stopping must not
    // need it.
    let mut owned = serve();
    let c = client(&owned.store, Duration::from_secs(30));
    c.insert(vec![job("default", "w")]).unwrap();
    std::fs::remove_dir_all(owned.store.parent().unwrap()).unwrap();
    let (done, stopped) = std::sync::mpsc::channel();
    let stopping = std::thread::spawn(move || {
        owned.server.stop();
        done.send(()).unwrap();
    });
    assert!(
        stopped.recv_timeout(Duration::from_secs(5)).is_ok(),
        "stop() hung with the socket file gone"
    );
    stopping.join().unwrap();
}

#[test]
fn the_socket_is_owner_only_and_beside_the_store_even_in_a_long_directory() {
    let dir = scratch_dir();
    let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    let path = deep.join("jobs.redb");
    let engine = Arc::new(open(&path));
    let store = std::fs::canonicalize(&path).unwrap();
    assert!(socket_path(&store).as_os_str().len() > 108, "the path must exceed sun_path");
    let _server = Server::start(engine.clone(), &store).unwrap();
    let sock = socket_path(&store);
    assert_eq!(sock.parent(), store.parent());
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let c = client(&store, Duration::from_secs(30));
    assert_eq!(c.insert(vec![job("default", "w")]).unwrap().len(), 1);
}

#[test]
fn a_batch_too_large_for_a_frame_is_refused_before_sending() {
    let owned = serve();
    let c = client(&owned.store, Duration::from_secs(30));
    let big = "x".repeat(1 << 20);
    let jobs: Vec<_> = (0..70)
        .map(|_| kathikon_core::NewJob { args: format!("\"{big}\""), ..job("default", "w") })
        .collect();
    let err = c.insert(jobs).unwrap_err();
    assert!(matches!(&err, Error::InvalidJob(m) if m.contains("smaller batches")), "{err:?}");
    // The connection is still good and nothing was inserted.
    assert_eq!(c.counts().unwrap(), Vec::new());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Any bytes, as a request or a response payload, or as a stream of frames: decoded or
    /// refused, never a panic; a request that decodes survives a round trip.
    #[test]
    fn the_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(request) = frame::decode::<Request>(&bytes) {
            let mut buf = Vec::new();
            frame::encode(&request, &mut buf).unwrap();
            prop_assert_eq!(frame::decode::<Request>(&buf[4..]).unwrap(), request);
        }
        let _ = frame::decode::<Response>(&bytes);
        let mut stream = bytes.as_slice();
        let mut payload = Vec::new();
        while frame::read_frame(&mut stream, &mut payload).is_ok() {
            let _ = frame::decode::<Request>(&payload);
        }
    }
}
