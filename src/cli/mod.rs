//! Command-line interface. Each command group beyond the ledger lives in its own module
//! (`src/cli/<group>.rs`) with its own clap `Subcommand` enum, wired in `Command` below.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use puente_client::{Client, ClientError, NewAccount, NewTransfer, pb};
use serde_json::{Value, json};

use crate::config;

mod benchmark;
mod fx;
mod holders;
mod ops;
mod participants;
mod reconcile;
mod settlement;
mod simulate;

#[derive(Parser, Debug)]
#[command(name = "puente", version, about = "Puente: USD/MXN ledger and settlement engine")]
pub struct Args {
    /// Server address for client commands [default: 127.0.0.1:50051]. `puente benchmark` runs
    /// in process without it, and against this server with it.
    #[arg(long, global = true, env = "PUENTE_SERVER")]
    server: Option<String>,
    /// Print JSON instead of tables (client commands).
    #[arg(long, global = true)]
    json: bool,
    /// API key for client commands (`puente participants create` makes one). Prefer
    /// PUENTE_API_KEY_FILE: a key on a command line is visible to other local users. A flag
    /// beats the environment; of the two variables, PUENTE_API_KEY_FILE wins.
    #[arg(long, global = true, env = "PUENTE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// File holding the API key (one line).
    #[arg(long, global = true, env = "PUENTE_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Which of --api-key and --api-key-file were given on the command line (not through the
    /// environment): set by [`Args::with_sources`].
    #[arg(skip)]
    key_flags: (bool, bool),
    /// CA certificate (PEM) to verify a TLS server; turns TLS on for client commands.
    #[arg(long, global = true, env = "PUENTE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --tls-key).
    #[arg(long, global = true, env = "PUENTE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "PUENTE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

impl Args {
    /// Records which key arguments came from the command line rather than the environment.
    pub fn with_sources(mut self, matches: &clap::ArgMatches) -> Args {
        let flag = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        self.key_flags = (flag("api_key"), flag("api_key_file"));
        self
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (data in ./puente-data, listening on 127.0.0.1:50051 by default).
    Serve(ServeArgs),
    /// Open, show and list accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Create, show, list, post and void transfers.
    #[command(subcommand)]
    Transfers(TransfersCommand),
    /// An account statement with the running balance after each line.
    Statement(StatementArgs),
    /// Set, list, import and stream FX mid rates.
    #[command(subcommand)]
    Rates(fx::RatesCommand),
    /// FX quotes: price, show, list, execute, cancel; the signing key; the house exposure.
    #[command(subcommand)]
    Fx(fx::FxCommand),
    /// Operations: status, backup, restore, verify.
    #[command(flatten)]
    Ops(ops::OpsCommand),
    /// Settlement windows: profiles, windows, close, run, report, payments, confirm.
    #[command(subcommand)]
    Settlement(settlement::SettlementCommand),
    /// Post a seeded, realistic corridor day through the API (demos, tests, benchmarks).
    Simulate(simulate::SimulateArgs),
    /// Participants and their credentials: bootstrap, create, rotate and revoke keys, certificates.
    #[command(subcommand)]
    Participants(participants::ParticipantsCommand),
    /// Who the configured credentials belong to.
    Whoami,
    /// Account holders: KYC tier and (encrypted) personal data; monthly usage.
    #[command(subcommand)]
    Holders(holders::HoldersCommand),
    /// The KYC policy: UDI rate and US tiers (operators).
    #[command(subcommand)]
    Kyc(holders::KycCommand),
    /// Personal-data encryption keys (AES-256-GCM): make one for the keyring file.
    #[command(subcommand)]
    PiiKey(holders::PiiKeyCommand),
    /// FX quote-signing keys (Ed25519): make one for the keyring file, or add one to it.
    #[command(subcommand)]
    FxKey(fx::FxKeyCommand),
    /// Durable transfers per second, batch latency, index lag and bytes per transfer: in
    /// process on a fresh data directory, or against --server over gRPC.
    Benchmark(benchmark::BenchmarkArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "PUENTE_LISTEN")]
    listen: Option<String>,
    /// Data directory [default: ./puente-data].
    #[arg(long, env = "PUENTE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file (see deploy/puente.example.toml).
    #[arg(long, env = "PUENTE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "PUENTE_LOG_FORMAT")]
    log_format: Option<String>,
    /// Delete the index and rebuild it from the journal before serving.
    #[arg(long)]
    rebuild_index: bool,
    /// Serve Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:9464, or
    /// "off" [default: off].
    #[arg(long, env = "PUENTE_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "PUENTE_TLS_CERT_FILE")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "PUENTE_TLS_KEY_FILE")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "PUENTE_TLS_CLIENT_CA_FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Personal-data keyring file (lines `<key_id>:<64 hex>`, the first one active; mode 0600;
    /// outside the data directory). Or PUENTE_PII_KEY with the same specs, comma-separated.
    /// Without either, holder requests are refused.
    #[arg(long, env = "PUENTE_PII_KEY_FILE")]
    pii_key_file: Option<PathBuf>,
    /// FX quote-signing keyring file (lines `<key_id>:<64 hex>`, the first one signs, the
    /// others still verify; mode 0600; outside the data directory; `puente fx-key generate`).
    /// Without one, quotes are signed with an in-memory key and stop executing at a restart.
    #[arg(long, env = "PUENTE_FX_SIGNING_KEY_FILE")]
    fx_signing_key_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum AccountsCommand {
    /// Open an account.
    Create {
        #[arg(long)]
        participant: String,
        #[arg(long)]
        currency: String,
        /// Account id (UUID); a random one by default.
        #[arg(long)]
        id: Option<String>,
        /// Debits may not exceed credits (a wallet).
        #[arg(long)]
        no_overdraft: bool,
        /// Allow going below zero by at most this much (implies --no-overdraft's check).
        #[arg(long)]
        overdraft_limit: Option<String>,
        /// Credits may not exceed debits.
        #[arg(long)]
        credit_cap: bool,
        #[arg(long, default_value = "")]
        holder_ref: String,
        /// Metadata as key=value (repeatable).
        #[arg(long = "meta", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
    },
    /// Show one account.
    Get { id: String },
    /// Close an account: it takes no new transfers (refused while transfers are pending).
    Close { id: String },
    /// List accounts (of one participant with --participant).
    List {
        #[arg(long, default_value = "")]
        participant: String,
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

#[derive(Subcommand, Debug)]
enum TransfersCommand {
    /// Move money (or reserve it with --pending).
    Create {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Decimal amount, e.g. 12.50.
        #[arg(long)]
        amount: String,
        #[arg(long)]
        currency: String,
        /// Transfer id (UUID), the idempotency key; a random one by default. Re-run with
        /// the same id to retry safely.
        #[arg(long)]
        id: Option<String>,
        /// Reserve the funds (two-phase); resolve with `post` or `void`.
        #[arg(long)]
        pending: bool,
        /// With --pending: release the reservation after this many milliseconds.
        #[arg(long, default_value_t = 0)]
        timeout_ms: u64,
        #[arg(long, default_value = "")]
        reference: String,
        #[arg(long = "meta", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
    },
    /// Show one transfer.
    Get { id: String },
    /// List an account's transfers.
    List {
        #[arg(long)]
        account: String,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// RFC 3339 start time (inclusive), e.g. 2026-11-25T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 end time (exclusive).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Post a pending transfer, in full or (with --amount) partially.
    Post {
        pending_id: String,
        #[arg(long)]
        amount: Option<String>,
        #[arg(long)]
        id: Option<String>,
    },
    /// Void a pending transfer.
    Void {
        pending_id: String,
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct StatementArgs {
    account: String,
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 100)]
    page_size: i32,
    #[arg(long, default_value = "")]
    page_token: String,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Server(#[from] puente_server::ServerError),
    #[error("{0}")]
    Client(String),
    #[error("{0}")]
    Usage(String),
    /// An operations command (backup, restore, verify, status) failed.
    #[error("{0}")]
    Ops(String),
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        let text = match &error {
            ClientError::Status { code, message, reason, violations } => {
                status_text(*code, message, reason.as_deref(), violations)
            }
            other => other.to_string(),
        };
        CliError::Client(text)
    }
}

/// An error status as the CLI prints it: code, reason and message on the first line, then
/// each bad field on its own line. The server's message already spells the violations out
/// ("invalid request: transfers[0].amount.value: ..."); then only what precedes them is kept,
/// so that each is printed once.
fn status_text(
    code: tonic::Code,
    message: &str,
    reason: Option<&str>,
    violations: &[(String, String)],
) -> String {
    let repeated = !violations.is_empty() && violations.iter().all(|(_, d)| message.contains(d.as_str()));
    let headline = if repeated {
        let first = violations
            .iter()
            .filter_map(|(field, description)| {
                message
                    .find(&format!("{field}: {description}"))
                    .or_else(|| message.find(description.as_str()))
            })
            .min()
            .unwrap_or(message.len());
        message[..first].trim_end_matches([' ', ':', ';', ',']).to_owned()
    } else {
        message.to_owned()
    };
    let mut text = format!("{code:?}");
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        text.push_str(&format!(" {reason}"));
    }
    if !headline.is_empty() {
        text.push_str(&format!(": {headline}"));
    }
    for (field, description) in violations {
        text.push_str(&format!("\n  {field}: {description}"));
    }
    text
}

/// The client side of the connection: the API key and TLS files from flags or environment.
fn connect_options(args: &Args) -> Result<puente_client::ConnectOptions, CliError> {
    // A flag beats the environment; between the two variables the file wins (as in the Rust
    // and Python clients' `from_env`); both flags at once is a mistake.
    let read_file = |path: &PathBuf| {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--api-key-file {}: {e}", path.display())))?;
        match text.trim() {
            "" => Err(CliError::Usage(format!("--api-key-file {}: the file is empty", path.display()))),
            key => Ok(Some(key.to_owned())),
        }
    };
    let api_key = match (&args.api_key, &args.api_key_file, args.key_flags) {
        (Some(_), Some(_), (true, true)) => {
            return Err(CliError::Usage("give --api-key or --api-key-file, not both".into()));
        }
        (Some(key), _, (true, _)) => Some(key.trim().to_owned()),
        (_, Some(path), _) => read_file(path)?,
        (Some(key), None, _) => Some(key.trim().to_owned()),
        (None, None, _) => None,
    };
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read(path).map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))
    };
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (None, None, None) => None,
        (ca, cert, key) => {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = ca {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "--tls-ca")?));
            }
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(tonic::transport::Identity::from_pem(
                        read(cert, "--tls-cert")?,
                        read(key, "--tls-key")?,
                    ));
                }
                (None, None) => {}
                _ => return Err(CliError::Usage("--tls-cert and --tls-key go together".into())),
            }
            Some(tls)
        }
    };
    Ok(puente_client::ConnectOptions { api_key, tls })
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let options = connect_options(&args)?;
    let out = Output { json: args.json };
    let server = args.server.as_deref().unwrap_or(config::DEFAULT_LISTEN);
    match args.command {
        Command::Serve(serve) => run_server(serve).await,
        Command::Ops(command) => {
            let credentials = options.api_key.is_some() || args.tls_cert.is_some();
            ops::run(command, server, &options, credentials, args.json).await
        }
        Command::Settlement(command) => {
            let mut client = settlement::connect(server, &options).await?;
            settlement::run(&mut client, command, &out).await
        }
        Command::Simulate(simulate) => {
            let mut client = Client::connect_with(server, &options).await?;
            let mut settlement = settlement::connect(server, &options).await?;
            simulate::run(&mut client, &mut settlement, simulate, &out).await
        }
        Command::Participants(command) => {
            let mut client = Client::connect_with(server, &options).await?;
            participants::run(&mut client, command, &out).await
        }
        Command::PiiKey(command) => holders::pii_key(command),
        Command::FxKey(command) => fx::fx_key(command, &out),
        Command::Benchmark(benchmark) => {
            benchmark::run(benchmark, args.server.as_deref(), &options, &out).await
        }
        Command::Holders(command) => {
            let mut client = Client::connect_with(server, &options).await?;
            holders::holders(&mut client, command, &out).await
        }
        Command::Kyc(command) => {
            let mut client = Client::connect_with(server, &options).await?;
            holders::kyc(&mut client, command, &out).await
        }
        Command::Whoami => {
            let mut client = Client::connect_with(server, &options).await?;
            participants::whoami(&mut client, &out).await
        }
        command => {
            let mut client = Client::connect_with(server, &options).await?;
            match command {
                Command::Accounts(c) => accounts(&mut client, c, &out).await,
                Command::Transfers(c) => transfers(&mut client, c, &out).await,
                Command::Statement(s) => statement(&mut client, s, &out).await,
                Command::Rates(c) => fx::rates(&mut client, c, &out).await,
                Command::Fx(c) => fx::fx(&mut client, c, &out).await,
                _ => Ok(()),
            }
        }
    }
}

async fn run_server(args: ServeArgs) -> Result<(), CliError> {
    // Before anything is created: every file and directory from now on is owner-only.
    crate::data_dir::restrict_umask();
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => config::FileConfig::default(),
    };
    let metrics_listen = config::metrics_listen(args.metrics_listen, file.metrics_listen.clone())?;
    let limits = file.limits.unwrap_or_default();
    let file_pii_key_file = file.pii_key_file.clone();
    limits.validate().map_err(CliError::Usage)?;
    let tls = match (args.tls_cert, args.tls_key, args.tls_client_ca) {
        (None, None, None) => file.tls.clone(),
        (Some(cert_path), Some(key_path), client_ca_path) => {
            Some(puente_server::TlsFiles { cert_path, key_path, client_ca_path })
        }
        _ => {
            return Err(CliError::Usage(
                "--tls-cert and --tls-key go together (--tls-client-ca needs both)".into(),
            ));
        }
    };
    let mut resolved = config::resolve(file, args.listen, args.data_dir, args.log_format)?;
    crate::logging::init(&resolved.log_format)?;
    crate::data_dir::make_private(&resolved.data_dir)?;
    // The quote-signing keys: read before listening, so a refused key file stops the start.
    if let Some(path) = args.fx_signing_key_file.or(resolved.fx_signing_key_file.take()) {
        let keyring = puente_identity::pii::read_key_file(
            &path,
            &resolved.data_dir,
            puente_fx::QuoteKeyring::from_text,
        )
        .map_err(|e| {
            // A binary PKCS#8 key, as earlier versions used, is not a keyring.
            let hint = match e {
                puente_identity::pii::PiiError::KeyFileNotUtf8 { .. } => {
                    " (a PKCS#8 key of an earlier version? make a keyring: `puente fx-key generate k1 --key-file FILE`)"
                }
                _ => "",
            };
            CliError::Usage(format!("FX signing key file: {e}{hint}"))
        })?
        .map_err(|e| CliError::Usage(format!("FX signing key file {}: {e}", path.display())))?;
        resolved.fx.signing_keys = Some(std::sync::Arc::new(keyring));
    }
    let ledger = puente_ledger::LedgerConfig {
        currencies: resolved.currencies,
        rebuild_index: args.rebuild_index,
        ..puente_ledger::LedgerConfig::new(resolved.data_dir.clone())
    };
    let pii_key_file = args.pii_key_file.or(file_pii_key_file);
    let pii_keyring = match (pii_key_file, std::env::var("PUENTE_PII_KEY").ok()) {
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "give the personal-data key once: a key file or PUENTE_PII_KEY, not both".into(),
            ));
        }
        (Some(path), None) => Some(
            puente_identity::pii::Keyring::from_file(&path, &resolved.data_dir)
                .map_err(|e| CliError::Usage(format!("personal-data key file {}: {e}", path.display())))?,
        ),
        (None, Some(value)) => Some(
            puente_identity::pii::Keyring::from_env_value(&value)
                .map_err(|e| CliError::Usage(format!("PUENTE_PII_KEY: {e}")))?,
        ),
        (None, None) => None,
    };
    match &pii_keyring {
        Some(keyring) => {
            tracing::info!(active_key_id = keyring.active_key_id(), key_ids = ?keyring.key_ids(), "personal-data keyring loaded")
        }
        None => tracing::warn!(
            "no personal-data key (--pii-key-file or PUENTE_PII_KEY): holder requests are refused"
        ),
    }
    let config = puente_server::ServerConfig {
        listen: resolved.listen,
        ledger,
        fx: resolved.fx,
        metrics_listen,
        settlement: resolved.settlement,
        limits,
        tls,
        pii_keyring: pii_keyring.map(std::sync::Arc::new),
    };
    puente_server::run(config, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

struct Output {
    json: bool,
}

impl Output {
    /// One page of a list: `{"<key>": [...], "next_page_token": ...}` as JSON, or the table
    /// with a hint for the next page.
    fn print_page<T>(
        &self,
        key: &str,
        items: &[T],
        to_json: impl Fn(&T) -> Value,
        table: impl FnOnce(&[T]) -> String,
        next_page_token: &str,
    ) {
        let value =
            json!({ key: items.iter().map(to_json).collect::<Vec<_>>(), "next_page_token": next_page_token });
        self.print(value, || {
            let mut text = table(items);
            if !next_page_token.is_empty() {
                text.push_str(&format!("next page: --page-token {next_page_token}\n"));
            }
            text
        });
    }

    fn print(&self, value: Value, table: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        } else {
            print!("{}", table());
        }
    }
}

fn time_text(ts: &Option<puente_proto::Timestamp>) -> String {
    match ts {
        Some(ts) if ts.seconds >= 0 => {
            let time = UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos.max(0) as u32);
            humantime::format_rfc3339_micros(time).to_string()
        }
        _ => String::new(),
    }
}

fn parse_time(text: &Option<String>, flag: &str) -> Result<Option<puente_proto::Timestamp>, CliError> {
    let Some(text) = text else { return Ok(None) };
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
        CliError::Usage(format!("{flag}: {e} (expected RFC 3339, e.g. 2026-11-25T00:00:00Z)"))
    })?;
    let since =
        time.duration_since(UNIX_EPOCH).map_err(|_| CliError::Usage(format!("{flag}: before 1970")))?;
    Ok(Some(puente_proto::Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }))
}

fn account_json(a: &pb::Account) -> Value {
    json!({
        "id": a.id, "participant": a.participant, "currency": a.currency_code,
        "debits_must_not_exceed_credits": a.debits_must_not_exceed_credits,
        "credits_must_not_exceed_debits": a.credits_must_not_exceed_debits,
        "overdraft_limit": a.overdraft_limit, "holder_ref": a.holder_ref, "metadata": a.metadata,
        "debits_pending": a.debits_pending, "debits_posted": a.debits_posted,
        "credits_pending": a.credits_pending, "credits_posted": a.credits_posted,
        "posted_balance": a.posted_balance, "available_balance": a.available_balance,
        "create_time": time_text(&a.create_time), "closed": a.closed, "state": account_state(a),
    })
}

fn money_text(m: &Option<pb::Money>) -> String {
    m.as_ref().map(|m| format!("{} {}", m.value, m.currency_code)).unwrap_or_default()
}

fn kind_name(kind: i32) -> &'static str {
    match pb::TransferKind::try_from(kind) {
        Ok(pb::TransferKind::SinglePhase) => "single_phase",
        Ok(pb::TransferKind::Pending) => "pending",
        Ok(pb::TransferKind::PostPending) => "post_pending",
        Ok(pb::TransferKind::VoidPending) => "void_pending",
        _ => "unspecified",
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::TransferState::try_from(state) {
        Ok(pb::TransferState::Posted) => "posted",
        Ok(pb::TransferState::Pending) => "pending",
        Ok(pb::TransferState::PendingPosted) => "pending_posted",
        Ok(pb::TransferState::PendingVoided) => "pending_voided",
        Ok(pb::TransferState::PendingExpired) => "pending_expired",
        Ok(pb::TransferState::Failed) => "failed",
        _ => "unspecified",
    }
}

fn transfer_json(t: &pb::Transfer) -> Value {
    json!({
        "id": t.id, "debit_account_id": t.debit_account_id, "credit_account_id": t.credit_account_id,
        "amount": t.amount.as_ref().map(|m| json!({"currency": m.currency_code, "value": m.value})),
        "effective_amount": t.effective_amount.as_ref().map(|m| json!({"currency": m.currency_code, "value": m.value})),
        "kind": kind_name(t.kind), "linked": t.linked, "pending_id": t.pending_id, "timeout_ms": t.timeout_ms,
        "reference": t.reference, "metadata": t.metadata, "create_time": time_text(&t.create_time),
        "position": t.position, "state": state_name(t.state), "failure_code": t.failure_code,
        "expire_time": time_text(&t.expire_time),
    })
}

/// "open", or "closed" for an account that takes no new transfers.
fn account_state(a: &pb::Account) -> &'static str {
    if a.closed { "closed" } else { "open" }
}

fn account_rows(accounts: &[pb::Account]) -> String {
    let mut out = format!(
        "{:<36}  {:<16}  {:<3}  {:<6}  {:>16}  {:>16}  {:>14}  {}\n",
        "ID", "PARTICIPANT", "CCY", "STATE", "POSTED", "AVAILABLE", "PENDING DEBITS", "HOLDER"
    );
    for a in accounts {
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<3}  {:<6}  {:>16}  {:>16}  {:>14}  {}\n",
            a.id,
            a.participant,
            a.currency_code,
            account_state(a),
            a.posted_balance,
            a.available_balance,
            a.debits_pending,
            a.holder_ref
        ));
    }
    out
}

fn transfer_rows(transfers: &[pb::Transfer]) -> String {
    let mut out = format!(
        "{:<20}  {:<36}  {:<14}  {:<15}  {:>16}  {:<36}  {:<36}\n",
        "POSITION", "ID", "KIND", "STATE", "AMOUNT", "DEBIT", "CREDIT"
    );
    for t in transfers {
        out.push_str(&format!(
            "{:<20}  {:<36}  {:<14}  {:<15}  {:>16}  {:<36}  {:<36}\n",
            t.position,
            t.id,
            kind_name(t.kind),
            state_name(t.state),
            money_text(if t.effective_amount.is_some() { &t.effective_amount } else { &t.amount }),
            t.debit_account_id,
            t.credit_account_id
        ));
    }
    out
}

async fn accounts(client: &mut Client, command: AccountsCommand, out: &Output) -> Result<(), CliError> {
    match command {
        AccountsCommand::Create {
            participant,
            currency,
            id,
            no_overdraft,
            overdraft_limit,
            credit_cap,
            holder_ref,
            metadata,
        } => {
            let mut new = NewAccount::new(&participant, &currency).holder_ref(&holder_ref);
            if let Some(id) = id {
                new = new.id(&id);
            }
            if no_overdraft {
                new = new.no_overdraft();
            }
            if let Some(limit) = overdraft_limit {
                new = new.overdraft_limit(&limit);
            }
            if credit_cap {
                new = new.credit_cap();
            }
            for (k, v) in &metadata {
                new = new.metadata(k, v);
            }
            let account = client.create_account(new).await?;
            out.print(account_json(&account), || account_rows(std::slice::from_ref(&account)));
        }
        AccountsCommand::Close { id } => {
            let (account, replayed) = client.close_account(&id).await?;
            let mut value = account_json(&account);
            value["replayed"] = json!(replayed);
            out.print(value, || {
                let note = if replayed { " (it was already closed)" } else { "" };
                format!(
                    "closed account {}{note}\n{}",
                    account.id,
                    account_rows(std::slice::from_ref(&account))
                )
            });
        }
        AccountsCommand::Get { id } => {
            let account = client.get_account(&id).await?;
            out.print(account_json(&account), || account_rows(std::slice::from_ref(&account)));
        }
        AccountsCommand::List { participant, page_size, page_token } => {
            let page = client.list_accounts(&participant, page_size, &page_token).await?;
            out.print_page("accounts", &page.accounts, account_json, account_rows, &page.next_page_token);
        }
    }
    Ok(())
}

async fn submit(client: &mut Client, transfer: NewTransfer, out: &Output) -> Result<(), CliError> {
    let id = transfer.0.id.clone();
    let results = client.create_transfers(vec![transfer.0]).await?;
    let result = results.into_iter().next().ok_or_else(|| CliError::Client("no result".into()))?;
    let value = json!({
        "id": id, "code": result.code, "replayed": result.replayed, "position": result.position,
        "create_time": time_text(&result.create_time),
    });
    out.print(value, || {
        format!(
            "transfer {id}: {}{}{}\n",
            result.code,
            if result.replayed { " (retry: first outcome returned)" } else { "" },
            if result.position > 0 { format!(" at position {}", result.position) } else { String::new() }
        )
    });
    if result.code == "OK" {
        Ok(())
    } else {
        Err(CliError::Client(format!("transfer refused: {}", result.code)))
    }
}

async fn transfers(client: &mut Client, command: TransfersCommand, out: &Output) -> Result<(), CliError> {
    match command {
        TransfersCommand::Create {
            from,
            to,
            amount,
            currency,
            id,
            pending,
            timeout_ms,
            reference,
            metadata,
        } => {
            let mut t = NewTransfer::new(&from, &to, &currency, &amount).reference(&reference);
            if let Some(id) = id {
                t = t.id(&id);
            }
            if pending {
                t = t.pending(timeout_ms);
            } else if timeout_ms > 0 {
                return Err(CliError::Usage("--timeout-ms needs --pending".into()));
            }
            for (k, v) in &metadata {
                t = t.metadata(k, v);
            }
            submit(client, t, out).await
        }
        TransfersCommand::Get { id } => {
            let t = client.get_transfer(&id).await?;
            out.print(transfer_json(&t), || {
                let mut text = transfer_rows(std::slice::from_ref(&t));
                if !t.failure_code.is_empty() {
                    text.push_str(&format!("failed: {}\n", t.failure_code));
                }
                text
            });
            Ok(())
        }
        TransfersCommand::List { account, desc, since, until, page_size, page_token } => {
            let request = pb::ListTransfersRequest {
                account_id: account,
                start_time: parse_time(&since, "--since")?,
                end_time: parse_time(&until, "--until")?,
                order_by: if desc { "create_time desc".into() } else { "create_time".into() },
                page_size,
                page_token,
            };
            let page = client.list_transfers(request).await?;
            out.print_page("transfers", &page.transfers, transfer_json, transfer_rows, &page.next_page_token);
            Ok(())
        }
        TransfersCommand::Post { pending_id, amount, id } => {
            let pending = client.get_transfer(&pending_id).await?;
            let currency = pending.amount.map(|m| m.currency_code).unwrap_or_default();
            let mut t = NewTransfer::post(&pending_id, &currency, amount.as_deref());
            if let Some(id) = id {
                t = t.id(&id);
            }
            submit(client, t, out).await
        }
        TransfersCommand::Void { pending_id, id } => {
            let pending = client.get_transfer(&pending_id).await?;
            let currency = pending.amount.map(|m| m.currency_code).unwrap_or_default();
            let mut t = NewTransfer::void(&pending_id, &currency);
            if let Some(id) = id {
                t = t.id(&id);
            }
            submit(client, t, out).await
        }
    }
}

async fn statement(client: &mut Client, args: StatementArgs, out: &Output) -> Result<(), CliError> {
    let request = pb::GetAccountStatementRequest {
        account_id: args.account,
        start_time: parse_time(&args.since, "--since")?,
        end_time: parse_time(&args.until, "--until")?,
        page_size: args.page_size,
        page_token: args.page_token,
    };
    let s = client.statement(request).await?;
    let account = s.account.clone().unwrap_or_default();
    let kind = |k: i32| match pb::EntryKind::try_from(k) {
        Ok(pb::EntryKind::Posted) => "posted",
        Ok(pb::EntryKind::Pending) => "pending",
        Ok(pb::EntryKind::PostPending) => "post_pending",
        Ok(pb::EntryKind::VoidPending) => "void_pending",
        Ok(pb::EntryKind::Expired) => "expired",
        _ => "unspecified",
    };
    let value = json!({
        "account": account_json(&account),
        "opening_posted_balance": s.opening_posted_balance,
        "closing_posted_balance": s.closing_posted_balance,
        "lines": s.lines.iter().map(|l| json!({
            "time": time_text(&l.time), "position": l.position, "transfer_id": l.transfer_id,
            "kind": kind(l.kind), "side": if l.debit { "debit" } else { "credit" },
            "amount": l.amount.as_ref().map(|m| m.value.clone()),
            "posted_balance": l.posted_balance, "available_balance": l.available_balance,
        })).collect::<Vec<_>>(),
        "next_page_token": s.next_page_token,
    });
    out.print(value, || {
        let mut text = format!(
            "Statement for {} ({} {}, holder {}{})\nOpening posted balance: {}\n",
            account.id,
            account.participant,
            account.currency_code,
            account.holder_ref,
            if account.closed { "; CLOSED: takes no new transfers" } else { "" },
            s.opening_posted_balance
        );
        text.push_str(&format!(
            "{:<27}  {:<36}  {:<12}  {:<6}  {:>14}  {:>16}  {:>16}\n",
            "TIME", "TRANSFER", "KIND", "SIDE", "AMOUNT", "POSTED", "AVAILABLE"
        ));
        for l in &s.lines {
            text.push_str(&format!(
                "{:<27}  {:<36}  {:<12}  {:<6}  {:>14}  {:>16}  {:>16}\n",
                time_text(&l.time),
                l.transfer_id,
                kind(l.kind),
                if l.debit { "debit" } else { "credit" },
                l.amount.as_ref().map(|m| m.value.as_str()).unwrap_or(""),
                l.posted_balance,
                l.available_balance
            ));
        }
        text.push_str(&format!("Closing posted balance: {}\n", s.closing_posted_balance));
        if !s.next_page_token.is_empty() {
            text.push_str(&format!("next page: --page-token {}\n", s.next_page_token));
        }
        text
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_message_is_printed_once() {
        let description = "amount \"1.001\" has 3 decimal places; USD allows at most 2";
        let violations = vec![("transfers[0].amount.value".to_owned(), description.to_owned())];
        let message = format!("invalid request: transfers[0].amount.value: {description}");
        let text = status_text(tonic::Code::InvalidArgument, &message, Some("INVALID_FIELD"), &violations);
        assert_eq!(
            text,
            format!(
                "InvalidArgument INVALID_FIELD: invalid request\n  transfers[0].amount.value: {description}"
            )
        );
        assert_eq!(text.matches(description).count(), 1, "{text}");
        // Two violations: each once.
        let violations = vec![("a".to_owned(), "bad a".to_owned()), ("b".to_owned(), "bad b".to_owned())];
        let text = status_text(
            tonic::Code::InvalidArgument,
            "invalid request: a: bad a; b: bad b",
            None,
            &violations,
        );
        assert_eq!(text, "InvalidArgument: invalid request\n  a: bad a\n  b: bad b");
        // A message that says something else is kept; without violations, it is the text.
        let text = status_text(tonic::Code::NotFound, "account x not found", Some("ACCOUNT_NOT_FOUND"), &[]);
        assert_eq!(text, "NotFound ACCOUNT_NOT_FOUND: account x not found");
        let violations = vec![("f".to_owned(), "d".to_owned())];
        let text = status_text(tonic::Code::InvalidArgument, "something else", None, &violations);
        assert_eq!(text, "InvalidArgument: something else\n  f: d");
    }
}
