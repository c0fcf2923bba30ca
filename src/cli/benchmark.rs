//! `puente benchmark`: how many durable transfers a second this machine (or a server) takes,
//! like `tigerbeetle benchmark`, so that an operator can size hardware (GitHub issue 12).
//!
//! In process (the default) it opens a [`Ledger`] on a fresh data directory under `--dir`
//! (refusing tmpfs and ramfs, where `fdatasync` costs nothing); with `--server` it drives a
//! running server over gRPC with the client flags every command takes.
//!
//! The workload is the one of `benches/ledger.rs`: `--accounts` no-overdraft wallets split
//! across USD and MXN plus one unrestricted treasury per currency, every wallet funded first
//! (not measured), then each measured transfer moves 0.01–0.99 between two random wallets of
//! one currency, with a unique random-looking id (`crate::workload::transfer_id`). None can be
//! refused: every result is checked, and a refusal or an error fails the run.
//!
//! `--clients` clients (in-process tasks, or one gRPC connection each) take the batches from one
//! generator (built off the clock, a few ahead) and each waits for its batch before sending the
//! next. Reported: the wall time from the first measured submit until every batch is
//! acknowledged, transfers/s, and the latency of each batch (p50, p99, max). In process also:
//! the index lag when the last batch is acknowledged (journal records durable but not yet in
//! the index), how long the index then takes to catch up, the throughput including that, and
//! the bytes of the data directory per stored transfer (funding included) once it has.
//!
//! Size: the workload, the two drivers (in process, gRPC) and the report share types; split when a
//! third driver comes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use puente_client::{Client, ConnectOptions, pb};
use puente_ledger::{
    AccountFlags, Actor, BATCH_EVENTS_MAX, Ledger, LedgerConfig, Metadata, NewAccount, Transfer,
    TransferFlags, TransferResult,
};
use puente_money::CurrencyCode;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use super::{CliError, Output};
use crate::workload::{FUNDING_MINOR, Rng, TRANSFER_BASE, TREASURY_BASE, WALLET_BASE, transfer_id};

/// Longest the index may take to catch up with the journal after the last acknowledgement.
const CATCH_UP_MAX: Duration = Duration::from_secs(600);
/// How often the catch-up is looked at (its resolution).
const CATCH_UP_POLL: Duration = Duration::from_millis(1);
/// Most clients (each one a task, or a connection, with a batch in flight).
const CLIENTS_MAX: usize = 1_024;
/// The participants the benchmark's accounts belong to (registered first over gRPC).
const TREASURY_PARTICIPANT: &str = "benchmark-treasury";
const WALLET_PARTICIPANTS: u64 = 8;
/// The in-process submitter's scope (its lane in the writer's queue).
const IN_PROCESS_SCOPE: &str = "benchmark";

#[derive(clap::Args, Debug)]
pub struct BenchmarkArgs {
    /// Measured transfers (after the set-up, which is not measured).
    #[arg(long, default_value_t = 1_000_000)]
    transfers: u64,
    /// Transfers per request (at most 8,189).
    #[arg(long, default_value_t = BATCH_EVENTS_MAX)]
    batch: usize,
    /// No-overdraft wallets, split across USD and MXN (plus one treasury per currency); each is
    /// funded before the clock starts.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Clients submitting at once, each waiting for its batch before it sends the next
    /// (in process: tasks; over gRPC: one connection each).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seed of the random choice of wallets and amounts.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// In process: where the fresh data directory is made. Must be on a real disk, not tmpfs.
    #[arg(long, env = "PUENTE_BENCH_DIR", default_value = "/var/tmp")]
    dir: PathBuf,
    /// In process: keep the data directory afterwards (its path is printed).
    #[arg(long)]
    keep: bool,
}

impl BenchmarkArgs {
    fn check(&self) -> Result<(), CliError> {
        let usage = |text: String| Err(CliError::Usage(text));
        if self.transfers == 0 {
            return usage("--transfers must be at least 1".into());
        }
        if self.batch == 0 || self.batch > BATCH_EVENTS_MAX {
            return usage(format!("--batch must be 1 to {BATCH_EVENTS_MAX}, not {}", self.batch));
        }
        if self.accounts < 4 {
            return usage(format!(
                "--accounts must be at least 4 (two wallets per currency), not {}",
                self.accounts
            ));
        }
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return usage(format!("--clients must be 1 to {CLIENTS_MAX}, not {}", self.clients));
        }
        Ok(())
    }
}

/// Runs the benchmark in process, or against `server` over gRPC; Ctrl-C stops it (and removes
/// the data directory unless `--keep`).
pub async fn run(
    args: BenchmarkArgs,
    server: Option<&str>,
    options: &ConnectOptions,
    out: &Output,
) -> Result<(), CliError> {
    args.check()?;
    let report = tokio::select! {
        report = async {
            match server {
                None => in_process(&args).await,
                Some(server) => over_grpc(&args, server, options).await,
            }
        } => report?,
        // A failure to listen for Ctrl-C only disables this branch.
        Ok(()) = tokio::signal::ctrl_c() => return Err(CliError::Usage("interrupted".into())),
    };
    out.print(report.json(&args), || report.table(&args));
    Ok(())
}

const CURRENCIES: [CurrencyCode; 2] = [CurrencyCode::USD, CurrencyCode::MXN];

/// The ids of one run. In process they are those of `benches/ledger.rs`; over gRPC a random
/// tag (in bits 66 and up) is mixed in, so that runs against one server never meet.
#[derive(Clone, Copy)]
struct Ids {
    tag: u128,
}

impl Ids {
    fn fixed() -> Ids {
        Ids { tag: 0 }
    }

    fn random() -> Ids {
        loop {
            let random = uuid::Uuid::new_v4().as_u128() as u64;
            let ids = Ids { tag: ((random >> 2) as u128) << 66 };
            // Every account id shares the tag's top 32 bits: keep them out of the reserved
            // namespace (transfer ids are checked one by one).
            if !puente_core::ids::is_system_id(ids.wallet(0)) {
                return ids;
            }
        }
    }

    fn treasury(&self, currency: usize) -> u128 {
        (TREASURY_BASE + currency as u128) ^ self.tag
    }

    /// Wallet `index`, counted across currencies (USD first).
    fn wallet(&self, index: u64) -> u128 {
        (WALLET_BASE + index as u128) ^ self.tag
    }

    fn funding(&self, k: u64) -> u128 {
        unreserved((TRANSFER_BASE - 1 - k as u128) ^ self.tag)
    }

    fn transfer(&self, n: u64) -> u128 {
        unreserved(transfer_id(n) ^ self.tag)
    }
}

/// An id out of the reserved system namespace (`ID_RESERVED` for an operator): every id here
/// is unique by its low 64 bits alone, so flipping its top bit keeps it unique.
fn unreserved(id: u128) -> u128 {
    if puente_core::ids::is_system_id(id) { id ^ (1 << 127) } else { id }
}

/// The wallets: `per_currency[c]` of currency `c`, USD's first in the global count.
#[derive(Clone, Copy)]
struct Book {
    per_currency: [u64; 2],
}

impl Book {
    fn new(accounts: u64) -> Book {
        Book { per_currency: [accounts - accounts / 2, accounts / 2] }
    }

    fn first(&self, currency: usize) -> u64 {
        if currency == 0 { 0 } else { self.per_currency[0] }
    }

    /// Every wallet: (currency, global index, index within its currency).
    fn wallets(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        (0..2).flat_map(move |c| (0..self.per_currency[c]).map(move |i| (c, self.first(c) + i, i)))
    }
}

/// One measured transfer before it takes the ledger's or the API's shape.
struct Move {
    id: u128,
    currency: usize,
    from: u128,
    to: u128,
    amount_minor: u64,
}

/// The measured transfers, in the order `benches/ledger.rs` draws them: currency, debit
/// wallet, credit wallet (another one), amount 0.01–0.99.
struct Workload {
    ids: Ids,
    book: Book,
    rng: Rng,
    next: u64,
}

impl Workload {
    fn next_move(&mut self) -> Move {
        let c = (self.rng.next() % 2) as usize;
        let wallets = self.book.per_currency[c];
        let from = self.rng.next() % wallets;
        let mut to = self.rng.next() % wallets;
        if to == from {
            to = (to + 1) % wallets;
        }
        let id = self.ids.transfer(self.next);
        self.next += 1;
        Move {
            id,
            currency: c,
            from: self.ids.wallet(self.book.first(c) + from),
            to: self.ids.wallet(self.book.first(c) + to),
            amount_minor: 1 + self.rng.next() % 99,
        }
    }
}

/// The batch sizes of a run: full batches, the last one holding what is left.
fn batch_sizes(transfers: u64, batch: usize) -> impl Iterator<Item = usize> {
    let batch = batch as u64;
    (0..transfers.div_ceil(batch)).map(move |i| (transfers - i * batch).min(batch) as usize)
}

/// Builds every batch on a thread of its own, a few ahead of the clients (bounded memory;
/// the clock measures submitting, not building). It stops when the receiver is dropped.
fn generate<T: Send + 'static>(
    args: &BenchmarkArgs,
    ids: Ids,
    shape: fn(&Move) -> T,
) -> Result<mpsc::Receiver<Vec<T>>, CliError> {
    let (tx, rx) = mpsc::channel(args.clients + 1);
    let mut workload = Workload { ids, book: Book::new(args.accounts), rng: Rng::seeded(args.seed), next: 0 };
    let sizes = batch_sizes(args.transfers, args.batch);
    std::thread::Builder::new()
        .name("benchmark-generator".into())
        .spawn(move || {
            for size in sizes {
                let batch = (0..size).map(|_| shape(&workload.next_move())).collect();
                if tx.blocking_send(batch).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| CliError::Usage(format!("cannot start the batch generator: {e}")))?;
    Ok(rx)
}

/// One client: submits a batch and waits until it is durable.
trait Submit: Send + 'static {
    type Item: Send + 'static;
    /// Err for an error, or for any transfer that was not committed (`OK`).
    fn submit(&mut self, batch: Vec<Self::Item>) -> impl Future<Output = Result<(), String>> + Send;
}

struct InProcess(Ledger);

impl Submit for InProcess {
    type Item = Transfer;

    async fn submit(&mut self, batch: Vec<Transfer>) -> Result<(), String> {
        let ids: Vec<u128> = batch.iter().map(|t| t.id).collect();
        let outcomes = self
            .0
            .create_transfers(Actor::system(IN_PROCESS_SCOPE), batch)
            .await
            .map_err(|e| format!("create_transfers failed: {e}"))?;
        match outcomes.iter().position(|o| o.result != TransferResult::Ok || o.replayed) {
            Some(i) => Err(format!(
                "transfer {} was not committed: {:?}",
                uuid::Uuid::from_u128(ids[i]),
                outcomes[i]
            )),
            None if outcomes.len() != ids.len() => {
                Err(format!("{} outcomes for a batch of {}", outcomes.len(), ids.len()))
            }
            None => Ok(()),
        }
    }
}

struct Remote(Client);

impl Submit for Remote {
    type Item = pb::Transfer;

    async fn submit(&mut self, batch: Vec<pb::Transfer>) -> Result<(), String> {
        let sent = batch.len();
        let first_id = batch.first().map(|t| t.id.clone()).unwrap_or_default();
        let results = self.0.create_transfers(batch).await.map_err(|e| {
            let hint = if matches!(&e, puente_client::ClientError::Status { code, .. } if *code == tonic::Code::ResourceExhausted) {
                " (the server's per-participant [limits] throttled the benchmark: raise them on the server \
                 for a capacity measurement, see deploy/puente.example.toml)"
            } else {
                ""
            };
            format!("CreateTransfers (batch starting with {first_id}) failed: {e}{hint}")
        })?;
        match results.iter().find(|r| r.code != "OK" || r.replayed) {
            Some(r) => Err(format!("a transfer was not committed: {} (replayed: {})", r.code, r.replayed)),
            None if results.len() != sent => Err(format!("{} results for a batch of {sent}", results.len())),
            None => Ok(()),
        }
    }
}

/// What the clients saw.
struct Measured {
    /// From the first measured submit until the last acknowledgement.
    elapsed: Duration,
    /// When the last batch was acknowledged.
    ended: Instant,
    batches: u64,
    acknowledged: u64,
    latency_us: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What one client of a benchmark did.
struct ClientRun {
    first_sent: Option<Instant>,
    last_acked: Option<Instant>,
    batches: u64,
    acknowledged: u64,
    latency_us: Histogram<u64>,
}

/// One client: submits batches from the shared generator until it is drained or a client
/// failed; its own failure sets `failed` for all.
async fn run_client<S: Submit>(
    mut client: S,
    batches: Arc<Mutex<mpsc::Receiver<Vec<S::Item>>>>,
    failed: Arc<AtomicBool>,
) -> Result<ClientRun, String> {
    let mut run = ClientRun {
        first_sent: None,
        last_acked: None,
        batches: 0,
        acknowledged: 0,
        latency_us: histogram(),
    };
    while !failed.load(Ordering::Relaxed) {
        let Some(batch) = batches.lock().await.recv().await else { break };
        let size = batch.len() as u64;
        let sent = Instant::now();
        let result = client.submit(batch).await;
        let acked = Instant::now();
        if let Err(error) = result {
            failed.store(true, Ordering::Relaxed);
            return Err(error);
        }
        run.first_sent.get_or_insert(sent);
        run.last_acked = Some(acked);
        run.latency_us.saturating_record((acked - sent).as_micros().max(1) as u64);
        run.batches += 1;
        run.acknowledged += size;
    }
    Ok(run)
}

/// Runs the clients until the generator is drained; the first failure stops them all.
async fn measure<S: Submit>(
    clients: Vec<S>,
    batches: mpsc::Receiver<Vec<S::Item>>,
) -> Result<Measured, CliError> {
    let batches = Arc::new(Mutex::new(batches));
    let failed = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let batches = batches.clone();
            let failed = failed.clone();
            tokio::spawn(run_client(client, batches, failed))
        })
        .collect();
    let mut runs = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(run)) => runs.push(run),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(format!("a client task failed: {error}"));
            }
        }
    }
    if let Some(error) = first_error {
        return Err(CliError::Client(format!("benchmark failed: {error}")));
    }
    let started = runs.iter().filter_map(|r| r.first_sent).min();
    let ended = runs.iter().filter_map(|r| r.last_acked).max();
    let (Some(started), Some(ended)) = (started, ended) else {
        return Err(CliError::Client("benchmark failed: no batch was sent".into()));
    };
    let mut latency_us = histogram();
    for run in &runs {
        latency_us.add(&run.latency_us).map_err(|e| CliError::Client(format!("latency histogram: {e}")))?;
    }
    Ok(Measured {
        elapsed: ended - started,
        ended,
        batches: runs.iter().map(|r| r.batches).sum(),
        acknowledged: runs.iter().map(|r| r.acknowledged).sum(),
        latency_us,
    })
}

/// The index and the disk after the run (in process only).
struct Storage {
    data_dir: PathBuf,
    filesystem: String,
    kept: bool,
    /// Journal records durable, and applied to the index, when the last batch was acknowledged.
    committed_seq: u64,
    indexed_seq: u64,
    /// From the last acknowledgement until the index had applied `committed_seq` (zero when it
    /// already had).
    catch_up: Duration,
    group_commits: u64,
    events: u64,
    /// Blocks allocated to every file under the data directory, and their lengths.
    bytes_on_disk: u64,
    bytes_apparent: u64,
}

struct Report {
    mode: &'static str,
    server: Option<String>,
    setup: Duration,
    measured: Measured,
    storage: Option<Storage>,
    /// The funding transfers (one per wallet), stored with the measured ones.
    funding: u64,
}

/// The fresh data directory of an in-process run, removed when dropped unless `--keep`
/// (so a failed or interrupted run leaves nothing behind either).
struct DataDir {
    path: PathBuf,
    keep: bool,
}

impl DataDir {
    fn create(parent: &Path, keep: bool) -> Result<DataDir, CliError> {
        let mut attempt = 0u32;
        loop {
            let name = format!(
                "puente-benchmark-{}-{:08x}",
                std::process::id(),
                uuid::Uuid::new_v4().as_u128() as u32
            );
            let path = parent.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(DataDir { path, keep }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(CliError::Usage(format!("cannot create {}: {e}", path.display()))),
            }
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Whether `dir` may hold the benchmark's data: created if missing, refused on tmpfs/ramfs.
fn benchmark_dir(dir: &Path) -> Result<String, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::Usage(format!("--dir {}: {e}", dir.display())))?;
    crate::disk::require_real_disk(dir).map_err(|refused| CliError::Usage(format!("--dir: {refused}")))
}

fn in_process_transfer(m: &Move) -> Transfer {
    Transfer {
        id: m.id,
        debit_account_id: m.from,
        credit_account_id: m.to,
        amount_minor: m.amount_minor,
        currency: CURRENCIES[m.currency],
        flags: TransferFlags::default(),
        pending_id: 0,
        timeout_ms: 0,
        reference: String::new(),
        metadata: Metadata::new(),
    }
}

/// Says on stderr what is about to be measured, and how long the setup took.
fn announce(args: &BenchmarkArgs, setup: Duration) {
    eprintln!(
        "puente benchmark: {} wallets opened and funded in {:.1} s (not measured); {} transfers in batches of {} from {} client(s)",
        args.accounts,
        setup.as_secs_f64(),
        args.transfers,
        args.batch,
        args.clients
    );
}

async fn in_process(args: &BenchmarkArgs) -> Result<Report, CliError> {
    let filesystem = benchmark_dir(&args.dir)?;
    let data = DataDir::create(&args.dir, args.keep)?;
    eprintln!("puente benchmark: in process, data in {} ({filesystem})", data.path.display());
    let ledger = Ledger::open(LedgerConfig::new(&data.path))
        .map_err(|e| CliError::Usage(format!("cannot open a ledger in {}: {e}", data.path.display())))?;
    let ids = Ids::fixed();
    let book = Book::new(args.accounts);
    let setup_started = Instant::now();
    open_in_process(&ledger, ids, book).await?;
    let setup = setup_started.elapsed();
    announce(args, setup);
    let stats = ledger.stats();
    let (commits_before, events_before) =
        (stats.commits.load(Ordering::Relaxed), stats.events.load(Ordering::Relaxed));
    let batches = generate(args, ids, in_process_transfer)?;
    let clients = (0..args.clients).map(|_| InProcess(ledger.clone())).collect();
    let measured = measure(clients, batches).await?;
    // The index lag right at the last acknowledgement, then its catch-up.
    let (committed_seq, indexed_seq) = ledger.index_watermarks();
    let catch_up = if indexed_seq >= committed_seq {
        Duration::ZERO
    } else {
        wait_for_index(&ledger, committed_seq, measured.ended).await?
    };
    let (bytes_on_disk, bytes_apparent) = dir_bytes(&data.path)
        .map_err(|e| CliError::Usage(format!("cannot measure {}: {e}", data.path.display())))?;
    let storage = Storage {
        data_dir: data.path.clone(),
        filesystem,
        kept: args.keep,
        committed_seq,
        indexed_seq,
        catch_up,
        group_commits: stats.commits.load(Ordering::Relaxed) - commits_before,
        events: stats.events.load(Ordering::Relaxed) - events_before,
        bytes_on_disk,
        bytes_apparent,
    };
    // The writer's final snapshot goes into the directory: wait for it before removing it.
    let stopped = ledger.stopped();
    drop(ledger);
    stopped.await;
    drop(data);
    Ok(Report {
        mode: "in_process",
        server: None,
        setup,
        measured,
        storage: Some(storage),
        funding: args.accounts,
    })
}

/// Waits until the index has applied journal record `seq`; returns the time since `since`.
async fn wait_for_index(ledger: &Ledger, seq: u64, since: Instant) -> Result<Duration, CliError> {
    loop {
        let (_, indexed) = ledger.index_watermarks();
        if indexed >= seq {
            return Ok(since.elapsed());
        }
        if !ledger.is_healthy() {
            return Err(CliError::Client(
                "benchmark failed: the ledger stopped (a durable write failed)".into(),
            ));
        }
        if since.elapsed() > CATCH_UP_MAX {
            return Err(CliError::Client(format!(
                "benchmark failed: the index stayed at journal record {indexed} of {seq} for {} s",
                CATCH_UP_MAX.as_secs()
            )));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// Opens the treasuries and wallets and funds every wallet (not measured).
async fn open_in_process(ledger: &Ledger, ids: Ids, book: Book) -> Result<(), CliError> {
    let actor = || Actor::system(IN_PROCESS_SCOPE);
    let failed =
        |what: &str, detail: String| CliError::Client(format!("benchmark set-up failed: {what}: {detail}"));
    let mut accounts: Vec<NewAccount> = (0..2)
        .map(|c| NewAccount {
            id: ids.treasury(c),
            participant: TREASURY_PARTICIPANT.into(),
            currency: CURRENCIES[c],
            flags: AccountFlags::default(),
            overdraft_limit_minor: 0,
            holder_ref: format!("treasury-{}", CURRENCIES[c].as_str()),
            metadata: Metadata::new(),
        })
        .collect();
    accounts.extend(book.wallets().map(|(c, global, i)| NewAccount {
        id: ids.wallet(global),
        participant: wallet_participant(i),
        currency: CURRENCIES[c],
        flags: AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: false },
        overdraft_limit_minor: 0,
        holder_ref: format!("wallet-{c}-{i}"),
        metadata: Metadata::new(),
    }));
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        let outcomes = ledger
            .create_accounts(actor(), chunk.to_vec())
            .await
            .map_err(|e| failed("create_accounts", e.to_string()))?;
        if let Some(bad) = outcomes.iter().find(|o| !o.result.is_ok()) {
            return Err(failed("an account was refused", format!("{bad:?}")));
        }
    }
    let funding: Vec<Transfer> = book
        .wallets()
        .map(|(c, global, _)| Transfer {
            id: ids.funding(global),
            debit_account_id: ids.treasury(c),
            credit_account_id: ids.wallet(global),
            amount_minor: FUNDING_MINOR,
            currency: CURRENCIES[c],
            flags: TransferFlags::default(),
            pending_id: 0,
            timeout_ms: 0,
            reference: "funding".into(),
            metadata: Metadata::new(),
        })
        .collect();
    for chunk in funding.chunks(BATCH_EVENTS_MAX) {
        let outcomes = ledger
            .create_transfers(actor(), chunk.to_vec())
            .await
            .map_err(|e| failed("create_transfers", e.to_string()))?;
        if let Some(bad) = outcomes.iter().find(|o| o.result != TransferResult::Ok) {
            return Err(failed("a funding transfer was refused", format!("{bad:?}")));
        }
    }
    Ok(())
}

fn wallet_participant(i: u64) -> String {
    format!("benchmark-fintech-{}", i % WALLET_PARTICIPANTS)
}

/// The blocks allocated to every file under `dir` (what it takes of the disk), and the files'
/// lengths. Symbolic links are not followed.
fn dir_bytes(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut allocated, mut apparent) = (0, 0);
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = match entry.path().symlink_metadata() {
                Ok(metadata) => metadata,
                // Removed meanwhile (a background flush replacing a file).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                allocated += metadata.blocks() * 512;
                apparent += metadata.len();
            }
        }
    }
    Ok((allocated, apparent))
}

fn uuid_text(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

/// Minor units (2 decimals, as USD and MXN have) as the API's decimal text.
fn decimal(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn grpc_transfer(m: &Move) -> pb::Transfer {
    pb::Transfer {
        id: uuid_text(m.id),
        debit_account_id: uuid_text(m.from),
        credit_account_id: uuid_text(m.to),
        amount: Some(pb::Money {
            currency_code: CURRENCIES[m.currency].as_str().into(),
            value: decimal(m.amount_minor),
        }),
        kind: pb::TransferKind::SinglePhase as i32,
        ..Default::default()
    }
}

async fn over_grpc(args: &BenchmarkArgs, server: &str, options: &ConnectOptions) -> Result<Report, CliError> {
    eprintln!("puente benchmark: over gRPC against {server}");
    let ids = Ids::random();
    let book = Book::new(args.accounts);
    let setup_started = Instant::now();
    let mut client = Client::connect_with(server, options).await?;
    open_over_grpc(&mut client, ids, book).await?;
    // Every client has its own connection, opened before the clock starts.
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(Remote(Client::connect_with(server, options).await?));
    }
    let setup = setup_started.elapsed();
    announce(args, setup);
    let batches = generate(args, ids, grpc_transfer)?;
    let measured = measure(clients, batches).await?;
    Ok(Report {
        mode: "grpc",
        server: Some(server.to_owned()),
        setup,
        measured,
        storage: None,
        funding: args.accounts,
    })
}

/// Registers the benchmark's participants (operators open accounts only for registered ones),
/// opens the treasuries and wallets and funds every wallet (not measured).
async fn open_over_grpc(client: &mut Client, ids: Ids, book: Book) -> Result<(), CliError> {
    let participants = std::iter::once(TREASURY_PARTICIPANT.to_owned())
        .chain((0..WALLET_PARTICIPANTS.min(book.per_currency[0])).map(wallet_participant));
    for participant in participants {
        match client.create_participant(&participant, "puente benchmark", pb::Role::Participant).await {
            Ok(_) => {}
            // Registered by an earlier run (its throwaway key is not needed).
            Err(e) if e.reason() == Some("PARTICIPANT_EXISTS_WITH_DIFFERENT_KEY") => {}
            Err(e) => {
                return Err(CliError::Client(format!(
                    "benchmark set-up: cannot register participant {participant} (the benchmark needs an \
                     operator's key: PUENTE_API_KEY_FILE): {}",
                    CliError::from(e)
                )));
            }
        }
    }
    let failed =
        |what: &str, detail: String| CliError::Client(format!("benchmark set-up failed: {what}: {detail}"));
    let mut accounts: Vec<pb::Account> = (0..2)
        .map(|c| pb::Account {
            id: uuid_text(ids.treasury(c)),
            participant: TREASURY_PARTICIPANT.into(),
            currency_code: CURRENCIES[c].as_str().into(),
            holder_ref: format!("treasury-{}", CURRENCIES[c].as_str()),
            ..Default::default()
        })
        .collect();
    accounts.extend(book.wallets().map(|(c, global, i)| pb::Account {
        id: uuid_text(ids.wallet(global)),
        participant: wallet_participant(i),
        currency_code: CURRENCIES[c].as_str().into(),
        debits_must_not_exceed_credits: true,
        holder_ref: format!("wallet-{c}-{i}"),
        ..Default::default()
    }));
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        let results = client
            .create_accounts(chunk.to_vec())
            .await
            .map_err(|e| failed("CreateAccounts", CliError::from(e).to_string()))?;
        if let Some(bad) = results.iter().find(|r| r.code != "OK") {
            return Err(failed("an account was refused", bad.code.clone()));
        }
    }
    let funding: Vec<pb::Transfer> = book
        .wallets()
        .map(|(c, global, _)| pb::Transfer {
            id: uuid_text(ids.funding(global)),
            debit_account_id: uuid_text(ids.treasury(c)),
            credit_account_id: uuid_text(ids.wallet(global)),
            amount: Some(pb::Money {
                currency_code: CURRENCIES[c].as_str().into(),
                value: decimal(FUNDING_MINOR),
            }),
            kind: pb::TransferKind::SinglePhase as i32,
            reference: "funding".into(),
            ..Default::default()
        })
        .collect();
    for chunk in funding.chunks(BATCH_EVENTS_MAX) {
        let results = client
            .create_transfers(chunk.to_vec())
            .await
            .map_err(|e| failed("CreateTransfers", CliError::from(e).to_string()))?;
        if let Some(bad) = results.iter().find(|r| r.code != "OK") {
            return Err(failed("a funding transfer was refused", bad.code.clone()));
        }
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

/// Rounded to 3 decimals (JSON keeps no noise digits).
fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

impl Report {
    fn transfers_per_second(&self) -> f64 {
        self.measured.acknowledged as f64 / self.measured.elapsed.as_secs_f64().max(1e-9)
    }

    fn index_lag_records(storage: &Storage) -> u64 {
        storage.committed_seq.saturating_sub(storage.indexed_seq)
    }

    fn transfers_per_second_indexed(&self, storage: &Storage) -> f64 {
        self.measured.acknowledged as f64 / (self.measured.elapsed + storage.catch_up).as_secs_f64().max(1e-9)
    }

    fn transfers_stored(&self) -> u64 {
        self.measured.acknowledged + self.funding
    }

    fn bytes_per_transfer(&self, storage: &Storage) -> f64 {
        storage.bytes_on_disk as f64 / self.transfers_stored() as f64
    }

    /// Stable field names, units last; what over gRPC cannot be seen is null.
    fn json(&self, args: &BenchmarkArgs) -> Value {
        let latency = &self.measured.latency_us;
        let storage = self.storage.as_ref();
        json!({
            "mode": self.mode,
            "server": self.server,
            "transfers": args.transfers,
            "batch": args.batch,
            "clients": args.clients,
            "accounts": args.accounts,
            "seed": args.seed,
            "batches": self.measured.batches,
            "transfers_acknowledged": self.measured.acknowledged,
            "setup_ms": round3(ms(self.setup)),
            "elapsed_ms": round3(ms(self.measured.elapsed)),
            "transfers_per_second": self.transfers_per_second().round() as u64,
            "batch_latency_p50_ms": us_to_ms(latency.value_at_quantile(0.50)),
            "batch_latency_p99_ms": us_to_ms(latency.value_at_quantile(0.99)),
            "batch_latency_max_ms": us_to_ms(latency.max()),
            "batch_latency_mean_ms": round3(latency.mean() / 1_000.0),
            "group_commits": storage.map(|s| s.group_commits),
            "transfers_per_group_commit": storage.map(|s| round3(s.events as f64 / s.group_commits.max(1) as f64)),
            "journal_records_committed": storage.map(|s| s.committed_seq),
            "journal_records_indexed": storage.map(|s| s.indexed_seq),
            "index_lag_records": storage.map(Report::index_lag_records),
            "index_catch_up_ms": storage.map(|s| round3(ms(s.catch_up))),
            "transfers_per_second_indexed": storage.map(|s| self.transfers_per_second_indexed(s).round() as u64),
            "transfers_stored": storage.map(|_| self.transfers_stored()),
            "bytes_on_disk": storage.map(|s| s.bytes_on_disk),
            "bytes_apparent": storage.map(|s| s.bytes_apparent),
            "bytes_per_transfer": storage.map(|s| round3(self.bytes_per_transfer(s))),
            "data_dir": storage.map(|s| s.data_dir.display().to_string()),
            "data_dir_kept": storage.map(|s| s.kept),
            "filesystem": storage.map(|s| s.filesystem.clone()),
        })
    }

    fn table(&self, args: &BenchmarkArgs) -> String {
        let latency = &self.measured.latency_us;
        let mut rows: Vec<(&str, String)> = vec![
            (
                "mode",
                match &self.server {
                    Some(server) => format!("over gRPC, {server}"),
                    None => "in process".into(),
                },
            ),
            ("transfers", thousands(self.measured.acknowledged)),
            ("batch", thousands(args.batch as u64)),
            ("clients", thousands(args.clients as u64)),
            ("accounts", thousands(args.accounts)),
            ("elapsed", format!("{:.3} s", self.measured.elapsed.as_secs_f64())),
            ("transfers/s", thousands(self.transfers_per_second().round() as u64)),
            ("batch latency p50", format!("{:.3} ms", us_to_ms(latency.value_at_quantile(0.50)))),
            ("batch latency p99", format!("{:.3} ms", us_to_ms(latency.value_at_quantile(0.99)))),
            ("batch latency max", format!("{:.3} ms", us_to_ms(latency.max()))),
        ];
        match &self.storage {
            Some(s) => rows.extend([
                (
                    "group commits",
                    format!(
                        "{} ({:.1} transfers each)",
                        thousands(s.group_commits),
                        s.events as f64 / s.group_commits.max(1) as f64
                    ),
                ),
                (
                    "index lag at the end",
                    format!(
                        "{} journal records ({} durable, {} indexed)",
                        thousands(Report::index_lag_records(s)),
                        s.committed_seq,
                        s.indexed_seq
                    ),
                ),
                ("index catch-up", format!("{:.3} ms", ms(s.catch_up))),
                ("transfers/s indexed", thousands(self.transfers_per_second_indexed(s).round() as u64)),
                (
                    "bytes per transfer",
                    format!(
                        "{:.1} ({} bytes on disk for {} transfers stored, funding included)",
                        self.bytes_per_transfer(s),
                        thousands(s.bytes_on_disk),
                        thousands(self.transfers_stored())
                    ),
                ),
                (
                    "data directory",
                    format!(
                        "{} ({}){}",
                        s.data_dir.display(),
                        s.filesystem,
                        if s.kept { ", kept" } else { ", removed" }
                    ),
                ),
            ]),
            None => rows.extend([
                ("index lag at the end", "n/a over gRPC (the server's index is not visible)".into()),
                ("index catch-up", "n/a over gRPC".into()),
                ("bytes per transfer", "n/a over gRPC (the server's disk is not visible)".into()),
            ]),
        }
        rows.iter().map(|(name, value)| format!("{name:<22}{value}\n")).collect()
    }
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_transfer_once() {
        assert_eq!(batch_sizes(20_000, 1_000).collect::<Vec<_>>(), vec![1_000; 20]);
        assert_eq!(batch_sizes(10, 4).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(batch_sizes(1, 8_189).collect::<Vec<_>>(), vec![1]);
        assert_eq!(batch_sizes(1_000_000, 8_189).map(|n| n as u64).sum::<u64>(), 1_000_000);
    }

    #[test]
    fn the_workload_stays_in_one_currency_between_two_wallets() {
        let book = Book::new(5);
        assert_eq!(book.per_currency, [3, 2]);
        assert_eq!(book.wallets().count(), 5);
        let ids = Ids::fixed();
        let usd: Vec<u128> = (0..3).map(|i| ids.wallet(i)).collect();
        let mxn: Vec<u128> = (3..5).map(|i| ids.wallet(i)).collect();
        let mut workload = Workload { ids, book, rng: Rng::seeded(7), next: 0 };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let m = workload.next_move();
            let wallets = if m.currency == 0 { &usd } else { &mxn };
            assert!(wallets.contains(&m.from) && wallets.contains(&m.to) && m.from != m.to);
            assert!((1..=99).contains(&m.amount_minor));
            assert!(seen.insert(m.id), "ids are unique");
        }
    }

    #[test]
    fn in_process_ids_are_those_of_the_ledger_bench() {
        let ids = Ids::fixed();
        assert_eq!(ids.treasury(1), TREASURY_BASE + 1);
        assert_eq!(ids.wallet(5_000), WALLET_BASE + 5_000);
        assert_eq!(ids.funding(0), TRANSFER_BASE - 1);
        assert_eq!(ids.transfer(3), transfer_id(3));
    }

    #[test]
    fn ids_of_a_remote_run_are_unique_and_never_reserved() {
        let ids = Ids::random();
        assert!(!puente_core::ids::is_system_id(ids.treasury(0)));
        assert_ne!(ids.wallet(0), Ids::random().wallet(0), "two runs use different ids");
        let reserved = (puente_core::ids::SYSTEM_ID_PREFIX as u128) << 96;
        assert!(!puente_core::ids::is_system_id(unreserved(reserved | 42)));
        assert_eq!(unreserved(42), 42);
    }

    #[test]
    fn numbers_print_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(decimal(1_000_000_000), "10000000.00");
        assert_eq!(decimal(7), "0.07");
    }

    #[tokio::test]
    async fn the_catch_up_ends_when_the_index_reaches_the_last_acknowledged_record() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
        // An index two records behind the journal, as an asynchronous index can be (the
        // writer of this idle ledger touches neither counter).
        let stats = ledger.stats();
        stats.committed_seq.store(5, Ordering::Release);
        stats.indexed_seq.store(3, Ordering::Release);
        let since = Instant::now();
        let waiting = tokio::spawn({
            let ledger = ledger.clone();
            async move { wait_for_index(&ledger, 5, since).await }
        });
        stats.indexed_seq.store(4, Ordering::Release);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one record still missing");
        stats.indexed_seq.store(5, Ordering::Release);
        let waited = waiting.await.unwrap().unwrap();
        assert!(waited <= since.elapsed());
    }

    #[test]
    fn a_tmpfs_directory_is_refused() {
        let error = benchmark_dir(Path::new("/dev/shm")).unwrap_err().to_string();
        assert!(error.contains("tmpfs"), "{error}");
    }
}
