//! Starting and stopping the real server process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use puente_client::{Client, ConnectOptions, NewAccount, pb};

/// How long a server may take to recover and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    #[allow(dead_code)]
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `puente serve` on 127.0.0.1:0 over `data_dir`; returns once it listens.
    pub fn start(data_dir: &Path) -> Server {
        Server::try_start(data_dir, &[]).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Starts the server; on failure returns what it wrote to stderr.
    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
        Server::try_start_with(data_dir, extra, &[])
    }

    /// Starts the server; `client_args` go to the bootstrap CLI call (e.g. TLS files).
    pub fn try_start_with(data_dir: &Path, extra: &[&str], client_args: &[&str]) -> Result<Server, String> {
        Server::try_start_in(data_dir, extra, client_args, &[], None)
    }

    /// Starts the server with extra environment variables (after `RUST_LOG=info`, so they may
    /// override it) and, with `umask`, under that file-mode creation mask (through `sh`).
    pub fn try_start_in(
        data_dir: &Path,
        extra: &[&str],
        client_args: &[&str],
        env: &[(&str, &str)],
        umask: Option<u32>,
    ) -> Result<Server, String> {
        let server = Server::spawn(data_dir, extra, env, umask)?;
        bootstrap_with(&server.addr, data_dir, client_args)?;
        Ok(server)
    }

    /// Starts the server and returns once it listens, without bootstrapping an operator (a
    /// second node of a cluster: use [`share_operator_key`]).
    pub fn spawn(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        umask: Option<u32>,
    ) -> Result<Server, String> {
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let mut command = match umask {
            // `exec`: the server is the child itself (kill and SIGTERM reach it).
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_puente"));
                sh
            }
            None => Command::new(env!("CARGO_BIN_EXE_puente")),
        };
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(20)) {
                return Ok(Server { child: Some(child), addr, data_dir: data_dir.to_owned() });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited with {status}\n{log}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("timed out".into());
            }
        }
    }

    /// The server process's id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// A client with the operator's key.
    pub async fn client(&self) -> Client {
        operator_client(&self.addr).await
    }

    /// A client without credentials.
    #[allow(dead_code)]
    pub async fn anonymous(&self) -> Client {
        Client::connect(&self.addr).await.expect("connect")
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Registers `id` as a participant (with a throwaway key) unless it is registered: operators
/// open accounts only for registered participants.
pub async fn participant(client: &mut Client, id: &str) {
    match client.create_participant(id, id, pb::Role::Participant).await {
        Ok(_) => {}
        Err(error) if error.reason() == Some("PARTICIPANT_EXISTS_WITH_DIFFERENT_KEY") => {}
        Err(error) => panic!("cannot register participant {id}: {error}"),
    }
}

/// Opens a funding account (no limits) and `n` no-overdraft wallets in `currency`, for
/// `participant` (registered first if needed).
pub async fn accounts(
    client: &mut Client,
    participant: &str,
    currency: &str,
    n: usize,
) -> (String, Vec<String>) {
    self::participant(client, participant).await;
    let source =
        client.create_account(NewAccount::new(participant, currency).holder_ref("funding")).await.unwrap();
    let mut wallets = Vec::new();
    for i in 0..n {
        let account =
            NewAccount::new(participant, currency).no_overdraft().holder_ref(&format!("wallet-{i}"));
        wallets.push(client.create_account(account).await.unwrap().id);
    }
    (source.id, wallets)
}

/// Every line of an account's statement, across pages.
pub async fn all_lines(client: &mut Client, account_id: &str) -> Vec<pb::StatementLine> {
    let mut lines = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .statement(pb::GetAccountStatementRequest {
                account_id: account_id.to_owned(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        lines.extend(page.lines);
        if page.next_page_token.is_empty() {
            return lines;
        }
        page_token = page.next_page_token;
    }
}

/// Every account on the ledger, across pages.
pub async fn all_accounts(client: &mut Client) -> Vec<pb::Account> {
    let mut accounts = Vec::new();
    let mut token = String::new();
    loop {
        let page = client.list_accounts("", 1000, &token).await.unwrap();
        accounts.extend(page.accounts);
        if page.next_page_token.is_empty() {
            return accounts;
        }
        token = page.next_page_token;
    }
}

/// Decimal text with 2 places to minor units (test helper; the server checks real input).
pub fn minor(text: &str) -> i128 {
    let negative = text.starts_with('-');
    let digits: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
    let value: i128 = digits.parse().unwrap();
    if negative { -value } else { value }
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where a test server's operator key lives: beside its data directory (never inside it).
pub fn operator_key_file(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("operator-key")
}

fn keys() -> &'static Mutex<HashMap<String, PathBuf>> {
    static KEYS: std::sync::OnceLock<Mutex<HashMap<String, PathBuf>>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Bootstraps the operator of a new ledger through the CLI (`puente participants bootstrap`),
/// or reuses the key of an earlier run over the same data directory.
pub fn bootstrap(addr: &str, data_dir: &Path) -> Result<PathBuf, String> {
    bootstrap_with(addr, data_dir, &[])
}

fn bootstrap_with(addr: &str, data_dir: &Path, client_args: &[&str]) -> Result<PathBuf, String> {
    let key_file = operator_key_file(data_dir);
    if !key_file.exists() {
        let output = Command::new(env!("CARGO_BIN_EXE_puente"))
            .args(client_args)
            .args(["--server", addr, "participants", "bootstrap", "operator", "--key-file"])
            .arg(&key_file)
            .env_remove("PUENTE_API_KEY")
            .env_remove("PUENTE_API_KEY_FILE")
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("bootstrap failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
    }
    keys().lock().unwrap().insert(addr.to_owned(), key_file.clone());
    Ok(key_file)
}

/// The node at `addr` serves the same ledger as the one at `from` (a cluster): same operator.
#[allow(dead_code)]
pub fn share_operator_key(from: &str, addr: &str) {
    let key_file = key_file_for(from);
    keys().lock().unwrap().insert(addr.to_owned(), key_file);
}

/// The operator key file of the test server at `addr`.
pub fn key_file_for(addr: &str) -> PathBuf {
    keys().lock().unwrap().get(addr).cloned().unwrap_or_else(|| panic!("no operator key for {addr}"))
}

/// The operator key of the test server at `addr`.
pub fn operator_key(addr: &str) -> String {
    std::fs::read_to_string(key_file_for(addr)).unwrap().trim().to_owned()
}

/// A client of the server at `addr` with its operator's key.
pub async fn operator_client(addr: &str) -> Client {
    Client::connect_with(addr, &ConnectOptions::api_key(&operator_key(addr))).await.expect("connect")
}

/// A client with the given key.
#[allow(dead_code)]
pub async fn client_with_key(addr: &str, key: &str) -> Client {
    Client::connect_with(addr, &ConnectOptions::api_key(key)).await.expect("connect")
}

/// The first segment of a data directory's journal (`data/journal/00000001.log`).
pub fn journal_segment(data_dir: &Path) -> PathBuf {
    data_dir.join("journal").join("00000001.log")
}

/// Bytes in all of a data directory's journal segments.
pub fn journal_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("journal"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Where a journal segment's records start (after its header).
pub const SEGMENT_HEADER_BYTES: usize = 64;
