//! `puente backup`: a consistent copy of the journal while the server runs, with a manifest;
//! the checks every backup reader shares.

use super::*;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub(super) format: String,
    pub(super) puente_version: String,
    pub(super) created_at: String,
    pub(super) source_data_dir: String,
    /// `puente-backup/1`: the `PUENTEJ2` journal file (`journal.log`). `puente-backup/2`: the
    /// directory of `PUENTEJ3` segments (`journal`), listed in `journal_segments`.
    pub(super) journal_file: String,
    pub(super) journal_entries: u64,
    pub(super) journal_last_seq: u64,
    pub(super) journal_bytes: u64,
    /// SHA-256 of the journal's bytes: of the file (format 1), of the segments read in order
    /// (format 2).
    pub(super) journal_sha256: String,
    /// Hash of the journal's last record (its SHA-256 chain head, hex), checked along the
    /// whole chain when the copy was made. Empty in backups made before it was recorded.
    #[serde(default)]
    pub(super) journal_chain_head: String,
    /// Format 2: every segment (`journal/NNNNNNNN.log`), in order, with its size and SHA-256.
    #[serde(default)]
    pub(super) journal_segments: Vec<ManifestFile>,
    /// Other files: format 1 may list an FX signing key (see [`LEGACY_BACKUP_FILES`]), never
    /// restored; format 2 the `PUENTEJ2` journal a store was migrated from (`journal.j2.log`,
    /// kept so heads recorded before the migration can still be checked).
    #[serde(default)]
    pub(super) files: Vec<ManifestFile>,
    /// Format 2: the newest snapshot of the source whose position the copied journal holds
    /// (`snapshots/<seq>.snap`), so that a restored store starts from it; absent when the
    /// source had none. Derived state: a restore without it replays the whole journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) snapshot: Option<ManifestSnapshot>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ManifestSnapshot {
    /// The journal record it was taken at.
    pub(super) seq: u64,
    pub(super) file: ManifestFile,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ManifestFile {
    pub(super) name: String,
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

pub(super) fn backup(args: BackupArgs, out: &Output) -> Result<(), CliError> {
    let started = Instant::now();
    let segments = journal::list_segments(&args.data_dir)
        .map_err(|e| CliError::Ops(format!("cannot read the journal of {}: {e}", args.data_dir.display())))?;
    if segments.is_empty() {
        let hint = if journal::legacy_path(&args.data_dir).is_file() {
            "it holds a journal of an earlier version (PUENTEJ2): start `puente serve` on it once (it \
             migrates the journal), or back it up with the version that wrote it"
        } else {
            "is --data-dir a Puente data directory?"
        };
        return Err(CliError::Ops(format!("no journal in {}: {hint}", args.data_dir.display())));
    }
    if args.out.exists() {
        return Err(CliError::Ops(format!(
            "{} already exists; choose a new backup directory",
            args.out.display()
        )));
    }
    let name = args.out.file_name().ok_or_else(|| CliError::Usage("--out needs a directory name".into()))?;
    let parent = parent_dir(&args.out);
    let partial = parent.join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
    create_private_dir(&partial)?;
    let result = write_backup(&args.data_dir, &partial, &args.out, &parent);
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(error);
        }
    };
    let value = json!({
        "backup": args.out.display().to_string(),
        "journal_entries": manifest.journal_entries,
        "journal_last_seq": manifest.journal_last_seq,
        "journal_bytes": manifest.journal_bytes,
        "journal_segments": manifest.journal_segments.len(),
        "journal_sha256": manifest.journal_sha256,
        "journal_chain_head": manifest.journal_chain_head,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    out.print(value, || {
        format!(
            "backup {}: {} journal entries (through sequence {}) in {} segment(s), {}, sha256 {}\n  \
             chain head: seq {} {}\n",
            args.out.display(),
            manifest.journal_entries,
            manifest.journal_last_seq,
            manifest.journal_segments.len(),
            human_bytes(manifest.journal_bytes),
            manifest.journal_sha256,
            manifest.journal_last_seq,
            manifest.journal_chain_head
        )
    });
    Ok(())
}

pub(super) fn write_backup(
    data_dir: &Path,
    partial: &Path,
    out: &Path,
    parent: &Path,
) -> Result<Manifest, CliError> {
    let copy = journal::copy_journal(data_dir, partial)
        .map_err(|e| CliError::Ops(format!("cannot back up {}: {e}", data_dir.display())))?;
    if copy.tail_kind == Some(journal::TailKind::Damaged) {
        // The copy holds every intact record; the damaged one is the source's problem, and the
        // operator must hear of it now, not at the next start.
        eprintln!(
            "WARNING: the source journal's last record ({} bytes after sequence {}) is DAMAGED: it is \
             complete in length but fails its checksum, so it may hold an acknowledged write. The \
             backup holds every record before it. Check the disk; `puente verify --data-dir {}` \
             says more.",
            copy.tail_bytes_left,
            copy.last_seq,
            data_dir.display()
        );
    }
    let (journal_segments, journal_sha256) = hash_segments(partial, &copy.segments)?;
    let mut files = Vec::new();
    let archived = journal::archived_legacy_path(data_dir);
    if archived.is_file() {
        let name = file_name(&archived);
        let target = partial.join(&name);
        std::fs::copy(&archived, &target)
            .map_err(ops_error(format!("cannot copy {}", archived.display())))?;
        std::fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(ops_error(format!("cannot sync {}", target.display())))?;
        let bytes =
            std::fs::metadata(&target).map_err(ops_error(format!("cannot read {}", target.display())))?.len();
        files.push(ManifestFile { name, bytes, sha256: sha256_file(&target)? });
    }
    let snapshot = copy_snapshot(data_dir, partial, copy.last_seq)?;
    let manifest = Manifest {
        format: BACKUP_FORMAT.to_owned(),
        puente_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
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
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| CliError::Ops(e.to_string()))?;
    write_synced(&partial.join(MANIFEST_FILE), text.as_bytes())?;
    sync_dir(partial)?;
    std::fs::rename(partial, out).map_err(ops_error(format!("cannot rename into {}", out.display())))?;
    sync_dir(parent)?;
    Ok(manifest)
}

/// Copies the newest snapshot of `data_dir` that the journal copy in `partial` reaches (at or
/// before `last_seq`, its position intact in the copy) into `partial/snapshots/`. The copy is
/// what is checked, so a snapshot the server deletes or replaces meanwhile cannot slip in half
/// made; one that does not check out is left out (a snapshot only shortens a start).
fn copy_snapshot(
    data_dir: &Path,
    partial: &Path,
    last_seq: u64,
) -> Result<Option<ManifestSnapshot>, CliError> {
    let mut seqs = snapshot::list(data_dir).unwrap_or_default();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    for seq in seqs.into_iter().filter(|&seq| seq <= last_seq) {
        let Ok(bytes) = std::fs::read(snapshot::snapshot_path(data_dir, seq)) else { continue };
        let dir = snapshot::snapshots_dir(partial);
        std::fs::create_dir_all(&dir).map_err(ops_error(format!("cannot create {}", dir.display())))?;
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

pub(super) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Each segment of the journal in `dir` (numbers `segments`): name, size and SHA-256, and the
/// SHA-256 of all of them read in order.
pub(super) fn hash_segments(dir: &Path, segments: &[u32]) -> Result<(Vec<ManifestFile>, String), CliError> {
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

pub(super) fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(ops_error(format!("cannot create {}", dir.display())))
}

pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut file =
        std::fs::File::create_new(path).map_err(ops_error(format!("cannot create {}", path.display())))?;
    file.write_all(bytes).map_err(ops_error(format!("cannot write {}", path.display())))?;
    file.sync_all().map_err(ops_error(format!("cannot sync {}", path.display())))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ops_error(format!("cannot sync directory {}", dir.display())))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn sha256_file(path: &Path) -> Result<String, CliError> {
    Ok(sha256_of(path, None)?.1)
}

/// The length and SHA-256 of the file at `path`, also fed to `also` when given.
pub(super) fn sha256_of(
    path: &Path,
    mut also: Option<&mut ring::digest::Context>,
) -> Result<(u64, String), CliError> {
    let mut file = std::fs::File::open(path).map_err(ops_error(format!("cannot read {}", path.display())))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(ops_error(format!("cannot read {}", path.display())))?;
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
pub(super) enum BackupJournal {
    /// Format 1: one `PUENTEJ2` file.
    Legacy(PathBuf),
    /// Format 2: the backup directory is laid out like a data directory (`journal/`, and
    /// perhaps `journal.j2.log`).
    Segments(PathBuf),
}

/// Reads a backup's manifest and checks every file it lists (size and SHA-256) and that the
/// journal holds nothing it does not list.
pub(super) fn check_backup(dir: &Path) -> Result<(Manifest, BackupJournal), CliError> {
    let damaged = |reason: String| CliError::Ops(format!("backup {} is damaged: {reason}", dir.display()));
    let manifest_path = dir.join(MANIFEST_FILE);
    let size = std::fs::metadata(&manifest_path)
        .map_err(|e| {
            CliError::Ops(format!("{} is not a Puente backup ({MANIFEST_FILE}: {e})", dir.display()))
        })?
        .len();
    if size > MANIFEST_BYTES_MAX {
        return Err(damaged(format!("{MANIFEST_FILE} is larger than {MANIFEST_BYTES_MAX} bytes")));
    }
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| damaged(format!("{MANIFEST_FILE}: {e}")))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| damaged(format!("{MANIFEST_FILE}: {e}")))?;
    let check_file = |file: &ManifestFile, also: Option<&mut ring::digest::Context>| {
        let path = dir.join(&file.name);
        let bytes = std::fs::metadata(&path).map_err(|e| damaged(format!("{}: {e}", file.name)))?.len();
        if bytes != file.bytes {
            return Err(damaged(format!(
                "{} has {bytes} bytes, the manifest says {}",
                file.name, file.bytes
            )));
        }
        let (_, sha256) = sha256_of(&path, also)?;
        if sha256 != file.sha256 {
            return Err(damaged(format!(
                "{} has SHA-256 {sha256}, the manifest says {} (checksum mismatch)",
                file.name, file.sha256
            )));
        }
        Ok(())
    };
    let journal = match manifest.format.as_str() {
        BACKUP_FORMAT_V1 => {
            if manifest.journal_file != journal::legacy_path(Path::new("")).display().to_string() {
                return Err(damaged(format!("bad journal file name {:?}", manifest.journal_file)));
            }
            let file = ManifestFile {
                name: manifest.journal_file.clone(),
                bytes: manifest.journal_bytes,
                sha256: manifest.journal_sha256.clone(),
            };
            check_file(&file, None)?;
            for file in &manifest.files {
                if !LEGACY_BACKUP_FILES.contains(&file.name.as_str()) {
                    return Err(damaged(format!("unexpected file {:?} in the manifest", file.name)));
                }
                check_file(file, None)?;
            }
            BackupJournal::Legacy(dir.join(&manifest.journal_file))
        }
        BACKUP_FORMAT => {
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
                check_file(file, Some(&mut all))?;
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
                check_file(file, None)?;
            }
            if let Some(snap) = &manifest.snapshot {
                let expected = format!("snapshots/{}", file_name(&snapshot::snapshot_path(dir, snap.seq)));
                if snap.file.name != expected {
                    return Err(damaged(format!(
                        "unexpected snapshot file {:?} in the manifest",
                        snap.file.name
                    )));
                }
                check_file(&snap.file, None)?;
                let read = snapshot::read(dir, snap.seq)
                    .map_err(|e| damaged(format!("snapshot {}: {e}", snap.seq)))?;
                if read.resume.seq != snap.seq
                    || !journal::resume_point_holds(dir, &read.resume).unwrap_or(false)
                {
                    return Err(damaged(format!(
                        "snapshot {} was taken at a journal record the backup's journal does not hold",
                        snap.seq
                    )));
                }
            }
            BackupJournal::Segments(dir.to_owned())
        }
        other => {
            return Err(CliError::Ops(format!(
                "backup {} has format {other:?}; this puente reads {BACKUP_FORMAT:?} and {BACKUP_FORMAT_V1:?}",
                dir.display()
            )));
        }
    };
    Ok((manifest, journal))
}

/// Copies a format-2 backup's snapshot (checked by [`check_backup`]) into the data directory
/// `dst`.
pub(super) fn copy_snapshot_file(src: &Path, dst: &Path, manifest: &Manifest) -> Result<(), CliError> {
    let Some(snap) = &manifest.snapshot else { return Ok(()) };
    let dir = snapshot::snapshots_dir(dst);
    std::fs::create_dir_all(&dir).map_err(ops_error(format!("cannot create {}", dir.display())))?;
    let bytes = std::fs::read(src.join(&snap.file.name))
        .map_err(ops_error(format!("cannot read {}", src.join(&snap.file.name).display())))?;
    write_synced(&snapshot::snapshot_path(dst, snap.seq), &bytes)?;
    sync_dir(&dir)
}

/// Copies, byte for byte, every journal file of the data directory (or format-2 backup)
/// `src` into the data directory `dst`: segments, a `PUENTEJ2` journal not yet migrated, the
/// archive of one that was. Nothing is checked or cut here: the ledger's open does that, on
/// the copy. Returns the bytes copied.
pub(super) fn copy_journal_files(src: &Path, dst: &Path) -> Result<u64, CliError> {
    let mut bytes = 0;
    let segments = journal::list_segments(src)
        .map_err(|e| CliError::Ops(format!("cannot read the journal of {}: {e}", src.display())))?;
    if !segments.is_empty() {
        let dir = journal::segments_dir(dst);
        std::fs::create_dir_all(&dir).map_err(ops_error(format!("cannot create {}", dir.display())))?;
    }
    let mut files: Vec<(PathBuf, PathBuf)> =
        segments.iter().map(|&n| (journal::segment_path(src, n), journal::segment_path(dst, n))).collect();
    for path in [journal::legacy_path, journal::archived_legacy_path] {
        if path(src).is_file() {
            files.push((path(src), path(dst)));
        }
    }
    for (from, to) in files {
        bytes += std::fs::copy(&from, &to).map_err(ops_error(format!(
            "cannot copy {} to {}",
            from.display(),
            to.display()
        )))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(ops_error(format!("cannot sync {}", to.display())))?;
    }
    Ok(bytes)
}
