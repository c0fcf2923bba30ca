//! Command-line interface. Each command group beyond the ledger lives in its own module
//! (`src/cli/<group>.rs`) with its own clap `Subcommand` enum, wired in `Command` below.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use puente_client::{Client, ClientError};

use crate::config;

mod accounts;
mod benchmark;
mod fx;
mod holders;
mod ops;
mod output;
mod participants;
mod reconcile;
mod serve;
mod settlement;
mod simulate;
mod transfers;

use accounts::{AccountsCommand, accounts};
use output::*;
use serve::{ServeArgs, run_server};
use transfers::{StatementArgs, TransfersCommand, statement, transfers};

/// The heading client flags are listed under: they apply to every command but `serve`.
const CLIENT_OPTIONS: &str = "Client options (every command but serve)";

#[derive(Parser, Debug)]
#[command(name = "puente", version, about = "Puente: USD/MXN ledger and settlement engine")]
pub struct Args {
    /// Server address for client commands [default: 127.0.0.1:50051]. `puente benchmark` runs
    /// in process without it, and against this server with it.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS, env = "PUENTE_SERVER")]
    server: Option<String>,
    /// Print JSON instead of tables (client commands).
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    json: bool,
    /// API key for client commands (`puente participants create` makes one). Prefer
    /// PUENTE_API_KEY_FILE: a key on a command line is visible to other local users. A flag
    /// beats the environment; of the two variables, PUENTE_API_KEY_FILE wins.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS, env = "PUENTE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// File holding the API key (one line).
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS, env = "PUENTE_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Which of --api-key and --api-key-file were given on the command line (not through the
    /// environment): set by [`Args::with_sources`].
    #[arg(skip)]
    key_flags: (bool, bool),
    /// CA certificate (PEM) to verify a TLS server; turns TLS on for client commands.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS, env = "PUENTE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --tls-key).
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS, env = "PUENTE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS, env = "PUENTE_TLS_KEY")]
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

/// A `key=value` argument (`--meta`).
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

impl From<puente_ledger::backup::BackupError> for CliError {
    fn from(error: puente_ledger::backup::BackupError) -> Self {
        CliError::Ops(error.0)
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        let text = match &error {
            ClientError::Status { code, message, reason, violations, .. } => {
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

    /// Every argument of every command says in one line what it is, and none shows an empty
    /// default (`[default: ""]` tells a reader nothing).
    #[test]
    fn every_argument_has_help_and_no_empty_default() {
        use clap::CommandFactory;
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}: no help"));
                }
                if arg.get_default_values().iter().any(|v| v.is_empty()) && !arg.is_hide_default_value_set() {
                    missing.push(format!("{path} {id}: empty default"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Args::command(), "puente", &mut missing);
        assert!(missing.is_empty(), "{} arguments:\n{}", missing.len(), missing.join("\n"));
    }
}
