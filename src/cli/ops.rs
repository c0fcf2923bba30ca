//! Operations: `puente status` (health, versions, store size, settlement windows, in one
//! screen), `puente backup` (a consistent copy of the journal while the server runs),
//! `puente restore` and `puente verify` (replays a store or a backup offline and checks every
//! invariant, without touching it).
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
use puente_ledger::journal::{Journal, chain_hex, copy_intact_prefix};
use puente_ledger::{Ledger, LedgerConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CliError, Output};
use crate::config;

/// Longest `puente status` waits for the server or the metrics endpoint.
const STATUS_TIMEOUT_MS: u64 = 5_000;
/// Largest metrics response `puente status` reads.
const METRICS_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The metrics address `puente status` reads by default (the conventional port).
const STATUS_METRICS_DEFAULT: &str = "127.0.0.1:9464";
/// Backup format written in (and required of) `MANIFEST.json`.
const BACKUP_FORMAT: &str = "puente-backup/1";
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
    /// Health, versions, store size and settlement windows of a running server, in one screen.
    /// Exits non-zero unless the server is SERVING.
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
    /// The server's metrics address (its --metrics-listen) [default: 127.0.0.1:9464]; "off"
    /// to skip metrics.
    #[arg(long, env = "PUENTE_METRICS_LISTEN")]
    metrics: Option<String>,
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

pub async fn run(
    command: OpsCommand,
    server: &str,
    options: &puente_client::ConnectOptions,
    json: bool,
) -> Result<(), CliError> {
    let out = Output { json };
    match command {
        OpsCommand::Status(args) => status(server, options, args, &out).await,
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
    args: StatusArgs,
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
    let metrics_addr = args.metrics.unwrap_or_else(|| STATUS_METRICS_DEFAULT.to_owned());
    let scraped = if metrics_addr == "off" {
        Err("not read (--metrics off)".to_owned())
    } else {
        scrape(&metrics_addr, timeout).await
    };
    let metrics = scraped.as_ref().map(|text| Samples::parse(text));
    let client_version = env!("CARGO_PKG_VERSION");
    let value = match &metrics {
        Ok(m) => {
            let mut windows_transfers = BTreeMap::new();
            let mut windows_gross = BTreeMap::new();
            for (labels, value) in m.all("puente_settlement_open_window_transfers") {
                windows_transfers.insert(label(labels, "currency"), *value as u64);
            }
            for (labels, value) in m.all("puente_settlement_open_window_gross_minor") {
                windows_gross.insert(label(labels, "currency"), *value as u64);
            }
            let requests: f64 = m.all("puente_grpc_requests_total").map(|(_, v)| v).sum();
            let failed: f64 = m
                .all("puente_grpc_requests_total")
                .filter(|(labels, _)| label(labels, "code") != "OK")
                .map(|(_, v)| v)
                .sum();
            let flush_count = m.one("puente_commit_flush_seconds_count").unwrap_or(0.0);
            let flush_mean_ms = if flush_count > 0.0 {
                m.one("puente_commit_flush_seconds_sum").unwrap_or(0.0) * 1_000.0 / flush_count
            } else {
                0.0
            };
            json!({
                "server": server,
                "health": {"overall": overall, "ledger": ledger},
                "versions": {
                    "server": m.all("puente_build_info").next().map(|(labels, _)| label(labels, "version")),
                    "client": client_version,
                },
                "up": m.one("puente_up").map(|v| v == 1.0),
                "store": {
                    "journal_bytes": m.one("puente_journal_bytes").unwrap_or(0.0) as u64,
                    "store_bytes": m.one("puente_store_bytes").unwrap_or(0.0) as u64,
                },
                "writes": {
                    "group_commits": m.one("puente_commit_group_events_count").unwrap_or(0.0) as u64,
                    "events": m.one("puente_commit_group_events_sum").unwrap_or(0.0) as u64,
                    "flush_mean_ms": (flush_mean_ms * 1_000.0).round() / 1_000.0,
                },
                "requests": {"total": requests as u64, "not_ok": failed as u64},
                "settlement": {
                    "open_windows": m.one("puente_settlement_open_windows").unwrap_or(0.0) as u64,
                    "open_window_transfers": windows_transfers,
                    "open_window_gross_minor": windows_gross,
                    "last_netting_efficiency_bps": m.one("puente_settlement_last_netting_efficiency_bps").unwrap_or(0.0) as u64,
                    "last_run_unix_seconds": m.one("puente_settlement_last_run_timestamp_seconds").unwrap_or(0.0) as u64,
                },
                "metrics": {"address": metrics_addr, "error": null},
            })
        }
        Err(error) => json!({
            "server": server,
            "health": {"overall": overall, "ledger": ledger},
            "versions": {"server": null, "client": client_version},
            "metrics": {"address": metrics_addr, "error": error},
        }),
    };
    out.print(value.clone(), || status_screen(&value));
    if overall == "SERVING" {
        Ok(())
    } else {
        Err(CliError::Ops(format!("the server at {server} is not serving: {overall}")))
    }
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
    if v["metrics"]["error"].is_null() {
        let bytes = |value: &Value| human_bytes(value.as_u64().unwrap_or(0));
        lines.push(format!(
            "  store       journal {}, journal + index {}",
            bytes(&v["store"]["journal_bytes"]),
            bytes(&v["store"]["store_bytes"])
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
            .map(|o| o.iter().map(|(currency, n)| format!("{currency} {n} transfers")).collect())
            .unwrap_or_default();
        let last_run = v["settlement"]["last_run_unix_seconds"].as_u64().unwrap_or(0);
        let efficiency = v["settlement"]["last_netting_efficiency_bps"].as_u64().unwrap_or(0);
        lines.push(format!(
            "  settlement  {} open windows ({}); last netting {}",
            text(&v["settlement"]["open_windows"]),
            windows.join(", "),
            if last_run == 0 {
                "never ran".to_owned()
            } else {
                format!(
                    "saved {}.{:02}% at {}",
                    efficiency / 100,
                    efficiency % 100,
                    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(last_run))
                )
            }
        ));
        lines.push(format!("  metrics     http://{}/metrics", text(&v["metrics"]["address"])));
    } else {
        lines.push(format!(
            "  metrics     {}: {} (store size and windows need --metrics ADDR)",
            text(&v["metrics"]["address"]),
            text(&v["metrics"]["error"])
        ));
    }
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

/// `GET /metrics` over plain HTTP/1.1.
async fn scrape(addr: &str, timeout: Duration) -> Result<String, String> {
    let read = async {
        let mut stream =
            tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot connect: {e}"))?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        (&mut stream)
            .take(METRICS_RESPONSE_BYTES_MAX as u64 + 1)
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        if response.len() > METRICS_RESPONSE_BYTES_MAX {
            return Err(format!("response larger than {METRICS_RESPONSE_BYTES_MAX} bytes"));
        }
        let text = String::from_utf8(response).map_err(|_| "response is not UTF-8".to_owned())?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
        let status_line = head.lines().next().unwrap_or_default();
        if status_line.split_whitespace().nth(1) != Some("200") {
            return Err(format!("HTTP {status_line}"));
        }
        Ok(body.to_owned())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| "timed out".to_owned())?
}

/// Label pairs of one sample.
type Labels = Vec<(String, String)>;

/// Samples of the Prometheus text format: (name, labels, value).
struct Samples(Vec<(String, Labels, f64)>);

impl Samples {
    fn parse(text: &str) -> Samples {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(parts) => parts,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Samples(samples)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a [(String, String)], &'a f64)> + 'a {
        self.0.iter().filter(move |(n, _, _)| n == name).map(|(_, labels, value)| (labels.as_slice(), value))
    }

    fn one(&self, name: &str) -> Option<f64> {
        self.all(name).next().map(|(_, value)| *value)
    }
}

/// `a="x",b="y"` (our label values hold no quotes or commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

fn label(labels: &[(String, String)], key: &str) -> String {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
}

// ---- backup ---------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    puente_version: String,
    created_at: String,
    source_data_dir: String,
    journal_file: String,
    journal_entries: u64,
    journal_last_seq: u64,
    journal_bytes: u64,
    journal_sha256: String,
    /// Hash of the journal's last record (its SHA-256 chain head, hex), checked along the
    /// whole chain when the copy was made. Empty in backups made before it was recorded.
    #[serde(default)]
    journal_chain_head: String,
    /// Files copied verbatim beside the journal: none since keys left the data directory
    /// (see [`LEGACY_BACKUP_FILES`]).
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
    let source = Journal::path(&args.data_dir);
    if !source.is_file() {
        return Err(CliError::Ops(format!(
            "no journal at {}: is --data-dir a Puente data directory?",
            source.display()
        )));
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
    let result = write_backup(&args.data_dir, &source, &partial, &args.out, &parent);
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
        "journal_sha256": manifest.journal_sha256,
        "journal_chain_head": manifest.journal_chain_head,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    out.print(value, || {
        format!(
            "backup {}: {} journal entries (through sequence {}), {}, sha256 {}\n  \
             chain head: seq {} {}\n",
            args.out.display(),
            manifest.journal_entries,
            manifest.journal_last_seq,
            human_bytes(manifest.journal_bytes),
            manifest.journal_sha256,
            manifest.journal_last_seq,
            manifest.journal_chain_head
        )
    });
    Ok(())
}

fn write_backup(
    data_dir: &Path,
    source: &Path,
    partial: &Path,
    out: &Path,
    parent: &Path,
) -> Result<Manifest, CliError> {
    let journal = partial.join("journal.log");
    let copy = copy_intact_prefix(source, &journal)
        .map_err(|e| CliError::Ops(format!("cannot back up {}: {e}", data_dir.display())))?;
    if copy.tail_kind == Some(puente_ledger::journal::TailKind::Damaged) {
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
    let manifest = Manifest {
        format: BACKUP_FORMAT.to_owned(),
        puente_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        source_data_dir: std::fs::canonicalize(data_dir)
            .unwrap_or_else(|_| data_dir.to_owned())
            .display()
            .to_string(),
        journal_file: "journal.log".to_owned(),
        journal_entries: copy.entries,
        journal_last_seq: copy.last_seq,
        journal_bytes: copy.bytes,
        journal_sha256: sha256_file(&journal)?,
        journal_chain_head: chain_hex(&copy.chain_head),
        files: Vec::new(),
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| CliError::Ops(e.to_string()))?;
    write_synced(&partial.join(MANIFEST_FILE), text.as_bytes())?;
    sync_dir(partial)?;
    std::fs::rename(partial, out).map_err(ops_error(format!("cannot rename into {}", out.display())))?;
    sync_dir(parent)?;
    Ok(manifest)
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

fn sha256_file(path: &Path) -> Result<String, CliError> {
    let mut file = std::fs::File::open(path).map_err(ops_error(format!("cannot read {}", path.display())))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(ops_error(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(context.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads a backup's manifest and checks its journal's size and checksum against it.
fn check_backup(dir: &Path) -> Result<(Manifest, PathBuf), CliError> {
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
    if manifest.format != BACKUP_FORMAT {
        return Err(CliError::Ops(format!(
            "backup {} has format {:?}; this puente reads {BACKUP_FORMAT:?}",
            dir.display(),
            manifest.format
        )));
    }
    if manifest.journal_file.contains('/') || manifest.journal_file.contains("..") {
        return Err(damaged(format!("bad journal file name {:?}", manifest.journal_file)));
    }
    let journal = dir.join(&manifest.journal_file);
    let bytes =
        std::fs::metadata(&journal).map_err(|e| damaged(format!("{}: {e}", manifest.journal_file)))?.len();
    if bytes != manifest.journal_bytes {
        return Err(damaged(format!(
            "{} has {bytes} bytes, the manifest says {}",
            manifest.journal_file, manifest.journal_bytes
        )));
    }
    let sha256 = sha256_file(&journal)?;
    if sha256 != manifest.journal_sha256 {
        return Err(damaged(format!(
            "{} has SHA-256 {sha256}, the manifest says {} (checksum mismatch)",
            manifest.journal_file, manifest.journal_sha256
        )));
    }
    for file in &manifest.files {
        if !LEGACY_BACKUP_FILES.contains(&file.name.as_str()) {
            return Err(damaged(format!("unexpected file {:?} in the manifest", file.name)));
        }
        let sha256 = sha256_file(&dir.join(&file.name))?;
        if sha256 != file.sha256 {
            return Err(damaged(format!(
                "{} has SHA-256 {sha256}, the manifest says {} (checksum mismatch)",
                file.name, file.sha256
            )));
        }
    }
    Ok((manifest, journal))
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
        std::fs::create_dir_all(&dir)
            .map_err(ops_error(format!("cannot create scratch {}", dir.display())))?;
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
    tail: Option<puente_ledger::journal::TailCut>,
    /// The journal's chain head after replay: sequence and hash (hex) of its last record.
    chain_head_seq: u64,
    chain_head: String,
    accounts: u64,
    transfers: u64,
    /// Per currency: posted debits (= posted credits) in minor units.
    posted_minor: BTreeMap<String, u128>,
    elapsed_ms: u64,
}

/// Copies `journal` into a scratch directory and opens a ledger there: the same recovery the
/// server runs (every record's checksum and sequence, replay through the engine, every
/// invariant), then counts what it holds. `journal` itself is only read.
async fn replay(
    journal: &Path,
    currencies: puente_money::CurrencyTable,
    what: &str,
) -> Result<Replay, CliError> {
    let scratch = Scratch::new()?;
    std::fs::copy(journal, Journal::path(&scratch.0)).map_err(ops_error(format!(
        "cannot copy {} to {}",
        journal.display(),
        scratch.0.display()
    )))?;
    let dir = scratch.0.clone();
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let ledger = Ledger::open(LedgerConfig { data_dir: dir, currencies, rebuild_index: true })
            .map_err(|e| CliError::Ops(format!("{what} is NOT whole: {e}")))?;
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
                *posted_minor.entry(account.currency.to_string()).or_insert(0u128) +=
                    account.debits_posted_minor;
            }
        }
        let mut transfers = 0u64;
        let mut after_ns = 0;
        loop {
            let page = ledger
                .transfers_after(after_ns, VERIFY_PAGE_ROWS)
                .map_err(|e| CliError::Ops(format!("{what}: reading transfers: {e}")))?;
            let Some(last) = page.last() else { break };
            after_ns = last.timestamp_ns;
            transfers += page.len() as u64;
        }
        drop(ledger);
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
    })
    .await
    .map_err(|e| CliError::Ops(format!("verify task failed: {e}")))?
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
        Some(tail) if tail.kind == puente_ledger::journal::TailKind::Damaged => Err(CliError::Ops(format!(
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
    let (what, journal, manifest) = match &args.backup {
        Some(dir) => {
            let (manifest, journal) = check_backup(dir)?;
            (format!("backup {}", dir.display()), journal, Some(manifest))
        }
        None => {
            let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
            let journal = Journal::path(&dir);
            if !journal.is_file() {
                return Err(CliError::Ops(format!(
                    "no journal at {}: is it a Puente data directory?",
                    journal.display()
                )));
            }
            (format!("store {}", dir.display()), journal, None)
        }
    };
    let expected = args.expect_head.as_deref().map(parse_head).transpose()?;
    let replay = replay(&journal, currencies, &what).await?;
    check_tail(&what, &replay)?;
    if let Some(manifest) = &manifest {
        check_replay_against_manifest(&what, manifest, &replay)?;
    }
    if let Some((seq, hash)) = &expected {
        check_expected_head(&what, &journal, &replay, *seq, hash)?;
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

/// The verified journal still holds record `seq` with the recorded chain hash.
fn check_expected_head(
    what: &str,
    journal: &Path,
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
    let stored = puente_ledger::journal::chain_hash_at(journal, seq)
        .map_err(|e| CliError::Ops(format!("{what}: reading record {seq}: {e}")))?;
    match stored.map(|h| puente_ledger::journal::chain_hex(&h)) {
        Some(actual) if actual == hash => Ok(()),
        Some(actual) => Err(CliError::Ops(format!(
            "{what} does NOT match the recorded head: record {seq} has chain hash {actual}, the recorded \
             head says {hash} (the journal was rewritten up to or before record {seq})"
        ))),
        None => Err(CliError::Ops(format!("{what} has no record {seq}"))),
    }
}

async fn restore(args: RestoreArgs, out: &Output) -> Result<(), CliError> {
    let currencies = currencies(&args.config)?;
    let (manifest, journal) = check_backup(&args.from)?;
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
    let replay = replay(&journal, currencies, &what).await?;
    check_tail(&what, &replay)?;
    check_replay_against_manifest(&what, &manifest, &replay)?;
    std::fs::create_dir_all(target).map_err(ops_error(format!("cannot create {}", target.display())))?;
    let installed = Journal::path(target);
    let partial = target.join("journal.log.partial");
    let install = || -> Result<(), CliError> {
        std::fs::copy(&journal, &partial)
            .map_err(ops_error(format!("cannot copy into {}", partial.display())))?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(ops_error(format!("cannot sync {}", partial.display())))?;
        std::fs::rename(&partial, &installed)
            .map_err(ops_error(format!("cannot rename {}", partial.display())))?;
        sync_dir(target)?;
        sync_dir(&parent_dir(target))
    };
    if let Err(error) = install() {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&installed);
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
