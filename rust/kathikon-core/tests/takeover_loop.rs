//! Owner after owner killed (`SIGKILL`) while three other processes use the store: each of
//! them inserts in a loop, one also claims and acknowledges, and whichever owns the store is
//! killed at once, again and again (sometimes within microseconds of its takeover, while it
//! may still be opening the file), with a fresh process started in its place. Every open and
//! every takeover must end in a store that works: no process may report the store damaged,
//! locked or unavailable, since nothing damaged it and a new owner is always on its way.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{config, job, scratch_dir, store_path};
use kathikon_core::ipc::{Node, NodeConfig, Role};
use kathikon_core::{Ack, Error, Outcome};

const KILLS: usize = 200;

/// One of the processes using the store, run as a child of this test binary: opens the store
/// (as owner or client), inserts in a loop while a second thread claims and acknowledges, and
/// prints `owner` once it owns the store and `ERR …` for every error other than the owner
/// going away mid-call (an unknown outcome, answered by the retry). Not a test of its own.
#[test]
#[ignore = "a user of the store in the takeover loop, which starts it"]
fn store_user_process() {
    let Ok(path) = std::env::var("KATHIKON_TEST_STORE_USER") else { return };
    let mut out = std::io::stdout();
    let mut say = |line: String| {
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    let node = match Node::open(NodeConfig {
        engine: config(Path::new(&path)),
        ..NodeConfig::default()
    }) {
        Ok(node) => Arc::new(node),
        Err(e) => return say(format!("ERR at open: {e:?}")),
    };
    {
        let node = node.clone();
        std::thread::spawn(move || loop {
            let claimed = node.retrying(|j| j.claim("default", 8, Duration::from_millis(50)));
            let Ok(claimed) = claimed else { continue };
            let acks = claimed
                .iter()
                .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
                .collect();
            let _ = node.jobs().and_then(|j| j.ack(acks)); // an ack to a gone owner fails
        });
    }
    let mut announced = false;
    loop {
        match node.insert(vec![job("default", "w")]) {
            Ok(_) | Err(Error::OwnerGone { .. }) => {}
            Err(e) => say(format!("ERR {e:?}")),
        }
        if !announced && node.role() == Role::Owner {
            announced = true;
            say("owner".into());
        }
    }
}

/// The users alive, killed when the test ends however it ends.
struct Users(Vec<Child>);

impl Drop for Users {
    fn drop(&mut self) {
        for user in &mut self.0 {
            let _ = user.kill();
            let _ = user.wait();
        }
    }
}

/// Start a store user; its `owner` and `ERR` lines go to `lines` with its pid.
fn spawn_user(path: &Path, lines: mpsc::Sender<(u32, String)>) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store_user_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env("KATHIKON_TEST_STORE_USER", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(std::result::Result::ok) {
            // The harness prints "test store_user_process ... " before the test's own output.
            if let Some(at) = line.find("owner").or_else(|| line.find("ERR")) {
                let _ = lines.send((pid, line[at..].to_string()));
            }
        }
    });
    child
}

#[test]
fn owners_killed_again_and_again_never_make_a_process_report_damage_or_a_locked_store() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let (tx, lines) = mpsc::channel();
    let mut users = Users((0..3).map(|_| spawn_user(&path, tx.clone())).collect());
    let mut errors = Vec::new();
    let mut kills = 0;
    while kills < KILLS {
        let (pid, line) = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no process took the store over after kill {kills}"));
        if line.starts_with("ERR") {
            errors.push(format!("pid {pid} after kill {kills}: {line}"));
            continue;
        }
        // Kill the new owner soon after its takeover, at a different moment each time.
        std::thread::sleep(Duration::from_micros((kills as u64 * 7919) % 20_000));
        let at = users.0.iter().position(|c| c.id() == pid).expect("a user that owns");
        let mut owner = users.0.swap_remove(at);
        owner.kill().unwrap();
        owner.wait().unwrap();
        kills += 1;
        users.0.push(spawn_user(&path, tx.clone()));
    }
    drop(users);
    assert!(errors.is_empty(), "{} errors: {errors:#?}", errors.len());
}
