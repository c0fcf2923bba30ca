//! Crash safety: the real server is killed with SIGKILL at random moments while clients post
//! transfers concurrently; after each restart every acknowledged transfer is present exactly
//! once and every invariant holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use puente_client::{NewTransfer, pb};

use crate::support::{Server, accounts, all_accounts, all_lines, minor, temp_dir};

const CYCLES: usize = 5;
const CLIENT_TASKS: usize = 8;
const WALLETS: usize = 6;
const BATCH_MAX: u64 = 16;

/// A tiny deterministic generator (xorshift64*): the seed is printed for replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Ledgerbook {
    /// Every transfer ever sent: id -> (wallet index, amount in minor units, the request).
    attempted: HashMap<String, (usize, i128, pb::Transfer)>,
    /// Ids the server acknowledged with OK.
    acked: HashSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_transfer() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    crash_cycles(&data, &[], false).await;
}

/// The same with the journal of record in PostgreSQL (`--journal-url`): the node restarts as
/// leader again, and every other restart it starts from an empty data directory, rebuilt from
/// the journal of record alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_with_the_journal_in_postgresql() {
    let cluster = puente_journal_pg::testing::Cluster::start();
    let url = cluster.create_database("crash").await;
    let dir = temp_dir();
    let data = dir.path().join("data");
    crash_cycles(&data, &["--journal-url", &url, "--node-id", "n1", "--lease-ms", "1000"], true).await;
}

/// SIGKILLs the server `CYCLES` times under concurrent writers, restarting it with `args`
/// (and, when `wipe_every_other`, over an emptied data directory every other time), and
/// checks after each restart that nothing acknowledged was lost or applied twice.
async fn crash_cycles(data: &std::path::Path, args: &[&str], wipe_every_other: bool) {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let start = |data: &std::path::Path| {
        Server::try_start(data, args).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    };
    let mut server = start(data);
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", WALLETS).await;
    let book = Arc::new(Mutex::new(Ledgerbook::default()));

    for cycle in 0..CYCLES {
        let mut tasks = Vec::new();
        for task in 0..CLIENT_TASKS {
            let mut client = server.client().await;
            let book = book.clone();
            let source = source.clone();
            let wallets = wallets.clone();
            let mut rng = Rng(seed ^ ((cycle * 100 + task + 1) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            tasks.push(tokio::spawn(async move {
                loop {
                    let size = 1 + rng.below(BATCH_MAX);
                    let mut batch = Vec::new();
                    {
                        let mut book = book.lock().unwrap();
                        for _ in 0..size {
                            let wallet = rng.below(WALLETS as u64) as usize;
                            let cents = 1 + rng.below(10_000);
                            let amount = format!("{}.{:02}", cents / 100, cents % 100);
                            let t = NewTransfer::new(&source, &wallets[wallet], "USD", &amount).0;
                            book.attempted.insert(t.id.clone(), (wallet, cents as i128, t.clone()));
                            batch.push(t);
                        }
                    }
                    let Ok(results) = client.create_transfers(batch.clone()).await else {
                        return; // the server is gone
                    };
                    let mut book = book.lock().unwrap();
                    for (t, r) in batch.iter().zip(results) {
                        assert_eq!(r.code, "OK", "the source account has no limits");
                        book.acked.insert(t.id.clone());
                    }
                }
            }));
        }
        let kill_after_ms = 40 + rng.below(400);
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.kill();
        for task in tasks {
            task.await.unwrap();
        }
        let acked = book.lock().unwrap().acked.len();
        println!("cycle {cycle}: killed after {kill_after_ms} ms, {acked} transfers acknowledged so far");
        assert!(acked > 0 || cycle > 0, "no load reached the server");

        // Restart: recovery checks the invariants itself and refuses a corrupt store.
        if wipe_every_other && cycle % 2 == 1 {
            std::fs::remove_dir_all(data).unwrap();
        }
        server = start(data);
        let mut client = server.client().await;
        verify(&mut client, &source, &wallets, &book).await;
    }
}

/// Every acknowledged transfer is there exactly once; unacknowledged ones at most once; each
/// wallet's balance is the sum of its entries; debits equal credits; retries of
/// unacknowledged transfers commit them exactly once.
async fn verify(
    client: &mut puente_client::Client,
    source: &str,
    wallets: &[String],
    book: &Arc<Mutex<Ledgerbook>>,
) {
    let (attempted, acked) = {
        let book = book.lock().unwrap();
        (book.attempted.clone(), book.acked.clone())
    };
    let mut committed = HashSet::new();
    for (index, wallet) in wallets.iter().enumerate() {
        let lines = all_lines(client, wallet).await;
        let mut seen = HashSet::new();
        let mut sum = 0i128;
        for line in &lines {
            assert!(seen.insert(line.transfer_id.clone()), "transfer {} applied twice", line.transfer_id);
            let (expected_wallet, cents, _) = attempted
                .get(&line.transfer_id)
                .unwrap_or_else(|| panic!("unknown transfer {}", line.transfer_id));
            assert_eq!(*expected_wallet, index);
            let amount = minor(&line.amount.as_ref().unwrap().value);
            assert_eq!(amount, *cents);
            sum += amount;
            assert_eq!(minor(&line.posted_balance), sum, "running balance");
            committed.insert(line.transfer_id.clone());
        }
        let account = client.get_account(wallet).await.unwrap();
        assert_eq!(minor(&account.posted_balance), sum, "balance equals the sum of its entries");
    }
    for id in &acked {
        assert!(committed.contains(id), "acknowledged transfer {id} was lost");
    }
    let total: i128 = all_accounts(client).await.iter().map(|a| minor(&a.posted_balance)).sum();
    assert_eq!(total, 0, "debits equal credits");
    let source_balance = minor(&client.get_account(source).await.unwrap().posted_balance);
    let committed_sum: i128 = committed.iter().map(|id| attempted[id].1).sum();
    assert_eq!(source_balance, -committed_sum);

    // Retry everything that was never acknowledged: each commits exactly once.
    let pending: Vec<_> =
        attempted.iter().filter(|(id, _)| !acked.contains(*id)).map(|(_, (_, _, t))| t.clone()).collect();
    for chunk in pending.chunks(1_000) {
        let results = client.create_transfers(chunk.to_vec()).await.unwrap();
        let mut book = book.lock().unwrap();
        for (t, r) in chunk.iter().zip(results) {
            assert_eq!(r.code, "OK");
            assert_eq!(r.replayed, committed.contains(&t.id), "retry of {} after the crash", t.id);
            book.acked.insert(t.id.clone());
        }
    }
}
