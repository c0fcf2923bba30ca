//! The journal: an append-only, checksummed, fsync'd log of committed ops. It is Puente's
//! source of truth; sled is an index rebuilt from it (see ARCHITECTURE.md, "Durability").
//!
//! File format (`journal.log`): an 8-byte magic `PUENTEJ2`, then records
//! `[len: u32 LE][crc32(payload): u32 LE][hash: 32 bytes][payload: bincode(JournalEntry)]`.
//! A write is acknowledged only after `fdatasync` returns for the record that holds it.
//!
//! The CRC catches torn writes and accidental damage. The hash makes the journal
//! tamper-evident: records form a SHA-256 chain,
//! `hash_n = SHA256(hash_{n-1} || seq_n as u64 BE || payload_n)` with `hash_0` = 32 zero
//! bytes, where `payload_n` is the record's bincode bytes exactly as written. Every open and
//! every copy recomputes the chain and refuses a record whose stored hash differs, so an edit
//! that also fixes up the CRC is still caught. The chain is not keyed: whoever can rewrite
//! the file can recompute every following hash too (or cut records off the end), so the
//! chain head ([`Journal::chain_head`], `Ledger::chain_head`) must be recorded outside the
//! data directory (e.g. in settlement reports) for a rewrite to be detectable.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LedgerError;
use crate::engine::Op;

const MAGIC: &[u8; 8] = b"PUENTEJ2";
/// Largest journal record (one group commit). A group of 64 Ki transfers is ~20 MiB.
pub const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;
const HEADER_BYTES: usize = 8;
/// A record's header: length, CRC-32, chain hash.
const RECORD_HEADER_BYTES: usize = 4 + 4 + CHAIN_HASH_BYTES;
const CHAIN_HASH_BYTES: usize = 32;

/// A link of the journal's hash chain (SHA-256).
pub type ChainHash = [u8; CHAIN_HASH_BYTES];
/// The hash "before" the first record.
pub const CHAIN_GENESIS: ChainHash = [0; CHAIN_HASH_BYTES];

/// `SHA256(prev || seq (u64 BE) || payload)`: the hash of the record of sequence `seq` whose
/// bincode bytes are `payload`, following the record whose hash is `prev`.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    pub ops: Vec<Op>,
}

pub struct Journal {
    file: File,
    path: PathBuf,
    buffer: Vec<u8>,
    len_bytes: u64,
    /// Sequence and hash of the last record (0 and [`CHAIN_GENESIS`] when empty).
    head_seq: u64,
    head: ChainHash,
    /// A bad tail found at open and not yet cut ([`Journal::cut_tail`]): nothing is appended
    /// until it is.
    tail: Option<TailCut>,
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

/// The bad tail of a journal: where it starts, how long it is, what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
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
                "a torn record (seq {}, {} bytes at byte {}: {}), never acknowledged",
                self.seq, self.bytes, self.offset, self.reason
            ),
            TailKind::Damaged => write!(
                f,
                "a DAMAGED last record (seq {}, {} bytes at byte {}: {}); it is complete in length, so it \
                 may hold an ACKNOWLEDGED write that is now lost",
                self.seq, self.bytes, self.offset, self.reason
            ),
        }
    }
}

/// What opening found.
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub entries: u64,
    pub last_seq: u64,
    /// Bytes after the last intact record (cut by [`Journal::cut_tail`], not by open).
    pub truncated_tail_bytes: u64,
    /// What those bytes are.
    pub tail: Option<TailCut>,
    /// Hash of the last intact record ([`CHAIN_GENESIS`] for an empty journal).
    pub chain_head: ChainHash,
}

impl Journal {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("journal.log")
    }

    /// Opens (or creates) the journal, calling `each` for every intact entry in order.
    /// A bad record at the very end is reported in [`ReplayStats::tail`] (torn, or damaged and
    /// possibly acknowledged) and left in place: the caller cuts it with [`Journal::cut_tail`]
    /// once everything else checked out, so a start that is refused changes nothing.
    /// A damaged record followed by intact ones is corruption: an error, nothing is cut.
    pub fn open(
        dir: &Path,
        mut each: impl FnMut(JournalEntry) -> Result<(), LedgerError>,
    ) -> Result<(Journal, ReplayStats), LedgerError> {
        let path = Journal::path(dir);
        let existed = path.exists();
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut stats = ReplayStats::default();
        if !existed || file.metadata()?.len() == 0 {
            file.write_all(MAGIC)?;
            file.sync_all()?;
            sync_dir(dir)?;
        } else {
            let file_len = file.metadata()?.len();
            let mut reader = BufReader::with_capacity(1 << 20, &file);
            let mut magic = [0u8; 8];
            reader.read_exact(&mut magic).map_err(|_| corrupt(&path, 0, "file shorter than its header"))?;
            if &magic != MAGIC {
                return Err(corrupt(&path, 0, "not a Puente journal (bad magic)"));
            }
            let mut offset = HEADER_BYTES as u64;
            let mut payload = Vec::new();
            loop {
                if offset == file_len {
                    break;
                }
                match read_record(&mut reader, file_len - offset, &mut payload) {
                    Ok((record_len, stored)) => {
                        let entry = check_record(
                            &path,
                            offset,
                            stats.last_seq,
                            &stats.chain_head,
                            &stored,
                            &payload,
                        )?;
                        stats.chain_head = stored;
                        stats.last_seq = entry.seq;
                        stats.entries += 1;
                        each(entry)?;
                        offset += record_len;
                    }
                    Err(damage) => {
                        // Torn tail or corruption? Look for any intact record after this one.
                        let next = damage.declared_end.map(|end| offset + end);
                        if let Some(next) = next
                            && next < file_len
                            && intact_record_at(&path, next)?
                        {
                            return Err(corrupt(&path, offset, &damage.reason));
                        }
                        // The damage may be in the length field itself, so that the record
                        // seems to end somewhere else (or past the end of the file): look for
                        // an intact later record anywhere after it before calling it torn.
                        if intact_record_after(&path, offset + 1, stats.last_seq)? {
                            return Err(corrupt(
                                &path,
                                offset,
                                &format!("{}, and intact records follow it", damage.reason),
                            ));
                        }
                        stats.truncated_tail_bytes = file_len - offset;
                        let kind = classify_tail(
                            &path,
                            offset,
                            file_len,
                            stats.last_seq,
                            &stats.chain_head,
                            &damage,
                        )?;
                        stats.tail = Some(TailCut {
                            offset,
                            bytes: file_len - offset,
                            kind,
                            reason: damage.reason,
                            seq: stats.last_seq + 1,
                        });
                        break;
                    }
                }
            }
        }
        let len_bytes = match &stats.tail {
            Some(tail) => tail.offset,
            None => file.seek(SeekFrom::End(0))?,
        };
        let journal = Journal {
            file,
            path,
            buffer: Vec::with_capacity(1 << 20),
            len_bytes,
            head_seq: stats.last_seq,
            head: stats.chain_head,
            tail: stats.tail.clone(),
        };
        Ok((journal, stats))
    }

    /// Cuts the bad tail found at open, if any, after saving its bytes next to the journal
    /// (`journal.log.cut-<offset>`, mode 0600, fsync'd) as evidence. Returns where they went.
    /// Call it only once the start is certain to go on.
    pub fn cut_tail(&mut self) -> Result<Option<PathBuf>, LedgerError> {
        let Some(tail) = self.tail.take() else { return Ok(None) };
        let mut evidence = self.path.with_file_name(format!("journal.log.cut-{}", tail.offset));
        let mut n = 1;
        while evidence.exists() {
            evidence = self.path.with_file_name(format!("journal.log.cut-{}.{n}", tail.offset));
            n += 1;
        }
        let mut bytes = Vec::with_capacity(tail.bytes as usize);
        self.file.seek(SeekFrom::Start(tail.offset))?;
        (&self.file).take(tail.bytes).read_to_end(&mut bytes)?;
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
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file.set_len(tail.offset)?;
        self.file.sync_all()?;
        self.file.seek(SeekFrom::End(0))?;
        self.len_bytes = tail.offset;
        Ok(Some(evidence))
    }

    /// Appends one entry (the next sequence number) and makes it durable (`fdatasync`)
    /// before returning. The chain head moves only once the record is durable.
    pub fn append(&mut self, entry: &JournalEntry) -> Result<(), LedgerError> {
        if self.tail.is_some() {
            return Err(LedgerError::Storage("the journal's bad tail was not cut before appending".into()));
        }
        if entry.seq != self.head_seq + 1 {
            return Err(LedgerError::Storage(format!(
                "journal entry {} appended after {}",
                entry.seq, self.head_seq
            )));
        }
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
        bincode::serialize_into(&mut self.buffer, entry).map_err(|e| LedgerError::Storage(e.to_string()))?;
        let payload = &self.buffer[RECORD_HEADER_BYTES..];
        let payload_len = payload.len();
        if payload_len > RECORD_BYTES_MAX {
            return Err(LedgerError::Storage(format!(
                "journal record of {payload_len} bytes exceeds the limit"
            )));
        }
        let crc = crc32fast::hash(payload);
        let hash = chain_hash(&self.head, entry.seq, payload);
        self.buffer[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.buffer[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buffer[8..RECORD_HEADER_BYTES].copy_from_slice(&hash);
        self.file.write_all(&self.buffer)?;
        self.file.sync_data()?;
        self.len_bytes += self.buffer.len() as u64;
        self.head_seq = entry.seq;
        self.head = hash;
        Ok(())
    }

    /// Sequence number and hash of the last durable record: the journal's chain head.
    pub fn chain_head(&self) -> (u64, ChainHash) {
        (self.head_seq, self.head)
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    pub fn file_path(&self) -> &Path {
        &self.path
    }
}

/// What [`copy_intact_prefix`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCopy {
    /// Records copied (group commits).
    pub entries: u64,
    /// Sequence number of the last record copied (0 for an empty journal).
    pub last_seq: u64,
    /// Bytes written to the copy, header included.
    pub bytes: u64,
    /// Bytes of the source left out at its end: a record still being written (or a torn,
    /// never-acknowledged one), or a damaged last record (see `tail_kind`).
    pub tail_bytes_left: u64,
    /// What the bytes left out look like, as the source was when the copy ended.
    pub tail_kind: Option<TailKind>,
    /// Hash of the last record copied, checked along the whole chain ([`CHAIN_GENESIS`] for
    /// an empty journal): record it to detect a later rewrite of the copy.
    pub chain_head: ChainHash,
}

/// Copies the longest prefix of intact records of the journal at `src` into the new file
/// `dst` (which must not exist) and `fsync`s it. Safe while a server appends to `src`: every
/// record is one whole group commit written before any request in it is acknowledged, so a
/// prefix of intact records is a consistent state, and it holds every write acknowledged
/// before the copy started. Reads only up to the length `src` had when the copy started.
/// Refuses (`LedgerError::Corrupt`) a damaged record followed by intact ones, and a record
/// that breaks the hash chain, as recovery does; leaves out a record still being written or
/// torn at the end. Does not modify `src`.
pub fn copy_intact_prefix(src: &Path, dst: &Path) -> Result<PrefixCopy, LedgerError> {
    let source = File::open(src)?;
    let snapshot_len = source.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, source.take(snapshot_len));
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(|_| corrupt(src, 0, "file shorter than its header"))?;
    if &magic != MAGIC {
        return Err(corrupt(src, 0, "not a Puente journal (bad magic)"));
    }
    let target = OpenOptions::new().write(true).create_new(true).open(dst)?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, target);
    writer.write_all(MAGIC)?;
    let mut copy = PrefixCopy { bytes: HEADER_BYTES as u64, ..PrefixCopy::default() };
    let mut offset = HEADER_BYTES as u64;
    let mut payload = Vec::new();
    while offset < snapshot_len {
        match read_record(&mut reader, snapshot_len - offset, &mut payload) {
            Ok((record_len, stored)) => {
                let entry = check_record(src, offset, copy.last_seq, &copy.chain_head, &stored, &payload)?;
                writer.write_all(&(payload.len() as u32).to_le_bytes())?;
                writer.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
                writer.write_all(&stored)?;
                writer.write_all(&payload)?;
                copy.entries += 1;
                copy.last_seq = entry.seq;
                copy.chain_head = stored;
                copy.bytes += record_len;
                offset += record_len;
            }
            Err(damage) => {
                // Still being written, torn, or corrupt? Ask the file as it is now (it only
                // grows). If intact records follow, the one here must be whole by now (the
                // writer appends in order), unless it is damaged.
                if intact_record_after(src, offset + 1, copy.last_seq)?
                    && !record_after_at(src, offset, copy.last_seq)?
                {
                    return Err(corrupt(
                        src,
                        offset,
                        &format!("{}, and intact records follow it", damage.reason),
                    ));
                }
                copy.tail_bytes_left = snapshot_len - offset;
                let kind =
                    classify_tail(src, offset, snapshot_len, copy.last_seq, &copy.chain_head, &damage)?;
                // A record the server was writing while we read can look damaged: if it reads
                // intact now, it was in progress.
                let in_progress = kind == TailKind::Damaged && record_after_at(src, offset, copy.last_seq)?;
                copy.tail_kind = Some(if in_progress { TailKind::Torn } else { kind });
                break;
            }
        }
    }
    let target = writer.into_inner().map_err(|e| LedgerError::Storage(format!("I/O: {}", e.error())))?;
    target.sync_all()?;
    Ok(copy)
}

struct Damage {
    reason: String,
    /// Where the record says it ends, when its header could be read.
    declared_end: Option<u64>,
}

/// Checks an intact (CRC-verified) record read at `offset` against what precedes it: its
/// sequence number follows `last_seq`, its stored hash continues the chain from `prev`, and
/// it decodes. The chain is checked before decoding, so an edited payload is reported as
/// tampering even when it no longer decodes.
fn check_record(
    path: &Path,
    offset: u64,
    last_seq: u64,
    prev: &ChainHash,
    stored: &ChainHash,
    payload: &[u8],
) -> Result<JournalEntry, LedgerError> {
    // bincode puts `seq` first, as a little-endian u64.
    let seq = payload
        .get(..8)
        .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        .ok_or_else(|| corrupt(path, offset, "undecodable record: shorter than a sequence number"))?;
    if seq != last_seq + 1 {
        return Err(corrupt(path, offset, &format!("sequence {seq} follows {last_seq}")));
    }
    if chain_hash(prev, seq, payload) != *stored {
        return Err(LedgerError::Corrupt(format!(
            "journal record seq {seq} at byte {offset}: hash chain broken — the record was altered \
             (journal {})",
            path.display()
        )));
    }
    let entry: JournalEntry = bincode::deserialize(payload)
        .map_err(|e| corrupt(path, offset, &format!("undecodable record: {e}")))?;
    debug_assert_eq!(entry.seq, seq);
    Ok(entry)
}

/// The chain hash stored with record `seq`, or `None` when the journal has no such intact
/// record. It reads stored hashes without recomputing them: call it on a journal that an open
/// (or `copy_intact_prefix`) has just verified, to compare with a head recorded elsewhere.
pub fn chain_hash_at(path: &Path, seq: u64) -> Result<Option<ChainHash>, LedgerError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; HEADER_BYTES];
    if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(corrupt(path, 0, "not a Puente journal (bad magic)"));
    }
    let mut offset = HEADER_BYTES as u64;
    let mut payload = Vec::new();
    while offset < file_len {
        let Ok((record_len, stored)) = read_record(&mut reader, file_len - offset, &mut payload) else {
            return Ok(None);
        };
        // bincode puts `seq` first, as a little-endian u64.
        let record_seq = payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        if record_seq == Some(seq) {
            return Ok(Some(stored));
        }
        offset += record_len;
    }
    Ok(None)
}

/// Reads one record: its length and stored chain hash, its payload into `payload`.
fn read_record(
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

/// Torn or damaged? The bytes from `offset` to `file_len` failed to read as a record after the
/// record of `last_seq` (hash `prev`).
fn classify_tail(
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
    if rest.iter().all(|b| *b == 0) {
        return Ok(TailKind::Torn);
    }
    if rest.len() < RECORD_HEADER_BYTES {
        return Ok(TailKind::Torn);
    }
    let mut stored = CHAIN_GENESIS;
    stored.copy_from_slice(&rest[8..RECORD_HEADER_BYTES]);
    let payload = &rest[RECORD_HEADER_BYTES..];
    // Complete in length (its declared end fits in the file) yet failing its checksum; or its
    // stored chain hash matches the bytes that are there (the record is whole, only its
    // length or checksum field was hit).
    let complete = damage.declared_end.is_some_and(|end| offset + end <= file_len);
    let chain_matches = chain_hash(prev, last_seq + 1, payload) == stored;
    if complete || chain_matches {
        return Ok(TailKind::Damaged);
    }
    Ok(TailKind::Torn)
}

/// Whether an intact record starts at `offset` (relative length check only).
fn intact_record_at(path: &Path, offset: u64) -> Result<bool, LedgerError> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    if offset >= file_len {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut payload = Vec::new();
    let mut reader = BufReader::new(file);
    Ok(read_record(&mut reader, file_len - offset, &mut payload).is_ok())
}

/// Whether an intact record of a sequence after `after_seq` starts anywhere in
/// `[from, end of file)`. A torn tail is the last, never-acknowledged append: nothing intact
/// can follow it. Reads the rest of the file once; a checksum is computed only where the
/// header and the sequence number look plausible.
fn intact_record_after(path: &Path, from: u64, after_seq: u64) -> Result<bool, LedgerError> {
    const CHUNK: usize = 1 << 20;
    // A candidate needs its length, checksum, chain hash and the entry's sequence number
    // (bincode puts `seq` first, as a little-endian u64).
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

/// Whether an intact, decodable record of a sequence after `after_seq` starts at `offset`.
fn record_after_at(path: &Path, offset: u64, after_seq: u64) -> Result<bool, LedgerError> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    file.seek(SeekFrom::Start(offset))?;
    let mut payload = Vec::new();
    let mut reader = BufReader::new(file);
    if read_record(&mut reader, file_len - offset, &mut payload).is_err() {
        return Ok(false);
    }
    Ok(bincode::deserialize::<JournalEntry>(&payload).is_ok_and(|entry| entry.seq > after_seq))
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> LedgerError {
    LedgerError::Corrupt(format!("journal {} at byte {offset}: {reason}", path.display()))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    fn journal_with(dir: &Path, entries: u64) -> PathBuf {
        let (mut journal, _) = Journal::open(dir, |_| Ok(())).unwrap();
        for seq in 1..=entries {
            journal.append(&JournalEntry { seq, ops: Vec::new() }).unwrap();
        }
        Journal::path(dir)
    }

    #[test]
    fn copies_every_intact_record_and_leaves_a_partial_tail_out() {
        let dir = tempfile::tempdir().unwrap();
        let src = journal_with(dir.path(), 5);
        let whole = std::fs::metadata(&src).unwrap().len();
        // A record still being written: a header promising more bytes than there are.
        let mut file = OpenOptions::new().append(true).open(&src).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 0]).unwrap();
        let dst = dir.path().join("copy.log");
        let copy = copy_intact_prefix(&src, &dst).unwrap();
        assert_eq!((copy.entries, copy.last_seq, copy.bytes, copy.tail_bytes_left), (5, 5, whole, 10));
        assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap()[..whole as usize]);
        // The copy opens as a journal with the same records; the destination must be new.
        let copied = tempfile::tempdir().unwrap();
        std::fs::copy(&dst, Journal::path(copied.path())).unwrap();
        let (_, stats) = Journal::open(copied.path(), |_| Ok(())).unwrap();
        assert_eq!((stats.entries, stats.truncated_tail_bytes), (5, 0));
        assert!(copy_intact_prefix(&src, &dst).is_err());
    }

    #[test]
    fn refuses_a_damaged_record_with_intact_ones_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = journal_with(dir.path(), 6);
        let mut bytes = std::fs::read(&src).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&src, &bytes).unwrap();
        let error = copy_intact_prefix(&src, &dir.path().join("copy.log")).unwrap_err();
        assert!(matches!(error, LedgerError::Corrupt(_)), "{error}");
        assert!(error.to_string().contains("intact records follow"), "{error}");
    }
}
