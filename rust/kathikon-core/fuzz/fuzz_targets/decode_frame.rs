//! Any bytes given to the socket's decoder (as a request, as a response, and as a stream of
//! frames): a message or an error, never a panic; a decoded request encodes and decodes back
//! to itself.
#![no_main]

use kathikon_core::ipc::frame::{decode, encode, read_frame};
use kathikon_core::ipc::protocol::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<Request>(data) {
        let mut buf = Vec::new();
        encode(&request, &mut buf).unwrap();
        assert_eq!(decode::<Request>(&buf[4..]).unwrap(), request);
    }
    let _ = decode::<Response>(data);
    let mut reader = data;
    let mut payload = Vec::new();
    while read_frame(&mut reader, &mut payload).is_ok() {
        let _ = decode::<Request>(&payload);
    }
});
