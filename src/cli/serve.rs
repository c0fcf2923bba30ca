//! `puente serve`: the server's flags (separate from the client flags of every other
//! command), the configuration they override, and the process around the server (signals).

use std::path::PathBuf;

use super::CliError;
use crate::config;

#[derive(clap::Args, Debug)]
pub(super) struct ServeArgs {
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
    /// Serve TLS with this server certificate chain (PEM); needs --tls-key-file. (Not the
    /// client flag --tls-cert, which is a client's certificate; `--tls-cert` is still accepted
    /// here for older scripts.)
    #[arg(long = "tls-cert-file", alias = "tls-cert", env = "PUENTE_TLS_CERT_FILE")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long = "tls-key-file", alias = "tls-key", env = "PUENTE_TLS_KEY_FILE")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long = "tls-client-ca-file", alias = "tls-client-ca", env = "PUENTE_TLS_CLIENT_CA_FILE")]
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
    /// The journal of record in PostgreSQL (`postgres://…`): run several nodes with the same
    /// URL, one leads and the others follow as hot standbys [default: none, the local journal
    /// is the record]. Never logged with its password.
    #[arg(long, env = "PUENTE_JOURNAL_URL", hide_env_values = true)]
    journal_url: Option<String>,
    /// With --journal-url: the address clients reach this node at, given to clients that write
    /// to a standby [default: the listen address].
    #[arg(long, env = "PUENTE_ADVERTISE")]
    advertise: Option<String>,
    /// With --journal-url: this node's name in the lease, unique per node [default: the
    /// advertised address].
    #[arg(long, env = "PUENTE_NODE_ID")]
    node_id: Option<String>,
    /// With --journal-url: lease length in milliseconds; a standby takes over at most about
    /// this long after the leader stops [default: 3000].
    #[arg(long, env = "PUENTE_LEASE_MS")]
    lease_ms: Option<u64>,
    /// Write a snapshot of the state after this many events since the last one (a start then
    /// replays at most that many; with --journal-url the snapshot is also kept there, for nodes
    /// that join) [default: 1000000].
    #[arg(long, env = "PUENTE_SNAPSHOT_EVENTS", value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_events: Option<u64>,
}

pub(super) async fn run_server(args: ServeArgs) -> Result<(), CliError> {
    // Before anything is created: every file and directory from now on is owner-only.
    crate::data_dir::restrict_umask();
    let mut file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => config::FileConfig::default(),
    };
    let metrics_listen = config::metrics_listen(args.metrics_listen, file.metrics_listen.clone())?;
    let limits = file.limits.unwrap_or_default();
    let file_pii_key_file = file.pii_key_file.clone();
    let file_journal = file.journal.take();
    limits.validate().map_err(CliError::Usage)?;
    let tls = match (args.tls_cert, args.tls_key, args.tls_client_ca) {
        (None, None, None) => file.tls.clone(),
        (Some(cert_path), Some(key_path), client_ca_path) => {
            Some(puente_server::TlsFiles { cert_path, key_path, client_ca_path })
        }
        _ => {
            return Err(CliError::Usage(
                "--tls-cert-file and --tls-key-file go together (--tls-client-ca-file needs both)".into(),
            ));
        }
    };
    let mut resolved = config::resolve(file, args.listen, args.data_dir, args.log_format)?;
    crate::logging::init(&resolved.log_format).map_err(CliError::Usage)?;
    crate::data_dir::make_private(&resolved.data_dir).map_err(CliError::Usage)?;
    // The quote-signing keys: read before listening, so a refused key file stops the start.
    if let Some(path) = args.fx_signing_key_file.or(resolved.fx_signing_key_file.take()) {
        resolved.fx.signing_keys = Some(std::sync::Arc::new(fx_signing_keys(&path, &resolved.data_dir)?));
    }
    let journal = file_journal.unwrap_or_default();
    let replication = args.journal_url.or(journal.url).map(|url| {
        let advertise = args.advertise.or(journal.advertise);
        puente_server::replication::ReplicationConfig {
            url,
            node: args.node_id.or(journal.node_id),
            advertise,
            lease_ms: args
                .lease_ms
                .or(journal.lease_ms)
                .unwrap_or(puente_server::replication::LEASE_MS_DEFAULT),
        }
    });
    let ledger = puente_ledger::LedgerConfig {
        currencies: resolved.currencies,
        rebuild_index: args.rebuild_index,
        snapshot_events: args.snapshot_events.unwrap_or(puente_ledger::ledger::SNAPSHOT_EVENTS),
        ..puente_ledger::LedgerConfig::new(resolved.data_dir.clone())
    };
    let pii_keyring = pii_keyring(args.pii_key_file.or(file_pii_key_file), &resolved.data_dir)?;
    let config = puente_server::ServerConfig {
        listen: resolved.listen,
        ledger,
        fx: resolved.fx,
        metrics_listen,
        settlement: resolved.settlement,
        limits,
        tls,
        pii_keyring: pii_keyring.map(std::sync::Arc::new),
        replication,
    };
    puente_server::run(config, shutdown_signal()).await?;
    Ok(())
}

/// The FX quote-signing keyring from its file (outside the data directory, owner-only).
fn fx_signing_keys(
    path: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<puente_fx::QuoteKeyring, CliError> {
    puente_kyc::pii::read_key_file(path, data_dir, puente_fx::QuoteKeyring::from_text)
        .map_err(|e| {
            // A binary PKCS#8 key, as earlier versions used, is not a keyring.
            let hint = match e {
                puente_kyc::pii::PiiError::KeyFileNotUtf8 { .. } => {
                    " (a PKCS#8 key of an earlier version? make a keyring: `puente fx-key generate k1 --key-file FILE`)"
                }
                _ => "",
            };
            CliError::Usage(format!("FX signing key file: {e}{hint}"))
        })?
        .map_err(|e| CliError::Usage(format!("FX signing key file {}: {e}", path.display())))
}

/// The personal-data keyring: from its file or `PUENTE_PII_KEY` (not both); `None` refuses
/// holder requests.
fn pii_keyring(
    pii_key_file: Option<PathBuf>,
    data_dir: &std::path::Path,
) -> Result<Option<puente_kyc::pii::Keyring>, CliError> {
    let pii_keyring = match (pii_key_file, std::env::var("PUENTE_PII_KEY").ok()) {
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "give the personal-data key once: a key file or PUENTE_PII_KEY, not both".into(),
            ));
        }
        (Some(path), None) => Some(
            puente_kyc::pii::Keyring::from_file(&path, data_dir)
                .map_err(|e| CliError::Usage(format!("personal-data key file {}: {e}", path.display())))?,
        ),
        (None, Some(value)) => Some(
            puente_kyc::pii::Keyring::from_env_value(&value)
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
    Ok(pii_keyring)
}

pub(super) async fn shutdown_signal() {
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
