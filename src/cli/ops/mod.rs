//! Operations: `puente status` (gRPC health, then, with an operator's key, versions, store
//! size, chain head, writes and settlement windows over gRPC; in one screen), `puente backup`
//! (a consistent copy of the journal while the server runs), `puente restore` and
//! `puente verify` (replays a store or a backup offline and checks every invariant, without
//! touching it).
//!
//! A backup (format `puente-backup/2`) is a directory: `journal/` (the journal's segments, the
//! last one up to its longest prefix of intact records, so a consistent state holding every
//! write acknowledged before the backup started) and `MANIFEST.json` (entries, last sequence,
//! bytes, SHA-256 of each segment, chain head). The index and snapshots are not copied: a
//! restored store rebuilds them from the journal at its first start.
//!
//! One file per command: `status.rs`, `backup.rs`, `verify.rs` (verify and restore).

use std::collections::BTreeMap;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::Subcommand;
use puente_client::{Client, ClientError, pb};
use puente_ledger::journal::{self, chain_hex};
use puente_ledger::{Ledger, LedgerConfig};

use serde_json::{Value, json};

use super::{CliError, Output};

mod backup;
mod status;
mod verify;

use crate::config;
use backup::*;
use puente_ledger::backup::*;
use status::*;
use verify::*;

/// Longest `puente status` waits for each of health and the details.
pub(super) const STATUS_TIMEOUT_MS: u64 = 5_000;
/// Open settlement windows `puente status` asks for per page, and at most in all (there is
/// one per currency).
pub(super) const STATUS_WINDOW_PAGE: i32 = 100;
pub(super) const STATUS_WINDOWS_MAX: usize = 1_000;
/// Accounts and transfers read per page when `verify` counts them.
pub(super) const VERIFY_PAGE_ROWS: usize = puente_ledger::PAGE_SIZE_MAX;

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

pub(super) fn ops_error(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CliError {
    move |error| CliError::Ops(format!("{context}: {error}"))
}
