//! [`RequestId`]: names one insert sent over the socket, so that the insert can be sent again
//! after its owner went away with the outcome unknown, and stored exactly once.
//!
//! The store that applies an insert carrying a request id remembers, in the same transaction
//! as the jobs (so durably with them), which jobs it stored; a later insert with the same id
//! is answered with those jobs instead of storing new ones. The memory is kept for
//! [`REQUEST_MEMORY`] after the request was made and then pruned, which is far longer than a
//! resend takes (the next owner is found within the client's connect timeout). Inserts made
//! by the process that owns the store carry none and pay nothing for this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Micros, SystemClock};

/// How long a store remembers the jobs a request inserted.
pub const REQUEST_MEMORY: Duration = Duration::from_secs(15 * 60);

/// One insert request: when it was first made (the system clock, µs; every process sharing a
/// store runs on it) and a number unique among this machine's requests of that microsecond.
/// Ordered by time first, so the oldest are pruned by one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// When the request was first made.
    pub at: Micros,
    /// The process id in the high half, a per-process counter in the low half.
    pub nonce: u64,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl RequestId {
    /// A new request id, never handed out before on this machine (a pid is reused only
    /// after its process exited, and then at another microsecond).
    pub fn new() -> RequestId {
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        RequestId {
            at: SystemClock.now(),
            nonce: (u64::from(std::process::id()) << 32) | (seq & 0xffff_ffff),
        }
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}
