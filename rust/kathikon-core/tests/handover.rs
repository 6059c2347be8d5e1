//! Owner changes under load: an insert carries a request id that the store keeps with its
//! jobs, so one sent again (to the same owner, to a reopened store, after a crash) is
//! answered with the jobs already stored; and a client inserting in a loop while its owner —
//! a real other process — stops gracefully or is killed (`SIGKILL`) gets every insert stored exactly
//! once, and takes the store over itself.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, job, scratch_dir, store_path, T0};
use kathikon_core::clock::ManualClock;
use kathikon_core::ipc::frame::{self, PROTOCOL_VERSION};
use kathikon_core::ipc::protocol::{Request, Response};
use kathikon_core::ipc::{socket_path, Node, NodeConfig, Role, Server};
use kathikon_core::{Engine, EngineConfig, Jobs, ListFilter, NewJob, RequestId, REQUEST_MEMORY};

fn numbered(n: usize) -> NewJob {
    NewJob { args: format!("{{\"n\":{n}}}"), ..job("default", "w") }
}

fn ids(jobs: &[kathikon_core::Job]) -> Vec<u64> {
    jobs.iter().map(|j| j.id).collect()
}

fn stored(engine: &dyn Jobs) -> usize {
    engine.list(&ListFilter::default()).unwrap().len()
}

/// One raw frame round trip on a connection that said hello.
fn round_trip(stream: &mut UnixStream, request: &Request) -> Response {
    let mut buf = Vec::new();
    frame::encode(request, &mut buf).unwrap();
    stream.write_all(&buf).unwrap();
    frame::read_frame(stream, &mut buf).unwrap();
    frame::decode(&buf).unwrap()
}

#[test]
fn an_insert_sent_twice_with_one_request_id_is_stored_once() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let engine = Arc::new(Engine::open(config(&path)).unwrap());
    let store = std::fs::canonicalize(&path).unwrap();
    let _server = Server::start(engine.clone(), &store).unwrap();
    let mut stream = UnixStream::connect(socket_path(&store)).unwrap();
    let hello = Request::Hello { version: PROTOCOL_VERSION, pid: 7, session: 1, lease_ms: 30_000 };
    assert!(matches!(round_trip(&mut stream, &hello), Response::Hello { .. }));

    let request = RequestId::new();
    let insert = Request::Insert { jobs: vec![numbered(1), numbered(2)], request };
    let Response::Jobs(first) = round_trip(&mut stream, &insert) else { panic!("no jobs") };
    let Response::Jobs(again) = round_trip(&mut stream, &insert) else { panic!("no jobs") };
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(stored(&*engine), 2);
    // Another request id with the same jobs is another insert.
    let other = Request::Insert { jobs: vec![numbered(1)], request: RequestId::new() };
    let Response::Jobs(third) = round_trip(&mut stream, &other) else { panic!("no jobs") };
    assert!(third[0].id > first[1].id);
    assert_eq!(stored(&*engine), 3);
    // An owner-local insert carries none and is never taken for a resend.
    engine.insert(vec![numbered(1), numbered(2)]).unwrap();
    assert_eq!(stored(&*engine), 5);
}

#[test]
fn a_request_id_survives_a_clean_close_and_a_crash() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let request = RequestId::new();
    let engine = Engine::open(config(&path)).unwrap();
    let first = engine.insert_once(request, vec![numbered(1), numbered(2), numbered(3)]).unwrap();
    // A crash now: the store file and its log as they are while the engine holds them (the
    // insert is in the log only, not yet checkpointed into the file).
    let crashed = dir.path().join("crashed.redb");
    std::fs::write(&crashed, std::fs::read(&path).unwrap()).unwrap();
    let log = |p: &Path| PathBuf::from(format!("{}-wal", p.display()));
    std::fs::write(log(&crashed), std::fs::read(log(&path)).unwrap()).unwrap();
    engine.close();

    for store in [&path, &crashed] {
        let engine = Engine::open(config(store)).unwrap();
        let again = engine.insert_once(request, vec![numbered(1), numbered(2), numbered(3)]);
        assert_eq!(ids(&again.unwrap()), ids(&first), "{}", store.display());
        assert_eq!(stored(&engine), 3);
        engine.close();
        common::assert_indexes_match_records(store);
    }
}

#[test]
fn a_request_id_is_forgotten_after_its_memory() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(EngineConfig {
        path: Some(path.clone()),
        prune_interval: Duration::from_millis(10),
        clock: clock.clone(),
        ..EngineConfig::default()
    })
    .unwrap();
    // Made at the engine's time, as a client on this machine makes them.
    let request = RequestId { at: T0, nonce: 1 };
    let first = ids(&engine.insert_once(request, vec![numbered(1)]).unwrap());
    engine.sync().unwrap();
    assert_eq!(ids(&engine.insert_once(request, vec![numbered(1)]).unwrap()), first);
    clock.advance(REQUEST_MEMORY.as_micros() as i64 + 1_000_000);
    // The pruner forgets it within a few of its steps; a resend is then a new insert.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        engine.sync().unwrap(); // a batch of the writer thread, where the pruner steps
        let now = ids(&engine.insert_once(request, vec![numbered(1)]).unwrap());
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "the request id was never forgotten");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(stored(&engine), 2);
}

/// The owner, run as a child process of this test binary: opens the store, says so, then
/// closes it when told to (its stdin says "stop"), or is killed. Not a test of its own.
#[test]
#[ignore = "the owner process of the handover tests, which start it"]
fn owner_process() {
    let Ok(path) = std::env::var("KATHIKON_TEST_OWNER") else { return };
    let node = Node::open(NodeConfig { engine: config(Path::new(&path)), ..NodeConfig::default() })
        .unwrap();
    assert_eq!(node.role(), Role::Owner);
    // The parent reads this line from a pipe: the test harness's own output goes there too.
    let mut out = std::io::stdout();
    writeln!(out, "owner ready").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    node.close();
}

fn spawn_owner(path: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "owner_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env("KATHIKON_TEST_OWNER", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("owner ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the owner process exited early");
    }
    // Keep reading, so the owner's last output finds its pipe open.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

/// Four threads of a client insert numbered jobs (singly and three at a time) while the
/// owner process goes away (`stop`); every insert must succeed, and each number be stored
/// exactly once, under the id its insert returned.
fn inserts_ride_through_an_owner_change(stop: impl FnOnce(&mut Child)) {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let mut owner = spawn_owner(&path);
    let node = Arc::new(
        Node::open(NodeConfig { engine: config(&path), ..NodeConfig::default() }).unwrap(),
    );
    assert_eq!(node.role(), Role::Client);
    let takeovers = Arc::new(Mutex::new(Vec::new()));
    {
        let takeovers = takeovers.clone();
        node.on_takeover(Box::new(move |store, pid| {
            takeovers.lock().unwrap().push((store.to_path_buf(), pid));
        }));
    }
    let done = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (node, done, made) = (node.clone(), done.clone(), made.clone());
            std::thread::spawn(move || {
                let mut acked = HashMap::new();
                let mut n = t * 1_000_000;
                while !done.load(Ordering::Acquire) {
                    let batch: Vec<_> = (n..n + 1 + (n % 2) * 2).map(numbered).collect();
                    let size = batch.len();
                    let jobs = node.insert(batch).unwrap_or_else(|e| panic!("insert {n}: {e}"));
                    assert_eq!(jobs.len(), size);
                    for job in jobs {
                        acked.insert(job.args.clone(), job.id);
                    }
                    n += size;
                    made.fetch_add(size, Ordering::Relaxed);
                }
                acked
            })
        })
        .collect();
    let wait_made = |at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while made.load(Ordering::Relaxed) < at_least {
            assert!(
                Instant::now() < deadline,
                "inserts stalled at {}",
                made.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_made(200);
    stop(&mut owner);
    let before_switch = made.load(Ordering::Relaxed);
    wait_made(before_switch + 200); // through the next owner
    done.store(true, Ordering::Release);
    let mut acked = HashMap::new();
    for t in threads {
        acked.extend(t.join().unwrap());
    }
    owner.wait().unwrap();

    assert_eq!(node.role(), Role::Owner, "the client took the store over");
    let store = std::fs::canonicalize(&path).unwrap();
    assert_eq!(*takeovers.lock().unwrap(), vec![(store, owner.id())]);
    let jobs = node.jobs().unwrap().list(&ListFilter::default()).unwrap();
    let mut by_args: HashMap<String, Vec<u64>> = HashMap::new();
    for job in &jobs {
        by_args.entry(job.args.clone()).or_default().push(job.id);
    }
    let twice: Vec<_> = by_args.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(jobs.len(), acked.len(), "every stored job was acknowledged, and only those");
    for (args, id) in &acked {
        assert_eq!(by_args.get(args), Some(&vec![*id]), "{args}");
    }
    node.close();
}

#[test]
fn inserts_in_flight_while_the_owner_stops_gracefully_are_stored_once() {
    inserts_ride_through_an_owner_change(|owner| {
        owner.stdin.take().unwrap().write_all(b"stop\n").unwrap();
    });
}

#[test]
fn inserts_in_flight_while_the_owner_is_killed_are_stored_once() {
    inserts_ride_through_an_owner_change(|owner| owner.kill().unwrap());
}

/// Threads of one client share its connection to the owner. The first to meet the owner gone
/// closes that connection and switches to the next owner (here the client itself takes the
/// store over); a call another thread then makes on the old connection still hears that the
/// owner is gone, which every verb answers by retrying on the next owner, never that it was
/// closed, which no verb retries.
#[test]
fn a_call_on_a_connection_closed_for_a_gone_owner_hears_the_owner_gone() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let mut owner = spawn_owner(&path);
    let node = Node::open(NodeConfig { engine: config(&path), ..NodeConfig::default() }).unwrap();
    assert_eq!(node.role(), Role::Client);
    let old = node.jobs().unwrap();
    owner.kill().unwrap();
    owner.wait().unwrap();
    let gone = old.insert(vec![job("default", "w")]);
    assert!(matches!(gone, Err(kathikon_core::Error::OwnerGone { .. })), "{gone:?}");
    node.jobs().unwrap(); // the switch: this process takes the store over, closing `old`
    assert_eq!(node.role(), Role::Owner);
    let late = old.insert(vec![job("default", "w")]);
    assert!(matches!(late, Err(kathikon_core::Error::OwnerGone { .. })), "{late:?}");
    assert_eq!(node.insert(vec![job("default", "w")]).unwrap().len(), 1);
    node.close();
}
