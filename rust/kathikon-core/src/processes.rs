//! Which processes work on a store ([`crate::Jobs::processes`]): the owner, and every client
//! session its socket server knows, each with its lease, the jobs it holds and the queues it
//! claims from. Read for a dashboard's workers page, never on a job's path. On a database
//! shared by peers (`PostgreSQL`) every process is a [`ProcessRole::Node`] with a lease
//! instead, listed as the database's node rows show them.
//!
//! The owner's own jobs are not tracked per claim (that would cost every claim and ack of an
//! owner-local app a lock): they are the executing jobs no client session holds. The sessions
//! are read before and after the executing jobs are listed, and a job held by a session in
//! either read is that session's, so a job a client claims or acks meanwhile is never shown
//! under the owner; only a claim answered in the instant between the two reads may be, and a
//! job whose client's lease just ran out, until its rescue commits (a client that disconnects
//! stays listed, holding its jobs, until theirs has).

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;
use crate::job::JobId;

/// Whether a process owns the store, uses its owner's socket, or is one of the peers sharing
/// a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessRole {
    /// It opened the store file and serves it.
    Owner,
    /// It talks to the owner over the store's socket.
    Client,
    /// One of the peers sharing a `PostgreSQL` database, each with its node row and lease.
    Node,
}

impl ProcessRole {
    /// `"owner"`, `"client"` or `"node"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::Owner => "owner",
            ProcessRole::Client => "client",
            ProcessRole::Node => "node",
        }
    }
}

/// One process working on the store, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its process id.
    pub pid: u32,
    /// Owner or client.
    pub role: ProcessRole,
    /// The host it runs on (the owner's: clients share its machine, through a Unix socket; a
    /// node's own).
    pub hostname: String,
    /// When it opened the store (the owner, a node) or connected to the owner (a client), on
    /// the engine clock.
    pub connected_at: Micros,
    /// When the owner last heard from it (the owner: now; a node: its latest heartbeat).
    pub last_seen: Micros,
    /// When its claims are rescued if the owner hears nothing more from it (`None` for the
    /// owner, which holds the file).
    pub lease_expires: Option<Micros>,
    /// The jobs it holds (executing), by id, ascending.
    pub jobs: Vec<JobId>,
    /// The queues it has claimed from or waited on, by name.
    pub queues: Vec<String>,
}

/// The client sessions an owner serves: implemented by its socket server, which the engine
/// asks without owning it.
pub trait Peers: Send + Sync {
    /// Every connected client session, with `now` as the engine clock's present (to place
    /// the server's monotonic times on it). The owner's entry is not among them.
    fn peers(&self, now: Micros) -> Vec<ProcessInfo>;
}

/// This machine's host name, read once (empty when the system does not say).
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is valid for `buf.len()` bytes; gethostname writes at most that many.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return String::new();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

/// The owner's entry and the clients', owner first then clients by pid: `executing` are the
/// store's executing jobs, listed between the two reads of the sessions `before` and `after`
/// (see the module doc); `after` are the clients reported.
pub fn assemble(
    mut owner: ProcessInfo,
    executing: Vec<JobId>,
    before: &[ProcessInfo],
    mut after: Vec<ProcessInfo>,
) -> Vec<ProcessInfo> {
    let held: HashSet<JobId> =
        before.iter().chain(after.iter()).flat_map(|p| p.jobs.iter().copied()).collect();
    owner.jobs = executing.into_iter().filter(|id| !held.contains(id)).collect();
    owner.jobs.sort_unstable();
    after.sort_by_key(|p| (p.pid, p.connected_at));
    let mut out = Vec::with_capacity(after.len() + 1);
    out.push(owner);
    out.extend(after);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, role: ProcessRole, jobs: Vec<JobId>) -> ProcessInfo {
        ProcessInfo {
            pid,
            role,
            hostname: String::new(),
            connected_at: 0,
            last_seen: 0,
            lease_expires: None,
            jobs,
            queues: Vec::new(),
        }
    }

    #[test]
    fn a_job_held_by_a_client_in_either_read_is_not_the_owners() {
        let owner = entry(1, ProcessRole::Owner, Vec::new());
        // Job 5 was acked by client 2 between the reads, job 6 claimed by client 3.
        let before = vec![entry(2, ProcessRole::Client, vec![5])];
        let after =
            vec![entry(3, ProcessRole::Client, vec![6]), entry(2, ProcessRole::Client, Vec::new())];
        let all = assemble(owner, vec![7, 5, 6, 4], &before, after);
        assert_eq!(all[0].jobs, vec![4, 7], "the owner keeps only what no session held");
        let pids: Vec<u32> = all.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![1, 2, 3], "owner first, then clients by pid");
    }
}
