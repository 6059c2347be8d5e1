//! Any bytes given to the record decoder: a job or `Corrupted`, never a panic; a decoded job
//! encodes and decodes back to itself. The body is `kathikon_core::fuzzing`, which
//! `tests/fuzz_corpus.rs` also runs on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kathikon_core::fuzzing::decode_record_target(data));
