//! Who holds a store file: this process (the registry of the paths it has open) or another
//! one (found by scanning `/proc`), so that a refused open can name the holder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// Paths open in this process, each with the id of the process that opened it: redb refuses
/// a second open anyway, but this lets the error say "in this process" instead of blaming
/// another one. A child made by `fork` inherits the map but not the stores (their files are
/// closed in it, `crate::fork`), so entries of another pid are not open here.
fn open_paths() -> &'static Mutex<HashMap<PathBuf, u32>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, u32>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// A store file registered as open in this process, until this is dropped.
pub(crate) struct Registered(PathBuf);

impl Registered {
    /// Register the store file at `path` as open in this process. One already open here
    /// (however its path is spelled) is refused with [`Error::StorageLocked`] naming `path`
    /// and this process.
    pub(crate) fn claim(path: &Path) -> Result<Registered> {
        let abs = canonical(path)
            .map_err(|e| Error::Storage(format!("bad path {}: {e}", path.display())))?;
        let pid = std::process::id();
        let mut open = open_paths().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.insert(abs.clone(), pid) == Some(pid) {
            return Err(Error::StorageLocked {
                path: path.to_path_buf(),
                holder: Some(pid),
                same_process: true,
            });
        }
        Ok(Registered(abs))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = open_paths().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.get(&self.0) == Some(&std::process::id()) {
            open.remove(&self.0);
        }
    }
}

/// The path as the OS resolves it (symlinks and `..` followed), so two spellings of one file
/// are recognised as the same store. The file itself may not exist yet.
pub(crate) fn canonical(path: &Path) -> std::io::Result<PathBuf> {
    if path.exists() {
        return std::fs::canonicalize(path);
    }
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if parent.exists() => {
            Ok(std::fs::canonicalize(parent)?.join(name))
        }
        _ => Ok(abs),
    }
}

/// The other process that has `path` open, found by scanning `/proc/*/fd` (redb's open file
/// description locks carry no PID in `/proc/locks`). Best effort: `None` when not visible.
pub(crate) fn holder_pid(path: &Path) -> Option<u32> {
    let target = std::fs::canonicalize(path).ok()?;
    let me = std::process::id();
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && holds(&proc_entry.path(), &target) {
            return Some(pid);
        }
    }
    None
}

/// Whether the process at `proc_dir` (a `/proc` entry) has `path` open.
pub(crate) fn open_in(proc_dir: &Path, path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|target| holds(proc_dir, &target))
}

/// Whether the process at `proc_dir` has a descriptor on the canonical path `target`.
fn holds(proc_dir: &Path, target: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else { return false };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == target))
}
