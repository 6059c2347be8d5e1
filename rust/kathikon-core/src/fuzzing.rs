//! The fuzz targets' bodies, shared by `cargo fuzz` (`fuzz/fuzz_targets/`, nightly) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus and runs a short seeded random
//! search on stable in every CI run. Each function panics when the engine breaks a promise;
//! anything else it returns normally. Not a stable API.

use std::path::Path;
use std::time::Duration;

use crate::storage::{decode_record, encode_record};
use crate::{Ack, Engine, EngineConfig, Error, Jobs, ListFilter, NewJob, Outcome};

/// Any bytes given to the record decoder: a job or `Corrupted` naming the job, never a panic;
/// a decoded job encodes and decodes back to itself.
pub fn decode_record_target(data: &[u8]) {
    match decode_record(7, data) {
        Ok(job) => assert_eq!(decode_record(7, &encode_record(&job)).unwrap(), job),
        Err(Error::Corrupted { detail, .. }) => {
            assert!(detail.starts_with("job 7"), "the error does not name the job: {detail}");
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fn typed(err: &Error) {
    assert!(
        !matches!(err, Error::Closed | Error::StorageLocked { .. }),
        "unexpected error {err:?}"
    );
}

/// Any bytes as a store file at `dir/fuzz.redb`: the engine opens it or refuses with a typed
/// error, and every call on an opened store returns a value or a typed error. A panic that
/// escapes the engine (its guard turns redb's panics into `Corrupted`) fails the caller.
pub fn store_file_target(dir: &Path, data: &[u8]) {
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
            if let Err(e) = engine.quarantined() {
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
                unique: None,
                batch: None,
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
}
