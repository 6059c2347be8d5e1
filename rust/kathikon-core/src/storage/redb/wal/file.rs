//! The log file open for appending. Each record is laid out in whole disk blocks and
//! written with `O_DIRECT` where the file system takes it (else through the page cache, whose
//! synced pages are then dropped); the file grows in chunks of written zeroes, and is written
//! from its start again after a checkpoint.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::faults::LogFaults;
use super::record::{LogBuf, HEADER, MAGIC};

/// The log grows in steps of this many zeroed bytes, so an append rarely changes the file's
/// size and `fdatasync` has only data to write.
pub(super) const CHUNK: u64 = 1024 * 1024;
/// After a checkpoint, a log grown beyond this (by a huge batch) is cut back to one chunk.
pub(super) const KEEP: u64 = 4 * 1024 * 1024;
/// Buffered: synced pages are dropped from the page cache in runs of this many bytes.
///
/// `fdatasync`'s CPU cost grows with the number of the file's pages in the page cache, dirty
/// or not, so pages behind the write position, once synced, leave the cache (measured:
/// `benches/RESULTS.md`).
const WINDOW: u64 = 64 * 1024;

/// Open `path` for reading and writing, creating it readable and writable by its owner only
/// (an existing file keeps its mode): the store file and its log hold the same jobs.
pub(crate) fn open_owner_only(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

/// How records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    /// `O_DIRECT`: each append goes straight to the device and `fdatasync` only has to flush
    /// the device's cache, so a synced append costs less time and CPU than through the page
    /// cache, where `fdatasync` first has to find and write back the dirty page (measured:
    /// `benches/RESULTS.md`).
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
    pub(super) next_seq: u64,
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
        if let Some(faults) = &self.faults {
            let armed = faults.panic.pass("log append").is_err();
            assert!(!armed, "injected panic after a durable log append");
        }
        // The block now holding the write position moves to the front; a buffer grown by a
        // huge record is given back. A record that ends on a block boundary leaves nothing
        // written in the next block to keep (and the buffer may hold no block past it).
        let last = used / BLOCK;
        if last > 0 && !used.is_multiple_of(BLOCK) {
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

#[cfg(test)]
mod tests {
    use super::super::record::records_after;
    use super::*;

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
            let back = records_after(&bytes, 42, 0).unwrap();
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
            let seqs: Vec<_> =
                records_after(&bytes, 42, n).unwrap().into_iter().map(|r| r.0).collect();
            assert_eq!(seqs, (n + 1..=n + 5).collect::<Vec<_>>());
        }
    }

    #[test]
    fn records_ending_on_a_block_boundary_read_back_whole() {
        // Whole record sizes (header included), each run on a fresh log, whose layout buffer
        // then holds no block past the one a record ends in: a record filling the first block,
        // one ending on a boundary after an earlier record, and records of two whole blocks.
        let runs: [&[usize]; 4] = [
            &[BLOCK, BLOCK, 100],
            &[100, BLOCK - 100, 50],
            &[2 * BLOCK, 10 + HEADER + 13, 3 * BLOCK],
            &[100, 2 * BLOCK - 100, BLOCK, 70],
        ];
        for (sync, io) in [(true, Io::Direct), (true, Io::Buffered), (false, Io::Buffered)] {
            for sizes in runs {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("s-wal");
                let mut wal = Wal::open_as(&path, 7, 1, sync, io, None).unwrap();
                // A put of `n` bytes is laid out as HEADER + 13 + n bytes.
                let record = |i: usize| -> LogBuf {
                    let mut buf = LogBuf::new();
                    buf.put(i as u64, &vec![i as u8; sizes[i] - HEADER - 13]);
                    assert_eq!(buf.bytes.len(), sizes[i]);
                    buf
                };
                for i in 0..sizes.len() {
                    wal.append(&mut record(i)).unwrap();
                }
                assert_eq!(wal.used(), sizes.iter().sum::<usize>() as u64);
                let bytes = std::fs::read(&path).unwrap();
                let back = records_after(&bytes, 7, 0).unwrap();
                assert_eq!(back.len(), sizes.len(), "{sizes:?}, {io:?}, sync {sync}");
                for (i, (seq, payload)) in back.iter().enumerate() {
                    assert_eq!((*seq, *payload), (i as u64 + 1, record(i).payload()));
                }
            }
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
        assert_eq!(records_after(&std::fs::read(&path).unwrap(), 1, 0).unwrap().len(), 2_000);
    }
}
