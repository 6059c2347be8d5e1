//! The client's side of the socket: what a process that does not own the store uses instead
//! of an [`crate::Engine`]. It implements the same contract, [`Jobs`]: same calls, same
//! answers, same promise (a call returns after the owner committed it), with the GIL-free
//! blocking left to the caller's thread.
//!
//! Each calling thread borrows a connection from a small pool, so threads never queue behind
//! each other's round trips (a claim may wait at the owner). A native heartbeat thread keeps
//! the session's lease while the process lives; it proves the process is alive, not that a
//! job makes progress (job timeouts cover that). Between heartbeats it waits on its
//! connection, so an owner that stops (and closes every connection) or dies is noticed at
//! once: the client is then gone, and [`super::Node`] switches to the next owner at the next
//! call instead of sending it to a closed socket.
//!
//! Every wait on the owner is bounded: the hello by the connect timeout, each request's
//! answer (and each write) by the answer timeout, so an owner that holds the store but does
//! not answer (stopped by SIGSTOP, or overloaded) is an [`Error::OwnerNotAnswering`] naming it,
//! not a hang. A connection that timed out is dropped: a late answer must not be read as the
//! answer to the next request.

use std::collections::HashMap;
use std::io::BufRead;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use super::frame::{self, PROTOCOL_VERSION};
use super::protocol::{Request, Response, WireError};
use super::socket::{short, socket_path};
use crate::claim::Claimer;
use crate::clock::{Clock, Micros, SystemClock};
use crate::cron::{CronEntry, CronSlot};
use crate::error::{Error, Result};
use crate::fork::CloseInForkedChild;
use crate::job::{Ack, AckResult, Job, JobId, NewJob, Outcome};
use crate::jobs::{Jobs, ListFilter};
use crate::metrics::MetricPoint;
use crate::queues::{QueueChange, QueueSettings};
use crate::request::RequestId;
use crate::state::JobState;
use crate::storage::Quarantined;
use crate::telemetry::EngineEvent;
use crate::unique::Inserted;

/// Longest one claim request asks the owner to wait; longer waits are several requests, so an
/// interrupt is noticed within this.
const CLAIM_SLICE: Duration = Duration::from_millis(200);

/// Idle connections kept for reuse.
const POOL_SIZE: usize = 64;

struct Conn {
    /// Both halves are closed in children made by `fork`, so the owner sees this process's
    /// connections end when it dies, even while such a child lives (and rescues its jobs at
    /// once). Declared first, so deregistered before the halves close.
    _in_child: [CloseInForkedChild; 2],
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
    buf: Vec<u8>,
}

/// Why a round trip failed.
enum TripError {
    /// The request could not be encoded (too large): nothing was sent.
    Encode(String),
    /// The connection failed: the owner is gone, or answered garbage.
    Lost(String),
    /// The owner did not answer (or take the request) within the connection's timeout.
    Silent,
}

/// Whether `e` is a socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` ran out).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

impl Conn {
    fn round_trip(&mut self, request: &Request) -> std::result::Result<Response, TripError> {
        frame::encode(request, &mut self.buf).map_err(TripError::Encode)?;
        frame::write_frame(&mut self.writer, &self.buf)
            .and_then(|()| self.writer.flush())
            .map_err(|e| {
                if timed_out(&e) {
                    TripError::Silent
                } else {
                    TripError::Lost(format!("sending failed: {e}"))
                }
            })?;
        frame::read_frame(&mut self.reader, &mut self.buf).map_err(|e| match e {
            frame::FrameError::Io(e) if timed_out(&e) => TripError::Silent,
            e => TripError::Lost(e.to_string()),
        })?;
        frame::decode(&self.buf).map_err(TripError::Lost)
    }
}

/// Options of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The store (canonical path); its socket is beside it.
    pub store: PathBuf,
    /// How long the owner keeps this process's claims without hearing from it.
    pub lease: Duration,
    /// How long to keep trying to reach the socket (an owner may be starting up), and to
    /// wait for the owner's hello (at least [`HELLO_FLOOR`]).
    pub connect_timeout: Duration,
}

/// How long [`Client::connect`] waits for the owner's answer to one request.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest wait for an owner's hello: a new owner that just took the store over may be
/// slow to answer its first connections on a busy machine, and that is not a stopped owner.
const HELLO_FLOOR: Duration = Duration::from_secs(1);

/// A connection to the process that owns a store.
pub struct Client {
    store: PathBuf,
    socket: PathBuf,
    session: u64,
    lease: Duration,
    answer_timeout: Duration,
    owner_pid: u32,
    idle: Mutex<Vec<Conn>>,
    /// Set once the owner is found gone (by a call or by the heartbeat): later calls fail at
    /// once with it.
    gone: Arc<Mutex<Option<String>>>,
    closed: AtomicBool,
    /// Per queue, bumped by [`Jobs::interrupt`].
    interrupts: Mutex<HashMap<String, u64>>,
    stop_heartbeat: Mutex<Option<Sender<()>>>,
    /// `heartbeat_stream`'s descriptor, closed in children made by `fork` like a [`Conn`]'s;
    /// declared before it, so deregistered before it closes.
    _heartbeat_in_child: Option<CloseInForkedChild>,
    /// The heartbeat's connection, shut down at close to wake the thread waiting on it.
    heartbeat_stream: Option<UnixStream>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("owner_pid", &self.owner_pid)
            .finish_non_exhaustive()
    }
}

fn new_session() -> u64 {
    // Unique among live processes of this machine: the pid, plus the time to tell apart a
    // process that reuses a pid.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (u64::from(std::process::id()) << 32) ^ (nanos & 0xffff_ffff)
}

/// Open one connection and say hello, waiting up to `hello_timeout` for the answer; later
/// answers on it are waited for up to `answer_timeout`. `Err` carries the reason the socket
/// cannot be used.
fn connect(
    socket: &Path,
    session: u64,
    lease: Duration,
    hello_timeout: Duration,
    answer_timeout: Duration,
) -> std::result::Result<(Conn, u32), ConnectError> {
    let stream = {
        let spelled = short(socket).map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        UnixStream::connect(&spelled.path).map_err(|e| ConnectError::Unreachable(e.to_string()))?
    };
    // A zero timeout means "none" to the socket: never ask for that.
    let bound = |t: Duration| Some(t.max(Duration::from_millis(1)));
    let set_timeouts = |stream: &UnixStream, t: Duration| {
        stream.set_read_timeout(bound(t)).and_then(|()| stream.set_write_timeout(bound(t)))
    };
    set_timeouts(&stream, hello_timeout).map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    let read_half = stream.try_clone().map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    let mut conn = Conn {
        _in_child: [
            CloseInForkedChild::new(read_half.as_raw_fd()),
            CloseInForkedChild::new(stream.as_raw_fd()),
        ],
        reader: BufReader::new(read_half),
        writer: BufWriter::new(stream),
        buf: Vec::new(),
    };
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
        session,
        lease_ms: lease.as_millis() as u64,
    };
    match conn.round_trip(&hello) {
        Ok(Response::Hello { owner_pid, .. }) => {
            // The options belong to the socket, which both halves share.
            set_timeouts(conn.writer.get_ref(), answer_timeout)
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
            Ok((conn, owner_pid))
        }
        Ok(Response::Error(e)) => Err(ConnectError::Refused(e.into())),
        Ok(other) => Err(ConnectError::Refused(Error::Protocol(format!(
            "the store's owner answered the hello with {other:?}"
        )))),
        Err(TripError::Encode(msg) | TripError::Lost(msg)) => Err(ConnectError::Unreachable(msg)),
        Err(TripError::Silent) => Err(ConnectError::NotAnswering(hello_timeout)),
    }
}

/// Why [`Client::connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Nobody answers on the socket (no owner, or one still starting).
    Unreachable(String),
    /// The owner answered and refused (another protocol version).
    Refused(Error),
    /// Something holds the socket open but did not answer the hello within this long (an
    /// owner stopped by SIGSTOP, or overloaded).
    NotAnswering(Duration),
}

impl Client {
    /// Connect to the owner of `config.store`, trying for up to `config.connect_timeout`;
    /// each answer is waited for up to [`DEFAULT_ANSWER_TIMEOUT`].
    pub fn connect(config: &ClientConfig) -> std::result::Result<Client, ConnectError> {
        Self::connect_bounded(config, DEFAULT_ANSWER_TIMEOUT)
    }

    /// [`Client::connect`], waiting up to `answer_timeout` for each answer of the owner
    /// before the call fails with [`Error::OwnerNotAnswering`].
    pub fn connect_bounded(
        config: &ClientConfig,
        answer_timeout: Duration,
    ) -> std::result::Result<Client, ConnectError> {
        let hello = config.connect_timeout.max(HELLO_FLOOR);
        let socket = socket_path(&config.store);
        let session = new_session();
        let deadline = Instant::now() + config.connect_timeout;
        let (conn, owner_pid) = loop {
            match connect(&socket, session, config.lease, hello, answer_timeout) {
                Ok(ok) => break ok,
                Err(ConnectError::Unreachable(msg)) if Instant::now() >= deadline => {
                    return Err(ConnectError::Unreachable(msg));
                }
                Err(ConnectError::Unreachable(_)) => std::thread::sleep(Duration::from_millis(20)),
                Err(refused) => return Err(refused),
            }
        };
        let (heartbeat_conn, _) = connect(&socket, session, config.lease, hello, answer_timeout)?;
        let heartbeat_stream = heartbeat_conn.writer.get_ref().try_clone().ok();
        let heartbeat_in_child =
            heartbeat_stream.as_ref().map(|s| CloseInForkedChild::new(s.as_raw_fd()));
        let (stop, stopped) = bounded::<()>(1);
        let every = (config.lease / 3).max(Duration::from_millis(10));
        let gone = Arc::new(Mutex::new(None));
        let heartbeat = {
            let (gone, answer) = (gone.clone(), answer_timeout);
            std::thread::Builder::new()
                .name("kathikon-heartbeat".into())
                .spawn(move || heartbeat_loop(heartbeat_conn, every, answer, &stopped, &gone))
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?
        };
        Ok(Client {
            store: config.store.clone(),
            socket,
            session,
            lease: config.lease,
            answer_timeout,
            owner_pid,
            idle: Mutex::new(vec![conn]),
            gone,
            closed: AtomicBool::new(false),
            interrupts: Mutex::new(HashMap::new()),
            stop_heartbeat: Mutex::new(Some(stop)),
            heartbeat_stream,
            _heartbeat_in_child: heartbeat_in_child,
            heartbeat: Mutex::new(Some(heartbeat)),
        })
    }

    /// The owner's process id.
    pub fn owner_pid(&self) -> u32 {
        self.owner_pid
    }

    fn owner_gone(&self, detail: String) -> Error {
        *self.gone.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(detail.clone());
        Error::OwnerGone { path: self.store.clone(), owner: self.owner_pid, detail }
    }

    /// A call that got no answer within `waited`: the owner is stopped or overloaded, or,
    /// when its process no longer exists, gone (the next call finds the next owner).
    fn silent(&self, waited: Duration) -> Error {
        // SAFETY: signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(self.owner_pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !exists {
            return self.owner_gone(format!(
                "it did not answer within {:.1} s and its process no longer exists",
                waited.as_secs_f64()
            ));
        }
        Error::OwnerNotAnswering { path: self.store.clone(), owner: Some(self.owner_pid), waited }
    }

    /// Whether a call found the owner gone (every later call fails; open a new client).
    pub fn is_gone(&self) -> bool {
        self.gone.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    fn call(&self, request: &Request) -> Result<Response> {
        // Gone before closed: a client whose owner went away is closed by the first thread of
        // its process that switches owners, and another thread's call on it must still hear
        // that the owner is gone (so it retries on the next owner), not that it was closed.
        if let Some(detail) =
            self.gone.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
        {
            return Err(Error::OwnerGone {
                path: self.store.clone(),
                owner: self.owner_pid,
                detail,
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let pooled = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut conn = if let Some(conn) = pooled {
            conn
        } else {
            let timeout = self.answer_timeout;
            match connect(&self.socket, self.session, self.lease, timeout, timeout) {
                Ok((conn, _)) => conn,
                Err(ConnectError::Unreachable(msg)) => return Err(self.owner_gone(msg)),
                Err(ConnectError::NotAnswering(waited)) => return Err(self.silent(waited)),
                Err(ConnectError::Refused(e)) => return Err(e),
            }
        };
        match conn.round_trip(request) {
            // The request itself could not be encoded (too large): nothing was sent, so the
            // connection is still good and the error is the caller's.
            Err(TripError::Encode(msg)) => {
                self.checkin(conn);
                Err(Error::InvalidJob(msg))
            }
            Err(TripError::Lost(msg)) => Err(self.owner_gone(msg)),
            // The connection is dropped: its answer may still come, to nobody.
            Err(TripError::Silent) => Err(self.silent(self.answer_timeout)),
            Ok(Response::Error(WireError::Closed)) => {
                Err(self.owner_gone("the owner closed the store".into()))
            }
            Ok(Response::Error(WireError::WriterStopped { cause })) => {
                // The owner's writer stopped: only the owner can reopen the store, and this
                // process takes it over once the owner lets go; the error says so.
                self.checkin(conn);
                Err(Error::OwnerStopped {
                    path: self.store.clone(),
                    owner: self.owner_pid,
                    cause: Box::new((*cause).into()),
                })
            }
            Ok(Response::Error(e)) => {
                self.checkin(conn);
                Err(e.into())
            }
            Ok(response) => {
                self.checkin(conn);
                Ok(response)
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
    }

    fn unexpected<T>(response: &Response) -> Result<T> {
        Err(Error::Protocol(format!("unexpected answer from the store's owner: {response:?}")))
    }

    fn interrupt_generation(&self, queue: &str) -> u64 {
        let interrupts = self.interrupts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        interrupts.get(queue).copied().unwrap_or(0)
    }

    /// [`Jobs::insert`] under `request`: the owner stores it once however often it is sent,
    /// so after [`Error::OwnerGone`] (outcome unknown) it can be sent again, to the next
    /// owner. `jobs` is lent to the request and given back, so a resend needs no copy.
    pub fn insert_once_flagged(
        &self,
        request: RequestId,
        jobs: &mut Vec<NewJob>,
    ) -> Result<Inserted> {
        let mut message = Request::Insert { jobs: std::mem::take(jobs), request };
        let answer = self.call(&message);
        if let Request::Insert { jobs: lent, .. } = &mut message {
            *jobs = std::mem::take(lent);
        }
        match answer? {
            Response::Jobs(jobs) => Ok(Inserted { jobs, conflicts: Vec::new() }),
            Response::Inserted(inserted) => Ok(inserted),
            other => Self::unexpected(&other),
        }
    }

    /// [`Jobs::sync`], or [`Jobs::sync_promoting`] with `promote_until`: one request.
    fn sync_until(&self, promote_until: Option<Micros>) -> Result<()> {
        match self.call(&Request::Sync { promote_until })? {
            Response::Unit => Ok(()),
            other => Self::unexpected(&other),
        }
    }
}

/// The most text (results, errors, reasons) one ack request carries: a batch with more goes as
/// several requests, so that neither it nor its answer (which carries the jobs back, results
/// and all) comes near [`super::MAX_FRAME`].
const ACK_BYTES: usize = 8 << 20;

/// `acks` split into requests of at most [`ACK_BYTES`] of text each (one ack larger than that
/// alone); a single request when they are small, as nearly always.
fn ack_requests(acks: Vec<Ack>) -> Vec<Vec<Ack>> {
    let text = |ack: &Ack| match &ack.outcome {
        Outcome::Return { result: Ok(text) | Err(text) } => text.len(),
        Outcome::Fail { error: text, .. }
        | Outcome::Cancel { reason: text }
        | Outcome::Discard { reason: text }
        | Outcome::Interrupt { reason: text } => text.len(),
        Outcome::Complete | Outcome::Snooze { .. } => 0,
    };
    let mut requests = Vec::new();
    let (mut current, mut size) = (Vec::new(), 0);
    for ack in acks {
        let n = text(&ack);
        if !current.is_empty() && size + n > ACK_BYTES {
            requests.push(std::mem::take(&mut current));
            size = 0;
        }
        size += n;
        current.push(ack);
    }
    if !current.is_empty() || requests.is_empty() {
        requests.push(current);
    }
    requests
}

impl Jobs for Client {
    fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Job>> {
        self.insert_flagged(jobs).map(|inserted| inserted.jobs)
    }

    /// Jobs claimed are held by this process's session. A long wait is several requests of
    /// at most `CLAIM_SLICE`, so an interrupt is noticed between them.
    fn claim(&self, queue: &str, max: usize, timeout: Duration) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        let seen = self.interrupt_generation(queue);
        loop {
            let slice = deadline.saturating_duration_since(Instant::now()).min(CLAIM_SLICE);
            let request = Request::Claim {
                queue: queue.to_string(),
                max: max.min(u32::MAX as usize) as u32,
                timeout_ms: slice.as_millis() as u64,
            };
            match self.call(&request)? {
                Response::Jobs(jobs) if !jobs.is_empty() => return Ok(jobs),
                Response::Jobs(_) => {}
                other => return Self::unexpected(&other),
            }
            if Instant::now() >= deadline || self.interrupt_generation(queue) != seen {
                return Ok(Vec::new());
            }
        }
    }

    /// A long wait is several requests of at most `CLAIM_SLICE`, so an interrupt of one of
    /// `queues` is noticed between them.
    fn wait_ready(
        &self,
        queues: &[String],
        seen: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        let interrupted = |before: &[u64]| {
            queues.iter().zip(before).any(|(q, &n)| self.interrupt_generation(q) != n)
        };
        let before: Vec<u64> = queues.iter().map(|q| self.interrupt_generation(q)).collect();
        loop {
            let slice = deadline.saturating_duration_since(Instant::now()).min(CLAIM_SLICE);
            let request = Request::WaitReady {
                queues: queues.to_vec(),
                seen,
                timeout_ms: slice.as_millis() as u64,
            };
            let (generation, ready) = match self.call(&request)? {
                Response::Ready(generation, ready) => (generation, ready),
                other => return Self::unexpected(&other),
            };
            if Some(generation) != seen || Instant::now() >= deadline || interrupted(&before) {
                return Ok((generation, ready));
            }
        }
    }

    /// Make this process's claims waiting on `queue` return (within `CLAIM_SLICE`).
    fn interrupt(&self, queue: &str) {
        let mut interrupts =
            self.interrupts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *interrupts.entry(queue.to_string()).or_insert(0) += 1;
    }

    /// Acks for jobs this process no longer holds come back stale.
    /// Acks carrying large results go as several requests ([`ACK_BYTES`] each).
    fn ack(&self, acks: Vec<Ack>) -> Result<Vec<AckResult>> {
        let mut out = Vec::with_capacity(acks.len());
        for acks in ack_requests(acks) {
            match self.call(&Request::Ack { acks, wait: true })? {
                Response::Acks(results) => out.extend(results),
                other => return Self::unexpected(&other),
            }
        }
        Ok(out)
    }

    /// Returns once the owner has the acks, before they commit.
    fn ack_nowait(&self, acks: Vec<Ack>) -> Result<()> {
        for acks in ack_requests(acks) {
            match self.call(&Request::Ack { acks, wait: false })? {
                Response::Unit => {}
                other => return Self::unexpected(&other),
            }
        }
        Ok(())
    }

    fn cancel(&self, id: JobId) -> Result<(Job, JobState)> {
        match self.call(&Request::Cancel { id })? {
            Response::Cancelled(job, before) => Ok((job, before)),
            other => Self::unexpected(&other),
        }
    }

    fn retry(&self, id: JobId) -> Result<Job> {
        match self.call(&Request::Retry { id })? {
            Response::Job(job) => Ok(job),
            other => Self::unexpected(&other),
        }
    }

    /// A long wait is several requests, each waiting at the owner (woken there when the job
    /// finishes) at most the owner's longest wait and half the answer timeout.
    fn wait_finished(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let deadline = crate::finished::deadline(timeout);
        let longest = super::server::MAX_FINISH_WAIT.min(self.answer_timeout / 2);
        loop {
            let slice = deadline.saturating_duration_since(Instant::now()).min(longest);
            let request = Request::WaitFinished { id, timeout_ms: slice.as_millis() as u64 };
            let job = match self.call(&request)? {
                Response::Job(job) => job,
                other => return Self::unexpected(&other),
            };
            if job.state.is_terminal() || Instant::now() >= deadline {
                return Ok(job);
            }
        }
    }

    fn get(&self, id: JobId) -> Result<Job> {
        match self.call(&Request::Get { id })? {
            Response::Job(job) => Ok(job),
            other => Self::unexpected(&other),
        }
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>> {
        match self.call(&Request::List { filter: filter.clone() })? {
            Response::Jobs(jobs) => Ok(jobs),
            other => Self::unexpected(&other),
        }
    }

    fn counts(&self) -> Result<Vec<(String, JobState, u64)>> {
        match self.call(&Request::Counts)? {
            Response::Counts(counts) => Ok(counts),
            other => Self::unexpected(&other),
        }
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>> {
        match self.call(&Request::Quarantined)? {
            Response::Quarantined(records) => Ok(records),
            other => Self::unexpected(&other),
        }
    }

    fn oldest_available(&self, queue: &str) -> Result<Option<Micros>> {
        match self.call(&Request::OldestAvailable { queue: queue.to_string() })? {
            Response::Time(at) => Ok(at),
            other => Self::unexpected(&other),
        }
    }

    fn ready_count(&self, queue: &str) -> Result<usize> {
        match self.call(&Request::ReadyCount { queue: queue.to_string() })? {
            Response::Count(n) => Ok(n as usize),
            other => Self::unexpected(&other),
        }
    }

    fn claimers(&self) -> Result<Vec<Claimer>> {
        match self.call(&Request::Claimers)? {
            Response::Claimers(claimers) => Ok(claimers),
            other => Self::unexpected(&other),
        }
    }

    fn prune(&self, age: Duration) -> Result<u64> {
        match self.call(&Request::Prune { age_us: age.as_micros() as u64 })? {
            Response::Count(n) => Ok(n),
            other => Self::unexpected(&other),
        }
    }

    fn sync(&self) -> Result<()> {
        self.sync_until(None)
    }

    fn sync_promoting(&self, until: Micros) -> Result<()> {
        self.sync_until(Some(until))
    }

    /// Engine events happen at the owner: a client has none to collect.
    fn set_events(&self, _on: bool) {}

    /// Waits out `timeout` and returns none: a client has no events.
    fn next_events(&self, timeout: Duration) -> Vec<EngineEvent> {
        std::thread::sleep(timeout);
        Vec::new()
    }

    /// The system clock, which the owner of a store shared between processes runs on too.
    fn now(&self) -> Micros {
        SystemClock.now()
    }

    /// Close every connection (the owner then rescues anything this process still held).
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop_heartbeat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(stream) = &self.heartbeat_stream {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(handle) =
            self.heartbeat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        {
            let _ = handle.join();
        }
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn set_queue(&self, queue: &str, change: QueueChange) -> Result<QueueSettings> {
        match self.call(&Request::SetQueue { queue: queue.to_string(), change })? {
            Response::Queue(settings) => Ok(settings),
            other => Self::unexpected(&other),
        }
    }

    fn limit_usage(&self, queue: &str) -> Result<crate::limits::Usage> {
        match self.call(&Request::LimitUsage { queue: queue.to_string() })? {
            Response::LimitUsage(usage) => Ok(usage),
            other => Self::unexpected(&other),
        }
    }

    fn queue_settings(&self) -> Result<(u64, Vec<QueueSettings>)> {
        match self.call(&Request::QueueSettings)? {
            Response::QueueSettings(generation, settings) => Ok((generation, settings)),
            other => Self::unexpected(&other),
        }
    }

    /// A client fires nothing: the entries are checked and left to the process that holds
    /// this client, which hands them to the engine it gets if it takes the store over.
    fn set_crontab(&self, entries: Vec<CronEntry>) -> Result<()> {
        crate::cron::compile(entries).map(|_| ())
    }

    fn cron_slots(&self) -> Result<Vec<CronSlot>> {
        match self.call(&Request::CronSlots)? {
            Response::CronSlots(slots) => Ok(slots),
            other => Self::unexpected(&other),
        }
    }

    fn count(&self, filter: &ListFilter) -> Result<u64> {
        match self.call(&Request::Count { filter: filter.clone() })? {
            Response::Count(n) => Ok(n),
            other => Self::unexpected(&other),
        }
    }

    fn bulk(&self, action: crate::listing::BulkAction, filter: &ListFilter) -> Result<u64> {
        match self.call(&Request::Bulk { action, filter: filter.clone() })? {
            Response::Count(n) => Ok(n),
            other => Self::unexpected(&other),
        }
    }

    fn insert_flagged(&self, mut jobs: Vec<NewJob>) -> Result<Inserted> {
        self.insert_once_flagged(RequestId::new(), &mut jobs)
    }

    /// Checked here too, so a bad value never crosses the socket.
    fn set_progress(
        &self,
        id: JobId,
        attempt: u32,
        fraction: f64,
        note: Option<String>,
    ) -> Result<bool> {
        crate::progress::check(fraction, note.as_deref())?;
        let progress = crate::progress::Progress { attempt, fraction, note, at: 0 };
        match self.call(&Request::SetProgress { id, progress })? {
            Response::Count(n) => Ok(n == 1),
            other => Self::unexpected(&other),
        }
    }

    fn progress(&self, id: JobId) -> Result<Option<crate::progress::Progress>> {
        match self.call(&Request::Progress { id })? {
            Response::Progress(progress) => Ok(progress),
            other => Self::unexpected(&other),
        }
    }

    fn batch(&self, id: &str) -> Result<crate::batch::BatchStatus> {
        match self.call(&Request::Batch { id: id.to_string() })? {
            Response::Batch(status) => Ok(status),
            other => Self::unexpected(&other),
        }
    }

    fn processes(&self) -> Result<Vec<crate::processes::ProcessInfo>> {
        match self.call(&Request::Processes)? {
            Response::Processes(processes) => Ok(processes),
            other => Self::unexpected(&other),
        }
    }

    fn metrics(&self, since: Option<Micros>, queue: Option<&str>) -> Result<Vec<MetricPoint>> {
        match self.call(&Request::Metrics { since, queue: queue.map(str::to_string) })? {
            Response::Metrics(points) => Ok(points),
            other => Self::unexpected(&other),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// Keep the session's lease: a heartbeat every `every`, and in between, wait on the
/// connection, which the owner never writes to unasked, so that its end (the owner stopped
/// or died) is seen at once and marks the client `gone`. Returns when told to stop (at close,
/// which also shuts the connection down to wake the wait) or when the owner is gone.
fn heartbeat_loop(
    mut conn: Conn,
    every: Duration,
    answer_timeout: Duration,
    stopped: &crossbeam_channel::Receiver<()>,
    gone: &Mutex<Option<String>>,
) {
    let stopping = || !matches!(stopped.try_recv(), Err(crossbeam_channel::TryRecvError::Empty));
    let lost = |detail: String| {
        let mut gone = gone.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        gone.get_or_insert(detail);
    };
    loop {
        let _ = conn.reader.get_ref().set_read_timeout(Some(every));
        let waited = conn.reader.fill_buf().map(<[u8]>::len);
        if stopping() {
            return;
        }
        match waited {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Ok(0) => return lost("the owner closed the connection (it stopped or exited)".into()),
            Ok(_) => return lost("the owner sent a message nobody asked for".into()),
            Err(e) => return lost(format!("the connection to the owner failed: {e}")),
        }
        let _ = conn.reader.get_ref().set_read_timeout(Some(answer_timeout));
        match conn.round_trip(&Request::Heartbeat) {
            Ok(_) => {}
            Err(TripError::Lost(e) | TripError::Encode(e)) => return lost(e),
            // An owner that holds the store but does not answer: the next call finds out
            // whether another one can be reached, and says which pid does not answer if not.
            Err(TripError::Silent) => {
                return lost(format!(
                    "the owner did not answer a heartbeat within {:.1} s",
                    answer_timeout.as_secs_f64()
                ))
            }
        }
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Unreachable(msg) => {
                Error::Storage(format!("cannot reach the store's owner: {msg}"))
            }
            ConnectError::Refused(e) => e,
            ConnectError::NotAnswering(waited) => Error::Storage(format!(
                "the store's owner accepted the connection but did not answer within {:.1} s",
                waited.as_secs_f64()
            )),
        }
    }
}
