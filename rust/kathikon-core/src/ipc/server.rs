//! The owner's side of the socket: a thread accepts connections from processes of the same
//! user, a thread per connection answers its requests through the contract ([`Jobs`]) on the
//! owner's [`Engine`], and a lease thread rescues the claims of sessions that went quiet.
//!
//! Claims made over the socket are held by the client's *session* (all connections of one
//! client process). Its acks are checked against what it holds before they reach the engine,
//! so a worker that lost a job (its lease expired, or its connections dropped, and the job
//! was rescued) cannot record an outcome over a newer attempt's: the ack is refused and the
//! refusal is written into the job's history (fencing). The engine's own attempt check stays
//! behind this one.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::frame::{self, PROTOCOL_VERSION};
use super::protocol::{Request, Response, WireError};
use super::socket::{my_uid, peer_uid, short, socket_path};
use crate::clock::Micros;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fork::CloseInForkedChild;
use crate::job::{AckResult, JobId};
use crate::jobs::Jobs;
use crate::processes::{Peers, ProcessInfo, ProcessRole};

/// Longest a claim request waits inside the owner; clients wait longer by asking again, so a
/// client that stops asking (interrupted, closing) frees its connection within this.
const MAX_CLAIM_WAIT: Duration = Duration::from_millis(250);
/// The longest a `WaitFinished` request waits, well within the client's answer timeout;
/// a client waiting longer asks again.
pub(crate) const MAX_FINISH_WAIT: Duration = Duration::from_secs(10);

/// How often the lease thread looks for sessions that went quiet.
const LEASE_TICK: Duration = Duration::from_millis(50);

struct Session {
    pid: u32,
    conns: usize,
    last_seen: Instant,
    lease: Duration,
    /// Jobs claimed through this session and not yet acked: id → attempt.
    held: HashMap<JobId, u32>,
    /// When its first connection said hello.
    since: Instant,
    /// The queues it has claimed from or waited on.
    queues: BTreeSet<String>,
}

impl Session {
    /// Note the queues `request` claims from or waits on (a lookup per queue; a copy of the
    /// name only the first time).
    fn note_queues(&mut self, request: &Request) {
        let mut note = |queue: &String| {
            if !self.queues.contains(queue) {
                self.queues.insert(queue.clone());
            }
        };
        match request {
            Request::Claim { queue, .. } => note(queue),
            Request::WaitReady { queues, .. } => queues.iter().for_each(note),
            _ => {}
        }
    }

    /// The session as [`crate::Jobs::processes`] lists it, `now` being `at` on the engine
    /// clock.
    fn info(&self, now: Micros, at: Instant) -> ProcessInfo {
        let on_clock = |then: Instant| now - at.saturating_duration_since(then).as_micros() as i64;
        let last_seen = on_clock(self.last_seen);
        let mut jobs: Vec<JobId> = self.held.keys().copied().collect();
        jobs.sort_unstable();
        ProcessInfo {
            pid: self.pid,
            role: ProcessRole::Client,
            hostname: crate::processes::hostname().to_string(),
            connected_at: on_clock(self.since),
            last_seen,
            lease_expires: Some(last_seen + self.lease.as_micros() as i64),
            jobs,
            queues: self.queues.iter().cloned().collect(),
        }
    }
}

struct Shared {
    engine: Arc<Engine>,
    stopping: AtomicBool,
    sessions: Mutex<HashMap<u64, Session>>,
    /// A clone of every open connection, to shut them down on stop.
    conns: Mutex<HashMap<u64, UnixStream>>,
    next_conn: AtomicU64,
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

impl Peers for Shared {
    fn peers(&self, now: Micros) -> Vec<ProcessInfo> {
        let at = Instant::now();
        self.sessions().values().map(|s| s.info(now, at)).collect()
    }
}

impl Shared {
    fn sessions(&self) -> MutexGuard<'_, HashMap<u64, Session>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The socket server of the process that owns a store.
pub struct Server {
    /// The listening socket's descriptor, closed in children made by `fork`: a child that
    /// outlives this process must not accept connections nobody answers. Declared before
    /// `listener` so it is deregistered before the socket closes.
    _not_in_children: CloseInForkedChild,
    shared: Arc<Shared>,
    socket: PathBuf,
    /// The listening socket, shared with the accept loop so that `stop` can wake it.
    listener: Arc<UnixListener>,
    accept: Option<JoinHandle<()>>,
    lease: Option<JoinHandle<()>>,
    stop_lease: Option<Sender<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl Server {
    /// Serve `engine`, which owns the store at `store` (canonical path), on the socket beside
    /// it. Any socket file already there is stale (its owner released the store, or this
    /// process could not have opened it) and is replaced.
    pub fn start(engine: Arc<Engine>, store: &Path) -> Result<Server> {
        let socket = socket_path(store);
        let fail = |what: &str, e: std::io::Error| {
            Error::Storage(format!("cannot {what} the store's socket {}: {e}", socket.display()))
        };
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("replace", e)),
        }
        let listener = {
            let spelled = short(&socket).map_err(|e| fail("name", e))?;
            UnixListener::bind(&spelled.path).map_err(|e| fail("create", e))?
        };
        let not_in_children = CloseInForkedChild::new(listener.as_raw_fd());
        // Owner-only, like the store; peers of another uid are also refused at accept.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail("restrict", e))?;
        let shared = Arc::new(Shared {
            engine,
            stopping: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            handlers: Mutex::new(Vec::new()),
        });
        let peers: Arc<dyn Peers> = shared.clone();
        shared.engine.serve_peers(Arc::downgrade(&peers));
        let listener = Arc::new(listener);
        let accept = {
            let (shared, listener) = (shared.clone(), listener.clone());
            std::thread::Builder::new()
                .name("kathikon-accept".into())
                .spawn(move || accept_loop(&shared, &listener))
                .map_err(|e| fail("serve", e))?
        };
        let (stop_lease, stopped) = bounded(1);
        let lease = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kathikon-lease".into())
                .spawn(move || lease_loop(&shared, &stopped))
                .map_err(|e| fail("serve", e))?
        };
        Ok(Server {
            _not_in_children: not_in_children,
            shared,
            socket,
            listener,
            accept: Some(accept),
            lease: Some(lease),
            stop_lease: Some(stop_lease),
        })
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// How many client sessions are connected.
    pub fn sessions(&self) -> usize {
        self.shared.sessions().len()
    }

    /// Stop serving: refuse new connections, close open ones (their sessions' claims are
    /// rescued while the engine is still open), remove the socket file. Idempotent.
    pub fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the accept loop: a listening socket shut down fails a blocked accept at once
        // (EINVAL on Linux); the loop then sees `stopping` and returns. Not a connection of
        // our own, which needs the socket file: with the store's directory deleted under a
        // running owner, that connect failed and this join waited for ever.
        // SAFETY: the descriptor belongs to `self.listener`, alive for the whole call.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
        for stream in
            self.shared.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values()
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let handlers = std::mem::take(
            &mut *self.shared.handlers.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for handle in handlers {
            let _ = handle.join();
        }
        self.stop_lease.take();
        if let Some(handle) = self.lease.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        // Only processes of this user may use the store, whatever the file modes say.
        if peer_uid(&stream).ok() != Some(my_uid()) {
            continue;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        // Every copy of the connection is closed in children made by `fork`, so a client sees
        // it end when this process dies, even while such a child lives.
        let mut clone_in_child = None;
        if let Ok(clone) = stream.try_clone() {
            clone_in_child = Some(CloseInForkedChild::new(clone.as_raw_fd()));
            shared
                .conns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id, clone);
        }
        let worker = shared.clone();
        let spawned = std::thread::Builder::new().name("kathikon-conn".into()).spawn(move || {
            serve(&worker, stream);
            let clone =
                worker.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
            drop(clone_in_child); // before the descriptor closes
            drop(clone);
        });
        let mut handlers =
            shared.handlers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        handlers.retain(|h| !h.is_finished());
        if let Ok(handle) = spawned {
            handlers.push(handle);
        }
    }
}

/// `error` as this owner reports it to a client: after its writer stopped, a storage failure
/// is that stop (see [`Error::reported_by_stopped_owner`]), which the client reports as its owner's.
fn owner_error(shared: &Shared, error: Error) -> Error {
    match shared.engine.failure() {
        Some(cause) => error.reported_by_stopped_owner(&cause),
        None => error,
    }
}

/// Answer one connection until it closes or sends something malformed.
fn serve(shared: &Shared, stream: UnixStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = BufWriter::new(stream);
    // Declared after the halves, so dropped before they close.
    let _in_child = [
        CloseInForkedChild::new(reader.get_ref().as_raw_fd()),
        CloseInForkedChild::new(writer.get_ref().as_raw_fd()),
    ];
    let mut inbuf = Vec::new();
    let mut outbuf = Vec::new();
    let send = |writer: &mut BufWriter<UnixStream>, outbuf: &mut Vec<u8>, resp: &Response| {
        let resp = match frame::encode(resp, outbuf) {
            Ok(()) => {
                return frame::write_frame(writer, outbuf).and_then(|()| writer.flush()).is_ok()
            }
            Err(msg) => Response::Error(WireError::Protocol(msg)),
        };
        frame::encode(&resp, outbuf).is_ok()
            && frame::write_frame(writer, outbuf).and_then(|()| writer.flush()).is_ok()
    };
    // The hello: anything else first, anything bigger than a hello, or another version,
    // closes the connection, so a peer that is not a Kathikon client costs no memory.
    if frame::read_frame_within(&mut reader, &mut inbuf, frame::MAX_HELLO_FRAME).is_err() {
        return;
    }
    let Ok(Request::Hello { version, pid, session, lease_ms }) = frame::decode(&inbuf) else {
        return;
    };
    if version != PROTOCOL_VERSION {
        let msg = format!(
            "this process speaks Kathikon socket protocol {version} but the store's owner \
             (pid {}) speaks {PROTOCOL_VERSION}; run the same kathikon version in both",
            std::process::id()
        );
        send(&mut writer, &mut outbuf, &Response::Error(WireError::Protocol(msg)));
        return;
    }
    let lease = Duration::from_millis(lease_ms.max(1));
    {
        let mut sessions = shared.sessions();
        let s = sessions.entry(session).or_insert_with(|| Session {
            pid,
            conns: 0,
            last_seen: Instant::now(),
            lease,
            held: HashMap::new(),
            since: Instant::now(),
            queues: BTreeSet::new(),
        });
        s.conns += 1;
        s.last_seen = Instant::now();
        s.lease = lease;
    }
    let hello = Response::Hello { version: PROTOCOL_VERSION, owner_pid: std::process::id() };
    if send(&mut writer, &mut outbuf, &hello) {
        // A closed, failed or oversized frame ends the connection.
        while let Ok(()) = frame::read_frame(&mut reader, &mut inbuf) {
            // A malformed frame closes this connection and touches nothing else.
            let Ok(request) = frame::decode::<Request>(&inbuf) else { break };
            if let Some(s) = shared.sessions().get_mut(&session) {
                s.last_seen = Instant::now();
                s.note_queues(&request);
            }
            let response = match answer(shared, session, pid, request) {
                Ok(r) => r,
                Err(e) => Response::Error(WireError::from(&owner_error(shared, e))),
            };
            if !send(&mut writer, &mut outbuf, &response) {
                break;
            }
        }
    }
    // The last connection of a session closing means its process exited, was killed, or
    // closed its app: what it still held is rescued at once. The session stays listed,
    // holding those jobs, until the rescue is committed, so `processes` never shows them as
    // executing under nobody (that is, under the owner) in between.
    let orphans: Option<Vec<(JobId, u32)>> = {
        let mut sessions = shared.sessions();
        match sessions.get_mut(&session) {
            Some(s) if s.conns <= 1 => Some(s.held.iter().map(|(id, a)| (*id, *a)).collect()),
            Some(s) => {
                s.conns -= 1;
                None
            }
            None => None,
        }
    };
    let Some(held) = orphans else { return };
    let cause = format!(
        "rescued: worker process {pid} disconnected from the store's owner (it exited, \
         crashed or was killed)"
    );
    let _ = shared.engine.rescue(held.clone(), cause);
    let mut sessions = shared.sessions();
    match sessions.get_mut(&session) {
        Some(s) if s.conns <= 1 => {
            sessions.remove(&session);
        }
        // A connection of the same session opened meanwhile: it keeps the session.
        Some(s) => {
            s.conns -= 1;
            for (id, _) in &held {
                s.held.remove(id);
            }
        }
        None => {}
    }
}

/// One request's answer. The verbs go through the contract, [`Jobs`], on the owner's engine;
/// around Claim and Ack this keeps the session's books (what it holds; acks it no longer may
/// send are fenced with the engine's own `note_fenced`).
// One arm per request: splitting the dispatch would scatter it, not simplify it.
#[allow(clippy::too_many_lines)]
fn answer(shared: &Shared, session: u64, pid: u32, request: Request) -> Result<Response> {
    let store: &dyn Jobs = &*shared.engine;
    Ok(match request {
        Request::Hello { .. } => {
            return Err(Error::Protocol("hello sent twice on one connection".into()));
        }
        Request::Insert { jobs, request } => {
            Response::inserted(shared.engine.insert_once_flagged(request, jobs)?)
        }
        Request::Claim { queue, max, timeout_ms } => {
            let wait = Duration::from_millis(timeout_ms).min(MAX_CLAIM_WAIT);
            let jobs = shared.engine.claim_for(pid, &queue, max as usize, wait)?;
            if let Some(s) = shared.sessions().get_mut(&session) {
                s.held.extend(jobs.iter().map(|j| (j.id, j.attempt)));
            }
            Response::Jobs(jobs)
        }
        Request::Ack { acks, wait } => {
            let mut fenced = Vec::new();
            let mut passed = Vec::with_capacity(acks.len());
            {
                let mut sessions = shared.sessions();
                let mut held = sessions.get_mut(&session).map(|s| &mut s.held);
                for (i, ack) in acks.into_iter().enumerate() {
                    // Passed (and let go) only when the session holds exactly this attempt.
                    match held.as_mut() {
                        Some(h) if h.get(&ack.id) == Some(&ack.attempt) => {
                            h.remove(&ack.id);
                            passed.push((i, ack));
                        }
                        _ => fenced.push((i, ack)),
                    }
                }
            }
            if !fenced.is_empty() {
                let notes = fenced
                    .iter()
                    .map(|(_, ack)| {
                        let text = format!(
                            "fenced: worker process {pid} reported '{}' for attempt {} after \
                             it had lost the job (its lease expired or its connection dropped, \
                             and the job was rescued); the report was refused",
                            ack.outcome.past_tense(),
                            ack.attempt
                        );
                        (ack.id, ack.attempt, text)
                    })
                    .collect();
                shared.engine.note_fenced(notes)?;
            }
            let (order, acks): (Vec<usize>, Vec<_>) = passed.into_iter().unzip();
            if !wait {
                store.ack_nowait(acks)?;
                return Ok(Response::Unit);
            }
            let applied = store.ack(acks)?;
            let mut results: Vec<Option<AckResult>> = vec![None; order.len() + fenced.len()];
            for (i, r) in order.into_iter().zip(applied) {
                results[i] = Some(r);
            }
            for (i, ack) in fenced {
                let state = store.get(ack.id).ok().map(|j| j.state);
                results[i] = Some(AckResult::Stale(state));
            }
            Response::Acks(
                results.into_iter().map(|r| r.unwrap_or(AckResult::Stale(None))).collect(),
            )
        }
        Request::Cancel { id } => {
            let (job, before) = store.cancel(id)?;
            Response::Cancelled(job, before)
        }
        Request::Retry { id } => Response::Job(store.retry(id)?),
        Request::Get { id } => Response::Job(store.get(id)?),
        Request::List { filter } => Response::Jobs(store.list(&filter)?),
        Request::Count { filter } => Response::Count(store.count(&filter)?),
        Request::Bulk { action, filter } => Response::Count(store.bulk(action, &filter)?),
        Request::Counts => Response::Counts(store.counts()?),
        Request::Quarantined => Response::Quarantined(store.quarantined()?),
        Request::OldestAvailable { queue } => Response::Time(store.oldest_available(&queue)?),
        Request::ReadyCount { queue } => Response::Count(store.ready_count(&queue)? as u64),
        Request::Prune { age_us } => Response::Count(store.prune(Duration::from_micros(age_us))?),
        Request::Sync { promote_until } => {
            match promote_until {
                Some(until) => store.sync_promoting(until)?,
                None => store.sync()?,
            }
            Response::Unit
        }
        Request::Heartbeat => Response::Unit,
        Request::Claimers => Response::Claimers(store.claimers()?),
        Request::WaitFinished { id, timeout_ms } => {
            let wait = Duration::from_millis(timeout_ms).min(MAX_FINISH_WAIT);
            Response::Job(store.wait_finished(id, wait)?)
        }
        Request::WaitReady { queues, seen, timeout_ms } => {
            let wait = Duration::from_millis(timeout_ms).min(MAX_CLAIM_WAIT);
            let (generation, ready) = shared.engine.wait_ready_for(pid, &queues, seen, wait)?;
            Response::Ready(generation, ready)
        }
        Request::SetQueue { queue, change } => Response::Queue(store.set_queue(&queue, change)?),
        Request::LimitUsage { queue } => Response::LimitUsage(store.limit_usage(&queue)?),
        Request::QueueSettings => {
            let (generation, settings) = store.queue_settings()?;
            Response::QueueSettings(generation, settings)
        }
        Request::CronSlots => Response::CronSlots(store.cron_slots()?),
        Request::SetProgress { id, progress: p } => {
            Response::Count(u64::from(store.set_progress(id, p.attempt, p.fraction, p.note)?))
        }
        Request::Progress { id } => Response::Progress(store.progress(id)?),
        Request::Processes => Response::Processes(store.processes()?),
        Request::Batch { id } => Response::Batch(store.batch(&id)?),
        Request::Metrics { since, queue } => {
            Response::Metrics(store.metrics(since, queue.as_deref())?)
        }
    })
}

/// A quiet session's pid, lease and the jobs it held.
type Expired = (u32, Duration, Vec<(JobId, u32)>);

/// Rescue what quiet sessions hold: a process that stops sending (frozen, or hung with its
/// heartbeat thread) loses its jobs when its lease runs out, though its connections stay open.
fn lease_loop(shared: &Shared, stop: &Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(LEASE_TICK) {
        let expired: Vec<Expired> = shared
            .sessions()
            .values_mut()
            .filter(|s| !s.held.is_empty() && s.last_seen.elapsed() > s.lease)
            .map(|s| (s.pid, s.lease, s.held.drain().collect()))
            .collect();
        for (pid, lease, held) in expired {
            let cause = format!(
                "rescued: worker process {pid} stopped renewing its lease ({:.1} s) with the \
                 store's owner",
                lease.as_secs_f64()
            );
            let _ = shared.engine.rescue(held, cause);
        }
    }
}
