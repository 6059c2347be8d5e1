//! Finding the next owner after the one a client talked to went away: the store is then
//! being released by the old owner (a graceful stop closes its connections first, then
//! checkpoints and lets go of the file) or already free (it died), and every client of it
//! races to open it. One wins and serves; the others connect to it. A try that finds the file
//! still held and no socket answering yet is repeated until one of the two works or the
//! node's connect timeout passes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::node::{acquire, Current, NodeConfig};
use crate::error::{Error, Result};

/// How long one try waits for a socket to answer before trying the file again.
const TRY_CONNECT: Duration = Duration::from_millis(50);

/// The store as this process holds it after its owner went away: the new owner's client, or
/// this process as the owner.
pub(super) fn next_owner(config: &NodeConfig, store: Option<&PathBuf>) -> Result<Current> {
    let deadline = Instant::now() + config.connect_timeout;
    let mut quick = config.clone();
    quick.connect_timeout = TRY_CONNECT;
    loop {
        match acquire(&quick, store) {
            Err(Error::StorageLocked { same_process: false, .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(Error::StorageLocked { same_process: false, .. }) => {
                return acquire(config, store);
            }
            other => return other,
        }
    }
}
