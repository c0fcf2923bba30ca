//! Durable in-process throughput of the ledger: `Ledger::create_transfers` with a real journal
//! (append + fdatasync per group commit) and the sled index, on the real disk.
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-bench cargo bench --bench ledger -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! The data directory is created under `$PUENTE_BENCH_DIR` (default `/var/tmp`); the bench
//! refuses to run on tmpfs/ramfs, where fdatasync costs nothing.
//!
//! Set-up: 10,000 no-overdraft wallets (5,000 USD, 5,000 MXN) plus one unrestricted treasury
//! per currency, every wallet funded first. Each measured transfer moves 0.01-0.99 between two
//! random wallets of one currency, with a unique id.
//!
//! Groups:
//! - `durable_transfers/one_submitter/N`: one caller awaiting batches of N (1, 100, 1,000,
//!   8,000); each call waits for its own fdatasync.
//! - `durable_transfers/concurrent/T_x_N`: T callers (tasks) each awaiting batches of N at the
//!   same time: the writer's group commit folds them into one journal append + fdatasync.

/// The same allocator as the `puente` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;
use common::disk::require_real_disk;
use common::workload::{FUNDING_MINOR, Rng, TRANSFER_BASE, TREASURY_BASE, WALLET_BASE, transfer_id};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use puente_ledger::{
    AccountFlags, AccountId, Actor, Ledger, LedgerConfig, Metadata, NewAccount, Transfer, TransferFlags,
    TransferResult,
};
use puente_money::CurrencyCode;
use tokio::runtime::Runtime;

const WALLETS_PER_CURRENCY: u128 = 5_000;
const CURRENCIES: [CurrencyCode; 2] = [CurrencyCode::USD, CurrencyCode::MXN];

/// Wallet `index` of currency `currency` (ids from `common::workload`).
fn wallet(currency: usize, index: u128) -> AccountId {
    WALLET_BASE + currency as u128 * WALLETS_PER_CURRENCY + index
}

struct Fixture {
    runtime: Runtime,
    ledger: Ledger,
    next_id: AtomicU64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn transfer(&self, rng: &mut Rng) -> Transfer {
        let currency = (rng.next() % 2) as usize;
        let from = (rng.next() % WALLETS_PER_CURRENCY as u64) as u128;
        let mut to = (rng.next() % WALLETS_PER_CURRENCY as u64) as u128;
        if to == from {
            to = (to + 1) % WALLETS_PER_CURRENCY;
        }
        Transfer {
            id: transfer_id(self.next_id.fetch_add(1, Ordering::Relaxed)),
            debit_account_id: wallet(currency, from),
            credit_account_id: wallet(currency, to),
            amount_minor: 1 + rng.next() % 99,
            currency: CURRENCIES[currency],
            flags: TransferFlags::default(),
            pending_id: 0,
            timeout_ms: 0,
            reference: String::new(),
            metadata: Metadata::new(),
        }
    }

    fn batch(&self, rng: &mut Rng, size: usize) -> Vec<Transfer> {
        (0..size).map(|_| self.transfer(rng)).collect()
    }
}

async fn submit(ledger: &Ledger, batch: Vec<Transfer>) {
    let outcomes = ledger.create_transfers(Actor::system("bench"), batch).await.expect("create_transfers");
    if let Some(bad) = outcomes.iter().find(|o| o.result != TransferResult::Ok) {
        panic!("a benchmark transfer was refused: {bad:?}");
    }
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("PUENTE_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| "/var/tmp".into());
    std::fs::create_dir_all(&base).expect("bench dir");
    match require_real_disk(&base) {
        Ok(filesystem) => eprintln!("ledger bench: data under {} ({filesystem})", base.display()),
        Err(refused) => panic!("{refused} (set PUENTE_BENCH_DIR)"),
    }
    base
}

fn setup() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir =
        tempfile::Builder::new().prefix("puente-ledger-bench-").tempdir_in(bench_dir()).expect("tempdir");
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).expect("open the ledger");
    let started = Instant::now();
    runtime.block_on(async {
        let mut accounts = Vec::new();
        for (c, currency) in CURRENCIES.iter().enumerate() {
            accounts.push(NewAccount {
                id: TREASURY_BASE + c as u128,
                participant: "puente-treasury".into(),
                currency: *currency,
                flags: AccountFlags::default(),
                overdraft_limit_minor: 0,
                holder_ref: format!("treasury-{}", currency.as_str()),
                metadata: Metadata::new(),
            });
            for i in 0..WALLETS_PER_CURRENCY {
                accounts.push(NewAccount {
                    id: wallet(c, i),
                    participant: format!("fintech-{}", i % 8),
                    currency: *currency,
                    flags: AccountFlags {
                        debits_must_not_exceed_credits: true,
                        credits_must_not_exceed_debits: false,
                    },
                    overdraft_limit_minor: 0,
                    holder_ref: format!("wallet-{c}-{i}"),
                    metadata: Metadata::new(),
                });
            }
        }
        for chunk in accounts.chunks(8_000) {
            let outcomes = ledger
                .create_accounts(Actor::system("bench"), chunk.to_vec())
                .await
                .expect("create_accounts");
            assert!(outcomes.iter().all(|o| o.result.is_ok()), "account set-up failed");
        }
        let mut funding = Vec::new();
        for (c, currency) in CURRENCIES.iter().enumerate() {
            for i in 0..WALLETS_PER_CURRENCY {
                funding.push(Transfer {
                    id: TRANSFER_BASE - 1 - funding.len() as u128,
                    debit_account_id: TREASURY_BASE + c as u128,
                    credit_account_id: wallet(c, i),
                    amount_minor: FUNDING_MINOR,
                    currency: *currency,
                    flags: TransferFlags::default(),
                    pending_id: 0,
                    timeout_ms: 0,
                    reference: "funding".into(),
                    metadata: Metadata::new(),
                });
            }
        }
        for chunk in funding.chunks(8_000) {
            submit(&ledger, chunk.to_vec()).await;
        }
    });
    eprintln!(
        "ledger bench: {} wallets across {} currencies opened and funded in {:?}",
        WALLETS_PER_CURRENCY * 2,
        CURRENCIES.len(),
        started.elapsed()
    );
    Fixture { runtime, ledger, next_id: AtomicU64::new(0), _dir: dir }
}

/// Writer counters between two points: group commits, events and the mean group size.
struct StatsMark {
    commits: u64,
    events: u64,
}

impl StatsMark {
    fn take(ledger: &Ledger) -> StatsMark {
        let stats = ledger.stats();
        StatsMark {
            commits: stats.commits.load(Ordering::Relaxed),
            events: stats.events.load(Ordering::Relaxed),
        }
    }

    fn report(&self, ledger: &Ledger, label: &str) {
        let now = StatsMark::take(ledger);
        let commits = now.commits - self.commits;
        let events = now.events - self.events;
        let stats = ledger.stats();
        eprintln!(
            "  [{label}] writer: {commits} group commits, {events} events, {:.1} events/commit, \
             last fdatasync+append {} us, journal {} MiB",
            events as f64 / commits.max(1) as f64,
            stats.last_flush_us.load(Ordering::Relaxed),
            stats.journal_bytes.load(Ordering::Relaxed) >> 20,
        );
    }
}

fn one_submitter(c: &mut Criterion, fixture: &Arc<Fixture>) {
    let mut group = c.benchmark_group("durable_transfers/one_submitter");
    group.sample_size(10);
    for size in [1usize, 100, 1_000, 8_000] {
        group.throughput(Throughput::Elements(size as u64));
        let mark = StatsMark::take(&fixture.ledger);
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ size as u64);
            b.iter_custom(|iters| {
                // Requests are built before the clock starts.
                let batches: Vec<Vec<Transfer>> = (0..iters).map(|_| fixture.batch(&mut rng, size)).collect();
                let ledger = &fixture.ledger;
                fixture.runtime.block_on(async {
                    let started = Instant::now();
                    for batch in batches {
                        submit(ledger, batch).await;
                    }
                    started.elapsed()
                })
            });
        });
        mark.report(&fixture.ledger, &format!("one_submitter/{size}"));
    }
    group.finish();
}

fn concurrent(c: &mut Criterion, fixture: &Arc<Fixture>) {
    let mut group = c.benchmark_group("durable_transfers/concurrent");
    group.sample_size(10);
    // (tasks, batch size): many single-transfer callers show group commit; a few large-batch
    // callers keep the writer busy while each one waits for its fdatasync.
    for (tasks, size) in [(64usize, 1usize), (4, 8_000)] {
        // One criterion "iteration" is one round in which every task submits one batch.
        group.throughput(Throughput::Elements((tasks * size) as u64));
        let mark = StatsMark::take(&fixture.ledger);
        let id = format!("{tasks}_tasks_x_{size}");
        group.bench_function(BenchmarkId::from_parameter(&id), |b| {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (tasks * size) as u64);
            b.iter_custom(|iters| {
                let per_task: Vec<Vec<Vec<Transfer>>> =
                    (0..tasks).map(|_| (0..iters).map(|_| fixture.batch(&mut rng, size)).collect()).collect();
                let ledger = fixture.ledger.clone();
                fixture.runtime.block_on(async move {
                    let started = Instant::now();
                    let handles: Vec<_> = per_task
                        .into_iter()
                        .map(|batches| {
                            let ledger = ledger.clone();
                            tokio::spawn(async move {
                                for batch in batches {
                                    submit(&ledger, batch).await;
                                }
                            })
                        })
                        .collect();
                    for handle in handles {
                        handle.await.expect("submitter task");
                    }
                    started.elapsed()
                })
            });
        });
        mark.report(&fixture.ledger, &id);
    }
    group.finish();
}

fn main() {
    common::allocator::set_options();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let fixture = Arc::new(setup());
    one_submitter(&mut criterion, &fixture);
    concurrent(&mut criterion, &fixture);
    criterion.final_summary();
    let stats = fixture.ledger.stats();
    eprintln!(
        "ledger bench: total {} group commits, {} events, on-disk {} MiB",
        stats.commits.load(Ordering::Relaxed),
        stats.events.load(Ordering::Relaxed),
        fixture.ledger.size_on_disk() >> 20
    );
}
