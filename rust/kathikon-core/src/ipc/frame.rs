//! Frames on the owner's socket: a little-endian `u32` length, then that many bytes of
//! postcard. Every decode goes through [`decode`], which never panics on any input (it is
//! fuzzed), so a malformed frame can only close the connection it came on.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bumped whenever a message changes shape. Both ends say theirs in the hello; a mismatch is
/// refused with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either end accepts (64 MiB). A bigger length prefix closes the connection
/// before anything is allocated for it.
pub const MAX_FRAME: usize = 64 << 20;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The other end closed the connection between frames.
    Closed,
    /// The length prefix exceeds [`MAX_FRAME`].
    TooLarge(usize),
    /// The socket failed, or closed in the middle of a frame.
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("connection closed"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes is larger than the limit of {MAX_FRAME} bytes")
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

/// Read one frame's payload into `buf` (replacing its contents).
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut len = [0u8; 4];
    // A clean close is only one that happens before the first byte of a frame.
    match r.read(&mut len[..1]) {
        Ok(0) => return Err(FrameError::Closed),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return read_frame(r, buf),
        Err(e) => return Err(FrameError::Io(e)),
    }
    r.read_exact(&mut len[1..]).map_err(FrameError::Io)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).map_err(FrameError::Io)
}

/// Decode a frame's payload; the error says what was wrong. Never panics.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(format!("{} bytes left over after the message", rest.len())),
        Err(e) => Err(format!("malformed message: {e}")),
    }
}
