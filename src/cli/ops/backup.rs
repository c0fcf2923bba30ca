//! `puente backup`: a consistent copy of the journal while the server runs (the work is
//! `puente_ledger::backup`; this prints what it did).

use super::*;

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
    let created_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let result = write_backup(&args.data_dir, &partial, &args.out, &parent, created_at);
    let manifest = match result {
        Ok((manifest, damaged)) => {
            if let Some(damaged) = damaged {
                eprintln!(
                    "WARNING: the source journal's last record ({} bytes after sequence {}) is DAMAGED: it is \
                     complete in length but fails its checksum, so it may hold an acknowledged write. The \
                     backup holds every record before it. Check the disk; `puente verify --data-dir {}` \
                     says more.",
                    damaged.bytes,
                    damaged.after_seq,
                    args.data_dir.display()
                );
            }
            manifest
        }
        Err(error) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(error.into());
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
