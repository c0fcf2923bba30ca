//! Backups of a data directory (format `puente-backup/2`): a consistent copy of the journal
//! taken while the server runs (`journal::copy_journal`), the newest snapshot it reaches, and a
//! manifest of sizes and SHA-256 digests; the checks every reader of a backup shares
//! (`check_backup`), and the copies a restore makes. The `puente backup`, `verify` and
//! `restore` commands are thin callers (`src/cli/ops/`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::journal::{self, chain_hex};
use crate::snapshot;

/// A backup that cannot be written, read or trusted, with what is wrong (printed as it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

/// Maps an I/O error to a [`BackupError`] saying what was being done.
fn io_error(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BackupError {
    move |error| BackupError(format!("{context}: {error}"))
}

/// Backup format written in `MANIFEST.json`: the journal's segments, as in a data directory.
pub const BACKUP_FORMAT: &str = "puente-backup/2";
/// The format of earlier versions (one `PUENTEJ2` file), still verified and restored.
pub const BACKUP_FORMAT_V1: &str = "puente-backup/1";
/// The directory of journal segments, in a data directory and in a backup.
pub const SEGMENTS_DIR: &str = "journal";
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// Files that backups made by earlier versions may list beside the journal: the FX
/// quote-signing key those versions kept in the data directory. Such a file is still checked
/// against the manifest, but never restored (keys live outside the data directory now), and
/// new backups copy nothing but the journal. The FX desk's sled store (`fx/`: quotes, rates)
/// is not journaled and is not in a backup (see deploy/README.md).
pub const LEGACY_BACKUP_FILES: &[&str] = &["fx-signing-key.p8"];
pub use crate::limits::MANIFEST_BYTES_MAX;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub puente_version: String,
    pub created_at: String,
    pub source_data_dir: String,
    /// `puente-backup/1`: the `PUENTEJ2` journal file (`journal.log`). `puente-backup/2`: the
    /// directory of `PUENTEJ3` segments (`journal`), listed in `journal_segments`.
    pub journal_file: String,
    pub journal_entries: u64,
    pub journal_last_seq: u64,
    pub journal_bytes: u64,
    /// SHA-256 of the journal's bytes: of the file (format 1), of the segments read in order
    /// (format 2).
    pub journal_sha256: String,
    /// Hash of the journal's last record (its SHA-256 chain head, hex), checked along the
    /// whole chain when the copy was made. Empty in backups made before it was recorded.
    #[serde(default)]
    pub journal_chain_head: String,
    /// Format 2: every segment (`journal/NNNNNNNN.log`), in order, with its size and SHA-256.
    #[serde(default)]
    pub journal_segments: Vec<ManifestFile>,
    /// Other files: format 1 may list an FX signing key (see [`LEGACY_BACKUP_FILES`]), never
    /// restored; format 2 the `PUENTEJ2` journal a store was migrated from (`journal.j2.log`,
    /// kept so heads recorded before the migration can still be checked).
    #[serde(default)]
    pub files: Vec<ManifestFile>,
    /// Format 2: the newest snapshot of the source whose position the copied journal holds
    /// (`snapshots/<seq>.snap`), so that a restored store starts from it; absent when the
    /// source had none. Derived state: a restore without it replays the whole journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<ManifestSnapshot>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestSnapshot {
    /// The journal record it was taken at.
    pub seq: u64,
    pub file: ManifestFile,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The source journal's last record was damaged (complete in length, failing its checksum):
/// the backup holds every record before it. The operator must hear of it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedTail {
    /// Bytes left out after the last record copied.
    pub bytes: u64,
    /// The last record copied.
    pub after_seq: u64,
}

/// Writes a backup of `data_dir` into `partial` (an empty private directory), then renames it
/// to `out` (in `parent`) once everything is `fsync`'d. `created_at` is recorded as given.
pub fn write_backup(
    data_dir: &Path,
    partial: &Path,
    out: &Path,
    parent: &Path,
    created_at: String,
) -> Result<(Manifest, Option<DamagedTail>), BackupError> {
    let copy = journal::copy_journal(data_dir, partial)
        .map_err(|e| BackupError(format!("cannot back up {}: {e}", data_dir.display())))?;
    // The copy holds every intact record; a damaged last one is the source's problem.
    let damaged = (copy.tail_kind == Some(journal::TailKind::Damaged))
        .then_some(DamagedTail { bytes: copy.tail_bytes_left, after_seq: copy.last_seq });
    let (journal_segments, journal_sha256) = hash_segments(partial, &copy.segments)?;
    let mut files = Vec::new();
    let archived = journal::archived_legacy_path(data_dir);
    if archived.is_file() {
        let name = file_name(&archived);
        let target = partial.join(&name);
        std::fs::copy(&archived, &target).map_err(io_error(format!("cannot copy {}", archived.display())))?;
        std::fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(io_error(format!("cannot sync {}", target.display())))?;
        let bytes =
            std::fs::metadata(&target).map_err(io_error(format!("cannot read {}", target.display())))?.len();
        files.push(ManifestFile { name, bytes, sha256: sha256_file(&target)? });
    }
    let snapshot = copy_snapshot(data_dir, partial, copy.last_seq)?;
    let manifest = Manifest {
        format: BACKUP_FORMAT.to_owned(),
        puente_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at,
        source_data_dir: std::fs::canonicalize(data_dir)
            .unwrap_or_else(|_| data_dir.to_owned())
            .display()
            .to_string(),
        journal_file: SEGMENTS_DIR.to_owned(),
        journal_entries: copy.entries,
        journal_last_seq: copy.last_seq,
        journal_bytes: copy.bytes,
        journal_sha256,
        journal_chain_head: chain_hex(&copy.chain_head),
        journal_segments,
        files,
        snapshot,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| BackupError(e.to_string()))?;
    write_synced(&partial.join(MANIFEST_FILE), text.as_bytes())?;
    sync_dir(partial)?;
    std::fs::rename(partial, out).map_err(io_error(format!("cannot rename into {}", out.display())))?;
    sync_dir(parent)?;
    Ok((manifest, damaged))
}

/// Copies the newest snapshot of `data_dir` that the journal copy in `partial` reaches (at or
/// before `last_seq`, its position intact in the copy) into `partial/snapshots/`. The copy is
/// what is checked, so a snapshot the server deletes or replaces meanwhile cannot slip in half
/// made; one that does not check out is left out (a snapshot only shortens a start).
fn copy_snapshot(
    data_dir: &Path,
    partial: &Path,
    last_seq: u64,
) -> Result<Option<ManifestSnapshot>, BackupError> {
    let mut seqs = snapshot::list(data_dir).unwrap_or_default();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    for seq in seqs.into_iter().filter(|&seq| seq <= last_seq) {
        let Ok(bytes) = std::fs::read(snapshot::snapshot_path(data_dir, seq)) else { continue };
        let dir = snapshot::snapshots_dir(partial);
        std::fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
        let target = snapshot::snapshot_path(partial, seq);
        write_synced(&target, &bytes)?;
        let usable = match snapshot::read(partial, seq) {
            Ok(read) => journal::resume_point_holds(partial, &read.resume).unwrap_or(false),
            Err(_) => false,
        };
        if !usable {
            let _ = std::fs::remove_file(&target);
            continue;
        }
        sync_dir(&dir)?;
        let name = format!("snapshots/{}", file_name(&target));
        let sha256 = sha256_file(&target)?;
        return Ok(Some(ManifestSnapshot {
            seq,
            file: ManifestFile { name, bytes: bytes.len() as u64, sha256 },
        }));
    }
    Ok(None)
}

pub fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Each segment of the journal in `dir` (numbers `segments`): name, size and SHA-256, and the
/// SHA-256 of all of them read in order.
pub fn hash_segments(dir: &Path, segments: &[u32]) -> Result<(Vec<ManifestFile>, String), BackupError> {
    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    let mut files = Vec::with_capacity(segments.len());
    for &n in segments {
        let path = journal::segment_path(dir, n);
        let (bytes, sha256) = sha256_of(&path, Some(&mut all))?;
        let name = format!("{SEGMENTS_DIR}/{}", file_name(&path));
        files.push(ManifestFile { name, bytes, sha256 });
    }
    Ok((files, hex(all.finish().as_ref())))
}

pub fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(format!("cannot create {}", dir.display())))
}

pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut file =
        std::fs::File::create_new(path).map_err(io_error(format!("cannot create {}", path.display())))?;
    file.write_all(bytes).map_err(io_error(format!("cannot write {}", path.display())))?;
    file.sync_all().map_err(io_error(format!("cannot sync {}", path.display())))
}

pub fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(format!("cannot sync directory {}", dir.display())))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String, BackupError> {
    Ok(sha256_of(path, None)?.1)
}

/// The length and SHA-256 of the file at `path`, also fed to `also` when given.
pub fn sha256_of(
    path: &Path,
    mut also: Option<&mut ring::digest::Context>,
) -> Result<(u64, String), BackupError> {
    let mut file = std::fs::File::open(path).map_err(io_error(format!("cannot read {}", path.display())))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io_error(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        context.update(&buffer[..n]);
        if let Some(all) = also.as_deref_mut() {
            all.update(&buffer[..n]);
        }
    }
    Ok((bytes, hex(context.finish().as_ref())))
}

/// Where a checked backup's journal is.
pub enum BackupJournal {
    /// Format 1: one `PUENTEJ2` file.
    Legacy(PathBuf),
    /// Format 2: the backup directory is laid out like a data directory (`journal/`, and
    /// perhaps `journal.j2.log`).
    Segments(PathBuf),
}

/// Reads a backup's manifest and checks every file it lists (size and SHA-256) and that the
/// journal holds nothing it does not list.
pub fn check_backup(dir: &Path) -> Result<(Manifest, BackupJournal), BackupError> {
    let manifest = read_manifest(dir)?;
    let journal = match manifest.format.as_str() {
        BACKUP_FORMAT_V1 => check_legacy_backup(dir, &manifest)?,
        BACKUP_FORMAT => check_segments_backup(dir, &manifest)?,
        other => {
            return Err(BackupError(format!(
                "backup {} has format {other:?}; this puente reads {BACKUP_FORMAT:?} and {BACKUP_FORMAT_V1:?}",
                dir.display()
            )));
        }
    };
    Ok((manifest, journal))
}

/// The error of a backup at `dir` found damaged for `reason`.
fn backup_damaged(dir: &Path, reason: String) -> BackupError {
    BackupError(format!("backup {} is damaged: {reason}", dir.display()))
}

/// Reads and parses the manifest of the backup at `dir` (bounded in size).
fn read_manifest(dir: &Path) -> Result<Manifest, BackupError> {
    let damaged = |reason: String| backup_damaged(dir, reason);
    let manifest_path = dir.join(MANIFEST_FILE);
    let size = std::fs::metadata(&manifest_path)
        .map_err(|e| BackupError(format!("{} is not a Puente backup ({MANIFEST_FILE}: {e})", dir.display())))?
        .len();
    if size > MANIFEST_BYTES_MAX {
        return Err(damaged(format!("{MANIFEST_FILE} is larger than {MANIFEST_BYTES_MAX} bytes")));
    }
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| damaged(format!("{MANIFEST_FILE}: {e}")))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| damaged(format!("{MANIFEST_FILE}: {e}")))?;
    Ok(manifest)
}

/// Checks that the file the manifest lists as `file` has its size and SHA-256 (also fed to
/// `also`).
fn check_listed_file(
    dir: &Path,
    file: &ManifestFile,
    also: Option<&mut ring::digest::Context>,
) -> Result<(), BackupError> {
    let damaged = |reason: String| backup_damaged(dir, reason);
    let path = dir.join(&file.name);
    let bytes = std::fs::metadata(&path).map_err(|e| damaged(format!("{}: {e}", file.name)))?.len();
    if bytes != file.bytes {
        return Err(damaged(format!("{} has {bytes} bytes, the manifest says {}", file.name, file.bytes)));
    }
    let (_, sha256) = sha256_of(&path, also)?;
    if sha256 != file.sha256 {
        return Err(damaged(format!(
            "{} has SHA-256 {sha256}, the manifest says {} (checksum mismatch)",
            file.name, file.sha256
        )));
    }
    Ok(())
}

/// Checks a format-1 backup: its one `PUENTEJ2` journal file and the legacy files it lists.
fn check_legacy_backup(dir: &Path, manifest: &Manifest) -> Result<BackupJournal, BackupError> {
    let damaged = |reason: String| backup_damaged(dir, reason);
    if manifest.journal_file != journal::legacy_path(Path::new("")).display().to_string() {
        return Err(damaged(format!("bad journal file name {:?}", manifest.journal_file)));
    }
    let file = ManifestFile {
        name: manifest.journal_file.clone(),
        bytes: manifest.journal_bytes,
        sha256: manifest.journal_sha256.clone(),
    };
    check_listed_file(dir, &file, None)?;
    for file in &manifest.files {
        if !LEGACY_BACKUP_FILES.contains(&file.name.as_str()) {
            return Err(damaged(format!("unexpected file {:?} in the manifest", file.name)));
        }
        check_listed_file(dir, file, None)?;
    }
    Ok(BackupJournal::Legacy(dir.join(&manifest.journal_file)))
}

/// Checks a format-2 backup: exactly the segments listed, their total size and SHA-256, the
/// archived legacy journal if listed, and the snapshot if any.
fn check_segments_backup(dir: &Path, manifest: &Manifest) -> Result<BackupJournal, BackupError> {
    let damaged = |reason: String| backup_damaged(dir, reason);
    let on_disk = journal::list_segments(dir).map_err(|e| damaged(format!("{SEGMENTS_DIR}: {e}")))?;
    let listed: Vec<String> = manifest.journal_segments.iter().map(|f| f.name.clone()).collect();
    let present: Vec<String> = on_disk
        .iter()
        .map(|&n| format!("{SEGMENTS_DIR}/{}", file_name(&journal::segment_path(dir, n))))
        .collect();
    if listed != present || listed.is_empty() {
        return Err(damaged(format!(
            "the manifest lists the segments {listed:?}, the backup holds {present:?}"
        )));
    }
    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    let mut bytes = 0;
    for file in &manifest.journal_segments {
        check_listed_file(dir, file, Some(&mut all))?;
        bytes += file.bytes;
    }
    let sha256 = hex(all.finish().as_ref());
    if bytes != manifest.journal_bytes || sha256 != manifest.journal_sha256 {
        return Err(damaged(format!(
            "the segments hold {bytes} bytes with SHA-256 {sha256}, the manifest says {} bytes, {} \
             (checksum mismatch)",
            manifest.journal_bytes, manifest.journal_sha256
        )));
    }
    let archive = file_name(&journal::archived_legacy_path(dir));
    for file in &manifest.files {
        if file.name != archive {
            return Err(damaged(format!("unexpected file {:?} in the manifest", file.name)));
        }
        check_listed_file(dir, file, None)?;
    }
    if let Some(snap) = &manifest.snapshot {
        check_backup_snapshot(dir, snap)?;
    }
    Ok(BackupJournal::Segments(dir.to_owned()))
}

/// Checks a format-2 backup's snapshot: its file name, size and SHA-256, that it reads, and that
/// it was taken at a record the backup's journal holds.
fn check_backup_snapshot(dir: &Path, snap: &ManifestSnapshot) -> Result<(), BackupError> {
    let damaged = |reason: String| backup_damaged(dir, reason);
    let expected = format!("snapshots/{}", file_name(&snapshot::snapshot_path(dir, snap.seq)));
    if snap.file.name != expected {
        return Err(damaged(format!("unexpected snapshot file {:?} in the manifest", snap.file.name)));
    }
    check_listed_file(dir, &snap.file, None)?;
    let read = snapshot::read(dir, snap.seq).map_err(|e| damaged(format!("snapshot {}: {e}", snap.seq)))?;
    if read.resume.seq != snap.seq || !journal::resume_point_holds(dir, &read.resume).unwrap_or(false) {
        return Err(damaged(format!(
            "snapshot {} was taken at a journal record the backup's journal does not hold",
            snap.seq
        )));
    }
    Ok(())
}

/// Copies a format-2 backup's snapshot (checked by [`check_backup`]) into the data directory
/// `dst`.
pub fn copy_snapshot_file(src: &Path, dst: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let Some(snap) = &manifest.snapshot else { return Ok(()) };
    let dir = snapshot::snapshots_dir(dst);
    std::fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    let bytes = std::fs::read(src.join(&snap.file.name))
        .map_err(io_error(format!("cannot read {}", src.join(&snap.file.name).display())))?;
    write_synced(&snapshot::snapshot_path(dst, snap.seq), &bytes)?;
    sync_dir(&dir)
}

/// Copies, byte for byte, every journal file of the data directory (or format-2 backup)
/// `src` into the data directory `dst`: segments, a `PUENTEJ2` journal not yet migrated, the
/// archive of one that was. Nothing is checked or cut here: the ledger's open does that, on
/// the copy. Returns the bytes copied.
pub fn copy_journal_files(src: &Path, dst: &Path) -> Result<u64, BackupError> {
    let mut bytes = 0;
    let segments = journal::list_segments(src)
        .map_err(|e| BackupError(format!("cannot read the journal of {}: {e}", src.display())))?;
    if !segments.is_empty() {
        let dir = journal::segments_dir(dst);
        std::fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    }
    let mut files: Vec<(PathBuf, PathBuf)> =
        segments.iter().map(|&n| (journal::segment_path(src, n), journal::segment_path(dst, n))).collect();
    for path in [journal::legacy_path, journal::archived_legacy_path] {
        if path(src).is_file() {
            files.push((path(src), path(dst)));
        }
    }
    for (from, to) in files {
        bytes += std::fs::copy(&from, &to).map_err(io_error(format!(
            "cannot copy {} to {}",
            from.display(),
            to.display()
        )))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(io_error(format!("cannot sync {}", to.display())))?;
    }
    Ok(bytes)
}
