//! The journal: an append-only, checksummed, fsync'd, hash-chained log of committed ops. It is
//! Puente's source of truth and its record store; the index points into it (see
//! ARCHITECTURE.md, "Storage").
//!
//! Files: `data/journal/NNNNNNNN.log`, segments of format `PUENTEJ3`. A segment starts with a
//! 64-byte header (magic `PUENTEJ3`, header version, segment number, the sequence number of its
//! first record, the chain head before it, a CRC of the header) and holds records
//! `[len: u32 LE][crc32(payload): u32 LE][hash: 32 bytes][payload]`, the payload encoded by
//! [`format`]. A write is acknowledged only after `fdatasync` returns for the record that holds
//! it. Segments roll at [`SEGMENT_BYTES_MAX`].
//!
//! The CRC catches torn writes and accidental damage. The hash makes the journal
//! tamper-evident: records form one SHA-256 chain across segments,
//! `hash_n = SHA256(hash_{n-1} || seq_n as u64 BE || payload_n)` with `hash_0` = 32 zero bytes.
//! Every open recomputes the chain over what it reads and refuses a record whose stored hash
//! differs, so an edit that also fixes up the CRC is still caught. The chain is not keyed: the
//! chain head ([`Journal::chain_head`]) must be recorded outside the data directory (e.g. in
//! settlement reports) for a rewrite to be detectable.
//!
//! A `PUENTEJ2` journal (`data/journal.log`, bincode records, read by [`legacy`]) is migrated
//! by `Ledger::open`: replayed through the engine and re-encoded into `PUENTEJ3` segments, then
//! kept, read-only, as `data/journal.j2.log` (heads recorded before the migration are checked
//! against it).
//!
//! Size: segments, the scan that verifies checksums and the hash chain, tail classification, the
//! copy for backups and the resume-point checks share the record layout; the codec is `format.rs`,
//! the migration `legacy.rs`.

pub mod format;
pub mod legacy;

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::LedgerError;
use crate::engine::Op;

/// Magic of a `PUENTEJ3` segment.
const MAGIC: &[u8; 8] = b"PUENTEJ3";
/// Magic of a `PUENTEJ2` journal (legacy, read-only).
pub const LEGACY_MAGIC: &[u8; 8] = b"PUENTEJ2";
/// The header version this code writes.
const SEGMENT_HEADER_VERSION: u32 = 1;
/// A segment's header: magic, version, segment number, first seq, previous head, CRC, zeros.
pub const SEGMENT_HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 32 + 4 + 4;
pub use crate::limits::RECORD_BYTES_MAX;
pub use crate::limits::SEGMENT_BYTES_MAX;
/// A record's header: length, CRC-32, chain hash.
pub const RECORD_HEADER_BYTES: usize = 4 + 4 + CHAIN_HASH_BYTES;
const CHAIN_HASH_BYTES: usize = 32;
pub use crate::limits::SEGMENTS_MAX;
/// Bytes read at once to decode one op at a location (a larger op takes a second read).
const OP_READ_BYTES: usize = 512;

/// A link of the journal's hash chain (SHA-256).
pub type ChainHash = [u8; CHAIN_HASH_BYTES];
/// The hash "before" the first record.
pub const CHAIN_GENESIS: ChainHash = [0; CHAIN_HASH_BYTES];

/// `SHA256(prev || seq (u64 BE) || payload)`: the hash of the record of sequence `seq` whose
/// payload is `payload`, following the record whose hash is `prev`.
pub fn chain_hash(prev: &ChainHash, seq: u64, payload: &[u8]) -> ChainHash {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(prev);
    context.update(&seq.to_be_bytes());
    context.update(payload);
    let mut hash = CHAIN_GENESIS;
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// Lower-case hex of a chain hash.
pub fn chain_hex(hash: &ChainHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where an op is: its segment and the byte offset of its tag in the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location(pub u64);

impl Location {
    pub fn new(segment: u32, offset: u64) -> Location {
        debug_assert!(segment <= SEGMENTS_MAX && offset < 1 << 48);
        Location((u64::from(segment) << 48) | offset)
    }
    pub fn segment(self) -> u32 {
        (self.0 >> 48) as u32
    }
    pub fn offset(self) -> u64 {
        self.0 & ((1 << 48) - 1)
    }
}

/// One record read back: its sequence number and ops, each op with its location.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub seq: u64,
    /// Where the record starts (its frame header).
    pub record: Location,
    /// Its chain hash.
    pub head: ChainHash,
    pub ops: Vec<Op>,
    pub locations: Vec<Location>,
}

/// What is wrong with the bytes after the last intact record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailKind {
    /// An incomplete record: its header or payload runs past the end of the file, or its
    /// bytes were never written (zeros). The write was in progress at the crash, so it was
    /// never acknowledged.
    Torn,
    /// A record complete in length whose checksum (or chain hash) fails. A crash mid-write
    /// rarely leaves this; damage to the disk after the write does. **It may have been an
    /// acknowledged write.**
    Damaged,
}

impl TailKind {
    pub fn code(self) -> &'static str {
        match self {
            TailKind::Torn => "TORN",
            TailKind::Damaged => "DAMAGED",
        }
    }
}

/// The bad tail of a journal file: where it starts, how long it is, what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub kind: TailKind,
    pub reason: String,
    /// The sequence number the record would have had.
    pub seq: u64,
}

impl std::fmt::Display for TailCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            TailKind::Torn => write!(
                f,
                "a torn record (seq {}, {} bytes at byte {} of {}: {}), never acknowledged",
                self.seq,
                self.bytes,
                self.offset,
                self.path.display(),
                self.reason
            ),
            TailKind::Damaged => write!(
                f,
                "a DAMAGED last record (seq {}, {} bytes at byte {} of {}: {}); it is complete in length, \
                 so it may hold an ACKNOWLEDGED write that is now lost",
                self.seq,
                self.bytes,
                self.offset,
                self.path.display(),
                self.reason
            ),
        }
    }
}

/// What opening found.
#[derive(Debug, Default)]
pub struct ReplayStats {
    /// Records read (from the resume point, when there is one).
    pub entries: u64,
    pub last_seq: u64,
    /// Bytes after the last intact record (cut by [`Journal::cut_tail`], not by open).
    pub truncated_tail_bytes: u64,
    /// What those bytes are.
    pub tail: Option<TailCut>,
    /// Hash of the last intact record ([`CHAIN_GENESIS`] for an empty journal).
    pub chain_head: ChainHash,
    /// Where the last record starts.
    pub last_record: Location,
}

/// Where replay may start instead of the beginning: the record `seq` (already reflected in the
/// state being restored), found at `record`, whose chain hash is `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    pub seq: u64,
    pub head: ChainHash,
    pub record: Location,
}

// ----- record framing (shared with PUENTEJ2) --------------------------------------------

pub(crate) struct Damage {
    pub(crate) reason: String,
    /// Where the record says it ends, when its header could be read.
    pub(crate) declared_end: Option<u64>,
}

/// Reads one record: its length and stored chain hash, its payload into `payload`.
pub(crate) fn read_record(
    reader: &mut impl Read,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> Result<(u64, ChainHash), Damage> {
    const HEADER: u64 = RECORD_HEADER_BYTES as u64;
    let mut header = [0u8; RECORD_HEADER_BYTES];
    if remaining < HEADER || reader.read_exact(&mut header).is_err() {
        return Err(Damage { reason: "truncated record header".into(), declared_end: None });
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut stored = CHAIN_GENESIS;
    stored.copy_from_slice(&header[8..]);
    let declared_end = Some(HEADER + len);
    if len as usize > RECORD_BYTES_MAX || HEADER + len > remaining {
        return Err(Damage {
            reason: format!("record of {len} bytes runs past the end"),
            declared_end: None,
        });
    }
    payload.resize(len as usize, 0);
    if reader.read_exact(payload).is_err() {
        return Err(Damage { reason: "truncated record".into(), declared_end });
    }
    if crc32fast::hash(payload) != crc {
        return Err(Damage { reason: "checksum mismatch".into(), declared_end });
    }
    Ok((HEADER + len, stored))
}

/// The sequence number a payload starts with (both formats put it first, u64 LE).
fn payload_seq(payload: &[u8]) -> Option<u64> {
    payload.get(..8).and_then(|bytes| bytes.try_into().ok()).map(u64::from_le_bytes)
}

/// Torn or damaged? The bytes from `offset` to `file_len` failed to read as a record after the
/// record of `last_seq` (hash `prev`).
pub(crate) fn classify_tail(
    path: &Path,
    offset: u64,
    file_len: u64,
    last_seq: u64,
    prev: &ChainHash,
    damage: &Damage,
) -> Result<TailKind, LedgerError> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut rest = Vec::new();
    file.take(file_len - offset).read_to_end(&mut rest)?;
    // Never written: a crash after the file grew but before its data reached the disk.
    if rest.iter().all(|b| *b == 0) || rest.len() < RECORD_HEADER_BYTES {
        return Ok(TailKind::Torn);
    }
    let mut stored = CHAIN_GENESIS;
    stored.copy_from_slice(&rest[8..RECORD_HEADER_BYTES]);
    let payload = &rest[RECORD_HEADER_BYTES..];
    // Complete in length (its declared end fits in the file) yet failing its checksum; or its
    // stored chain hash matches the bytes that are there (the record is whole, only its length
    // or checksum field was hit).
    let complete = damage.declared_end.is_some_and(|end| offset + end <= file_len);
    let chain_matches = chain_hash(prev, last_seq + 1, payload) == stored;
    if complete || chain_matches {
        return Ok(TailKind::Damaged);
    }
    Ok(TailKind::Torn)
}

/// Whether an intact record of a sequence after `after_seq` starts at `offset`.
fn record_after_at(path: &Path, offset: u64, after_seq: u64) -> Result<bool, LedgerError> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    if offset >= file_len {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut payload = Vec::new();
    let mut reader = BufReader::new(file);
    if read_record(&mut reader, file_len - offset, &mut payload).is_err() {
        return Ok(false);
    }
    Ok(payload_seq(&payload).is_some_and(|seq| seq > after_seq))
}

/// Whether an intact record of a sequence after `after_seq` starts anywhere in
/// `[from, end of file)`. A torn tail is the last, never-acknowledged append: nothing intact
/// can follow it. Reads the rest of the file once; a checksum is computed only where the
/// header and the sequence number look plausible.
fn intact_record_after(path: &Path, from: u64, after_seq: u64) -> Result<bool, LedgerError> {
    const CHUNK: usize = 1 << 20;
    // A candidate needs its length, checksum, chain hash and the payload's sequence number.
    const PEEK: usize = RECORD_HEADER_BYTES + 8;
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut window = vec![0u8; CHUNK + PEEK];
    let mut base = from;
    while base + PEEK as u64 <= file_len {
        let want = ((file_len - base) as usize).min(CHUNK + PEEK);
        file.seek(SeekFrom::Start(base))?;
        file.read_exact(&mut window[..want])?;
        let remaining = file_len - base;
        for i in 0..(want + 1 - PEEK).min(CHUNK) {
            let len = u32::from_le_bytes(window[i..i + 4].try_into().expect("4 bytes")) as u64;
            let seq =
                u64::from_le_bytes(window[i + RECORD_HEADER_BYTES..i + PEEK].try_into().expect("8 bytes"));
            let room = remaining - i as u64;
            // The records between the damaged one and this candidate take at least PEEK
            // bytes each, which bounds how far `seq` can be ahead.
            let skipped = base + i as u64 + 1 - from;
            let plausible = len >= 8
                && RECORD_HEADER_BYTES as u64 + len <= room
                && len <= RECORD_BYTES_MAX as u64
                && seq > after_seq
                && seq - after_seq <= skipped / PEEK as u64 + 1;
            if plausible && record_after_at(path, base + i as u64, after_seq)? {
                return Ok(true);
            }
        }
        base += CHUNK as u64;
    }
    Ok(false)
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> LedgerError {
    LedgerError::Corrupt(format!("journal {} at byte {offset}: {reason}", path.display()))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Decodes a payload into (seq, ops, offsets of the ops within the payload).
type PayloadDecoder = fn(&[u8]) -> Result<(u64, Vec<Op>, Vec<u32>), String>;

fn decode_v3(payload: &[u8]) -> Result<(u64, Vec<Op>, Vec<u32>), String> {
    let decoded = format::decode_payload(payload).map_err(|e| e.to_string())?;
    Ok((decoded.seq, decoded.ops, decoded.offsets))
}

fn decode_j2(payload: &[u8]) -> Result<(u64, Vec<Op>, Vec<u32>), String> {
    let (seq, ops) = legacy::decode_payload(payload)?;
    Ok((seq, ops, Vec::new()))
}

/// Scans the records of one file from `start` (just after its header, or a record to resume
/// after), checking sequence numbers and the chain from (`last_seq`, `head`). Calls `each` for
/// every intact record. Stops at the end or at a bad tail (returned, not cut); a damaged
/// record followed by an intact one is corruption. With `resume`, the first record read must
/// be record `last_seq` itself with hash `head`: it is checked and skipped.
struct Scan<'a> {
    path: &'a Path,
    segment: u32,
    start: u64,
    last_seq: u64,
    head: ChainHash,
    resume: bool,
    decode: PayloadDecoder,
    /// Stop once the record of this sequence number was read (`u64::MAX`: read to the end).
    stop_after_seq: u64,
}

struct Scanned {
    last_seq: u64,
    head: ChainHash,
    entries: u64,
    end: u64,
    last_record: Option<u64>,
    tail: Option<TailCut>,
}

impl Scan<'_> {
    fn run(self, each: &mut dyn FnMut(Replayed) -> Result<(), LedgerError>) -> Result<Scanned, LedgerError> {
        let file = File::open(self.path)?;
        let file_len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        reader.seek(SeekFrom::Start(self.start))?;
        let mut offset = self.start;
        let (mut last_seq, mut head) = (self.last_seq, self.head);
        let mut entries = 0;
        let mut last_record = None;
        let mut payload = Vec::new();
        let mut resume = self.resume;
        while offset < file_len && last_seq < self.stop_after_seq {
            match read_record(&mut reader, file_len - offset, &mut payload) {
                Ok((record_len, stored)) => {
                    if resume {
                        // The record the state was taken at: it must still be here, unchanged.
                        if payload_seq(&payload) != Some(last_seq) || stored != head {
                            return Err(corrupt(
                                self.path,
                                offset,
                                &format!("the record the snapshot was taken at (seq {last_seq}) differs"),
                            ));
                        }
                        resume = false;
                        last_record = Some(offset);
                        offset += record_len;
                        continue;
                    }
                    let seq = self.replay_record(offset, last_seq, &head, &payload, stored, each)?;
                    last_seq = seq;
                    head = stored;
                    entries += 1;
                    last_record = Some(offset);
                    offset += record_len;
                }
                Err(damage) => {
                    if resume {
                        return Err(corrupt(
                            self.path,
                            offset,
                            "the record the snapshot was taken at is damaged",
                        ));
                    }
                    let tail = self.tail_cut(offset, file_len, last_seq, &head, damage)?;
                    return Ok(Scanned {
                        last_seq,
                        head,
                        entries,
                        end: offset,
                        last_record,
                        tail: Some(tail),
                    });
                }
            }
        }
        if resume {
            return Err(corrupt(self.path, offset, "the record the snapshot was taken at is missing"));
        }
        Ok(Scanned { last_seq, head, entries, end: offset, last_record, tail: None })
    }

    /// Checks an intact record read at `offset` (its sequence number follows `last_seq`, its
    /// hash chains from `head`), decodes it and hands it to `each`. Returns its sequence number.
    fn replay_record(
        &self,
        offset: u64,
        last_seq: u64,
        head: &ChainHash,
        payload: &[u8],
        stored: ChainHash,
        each: &mut dyn FnMut(Replayed) -> Result<(), LedgerError>,
    ) -> Result<u64, LedgerError> {
        let seq = payload_seq(payload).ok_or_else(|| {
            corrupt(self.path, offset, "undecodable record: shorter than a sequence number")
        })?;
        if seq != last_seq + 1 {
            return Err(corrupt(self.path, offset, &format!("sequence {seq} follows {last_seq}")));
        }
        if chain_hash(head, seq, payload) != stored {
            return Err(LedgerError::Corrupt(format!(
                "journal record seq {seq} at byte {offset} of {}: hash chain broken — the record was \
                 altered",
                self.path.display()
            )));
        }
        let (decoded_seq, ops, offsets) = (self.decode)(payload)
            .map_err(|e| corrupt(self.path, offset, &format!("undecodable record: {e}")))?;
        debug_assert_eq!(decoded_seq, seq);
        let payload_start = offset + RECORD_HEADER_BYTES as u64;
        let locations =
            offsets.iter().map(|o| Location::new(self.segment, payload_start + u64::from(*o))).collect();
        each(Replayed { seq, record: Location::new(self.segment, offset), head: stored, ops, locations })?;
        Ok(seq)
    }

    /// What to make of a damaged record at `offset`: corruption (an error) if an intact record
    /// follows it, else the bad tail to cut.
    fn tail_cut(
        &self,
        offset: u64,
        file_len: u64,
        last_seq: u64,
        head: &ChainHash,
        damage: Damage,
    ) -> Result<TailCut, LedgerError> {
        // Torn tail or corruption? Look for any intact record after this one.
        let next = damage.declared_end.map(|end| offset + end);
        if let Some(next) = next
            && next < file_len
            && record_after_at(self.path, next, last_seq)?
        {
            return Err(corrupt(self.path, offset, &damage.reason));
        }
        // The damage may be in the length field itself, so that the record seems to
        // end somewhere else: look for an intact later record anywhere after it.
        if intact_record_after(self.path, offset + 1, last_seq)? {
            return Err(corrupt(
                self.path,
                offset,
                &format!("{}, and intact records follow it", damage.reason),
            ));
        }
        let kind = classify_tail(self.path, offset, file_len, last_seq, head, &damage)?;
        let tail = TailCut {
            path: self.path.to_owned(),
            offset,
            bytes: file_len - offset,
            kind,
            reason: damage.reason,
            seq: last_seq + 1,
        };
        Ok(tail)
    }
}

// ----- segments ---------------------------------------------------------------------------

/// A segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment: u32,
    pub first_seq: u64,
    pub prev_head: ChainHash,
}

impl SegmentHeader {
    fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_HEADER_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.segment.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..56].copy_from_slice(&self.prev_head);
        let crc = crc32fast::hash(&out[..56]);
        out[56..60].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<SegmentHeader, LedgerError> {
        if bytes.len() < SEGMENT_HEADER_BYTES || &bytes[0..8] != MAGIC {
            return Err(corrupt(path, 0, "not a PUENTEJ3 journal segment (bad magic)"));
        }
        let crc = u32::from_le_bytes(bytes[56..60].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..56]) != crc {
            return Err(corrupt(path, 0, "segment header checksum mismatch"));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != SEGMENT_HEADER_VERSION {
            return Err(corrupt(path, 0, &format!("segment header version {version}")));
        }
        let mut prev_head = CHAIN_GENESIS;
        prev_head.copy_from_slice(&bytes[24..56]);
        Ok(SegmentHeader {
            segment: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
            first_seq: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            prev_head,
        })
    }

    fn read(path: &Path) -> Result<SegmentHeader, LedgerError> {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        File::open(path)?
            .read_exact(&mut bytes)
            .map_err(|_| corrupt(path, 0, "segment shorter than its header"))?;
        SegmentHeader::decode(path, &bytes)
    }
}

/// The directory of a data directory's journal segments.
pub fn segments_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

/// The path of segment `n`.
pub fn segment_path(data_dir: &Path, n: u32) -> PathBuf {
    segments_dir(data_dir).join(format!("{n:08}.log"))
}

/// A `PUENTEJ2` journal waiting to be migrated.
pub fn legacy_path(data_dir: &Path) -> PathBuf {
    data_dir.join("journal.log")
}

/// Where a migrated `PUENTEJ2` journal is kept, read-only.
pub fn archived_legacy_path(data_dir: &Path) -> PathBuf {
    data_dir.join("journal.j2.log")
}

/// The segment numbers present, in order. Refuses a gap.
pub fn list_segments(data_dir: &Path) -> Result<Vec<u32>, LedgerError> {
    let dir = segments_dir(data_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_suffix(".log").and_then(|n| n.parse::<u32>().ok())
            && name.len() == 12
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    for (i, n) in numbers.iter().enumerate() {
        if *n != i as u32 + 1 {
            return Err(LedgerError::Corrupt(format!(
                "journal segments in {} are not numbered 1.. without gaps (found {numbers:?})",
                dir.display()
            )));
        }
    }
    Ok(numbers)
}

// ----- the journal ------------------------------------------------------------------------

/// The open journal: replays on open, appends after.
pub struct Journal {
    data_dir: PathBuf,
    file: File,
    segment: u32,
    segment_len: u64,
    /// Every byte in every segment, headers included.
    len_bytes: u64,
    buffer: Vec<u8>,
    scratch: Vec<u8>,
    offsets: Vec<u32>,
    /// Sequence and hash of the last record (0 and [`CHAIN_GENESIS`] when empty).
    head_seq: u64,
    head: ChainHash,
    last_record: Location,
    /// A bad tail found at open and not yet cut ([`Journal::cut_tail`]): nothing is appended
    /// until it is.
    tail: Option<TailCut>,
    readers: JournalReader,
    /// `fdatasync` every record before `write_prepared` returns (the default). The ledger's
    /// writer turns it off: with this journal as the record it calls [`Journal::sync`] itself
    /// right after each append (after a test hook); when the journal of record is elsewhere
    /// (`replica`), this journal is a rebuildable copy, made durable before anything relies on
    /// it ([`sync_segment`] before the index persists and before a snapshot), not before each
    /// reply.
    sync_each_record: bool,
}

/// The journal's segments, creating the first one if there is none.
fn list_or_create_segments(data_dir: &Path) -> Result<Vec<u32>, LedgerError> {
    let dir = segments_dir(data_dir);
    let mut segments = list_segments(data_dir)?;
    if segments.is_empty() {
        std::fs::create_dir_all(&dir)?;
        sync_dir(data_dir)?;
        create_segment(data_dir, &SegmentHeader { segment: 1, first_seq: 1, prev_head: CHAIN_GENESIS })?;
        segments.push(1);
    }
    Ok(segments)
}

/// How to scan segment `n` at `path`: from the record of `resume` if it lies in this segment,
/// else from its header, which must continue the chain at (`last_seq`, `head`).
fn segment_scan<'a>(
    path: &'a Path,
    n: u32,
    header: &SegmentHeader,
    resume: Option<ResumePoint>,
    last_seq: u64,
    head: ChainHash,
) -> Result<Scan<'a>, LedgerError> {
    Ok(match resume.filter(|r| r.record.segment() == n) {
        Some(r) => Scan {
            path,
            segment: n,
            start: r.record.offset(),
            last_seq: r.seq,
            head: r.head,
            resume: true,
            decode: decode_v3,
            stop_after_seq: u64::MAX,
        },
        None => {
            // Each segment starts exactly where the chain stands.
            if header.first_seq != last_seq + 1 || header.prev_head != head {
                return Err(corrupt(
                    path,
                    0,
                    &format!(
                        "the segment starts at seq {} after seq {last_seq} (or its chain head differs): \
                         a segment is missing or was altered",
                        header.first_seq
                    ),
                ));
            }
            Scan {
                path,
                segment: n,
                start: SEGMENT_HEADER_BYTES as u64,
                last_seq,
                head,
                resume: false,
                decode: decode_v3,
                stop_after_seq: u64::MAX,
            }
        }
    })
}

impl Journal {
    /// Opens (or creates) the journal of `data_dir`, calling `each` for every intact record in
    /// order, from the beginning or after `resume` (a snapshot's record, checked to be there,
    /// unchanged). A bad record at the very end of the last segment is reported in
    /// [`ReplayStats::tail`] and left in place: the caller cuts it with [`Journal::cut_tail`]
    /// once everything else checked out, so a start that is refused changes nothing. A damaged
    /// record anywhere else is corruption: an error, nothing is cut.
    pub fn open(
        data_dir: &Path,
        resume: Option<ResumePoint>,
        mut each: impl FnMut(Replayed) -> Result<(), LedgerError>,
    ) -> Result<(Journal, ReplayStats), LedgerError> {
        let segments = list_or_create_segments(data_dir)?;
        let mut stats = ReplayStats::default();
        // The chain position before the next segment to read: from the start, or the
        // snapshot's record (segments before it are not read).
        let (mut last_seq, mut head) = (0, CHAIN_GENESIS);
        let first_segment = resume.map(|r| r.record.segment()).unwrap_or(1);
        let mut len_bytes = 0;
        let mut last_record = resume.map(|r| r.record).unwrap_or_default();
        let mut tail = None;
        let mut end = SEGMENT_HEADER_BYTES as u64;
        for (i, &n) in segments.iter().enumerate() {
            let path = segment_path(data_dir, n);
            let header = SegmentHeader::read(&path)?;
            len_bytes += std::fs::metadata(&path)?.len();
            if header.segment != n {
                return Err(corrupt(&path, 0, &format!("segment header says {}", header.segment)));
            }
            if n < first_segment {
                continue;
            }
            let scan = segment_scan(&path, n, &header, resume, last_seq, head)?;
            let scanned = scan.run(&mut each)?;
            if let Some(t) = &scanned.tail
                && i + 1 != segments.len()
            {
                return Err(corrupt(
                    &path,
                    t.offset,
                    &format!("{} in a segment that is not the last", t.reason),
                ));
            }
            stats.entries += scanned.entries;
            last_seq = scanned.last_seq;
            head = scanned.head;
            if let Some(offset) = scanned.last_record {
                last_record = Location::new(n, offset);
            }
            end = scanned.end;
            tail = scanned.tail;
        }
        stats.last_seq = last_seq;
        stats.chain_head = head;
        stats.last_record = last_record;
        stats.truncated_tail_bytes = tail.as_ref().map_or(0, |t| t.bytes);
        stats.tail = tail.clone();
        let segment = *segments.last().expect("at least one segment");
        let path = segment_path(data_dir, segment);
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        file.seek(SeekFrom::Start(end))?;
        let journal = Journal {
            data_dir: data_dir.to_owned(),
            file,
            segment,
            segment_len: end,
            len_bytes: len_bytes - stats.truncated_tail_bytes,
            buffer: Vec::with_capacity(1 << 20),
            scratch: Vec::new(),
            offsets: Vec::new(),
            head_seq: last_seq,
            head,
            last_record,
            tail,
            readers: JournalReader::new(data_dir),
            sync_each_record: true,
        };
        Ok((journal, stats))
    }

    /// Cuts the bad tail found at open, if any, after saving its bytes next to the segment
    /// (`NNNNNNNN.log.cut-<offset>`, mode 0600, fsync'd) as evidence. Returns where they went.
    /// Call it only once the start is certain to go on.
    pub fn cut_tail(&mut self) -> Result<Option<PathBuf>, LedgerError> {
        let Some(tail) = self.tail.take() else { return Ok(None) };
        let evidence = save_evidence(&tail)?;
        self.file.set_len(tail.offset)?;
        self.file.sync_all()?;
        self.file.seek(SeekFrom::Start(tail.offset))?;
        self.segment_len = tail.offset;
        Ok(Some(evidence))
    }

    /// Appends the record `seq` (the next sequence number) holding `ops` and makes it durable
    /// (`fdatasync`) before returning. Fills `locations` with each op's location. The chain
    /// head moves only once the record is durable.
    pub fn append(&mut self, seq: u64, ops: &[Op], locations: &mut Vec<Location>) -> Result<(), LedgerError> {
        self.prepare(seq, ops)?;
        self.write_prepared(seq, locations)
    }

    /// Encodes the record `seq` (the next sequence number) holding `ops`, header and chain hash
    /// included, and returns its bytes: exactly what [`Journal::write_prepared`] then writes.
    /// A replicated journal sends these bytes to the journal of record first (`puente serve
    /// --journal-url`), so every node's segments hold the same bytes and the same chain.
    pub fn prepare(&mut self, seq: u64, ops: &[Op]) -> Result<&[u8], LedgerError> {
        self.check_next(seq)?;
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
        format::encode_payload(seq, ops, &mut self.buffer, &mut self.offsets, &mut self.scratch);
        let payload_len = self.buffer.len() - RECORD_HEADER_BYTES;
        if payload_len > RECORD_BYTES_MAX {
            return Err(LedgerError::Storage(format!(
                "journal record of {payload_len} bytes exceeds the limit"
            )));
        }
        let payload = &self.buffer[RECORD_HEADER_BYTES..];
        let crc = crc32fast::hash(payload);
        let hash = chain_hash(&self.head, seq, payload);
        self.buffer[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.buffer[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buffer[8..RECORD_HEADER_BYTES].copy_from_slice(&hash);
        Ok(&self.buffer)
    }

    /// Appends a record another node wrote (its exact bytes, from the journal of record) as
    /// the record `seq`: checks its length, checksum, sequence number and that it chains onto
    /// this journal's head, then writes it durably like [`Journal::append`]. Returns its ops,
    /// for the caller to apply. Nothing is written when a check fails.
    pub fn append_record(
        &mut self,
        seq: u64,
        record: &[u8],
        locations: &mut Vec<Location>,
    ) -> Result<Vec<Op>, LedgerError> {
        self.check_next(seq)?;
        let mut reader = record;
        let mut payload = Vec::new();
        let (len, stored) = read_record(&mut reader, record.len() as u64, &mut payload)
            .map_err(|damage| LedgerError::Corrupt(format!("replicated record {seq}: {}", damage.reason)))?;
        if len != record.len() as u64 {
            return Err(LedgerError::Corrupt(format!("replicated record {seq}: trailing bytes")));
        }
        if chain_hash(&self.head, seq, &payload) != stored {
            return Err(LedgerError::Corrupt(format!(
                "replicated record {seq} does not chain onto this node's journal (seq {}, head {})",
                self.head_seq,
                chain_hex(&self.head)
            )));
        }
        let decoded = format::decode_payload(&payload)
            .map_err(|e| LedgerError::Corrupt(format!("replicated record {seq}: {e}")))?;
        if decoded.seq != seq {
            return Err(LedgerError::Corrupt(format!("replicated record {seq} says it is {}", decoded.seq)));
        }
        self.buffer.clear();
        self.buffer.extend_from_slice(record);
        self.offsets = decoded.offsets;
        self.write_prepared(seq, locations)?;
        Ok(decoded.ops)
    }

    fn check_next(&self, seq: u64) -> Result<(), LedgerError> {
        if self.tail.is_some() {
            return Err(LedgerError::Storage("the journal's bad tail was not cut before appending".into()));
        }
        if seq != self.head_seq + 1 {
            return Err(LedgerError::Storage(format!(
                "journal entry {seq} appended after {}",
                self.head_seq
            )));
        }
        Ok(())
    }

    /// Writes the record in the buffer (from [`Journal::prepare`] or
    /// [`Journal::append_record`]) and makes it durable; fills `locations`.
    pub fn write_prepared(&mut self, seq: u64, locations: &mut Vec<Location>) -> Result<(), LedgerError> {
        self.check_next(seq)?;
        let record_len = self.buffer.len() as u64;
        assert!(record_len >= RECORD_HEADER_BYTES as u64, "a prepared record has a header");
        if self.segment_len + record_len > SEGMENT_BYTES_MAX && self.segment_len > SEGMENT_HEADER_BYTES as u64
        {
            self.roll(seq)?;
        }
        let mut hash = CHAIN_GENESIS;
        hash.copy_from_slice(&self.buffer[8..RECORD_HEADER_BYTES]);
        let record_offset = self.segment_len;
        self.file.write_all(&self.buffer)?;
        if self.sync_each_record {
            self.file.sync_data()?;
        }
        let payload_start = record_offset + RECORD_HEADER_BYTES as u64;
        locations.clear();
        locations
            .extend(self.offsets.iter().map(|o| Location::new(self.segment, payload_start + u64::from(*o))));
        self.segment_len += record_len;
        self.len_bytes += record_len;
        self.head_seq = seq;
        self.head = hash;
        self.last_record = Location::new(self.segment, record_offset);
        Ok(())
    }

    /// Closes the current segment and starts the next, whose first record will be `seq`.
    fn roll(&mut self, seq: u64) -> Result<(), LedgerError> {
        let next = self.segment + 1;
        if next > SEGMENTS_MAX {
            return Err(LedgerError::Storage(format!(
                "the journal holds its most segments ({SEGMENTS_MAX})"
            )));
        }
        self.file.sync_all()?;
        let header = SegmentHeader { segment: next, first_seq: seq, prev_head: self.head };
        self.file = create_segment(&self.data_dir, &header)?;
        self.segment = next;
        self.segment_len = SEGMENT_HEADER_BYTES as u64;
        self.len_bytes += SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }

    /// See the field: `false` when the journal of record is elsewhere.
    pub fn set_sync_each_record(&mut self, sync: bool) {
        self.sync_each_record = sync;
    }

    /// Makes every record written so far durable (cheap when each was synced already).
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        Ok(self.file.sync_data()?)
    }

    /// Sequence number and hash of the last durable record: the journal's chain head.
    pub fn chain_head(&self) -> (u64, ChainHash) {
        (self.head_seq, self.head)
    }

    /// Where the last durable record starts (for a snapshot's resume point).
    pub fn last_record(&self) -> Location {
        self.last_record
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// A reader of ops by location, sharing nothing mutable with the writer.
    pub fn reader(&self) -> JournalReader {
        self.readers.clone()
    }
}

/// Creates segment `header.segment` with its header, fsync'd, its directory too.
fn create_segment(data_dir: &Path, header: &SegmentHeader) -> Result<File, LedgerError> {
    let path = segment_path(data_dir, header.segment);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(&header.encode())?;
    file.sync_all()?;
    sync_dir(&segments_dir(data_dir))?;
    Ok(file)
}

/// Saves the bytes of a bad tail beside its file, mode 0600, fsync'd.
pub(crate) fn save_evidence(tail: &TailCut) -> Result<PathBuf, LedgerError> {
    let name = tail.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut evidence = tail.path.with_file_name(format!("{name}.cut-{}", tail.offset));
    let mut n = 1;
    while evidence.exists() {
        evidence = tail.path.with_file_name(format!("{name}.cut-{}.{n}", tail.offset));
        n += 1;
    }
    let mut bytes = Vec::with_capacity(tail.bytes as usize);
    let mut file = File::open(&tail.path)?;
    file.seek(SeekFrom::Start(tail.offset))?;
    file.take(tail.bytes).read_to_end(&mut bytes)?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut saved = options.open(&evidence)?;
    saved.write_all(&bytes)?;
    saved.sync_all()?;
    if let Some(dir) = tail.path.parent() {
        sync_dir(dir)?;
    }
    Ok(evidence)
}

/// The journal's records in order, each as its exact bytes (header and payload), for copying
/// a node's journal into a journal of record elsewhere (`replica`). Stops at the first record
/// that does not read (a torn tail, which an open would cut).
pub struct RecordBytes {
    data_dir: PathBuf,
    segments: std::vec::IntoIter<u32>,
    current: Option<(BufReader<File>, u64)>,
    payload: Vec<u8>,
    seq: u64,
}

impl RecordBytes {
    pub fn new(data_dir: &Path) -> Result<RecordBytes, LedgerError> {
        Ok(RecordBytes {
            data_dir: data_dir.to_owned(),
            segments: list_segments(data_dir)?.into_iter(),
            current: None,
            payload: Vec::new(),
            seq: 0,
        })
    }

    /// The next record: its sequence number and bytes; `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<(u64, Vec<u8>)>, LedgerError> {
        loop {
            if self.current.is_none() {
                let Some(n) = self.segments.next() else { return Ok(None) };
                let path = segment_path(&self.data_dir, n);
                let mut file = File::open(&path)?;
                let len = file.metadata()?.len();
                file.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES as u64))?;
                self.current = Some((BufReader::new(file), len.saturating_sub(SEGMENT_HEADER_BYTES as u64)));
            }
            let Some((reader, remaining)) = self.current.as_mut() else { continue };
            if *remaining == 0 {
                self.current = None;
                continue;
            }
            let Ok((len, hash)) = read_record(reader, *remaining, &mut self.payload) else { return Ok(None) };
            *remaining -= len;
            let seq = payload_seq(&self.payload).unwrap_or(0);
            if seq != self.seq + 1 {
                return Err(LedgerError::Corrupt(format!("journal record {seq} follows {}", self.seq)));
            }
            self.seq = seq;
            let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + self.payload.len());
            record.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
            record.extend_from_slice(&crc32fast::hash(&self.payload).to_le_bytes());
            record.extend_from_slice(&hash);
            record.extend_from_slice(&self.payload);
            return Ok(Some((seq, record)));
        }
    }
}

/// Makes the segment holding `location` durable (`fdatasync` through a descriptor of its own):
/// called before the index persists, or a snapshot is written, at a record of it. Earlier
/// segments were synced when the writer rolled past them.
pub fn sync_segment(data_dir: &Path, location: Location) -> Result<(), LedgerError> {
    let file = File::open(segment_path(data_dir, location.segment()))?;
    Ok(file.sync_data()?)
}

// ----- reading ops by location ------------------------------------------------------------

/// Reads ops by location (`pread` on read-only handles, one per segment, opened on first use).
/// Cheap to clone; safe while the writer appends (it reads only durable, complete records).
#[derive(Clone)]
pub struct JournalReader {
    data_dir: Arc<PathBuf>,
    files: Arc<RwLock<Vec<Option<Arc<File>>>>>,
}

impl JournalReader {
    pub fn new(data_dir: &Path) -> JournalReader {
        JournalReader { data_dir: Arc::new(data_dir.to_owned()), files: Arc::new(RwLock::new(Vec::new())) }
    }

    fn file(&self, segment: u32) -> Result<Arc<File>, LedgerError> {
        let index = segment as usize;
        {
            let files = self.files.read().unwrap_or_else(|p| p.into_inner());
            if let Some(Some(file)) = files.get(index) {
                return Ok(file.clone());
            }
        }
        let file = Arc::new(File::open(segment_path(&self.data_dir, segment))?);
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        if files.len() <= index {
            files.resize(index + 1, None);
        }
        files[index] = Some(file.clone());
        Ok(file)
    }

    /// The op at `location`.
    pub fn read_op(&self, location: Location) -> Result<Op, LedgerError> {
        use std::os::unix::fs::FileExt;
        let file = self.file(location.segment())?;
        let mut bytes = vec![0u8; OP_READ_BYTES];
        let n = read_at_most(&file, &mut bytes, location.offset())?;
        bytes.truncate(n);
        // tag + varint length: enough to know the whole op's size.
        let mut header = format::Reader::new(bytes.get(1..).unwrap_or_default());
        let len = header.varint().map_err(|e| self.bad(location, &e.to_string()))? as usize;
        let total = 1 + header.position() + len;
        if total > RECORD_BYTES_MAX {
            return Err(self.bad(location, "an op longer than a record"));
        }
        if total > bytes.len() {
            bytes.resize(total, 0);
            file.read_exact_at(&mut bytes, location.offset())
                .map_err(|e| self.bad(location, &format!("short read: {e}")))?;
        }
        let (op, used) = format::decode_op_at(&bytes).map_err(|e| self.bad(location, &e.to_string()))?;
        debug_assert_eq!(used, total);
        Ok(op)
    }

    fn bad(&self, location: Location, reason: &str) -> LedgerError {
        LedgerError::Corrupt(format!(
            "journal segment {} at byte {}: {reason}",
            location.segment(),
            location.offset()
        ))
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> Result<usize, LedgerError> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

// ----- copies (backups) and heads -----------------------------------------------------------

/// What [`copy_journal`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixCopy {
    /// Records copied (group commits).
    pub entries: u64,
    /// Sequence number of the last record copied (0 for an empty journal).
    pub last_seq: u64,
    /// Bytes written to the copy, headers included.
    pub bytes: u64,
    /// Bytes of the source's last segment left out at its end: a record still being written
    /// (or a torn, never-acknowledged one), or a damaged last record (see `tail_kind`).
    pub tail_bytes_left: u64,
    /// What the bytes left out look like, as the source was when the copy ended.
    pub tail_kind: Option<TailKind>,
    /// Hash of the last record copied, checked along the whole chain ([`CHAIN_GENESIS`] for
    /// an empty journal): record it to detect a later rewrite of the copy.
    pub chain_head: ChainHash,
    /// Segments copied.
    pub segments: Vec<u32>,
}

/// Copies the journal of `src_dir` (every segment, the last one up to its longest intact
/// prefix) into `dst_dir/journal/` (which must not exist), checking every record's checksum,
/// sequence number and chain hash, and `fsync`s it. Safe while a server appends to the source:
/// every record is one whole group commit written before any request in it is acknowledged,
/// so a prefix of intact records is a consistent state holding every write acknowledged
/// before the copy started. Refuses a damaged record followed by intact ones, and a record
/// that breaks the chain; leaves out a record still being written or torn at the end. Does not
/// modify the source.
pub fn copy_journal(src_dir: &Path, dst_dir: &Path) -> Result<PrefixCopy, LedgerError> {
    let segments = list_segments(src_dir)?;
    let dst_segments = segments_dir(dst_dir);
    std::fs::create_dir_all(dst_dir)?;
    std::fs::create_dir(&dst_segments)?;
    let mut copy = PrefixCopy::default();
    let (mut last_seq, mut head) = (0, CHAIN_GENESIS);
    for (i, &n) in segments.iter().enumerate() {
        let src = segment_path(src_dir, n);
        let header = SegmentHeader::read(&src)?;
        if header.first_seq != last_seq + 1 || header.prev_head != head {
            return Err(corrupt(&src, 0, "the segment does not continue the chain"));
        }
        // Only the length the file had now: the writer may append meanwhile.
        let snapshot_len = std::fs::metadata(&src)?.len();
        let scanned = Scan {
            path: &src,
            segment: n,
            start: SEGMENT_HEADER_BYTES as u64,
            last_seq,
            head,
            resume: false,
            decode: |payload| Ok((payload_seq(payload).unwrap_or(0), Vec::new(), Vec::new())),
            stop_after_seq: u64::MAX,
        }
        .run(&mut |_| Ok(()))?;
        let last = i + 1 == segments.len();
        if let Some(tail) = &scanned.tail {
            if !last {
                return Err(corrupt(&src, tail.offset, "damage in a segment that is not the last"));
            }
            // A record the server was writing while we read can look damaged: if it reads
            // intact now, it was in progress.
            let in_progress =
                tail.kind == TailKind::Damaged && record_after_at(&src, tail.offset, scanned.last_seq)?;
            copy.tail_kind = Some(if in_progress { TailKind::Torn } else { tail.kind });
            copy.tail_bytes_left = snapshot_len.saturating_sub(scanned.end).max(tail.bytes.min(snapshot_len));
        }
        let keep = scanned.end.min(snapshot_len);
        let dst = dst_segments.join(format!("{n:08}.log"));
        let mut reader = File::open(&src)?.take(keep);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut writer = options.open(&dst)?;
        std::io::copy(&mut reader, &mut writer)?;
        writer.sync_all()?;
        copy.bytes += keep;
        copy.entries += scanned.entries;
        copy.segments.push(n);
        last_seq = scanned.last_seq;
        head = scanned.head;
    }
    sync_dir(&dst_segments)?;
    sync_dir(dst_dir)?;
    copy.last_seq = last_seq;
    copy.chain_head = head;
    Ok(copy)
}

/// The chain hash stored with record `seq` in the journal of `data_dir` (its `PUENTEJ3`
/// segments, or a `PUENTEJ2` journal not yet migrated), or `None` when it has no such intact
/// record. It reads stored hashes without recomputing them: call it on a journal that an open
/// has just verified. Heads recorded before a migration were computed over the old encoding:
/// see [`archived_chain_hash_at`].
pub fn chain_hash_at(data_dir: &Path, seq: u64) -> Result<Option<ChainHash>, LedgerError> {
    let legacy = legacy_path(data_dir);
    if legacy.exists() {
        return legacy::stored_hash_at(&legacy, seq);
    }
    for n in list_segments(data_dir)? {
        let path = segment_path(data_dir, n);
        let file = File::open(&path)?;
        let file_len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        reader.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES as u64))?;
        let mut offset = SEGMENT_HEADER_BYTES as u64;
        let mut payload = Vec::new();
        while offset < file_len {
            let Ok((record_len, stored)) = read_record(&mut reader, file_len - offset, &mut payload) else {
                break;
            };
            if payload_seq(&payload) == Some(seq) {
                return Ok(Some(stored));
            }
            offset += record_len;
        }
    }
    Ok(None)
}

/// The chain hash record `seq` had in the `PUENTEJ2` journal this data directory was migrated
/// from (kept read-only as `journal.j2.log`), or `None` (no archive, or no such record).
pub fn archived_chain_hash_at(data_dir: &Path, seq: u64) -> Result<Option<ChainHash>, LedgerError> {
    let archived = archived_legacy_path(data_dir);
    if !archived.exists() {
        return Ok(None);
    }
    legacy::stored_hash_at(&archived, seq)
}

/// Recomputes the checksum, sequence number and chain hash of every record of the journal of
/// `data_dir` up to `point` (the part a start from a snapshot or a persisted index does not
/// read) and checks that the chain arrives at `point.head`. Reads only: safe while the writer
/// appends after `point`.
pub fn verify_prefix(data_dir: &Path, point: &ResumePoint) -> Result<(), LedgerError> {
    let (mut last_seq, mut head) = (0, CHAIN_GENESIS);
    for n in list_segments(data_dir)? {
        if n > point.record.segment() || last_seq >= point.seq {
            break;
        }
        let path = segment_path(data_dir, n);
        let header = SegmentHeader::read(&path)?;
        if header.first_seq != last_seq + 1 || header.prev_head != head {
            return Err(corrupt(&path, 0, "the segment does not continue the chain"));
        }
        let scanned = Scan {
            path: &path,
            segment: n,
            start: SEGMENT_HEADER_BYTES as u64,
            last_seq,
            head,
            resume: false,
            decode: |payload| Ok((payload_seq(payload).unwrap_or(0), Vec::new(), Vec::new())),
            stop_after_seq: point.seq,
        }
        .run(&mut |_| Ok(()))?;
        if let Some(tail) = &scanned.tail
            && scanned.last_seq < point.seq
        {
            return Err(corrupt(&path, tail.offset, &tail.reason));
        }
        last_seq = scanned.last_seq;
        head = scanned.head;
    }
    if last_seq != point.seq || head != point.head {
        return Err(LedgerError::Corrupt(format!(
            "the journal's chain reaches seq {last_seq} ({}) where the state was taken at seq {} ({}): a record \
             before it is missing or was altered",
            chain_hex(&head),
            point.seq,
            chain_hex(&point.head)
        )));
    }
    Ok(())
}

/// Whether the journal of `data_dir` holds, at `point.record`, an intact record of sequence
/// `point.seq` whose stored chain hash is `point.head` (a snapshot's or the index's resume
/// point still describes this journal).
pub fn resume_point_holds(data_dir: &Path, point: &ResumePoint) -> Result<bool, LedgerError> {
    let path = segment_path(data_dir, point.record.segment());
    let Ok(file) = File::open(&path) else { return Ok(false) };
    let file_len = file.metadata()?.len();
    if point.record.offset() >= file_len {
        return Ok(false);
    }
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(point.record.offset()))?;
    let mut payload = Vec::new();
    match read_record(&mut reader, file_len - point.record.offset(), &mut payload) {
        Ok((_, stored)) => Ok(stored == point.head && payload_seq(&payload) == Some(point.seq)),
        Err(_) => Ok(false),
    }
}

/// Scans a `PUENTEJ2` file (for migration and for heads recorded before it).
pub(crate) fn scan_legacy(
    path: &Path,
    each: &mut dyn FnMut(Replayed) -> Result<(), LedgerError>,
) -> Result<(u64, ChainHash, u64, Option<TailCut>), LedgerError> {
    let mut magic = [0u8; 8];
    File::open(path)?.read_exact(&mut magic).map_err(|_| corrupt(path, 0, "file shorter than its header"))?;
    if &magic != LEGACY_MAGIC {
        return Err(corrupt(path, 0, "not a PUENTEJ2 journal (bad magic)"));
    }
    let scanned = Scan {
        path,
        segment: 0,
        start: 8,
        last_seq: 0,
        head: CHAIN_GENESIS,
        resume: false,
        decode: decode_j2,
        stop_after_seq: u64::MAX,
    }
    .run(each)?;
    Ok((scanned.last_seq, scanned.head, scanned.entries, scanned.tail))
}

#[cfg(test)]
mod tests;
