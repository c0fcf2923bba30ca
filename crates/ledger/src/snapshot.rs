//! Snapshots of the engine's state at a journal position, so that a start replays only the
//! journal after it. A snapshot is derived state: a damaged, outdated or unreadable one is
//! skipped (an older one, or a full replay, is used instead), so its layout is versioned but
//! never migrated.
//!
//! File (`data/snapshots/<seq, 20 digits>.snap`): magic `PUENTESN`, format version (u32 LE),
//! the resume point (seq u64 LE, record location u64 LE, chain head 32 bytes), the state's
//! length (u64 LE), the state (bincode of `EngineState`), CRC-32 of everything before (u32 LE).
//! Written to a temporary name, fsync'd, renamed, directory fsync'd.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::LedgerError;
use crate::engine::EngineState;
use crate::journal::{CHAIN_GENESIS, Location, ResumePoint};

const MAGIC: &[u8; 8] = b"PUENTESN";
/// Bump when `EngineState` changes shape: older snapshots are then skipped, not misread.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
pub use crate::limits::SNAPSHOTS_KEPT;
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 32 + 8;

pub struct Snapshot {
    pub resume: ResumePoint,
    pub state: EngineState,
}

pub fn snapshots_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

pub fn snapshot_path(data_dir: &Path, seq: u64) -> PathBuf {
    snapshots_dir(data_dir).join(format!("{seq:020}.snap"))
}

/// A snapshot's bytes, as its file holds them (and as a journal of record elsewhere keeps it).
pub fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, LedgerError> {
    let state =
        bincode::serialize(&snapshot.state).map_err(|e| LedgerError::Storage(format!("snapshot: {e}")))?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + state.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&snapshot.resume.seq.to_le_bytes());
    bytes.extend_from_slice(&snapshot.resume.record.0.to_le_bytes());
    bytes.extend_from_slice(&snapshot.resume.head);
    bytes.extend_from_slice(&(state.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&state);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Writes a snapshot (atomically) and deletes all but the newest [`SNAPSHOTS_KEPT`].
pub fn write(data_dir: &Path, snapshot: &Snapshot) -> Result<PathBuf, LedgerError> {
    let dir = snapshots_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let bytes = encode(snapshot)?;
    let path = snapshot_path(data_dir, snapshot.resume.seq);
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&partial)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, &path)?;
    crate::journal::sync_dir(&dir)?;
    let mut all = list(data_dir)?;
    all.sort_unstable();
    while all.len() > SNAPSHOTS_KEPT {
        let oldest = all.remove(0);
        let _ = std::fs::remove_file(snapshot_path(data_dir, oldest));
    }
    Ok(path)
}

/// The sequence numbers of the snapshots present.
pub fn list(data_dir: &Path) -> Result<Vec<u64>, LedgerError> {
    let dir = snapshots_dir(data_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name();
        if let Some(seq) = name.to_string_lossy().strip_suffix(".snap").and_then(|s| s.parse::<u64>().ok()) {
            out.push(seq);
        }
    }
    Ok(out)
}

/// Reads the snapshot taken at `seq`, checking its checksum and version.
pub fn read(data_dir: &Path, seq: u64) -> Result<Snapshot, String> {
    let path = snapshot_path(data_dir, seq);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode(&bytes, seq).map_err(|e| format!("{}: {e}", path.display()))
}

/// Decodes a snapshot's bytes, checking its checksum, version and that it was taken at `seq`.
pub fn decode(bytes: &[u8], seq: u64) -> Result<Snapshot, String> {
    if bytes.len() < HEADER_BYTES + 4 || &bytes[..8] != MAGIC {
        return Err("not a snapshot".to_owned());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".to_owned());
    }
    let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(format!("format version {version}, this build reads {SNAPSHOT_FORMAT_VERSION}"));
    }
    let seq_read = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
    let record = Location(u64::from_le_bytes(body[20..28].try_into().expect("8 bytes")));
    let mut head = CHAIN_GENESIS;
    head.copy_from_slice(&body[28..60]);
    let len = u64::from_le_bytes(body[60..68].try_into().expect("8 bytes")) as usize;
    if seq_read != seq || HEADER_BYTES + len != body.len() {
        return Err("inconsistent header".to_owned());
    }
    let state: EngineState =
        bincode::deserialize(&body[HEADER_BYTES..]).map_err(|e| format!("undecodable state: {e}"))?;
    Ok(Snapshot { resume: ResumePoint { seq, record, head }, state })
}

/// Deletes the snapshot taken at `seq` (one the journal does not hold, accepted with
/// `--rebuild-index`).
pub fn remove(data_dir: &Path, seq: u64) -> Result<(), LedgerError> {
    std::fs::remove_file(snapshot_path(data_dir, seq))?;
    crate::journal::sync_dir(&snapshots_dir(data_dir))
}
