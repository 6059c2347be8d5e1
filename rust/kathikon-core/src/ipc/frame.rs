//! Frames on the owner's socket: a little-endian `u32` length, then that many bytes of
//! postcard. Every decode goes through [`decode`], which never panics on any input (it is
//! fuzzed), so a malformed frame can only close the connection it came on.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bumped whenever a message changes shape. Both ends say theirs in the hello; a mismatch is
/// refused with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 7;

/// Largest frame either end accepts (64 MiB). A bigger length prefix closes the connection
/// before anything is allocated for it.
pub const MAX_FRAME: usize = 64 << 20;

/// Largest frame the owner reads before a connection's hello (4 KiB). A hello is a few dozen
/// bytes; anything bigger before it is not a Kathikon client and closes the connection.
pub const MAX_HELLO_FRAME: usize = 4 << 10;

/// A payload's buffer starts at most this big and then at most doubles with each chunk that
/// arrives, so its memory follows the bytes actually sent, never the length prefix alone:
/// a peer that announces 64 MiB and sends four bytes costs this much, not 64 MiB.
const FIRST_CHUNK: usize = 64 << 10;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The other end closed the connection between frames.
    Closed,
    /// The length prefix (first) exceeds the limit in force (second): [`MAX_FRAME`], or
    /// [`MAX_HELLO_FRAME`] before the hello.
    TooLarge(usize, usize),
    /// The socket failed, or closed in the middle of a frame.
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("connection closed"),
            FrameError::TooLarge(n, limit) => {
                write!(f, "frame of {n} bytes is larger than the limit of {limit} bytes")
            }
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Encode `msg` as one frame into `buf` (cleared first). Fails if it would exceed
/// [`MAX_FRAME`], naming the size, so an oversized batch is refused before it is sent.
pub fn encode<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(msg, taken).map_err(|e| format!("cannot encode message: {e}"))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(format!(
            "message of {len} bytes is larger than the socket's limit of {MAX_FRAME} bytes; \
             send it in smaller batches"
        ));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Write one already-[`encode`]d frame.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)
}

/// Read one frame's payload into `buf` (replacing its contents), refusing one longer than
/// [`MAX_FRAME`].
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    read_frame_within(r, buf, MAX_FRAME)
}

/// Read one frame's payload into `buf` (replacing its contents), refusing one longer than
/// `limit` before reading any of it. The payload is read in chunks and `buf` grows only as
/// they arrive (see [`FIRST_CHUNK`]), so a lying length prefix cannot make this allocate more
/// than about twice what the peer really sent. `buf` keeps its capacity between calls, so
/// steady traffic of small frames allocates nothing.
pub fn read_frame_within(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<(), FrameError> {
    let mut len = [0u8; 4];
    // A clean close is only one that happens before the first byte of a frame.
    loop {
        match r.read(&mut len[..1]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    r.read_exact(&mut len[1..]).map_err(FrameError::Io)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit.min(MAX_FRAME) {
        return Err(FrameError::TooLarge(len, limit.min(MAX_FRAME)));
    }
    buf.clear();
    let mut have = 0;
    while have < len {
        // Never past what the buffer already holds room for, or twice what has arrived.
        let upto = len.min(buf.capacity().max(FIRST_CHUNK).max(have * 2));
        buf.resize(upto, 0);
        r.read_exact(&mut buf[have..upto]).map_err(FrameError::Io)?;
        have = upto;
    }
    Ok(())
}

/// Decode a frame's payload; the error says what was wrong. Never panics.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(format!("{} bytes left over after the message", rest.len())),
        Err(e) => Err(format!("malformed message: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that sends `bytes` and then closes, a few bytes per read like a slow socket.
    struct Trickle(std::io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(7);
            self.0.read(&mut out[..n])
        }
    }

    fn peer(prefix: usize, payload: &[u8]) -> Trickle {
        let mut bytes = (prefix as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(payload);
        Trickle(std::io::Cursor::new(bytes))
    }

    #[test]
    fn a_lying_length_prefix_allocates_only_for_what_arrived() {
        let mut buf = Vec::new();
        let got = read_frame(&mut peer(MAX_FRAME, b"four"), &mut buf);
        assert!(matches!(got, Err(FrameError::Io(_))), "{got:?}");
        assert!(buf.capacity() <= FIRST_CHUNK, "buffer grew to {} bytes", buf.capacity());
    }

    #[test]
    fn a_big_payload_grows_with_what_arrives_and_is_read_whole() {
        let payload: Vec<u8> = (0..1_000_003u32).map(|i| i as u8).collect();
        let mut buf = Vec::new();
        read_frame(&mut peer(payload.len(), &payload), &mut buf).unwrap();
        assert_eq!(buf, payload);
        // Half of it sent: the buffer never got past twice what had arrived.
        let mut buf = Vec::new();
        let got = read_frame(&mut peer(payload.len(), &payload[..300_000]), &mut buf);
        assert!(matches!(got, Err(FrameError::Io(_))), "{got:?}");
        assert!(buf.capacity() <= 2 * 300_000, "buffer grew to {} bytes", buf.capacity());
    }

    #[test]
    fn before_the_hello_a_frame_bigger_than_a_hello_is_refused_unread() {
        let mut buf = Vec::new();
        let got = read_frame_within(&mut peer(MAX_FRAME, b""), &mut buf, MAX_HELLO_FRAME);
        assert!(matches!(got, Err(FrameError::TooLarge(MAX_FRAME, MAX_HELLO_FRAME))), "{got:?}");
        assert_eq!(buf.capacity(), 0);
        let err = FrameError::TooLarge(MAX_FRAME, MAX_HELLO_FRAME).to_string();
        assert!(err.contains(&MAX_HELLO_FRAME.to_string()), "{err}");
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_unread() {
        let mut buf = Vec::new();
        let got = read_frame(&mut peer(MAX_FRAME + 1, b"x"), &mut buf);
        assert!(matches!(got, Err(FrameError::TooLarge(n, MAX_FRAME)) if n == MAX_FRAME + 1));
        assert_eq!(buf.capacity(), 0);
    }
}
