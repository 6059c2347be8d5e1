//! Any bytes given to the record decoder: a job or `Corrupted`, never a panic; a decoded job
//! encodes and decodes back to itself.
#![no_main]

use kathikon_core::storage::{decode_record, encode_record};
use kathikon_core::Error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_record(7, data) {
        Ok(job) => assert_eq!(decode_record(7, &encode_record(&job)).unwrap(), job),
        Err(Error::Corrupted { .. }) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }
});
