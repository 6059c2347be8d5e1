//! Turning a panic inside redb into an error.
//!
//! redb may panic (rather than return an error) on some damaged files. A panic must never
//! reach the caller — in Python it would surface as a `PanicException`, not a Kathikon error —
//! so every call into redb runs under [`guarded`], which catches it and reports the store as
//! damaged. While a guarded call runs on a thread, the process's panic hook stays quiet for
//! that thread so users do not see a Rust backtrace for an error they already get as a value.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use crate::error::{Error, Result};

thread_local! {
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run `f`; a panic becomes [`Error::Corrupted`] for `path`.
pub(crate) fn guarded<T>(path: &std::path::Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_quiet_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    outcome.unwrap_or_else(|panic| {
        Err(Error::Corrupted {
            path: path.to_path_buf(),
            detail: format!("a panic while reading or writing it: {}", panic_text(panic.as_ref())),
            job: None,
        })
    })
}
