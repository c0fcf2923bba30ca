//! Id runs: immutable, sorted files of (transfer id, journal location), each with a binary fuse
//! filter kept in memory. The index writes one run per flush and merges runs size-tiered; a
//! lookup asks each run's filter and reads one 4 KiB block of the runs that may hold the id.
//!
//! File layout (`data/index/ids/NNNNNNNNNNNN.run`):
//!
//! ```text
//! blocks      block_count × 4096 bytes: [count u16 LE][count × (id u128 LE, location u64 LE)]
//!             zero padding, [crc32 of the block's first 4092 bytes u32 LE] at its end
//! fences      block_count × 16 bytes: the first id of each block (u128 LE)
//! filter      bincode of the BinaryFuse16 filter of the ids' 64-bit hashes
//! footer      [entries u64][block_count u64][fences offset u64][filter offset u64]
//!             [filter length u64][crc32 of fences and filter u32][magic "PUENTERN" 8 bytes]
//! ```
//!
//! A run is derived state (rebuilt from the journal): it is written to a temporary name,
//! fsync'd and renamed before the index's manifest lists it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xorf::{BinaryFuse16, Filter};

use crate::LedgerError;
use crate::journal::Location;

/// One block of a run file.
pub const BLOCK_BYTES: usize = 4096;
const ENTRY_BYTES: usize = 24;
/// Entries per block: what fits with a 2-byte count and a 4-byte CRC.
pub const BLOCK_ENTRIES_MAX: usize = (BLOCK_BYTES - 2 - 4) / ENTRY_BYTES;
const FOOTER_BYTES: usize = 8 * 5 + 4 + 8;
const MAGIC: &[u8; 8] = b"PUENTERN";
/// Most bytes a filter may take when read back (a run of 2^30 ids takes ~2.4 GiB... far more
/// than any run here: merges stop at RUN_ENTRIES_MERGE_MAX).
const FILTER_BYTES_MAX: u64 = 1 << 32;

const _: () = assert!(2 + BLOCK_ENTRIES_MAX * ENTRY_BYTES + 4 <= BLOCK_BYTES);

/// The 64-bit key a filter holds for an id (ids are client-chosen: mix both halves).
pub fn filter_key(id: u128) -> u64 {
    let mut z = (id as u64) ^ ((id >> 64) as u64).rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn corrupt(path: &Path, what: &str) -> LedgerError {
    LedgerError::Corrupt(format!("index run {}: {what}", path.display()))
}

/// A run in memory: its file, the first id of each block, its filter.
pub struct Run {
    pub number: u64,
    pub path: PathBuf,
    file: File,
    fences: Vec<u128>,
    filter: Option<BinaryFuse16>,
    pub entries: u64,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("number", &self.number).field("entries", &self.entries).finish()
    }
}

impl Run {
    /// Writes a run of `entries` (sorted by id; an id may repeat) as file `number` in `dir`.
    pub fn write(dir: &Path, number: u64, entries: &[(u128, Location)]) -> Result<Run, LedgerError> {
        debug_assert!(entries.windows(2).all(|w| w[0].0 <= w[1].0), "a run is sorted");
        let path = run_path(dir, number);
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&partial)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut fences = Vec::with_capacity(entries.len() / BLOCK_ENTRIES_MAX + 1);
        let mut block = [0u8; BLOCK_BYTES];
        for chunk in entries.chunks(BLOCK_ENTRIES_MAX) {
            block.fill(0);
            block[0..2].copy_from_slice(&(chunk.len() as u16).to_le_bytes());
            for (i, (id, location)) in chunk.iter().enumerate() {
                let at = 2 + i * ENTRY_BYTES;
                block[at..at + 16].copy_from_slice(&id.to_le_bytes());
                block[at + 16..at + 24].copy_from_slice(&location.0.to_le_bytes());
            }
            let crc = crc32fast::hash(&block[..BLOCK_BYTES - 4]);
            block[BLOCK_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
            out.write_all(&block)?;
            fences.push(chunk[0].0);
        }
        let mut keys: Vec<u64> = entries.iter().map(|(id, _)| filter_key(*id)).collect();
        keys.sort_unstable();
        keys.dedup();
        let filter = if keys.is_empty() {
            None
        } else {
            Some(BinaryFuse16::try_from(&keys).map_err(|e| LedgerError::Storage(format!("id filter: {e}")))?)
        };
        let filter_bytes =
            bincode::serialize(&filter).map_err(|e| LedgerError::Storage(format!("id filter: {e}")))?;
        let fences_offset = (fences.len() * BLOCK_BYTES) as u64;
        let mut tail = Vec::with_capacity(fences.len() * 16 + filter_bytes.len());
        for fence in &fences {
            tail.extend_from_slice(&fence.to_le_bytes());
        }
        tail.extend_from_slice(&filter_bytes);
        out.write_all(&tail)?;
        let filter_offset = fences_offset + (fences.len() * 16) as u64;
        let mut footer = Vec::with_capacity(FOOTER_BYTES);
        footer.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        footer.extend_from_slice(&(fences.len() as u64).to_le_bytes());
        footer.extend_from_slice(&fences_offset.to_le_bytes());
        footer.extend_from_slice(&filter_offset.to_le_bytes());
        footer.extend_from_slice(&(filter_bytes.len() as u64).to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&tail).to_le_bytes());
        footer.extend_from_slice(MAGIC);
        out.write_all(&footer)?;
        let file = out.into_inner().map_err(|e| LedgerError::Storage(format!("I/O: {}", e.error())))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&partial, &path)?;
        crate::journal::sync_dir(dir)?;
        Ok(Run { number, file: File::open(&path)?, path, fences, filter, entries: entries.len() as u64 })
    }

    /// Opens run file `number`: reads its footer, fences and filter (not its blocks).
    pub fn open(dir: &Path, number: u64) -> Result<Run, LedgerError> {
        let path = run_path(dir, number);
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        if len < FOOTER_BYTES as u64 {
            return Err(corrupt(&path, "shorter than its footer"));
        }
        let mut footer = [0u8; FOOTER_BYTES];
        file.read_exact_at(&mut footer, len - FOOTER_BYTES as u64)?;
        if &footer[FOOTER_BYTES - 8..] != MAGIC {
            return Err(corrupt(&path, "bad magic"));
        }
        let field = |i: usize| u64::from_le_bytes(footer[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let (entries, block_count, fences_offset, filter_offset, filter_len) =
            (field(0), field(1), field(2), field(3), field(4));
        let crc = u32::from_le_bytes(footer[40..44].try_into().expect("4 bytes"));
        if fences_offset != block_count * BLOCK_BYTES as u64
            || filter_offset != fences_offset + block_count * 16
            || filter_len > FILTER_BYTES_MAX
            || filter_offset + filter_len + FOOTER_BYTES as u64 != len
        {
            return Err(corrupt(&path, "inconsistent footer"));
        }
        let mut tail = vec![0u8; (block_count * 16 + filter_len) as usize];
        file.read_exact_at(&mut tail, fences_offset)?;
        if crc32fast::hash(&tail) != crc {
            return Err(corrupt(&path, "fences or filter checksum mismatch"));
        }
        let fences = tail[..block_count as usize * 16]
            .chunks_exact(16)
            .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
            .collect();
        let filter: Option<BinaryFuse16> = bincode::deserialize(&tail[block_count as usize * 16..])
            .map_err(|_| corrupt(&path, "undecodable filter"))?;
        Ok(Run { number, path, file, fences, filter, entries })
    }

    /// Whether the run may hold `id` (the filter: no false negatives).
    pub fn may_hold(&self, key: u64) -> bool {
        self.filter.as_ref().is_some_and(|f| f.contains(&key))
    }

    /// Every location stored under `id` (appended to `out`).
    pub fn find(&self, id: u128, out: &mut Vec<Location>) -> Result<(), LedgerError> {
        if self.fences.is_empty() {
            return Ok(());
        }
        // The last block whose first id is <= id; equal ids may spill into the next blocks.
        let mut block = self.fences.partition_point(|fence| *fence <= id).saturating_sub(1);
        while block > 0 && self.fences[block] == id {
            block -= 1;
        }
        loop {
            let entries = self.read_block(block)?;
            let mut past = false;
            for (entry_id, location) in entries {
                if entry_id == id {
                    out.push(location);
                } else if entry_id > id {
                    past = true;
                    break;
                }
            }
            block += 1;
            if past || block >= self.fences.len() || self.fences[block] > id {
                return Ok(());
            }
        }
    }

    fn read_block(&self, block: usize) -> Result<Vec<(u128, Location)>, LedgerError> {
        let mut bytes = [0u8; BLOCK_BYTES];
        self.file.read_exact_at(&mut bytes, (block * BLOCK_BYTES) as u64)?;
        let crc = u32::from_le_bytes(bytes[BLOCK_BYTES - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..BLOCK_BYTES - 4]) != crc {
            return Err(corrupt(&self.path, &format!("block {block} checksum mismatch")));
        }
        let count = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        if count > BLOCK_ENTRIES_MAX {
            return Err(corrupt(&self.path, &format!("block {block} holds {count} entries")));
        }
        Ok((0..count)
            .map(|i| {
                let at = 2 + i * ENTRY_BYTES;
                let id = u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"));
                let location = u64::from_le_bytes(bytes[at + 16..at + 24].try_into().expect("8 bytes"));
                (id, Location(location))
            })
            .collect())
    }

    /// Every entry, in order (for merges).
    pub fn all(&self) -> Result<Vec<(u128, Location)>, LedgerError> {
        let mut out = Vec::with_capacity(self.entries as usize);
        for block in 0..self.fences.len() {
            out.extend(self.read_block(block)?);
        }
        Ok(out)
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

pub fn run_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.run"))
}

/// The runs in force, newest last. Immutable: a change makes a new set.
#[derive(Debug, Default, Clone)]
pub struct RunSet {
    pub runs: Vec<Arc<Run>>,
}

impl RunSet {
    /// Every location stored under `id` in any run.
    pub fn find(&self, id: u128, out: &mut Vec<Location>) -> Result<(), LedgerError> {
        let key = filter_key(id);
        for run in &self.runs {
            if run.may_hold(key) {
                run.find(id, out)?;
            }
        }
        Ok(())
    }

    pub fn entries(&self) -> u64 {
        self.runs.iter().map(|r| r.entries).sum()
    }
}

/// Merges sorted runs into one sorted list (stable: equal ids keep run order).
pub fn merge(runs: &[Arc<Run>]) -> Result<Vec<(u128, Location)>, LedgerError> {
    let mut all = Vec::with_capacity(runs.iter().map(|r| r.entries as usize).sum());
    for run in runs {
        all.extend(run.all()?);
    }
    all.sort_by_key(|(id, _)| *id);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_finds_every_location_of_every_id_and_says_no_to_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries: Vec<(u128, Location)> = (1..=10_000u128)
            .map(|i| (filter_key(i) as u128 * 7919 + (i << 64), Location(i as u64)))
            .collect();
        // An id with several locations, straddling block boundaries.
        let repeated = entries[500].0;
        for n in 0..(BLOCK_ENTRIES_MAX * 2) {
            entries.push((repeated, Location(1_000_000 + n as u64)));
        }
        entries.sort_by_key(|(id, _)| *id);
        let run = Run::write(dir.path(), 1, &entries).unwrap();
        let reopened = Run::open(dir.path(), 1).unwrap();
        for run in [&run, &reopened] {
            let mut out = Vec::new();
            run.find(repeated, &mut out).unwrap();
            assert_eq!(out.len(), BLOCK_ENTRIES_MAX * 2 + 1);
            for (id, location) in entries.iter().step_by(97) {
                out.clear();
                assert!(run.may_hold(filter_key(*id)));
                run.find(*id, &mut out).unwrap();
                assert!(out.contains(location), "{id}");
            }
            out.clear();
            run.find(u128::MAX, &mut out).unwrap();
            run.find(0, &mut out).unwrap();
            assert!(out.is_empty());
        }
        assert_eq!(reopened.all().unwrap(), entries);
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(u128, Location)> = (1..=1_000u128).map(|i| (i, Location(i as u64))).collect();
        Run::write(dir.path(), 7, &entries).unwrap();
        let path = run_path(dir.path(), 7);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let run = Run::open(dir.path(), 7).unwrap();
        assert!(matches!(run.find(5, &mut Vec::new()), Err(LedgerError::Corrupt(_))));
    }
}
