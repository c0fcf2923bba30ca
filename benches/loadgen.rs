//! End-to-end load generator: the real gRPC server (`puente_server::serve`) in this process on
//! 127.0.0.1:0 with a durable ledger on the real disk, driven by 1, 16 and 64 concurrent
//! clients (one HTTP/2 connection each) over loopback only.
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-bench cargo bench --bench loadgen
//! CARGO_TARGET_DIR=/tmp/target-bench cargo bench --bench loadgen -- --duration 5 --clients 1,16,64 \
//!     --batch-sizes 1000,8000 --modes single,batch
//! ```
//!
//! Modes:
//! - `single`: every request carries one transfer; reports transfers/s and the p50/p99 of the
//!   request latency.
//! - `batch`: every request carries `--batch-sizes` transfers; reports transfers/s and the
//!   per-request p50/p99.
//!
//! Every run stops by itself after `--duration` seconds or `--max-requests` requests per
//! client, whichever comes first (a request in flight at the deadline is awaited). Batch runs
//! with more than `--max-in-flight` transfers outstanding at once (64 x 8,000) are skipped.

/// The same allocator as the `puente` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;
use common::disk::require_real_disk;
use common::workload::{Rng, transfer_id};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use puente_client::{Client, pb};
use puente_ledger::{Ledger, LedgerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "End-to-end gRPC load generator for Puente")]
struct Args {
    /// Seconds each run lasts at most.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Concurrent client counts, one run per count and mode.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Transfers per request in batch mode.
    #[arg(long, value_delimiter = ',', default_value = "1000,8000")]
    batch_sizes: Vec<usize>,
    /// Which modes to run: single, batch.
    #[arg(long, value_delimiter = ',', default_value = "single,batch,quote")]
    modes: Vec<String>,
    /// Batch runs whose clients x transfers/request exceed this are skipped: the writer
    /// commits ~10-20k transfers/s here, so a larger backlog would outlast the server's 30 s
    /// request timeout (64 x 8,000 = 512,000 transfers queued at once).
    #[arg(long, default_value_t = 128_000)]
    max_in_flight: usize,
    /// Most requests one client sends in one run.
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// Wallets per currency (USD and MXN).
    #[arg(long, default_value_t = 5_000)]
    wallets: usize,
    /// Parent directory for the ledger's data (must not be tmpfs).
    #[arg(long, env = "PUENTE_BENCH_DIR", default_value = "/var/tmp")]
    dir: PathBuf,
    /// The journal of record in PostgreSQL (`puente serve --journal-url`), an EMPTY database:
    /// every group commit is then also one PostgreSQL transaction, as on a cluster's leader.
    #[arg(long, env = "PUENTE_BENCH_JOURNAL_URL")]
    journal_url: Option<String>,
    /// Passed by `cargo bench`. Without it (`cargo test --all-targets`), a short smoke run
    /// checks that the load generator still works, instead of the full measurement.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// The smoke run `cargo test` gets: every mode, tiny and brief.
    fn smoke(mut self) -> Args {
        self.duration = 0.2;
        self.clients = vec![2];
        self.batch_sizes = vec![10];
        self.wallets = 20;
        self.max_requests = 50;
        self
    }
}

const CURRENCIES: [&str; 2] = ["USD", "MXN"];
const TRANSFER_ID_BASE: u128 = 0x5EED_0000_0000_0000_0000_0000_0000_0000;

fn uuid(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

/// Everything a client needs to build transfers: wallet ids per currency, amount texts, the
/// shared id counter.
struct Book {
    wallets: [Vec<String>; 2],
    amounts: Vec<String>,
    next_id: AtomicU64,
}

impl Book {
    fn transfer(&self, rng: &mut Rng) -> pb::Transfer {
        let c = (rng.next() % 2) as usize;
        let wallets = &self.wallets[c];
        let from = (rng.next() % wallets.len() as u64) as usize;
        let mut to = (rng.next() % wallets.len() as u64) as usize;
        if to == from {
            to = (to + 1) % wallets.len();
        }
        pb::Transfer {
            id: uuid(transfer_id(self.next_id.fetch_add(1, Ordering::Relaxed))),
            debit_account_id: wallets[from].clone(),
            credit_account_id: wallets[to].clone(),
            amount: Some(pb::Money {
                currency_code: CURRENCIES[c].to_owned(),
                value: self.amounts[(rng.next() % self.amounts.len() as u64) as usize].clone(),
            }),
            kind: pb::TransferKind::SinglePhase as i32,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Batch(usize),
    /// One FX quote (priced and Ed25519-signed) per request.
    Quote,
}

impl Mode {
    fn batch(&self) -> usize {
        match self {
            Mode::Single | Mode::Quote => 1,
            Mode::Batch(n) => *n,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Batch(_) => "batch",
            Mode::Quote => "quote",
        }
    }
}

struct ClientResult {
    latency_us: Histogram<u64>,
    requests: u64,
    transfers_ok: u64,
    refused: u64,
    errors: u64,
}

struct RunResult {
    mode: Mode,
    clients: usize,
    elapsed: Duration,
    requests: u64,
    transfers_ok: u64,
    refused: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    commits: u64,
    events: u64,
}

impl RunResult {
    fn transfers_per_sec(&self) -> f64 {
        self.transfers_ok as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run_client(
    mut client: Client,
    book: Arc<Book>,
    mode: Mode,
    deadline: Instant,
    max_requests: u64,
    seed: u64,
) -> ClientResult {
    let mut rng = Rng(seed | 1);
    let mut result = ClientResult {
        latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
        requests: 0,
        transfers_ok: 0,
        refused: 0,
        errors: 0,
    };
    while result.requests < max_requests && Instant::now() < deadline {
        if mode == Mode::Quote {
            let send = format!("{}.{:02}", 10 + rng.next() % 5_000, rng.next() % 100);
            let sent = Instant::now();
            let response = client
                .quote("loadgen", pb::FxSegment::Sme, "USD", "MXN", puente_client::Fixed::Send(&send))
                .await;
            let latency = sent.elapsed();
            result.requests += 1;
            match response {
                Ok(_) => {
                    result.latency_us.saturating_record(latency.as_micros().max(1) as u64);
                    result.transfers_ok += 1;
                }
                Err(error) => {
                    result.errors += 1;
                    if result.errors <= 3 {
                        eprintln!("loadgen: quote failed: {error}");
                    }
                }
            }
            continue;
        }
        let transfers: Vec<pb::Transfer> = (0..mode.batch()).map(|_| book.transfer(&mut rng)).collect();
        let sent = Instant::now();
        let response = client.create_transfers(transfers).await;
        let latency = sent.elapsed();
        result.requests += 1;
        match response {
            Ok(results) => {
                result.latency_us.saturating_record(latency.as_micros().max(1) as u64);
                let ok = results.iter().filter(|r| r.code == "OK").count() as u64;
                result.transfers_ok += ok;
                result.refused += results.len() as u64 - ok;
            }
            Err(error) => {
                result.errors += 1;
                if result.errors <= 3 {
                    eprintln!("loadgen: request failed: {error}");
                }
            }
        }
    }
    result
}

struct Limits {
    duration: Duration,
    max_requests: u64,
}

async fn run(
    addr: &str,
    book: &Arc<Book>,
    ledger: &Ledger,
    mode: Mode,
    clients: usize,
    limits: &Limits,
) -> RunResult {
    if mode == Mode::Quote {
        // A fresh rate for every run (quotes refuse rates older than 60 s).
        let mut client = connect(addr).await;
        client.set_rate("USD", "MXN", "18.9125", "loadgen").await.expect("set rate");
    }
    // Every client has its own connection, opened before the clock starts.
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(connect(addr).await);
    }
    let commits_before = ledger.stats().commits.load(Ordering::Relaxed);
    let events_before = ledger.stats().events.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + limits.duration;
    let handles: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1) ^ mode.batch() as u64;
            tokio::spawn(run_client(client, book.clone(), mode, deadline, limits.max_requests, seed))
        })
        .collect();
    let mut latency_us = Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let (mut requests, mut transfers_ok, mut refused, mut errors) = (0, 0, 0, 0);
    for handle in handles {
        let r = handle.await.expect("client task");
        latency_us.add(&r.latency_us).expect("merge histograms");
        requests += r.requests;
        transfers_ok += r.transfers_ok;
        refused += r.refused;
        errors += r.errors;
    }
    let elapsed = started.elapsed();
    RunResult {
        mode,
        clients,
        elapsed,
        requests,
        transfers_ok,
        refused,
        errors,
        latency_us,
        commits: ledger.stats().commits.load(Ordering::Relaxed) - commits_before,
        events: ledger.stats().events.load(Ordering::Relaxed) - events_before,
    }
}

/// Opens the wallets and treasuries over gRPC and funds every wallet.
async fn open_accounts(addr: &str, wallets_per_currency: usize) -> Book {
    let mut client = connect(addr).await;
    // Operators open accounts only for registered participants.
    for participant in std::iter::once("treasury".to_owned()).chain((0..8).map(|i| format!("fintech-{i}"))) {
        client
            .create_participant(&participant, &participant, pb::Role::Participant)
            .await
            .expect("participant");
    }
    let mut wallets: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut accounts = Vec::new();
    let mut treasuries = Vec::new();
    for (c, currency) in CURRENCIES.iter().enumerate() {
        let treasury = uuid((1 << 64) + c as u128);
        accounts.push(pb::Account {
            id: treasury.clone(),
            participant: "treasury".into(),
            currency_code: (*currency).into(),
            holder_ref: format!("treasury-{currency}"),
            ..Default::default()
        });
        treasuries.push(treasury);
        for i in 0..wallets_per_currency {
            let id = uuid((2 << 64) + (c * wallets_per_currency + i) as u128);
            accounts.push(pb::Account {
                id: id.clone(),
                participant: format!("fintech-{}", i % 8),
                currency_code: (*currency).into(),
                debits_must_not_exceed_credits: true,
                holder_ref: format!("wallet-{c}-{i}"),
                ..Default::default()
            });
            wallets[c].push(id);
        }
    }
    for chunk in accounts.chunks(8_000) {
        let results = client.create_accounts(chunk.to_vec()).await.expect("create_accounts");
        assert!(results.iter().all(|r| r.code == "OK"), "account set-up failed");
    }
    let mut funding = Vec::new();
    for (c, currency) in CURRENCIES.iter().enumerate() {
        for wallet in &wallets[c] {
            funding.push(pb::Transfer {
                id: uuid(TRANSFER_ID_BASE - 1 - funding.len() as u128),
                debit_account_id: treasuries[c].clone(),
                credit_account_id: wallet.clone(),
                amount: Some(pb::Money { currency_code: (*currency).into(), value: "10000000.00".into() }),
                kind: pb::TransferKind::SinglePhase as i32,
                reference: "funding".into(),
                ..Default::default()
            });
        }
    }
    for chunk in funding.chunks(8_000) {
        let results = client.create_transfers(chunk.to_vec()).await.expect("fund");
        assert!(results.iter().all(|r| r.code == "OK"), "funding failed");
    }
    Book {
        wallets,
        amounts: (1..100).map(|cents| format!("0.{cents:02}")).collect(),
        next_id: AtomicU64::new(0),
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

fn print_table(results: &[RunResult]) {
    println!();
    println!(
        "| mode   | clients | transfers/req | requests | transfers ok | secs | transfers/s | p50 ms | p99 ms | max ms | events/commit | refused | errors |"
    );
    println!(
        "|--------|--------:|--------------:|---------:|-------------:|-----:|------------:|-------:|-------:|-------:|--------------:|--------:|-------:|"
    );
    for r in results {
        println!(
            "| {:<6} | {:>7} | {:>13} | {:>8} | {:>12} | {:>4.1} | {:>11.0} | {:>6.2} | {:>6.2} | {:>6.1} | {:>13.1} | {:>7} | {:>6} |",
            r.mode.name(),
            r.clients,
            r.mode.batch(),
            r.requests,
            r.transfers_ok,
            r.elapsed.as_secs_f64(),
            r.transfers_per_sec(),
            ms(r.latency_us.value_at_quantile(0.50)),
            ms(r.latency_us.value_at_quantile(0.99)),
            ms(r.latency_us.max()),
            r.events as f64 / r.commits.max(1) as f64,
            r.refused,
            r.errors,
        );
    }
}

fn main() {
    common::allocator::set_options();
    let args = Args::parse();
    let args = if args.bench { args } else { args.smoke() };
    assert!(args.duration > 0.0 && args.duration <= 600.0, "--duration must be in (0, 600] seconds");
    assert!(args.wallets >= 2, "--wallets must be at least 2");
    let mut modes = Vec::new();
    for mode in &args.modes {
        match mode.as_str() {
            "single" => modes.push(Mode::Single),
            "batch" => modes.extend(args.batch_sizes.iter().map(|n| Mode::Batch(*n))),
            "quote" => modes.push(Mode::Quote),
            other => panic!("unknown mode {other:?} (single, batch, quote)"),
        }
    }
    std::fs::create_dir_all(&args.dir).expect("bench dir");
    match require_real_disk(&args.dir) {
        Ok(filesystem) => eprintln!("loadgen: data under {} ({filesystem})", args.dir.display()),
        Err(refused) => panic!("{refused} (pass --dir)"),
    }
    let dir = tempfile::Builder::new().prefix("puente-loadgen-").tempdir_in(&args.dir).expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let results = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let mut config = LedgerConfig::new(dir.path());
        if let Some(url) = &args.journal_url {
            let replication = puente_server::replication::ReplicationConfig {
                url: url.clone(),
                node: Some("loadgen".into()),
                advertise: None,
                lease_ms: puente_server::replication::LEASE_MS_DEFAULT,
            };
            let store = puente_server::replication::PgRecordStore::connect(&replication, &addr)
                .await
                .expect("connect to the journal of record");
            config.record_store = Some(Arc::new(store));
        }
        let ledger = Ledger::open(config).expect("open the ledger");
        if args.journal_url.is_some() {
            let role = ledger.role_settled(Duration::from_secs(10)).await;
            assert_eq!(role, puente_ledger::replica::Role::Leader, "loadgen's node must lead (an empty database?)");
            eprintln!("loadgen: the journal of record is in PostgreSQL; this node leads");
        }
        let (stop, stopped) = oneshot::channel::<()>();
        // One participant quotes here far faster than any should: lift its own quote cap (the
        // store's overall cap still holds).
        let fx = puente_server::fx_desk::FxConfig {
            quote_limits: puente_server::fx_desk::QuoteLimits {
                per_participant_max: puente_server::fx_desk::QUOTES_STORED_MAX,
                ..Default::default()
            },
            ..Default::default()
        };
        let desk = puente_server::fx_desk::FxDesk::open(ledger.clone(), dir.path(), fx)
            .await
            .expect("open the FX desk");
        // Limits far above what this machine can send: the benchmark measures the server.
        let limits = puente_server::auth::LimitsConfig {
            requests_per_second: 10_000_000,
            burst: 10_000_000,
            concurrent_requests: 1_000_000,
            events_per_second: puente_server::auth::RATE_PER_SECOND_MAX,
            burst_events: u32::MAX,
            concurrent_events: u32::MAX,
            bytes_per_second: puente_server::auth::RATE_PER_SECOND_MAX,
            burst_bytes: u32::MAX,
            concurrent_bytes: u32::MAX,
        };
        let extras = puente_server::Extras { fx: Some(Arc::new(desk)), limits, ..Default::default() };
        let server = tokio::spawn(puente_server::serve_with(ledger.clone(), extras, listener, async {
            let _ = stopped.await;
        }));
        let (_, key) = Client::connect(&addr)
            .await
            .expect("connect")
            .bootstrap_operator("loadgen", "load generator")
            .await
            .expect("bootstrap the operator");
        let _ = OPERATOR_KEY.set(key.key);
        eprintln!("loadgen: server on {addr}; opening {} wallets", args.wallets * 2);
        let setup = Instant::now();
        let book = Arc::new(open_accounts(&addr, args.wallets).await);
        eprintln!("loadgen: accounts opened and funded in {:.1?}", setup.elapsed());
        // Warm-up: connections, allocator, sled caches.
        let warmup = Limits { duration: Duration::from_secs(1), max_requests: u64::MAX };
        run(&addr, &book, &ledger, Mode::Batch(1_000), 4, &warmup).await;
        let limits = Limits { duration: Duration::from_secs_f64(args.duration), max_requests: args.max_requests };
        let mut results = Vec::new();
        for mode in &modes {
            for clients in &args.clients {
                if clients * mode.batch() > args.max_in_flight {
                    eprintln!(
                        "loadgen: skipping {} x{clients} clients x{}/req: over --max-in-flight {}",
                        mode.name(),
                        mode.batch(),
                        args.max_in_flight
                    );
                    continue;
                }
                let r = run(&addr, &book, &ledger, *mode, *clients, &limits).await;
                eprintln!(
                    "loadgen: {} x{} clients x{}/req: {:.0} transfers/s, p50 {:.2} ms, p99 {:.2} ms ({} commits, {:.1} events/commit)",
                    mode.name(),
                    clients,
                    mode.batch(),
                    r.transfers_per_sec(),
                    ms(r.latency_us.value_at_quantile(0.5)),
                    ms(r.latency_us.value_at_quantile(0.99)),
                    r.commits,
                    r.events as f64 / r.commits.max(1) as f64,
                );
                results.push(r);
            }
        }
        let _ = stop.send(());
        match tokio::time::timeout(Duration::from_secs(30), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("loadgen: server error: {error}"),
            Ok(Err(error)) => eprintln!("loadgen: server task failed: {error}"),
            Err(_) => eprintln!("loadgen: server did not stop within 30 s"),
        }
        results
    });
    print_table(&results);
    drop(runtime);
}

/// The operator key the load generator bootstrapped (every client uses it).
static OPERATOR_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A client with the operator's key.
async fn connect(addr: &str) -> Client {
    let key = OPERATOR_KEY.get().expect("bootstrapped");
    Client::connect_with(addr, &puente_client::ConnectOptions::api_key(key)).await.expect("connect")
}
