//! A process made by `fork` (without `exec`), as a job that forks makes one, and an owner that
//! holds the store but does not answer. With real processes: a forked child of the owner or of
//! a client uses the store through a session of its own while its parent keeps working; an
//! owner killed (`SIGKILL`) while its forked child lives is taken over at once, since the child
//! keeps neither the store's lock nor its socket; an owner stopped by `SIGSTOP` makes a call
//! fail with [`Error::OwnerNotAnswering`] naming it, within the bound, instead of hanging; a
//! client killed while its forked child lives has its jobs rescued at once, not at lease
//! expiry.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, job, scratch_dir, store_path};
use kathikon_core::ipc::{Node, NodeConfig, Role};
use kathikon_core::{Ack, Error, ListFilter, Outcome};

fn node(path: &Path) -> Node {
    Node::open(NodeConfig { engine: config(path), ..NodeConfig::default() }).unwrap()
}

fn stored(node: &Node) -> usize {
    node.jobs()
        .unwrap()
        .list(&ListFilter { limit: 100_000, ..ListFilter::default() })
        .unwrap()
        .len()
}

/// Fork; the child runs `child` and exits with its code at once (no destructors, as a forked
/// child that ends with `os._exit` does). Returns the child's pid.
fn fork(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `child` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn exit_code(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `pid` is a child of this process; `status` is valid for writes.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    }
}

/// The child's work: insert 20 jobs in 10 calls, read one back and list the store, through
/// `node` as inherited from its parent. 0 when every call answered as expected.
fn child_uses(node: &Node) -> i32 {
    for _ in 0..10 {
        let Ok(jobs) = node.insert(vec![job("child", "w"), job("child", "w")]) else { return 1 };
        let Ok(read) = node.jobs().and_then(|j| j.get(jobs[0].id)) else { return 2 };
        if read.queue != "child" {
            return 3;
        }
    }
    if node.role() != Role::Client {
        return 4;
    }
    node.close();
    0
}

/// While `node`'s process forks a child that uses the store, threads of it keep inserting,
/// claiming and acknowledging: every job of the parent completes, none is left executing,
/// and the child's jobs are stored.
fn parent_unaffected_while_child_uses(node: &Arc<Node>) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (node, stop, done) = (node.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    node.insert(vec![job("parent", "w")]).unwrap();
                    let jobs = node.jobs().unwrap();
                    for claimed in jobs.claim("parent", 4, Duration::from_millis(50)).unwrap() {
                        let ack = Ack {
                            id: claimed.id,
                            attempt: claimed.attempt,
                            outcome: Outcome::Complete,
                        };
                        jobs.ack(vec![ack]).unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            fork(|| child_uses(node))
        })
        .collect();
    for child in children {
        assert_eq!(exit_code(child), 0, "a forked child could not use the store");
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let jobs = node.jobs().unwrap();
    // What the workers inserted last and did not claim yet is finished here.
    while let Ok(claimed) = jobs.claim("parent", 100, Duration::ZERO) {
        if claimed.is_empty() {
            break;
        }
        let acks = claimed
            .iter()
            .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
            .collect();
        jobs.ack(acks).unwrap();
    }
    let all = jobs.list(&ListFilter { limit: 100_000, ..ListFilter::default() }).unwrap();
    let executing = all.iter().filter(|j| j.state == kathikon_core::JobState::Executing).count();
    assert_eq!(executing, 0, "jobs held executing after the children used the store");
    assert_eq!(all.iter().filter(|j| j.queue == "child").count(), 3 * 20);
    assert!(done.load(Ordering::Relaxed) > 0);
    assert!(all.iter().filter(|j| j.queue == "parent").all(|j| j.attempt == 1));
}

#[test]
fn a_forked_child_of_the_owner_uses_the_store_through_its_own_session() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let node = Arc::new(node(&path));
    assert_eq!(node.role(), Role::Owner);
    parent_unaffected_while_child_uses(&node);
    assert_eq!(node.role(), Role::Owner);
}

#[test]
fn a_forked_child_of_a_client_uses_the_store_through_its_own_session() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let owner = spawn_owner(&path);
    let node = Arc::new(node(&path));
    assert_eq!(node.role(), Role::Client);
    parent_unaffected_while_child_uses(&node);
    assert_eq!(node.owner_pid(), owner.id());
    stop_owner(owner);
}

#[test]
fn a_forked_child_that_never_uses_the_store_leaves_its_parent_alone_when_it_ends() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let owner = spawn_owner(&path);
    let node = node(&path);
    // Dropping the inherited node in the child must neither shut the parent's connections
    // down nor wait for threads the child does not have.
    let child = fork(|| {
        node.close();
        // SAFETY: the child exits right after, and never uses `node` again.
        drop(unsafe { std::ptr::read(&raw const node) });
        0
    });
    assert_eq!(exit_code(child), 0);
    node.insert(vec![job("default", "w")]).unwrap();
    assert_eq!(stored(&node), 1);
    assert_eq!(node.role(), Role::Client);
    stop_owner(owner);
}

#[test]
fn an_owner_killed_while_its_forked_child_lives_is_taken_over_at_once() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let mut owner = spawn_owner(&path);
    let sleeper = owner.fork_sleeper();
    owner.child.kill().unwrap();
    owner.child.wait().unwrap();
    let started = Instant::now();
    let taken = Node::open(NodeConfig {
        engine: config(&path),
        connect_timeout: Duration::from_secs(2),
        ..NodeConfig::default()
    });
    let waited = started.elapsed();
    // SAFETY: plain kill of the sleeping child this test's owner process made.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    let taken = taken.unwrap();
    assert_eq!(taken.role(), Role::Owner, "the store was not taken over (waited {waited:?})");
    taken.insert(vec![job("default", "w")]).unwrap();
}

#[test]
fn clients_of_an_owner_killed_while_its_forked_child_lives_see_it_gone_at_once() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let mut owner = spawn_owner(&path);
    let answer_timeout = Duration::from_secs(120);
    let client =
        Node::open(NodeConfig { engine: config(&path), answer_timeout, ..NodeConfig::default() })
            .unwrap();
    assert_eq!(client.role(), Role::Client);
    // Forked once the client's connections are open: the child has a copy of the owner's.
    let sleeper = owner.fork_sleeper();
    owner.child.kill().unwrap();
    owner.child.wait().unwrap();
    let started = Instant::now();
    // The connections end with the owner (the child holds no copy of them), so this insert
    // goes to the next owner, this process, instead of waiting for an answer.
    let inserted = client.insert(vec![job("default", "w")]);
    let waited = started.elapsed();
    // SAFETY: plain kill of the sleeping child this test's owner process made.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    inserted.unwrap();
    assert_eq!(client.role(), Role::Owner);
    assert!(waited < answer_timeout / 4, "the client waited {waited:?} for a dead owner");
}

#[test]
fn a_client_killed_while_its_forked_child_lives_loses_its_jobs_at_once() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let owner = node(&path);
    let id = owner.insert(vec![job("default", "w")]).unwrap()[0].id;
    let mut client = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "client_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env("KATHIKON_FORK_CLIENT", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    // The test harness may print its own words before it on the line.
    while !line.contains("claimed ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the client process exited early");
    }
    let sleeper: libc::pid_t = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let jobs = owner.jobs().unwrap();
    assert_eq!(jobs.get(id).unwrap().state, kathikon_core::JobState::Executing);
    client.kill().unwrap();
    client.wait().unwrap();
    // Its lease is 120 s: only its connections ending can free the job this soon.
    let deadline = Instant::now() + CLIENT_LEASE / 4;
    let state = loop {
        let state = jobs.get(id).unwrap().state;
        if state != kathikon_core::JobState::Executing || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: plain kill of the sleeping child the client process made.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    assert_ne!(state, kathikon_core::JobState::Executing, "the dead client's job was not rescued");
}

/// The lease of [`client_process`]'s session.
const CLIENT_LEASE: Duration = Duration::from_secs(120);

/// A client, run as a child process of this test binary: claims one job, forks a child that
/// only sleeps, says so, and waits to be killed. Not a test of its own.
#[test]
#[ignore = "the client process of the fork tests, which start it"]
fn client_process() {
    let Ok(path) = std::env::var("KATHIKON_FORK_CLIENT") else { return };
    let node = Node::open(NodeConfig {
        engine: config(Path::new(&path)),
        lease: CLIENT_LEASE,
        ..NodeConfig::default()
    })
    .unwrap();
    assert_eq!(node.role(), Role::Client);
    let claimed = node.jobs().unwrap().claim("default", 1, Duration::from_secs(5)).unwrap();
    assert_eq!(claimed.len(), 1);
    let sleeper = fork_sleeper();
    let mut out = std::io::stdout();
    writeln!(out, "claimed {} {sleeper}", claimed[0].id).unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

/// Fork a child that only sleeps; its pid, once it runs (after the fork handlers).
fn fork_sleeper() -> libc::pid_t {
    let mut running = [0; 2];
    // SAFETY: `running` has room for the two descriptors of a pipe.
    assert_eq!(unsafe { libc::pipe(running.as_mut_ptr()) }, 0);
    // SAFETY: the child only says it runs, sleeps, and `_exit`s.
    let sleeper = match unsafe { libc::fork() } {
        0 => unsafe {
            libc::write(running[1], [1u8].as_ptr().cast(), 1);
            libc::sleep(60);
            libc::_exit(0);
        },
        pid => pid,
    };
    let mut byte = [0u8];
    // SAFETY: reads one byte into `byte`.
    assert_eq!(unsafe { libc::read(running[0], byte.as_mut_ptr().cast(), 1) }, 1);
    // SAFETY: the pipe's descriptors, not used after.
    unsafe {
        libc::close(running[0]);
        libc::close(running[1]);
    }
    sleeper
}

#[test]
fn a_stopped_owner_makes_calls_fail_naming_it_within_the_bound() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let owner = spawn_owner(&path);
    let pid = owner.id();
    let bound = Duration::from_millis(500);
    let client = Node::open(NodeConfig {
        engine: config(&path),
        connect_timeout: bound,
        answer_timeout: bound,
        ..NodeConfig::default()
    })
    .unwrap();
    assert_eq!(client.role(), Role::Client);
    // SAFETY: signals to the owner process this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    wait_until_stopped(pid);
    let insert = client.insert(vec![job("default", "w")]);
    let stats = client.retrying(|jobs| jobs.counts());
    // A process opening the store anew meets an owner that accepts but does not answer.
    drop(client);
    let fresh = Node::open(NodeConfig {
        engine: config(&path),
        connect_timeout: bound,
        answer_timeout: bound,
        ..NodeConfig::default()
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    for (what, error) in [("insert", insert.err()), ("counts", stats.err()), ("open", fresh.err())]
    {
        match error {
            Some(e @ Error::OwnerNotAnswering { owner: Some(owner), .. }) => {
                assert_eq!(owner, pid, "{what}");
                let text = e.to_string();
                assert!(text.contains(&format!("pid {pid}")) && text.contains("SIGSTOP"), "{text}");
            }
            other => panic!("{what} against a stopped owner: {other:?}"),
        }
    }
    // Resumed, the owner answers again.
    let client = node(&path);
    client.insert(vec![job("default", "w")]).unwrap();
    assert_eq!(client.owner_pid(), pid);
    stop_owner(owner);
}

/// The owner, run as a child process of this test binary: opens the store and says so, then
/// forks a child that only sleeps each time its stdin says `fork` (and answers with the
/// child's pid), and closes the store when its stdin says anything else, or is killed. Not a
/// test of its own.
#[test]
#[ignore = "the owner process of the fork tests, which start it"]
fn owner_process() {
    let Ok(path) = std::env::var("KATHIKON_FORK_OWNER") else { return };
    let node = node(Path::new(&path));
    assert_eq!(node.role(), Role::Owner);
    let mut out = std::io::stdout();
    writeln!(out, "owner ready").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap() > 0 && line.trim() == "fork" {
        line.clear();
        let sleeper = fork_sleeper();
        writeln!(out, "forked {sleeper}").unwrap();
        out.flush().unwrap();
    }
    node.close();
}

/// Wait until `pid` is stopped (state `T` in `/proc/<pid>/stat`): a signal is delivered
/// asynchronously, and the process may answer a little longer.
fn wait_until_stopped(pid: u32) {
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the command name, which is in parentheses.
        if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Owner {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Owner {
    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Make the owner fork a child that sleeps; its pid.
    fn fork_sleeper(&mut self) -> libc::pid_t {
        writeln!(self.child.stdin.as_mut().unwrap(), "fork").unwrap();
        let mut line = String::new();
        while !line.contains("forked ") {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "the owner process exited");
        }
        line.trim().rsplit(' ').next().unwrap().parse().unwrap()
    }
}

fn spawn_owner(path: &Path) -> Owner {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "owner_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env("KATHIKON_FORK_OWNER", path)
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
    Owner { child, out }
}

fn stop_owner(mut owner: Owner) {
    let _ = owner.child.stdin.take().map(|mut s| writeln!(s, "stop"));
    // Keep reading, so the owner's last output finds its pipe open.
    let _ = std::io::copy(&mut owner.out, &mut std::io::sink());
    owner.child.wait().unwrap();
}
