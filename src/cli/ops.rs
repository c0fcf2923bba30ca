//! Operations: `puente status` (gRPC health, then, with an operator's key, versions, store
//! size, chain head, writes and settlement windows over gRPC; in one screen), `puente backup`
//! (a consistent copy of the journal while the server runs), `puente restore` and
//! `puente verify` (replays a store or a backup offline and checks every invariant, without
//! touching it).
//!
//! A backup is a directory: `journal.log` (the longest prefix of intact journal records, so a
//! consistent state holding every write acknowledged before the backup started) and
//! `MANIFEST.json` (entries, last sequence, bytes, SHA-256). The index is not copied: a
//! restored store rebuilds it from the journal at its first start.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Subcommand;
use puente_client::{Client, ClientError, pb};
use puente_ledger::journal::{self, chain_hex};
use puente_ledger::{Ledger, LedgerConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CliError, Output};
use crate::config;

/// Longest `puente status` waits for each of health and the details.
const STATUS_TIMEOUT_MS: u64 = 5_000;
/// Open settlement windows `puente status` asks for per page, and at most in all (there is
/// one per currency).
const STATUS_WINDOW_PAGE: i32 = 100;
const STATUS_WINDOWS_MAX: usize = 1_000;
/// Backup format written in `MANIFEST.json`: the journal's segments, as in a data directory.
const BACKUP_FORMAT: &str = "puente-backup/2";
/// The format of earlier versions (one `PUENTEJ2` file), still verified and restored.
const BACKUP_FORMAT_V1: &str = "puente-backup/1";
/// The directory of journal segments, in a data directory and in a backup.
const SEGMENTS_DIR: &str = "journal";
const MANIFEST_FILE: &str = "MANIFEST.json";
/// Files that backups made by earlier versions may list beside the journal: the FX
/// quote-signing key those versions kept in the data directory. Such a file is still checked
/// against the manifest, but never restored (keys live outside the data directory now), and
/// new backups copy nothing but the journal. The FX desk's sled store (`fx/`: quotes, rates)
/// is not journaled and is not in a backup (see deploy/README.md).
const LEGACY_BACKUP_FILES: &[&str] = &["fx-signing-key.p8"];
/// Largest manifest read.
const MANIFEST_BYTES_MAX: u64 = 64 * 1024;
/// Accounts and transfers read per page when `verify` counts them.
const VERIFY_PAGE_ROWS: usize = puente_ledger::PAGE_SIZE_MAX;

#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// Health, versions, store size, writes and settlement windows of a running server, in one
    /// screen. Health needs no key; the rest needs an operator's key. Exits non-zero unless the
    /// server is SERVING.
    Status(StatusArgs),
    /// Write a consistent backup of a store (safe while the server runs) into a new directory.
    Backup(BackupArgs),
    /// Restore a backup into a new, empty data directory (verifies it first).
    Restore(RestoreArgs),
    /// Replay a store (or a backup) offline in a scratch copy and check every invariant; the
    /// source is not modified. Exits non-zero, with the reason, if it is not whole.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Only the gRPC health check (for probes: one call, no credentials used).
    #[arg(long)]
    health_only: bool,
    /// Ignored: status reads everything over gRPC now. Accepted so that health checks written
    /// for older versions (`puente status --metrics off`) keep working.
    #[arg(long = "metrics", hide = true)]
    _metrics: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Data directory of the store to back up.
    #[arg(long, env = "PUENTE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The backup directory to create (must not exist).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup directory (made by `puente backup`).
    #[arg(long)]
    from: PathBuf,
    /// The data directory to restore into: must not exist, or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// TOML config file, for the currencies the store uses beyond USD and MXN.
    #[arg(long, env = "PUENTE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Data directory of the store to verify [default: ./puente-data].
    #[arg(long, env = "PUENTE_DATA_DIR", conflicts_with = "backup")]
    data_dir: Option<PathBuf>,
    /// Verify a backup directory instead (its checksum, then its journal).
    #[arg(long)]
    backup: Option<PathBuf>,
    /// TOML config file, for the currencies the store uses beyond USD and MXN.
    #[arg(long, env = "PUENTE_CONFIG")]
    config: Option<PathBuf>,
    /// A chain head recorded earlier, outside the data directory, as SEQ:SHA256 (e.g. from a
    /// settlement report, a backup manifest or an earlier `verify`): the journal must still hold
    /// that record with that hash, so a rewritten or shortened journal is caught.
    #[arg(long, value_name = "SEQ:SHA256")]
    expect_head: Option<String>,
}

/// `credentials`: whether the command line or environment gave any (an API key or a client
/// certificate).
pub async fn run(
    command: OpsCommand,
    server: &str,
    options: &puente_client::ConnectOptions,
    credentials: bool,
    json: bool,
) -> Result<(), CliError> {
    let out = Output { json };
    if !matches!(command, OpsCommand::Status(_)) {
        // Backups, restored stores and verify's scratch copies hold the journal: owner-only.
        crate::data_dir::restrict_umask();
    }
    match command {
        OpsCommand::Status(args) => status(server, options, credentials, args.health_only, &out).await,
        OpsCommand::Backup(args) => backup(args, &out),
        OpsCommand::Restore(args) => restore(args, &out).await,
        OpsCommand::Verify(args) => verify(args, &out).await,
    }
}

fn ops_error(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CliError {
    move |error| CliError::Ops(format!("{context}: {error}"))
}

// ---- status ---------------------------------------------------------------------------------

async fn status(
    server: &str,
    options: &puente_client::ConnectOptions,
    credentials: bool,
    health_only: bool,
    out: &Output,
) -> Result<(), CliError> {
    let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
    let (overall, ledger) = match tokio::time::timeout(timeout, health(server, options))
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
    {
        Ok(statuses) => statuses,
        Err(error) => (format!("UNREACHABLE ({error})"), String::new()),
    };
    // Health needs no key (load balancers and orchestrators call `puente status` without one);
    // the rest is an operator's business.
    let details = if overall.starts_with("UNREACHABLE") {
        Err("not read: the server is unreachable".to_owned())
    } else if health_only {
        Err("not read (--health-only)".to_owned())
    } else if !credentials {
        Err("not read: they need an operator's key (PUENTE_API_KEY_FILE or --api-key-file)".to_owned())
    } else {
        tokio::time::timeout(timeout, details(server, options))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    };
    let value = status_json(server, &overall, &ledger, &details);
    out.print(value.clone(), || status_screen(&value));
    if overall == "SERVING" {
        Ok(())
    } else {
        Err(CliError::Ops(format!("the server at {server} is not serving: {overall}")))
    }
}

/// What an operator's key reads beyond health.
struct Details {
    status: pb::GetServerStatusResponse,
    open_windows: Vec<pb::SettlementWindow>,
}

/// `OperationsService.GetServerStatus` and the open settlement windows (`ListWindows`).
async fn details(server: &str, options: &puente_client::ConnectOptions) -> Result<Details, String> {
    let describe = |error: ClientError| match &error {
        ClientError::Status {
            code: tonic::Code::PermissionDenied | tonic::Code::Unauthenticated, ..
        } => {
            format!("not read: they need an operator's key ({error})")
        }
        _ => error.to_string(),
    };
    let mut client = Client::connect_with(server, options).await.map_err(describe)?;
    let status = client.server_status().await.map_err(describe)?;
    let mut settlement = client.settlement();
    let mut open_windows = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListWindowsRequest {
            state: pb::WindowState::Open as i32,
            page_size: STATUS_WINDOW_PAGE,
            page_token,
            ..Default::default()
        };
        let page = settlement
            .list_windows(request)
            .await
            .map_err(|status| describe(ClientError::from(status)))?
            .into_inner();
        open_windows.extend(page.windows);
        if page.next_page_token.is_empty() || open_windows.len() >= STATUS_WINDOWS_MAX {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(Details { status, open_windows })
}

fn status_json(server: &str, overall: &str, ledger: &str, details: &Result<Details, String>) -> Value {
    let client_version = env!("CARGO_PKG_VERSION");
    let Details { status: s, open_windows } = match details {
        Ok(details) => details,
        Err(error) => {
            return json!({
                "server": server,
                "health": {"overall": overall, "ledger": ledger},
                "versions": {"server": null, "client": client_version},
                "details": {"error": error},
            });
        }
    };
    let seconds = |ts: &Option<puente_proto::Timestamp>| ts.as_ref().map(|t| t.seconds.max(0) as u64);
    let started = seconds(&s.start_time).unwrap_or(0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut transfers = BTreeMap::new();
    let mut gross = BTreeMap::new();
    for w in open_windows {
        *transfers.entry(w.currency_code.clone()).or_insert(0u64) += w.obligation_count;
        if let Some(money) = &w.gross_value {
            gross.insert(w.currency_code.clone(), money.value.clone());
        }
    }
    json!({
        "server": server,
        "health": {"overall": overall, "ledger": ledger},
        "versions": {"server": s.version, "client": client_version},
        "details": {"error": null},
        "started": super::time_text(&s.start_time),
        "uptime_seconds": now.saturating_sub(started),
        "takes_writes": s.healthy,
        "store": {
            "journal_bytes": s.journal_bytes,
            "store_bytes": s.store_bytes,
            "chain_head": {"seq": s.chain_head_seq, "sha256": s.chain_head_sha256},
        },
        "recovery": {"journal_entries": s.recovered_journal_entries, "ms": s.recovery_ms},
        "writes": {
            "group_commits": s.group_commits,
            "events": s.committed_events,
            "flush_mean_ms": s.flush_mean_us as f64 / 1_000.0,
        },
        "requests": {"total": s.requests, "not_ok": s.requests_not_ok},
        "settlement": {
            "open_windows": open_windows.len(),
            "open_window_transfers": transfers,
            "open_window_gross": gross,
            "last_netting_efficiency_bps": s.last_netting_efficiency_bps,
            "last_run_unix_seconds": seconds(&s.last_netting_run_time).unwrap_or(0),
        },
    })
}

fn status_screen(v: &Value) -> String {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_owned(),
        other => other.to_string(),
    };
    let mut lines = vec![format!("Puente at {}", text(&v["server"]))];
    let ledger = text(&v["health"]["ledger"]);
    lines.push(format!(
        "  health      {}{}",
        text(&v["health"]["overall"]),
        if ledger.is_empty() { String::new() } else { format!(" (LedgerService {ledger})") }
    ));
    lines.push(format!(
        "  versions    server {}, this client {}",
        text(&v["versions"]["server"]),
        text(&v["versions"]["client"])
    ));
    if !v["details"]["error"].is_null() {
        lines.push(format!("  details     {}", text(&v["details"]["error"])));
        return lines.join("\n") + "\n";
    }
    let uptime = Duration::from_secs(v["uptime_seconds"].as_u64().unwrap_or(0));
    lines.push(format!(
        "  started     {} (up {}); recovery replayed {} journal records in {} ms{}",
        text(&v["started"]),
        humantime::format_duration(uptime),
        text(&v["recovery"]["journal_entries"]),
        text(&v["recovery"]["ms"]),
        if v["takes_writes"] == false { "; REFUSING WRITES since a durable write failed" } else { "" }
    ));
    let bytes = |value: &Value| human_bytes(value.as_u64().unwrap_or(0));
    lines.push(format!(
        "  store       journal {}, journal + index {}; chain head seq {} {}",
        bytes(&v["store"]["journal_bytes"]),
        bytes(&v["store"]["store_bytes"]),
        text(&v["store"]["chain_head"]["seq"]),
        text(&v["store"]["chain_head"]["sha256"])
    ));
    lines.push(format!(
        "  writes      {} group commits, {} events since start; mean flush {} ms",
        text(&v["writes"]["group_commits"]),
        text(&v["writes"]["events"]),
        text(&v["writes"]["flush_mean_ms"])
    ));
    lines.push(format!(
        "  requests    {} RPCs since start, {} not OK",
        text(&v["requests"]["total"]),
        text(&v["requests"]["not_ok"])
    ));
    let windows: Vec<String> = v["settlement"]["open_window_transfers"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(currency, n)| {
                    let gross = text(&v["settlement"]["open_window_gross"][currency]);
                    format!("{currency} {n} transfers, {gross}")
                })
                .collect()
        })
        .unwrap_or_default();
    let last_run = v["settlement"]["last_run_unix_seconds"].as_u64().unwrap_or(0);
    let efficiency = v["settlement"]["last_netting_efficiency_bps"].as_u64().unwrap_or(0);
    lines.push(format!(
        "  settlement  {} open windows{}; last netting {}",
        text(&v["settlement"]["open_windows"]),
        if windows.is_empty() { String::new() } else { format!(" ({})", windows.join("; ")) },
        if last_run == 0 {
            "none since start".to_owned()
        } else {
            format!(
                "saved {}.{:02}% at {}",
                efficiency / 100,
                efficiency % 100,
                humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(last_run))
            )
        }
    ));
    lines.join("\n") + "\n"
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The health of the whole server ("") and of the LedgerService.
async fn health(server: &str, options: &puente_client::ConnectOptions) -> Result<(String, String), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel =
        puente_client::channel(server, options).await.map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = HealthClient::new(channel);
    let mut statuses = Vec::new();
    for service in ["", "puente.v1.LedgerService"] {
        let name = match client.check(HealthCheckRequest { service: service.into() }).await {
            Ok(response) => match response.into_inner().status {
                1 => "SERVING".to_owned(),
                2 => "NOT_SERVING".to_owned(),
                3 => "SERVICE_UNKNOWN".to_owned(),
                _ => "UNKNOWN".to_owned(),
            },
            Err(status) => format!("ERROR ({:?}: {})", status.code(), status.message()),
        };
        statuses.push(name);
    }
    let ledger = statuses.pop().unwrap_or_default();
    let overall = statuses.pop().unwrap_or_default();
    Ok((overall, ledger))
}

// ---- backup ---------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    puente_version: String,
    created_at: String,
    source_data_dir: String,
    /// `puente-backup/1`: the `PUENTEJ2` journal file (`journal.log`). `puente-backup/2`: the
    /// directory of `PUENTEJ3` segments (`journal`), listed in `journal_segments`.
    journal_file: String,
    journal_entries: u64,
    journal_last_seq: u64,
    journal_bytes: u64,
    /// SHA-256 of the journal's bytes: of the file (format 1), of the segments read in order
    /// (format 2).
    journal_sha256: String,
    /// Hash of the journal's last record (its SHA-256 chain head, hex), checked along the
    /// whole chain when the copy was made. Empty in backups made before it was recorded.
    #[serde(default)]
    journal_chain_head: String,
    /// Format 2: every segment (`journal/NNNNNNNN.log`), in order, with its size and SHA-256.
    #[serde(default)]
    journal_segments: Vec<ManifestFile>,
    /// Other files: format 1 may list an FX signing key (see [`LEGACY_BACKUP_FILES`]), never
    /// restored; format 2 the `PUENTEJ2` journal a store was migrated from (`journal.j2.log`,
    /// kept so heads recorded before the migration can still be checked).
    #[serde(default)]
    files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestFile {
    name: String,
    bytes: u64,
    sha256: String,
}

fn backup(args: BackupArgs, out: &Output) -> Result<(), CliError> {
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

fn write_backup(data_dir: &Path, partial: &Path, out: &Path, parent: &Path) -> Result<Manifest, CliError> {
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
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| CliError::Ops(e.to_string()))?;
    write_synced(&partial.join(MANIFEST_FILE), text.as_bytes())?;
    sync_dir(partial)?;
    std::fs::rename(partial, out).map_err(ops_error(format!("cannot rename into {}", out.display())))?;
    sync_dir(parent)?;
    Ok(manifest)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Each segment of the journal in `dir` (numbers `segments`): name, size and SHA-256, and the
/// SHA-256 of all of them read in order.
fn hash_segments(dir: &Path, segments: &[u32]) -> Result<(Vec<ManifestFile>, String), CliError> {
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

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(ops_error(format!("cannot create {}", dir.display())))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut file =
        std::fs::File::create_new(path).map_err(ops_error(format!("cannot create {}", path.display())))?;
    file.write_all(bytes).map_err(ops_error(format!("cannot write {}", path.display())))?;
    file.sync_all().map_err(ops_error(format!("cannot sync {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ops_error(format!("cannot sync directory {}", dir.display())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String, CliError> {
    Ok(sha256_of(path, None)?.1)
}

/// The length and SHA-256 of the file at `path`, also fed to `also` when given.
fn sha256_of(path: &Path, mut also: Option<&mut ring::digest::Context>) -> Result<(u64, String), CliError> {
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
enum BackupJournal {
    /// Format 1: one `PUENTEJ2` file.
    Legacy(PathBuf),
    /// Format 2: the backup directory is laid out like a data directory (`journal/`, and
    /// perhaps `journal.j2.log`).
    Segments(PathBuf),
}

/// Reads a backup's manifest and checks every file it lists (size and SHA-256) and that the
/// journal holds nothing it does not list.
fn check_backup(dir: &Path) -> Result<(Manifest, BackupJournal), CliError> {
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

/// Copies, byte for byte, every journal file of the data directory (or format-2 backup)
/// `src` into the data directory `dst`: segments, a `PUENTEJ2` journal not yet migrated, the
/// archive of one that was. Nothing is checked or cut here: the ledger's open does that, on
/// the copy. Returns the bytes copied.
fn copy_journal_files(src: &Path, dst: &Path) -> Result<u64, CliError> {
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

// ---- verify and restore ---------------------------------------------------------------------

fn currencies(config_path: &Option<PathBuf>) -> Result<puente_money::CurrencyTable, CliError> {
    let file = match config_path {
        Some(path) => config::load_file(path)?,
        None => config::FileConfig::default(),
    };
    Ok(config::resolve(file, None, None, None)?.currencies)
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

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
struct Replay {
    entries: u64,
    truncated_tail_bytes: u64,
    /// What was wrong with the end of the journal, if anything.
    tail: Option<journal::TailCut>,
    /// The journal's chain head after replay: sequence and hash (hex) of its last record.
    chain_head_seq: u64,
    chain_head: String,
    accounts: u64,
    transfers: u64,
    /// Per currency: posted debits (= posted credits) in minor units.
    posted_minor: BTreeMap<String, u128>,
    elapsed_ms: u64,
}

/// Copies the journal files of `source` (a data directory or a backup) into a scratch
/// directory and opens a ledger there, from the journal alone (no snapshot, no index): the
/// same recovery the server runs (every record's checksum, sequence and chain link, replay
/// through the engine, every invariant), then counts what it holds. `source` is only read.
async fn replay(
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

fn replay_json(what: &str, replay: &Replay) -> Value {
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

fn replay_text(what: &str, replay: &Replay) -> String {
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
fn check_tail(what: &str, replay: &Replay) -> Result<(), CliError> {
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
fn check_replay_against_manifest(what: &str, manifest: &Manifest, replay: &Replay) -> Result<(), CliError> {
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

async fn verify(args: VerifyArgs, out: &Output) -> Result<(), CliError> {
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
    if let Some((seq, hash)) = &expected {
        value["expected_head"] = json!({ "seq": seq, "sha256": hash, "matches": true });
    }
    out.print(value, || {
        let mut text = replay_text(&what, &replay);
        if let Some((seq, hash)) = &expected {
            text.push_str(&format!("OK: journal record {seq} still has the recorded chain hash {hash}\n"));
        }
        text
    });
    Ok(())
}

/// `SEQ:SHA256` (64 lower- or upper-case hex digits).
fn parse_head(text: &str) -> Result<(u64, String), CliError> {
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
fn check_expected_head(
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

async fn restore(args: RestoreArgs, out: &Output) -> Result<(), CliError> {
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
    let install = || -> Result<(), CliError> {
        create_private_dir(&partial)?;
        match &source {
            BackupJournal::Legacy(file) => {
                let installed = journal::legacy_path(&partial);
                std::fs::copy(file, &installed)
                    .map_err(ops_error(format!("cannot copy into {}", installed.display())))?;
                std::fs::File::open(&installed)
                    .and_then(|f| f.sync_all())
                    .map_err(ops_error(format!("cannot sync {}", installed.display())))?;
            }
            BackupJournal::Segments(dir) => {
                copy_journal_files(dir, &partial)?;
                sync_dir(&journal::segments_dir(&partial))?;
            }
        }
        // fs::copy copied the backup's mode: the store is owner-only whatever it was.
        crate::data_dir::make_private(&partial)?;
        sync_dir(&partial)?;
        if target.exists() {
            // Checked empty above.
            std::fs::remove_dir(target).map_err(ops_error(format!("cannot replace {}", target.display())))?;
        }
        std::fs::rename(&partial, target)
            .map_err(ops_error(format!("cannot rename into {}", target.display())))?;
        sync_dir(&parent_dir(target))
    };
    if let Err(error) = install() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(error);
    }
    let value = json!({
        "restored": target.display().to_string(),
        "from": args.from.display().to_string(),
        "backup_created_at": manifest.created_at,
        "verify": replay_json(&what, &replay),
        "not_restored": manifest.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
    });
    out.print(value, || {
        let mut text = format!(
            "{}restored into {} (backup of {} taken {}); the index is rebuilt at the first start\n",
            replay_text(&what, &replay),
            target.display(),
            manifest.source_data_dir,
            manifest.created_at
        );
        for file in &manifest.files {
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
