//! Any bytes as a store file: the engine opens it or refuses with a typed error, and every call
//! on an opened store returns a value or a typed error. A panic that escapes the engine (its
//! guard turns redb's panics into `Corrupted`) aborts the run and is reported as a crash.
#![no_main]

use std::time::Duration;

use kathikon_core::{Ack, Engine, EngineConfig, Error, ListFilter, NewJob, Outcome};
use libfuzzer_sys::fuzz_target;

fn typed(err: &Error) {
    assert!(
        !matches!(err, Error::Closed | Error::StorageLocked { .. }),
        "unexpected error {err:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile_dir();
    let path = dir.join("fuzz.redb");
    std::fs::write(&path, data).unwrap();
    let config = EngineConfig { path: Some(path.clone()), ..EngineConfig::default() };
    match Engine::open(config) {
        Err(err) => typed(&err),
        Ok(engine) => {
            if let Err(e) = engine.list(&ListFilter::default()) {
                typed(&e);
            }
            if let Err(e) = engine.counts() {
                typed(&e);
            }
            match engine.claim("a", 4, Duration::ZERO) {
                Ok(jobs) => {
                    let acks = jobs
                        .iter()
                        .map(|j| Ack { id: j.id, attempt: j.attempt, outcome: Outcome::Complete })
                        .collect();
                    if let Err(e) = engine.ack(acks) {
                        typed(&e);
                    }
                }
                Err(e) => typed(&e),
            }
            let job = NewJob {
                queue: "a".into(),
                worker: "w".into(),
                args: "{}".into(),
                meta: "{}".into(),
                tags: Vec::new(),
                max_attempts: 1,
                priority: 0,
                scheduled_at: None,
            };
            if let Err(e) = engine.insert(vec![job]) {
                typed(&e);
            }
            if let Err(e) = engine.prune(Duration::ZERO) {
                typed(&e);
            }
            engine.close();
        }
    }
    let _ = std::fs::remove_file(&path);
});

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
