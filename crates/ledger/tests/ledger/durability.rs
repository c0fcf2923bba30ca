//! `Ledger::open` against a real directory: reopen, torn tails, corruption, index rebuilds,
//! expiry by the writer, concurrency, batch limits, the feed.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use puente_ledger::journal::{CHAIN_GENESIS, SEGMENT_HEADER_BYTES, chain_hash, copy_journal, segment_path};
use puente_ledger::ledger::INDEX_QUEUE_GROUPS;
use puente_ledger::*;
use puente_money::CurrencyCode;

const USD: CurrencyCode = CurrencyCode::USD;
const MXN: CurrencyCode = CurrencyCode::MXN;

fn account(id: AccountId, currency: CurrencyCode, debit_limited: bool) -> NewAccount {
    NewAccount {
        id,
        participant: "bank-a".into(),
        currency,
        flags: AccountFlags {
            debits_must_not_exceed_credits: debit_limited,
            credits_must_not_exceed_debits: false,
        },
        overdraft_limit_minor: 0,
        holder_ref: format!("holder-{id}"),
        metadata: Metadata::new(),
    }
}

fn transfer(id: TransferId, debit: AccountId, credit: AccountId, amount: u64) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount_minor: amount,
        currency: USD,
        flags: TransferFlags::default(),
        pending_id: 0,
        timeout_ms: 0,
        reference: String::new(),
        metadata: Metadata::new(),
    }
}

fn pending(id: TransferId, debit: AccountId, credit: AccountId, amount: u64, timeout_ms: u64) -> Transfer {
    let mut t = transfer(id, debit, credit, amount);
    t.flags.pending = true;
    t.timeout_ms = timeout_ms;
    t
}

fn post(id: TransferId, pending_id: TransferId, amount: u64) -> Transfer {
    let mut t = transfer(id, 0, 0, amount);
    t.flags.post_pending = true;
    t.pending_id = pending_id;
    t
}

/// Opens the ledger, retrying only while the previous instance's writer still holds the sled
/// lock (it releases it when its thread ends, shortly after the last handle is dropped).
fn open_config(config: LedgerConfig) -> Result<Ledger, LedgerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Ledger::open(config.clone()) {
            Err(LedgerError::Corrupt(message)) if message.contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn open(dir: &Path) -> Result<Ledger, LedgerError> {
    open_config(LedgerConfig::new(dir))
}

fn open_rebuilding(dir: &Path) -> Result<Ledger, LedgerError> {
    let mut config = LedgerConfig::new(dir);
    config.rebuild_index = true;
    open_config(config)
}

/// Opens, then waits for the background check of the journal before the snapshot the start
/// resumed from: damage anywhere in the journal is an error, found either by the start or by
/// that check (which then stops all writes).
async fn open_checked(dir: &Path) -> Result<Ledger, LedgerError> {
    let ledger = open(dir)?;
    match ledger.history_verified().await {
        Ok(()) => Ok(ledger),
        Err(error) => {
            assert!(!ledger.is_healthy(), "a ledger with a broken history still takes writes");
            let refused = ledger.create_accounts(Actor::system("tests"), vec![account(99, USD, false)]).await;
            assert!(matches!(refused, Err(LedgerError::Unavailable(_))), "{refused:?}");
            close(ledger, dir);
            Err(error)
        }
    }
}

/// Drops the ledger and waits (bounded) until its writer released the sled index.
fn close(ledger: Ledger, dir: &Path) {
    drop(ledger);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::Config::new().path(dir.join("index").join("sled")).open() {
            Ok(db) => {
                drop(db);
                return;
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "the writer never released the index: {error}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn all_accounts(ledger: &Ledger) -> BTreeMap<AccountId, Account> {
    ledger.list_accounts(None, 0, PAGE_SIZE_MAX).unwrap().into_iter().map(|a| (a.id, a)).collect()
}

async fn ok_accounts(ledger: &Ledger, batch: Vec<NewAccount>) {
    let outcomes = ledger.create_accounts(Actor::system("tests"), batch).await.unwrap();
    assert!(outcomes.iter().all(|o| o.result.is_ok()), "{outcomes:?}");
}

async fn transfers(ledger: &Ledger, batch: Vec<Transfer>) -> Vec<TransferOutcome> {
    ledger.create_transfers(Actor::system("tests"), batch).await.unwrap()
}

async fn ok_transfers(ledger: &Ledger, batch: Vec<Transfer>) -> Vec<TransferOutcome> {
    let outcomes = transfers(ledger, batch).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok() && !o.replayed), "{outcomes:?}");
    outcomes
}

/// Three accounts (1 funding, 2 wallet with a debit limit, 3 another wallet) and a few
/// transfers, each `create_transfers` call its own journal record.
async fn populate(ledger: &Ledger) {
    ok_accounts(ledger, vec![account(1, USD, false), account(2, USD, true), account(3, USD, true)]).await;
    ok_accounts(ledger, vec![account(4, MXN, false)]).await;
    ok_transfers(ledger, vec![transfer(10, 1, 2, 1_000)]).await;
    ok_transfers(ledger, vec![pending(11, 2, 3, 300, 0)]).await;
    ok_transfers(ledger, vec![post(12, 11, 200)]).await;
    ok_transfers(ledger, vec![transfer(13, 2, 3, 50)]).await;
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// A journal record's header: length, CRC-32, chain hash.
const RECORD_HEADER: usize = 4 + 4 + 32;

/// Byte offsets where each record of a journal segment starts (after its header).
fn record_offsets(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + RECORD_HEADER <= bytes.len() {
        offsets.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += RECORD_HEADER + len;
    }
    assert_eq!(at, bytes.len(), "the journal does not parse into whole records");
    offsets
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    let before = all_accounts(&ledger);
    assert_eq!(before[&2].credits_posted_minor, 1_000);
    assert_eq!(before[&2].debits_posted_minor, 250);
    assert_eq!(before[&2].debits_pending_minor, 0);
    assert_eq!(before[&3].credits_posted_minor, 250);
    let prior = ledger.get_transfer(12, "tests").await.unwrap();
    let entries = ledger.account_entries(2, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap();
    let feed = ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap();
    close(ledger, dir.path());

    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().journal_entries, 6);
    assert_eq!(ledger.recovery().accounts, 4);
    assert_eq!(ledger.recovery().truncated_tail_bytes, 0);
    assert_eq!(all_accounts(&ledger), before);
    assert_eq!(ledger.get_transfer(12, "tests").await.unwrap(), prior);
    assert_eq!(ledger.account_entries(2, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap(), entries);
    assert_eq!(ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap(), feed);

    // Idempotency survives the restart: a retry is replayed with its first timestamp, the
    // pending transfer stays posted, and new timestamps come after the old ones.
    let first = feed.iter().find(|r| r.transfer.id == 10).unwrap().timestamp_ns;
    let retry = transfers(&ledger, vec![transfer(10, 1, 2, 1_000)]).await;
    assert_eq!(
        (retry[0].result, retry[0].replayed, retry[0].timestamp_ns),
        (TransferResult::Ok, true, first)
    );
    let again = transfers(&ledger, vec![post(14, 11, 0)]).await;
    assert_eq!(again[0].result, TransferResult::PendingTransferAlreadyPosted);
    let new = ok_transfers(&ledger, vec![transfer(15, 1, 3, 5)]).await;
    assert!(new[0].timestamp_ns > feed.last().unwrap().timestamp_ns);
    close(ledger, dir.path());
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.get_account(3).unwrap().unwrap().credits_posted_minor, 255);
    let failed = ledger.get_transfer(14, "tests").await.unwrap();
    assert!(
        matches!(&failed, Some(Prior::Failed(f)) if f.result == TransferResult::PendingTransferAlreadyPosted),
        "{failed:?}"
    );
}

#[tokio::test]
async fn torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let journal = segment_path(dir.path(), 1);
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    let before = all_accounts(&ledger);
    close(ledger, dir.path());

    // Garbage after the last record (a write that never completed).
    OpenOptions::new().append(true).open(&journal).unwrap().write_all(&[0xab; 13]).unwrap();
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().truncated_tail_bytes, 13);
    assert_eq!(all_accounts(&ledger), before);
    ok_transfers(&ledger, vec![transfer(20, 1, 2, 7)]).await;
    let before = all_accounts(&ledger);
    close(ledger, dir.path());

    // A copy of the last record, cut short: a torn append of a full-looking record.
    let bytes = std::fs::read(&journal).unwrap();
    let last = *record_offsets(&journal).last().unwrap() as usize;
    let torn = bytes[last..bytes.len() - 3].to_vec();
    OpenOptions::new().append(true).open(&journal).unwrap().write_all(&torn).unwrap();
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().truncated_tail_bytes, torn.len() as u64);
    assert_eq!(all_accounts(&ledger), before);
    // The journal is whole again and takes new records.
    ok_transfers(&ledger, vec![transfer(21, 1, 2, 8)]).await;
    close(ledger, dir.path());
    record_offsets(&journal);
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().truncated_tail_bytes, 0);
    assert_eq!(ledger.get_account(2).unwrap().unwrap().credits_posted_minor, 1_015);
}

#[tokio::test]
async fn truncated_last_record_loses_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let journal = segment_path(dir.path(), 1);
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    let before_last = all_accounts(&ledger);
    ok_transfers(&ledger, vec![transfer(30, 1, 2, 9)]).await;
    close(ledger, dir.path());

    let len = std::fs::metadata(&journal).unwrap().len();
    OpenOptions::new().write(true).open(&journal).unwrap().set_len(len - 3).unwrap();
    // The index applied the record the journal no longer has: that is lost acknowledged data,
    // and the ledger refuses to open.
    assert!(matches!(open(dir.path()), Err(LedgerError::Corrupt(_))));
    // The refused start left the journal as it was.
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), len - 3);
    // Rebuilding the index from the journal accepts the journal as it is: the torn record is
    // cut, everything before it survives.
    let ledger = open_rebuilding(dir.path()).unwrap();
    assert_eq!(ledger.recovery().journal_entries, 6);
    assert_eq!(all_accounts(&ledger), before_last);
    assert_eq!(ledger.get_transfer(30, "tests").await.unwrap(), None);
    assert!(ledger.get_transfer(13, "tests").await.unwrap().is_some());
}

#[tokio::test]
async fn flipped_byte_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let journal = segment_path(dir.path(), 1);
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    close(ledger, dir.path());
    let offsets = record_offsets(&journal);
    let pristine = std::fs::read(&journal).unwrap();

    // In the payload of the second record.
    flip_byte(&journal, offsets[1] + RECORD_HEADER as u64 + 20);
    assert!(matches!(open_checked(dir.path()).await, Err(LedgerError::Corrupt(_))));
    assert!(matches!(open_rebuilding(dir.path()), Err(LedgerError::Corrupt(_))));
    // Nothing was cut off.
    assert_eq!(std::fs::read(&journal).unwrap().len(), pristine.len());

    // In the checksum of the third record.
    std::fs::write(&journal, &pristine).unwrap();
    flip_byte(&journal, offsets[2] + 5);
    assert!(matches!(open_rebuilding(dir.path()), Err(LedgerError::Corrupt(_))));
    assert_eq!(std::fs::read(&journal).unwrap(), {
        let mut b = pristine.clone();
        b[offsets[2] as usize + 5] ^= 0x5a;
        b
    });

    // Restored, it opens again.
    std::fs::write(&journal, &pristine).unwrap();
    let ledger = open_rebuilding(dir.path()).unwrap();
    assert_eq!(ledger.recovery().journal_entries, offsets.len() as u64);
}

/// A damaged length field (the record then seems to end elsewhere) is corruption too, when
/// intact records follow; it must not be mistaken for a torn tail and cut off.
#[tokio::test]
async fn damaged_record_length_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let journal = segment_path(dir.path(), 1);
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    close(ledger, dir.path());
    let offsets = record_offsets(&journal);
    let pristine = std::fs::read(&journal).unwrap();

    for (offset, xor) in
        [(offsets[1], 0x01u8), (offsets[1], 0x80), (offsets[2] + 3, 0x10), (offsets[0] + 1, 0x04)]
    {
        let mut bytes = pristine.clone();
        bytes[offset as usize] ^= xor;
        std::fs::write(&journal, &bytes).unwrap();
        let opened = open_rebuilding(dir.path());
        assert!(
            matches!(opened, Err(LedgerError::Corrupt(_))),
            "length byte at {offset} ^ {xor:#x}: {:?}",
            opened.map(|l| l.recovery().clone())
        );
        assert_eq!(std::fs::read(&journal).unwrap(), bytes, "the journal was changed");
    }
}

#[tokio::test]
async fn missing_index_is_rebuilt_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    let before = all_accounts(&ledger);
    let feed = ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap();
    let entries = ledger.account_entries(3, 0, u64::MAX, true, None, PAGE_SIZE_MAX).await.unwrap();
    close(ledger, dir.path());

    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().replayed_into_index, ledger.recovery().journal_entries);
    assert_eq!(all_accounts(&ledger), before);
    assert_eq!(ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap(), feed);
    assert_eq!(ledger.account_entries(3, 0, u64::MAX, true, None, PAGE_SIZE_MAX).await.unwrap(), entries);
    assert_eq!(ledger.list_accounts(Some("bank-a"), 0, 10).unwrap().len(), 4);
    assert_eq!(ledger.list_accounts(Some("bank-a"), 2, 10).unwrap().len(), 2);
    assert!(ledger.list_accounts(Some("bank-b"), 0, 10).unwrap().is_empty());
}

/// Rolls the index's resume point back to the start of the journal (so that an open replays
/// every record into it again), after `edit` has changed its sled tree.
fn edit_index(dir: &Path, edit: impl FnOnce(&sled::Tree)) {
    let db = sled::Config::new().path(dir.join("index").join("sled")).open().unwrap();
    let tree = db.open_tree("index").unwrap();
    edit(&tree);
    tree.remove(b"m/resume").unwrap();
    tree.remove(b"m/persisted_seq").unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn index_disagreeing_with_the_journal_is_refused() {
    use puente_ledger::index::chunks::AccountChunk;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    let before = all_accounts(&ledger);
    let statement = ledger.account_entries(2, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap();
    close(ledger, dir.path());

    // Replaying every record into an index that already holds them changes nothing (applying
    // is idempotent), and its history still adds up to the journal's balances.
    edit_index(dir.path(), |_| {});
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().replayed_into_index, ledger.recovery().journal_entries);
    assert_eq!(all_accounts(&ledger), before);
    assert_eq!(ledger.account_entries(2, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap(), statement);
    close(ledger, dir.path());

    // Account 2's history in the index, edited: it no longer adds up to what the journal says.
    edit_index(dir.path(), |tree| {
        let mut prefix = vec![b'a'];
        prefix.extend_from_slice(&2u128.to_be_bytes());
        let (key, value) = tree.scan_prefix(&prefix).next().unwrap().unwrap();
        let first_ts = u64::from_be_bytes(key[17..25].try_into().unwrap());
        let mut chunk = AccountChunk::decode(first_ts, &value).unwrap();
        chunk.start[3] += 1_000_000;
        let mut bytes = Vec::new();
        chunk.encode(&mut bytes);
        tree.insert(key, bytes).unwrap();
    });
    let refused = open(dir.path());
    assert!(matches!(refused, Err(LedgerError::Corrupt(_))), "{:?}", refused.err());

    let ledger = open_rebuilding(dir.path()).unwrap();
    assert_eq!(all_accounts(&ledger), before);
    close(ledger, dir.path());
    // Repaired for good: a plain open works again.
    let ledger = open(dir.path()).unwrap();
    assert_eq!(all_accounts(&ledger), before);
    assert_eq!(ledger.account_entries(2, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap(), statement);
}

#[tokio::test]
async fn pending_transfers_expire_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    ok_accounts(&ledger, vec![account(1, USD, false), account(2, USD, false)]).await;
    ok_transfers(&ledger, vec![pending(40, 1, 2, 500, 200)]).await;
    ok_transfers(&ledger, vec![pending(41, 1, 2, 70, 0)]).await;
    let a = ledger.get_account(1).unwrap().unwrap();
    assert_eq!(a.debits_pending_minor, 570);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = ledger.get_account(1).unwrap().unwrap();
        if a.debits_pending_minor == 70 {
            break;
        }
        assert!(Instant::now() < deadline, "the pending transfer never expired: {a:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = ledger.get_account(2).unwrap().unwrap();
    assert_eq!((b.credits_pending_minor, b.credits_posted_minor), (70, 0));
    let entries = ledger.account_entries(1, 0, u64::MAX, true, None, 1).await.unwrap();
    assert_eq!(entries[0].0.kind, EntryKind::Expired);
    assert_eq!(entries[0].0.transfer_id, 40);
    let late = transfers(&ledger, vec![post(42, 40, 0)]).await;
    assert_eq!(late[0].result, TransferResult::PendingTransferExpired);
    assert_eq!(ledger.pending_state(40).await.unwrap(), Some(PendingState::Expired));
    assert_eq!(ledger.pending_state(41).await.unwrap(), Some(PendingState::Pending));
    ok_transfers(&ledger, vec![post(43, 41, 0)]).await;

    // The expiry is journaled: it survives a restart.
    close(ledger, dir.path());
    let ledger = open_rebuilding(dir.path()).unwrap();
    let a = ledger.get_account(1).unwrap().unwrap();
    assert_eq!((a.debits_pending_minor, a.debits_posted_minor), (0, 70));
    assert_eq!(ledger.pending_state(40).await.unwrap(), Some(PendingState::Expired));
    assert_eq!(ledger.pending_state(41).await.unwrap(), Some(PendingState::Posted));
    assert_eq!(ledger.pending_state(43).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_are_all_durable() {
    const TASKS: u128 = 24;
    const BATCHES: u128 = 10;
    const PER_BATCH: u128 = 4;
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    ok_accounts(&ledger, (1..=5).map(|id| account(id, USD, id != 1)).collect()).await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut timestamps = Vec::new();
            for batch in 0..BATCHES {
                let transfers: Vec<Transfer> = (0..PER_BATCH)
                    .map(|i| {
                        let id = 1_000 + (task * BATCHES + batch) * PER_BATCH + i;
                        transfer(id, 1, 2 + (id % 4), 1 + (id % 7) as u64)
                    })
                    .collect();
                let outcomes = ledger.create_transfers(Actor::system("tests"), transfers).await.unwrap();
                assert!(outcomes.iter().all(|o| o.result.is_ok() && !o.replayed), "{outcomes:?}");
                timestamps.extend(outcomes.iter().map(|o| o.timestamp_ns));
            }
            timestamps
        }));
    }
    let mut timestamps = Vec::new();
    for task in tasks {
        timestamps.extend(task.await.unwrap());
    }
    let count = (TASKS * BATCHES * PER_BATCH) as usize;
    timestamps.sort_unstable();
    timestamps.dedup();
    assert_eq!(timestamps.len(), count, "timestamps are unique");

    let expected_total: u64 = (0..TASKS * BATCHES * PER_BATCH).map(|n| 1 + ((1_000 + n) % 7) as u64).sum();
    let check = |ledger: &Ledger| {
        let accounts = all_accounts(ledger);
        assert_eq!(accounts[&1].debits_posted_minor, expected_total as u128);
        let credited: u128 = (2..=5).map(|id| accounts[&id].credits_posted_minor).sum();
        assert_eq!(credited, expected_total as u128);
        let mut per_account = [0u128; 6];
        for n in 0..TASKS * BATCHES * PER_BATCH {
            let id = 1_000 + n;
            per_account[(2 + id % 4) as usize] += 1 + (id % 7);
        }
        for id in 2..=5 {
            assert_eq!(accounts[&(id as u128)].credits_posted_minor, per_account[id]);
        }
    };
    check(&ledger);
    assert_eq!(ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap().len(), PAGE_SIZE_MAX.min(count));
    close(ledger, dir.path());
    let ledger = open(dir.path()).unwrap();
    check(&ledger);
    close(ledger, dir.path());
    let ledger = open_rebuilding(dir.path()).unwrap();
    check(&ledger);
}

#[tokio::test]
async fn batch_limits() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    assert!(matches!(
        ledger.create_accounts(Actor::system("tests"), vec![]).await,
        Err(LedgerError::InvalidBatch(_))
    ));
    assert!(matches!(
        ledger.create_transfers(Actor::system("tests"), vec![]).await,
        Err(LedgerError::InvalidBatch(_))
    ));
    let too_many_accounts: Vec<NewAccount> =
        (1..=BATCH_EVENTS_MAX as u128 + 1).map(|id| account(id, USD, false)).collect();
    assert!(matches!(
        ledger.create_accounts(Actor::system("tests"), too_many_accounts).await,
        Err(LedgerError::InvalidBatch(_))
    ));
    ok_accounts(&ledger, vec![account(1, USD, false), account(2, USD, false)]).await;
    let too_many: Vec<Transfer> =
        (1..=BATCH_EVENTS_MAX as u128 + 1).map(|id| transfer(id, 1, 2, 1)).collect();
    assert!(matches!(
        ledger.create_transfers(Actor::system("tests"), too_many.clone()).await,
        Err(LedgerError::InvalidBatch(_))
    ));
    // Nothing of the refused batch was committed.
    assert_eq!(ledger.get_account(1).unwrap().unwrap().debits_posted_minor, 0);
    // Exactly the limit is fine.
    let outcomes = ok_transfers(&ledger, too_many[..BATCH_EVENTS_MAX].to_vec()).await;
    assert_eq!(outcomes.len(), BATCH_EVENTS_MAX);
    assert_eq!(ledger.get_account(2).unwrap().unwrap().credits_posted_minor, BATCH_EVENTS_MAX as u128);
}

#[tokio::test]
async fn feed_is_in_timestamp_order() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    let mut feed = ledger.subscribe();
    ok_accounts(&ledger, vec![account(1, USD, false), account(2, USD, true), account(3, USD, false)]).await;
    let mut handles = Vec::new();
    for task in 0..8u128 {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let base = 100 + task * 10;
            let mut linked = transfer(base, 1, 2, 10);
            linked.flags.linked = true;
            // A chain that fails (account 2 has only 10 of credits), a pending transfer, its
            // post, a plain transfer.
            let mut overdraw = transfer(base + 1, 2, 3, 1_000);
            overdraw.flags.linked = true;
            let closing = transfer(base + 2, 3, 1, 1);
            let outcomes = ledger
                .create_transfers(Actor::system("tests"), vec![linked, overdraw, closing])
                .await
                .unwrap();
            assert_eq!(outcomes[1].result, TransferResult::ExceedsCredits);
            ledger
                .create_transfers(Actor::system("tests"), vec![pending(base + 3, 1, 3, 5, 0)])
                .await
                .unwrap();
            ledger
                .create_transfers(
                    Actor::system("tests"),
                    vec![post(base + 4, base + 3, 2), transfer(base + 5, 3, 1, 1)],
                )
                .await
                .unwrap()
        }));
    }
    for handle in handles {
        assert!(handle.await.unwrap().iter().all(|o| o.result.is_ok()));
    }
    let committed = ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap();
    assert_eq!(committed.len(), 8 * 3);
    assert!(committed.windows(2).all(|w| w[0].timestamp_ns < w[1].timestamp_ns));
    // Paging with the last timestamp as the cursor gives the same sequence.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = ledger.transfers_after(after, 5).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.timestamp_ns;
        paged.extend(page);
    }
    assert_eq!(paged, committed);
    // Each record reads back from where the index says it is in the journal.
    let account = committed[3].effect.debit_account_id;
    let entries = ledger.account_entries(account, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap();
    let (entry, location) = entries.iter().find(|(e, _)| e.transfer_id == committed[3].transfer.id).unwrap();
    assert_eq!(entry.timestamp_ns, committed[3].timestamp_ns);
    assert_eq!(ledger.record_at(*location).unwrap().as_ref(), Some(&committed[3]));

    // The live feed delivered the same records in the same order.
    let mut live = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.len() < committed.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let group = tokio::time::timeout(remaining, feed.recv()).await.expect("feed too slow").unwrap();
        live.extend(group.iter().cloned());
    }
    assert_eq!(live, committed);
}

/// The payload of the record at `offset`, its bounds in the file.
fn payload_range(bytes: &[u8], offset: u64) -> std::ops::Range<usize> {
    let at = offset as usize;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    at + RECORD_HEADER..at + RECORD_HEADER + len
}

/// Edits one payload byte of the record at `offset` and recomputes that record's CRC, as an
/// attacker would: only the hash chain can tell. Returns the file as tampered.
fn tamper_with_fixed_crc(path: &Path, offset: u64) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let payload = payload_range(&bytes, offset);
    bytes[payload.start + payload.len() / 2] ^= 0x01;
    let crc = crc32fast::hash(&bytes[payload]);
    bytes[offset as usize + 4..offset as usize + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, &bytes).unwrap();
    bytes
}

#[tokio::test]
async fn edited_payload_with_a_recomputed_crc_breaks_the_hash_chain() {
    let dir = tempfile::tempdir().unwrap();
    let journal = segment_path(dir.path(), 1);
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    close(ledger, dir.path());
    let offsets = record_offsets(&journal);
    let pristine = std::fs::read(&journal).unwrap();

    // A record in the middle, and the last one (which must not pass for a torn tail).
    for (index, rebuild) in [(2, false), (offsets.len() - 1, true)] {
        let tampered = tamper_with_fixed_crc(&journal, offsets[index]);
        let seq = index + 1;
        let reopened = if rebuild { open_rebuilding(dir.path()) } else { open_checked(dir.path()).await };
        match reopened {
            Err(LedgerError::Corrupt(message)) => {
                let expected = format!("journal record seq {seq} at byte {} ", offsets[index]);
                assert!(message.contains(&expected), "{message}");
                assert!(message.contains("hash chain broken"), "{message}");
                assert!(message.contains("the record was altered"), "{message}");
            }
            other => panic!("record {seq} edited: {:?}", other.map(|l| l.recovery().clone())),
        }
        assert_eq!(std::fs::read(&journal).unwrap(), tampered, "the journal was changed");
        // A backup copy refuses it too.
        let copy = dir.path().join(format!("copy-{seq}"));
        let error = copy_journal(dir.path(), &copy).unwrap_err();
        assert!(error.to_string().contains("hash chain broken"), "{error}");
        std::fs::write(&journal, &pristine).unwrap();
    }

    // A damaged stored hash (which the CRC does not cover) is caught the same way.
    flip_byte(&journal, offsets[1] + 8 + 3);
    let error = open_rebuilding(dir.path()).map(|_| ()).unwrap_err();
    assert!(error.to_string().contains("journal record seq 2 at byte"), "{error}");

    std::fs::write(&journal, &pristine).unwrap();
    let ledger = open_rebuilding(dir.path()).unwrap();
    assert_eq!(ledger.recovery().journal_entries, offsets.len() as u64);
}

#[tokio::test]
async fn chain_head_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = segment_path(dir.path(), 1);
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.chain_head(), (0, CHAIN_GENESIS));
    populate(&ledger).await;
    let head = ledger.chain_head();
    assert_eq!(head.0, 6);
    close(ledger, dir.path());

    // The head is the canonical chain over the file: SHA256(prev || seq BE || payload).
    let bytes = std::fs::read(&journal).unwrap();
    let mut expected = CHAIN_GENESIS;
    for (index, offset) in record_offsets(&journal).into_iter().enumerate() {
        let at = offset as usize;
        expected = chain_hash(&expected, index as u64 + 1, &bytes[payload_range(&bytes, offset)]);
        assert_eq!(bytes[at + 8..at + RECORD_HEADER], expected, "stored hash of record {}", index + 1);
    }
    assert_eq!(head.1, expected);

    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.chain_head(), head);
    // The start resumed from the snapshot taken at the clean stop; the records before it were
    // checked in the background and found whole.
    assert_eq!(ledger.recovery().snapshot_seq, Some(6));
    ledger.history_verified().await.unwrap();
    assert!(ledger.is_healthy());
    let copy = copy_journal(dir.path(), &dir.path().join("copy")).unwrap();
    assert_eq!((copy.last_seq, copy.chain_head), head);
    // New records continue the chain from there.
    ok_transfers(&ledger, vec![transfer(40, 1, 2, 1)]).await;
    let next = ledger.chain_head();
    close(ledger, dir.path());
    let ledger = open_rebuilding(dir.path()).unwrap();
    assert_eq!(ledger.chain_head(), next);
    assert_eq!(next.0, 7);
}

#[tokio::test]
async fn chain_head_changes_with_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    let mut heads = vec![ledger.chain_head()];
    ok_accounts(&ledger, vec![account(1, USD, false), account(2, USD, true)]).await;
    heads.push(ledger.chain_head());
    for id in 10..20 {
        // The same transfer amount every time: the payloads differ only in ids and times.
        ok_transfers(&ledger, vec![transfer(id, 1, 2, 5)]).await;
        heads.push(ledger.chain_head());
    }
    for (index, (seq, _)) in heads.iter().enumerate() {
        assert_eq!(*seq, index as u64);
    }
    let distinct: std::collections::HashSet<_> = heads.iter().map(|(_, hash)| *hash).collect();
    assert_eq!(distinct.len(), heads.len(), "a commit left the chain head unchanged");
    // A read changes nothing.
    ledger.get_account(1).unwrap();
    assert_eq!(ledger.chain_head(), *heads.last().unwrap());
}

fn open_snapshotting(dir: &Path, every_events: u64) -> Ledger {
    let mut config = LedgerConfig::new(dir);
    config.snapshot_events = every_events;
    open_config(config).unwrap()
}

/// Everything a reader can see, for comparing two opens of one store.
#[derive(Debug, PartialEq)]
struct Seen {
    accounts: BTreeMap<AccountId, Account>,
    feed: Vec<TransferRecord>,
    statements: Vec<Vec<(Entry, Location)>>,
    pendings: Vec<Option<PendingState>>,
    chain_head: (u64, [u8; 32]),
}

async fn everything(ledger: &Ledger) -> Seen {
    let accounts = all_accounts(ledger);
    let feed = ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap();
    let mut statements = Vec::new();
    for id in accounts.keys() {
        statements.push(ledger.account_entries(*id, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap());
    }
    let mut pendings = Vec::new();
    for record in &feed {
        pendings.push(ledger.pending_state(record.transfer.id).await.unwrap());
    }
    Seen { accounts, feed, statements, pendings, chain_head: ledger.chain_head() }
}

/// Waits (bounded) until the store has `n` snapshots.
async fn snapshots_reach(dir: &Path, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut seqs = puente_ledger::snapshot::list(dir).unwrap();
        seqs.sort_unstable();
        if seqs.len() >= n {
            return seqs;
        }
        assert!(Instant::now() < deadline, "only {} snapshots were written", seqs.len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Transfers of every kind, each call its own journal record: plain, pending and posted,
/// pending and voided, pending left to expire, pending left open.
async fn traffic(ledger: &Ledger, base: TransferId) {
    ok_transfers(ledger, vec![transfer(base, 1, 2, 100)]).await;
    ok_transfers(ledger, vec![pending(base + 1, 2, 3, 30, 0)]).await;
    ok_transfers(ledger, vec![post(base + 2, base + 1, 20)]).await;
    ok_transfers(ledger, vec![pending(base + 3, 2, 3, 10, 0)]).await;
    let mut void = transfer(base + 4, 0, 0, 0);
    void.flags.void_pending = true;
    void.pending_id = base + 3;
    ok_transfers(ledger, vec![void]).await;
    ok_transfers(ledger, vec![pending(base + 5, 1, 3, 7, 0)]).await;
    // A failure, remembered.
    let failed = transfers(ledger, vec![transfer(base + 6, 3, 2, 1_000_000)]).await;
    assert_eq!(failed[0].result, TransferResult::ExceedsCredits);
}

#[tokio::test]
async fn a_snapshot_and_the_journal_after_it_give_what_a_full_replay_gives() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_snapshotting(dir.path(), 5);
    populate(&ledger).await;
    for round in 0..4 {
        traffic(&ledger, 1_000 + round * 10).await;
    }
    let seqs = snapshots_reach(dir.path(), 2).await;
    // Records after the newest snapshot, so that the start replays a tail.
    traffic(&ledger, 2_000).await;
    let before = everything(&ledger).await;
    close(ledger, dir.path());

    let ledger = open(dir.path()).unwrap();
    let recovery = ledger.recovery().clone();
    let newest = *puente_ledger::snapshot::list(dir.path()).unwrap().iter().max().unwrap();
    assert!(newest >= *seqs.last().unwrap());
    assert_eq!(recovery.snapshot_seq, Some(newest));
    assert_eq!(recovery.replayed_into_state, recovery.journal_entries - newest, "{recovery:?}");
    assert!(recovery.replayed_into_state < recovery.journal_entries);
    assert_eq!(everything(&ledger).await, before);
    // And it goes on from there: new writes, idempotent retries of old ones.
    let retry = transfers(&ledger, vec![transfer(1_000, 1, 2, 100)]).await;
    assert!(retry[0].replayed);
    let retry = transfers(&ledger, vec![transfer(1_006, 3, 2, 1_000_000)]).await;
    assert_eq!((retry[0].result, retry[0].replayed), (TransferResult::ExceedsCredits, true));
    let late = transfers(&ledger, vec![post(3_000, 1_001, 0)]).await;
    assert_eq!(late[0].result, TransferResult::PendingTransferAlreadyPosted);
    ok_transfers(&ledger, vec![transfer(3_001, 1, 2, 1)]).await;
    let second = everything(&ledger).await;
    close(ledger, dir.path());

    // Without snapshots or index: the whole journal, the same answers.
    std::fs::remove_dir_all(puente_ledger::snapshot::snapshots_dir(dir.path())).unwrap();
    let ledger = open_rebuilding(dir.path()).unwrap();
    assert_eq!(ledger.recovery().snapshot_seq, None);
    assert_eq!(ledger.recovery().replayed_into_state, ledger.recovery().journal_entries);
    assert_eq!(everything(&ledger).await, second);
}

#[tokio::test]
async fn a_damaged_or_unfinished_snapshot_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_snapshotting(dir.path(), 5);
    populate(&ledger).await;
    for round in 0..4 {
        traffic(&ledger, 1_000 + round * 10).await;
    }
    snapshots_reach(dir.path(), 2).await;
    let before = everything(&ledger).await;
    close(ledger, dir.path());
    let mut seqs = puente_ledger::snapshot::list(dir.path()).unwrap();
    seqs.sort_unstable();
    let snapshots = puente_ledger::snapshot::snapshots_dir(dir.path());
    let path = |seq: u64| snapshots.join(format!("{seq:020}.snap"));
    let newest = *seqs.last().unwrap();
    let older = seqs[seqs.len() - 2];

    // A crash while writing leaves a partial file under another name: never read.
    std::fs::write(snapshots.join(format!("{:020}.partial", newest + 1)), b"half").unwrap();
    // The newest snapshot damaged: the one before it is used, and replay covers the rest.
    flip_byte(&path(newest), 100);
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().snapshot_seq, Some(older));
    assert_eq!(everything(&ledger).await, before);
    close(ledger, dir.path());

    // Every snapshot cut short: a full replay.
    for seq in puente_ledger::snapshot::list(dir.path()).unwrap() {
        let bytes = std::fs::read(path(seq)).unwrap();
        std::fs::write(path(seq), &bytes[..bytes.len() / 2]).unwrap();
    }
    let ledger = open(dir.path()).unwrap();
    assert_eq!(ledger.recovery().snapshot_seq, None);
    assert_eq!(ledger.recovery().replayed_into_state, ledger.recovery().journal_entries);
    assert_eq!(everything(&ledger).await, before);
}

/// A start right after another holder of the index let it go (a process just killed, a ledger
/// just dropped) waits for sled's lock, bounded, instead of failing.
#[tokio::test]
async fn an_index_held_for_a_moment_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    close(ledger, dir.path());
    let held = sled::Config::new().path(dir.path().join("index").join("sled")).open().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    // Ledger::open itself, not the retrying helper.
    let ledger = Ledger::open(LedgerConfig::new(dir.path())).expect("the open waits for the lock");
    releaser.join().unwrap();
    assert_eq!(ledger.recovery().journal_entries, 6);
}

/// A `sync_hook` that, while armed, holds each `fdatasync` of the journal until released (and
/// says it did), or fails it.
#[derive(Clone, Default)]
struct SyncGate {
    state: std::sync::Arc<(std::sync::Mutex<GateState>, std::sync::Condvar)>,
}

#[derive(Default)]
struct GateState {
    hold: bool,
    fail: bool,
    held: u32,
}

impl SyncGate {
    fn hook(&self) -> SyncHook {
        let gate = self.clone();
        SyncHook(std::sync::Arc::new(move || {
            let (lock, changed) = &*gate.state;
            let mut state = lock.lock().unwrap();
            if state.fail {
                return Err(std::io::Error::other("injected fdatasync failure"));
            }
            if state.hold {
                state.held += 1;
                changed.notify_all();
                while state.hold {
                    state = changed.wait(state).unwrap();
                }
            }
            Ok(())
        }))
    }

    fn set(&self, edit: impl FnOnce(&mut GateState)) {
        let (lock, changed) = &*self.state;
        edit(&mut lock.lock().unwrap());
        changed.notify_all();
    }

    /// Waits (bounded) until a sync is being held.
    async fn wait_held(&self) {
        let gate = self.clone();
        tokio::task::spawn_blocking(move || {
            let (lock, changed) = &*gate.state;
            let state = lock.lock().unwrap();
            let (state, timeout) =
                changed.wait_timeout_while(state, Duration::from_secs(10), |s| s.held == 0).unwrap();
            assert!(!timeout.timed_out() && state.held > 0, "no fdatasync was held");
        })
        .await
        .unwrap();
    }
}

/// Nothing is answered or visible before its record is durable: not the group being synced,
/// not a later group, and not a retry answered from memory that writes nothing itself.
#[tokio::test]
async fn nothing_is_answered_or_visible_before_its_record_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::default();
    let ledger = std::sync::Arc::new(
        open_config(LedgerConfig { sync_hook: Some(gate.hook()), ..LedgerConfig::new(dir.path()) }).unwrap(),
    );
    populate(&ledger).await;
    let credits_before = ledger.get_account(3).unwrap().unwrap().credits_posted_minor;

    gate.set(|s| s.hold = true);
    let submit = |batch: Vec<Transfer>| {
        let ledger = ledger.clone();
        tokio::spawn(async move { transfers(&ledger, batch).await })
    };
    let mut first = submit(vec![transfer(20, 1, 3, 500)]);
    gate.wait_held().await;
    // The retry alone (a group of its own, which writes nothing), then a later group.
    let mut retry = submit(vec![transfer(20, 1, 3, 500)]);
    let early = tokio::time::timeout(Duration::from_millis(100), &mut retry).await;
    assert!(early.is_err(), "a retry was answered before the first outcome was durable: {early:?}");
    let mut later = submit(vec![transfer(21, 1, 3, 7)]);
    for task in [&mut first, &mut later] {
        let early = tokio::time::timeout(Duration::from_millis(100), task).await;
        assert!(early.is_err(), "answered before its record was durable: {early:?}");
    }
    assert_eq!(ledger.get_account(3).unwrap().unwrap().credits_posted_minor, credits_before);

    gate.set(|s| s.hold = false);
    let first = first.await.unwrap();
    assert!(first[0].result.is_ok() && !first[0].replayed, "{first:?}");
    let retry = retry.await.unwrap();
    assert!(retry[0].result.is_ok() && retry[0].replayed, "{retry:?}");
    let later = later.await.unwrap();
    assert!(later[0].result.is_ok() && !later[0].replayed, "{later:?}");
    assert_eq!(ledger.get_account(3).unwrap().unwrap().credits_posted_minor, credits_before + 507);
}

/// A failed `fdatasync`: the group is not acknowledged, nothing after it is, the ledger stops
/// taking writes, and a restart serves exactly what the journal holds (a retry with the same
/// id is safe whichever way the write went).
#[tokio::test]
async fn a_failed_sync_acknowledges_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::default();
    let ledger =
        open_config(LedgerConfig { sync_hook: Some(gate.hook()), ..LedgerConfig::new(dir.path()) }).unwrap();
    populate(&ledger).await;
    gate.set(|s| s.fail = true);
    let refused = ledger.create_transfers(Actor::system("tests"), vec![transfer(30, 1, 3, 40)]).await;
    assert!(matches!(refused, Err(LedgerError::Unavailable(_))), "{refused:?}");
    assert!(!ledger.is_healthy());
    let after = ledger.create_transfers(Actor::system("tests"), vec![transfer(31, 1, 3, 1)]).await;
    assert!(matches!(after, Err(LedgerError::Unavailable(_))), "{after:?}");
    close(ledger, dir.path());

    let ledger = open(dir.path()).unwrap();
    let retried = transfers(&ledger, vec![transfer(30, 1, 3, 40)]).await;
    assert!(retried[0].result.is_ok(), "{retried:?}");
    let accounts = all_accounts(&ledger);
    let debits: u128 = accounts.values().map(|a| a.debits_posted_minor).sum();
    let credits: u128 = accounts.values().map(|a| a.credits_posted_minor).sum();
    assert_eq!(debits, credits);
    assert_eq!(accounts[&3].credits_posted_minor, 200 + 50 + 40);
}

/// While the index persister writes a cut (held here), the indexer goes on applying and the
/// writer goes on acknowledging: more groups than the index queue holds are answered. Every
/// read finds what the cut took out of memory (ids, a pending state, sealed statement and feed
/// chunks), and a retry of an id in the cut is answered from its first outcome, never run
/// twice. After the cut is written, and after a restart, the same reads agree.
#[tokio::test]
async fn a_persist_being_written_neither_stalls_writes_nor_hides_anything() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::default();
    let config = LedgerConfig { persist_hook: Some(gate.hook()), ..LedgerConfig::new(dir.path()) };
    let ledger = open_config(config).unwrap();
    gate.set(|s| s.hold = true);
    populate(&ledger).await;
    // More than a feed chunk (512) and many account chunks (32) of entries on account 3, and a
    // remembered failure: all in the first cut.
    ok_transfers(&ledger, (1_000..1_600).map(|id| transfer(id, 1, 3, 1)).collect()).await;
    let refused = transfers(&ledger, vec![transfer(1_700, 2, 3, 1_000_000)]).await;
    assert!(!refused[0].result.is_ok(), "{refused:?}");
    gate.wait_held().await;

    // More groups than INDEX_QUEUE_GROUPS, one at a time: none waits for the persist.
    for id in 2_000..2_000 + 3 * INDEX_QUEUE_GROUPS as u128 {
        let written =
            tokio::time::timeout(Duration::from_secs(10), ok_transfers(&ledger, vec![transfer(id, 1, 3, 1)]));
        assert!(written.await.is_ok(), "transfer {id} waited for the index persist");
    }
    let later = 3 * INDEX_QUEUE_GROUPS;
    assert_eq!(ledger.index_persisted_seq(), 0, "the held cut was written");
    let refused = &refused[0].result;

    let check = |ledger: Ledger| async move {
        for id in [10, 13, 1_000, 1_599, 2_000] {
            assert!(ledger.get_committed(id).await.unwrap().is_some(), "transfer {id} not found");
        }
        assert_eq!(ledger.pending_state(11).await.unwrap(), Some(PendingState::Posted));
        let failed = ledger.get_transfer(1_700, "tests").await.unwrap();
        assert!(matches!(failed, Some(Prior::Failed(_))), "{failed:?}");
        // Retries of ids in the cut: the first outcomes, nothing moves.
        let credits = ledger.get_account(3).unwrap().unwrap().credits_posted_minor;
        let retried =
            transfers(&ledger, vec![transfer(1_000, 1, 3, 1), transfer(1_700, 2, 3, 1_000_000)]).await;
        assert!(retried.iter().all(|o| o.replayed), "{retried:?}");
        assert!(retried[0].result.is_ok() && retried[1].result == *refused, "{retried:?}");
        assert_eq!(ledger.get_account(3).unwrap().unwrap().credits_posted_minor, credits);
        // Account 3: the pending credit, its post, transfer 13, 600 and `later` transfers.
        let statement = ledger.account_entries(3, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap();
        assert_eq!(statement.len(), 3 + 600 + later, "statement of account 3");
        let feed = ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap();
        assert_eq!(feed.len(), 4 + 600 + later, "the ledger's feed");
        let own = ledger.participant_transfers_after("bank-a", 0, PAGE_SIZE_MAX).await.unwrap();
        assert_eq!(own.len(), feed.len(), "bank-a's feed");
        ledger
    };
    let ledger = check(ledger).await;

    gate.set(|s| s.hold = false);
    ledger.flush_index().await.unwrap();
    assert_eq!(ledger.index_persisted_seq(), ledger.index_watermarks().1);
    let ledger = check(ledger).await;
    close(ledger, dir.path());
    check(open(dir.path()).unwrap()).await;
}

/// A persist of the index that fails (its journal could not be synced, or the write failed):
/// the ledger stops taking writes rather than go on with an index it cannot persist, a
/// shutdown does not hang on the failed persister, and a restart replays the journal into the
/// index: every acknowledged transfer is there.
#[tokio::test]
async fn a_failed_index_persist_stops_writes_and_a_restart_recovers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::default();
    gate.set(|s| s.fail = true);
    let config = LedgerConfig { persist_hook: Some(gate.hook()), ..LedgerConfig::new(dir.path()) };
    let ledger = open_config(config).unwrap();
    populate(&ledger).await;
    ok_transfers(&ledger, (100..140).map(|id| transfer(id, 1, 3, 1)).collect()).await;
    // The first persist is due within INDEX_PERSIST_INTERVAL_MS; it fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger.is_healthy() {
        assert!(Instant::now() < deadline, "a failed persist left the ledger taking writes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = ledger.create_transfers(Actor::system("tests"), vec![transfer(200, 1, 3, 1)]).await;
    assert!(matches!(refused, Err(LedgerError::Unavailable(_))), "{refused:?}");
    close(ledger, dir.path());

    let ledger = open(dir.path()).unwrap();
    for id in [10, 13, 100, 139] {
        assert!(ledger.get_committed(id).await.unwrap().is_some(), "transfer {id} lost");
    }
    assert!(ledger.get_committed(200).await.unwrap().is_none());
    let statement = ledger.account_entries(3, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap();
    assert_eq!(statement.len(), 3 + 40);
    ok_transfers(&ledger, vec![transfer(200, 1, 3, 1)]).await;
}

fn run_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("index").join("ids")).unwrap().count()
}

/// Id runs are merged on their own thread after a cut is written (size-tiered): the merged run
/// takes its parts' place, their files go, and every id stays found, before and after a
/// restart; a retry of a merged id is still answered from its first outcome.
#[tokio::test]
async fn runs_are_merged_apart_and_every_id_stays_found() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path()).unwrap();
    populate(&ledger).await;
    for k in 0..4u128 {
        ok_transfers(&ledger, (0..50).map(|i| transfer(1_000 + k * 100 + i, 1, 3, 1)).collect()).await;
        ledger.flush_index().await.unwrap(); // one run each, not merged (a synchronous persist)
    }
    assert!(run_files(dir.path()) >= 4, "{} runs", run_files(dir.path()));
    // The next background cut asks the merger: four runs of about one size become one.
    ok_transfers(&ledger, (0..50).map(|i| transfer(2_000 + i, 1, 3, 1)).collect()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while run_files(dir.path()) >= 4 {
        assert!(Instant::now() < deadline, "the runs were never merged: {}", run_files(dir.path()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let check = |ledger: Ledger| async move {
        for id in [10, 13, 1_000, 1_149, 1_349, 2_049] {
            assert!(ledger.get_committed(id).await.unwrap().is_some(), "transfer {id} not found");
        }
        let retried = transfers(&ledger, vec![transfer(1_000, 1, 3, 1), transfer(1_349, 1, 3, 1)]).await;
        assert!(retried.iter().all(|o| o.replayed && o.result.is_ok()), "{retried:?}");
        let statement = ledger.account_entries(3, 0, u64::MAX, false, None, PAGE_SIZE_MAX).await.unwrap();
        assert_eq!(statement.len(), 3 + 250);
        ledger
    };
    let ledger = check(ledger).await;
    close(ledger, dir.path());
    let ledger = check(open(dir.path()).unwrap()).await;
    assert!(ledger.is_healthy());
}
