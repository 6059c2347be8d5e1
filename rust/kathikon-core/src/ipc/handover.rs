//! Finding the next owner after the one a client talked to went away: the store is then
//! being released by the old owner (a graceful stop closes its connections first, then
//! checkpoints and lets go of the file) or already free (it died), and every client of it
//! races to open it. One wins and serves; the others connect to it. A try that finds the file
//! still held and no socket answering yet is repeated until one of the two works or the
//! node's connect timeout passes. A process that never owns (`takeover` off) only tries the
//! socket, until an owner serves or the timeout passes.
//!
//! A new node's open takes the same path: the store it opens may be changing hands.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::node::{acquire, Current, NodeConfig};
use crate::error::{Error, Result};

/// How long one try waits for a socket to answer before trying the file again.
const TRY_CONNECT: Duration = Duration::from_millis(50);

/// The store as this process holds it after its owner went away: the new owner's client, or
/// this process as the owner.
/// `previous` is the pid of the owner that went away (0 at open).
pub(super) fn next_owner(
    config: &NodeConfig,
    store: Option<&PathBuf>,
    previous: u32,
) -> Result<Current> {
    let deadline = Instant::now() + config.connect_timeout;
    let mut quick = config.clone();
    quick.connect_timeout = TRY_CONNECT;
    loop {
        match acquire(&quick, store, previous) {
            // Without `connect`, a held file is the answer (as it always was): no retries.
            Err(e) if config.connect && changing_hands(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Whether `e`, from one try of [`acquire`], may pass once the store has changed hands: the
/// file is held by another process whose socket does not answer yet, or (for a process that
/// never owns) no process serves the store yet.
fn changing_hands(e: &Error) -> bool {
    matches!(e, Error::StorageLocked { same_process: false, .. } | Error::OwnerGone { .. })
}
