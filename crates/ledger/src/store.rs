//! The indexed state behind a trait: sled by default, memory for tests and the model.
//!
//! The store is *derived*: it holds what the journal says, indexed for reads (accounts by
//! participant, transfers by id and by time, statement entries per account with the running
//! balances). It records the last journal sequence it applied; recovery replays the rest.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::RwLock;

use crate::LedgerError;
use crate::engine::{Entry, Op, Output, Prior, TransferLookup};
use crate::types::*;

/// Most rows one read returns (page size cap).
pub const PAGE_SIZE_MAX: usize = 1_000;

/// Reads and the one write the ledger needs from its storage.
pub trait Store: Send + Sync + 'static {
    /// The last journal sequence fully applied.
    fn applied_seq(&self) -> Result<u64, LedgerError>;
    /// Applies the output of journal entry `seq`: new records, index entries, and the
    /// accounts' states after it. Idempotent: applying the same entry twice is harmless.
    fn apply(&self, seq: u64, out: &Output, accounts: &[Account]) -> Result<(), LedgerError>;
    fn get_account(&self, id: AccountId) -> Result<Option<Account>, LedgerError>;
    /// Accounts in id order after `after_id`, optionally of one participant.
    fn list_accounts(
        &self,
        participant: Option<&str>,
        after_id: AccountId,
        limit: usize,
    ) -> Result<Vec<Account>, LedgerError>;
    fn all_accounts(&self) -> Result<Vec<Account>, LedgerError>;
    /// A committed transfer (ids of committed transfers are ledger-wide).
    fn get_committed(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError>;
    /// A remembered failure that binds `scope` (its own, or one remembered before scoping).
    fn get_refused(&self, id: TransferId, scope: &str) -> Result<Option<RefusedTransfer>, LedgerError>;
    /// What `scope` sees under `id`: its own failure, else the committed transfer, else a
    /// failure remembered before scoping (the engine's idempotency order).
    fn get_prior(&self, id: TransferId, scope: &str) -> Result<Option<Prior>, LedgerError> {
        if let Some(refused) = self.get_refused(id, scope)? {
            return Ok(Some(Prior::Failed(refused)));
        }
        Ok(self.get_committed(id)?.map(Prior::Committed))
    }
    /// An account's statement entries with `from_ns <= timestamp < to_ns`, in either order,
    /// starting after `cursor_ns` (exclusive) when given.
    fn account_entries(
        &self,
        account_id: AccountId,
        from_ns: u64,
        to_ns: u64,
        descending: bool,
        cursor_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError>;
    /// Committed transfers with timestamp > `after_ns`, in commit order (the feed).
    fn transfers_after(&self, after_ns: u64, limit: usize) -> Result<Vec<TransferRecord>, LedgerError>;
    /// The same, only those touching an account of `participant` (its own feed, read from a
    /// per-participant index: no scan of other participants' transfers).
    fn participant_transfers_after(
        &self,
        participant: &str,
        after_ns: u64,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, LedgerError>;
    fn get_transfer_at(&self, timestamp_ns: u64) -> Result<Option<TransferRecord>, LedgerError>;
    /// The state of a pending (two-phase) transfer.
    fn pending_state(&self, id: TransferId) -> Result<Option<PendingState>, LedgerError>;
    /// Bytes on disk (0 for memory).
    fn size_on_disk(&self) -> u64 {
        0
    }
}

impl<S: Store + ?Sized> TransferLookup for S {
    fn committed(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        self.get_committed(id)
    }

    fn refused(&self, id: TransferId, scope: &str) -> Result<Option<RefusedTransfer>, LedgerError> {
        self.get_refused(id, scope)
    }
}

/// The participants whose feed a record belongs in: the owners of its two accounts.
fn record_participants<'a>(record: &TransferRecord, accounts: &'a [Account]) -> [Option<&'a str>; 2] {
    let owner = |id: AccountId| {
        accounts.binary_search_by_key(&id, |a| a.id).ok().map(|i| accounts[i].participant.as_str())
    };
    let debit = owner(record.effect.debit_account_id);
    let credit = owner(record.effect.credit_account_id);
    [debit, if credit == debit { None } else { credit }]
}

/// The pending-state changes an op makes.
fn pending_update(op: &Op) -> Option<(TransferId, PendingState)> {
    match op {
        Op::Transfer(r) if r.transfer.flags.pending => Some((r.transfer.id, PendingState::Pending)),
        Op::Transfer(r) if r.transfer.flags.post_pending => {
            Some((r.transfer.pending_id, PendingState::Posted))
        }
        Op::Transfer(r) if r.transfer.flags.void_pending => {
            Some((r.transfer.pending_id, PendingState::Voided))
        }
        Op::Expire { pending_id, .. } => Some((*pending_id, PendingState::Expired)),
        Op::AutoPost { pending_id, .. } => Some((*pending_id, PendingState::Posted)),
        _ => None,
    }
}

fn range_for(from_ns: u64, to_ns: u64, descending: bool, cursor_ns: Option<u64>) -> (u64, u64) {
    // Half-open [lo, hi).
    let (mut lo, mut hi) = (from_ns, to_ns);
    if let Some(cursor) = cursor_ns {
        if descending {
            hi = hi.min(cursor);
        } else {
            lo = lo.max(cursor.saturating_add(1));
        }
    }
    (lo, hi)
}

// ----- memory ---------------------------------------------------------------------------

#[derive(Default)]
struct Memory {
    applied_seq: u64,
    accounts: BTreeMap<AccountId, Account>,
    transfers: BTreeMap<TransferId, u64>,
    by_ts: BTreeMap<u64, TransferRecord>,
    /// (id, scope) → failure; legacy failures have an empty scope.
    failed: BTreeMap<(TransferId, String), RefusedTransfer>,
    feed: BTreeMap<(String, u64), ()>,
    entries: BTreeMap<(AccountId, u64), Entry>,
    pending: BTreeMap<TransferId, PendingState>,
}

/// An in-memory store: for tests and the reference-model property test.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Memory>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Memory>, LedgerError> {
        self.inner.read().map_err(|_| LedgerError::Storage("memory store lock poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn applied_seq(&self) -> Result<u64, LedgerError> {
        Ok(self.read()?.applied_seq)
    }

    fn apply(&self, seq: u64, out: &Output, accounts: &[Account]) -> Result<(), LedgerError> {
        let mut m =
            self.inner.write().map_err(|_| LedgerError::Storage("memory store lock poisoned".into()))?;
        for op in &out.ops {
            if let Some((id, state)) = pending_update(op) {
                m.pending.insert(id, state);
            }
            match op {
                Op::Fail(failed) => {
                    m.failed
                        .insert((failed.transfer.id, String::new()), RefusedTransfer::from_legacy(failed));
                }
                Op::Refused(refused) => {
                    m.failed.insert((refused.id, refused.scope.clone()), refused.clone());
                }
                // Settlement ops change only the engine's settlement state (read through the
                // writer); their transfers are `Transfer` ops.
                _ => {}
            }
        }
        for record in &out.records {
            m.transfers.insert(record.transfer.id, record.timestamp_ns);
            m.by_ts.insert(record.timestamp_ns, record.clone());
            for participant in record_participants(record, accounts).into_iter().flatten() {
                m.feed.insert((participant.to_owned(), record.timestamp_ns), ());
            }
        }
        for entry in &out.entries {
            m.entries.insert((entry.account_id, entry.timestamp_ns), *entry);
        }
        for account in accounts {
            m.accounts.insert(account.id, account.clone());
        }
        m.applied_seq = m.applied_seq.max(seq);
        Ok(())
    }

    fn get_account(&self, id: AccountId) -> Result<Option<Account>, LedgerError> {
        Ok(self.read()?.accounts.get(&id).cloned())
    }

    fn list_accounts(
        &self,
        participant: Option<&str>,
        after_id: AccountId,
        limit: usize,
    ) -> Result<Vec<Account>, LedgerError> {
        let m = self.read()?;
        Ok(m.accounts
            .range((Bound::Excluded(after_id), Bound::Unbounded))
            .map(|(_, a)| a)
            .filter(|a| participant.is_none_or(|p| a.participant == p))
            .take(limit.min(PAGE_SIZE_MAX))
            .cloned()
            .collect())
    }

    fn all_accounts(&self) -> Result<Vec<Account>, LedgerError> {
        Ok(self.read()?.accounts.values().cloned().collect())
    }

    fn get_committed(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        let m = self.read()?;
        Ok(m.transfers.get(&id).and_then(|ts| m.by_ts.get(ts)).cloned())
    }

    fn get_refused(&self, id: TransferId, scope: &str) -> Result<Option<RefusedTransfer>, LedgerError> {
        let m = self.read()?;
        Ok(m.failed.get(&(id, scope.to_owned())).or_else(|| m.failed.get(&(id, String::new()))).cloned())
    }

    fn account_entries(
        &self,
        account_id: AccountId,
        from_ns: u64,
        to_ns: u64,
        descending: bool,
        cursor_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError> {
        let (lo, hi) = range_for(from_ns, to_ns, descending, cursor_ns);
        if lo >= hi {
            return Ok(Vec::new());
        }
        let m = self.read()?;
        let range = m.entries.range((account_id, lo)..(account_id, hi)).map(|(_, e)| *e);
        let limit = limit.min(PAGE_SIZE_MAX);
        Ok(if descending { range.rev().take(limit).collect() } else { range.take(limit).collect() })
    }

    fn transfers_after(&self, after_ns: u64, limit: usize) -> Result<Vec<TransferRecord>, LedgerError> {
        let m = self.read()?;
        Ok(m.by_ts
            .range((Bound::Excluded(after_ns), Bound::Unbounded))
            .take(limit.min(PAGE_SIZE_MAX))
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn participant_transfers_after(
        &self,
        participant: &str,
        after_ns: u64,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, LedgerError> {
        let m = self.read()?;
        let from = (participant.to_owned(), after_ns.saturating_add(1));
        let to = (participant.to_owned(), u64::MAX);
        Ok(m.feed
            .range(from..=to)
            .take(limit.min(PAGE_SIZE_MAX))
            .filter_map(|((_, ts), _)| m.by_ts.get(ts).cloned())
            .collect())
    }

    fn get_transfer_at(&self, timestamp_ns: u64) -> Result<Option<TransferRecord>, LedgerError> {
        Ok(self.read()?.by_ts.get(&timestamp_ns).cloned())
    }

    fn pending_state(&self, id: TransferId) -> Result<Option<PendingState>, LedgerError> {
        Ok(self.read()?.pending.get(&id).copied())
    }
}

// ----- sled -----------------------------------------------------------------------------

/// The default store: sled trees, written with one atomic batch per tree per commit.
/// sled's own flushing is *not* relied upon for durability: the journal is.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    accounts: sled::Tree,
    by_participant: sled::Tree,
    transfers: sled::Tree,
    by_ts: sled::Tree,
    failed: sled::Tree,
    entries: sled::Tree,
    pending: sled::Tree,
    /// participant \0 position → (): every participant's own feed.
    feed: sled::Tree,
}

const APPLIED_SEQ_KEY: &[u8] = b"applied_seq";
const INDEX_VERSION_KEY: &[u8] = b"index_version";
/// The layout of the sled index. An index of another version is rebuilt from the journal at
/// open (it is derived state). 2: failures keyed by submitter, per-participant feed, the
/// ledger's own expiry records.
pub const INDEX_VERSION: u64 = 2;
/// From this many statement entries in one applied journal entry (a group of ~1,000 transfers
/// or more), `apply` writes the entries tree on a second thread, in parallel with the others.
const PARALLEL_APPLY_ENTRIES_MIN: usize = 2_048;

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, LedgerError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(512 * 1024 * 1024)
            // The journal provides durability; sled's periodic flush only bounds replay work.
            .flush_every_ms(Some(1_000))
            .open()
            .map_err(|e| {
                LedgerError::Corrupt(format!("cannot open the sled index at {}: {e}", dir.display()))
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        Ok(SledStore {
            meta: tree("meta")?,
            accounts: tree("accounts")?,
            by_participant: tree("accounts_by_participant")?,
            transfers: tree("transfers")?,
            by_ts: tree("transfers_by_ts")?,
            failed: tree("failed")?,
            entries: tree("entries")?,
            pending: tree("pending_states")?,
            feed: tree("feed_by_participant")?,
            db,
        })
    }

    /// The index layout version recorded in this index (0: none recorded, an index made before
    /// versions were recorded, or a new one).
    pub fn index_version(&self) -> Result<u64, LedgerError> {
        match self.meta.get(INDEX_VERSION_KEY).map_err(sled_err)? {
            Some(bytes) => u64_from(&bytes),
            None => Ok(0),
        }
    }

    /// True when nothing was ever applied to this index.
    pub fn is_empty(&self) -> Result<bool, LedgerError> {
        Ok(self.applied_seq()? == 0 && self.accounts.is_empty())
    }

    /// Records that this index has the current layout.
    pub fn mark_current_version(&self) -> Result<(), LedgerError> {
        self.meta.insert(INDEX_VERSION_KEY, &INDEX_VERSION.to_be_bytes()).map_err(sled_err)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    /// Statement entries of one applied journal entry.
    fn apply_entries(&self, entries: &[Entry]) -> Result<(), LedgerError> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&entry_key(entry.account_id, entry.timestamp_ns), encode(entry)?);
        }
        self.entries.apply_batch(batch).map_err(sled_err)
    }

    /// Everything but the statement entries and the applied sequence.
    fn apply_records(&self, out: &Output, accounts: &[Account]) -> Result<(), LedgerError> {
        let mut transfers = sled::Batch::default();
        let mut by_ts = sled::Batch::default();
        let mut failed = sled::Batch::default();
        let mut account_batch = sled::Batch::default();
        let mut participants = sled::Batch::default();
        let mut pending = sled::Batch::default();
        let mut feed = sled::Batch::default();
        for op in &out.ops {
            if let Some((id, state)) = pending_update(op) {
                pending.insert(&id.to_be_bytes(), encode(&state)?);
            }
            match op {
                // A legacy failure sits under the bare id (it binds everyone); a scoped one
                // under id + scope.
                Op::Fail(f) => failed.insert(&f.transfer.id.to_be_bytes(), encode(f)?),
                Op::Refused(r) => failed.insert(refused_key(r.id, &r.scope), encode(r)?),
                Op::CreateAccount(a) => participants.insert(participant_key(&a.participant, a.id), &[]),
                _ => {}
            }
        }
        for record in &out.records {
            transfers.insert(&record.transfer.id.to_be_bytes(), &record.timestamp_ns.to_be_bytes());
            by_ts.insert(&record.timestamp_ns.to_be_bytes(), encode(record)?);
            for participant in record_participants(record, accounts).into_iter().flatten() {
                feed.insert(feed_key(participant, record.timestamp_ns), &[]);
            }
        }
        for account in accounts {
            account_batch.insert(&account.id.to_be_bytes(), encode(account)?);
        }
        self.by_ts.apply_batch(by_ts).map_err(sled_err)?;
        self.transfers.apply_batch(transfers).map_err(sled_err)?;
        self.failed.apply_batch(failed).map_err(sled_err)?;
        self.accounts.apply_batch(account_batch).map_err(sled_err)?;
        self.by_participant.apply_batch(participants).map_err(sled_err)?;
        self.pending.apply_batch(pending).map_err(sled_err)?;
        self.feed.apply_batch(feed).map_err(sled_err)?;
        Ok(())
    }
}

fn refused_key(id: TransferId, scope: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + scope.len());
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(scope.as_bytes());
    key
}

fn feed_key(participant: &str, timestamp_ns: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(participant.len() + 9);
    key.extend_from_slice(participant.as_bytes());
    key.push(0);
    key.extend_from_slice(&timestamp_ns.to_be_bytes());
    key
}

fn sled_err(e: sled::Error) -> LedgerError {
    LedgerError::Storage(format!("sled: {e}"))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, LedgerError> {
    bincode::serialize(value).map_err(|e| LedgerError::Storage(format!("encode: {e}")))
}

/// A failure under a bare id: a `FailedTransfer` journaled before failures were scoped.
fn decode_refused_legacy(bytes: &[u8]) -> Result<RefusedTransfer, LedgerError> {
    decode::<FailedTransfer>(bytes).map(|failed| RefusedTransfer::from_legacy(&failed))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, LedgerError> {
    bincode::deserialize(bytes).map_err(|e| LedgerError::Corrupt(format!("undecodable index record: {e}")))
}

fn entry_key(account_id: AccountId, ts: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&account_id.to_be_bytes());
    key[16..].copy_from_slice(&ts.to_be_bytes());
    key
}

fn participant_key(participant: &str, id: AccountId) -> Vec<u8> {
    let mut key = Vec::with_capacity(participant.len() + 17);
    key.extend_from_slice(participant.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn u64_from(bytes: &[u8]) -> Result<u64, LedgerError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| LedgerError::Corrupt("index: bad u64".into()))?;
    Ok(u64::from_be_bytes(array))
}

fn u128_from(bytes: &[u8]) -> Result<u128, LedgerError> {
    let array: [u8; 16] = bytes.try_into().map_err(|_| LedgerError::Corrupt("index: bad id".into()))?;
    Ok(u128::from_be_bytes(array))
}

impl Store for SledStore {
    fn applied_seq(&self) -> Result<u64, LedgerError> {
        match self.meta.get(APPLIED_SEQ_KEY).map_err(sled_err)? {
            Some(bytes) => u64_from(&bytes),
            None => Ok(0),
        }
    }

    fn apply(&self, seq: u64, out: &Output, accounts: &[Account]) -> Result<(), LedgerError> {
        if out.entries.len() < PARALLEL_APPLY_ENTRIES_MIN {
            self.apply_entries(&out.entries)?;
            self.apply_records(out, accounts)?;
        } else {
            // A large group: the statement entries (two per transfer, the largest tree write)
            // go into sled on a second thread while this one writes the other trees. Both
            // finish before the applied sequence is written and before `apply` returns.
            std::thread::scope(|scope| {
                let entries = std::thread::Builder::new()
                    .name("puente-apply".into())
                    .spawn_scoped(scope, || self.apply_entries(&out.entries))?;
                let records = self.apply_records(out, accounts);
                let entries = entries
                    .join()
                    .unwrap_or_else(|_| Err(LedgerError::Storage("the index apply thread panicked".into())));
                records.and(entries)
            })?;
        }
        // Order matters only for speed of recovery: the applied sequence goes last, and every
        // write above is an idempotent put, so a crash in between is repaired by replay.
        self.meta.insert(APPLIED_SEQ_KEY, &seq.to_be_bytes()).map_err(sled_err)?;
        Ok(())
    }

    fn get_account(&self, id: AccountId) -> Result<Option<Account>, LedgerError> {
        self.accounts.get(id.to_be_bytes()).map_err(sled_err)?.map(|b| decode(&b)).transpose()
    }

    fn list_accounts(
        &self,
        participant: Option<&str>,
        after_id: AccountId,
        limit: usize,
    ) -> Result<Vec<Account>, LedgerError> {
        let limit = limit.min(PAGE_SIZE_MAX);
        let mut out = Vec::new();
        match participant {
            Some(p) => {
                let start = participant_key(p, after_id);
                let mut end = p.as_bytes().to_vec();
                end.push(1);
                for item in self.by_participant.range((Bound::Excluded(start), Bound::Excluded(end))) {
                    let (key, _) = item.map_err(sled_err)?;
                    let id = u128_from(&key[key.len() - 16..])?;
                    if let Some(account) = self.get_account(id)? {
                        out.push(account);
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            None => {
                let start = after_id.to_be_bytes();
                for item in self.accounts.range::<&[u8], _>((Bound::Excluded(&start[..]), Bound::Unbounded)) {
                    let (_, value) = item.map_err(sled_err)?;
                    out.push(decode(&value)?);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn all_accounts(&self) -> Result<Vec<Account>, LedgerError> {
        self.accounts.iter().map(|item| decode(&item.map_err(sled_err)?.1)).collect()
    }

    fn get_committed(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        let Some(ts) = self.transfers.get(id.to_be_bytes()).map_err(sled_err)? else { return Ok(None) };
        let record = self.by_ts.get(ts).map_err(sled_err)?;
        let record =
            record.ok_or_else(|| LedgerError::Corrupt(format!("index: transfer {id} has no record")))?;
        Ok(Some(decode(&record)?))
    }

    fn get_refused(&self, id: TransferId, scope: &str) -> Result<Option<RefusedTransfer>, LedgerError> {
        if !scope.is_empty()
            && let Some(bytes) = self.failed.get(refused_key(id, scope)).map_err(sled_err)?
        {
            return Ok(Some(decode(&bytes)?));
        }
        self.failed.get(id.to_be_bytes()).map_err(sled_err)?.map(|b| decode_refused_legacy(&b)).transpose()
    }

    fn account_entries(
        &self,
        account_id: AccountId,
        from_ns: u64,
        to_ns: u64,
        descending: bool,
        cursor_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError> {
        let (lo, hi) = range_for(from_ns, to_ns, descending, cursor_ns);
        if lo >= hi {
            return Ok(Vec::new());
        }
        let range = self.entries.range(entry_key(account_id, lo)..entry_key(account_id, hi));
        let limit = limit.min(PAGE_SIZE_MAX);
        let mut out = Vec::new();
        let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, LedgerError> {
            out.push(decode(&item.map_err(sled_err)?.1)?);
            Ok(out.len() < limit)
        };
        if descending {
            for item in range.rev() {
                if !push(item)? {
                    break;
                }
            }
        } else {
            for item in range {
                if !push(item)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn participant_transfers_after(
        &self,
        participant: &str,
        after_ns: u64,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, LedgerError> {
        let limit = limit.min(PAGE_SIZE_MAX);
        let start = feed_key(participant, after_ns);
        let end = feed_key(participant, u64::MAX);
        let mut out = Vec::new();
        for item in self.feed.range((Bound::Excluded(start), Bound::Included(end))) {
            let (key, _) = item.map_err(sled_err)?;
            let ts = u64_from(&key[key.len() - 8..])?;
            let record = self.by_ts.get(ts.to_be_bytes()).map_err(sled_err)?;
            let record = record
                .ok_or_else(|| LedgerError::Corrupt(format!("index: feed position {ts} has no record")))?;
            out.push(decode(&record)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn transfers_after(&self, after_ns: u64, limit: usize) -> Result<Vec<TransferRecord>, LedgerError> {
        let start = after_ns.to_be_bytes();
        let mut out = Vec::new();
        for item in self.by_ts.range::<&[u8], _>((Bound::Excluded(&start[..]), Bound::Unbounded)) {
            out.push(decode(&item.map_err(sled_err)?.1)?);
            if out.len() >= limit.min(PAGE_SIZE_MAX) {
                break;
            }
        }
        Ok(out)
    }

    fn get_transfer_at(&self, timestamp_ns: u64) -> Result<Option<TransferRecord>, LedgerError> {
        self.by_ts.get(timestamp_ns.to_be_bytes()).map_err(sled_err)?.map(|b| decode(&b)).transpose()
    }

    fn pending_state(&self, id: TransferId) -> Result<Option<PendingState>, LedgerError> {
        self.pending.get(id.to_be_bytes()).map_err(sled_err)?.map(|b| decode(&b)).transpose()
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
