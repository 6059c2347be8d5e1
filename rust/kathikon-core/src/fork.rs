//! What a child made by `fork` (without `exec`) inherits, and must not keep.
//!
//! A child gets a copy of every descriptor and none of the threads. Two of those descriptors
//! would hurt other processes if the child kept them: the store file, whose lock (redb's locks
//! belong to the open file description, shared by every copy of the descriptor) would outlive
//! an owner that died while the child lives, and the owner's listening socket, whose backlog
//! would accept connections nobody answers. Nor should it keep copies of the connections
//! between an owner and its clients, which would then not end when the process at one end
//! dies (clients would wait on a dead owner; an owner would rescue a dead client's jobs only
//! at its lease's end). All
//! are registered here ([`CloseInForkedChild`]) and closed in the child by a `pthread_atfork`
//! handler, before anything else runs there. Closing the child's copy leaves the parent's
//! untouched.
//!
//! Everything else a process holds on a store (a client's connections, an owner's engine and
//! server) belongs to threads the child does not have: [`generation`] changes in every child,
//! so that [`crate::ipc::Node`] sees on its next call that it was forked and opens a session
//! of its own instead of using (or closing) its parent's. Descriptors are made close-on-exec
//! by the standard library, so children that `exec` keep none of them.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

/// How many descriptors can be registered at once: a few per store a process owns, three per
/// connection it serves, two per connection it holds to an owner. Past this, a descriptor is
/// left to the child.
const SLOTS: usize = 1024;

const FREE: i32 = -1;

static REGISTERED: [AtomicI32; SLOTS] = [const { AtomicI32::new(FREE) }; SLOTS];

/// Bumped in every child made by `fork`.
static GENERATION: AtomicU64 = AtomicU64::new(0);

static INSTALL: Once = Once::new();

/// Runs in the child right after `fork`, on the thread that forked, before `fork` returns:
/// only async-signal-safe calls are allowed here, and atomics and `close` are.
extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    for slot in &REGISTERED {
        let fd = slot.swap(FREE, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was registered as open by its holder, which deregisters it before
            // closing it; this closes the child's copy only.
            unsafe { libc::close(fd) };
        }
    }
}

/// Install the `fork` handler (once per process; children inherit it).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `in_child` is an `extern "C" fn()` that only touches atomics and calls
        // `close`, as an atfork child handler must.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// Which process of a line of `fork`s this is: changes in every child, so a holder that
/// recorded it can tell it was forked. A relaxed load: free on every call.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// A descriptor closed in every child made by `fork` while this lives. Drop it before the
/// descriptor is closed, so a child never closes a number since reused for something else.
#[derive(Debug)]
pub(crate) struct CloseInForkedChild {
    slot: Option<(usize, RawFd)>,
}

impl CloseInForkedChild {
    /// Register `fd` (best effort: when every slot is taken, it is not closed in children).
    pub(crate) fn new(fd: RawFd) -> CloseInForkedChild {
        install();
        let slot = REGISTERED.iter().enumerate().find_map(|(i, slot)| {
            slot.compare_exchange(FREE, fd, Ordering::SeqCst, Ordering::Relaxed)
                .ok()
                .map(|_| (i, fd))
        });
        CloseInForkedChild { slot }
    }
}

impl Drop for CloseInForkedChild {
    fn drop(&mut self) {
        if let Some((i, fd)) = self.slot {
            let _ = REGISTERED[i].compare_exchange(fd, FREE, Ordering::SeqCst, Ordering::Relaxed);
        }
    }
}
