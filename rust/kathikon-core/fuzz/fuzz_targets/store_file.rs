//! Any bytes as a store file: the engine opens it or refuses with a typed error, and every call
//! on an opened store returns a value or a typed error. A panic that escapes the engine (its
//! guard turns redb's panics into `Corrupted`) aborts the run and is reported as a crash. The
//! body is `kathikon_core::fuzzing`, which `tests/fuzz_corpus.rs` also runs on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kathikon_core::fuzzing::store_file_target(&tempfile_dir(), data));

/// One scratch directory per fuzzing process, in memory when /dev/shm exists.
fn tempfile_dir() -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("kathikon-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
