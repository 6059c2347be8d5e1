//! The log's record layout (see the table in `wal/mod.rs`): one batch's effects built into
//! a record ([`LogBuf`]), the payloads kept until the next redb commit ([`Payloads`]), and
//! records read back from a log file and split into their operations.

use super::file::{CHUNK, KEEP};
use crate::clock::Micros;
use crate::job::JobId;
use crate::request::RequestId;
use crate::storage::EntryKind;

pub(super) const MAGIC: &[u8; 4] = b"KWAL";
pub(crate) const HEADER: usize = 32;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_NEXT_ID: u8 = 3;
/// An insert's request id and the jobs it stored (`storage/redb/requests.rs`).
const OP_REQUEST: u8 = 4;
/// An entry stored (`storage/redb/entries.rs`): kind, expiry (`i64::MIN`: none), name, value.
const OP_PUT_ENTRY: u8 = 5;
/// An entry deleted: kind, name.
const OP_REMOVE_ENTRY: u8 = 6;

/// One batch's effects, built while the batch runs; the header is filled in by
/// [`Wal::append`].
pub(crate) struct LogBuf {
    pub(super) bytes: Vec<u8>,
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

    pub(crate) fn put_entry(
        &mut self,
        kind: EntryKind,
        name: &str,
        value: &[u8],
        expires: Option<Micros>,
    ) {
        self.bytes.push(OP_PUT_ENTRY);
        self.bytes.push(kind as u8);
        self.bytes.extend_from_slice(&expires.unwrap_or(i64::MIN).to_le_bytes());
        self.bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn remove_entry(&mut self, kind: EntryKind, name: &str) {
        self.bytes.push(OP_REMOVE_ENTRY);
        self.bytes.push(kind as u8);
        self.bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
    }

    pub(crate) fn request(&mut self, request: RequestId, first: JobId, count: u64) {
        self.bytes.push(OP_REQUEST);
        self.bytes.extend_from_slice(&request.at.to_le_bytes());
        self.bytes.extend_from_slice(&request.nonce.to_le_bytes());
        self.bytes.extend_from_slice(&first.to_le_bytes());
        self.bytes.extend_from_slice(&count.to_le_bytes());
    }
}

/// The payloads of the records appended since the last redb commit, back to back in one
/// buffer that is emptied, not freed, at each commit: a buffer per record, all freed at the
/// commit, made the allocator fault in fresh memory every few hundred inserts.
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
    /// A request id and the `(first id, count)` its insert stored.
    Request(RequestId, JobId, u64),
    /// An entry stored: kind, name, value, expiry.
    PutEntry(EntryKind, &'a str, &'a [u8], Option<Micros>),
    /// An entry deleted: kind, name.
    RemoveEntry(EntryKind, &'a str),
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
    fn bytes_of<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize;
        take(rest, len)
    }
    fn kind_of(rest: &mut &[u8]) -> Option<EntryKind> {
        EntryKind::from_byte(take(rest, 1)?[0])
    }
    fn name_of<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(bytes_of(rest)?).ok()
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
            OP_REQUEST => {
                let at = u64_of(&mut payload)? as i64;
                let nonce = u64_of(&mut payload)?;
                Op::Request(RequestId { at, nonce }, u64_of(&mut payload)?, u64_of(&mut payload)?)
            }
            OP_PUT_ENTRY => {
                let kind = kind_of(&mut payload)?;
                let expires = Some(u64_of(&mut payload)? as i64).filter(|&at| at != i64::MIN);
                let name = name_of(&mut payload)?;
                Op::PutEntry(kind, name, bytes_of(&mut payload)?, expires)
            }
            OP_REMOVE_ENTRY => {
                let kind = kind_of(&mut payload)?;
                Op::RemoveEntry(kind, name_of(&mut payload)?)
            }
            _ => return None,
        });
    }
    Some(out)
}

/// Damage in a log: the record at `at` is not whole or fails its checksum (or breaks the
/// sequence), yet a whole record of the same store numbered past the checkpoint (`seq`)
/// lies further on, at `next`. A torn write only ever cuts the last record, so this is not
/// a torn tail: the records from `at` on hold acknowledged batches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) at: usize,
    pub(crate) next: usize,
    pub(crate) seq: u64,
}

/// The records of a log file that follow `checkpoint`: consecutive sequence numbers from
/// `checkpoint + 1`, each whole, with a good checksum and this store's id. Reading stops at
/// the first record that is not (a torn tail, zeroed space, or an older record left from
/// before the log was last reused). Returns each record's sequence number and payload.
///
/// Records left from before the log was reused all have numbers the checkpoint covers (the
/// log is reused only after a durable checkpoint, and numbers only grow), so a whole record
/// of this store numbered past the checkpoint anywhere after the stop means the stop was
/// damage, not the end: that is a [`Damage`]. Finding it scans the rest of the file once,
/// at open only.
pub(crate) fn records_after(
    bytes: &[u8],
    store_id: u64,
    checkpoint: u64,
) -> Result<Vec<(u64, &[u8])>, Damage> {
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
    match later_record(bytes, pos, store_id, checkpoint) {
        Some((next, seq)) => Err(Damage { at: pos, next, seq }),
        None => Ok(out),
    }
}

/// The first whole record of `store_id` numbered past `checkpoint` at or after `from`:
/// its offset and sequence number.
fn later_record(bytes: &[u8], from: usize, store_id: u64, checkpoint: u64) -> Option<(usize, u64)> {
    let mut at = from;
    while let Some(found) = bytes.get(at..)?.windows(MAGIC.len()).position(|w| w == MAGIC) {
        at += found;
        if let Some((id, seq, _)) = record_at(bytes, at) {
            if id == store_id && seq > checkpoint {
                return Some((at, seq));
            }
        }
        at += 1;
    }
    None
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

#[cfg(test)]
mod tests {
    use super::super::file::Wal;
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
    fn ops_round_trip() {
        let mut buf = LogBuf::new();
        buf.put(7, b"abc");
        buf.delete(9);
        buf.next_id(11);
        buf.put(8, b"");
        let request = RequestId { at: -5, nonce: u64::MAX };
        buf.request(request, 12, 3);
        buf.put_entry(EntryKind::Unique, "k\u{e9}y", b"\x01\x02", Some(-7));
        buf.put_entry(EntryKind::Cron, "", b"", None);
        buf.remove_entry(EntryKind::Queue, "emails");
        let ops = ops(&buf.bytes[HEADER..]).unwrap();
        let expected = [
            Op::Put(7, b"abc"),
            Op::Delete(9),
            Op::NextId(11),
            Op::Put(8, b""),
            Op::Request(request, 12, 3),
            Op::PutEntry(EntryKind::Unique, "k\u{e9}y", b"\x01\x02", Some(-7)),
            Op::PutEntry(EntryKind::Cron, "", b"", None),
            Op::RemoveEntry(EntryKind::Queue, "emails"),
        ];
        assert_eq!(ops, expected);
        assert!(super::ops(&buf.bytes[HEADER..buf.bytes.len() - 1]).is_none());
    }

    #[test]
    fn reading_stops_at_a_torn_tail_and_refuses_damage_before_whole_records() {
        let bytes = log_of(&[(1, b"one"), (2, b"two"), (3, b"three")], 5);
        let all = records_after(&bytes, 5, 0).unwrap();
        assert_eq!(all, vec![(1, &b"one"[..]), (2, b"two"), (3, b"three")]);
        // Another store's log is ignored.
        assert!(records_after(&bytes, 6, 0).unwrap().is_empty());
        assert_eq!(first_record(&bytes), Some((5, 1)));
        // Records the checkpoint covers are skipped.
        assert_eq!(records_after(&bytes, 5, 2).unwrap(), vec![(3, &b"three"[..])]);
        assert!(records_after(&bytes, 5, 3).unwrap().is_empty());
        // Every cut of the file keeps exactly the whole records before the cut.
        let ends = [HEADER + 3, 2 * HEADER + 6, 3 * HEADER + 11];
        for cut in 0..=ends[2] {
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(records_after(&bytes[..cut], 5, 0).unwrap().len(), whole, "cut at {cut}");
        }
        // A flipped bit in the last record drops it (a torn tail looks the same); in any
        // earlier one it is damage, reported at that record's start, naming the next record.
        let starts = [0, ends[0], ends[1]];
        for at in 0..ends[2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let hit = ends.iter().filter(|&&e| e <= at).count();
            let read = records_after(&bad, 5, 0);
            if hit == 2 {
                assert_eq!(read.unwrap().len(), 2, "flip at {at}");
            } else {
                let next = starts[hit + 1];
                let expected = Damage { at: starts[hit], next, seq: hit as u64 + 2 };
                assert_eq!(read.unwrap_err(), expected, "flip at {at}");
            }
            // Records the checkpoint covers are not damage when lost.
            assert!(records_after(&bad, 5, 3).unwrap().is_empty(), "flip at {at}");
        }
    }

    #[test]
    fn a_gap_in_the_sequence_ends_the_log_or_is_damage() {
        // Records left from before a reuse have lower numbers than the new ones before them.
        let bytes = log_of(&[(8, b"new"), (3, b"old"), (4, b"old")], 1);
        assert_eq!(records_after(&bytes, 1, 7).unwrap(), vec![(8, &b"new"[..])]);
        // A record missing from the middle (numbers jump past the checkpoint) is damage.
        let bytes = log_of(&[(8, b"a"), (10, b"c")], 1);
        let damage = records_after(&bytes, 1, 7).unwrap_err();
        assert_eq!((damage.at, damage.seq), (HEADER + 1, 10));
        // A log that starts past the checkpoint's successor does not follow it.
        let bytes = log_of(&[(5, b"x"), (6, b"y")], 1);
        assert_eq!(records_after(&bytes, 1, 3).unwrap_err(), Damage { at: 0, next: 0, seq: 5 });
    }
}
