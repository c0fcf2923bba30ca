//! `puente verify` and `puente restore`: replay a store or a backup offline and check every
//! invariant (and an expected chain head) without touching it; restore a verified backup.

use std::path::Path;

use super::*;

pub(super) fn currencies(config_path: &Option<PathBuf>) -> Result<puente_money::CurrencyTable, CliError> {
    let file = match config_path {
        Some(path) => config::load_file(path)?,
        None => config::FileConfig::default(),
    };
    Ok(config::resolve(file, None, None, None)?.currencies)
}

/// A scratch directory removed when dropped.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, CliError> {
        let nanos =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("puente-verify-{}-{nanos}", std::process::id()));
        // It holds a copy of the journal: owner-only (and new: create, not reuse).
        create_private_dir(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a replay found.
pub(super) struct Replay {
    pub(super) entries: u64,
    pub(super) truncated_tail_bytes: u64,
    /// What was wrong with the end of the journal, if anything.
    pub(super) tail: Option<journal::TailCut>,
    /// The journal's chain head after replay: sequence and hash (hex) of its last record.
    pub(super) chain_head_seq: u64,
    pub(super) chain_head: String,
    pub(super) accounts: u64,
    pub(super) transfers: u64,
    /// Per currency: posted debits (= posted credits) in minor units.
    pub(super) posted_minor: BTreeMap<String, u128>,
    pub(super) elapsed_ms: u64,
}

/// Copies the journal files of `source` (a data directory or a backup) into a scratch
/// directory and opens a ledger there, from the journal alone (no snapshot, no index): the
/// same recovery the server runs (every record's checksum, sequence and chain link, replay
/// through the engine, every invariant), then counts what it holds. `source` is only read.
pub(super) async fn replay(
    source: &BackupJournal,
    currencies: puente_money::CurrencyTable,
    what: &str,
) -> Result<Replay, CliError> {
    let scratch = Scratch::new()?;
    match source {
        BackupJournal::Legacy(file) => {
            std::fs::copy(file, journal::legacy_path(&scratch.0)).map_err(ops_error(format!(
                "cannot copy {} to {}",
                file.display(),
                scratch.0.display()
            )))?;
        }
        BackupJournal::Segments(dir) => {
            copy_journal_files(dir, &scratch.0)?;
        }
    }
    let dir = scratch.0.clone();
    let opening = what.to_owned();
    let ledger = tokio::task::spawn_blocking(move || {
        Ledger::open(LedgerConfig { currencies, rebuild_index: true, ..LedgerConfig::new(dir) })
            .map_err(|e| CliError::Ops(format!("{opening} is NOT whole: {e}")))
    })
    .await
    .map_err(|e| CliError::Ops(format!("verify task failed: {e}")))??;
    let recovery = ledger.recovery().clone();
    let (chain_head_seq, chain_head) = ledger.chain_head();
    let mut posted_minor = BTreeMap::new();
    let mut accounts = 0u64;
    let mut after = 0;
    loop {
        let page = ledger
            .list_accounts(None, after, VERIFY_PAGE_ROWS)
            .map_err(|e| CliError::Ops(format!("{what}: reading accounts: {e}")))?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for account in &page {
            accounts += 1;
            *posted_minor.entry(account.currency.to_string()).or_insert(0u128) += account.debits_posted_minor;
        }
    }
    let mut transfers = 0u64;
    let mut after_ns = 0;
    loop {
        let page = ledger
            .transfers_after(after_ns, VERIFY_PAGE_ROWS)
            .await
            .map_err(|e| CliError::Ops(format!("{what}: reading transfers: {e}")))?;
        let Some(last) = page.last() else { break };
        after_ns = last.timestamp_ns;
        transfers += page.len() as u64;
    }
    // The writer's final snapshot goes into the scratch directory: wait for it first.
    let stopped = ledger.stopped();
    drop(ledger);
    stopped.await;
    drop(scratch);
    Ok(Replay {
        entries: recovery.journal_entries,
        truncated_tail_bytes: recovery.truncated_tail_bytes,
        tail: recovery.tail.clone(),
        chain_head_seq,
        chain_head: chain_hex(&chain_head),
        accounts,
        transfers,
        posted_minor,
        elapsed_ms: recovery.elapsed_ms,
    })
}

pub(super) fn replay_json(what: &str, replay: &Replay) -> Value {
    json!({
        "whole": true,
        "source": what,
        "journal_entries": replay.entries,
        "truncated_tail_bytes": replay.truncated_tail_bytes,
        "tail": replay.tail.as_ref().map(|t| json!({
            "kind": t.kind.code(),
            "offset": t.offset,
            "bytes": t.bytes,
            "seq": t.seq,
            "reason": t.reason,
        })),
        "chain_head": { "seq": replay.chain_head_seq, "sha256": replay.chain_head },
        "accounts": replay.accounts,
        "transfers": replay.transfers,
        "posted_minor_by_currency": replay.posted_minor.iter().map(|(c, v)| (c.clone(), v.to_string())).collect::<BTreeMap<_, _>>(),
        "replay_ms": replay.elapsed_ms,
    })
}

pub(super) fn replay_text(what: &str, replay: &Replay) -> String {
    let mut text = format!(
        "OK: {what} is whole: {} journal entries, {} accounts, {} transfers; every invariant holds \
         (replayed in {} ms)\n",
        replay.entries, replay.accounts, replay.transfers, replay.elapsed_ms
    );
    text.push_str(&format!(
        "  chain head: seq {} {} (every record's SHA-256 chain link checked; compare with the \
         head recorded elsewhere to detect a rewrite)\n",
        replay.chain_head_seq, replay.chain_head
    ));
    for (currency, posted) in &replay.posted_minor {
        text.push_str(&format!("  {currency}: posted debits = posted credits = {posted} minor units\n"));
    }
    if let Some(tail) = &replay.tail {
        text.push_str(&format!(
            "  note: the journal ends in {tail}; the next start cuts it (saving its bytes)\n"
        ));
    }
    text
}

/// A journal whose last record is damaged (complete in length, checksum failing) may have lost
/// an acknowledged write: that is not "whole", whatever the rest says.
pub(super) fn check_tail(what: &str, replay: &Replay) -> Result<(), CliError> {
    match &replay.tail {
        Some(tail) if tail.kind == journal::TailKind::Damaged => Err(CliError::Ops(format!(
            "{what} is NOT whole: it ends in {tail}. Every record before it replays and every \
             invariant holds ({} journal entries, chain head seq {} {}).",
            replay.entries, replay.chain_head_seq, replay.chain_head
        ))),
        _ => Ok(()),
    }
}

/// The replayed backup journal holds what its manifest lists: as many entries, and (when the
/// manifest records it) the same chain head.
pub(super) fn check_replay_against_manifest(
    what: &str,
    manifest: &Manifest,
    replay: &Replay,
) -> Result<(), CliError> {
    if replay.entries != manifest.journal_entries {
        return Err(CliError::Ops(format!(
            "{what} is NOT whole: the manifest lists {} journal entries, the journal holds {}",
            manifest.journal_entries, replay.entries
        )));
    }
    if !manifest.journal_chain_head.is_empty() && manifest.journal_chain_head != replay.chain_head {
        return Err(CliError::Ops(format!(
            "{what} is NOT whole: the manifest lists journal chain head {}, the journal's is {}",
            manifest.journal_chain_head, replay.chain_head
        )));
    }
    Ok(())
}

pub(super) async fn verify(args: VerifyArgs, out: &Output) -> Result<(), CliError> {
    let currencies = currencies(&args.config)?;
    let (what, source, manifest) = match &args.backup {
        Some(dir) => {
            let (manifest, journal) = check_backup(dir)?;
            (format!("backup {}", dir.display()), journal, Some(manifest))
        }
        None => {
            let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
            let has_journal = journal::list_segments(&dir).is_ok_and(|s| !s.is_empty())
                || journal::legacy_path(&dir).is_file();
            if !has_journal {
                return Err(CliError::Ops(format!(
                    "no journal in {}: is it a Puente data directory?",
                    dir.display()
                )));
            }
            (format!("store {}", dir.display()), BackupJournal::Segments(dir), None)
        }
    };
    let expected = args.expect_head.as_deref().map(parse_head).transpose()?;
    let replay = replay(&source, currencies, &what).await?;
    check_tail(&what, &replay)?;
    if let Some(manifest) = &manifest {
        check_replay_against_manifest(&what, manifest, &replay)?;
    }
    if let Some((seq, hash)) = &expected {
        check_expected_head(&what, &source, &replay, *seq, hash)?;
    }
    let mut value = replay_json(&what, &replay);
    let snapshot_seq = manifest.as_ref().and_then(|m| m.snapshot.as_ref()).map(|s| s.seq);
    if manifest.is_some() {
        value["snapshot_seq"] = json!(snapshot_seq);
    }
    if let Some((seq, hash)) = &expected {
        value["expected_head"] = json!({ "seq": seq, "sha256": hash, "matches": true });
    }
    out.print(value, || {
        let mut text = replay_text(&what, &replay);
        if let Some(seq) = snapshot_seq {
            text.push_str(&format!(
                "snapshot at journal record {seq}: reads back, and the journal holds its position\n"
            ));
        }
        if let Some((seq, hash)) = &expected {
            text.push_str(&format!("OK: journal record {seq} still has the recorded chain hash {hash}\n"));
        }
        text
    });
    Ok(())
}

/// `SEQ:SHA256` (64 lower- or upper-case hex digits).
pub(super) fn parse_head(text: &str) -> Result<(u64, String), CliError> {
    let usage =
        || CliError::Usage(format!("--expect-head {text:?}: expected SEQ:SHA256, e.g. 42:9f86d0...(64 hex)"));
    let (seq, hash) = text.split_once(':').ok_or_else(usage)?;
    let seq: u64 = seq.trim().parse().map_err(|_| usage())?;
    let hash = hash.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage());
    }
    Ok((seq, hash))
}

/// The verified journal still holds record `seq` with the recorded chain hash: the hash it has
/// now, or, for a record from before a migration, the one it had in the `PUENTEJ2` journal
/// (kept as `journal.j2.log`).
pub(super) fn check_expected_head(
    what: &str,
    source: &BackupJournal,
    replay: &Replay,
    seq: u64,
    hash: &str,
) -> Result<(), CliError> {
    if seq > replay.chain_head_seq {
        return Err(CliError::Ops(format!(
            "{what} does NOT match the recorded head: it ends at record {}, before the recorded record {seq} \
             (records were removed)",
            replay.chain_head_seq
        )));
    }
    if seq == 0 {
        return Ok(());
    }
    let reading = |e: puente_ledger::LedgerError| CliError::Ops(format!("{what}: reading record {seq}: {e}"));
    let (stored, archived) = match source {
        BackupJournal::Legacy(file) => (journal::legacy::stored_hash_at(file, seq).map_err(reading)?, None),
        BackupJournal::Segments(dir) => (
            journal::chain_hash_at(dir, seq).map_err(reading)?,
            journal::archived_chain_hash_at(dir, seq).map_err(reading)?,
        ),
    };
    let stored = stored.map(|h| chain_hex(&h));
    let archived = archived.map(|h| chain_hex(&h));
    if stored.as_deref() == Some(hash) || archived.as_deref() == Some(hash) {
        return Ok(());
    }
    match stored {
        Some(actual) => Err(CliError::Ops(format!(
            "{what} does NOT match the recorded head: record {seq} has chain hash {actual}{}, the recorded \
             head says {hash} (the journal was rewritten up to or before record {seq})",
            archived.map(|a| format!(" (before the migration to PUENTEJ3: {a})")).unwrap_or_default()
        ))),
        None => Err(CliError::Ops(format!("{what} has no record {seq}"))),
    }
}

/// Installs the checked backup `source` under the partial name `partial` (the journal, and a
/// format-2 backup's snapshot; owner-only, synced), then renames it into the empty `target`.
fn install_backup(
    source: &BackupJournal,
    manifest: &Manifest,
    partial: &Path,
    target: &Path,
) -> Result<(), CliError> {
    create_private_dir(partial)?;
    match source {
        BackupJournal::Legacy(file) => {
            let installed = journal::legacy_path(partial);
            std::fs::copy(file, &installed)
                .map_err(ops_error(format!("cannot copy into {}", installed.display())))?;
            std::fs::File::open(&installed)
                .and_then(|f| f.sync_all())
                .map_err(ops_error(format!("cannot sync {}", installed.display())))?;
        }
        BackupJournal::Segments(dir) => {
            copy_journal_files(dir, partial)?;
            sync_dir(&journal::segments_dir(partial))?;
            copy_snapshot_file(dir, partial, manifest)?;
        }
    }
    // fs::copy copied the backup's mode: the store is owner-only whatever it was.
    crate::data_dir::make_private(partial).map_err(CliError::Usage)?;
    sync_dir(partial)?;
    if target.exists() {
        // `restore` checked it empty.
        std::fs::remove_dir(target).map_err(ops_error(format!("cannot replace {}", target.display())))?;
    }
    std::fs::rename(partial, target)
        .map_err(ops_error(format!("cannot rename into {}", target.display())))?;
    Ok(sync_dir(&parent_dir(target))?)
}

pub(super) async fn restore(args: RestoreArgs, out: &Output) -> Result<(), CliError> {
    let currencies = currencies(&args.config)?;
    let (manifest, source) = check_backup(&args.from)?;
    let target = &args.data_dir;
    if target.exists() {
        let mut entries =
            std::fs::read_dir(target).map_err(ops_error(format!("cannot read {}", target.display())))?;
        if entries.next().is_some() {
            return Err(CliError::Ops(format!(
                "refusing to restore into {}: it is not empty (restore into a new directory)",
                target.display()
            )));
        }
    }
    // Prove the backup whole before anything is written.
    let what = format!("backup {}", args.from.display());
    let replay = replay(&source, currencies, &what).await?;
    check_tail(&what, &replay)?;
    check_replay_against_manifest(&what, &manifest, &replay)?;
    // Installed under a partial name, then renamed: a directory that is a data directory holds
    // a whole journal.
    let partial = parent_dir(target).join(format!(
        ".{}.restore-{}",
        target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    if let Err(error) = install_backup(&source, &manifest, &partial, target) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(error);
    }
    // Format 1 may list an FX signing key, which is never restored; format 2's files (the
    // archive of a migrated journal) are.
    let not_restored: Vec<&ManifestFile> =
        manifest.files.iter().filter(|f| LEGACY_BACKUP_FILES.contains(&f.name.as_str())).collect();
    let value = json!({
        "restored": target.display().to_string(),
        "from": args.from.display().to_string(),
        "backup_created_at": manifest.created_at,
        "verify": replay_json(&what, &replay),
        "not_restored": not_restored.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "snapshot_seq": manifest.snapshot.as_ref().map(|s| s.seq),
    });
    out.print(value, || {
        let mut text = format!(
            "{}restored into {} (backup of {} taken {}); the index is rebuilt at the first start\n",
            replay_text(&what, &replay),
            target.display(),
            manifest.source_data_dir,
            manifest.created_at
        );
        if let Some(snap) = &manifest.snapshot {
            text.push_str(&format!(
                "the snapshot at journal record {} came with it: the first start replays only what follows\n",
                snap.seq
            ));
        }
        for file in &not_restored {
            text.push_str(&format!(
                "not restored: {} (an FX signing key an earlier version kept in the data directory; \
                 give the server its key file with --fx-signing-key-file)\n",
                file.name
            ));
        }
        text
    });
    Ok(())
}
