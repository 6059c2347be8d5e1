//! The write-ahead log in front of redb.
//!
//! A redb commit with `Durability::Immediate` writes about a dozen scattered pages and syncs
//! them (~276 µs measured); one append to a preallocated file and one `fdatasync` costs a
//! fifth of that. Even unsynced, a redb commit costs ~40 µs of CPU, ten times applying a
//! small batch (`examples/txn_cost.rs`). So with the default durability the batches are
//! applied to one redb write transaction that stays open between them, and each batch's
//! *physical effects* — the final record of every job written, every job deleted, the next
//! free id — are appended to the log as one checksummed record and synced before any caller
//! is answered. The open transaction is committed without a sync when a reader needs to see
//! it (a read commits it first), and durably at a checkpoint.
//!
//! Every so often (and at a clean close) a *checkpoint* commits redb with
//! `Durability::Immediate`, which makes every earlier change durable too, and
//! records the last log sequence number it covers (`wal_seq` in `kathikon_meta`); the log is
//! then written again from its start. A clean close deletes the log, so a closed store is one
//! file again.
//!
//! At open, redb comes back at its last durable commit and the records after `wal_seq` are
//! applied again, in order, stopping at the first record that is torn, fails its checksum,
//! belongs to another store or breaks the sequence. Applying a record is idempotent: each job
//! is set to the logged record (its indexes and counts moved from whatever is stored now), so
//! a record applied twice changes nothing.
//!
//! Record layout (little-endian), 32-byte header then payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `KWAL` |
//! | 4..8 | CRC-32C of bytes 8.. of header and the whole payload |
//! | 8..16 | payload length |
//! | 16..24 | sequence number (1, 2, … never reused for a store) |
//! | 24..32 | store id (random, in `kathikon_meta`): a log beside another store is ignored |
//!
//! Payload: operations, each a tag byte then its fields: `1` put (id u64, length u32, record
//! bytes as stored in `jobs`), `2` delete (id u64), `3` next id (u64).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::job::JobId;

const MAGIC: &[u8; 4] = b"KWAL";
pub(crate) const HEADER: usize = 32;
/// The log grows in steps of this many zeroed bytes, so an append rarely changes the file's
/// size and `fdatasync` has only data to write.
const CHUNK: u64 = 1024 * 1024;
/// After a checkpoint, a log grown beyond this (by a huge batch) is cut back to one chunk.
const KEEP: u64 = 4 * 1024 * 1024;
/// Buffered: synced pages are dropped from the page cache in runs of this many bytes.
///
/// `fdatasync`'s CPU cost grows with the number of the file's pages in the page cache, dirty
/// or not (measured on ext4, 300-byte appends: 13 µs a call with 16 pages cached, 18 µs with
/// 256, 28 µs with 1,024; the wall time follows), so pages behind the write position, once
/// synced, leave the cache.
const WINDOW: u64 = 64 * 1024;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_NEXT_ID: u8 = 3;

/// Open `path` for reading and writing, creating it readable and writable by its owner only
/// (an existing file keeps its mode): the store file and its log hold the same jobs.
pub(crate) fn open_owner_only(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

/// The log file beside the store at `store`: its name with `-wal` appended.
pub(crate) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_os_string();
    name.push("-wal");
    PathBuf::from(name)
}

/// One batch's effects, built while the batch runs; the header is filled in by
/// [`Wal::append`].
pub(crate) struct LogBuf {
    bytes: Vec<u8>,
}

impl LogBuf {
    pub(crate) fn new() -> LogBuf {
        let mut bytes = Vec::with_capacity(4096);
        bytes.resize(HEADER, 0);
        LogBuf { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.len() == HEADER
    }

    /// Empty it for the next batch, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.bytes.truncate(HEADER);
    }

    /// The operations, without the header.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[HEADER..]
    }

    pub(crate) fn put(&mut self, id: JobId, record: &[u8]) {
        self.bytes.push(OP_PUT);
        self.bytes.extend_from_slice(&id.to_le_bytes());
        self.bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(record);
    }

    pub(crate) fn delete(&mut self, id: JobId) {
        self.bytes.push(OP_DELETE);
        self.bytes.extend_from_slice(&id.to_le_bytes());
    }

    pub(crate) fn next_id(&mut self, next: u64) {
        self.bytes.push(OP_NEXT_ID);
        self.bytes.extend_from_slice(&next.to_le_bytes());
    }
}

/// The payloads of the records appended since the last redb commit, back to back in one
/// buffer that is emptied, not freed, at each commit. (A buffer per record, all freed at the
/// commit, made the allocator fault in fresh memory every few hundred inserts: ~0.5 ms each,
/// 3 % of a run of single inserts.)
#[derive(Default)]
pub(crate) struct Payloads {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Payloads {
    pub(crate) fn push(&mut self, buf: &LogBuf) {
        self.bytes.extend_from_slice(buf.payload());
        self.ends.push(self.bytes.len());
    }

    /// Forget them all; memory beyond what a checkpoint interval normally needs is returned.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        if self.bytes.capacity() > KEEP as usize {
            self.bytes.shrink_to(CHUNK as usize);
        }
    }

    /// Each payload, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let payload = &self.bytes[start..end];
            start = end;
            payload
        })
    }
}

/// One logged operation, as read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Put(JobId, &'a [u8]),
    Delete(JobId),
    NextId(u64),
}

/// Split a record's payload into its operations; `None` if it does not parse (which a record
/// that passed its checksum never should).
pub(crate) fn ops(mut payload: &[u8]) -> Option<Vec<Op<'_>>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn u64_of(rest: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(rest, 8)?.try_into().ok()?))
    }
    let mut out = Vec::new();
    while let Some((&tag, rest)) = payload.split_first() {
        payload = rest;
        out.push(match tag {
            OP_PUT => {
                let id = u64_of(&mut payload)?;
                let len = u32::from_le_bytes(take(&mut payload, 4)?.try_into().ok()?) as usize;
                Op::Put(id, take(&mut payload, len)?)
            }
            OP_DELETE => Op::Delete(u64_of(&mut payload)?),
            OP_NEXT_ID => Op::NextId(u64_of(&mut payload)?),
            _ => return None,
        });
    }
    Some(out)
}

/// The records of a log file that follow `checkpoint`: consecutive sequence numbers from
/// `checkpoint + 1`, each whole, with a good checksum and this store's id. Reading stops at
/// the first record that is not (a torn tail, zeroed space, or an older record left from
/// before the log was last reused). Returns each record's sequence number and payload.
pub(crate) fn records_after(bytes: &[u8], store_id: u64, checkpoint: u64) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0_usize;
    let mut previous: Option<u64> = None;
    while let Some((_, seq, payload)) = record_at(bytes, pos).filter(|r| r.0 == store_id) {
        if previous.is_some_and(|p| seq != p + 1) {
            break;
        }
        previous = Some(seq);
        if seq > checkpoint {
            let expected = out.last().map_or(checkpoint + 1, |(s, _)| s + 1);
            if seq != expected {
                break;
            }
            out.push((seq, payload));
        }
        pos += HEADER + payload.len();
    }
    out
}

/// The store id and sequence number of the log's first record, if it has a whole one.
pub(crate) fn first_record(bytes: &[u8]) -> Option<(u64, u64)> {
    record_at(bytes, 0).map(|(store, seq, _)| (store, seq))
}

/// The whole record at `pos`: its store id, sequence number and payload.
fn record_at(bytes: &[u8], pos: usize) -> Option<(u64, u64, &[u8])> {
    let header = bytes.get(pos..pos.checked_add(HEADER)?)?;
    if &header[0..4] != MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let len = usize::try_from(word(8)).ok()?;
    let seq = word(16);
    let start = pos + HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    let sum = crc32c::crc32c_append(crc32c::crc32c(&header[8..]), payload);
    (sum == crc).then_some((word(24), seq, payload))
}

/// How records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    /// `O_DIRECT`: each append goes straight to the device and `fdatasync` only has to flush
    /// the device's cache. Measured on this project's VM (ext4 on virtio, 300-byte records,
    /// alternated): a synced append costs ~10 % less time and ~8 µs less CPU than through the
    /// page cache, where `fdatasync` first has to find and write back the dirty page.
    Direct,
    /// Through the page cache: with `durability="none"` (nothing waits for the disk, and a
    /// write that only copies to memory is the fastest), and where `O_DIRECT` is refused.
    Buffered,
}

/// One disk block, aligned as `O_DIRECT` needs: offsets, lengths and buffer addresses of
/// direct writes are multiples of the device's logical block (512 B or 4 KiB); 4 KiB fits
/// both.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);
const BLOCK: usize = 4096;

/// The blocks a record is laid out in before it is written. The block holding the write
/// position keeps the bytes already written before it, so every write covers whole blocks:
/// a direct write must, and a buffered one then never reads a page back from the disk.
struct Blocks(Vec<Block>);

impl Blocks {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `Block` is plain bytes with no padding (size = alignment = BLOCK), so the
        // vector's blocks are `len * BLOCK` initialized bytes in one allocation.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * BLOCK) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the borrow is unique.
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * BLOCK)
        }
    }
}

/// Zeroes to grow the file with, aligned for direct writes.
#[repr(C, align(4096))]
struct Zeros([u8; ZEROS_LEN]);
const ZEROS_LEN: usize = 64 * 1024;
static ZEROS: Zeros = Zeros([0; ZEROS_LEN]);

/// The log open for appending.
pub(crate) struct Wal {
    file: File,
    io: Io,
    path: PathBuf,
    /// Where the next record goes.
    pos: u64,
    /// The file's length (zeroed space past `pos` is already allocated).
    len: u64,
    /// The block holding `pos` (its first `pos % BLOCK` bytes written), then room for more.
    blocks: Blocks,
    /// Buffered: pages before this offset have been dropped from the page cache.
    dropped: u64,
    /// Buffered: zeroes written from here to the end, to drop from the cache once synced.
    uncache_after_sync: Option<u64>,
    /// Whether each append waits for `fdatasync` (not with `durability="none"`).
    sync: bool,
    next_seq: u64,
    store_id: u64,
    faults: Option<Arc<LogFaults>>,
}

impl Wal {
    /// Open (creating, owner-only) the log at `path`; the next record is written at its start
    /// with sequence number `next_seq`. With `sync` each append waits for `fdatasync` and is
    /// written with `O_DIRECT` where the file system takes it; without, a record reaches the
    /// page cache only, which a killed process cannot take with it, but a power loss or an
    /// OS crash can.
    pub(crate) fn open(
        path: &Path,
        store_id: u64,
        next_seq: u64,
        sync: bool,
        faults: Option<Arc<LogFaults>>,
    ) -> io::Result<Wal> {
        Wal::open_as(
            path,
            store_id,
            next_seq,
            sync,
            if sync { Io::Direct } else { Io::Buffered },
            faults,
        )
    }

    fn open_as(
        path: &Path,
        store_id: u64,
        next_seq: u64,
        sync: bool,
        io: Io,
        faults: Option<Arc<LogFaults>>,
    ) -> io::Result<Wal> {
        let existed = path.exists();
        let (file, io) = open_for(path, io)?;
        if !existed {
            // Make the new file's name durable, so a log synced later cannot vanish with its
            // directory entry.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        // Only whole blocks are ever written, so a length that is not a multiple of one
        // (a log from elsewhere) is rounded down: the space past it is grown again.
        let len = file.metadata()?.len() / BLOCK as u64 * BLOCK as u64;
        let wal = Wal {
            file,
            io,
            path: path.to_path_buf(),
            pos: 0,
            len,
            blocks: Blocks(vec![Block([0; BLOCK])]),
            dropped: 0,
            uncache_after_sync: None,
            sync,
            next_seq,
            store_id,
            faults,
        };
        wal.uncache(0, 0);
        Ok(wal)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Sequence number of the last record appended (or of the checkpoint the log started at).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Bytes appended since the log was last reset.
    pub(crate) fn used(&self) -> u64 {
        self.pos
    }

    /// Append `buf` as the next record and (unless opened without `sync`) wait until it is on
    /// disk (`fdatasync`, on the calling thread: nothing else would run meanwhile, so a
    /// hand-off to another thread would only add two wake-ups). On error the record may be
    /// on disk whole, torn, or absent; the caller must stop writing.
    pub(crate) fn append(&mut self, buf: &mut LogBuf) -> io::Result<()> {
        let bytes = &mut buf.bytes;
        let payload_len = (bytes.len() - HEADER) as u64;
        bytes[0..4].copy_from_slice(MAGIC);
        bytes[8..16].copy_from_slice(&payload_len.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.next_seq.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.store_id.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[8..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());

        // Lay the record out after the written part of the current block, zeroes after it.
        let first = self.pos / BLOCK as u64 * BLOCK as u64;
        let offset = (self.pos - first) as usize;
        let used = offset + bytes.len();
        let n = used.div_ceil(BLOCK);
        if self.blocks.0.len() < n {
            self.blocks.0.resize(n, Block([0; BLOCK]));
        }
        let laid = &mut self.blocks.bytes_mut()[..n * BLOCK];
        laid[offset..used].copy_from_slice(bytes);
        laid[used..].fill(0);
        let end = first + (n * BLOCK) as u64;
        if end > self.len {
            self.grow(end)?;
        }
        if let Some(faults) = &self.faults {
            if let Err(e) = faults.write.pass("log write") {
                // A torn write: the blocks reach the file with only the record's first half.
                let torn = offset + bytes.len() / 2;
                self.blocks.bytes_mut()[torn..n * BLOCK].fill(0);
                self.write_blocks(n, first)?;
                return Err(e);
            }
        }
        self.write_blocks(n, first)?;
        if self.sync {
            if let Some(faults) = &self.faults {
                faults.sync.pass("log fsync")?;
            }
            self.file.sync_data()?;
        }
        self.pos += bytes.len() as u64;
        self.next_seq += 1;
        // The block now holding the write position moves to the front; a buffer grown by a
        // huge record is given back.
        let last = (self.pos - first) as usize / BLOCK;
        if last > 0 {
            self.blocks.0.swap(0, last);
        }
        if self.blocks.0.len() > KEEP as usize / BLOCK {
            self.blocks.0.truncate(1);
            self.blocks.0.shrink_to(1);
        }
        if self.sync && self.io == Io::Buffered {
            self.drop_synced();
        }
        Ok(())
    }

    /// Write the first `n` laid-out blocks at `at`. A file system that refuses a direct
    /// write for its alignment (`EINVAL`) gets the log reopened through the page cache.
    fn write_blocks(&mut self, n: usize, at: u64) -> io::Result<()> {
        let result = self.file.write_all_at(&self.blocks.bytes()[..n * BLOCK], at);
        match result {
            Err(e) if self.io == Io::Direct && e.raw_os_error() == Some(libc::EINVAL) => {
                (self.file, self.io) = open_for(&self.path, Io::Buffered)?;
                self.file.write_all_at(&self.blocks.bytes()[..n * BLOCK], at)
            }
            other => other,
        }
    }

    /// Buffered: synced pages the next appends do not touch leave the page cache.
    fn drop_synced(&mut self) {
        if let Some(from) = self.uncache_after_sync.take() {
            self.uncache(from, self.len - from);
        }
        let behind = self.pos / WINDOW * WINDOW;
        if behind >= self.dropped + WINDOW {
            self.uncache(self.dropped, behind - self.dropped);
            self.dropped = behind;
        }
    }

    /// Grow the file past `end` by whole chunks of zeroes, written rather than allocated (an
    /// allocated but unwritten extent is converted at the first write, a metadata change the
    /// next `fdatasync` would have to journal). Its size then rarely changes, so `fdatasync`
    /// rarely has metadata to write.
    fn grow(&mut self, end: u64) -> io::Result<()> {
        let fill = end.div_ceil(CHUNK) * CHUNK;
        let mut at = self.len;
        while at < fill {
            let n = (ZEROS_LEN as u64).min(fill - at);
            if let Some(faults) = &self.faults {
                faults.write.pass("log write")?;
            }
            self.file.write_all_at(&ZEROS.0[..n as usize], at)?;
            at += n;
        }
        if self.io == Io::Buffered && self.sync {
            self.uncache_after_sync = Some(end);
        }
        self.len = fill;
        Ok(())
    }

    /// Drop `len` bytes from `offset` (0: to the end) from the page cache; they must be synced.
    /// Only a hint: nothing is lost if the kernel ignores it.
    fn uncache(&self, offset: u64, len: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on a descriptor this struct owns; it reads no memory.
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    offset as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }

    /// Everything appended so far is covered by a checkpoint: write from the start again.
    pub(crate) fn reset(&mut self) {
        if self.len > KEEP && self.file.set_len(CHUNK).is_ok() {
            self.len = CHUNK;
        }
        self.uncache(0, 0);
        self.pos = 0;
        self.dropped = 0;
        self.uncache_after_sync = None;
    }
}

/// Open the log for `io`; where `O_DIRECT` is refused (`EINVAL`: tmpfs before Linux 6.6,
/// some FUSE file systems) or absent (not Linux), through the page cache.
fn open_for(path: &Path, io: Io) -> io::Result<(File, Io)> {
    #[cfg(target_os = "linux")]
    if io == Io::Direct {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false).mode(0o600);
        match options.custom_flags(libc::O_DIRECT).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other.map(|f| (f, Io::Direct)),
        }
    }
    let _ = io;
    open_owner_only(path).map(|f| (f, Io::Buffered))
}

const DISARMED: u64 = u64::MAX;

/// A countdown to failure for one kind of log operation (test hook).
#[doc(hidden)]
#[derive(Debug)]
pub struct LogTrigger {
    left: AtomicU64,
    seen: AtomicU64,
    failed: AtomicU64,
}

impl Default for LogTrigger {
    fn default() -> Self {
        Self { left: AtomicU64::new(DISARMED), seen: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }
}

impl LogTrigger {
    /// Let `n` more operations through, then fail every later one.
    pub fn arm(&self, n: u64) {
        self.left.store(n, Ordering::SeqCst);
    }

    /// Let everything through again.
    pub fn disarm(&self) {
        self.left.store(DISARMED, Ordering::SeqCst);
    }

    /// Operations failed on purpose so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Operations seen so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    fn pass(&self, what: &str) -> io::Result<()> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let left = self.left.load(Ordering::SeqCst);
        if left == DISARMED {
            return Ok(());
        }
        if left > 0 {
            self.left.store(left - 1, Ordering::SeqCst);
            return Ok(());
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        // EIO, as a failing disk reports it; the text says it was injected.
        let eio = io::Error::from_raw_os_error(5);
        Err(io::Error::new(eio.kind(), format!("injected {what} fault: {eio}")))
    }
}

/// Failures to inject into the write-ahead log's writes (a failed write leaves half the
/// record in the file) and fsyncs. For fault-injection tests; not a stable API.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct LogFaults {
    /// Writes of records and of the zeroes that grow the file.
    pub write: LogTrigger,
    /// `fdatasync` after each record.
    pub sync: LogTrigger,
}

impl LogFaults {
    /// Disarm both triggers.
    pub fn heal(&self) {
        self.write.disarm();
        self.sync.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(records: &[(u64, &[u8])], store_id: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s-wal");
        let first = records.first().map_or(1, |r| r.0);
        let mut wal = Wal::open(&path, store_id, first, true, None).unwrap();
        for (seq, payload) in records {
            wal.next_seq = *seq;
            let mut buf = LogBuf::new();
            buf.bytes.extend_from_slice(payload);
            wal.append(&mut buf).unwrap();
        }
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn payloads_come_back_in_order_and_clear_keeps_none() {
        let mut payloads = Payloads::default();
        let mut buf = LogBuf::new();
        for id in [3, 1, 2] {
            buf.clear();
            buf.delete(id);
            payloads.push(&buf);
        }
        let ids: Vec<_> = payloads.iter().map(|p| ops(p).unwrap()).collect();
        assert_eq!(ids, [[Op::Delete(3)], [Op::Delete(1)], [Op::Delete(2)]]);
        payloads.clear();
        assert_eq!(payloads.iter().count(), 0);
    }

    #[test]
    fn records_across_blocks_chunks_and_a_reset_read_back_whole() {
        // Synced (direct where the file system takes it), synced through the page cache, and
        // unsynced: the same records come back.
        for (sync, io) in [(true, Io::Direct), (true, Io::Buffered), (false, Io::Buffered)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s-wal");
            let mut wal = Wal::open_as(&path, 42, 1, sync, io, None).unwrap();
            // Sizes around and across block boundaries, and one record bigger than KEEP, so
            // the layout buffer grows and is given back.
            let size = |i: u64| match i % 9 {
                0 => BLOCK - HEADER - 13,
                1 => 1,
                2 => BLOCK,
                3 => 3 * BLOCK + 5,
                _ if i == 40 => KEEP as usize + 100,
                _ => 300 + (i as usize % 7) * 500,
            };
            let record = |i: u64| -> LogBuf {
                let mut buf = LogBuf::new();
                buf.put(i, &vec![i as u8; size(i)]);
                buf
            };
            // Past one chunk, so the file grows more than once.
            let n = 200;
            for i in 1..=n {
                wal.append(&mut record(i)).unwrap();
            }
            assert!(wal.len > CHUNK && wal.len >= wal.pos);
            assert!(
                wal.blocks.0.len() <= KEEP as usize / BLOCK,
                "the huge record's buffer is kept"
            );
            assert_eq!(wal.dropped > 0, sync && wal.io == Io::Buffered, "{io:?}, sync {sync}");
            let bytes = std::fs::read(&path).unwrap();
            let back = records_after(&bytes, 42, 0);
            assert_eq!(back.len() as u64, n, "{io:?}, sync {sync}");
            for (i, (seq, payload)) in (1..).zip(&back) {
                assert_eq!((*seq, *payload), (i, record(i).payload()));
            }
            // After a checkpoint the log is written from its start again: the first records
            // are read back, the old ones after them are not.
            wal.reset();
            for i in n + 1..=n + 5 {
                wal.append(&mut record(i)).unwrap();
            }
            let bytes = std::fs::read(&path).unwrap();
            let seqs: Vec<_> = records_after(&bytes, 42, n).into_iter().map(|r| r.0).collect();
            assert_eq!(seqs, (n + 1..=n + 5).collect::<Vec<_>>());
        }
    }

    /// How many of the file's pages are in the page cache (`mincore` over a mapping of it,
    /// which faults nothing in).
    #[cfg(target_os = "linux")]
    fn cached_pages(path: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a read-only shared mapping of a file this test owns, unmapped before return;
        // `mincore` writes one byte per page into a vector of exactly that many.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            let mut resident = vec![0_u8; len.div_ceil(page)];
            let rc = libc::mincore(addr, len, resident.as_mut_ptr());
            libc::munmap(addr, len);
            assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
            resident.iter().filter(|&&b| b & 1 == 1).count()
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_synced_log_stays_out_of_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let append_many = |wal: &mut Wal| {
            for i in 1..=2_000 {
                let mut buf = LogBuf::new();
                buf.put(i, &[7; 300]);
                wal.append(&mut buf).unwrap();
            }
        };
        // Through the page cache, synced pages behind the write position are dropped: what
        // stays is the window being written, not the ~650 KiB appended.
        let path = dir.path().join("buffered-wal");
        let mut wal = Wal::open_as(&path, 1, 1, true, Io::Buffered, None).unwrap();
        append_many(&mut wal);
        let cached = cached_pages(&path);
        assert!((1..=2 * WINDOW as usize / 4096).contains(&cached), "{cached} pages cached");

        // Direct: none of it goes through the cache.
        let path = dir.path().join("direct-wal");
        let probe = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("probe"));
        if probe.is_err() {
            // Only where the file system refuses O_DIRECT (tmpfs before Linux 6.6, some FUSE).
            eprintln!("O_DIRECT refused under {}: direct path unchecked", dir.path().display());
            return;
        }
        let mut wal = Wal::open(&path, 1, 1, true, None).unwrap();
        assert_eq!(wal.io, Io::Direct);
        append_many(&mut wal);
        assert_eq!(cached_pages(&path), 0);
        assert_eq!(records_after(&std::fs::read(&path).unwrap(), 1, 0).len(), 2_000);
    }

    #[test]
    fn ops_round_trip() {
        let mut buf = LogBuf::new();
        buf.put(7, b"abc");
        buf.delete(9);
        buf.next_id(11);
        buf.put(8, b"");
        let ops = ops(&buf.bytes[HEADER..]).unwrap();
        assert_eq!(ops, [Op::Put(7, b"abc"), Op::Delete(9), Op::NextId(11), Op::Put(8, b"")]);
        assert!(super::ops(&buf.bytes[HEADER..buf.bytes.len() - 1]).is_none());
    }

    #[test]
    fn reading_stops_at_the_first_bad_record() {
        let bytes = log_of(&[(1, b"one"), (2, b"two"), (3, b"three")], 5);
        let all = records_after(&bytes, 5, 0);
        assert_eq!(all, vec![(1, &b"one"[..]), (2, b"two"), (3, b"three")]);
        // Another store's log is ignored.
        assert!(records_after(&bytes, 6, 0).is_empty());
        assert_eq!(first_record(&bytes), Some((5, 1)));
        // Records the checkpoint covers are skipped.
        assert_eq!(records_after(&bytes, 5, 2), vec![(3, &b"three"[..])]);
        assert!(records_after(&bytes, 5, 3).is_empty());
        // Every cut of the file keeps exactly the whole records before the cut.
        let ends = [HEADER + 3, 2 * HEADER + 6, 3 * HEADER + 11];
        for cut in 0..=ends[2] {
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(records_after(&bytes[..cut], 5, 0).len(), whole, "cut at {cut}");
        }
        // A flipped bit anywhere in a record drops it and everything after it.
        for at in 0..ends[2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let kept = ends.iter().filter(|&&e| e <= at).count();
            assert_eq!(records_after(&bad, 5, 0).len(), kept, "flip at {at}");
        }
    }

    #[test]
    fn a_gap_in_the_sequence_ends_the_log() {
        // Records left from before a reuse have lower numbers than the new ones before them.
        let bytes = log_of(&[(8, b"new"), (3, b"old"), (4, b"old")], 1);
        assert_eq!(records_after(&bytes, 1, 7), vec![(8, &b"new"[..])]);
        // A log that starts past the checkpoint's successor does not follow it.
        let bytes = log_of(&[(5, b"x"), (6, b"y")], 1);
        assert!(records_after(&bytes, 1, 3).is_empty());
    }
}
