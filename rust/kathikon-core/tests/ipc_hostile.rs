//! Hostile bytes on the owner's socket cost the owner no memory: a length prefix is never
//! trusted. Before the hello only a hello-sized frame is read; after it, a payload's buffer
//! grows with the bytes that arrive. Measured on a real owner (this process) serving real
//! Unix sockets, through the kernel's own count of this process's resident memory.
//!
//! One test in its own binary, so no other test's allocations move the peak it reads.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use common::{open, scratch_dir, store_path};
use kathikon_core::ipc::frame::{self, MAX_FRAME, PROTOCOL_VERSION};
use kathikon_core::ipc::protocol::{Request, Response};
use kathikon_core::ipc::{socket_path, Server};

/// Connections per attack; 20 of them took an owner on main from 29 MiB to 1.1 GiB.
const CONNECTIONS: usize = 20;

/// Far above what the owner's threads and buffers need, far below one 64 MiB frame.
const GROWTH_BOUND: u64 = 32 << 20;

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Reset the peak resident size (`VmHWM`) to the current one, so it shows only what follows.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// The owner read the connection's bytes and closed it: reads end (generous bound).
fn wait_closed(stream: &mut UnixStream) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the owner did not close the connection: {other:?}"),
    }
}

fn hello(stream: &mut UnixStream, session: u64) {
    let mut buf = Vec::new();
    let hello = Request::Hello { version: PROTOCOL_VERSION, pid: 4242, session, lease_ms: 60_000 };
    frame::encode(&hello, &mut buf).unwrap();
    stream.write_all(&buf).unwrap();
    frame::read_frame(stream, &mut buf).unwrap();
    assert!(matches!(frame::decode(&buf).unwrap(), Response::Hello { .. }));
}

#[test]
fn huge_length_prefixes_before_and_after_the_hello_cost_the_owner_no_memory() {
    let dir = scratch_dir();
    let path = store_path(&dir);
    let engine = Arc::new(open(&path));
    let store = std::fs::canonicalize(&path).unwrap();
    let _server = Server::start(engine, &store).unwrap();
    let huge = u32::try_from(MAX_FRAME).unwrap().to_le_bytes();

    reset_peak();
    let before = status_bytes("VmRSS:");

    // Before the hello: four bytes announcing 64 MiB. The owner closes each at once.
    let mut early: Vec<UnixStream> =
        (0..CONNECTIONS).map(|_| UnixStream::connect(socket_path(&store)).unwrap()).collect();
    for stream in &mut early {
        stream.write_all(&huge).unwrap();
    }
    for stream in &mut early {
        wait_closed(stream);
    }

    // After the hello: 64 MiB announced, a few bytes sent, all held open together, then
    // half-closed so the owner sees the frame end early and closes each connection.
    let mut late: Vec<UnixStream> = (0..CONNECTIONS)
        .map(|i| {
            let mut stream = UnixStream::connect(socket_path(&store)).unwrap();
            hello(&mut stream, 1000 + i as u64);
            stream.write_all(&huge).unwrap();
            stream.write_all(b"only these bytes").unwrap();
            stream
        })
        .collect();
    for stream in &mut late {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    for stream in &mut late {
        wait_closed(stream);
    }

    let peak = status_bytes("VmHWM:");
    let growth = peak.saturating_sub(before);
    assert!(
        growth < GROWTH_BOUND,
        "the owner's resident memory grew by {} MiB (from {} MiB to a peak of {} MiB) for \
         {} connections that each sent a few bytes",
        growth >> 20,
        before >> 20,
        peak >> 20,
        2 * CONNECTIONS
    );
}
