//! Where the owner's socket lives and who may talk to it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The socket beside the store: `<store file name>.sock` in the store's directory. `store`
/// must be canonical, so every spelling of the store's path finds the same socket.
pub fn socket_path(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".sock");
    store.with_file_name(name)
}

/// A spelling of a socket path that fits `sockaddr_un` (108 bytes on Linux). Long paths go
/// through `/proc/self/fd/<dir>/<name>`, with the directory held open while the spelling is
/// in use, so stores deep in long directories still get their socket beside them.
pub(crate) struct ShortPath {
    pub path: PathBuf,
    _dir: Option<File>,
}

const SUN_PATH_MAX: usize = 100; // 108 minus room for the terminating NUL and some slack

pub(crate) fn short(path: &Path) -> io::Result<ShortPath> {
    if path.as_os_str().len() < SUN_PATH_MAX {
        return Ok(ShortPath { path: path.to_path_buf(), _dir: None });
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path has no file name"));
    };
    let dir = File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    if short.as_os_str().len() >= SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the store's file name is too long for a socket name ({} bytes); use a \
                 shorter file name",
                name.len()
            ),
        ));
    }
    Ok(ShortPath { path: short, _dir: Some(dir) })
}

/// The uid of the process at the other end of `stream` (`SO_PEERCRED`).
pub(crate) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and sized for SO_PEERCRED's `ucred`; the
    // descriptor is a live Unix socket owned by `stream` for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(cred.uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This process's effective uid.
pub(crate) fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
