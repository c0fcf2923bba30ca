//! An in-memory stand-in for the index, for the engine's tests and the reference-model test:
//! it applies the engine's output like the indexer does and answers the same questions, and it
//! can prefetch everything it knows for the engine.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use crate::LedgerError;
use crate::engine::{Entry, Op, Output, Prefetched, Prior, Wanted};
use crate::types::*;

pub use crate::index::PAGE_SIZE_MAX;

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

/// An in-memory index: for tests and the reference-model property test.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Memory>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Memory> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied_seq(&self) -> u64 {
        self.read().applied_seq
    }

    /// Applies the output of journal entry `seq` and the accounts' states after it.
    pub fn apply(&self, seq: u64, out: &Output, accounts: &[Account]) {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
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
                _ => {}
            }
        }
        for account in accounts {
            m.accounts.insert(account.id, account.clone());
        }
        for record in &out.records {
            m.transfers.insert(record.transfer.id, record.timestamp_ns);
            m.by_ts.insert(record.timestamp_ns, record.clone());
            let owner = |id: AccountId| m.accounts.get(&id).map(|a| a.participant.clone());
            let (debit, credit) =
                (owner(record.effect.debit_account_id), owner(record.effect.credit_account_id));
            for participant in
                [debit.clone(), credit.filter(|c| Some(c) != debit.as_ref())].into_iter().flatten()
            {
                m.feed.insert((participant, record.timestamp_ns), ());
            }
        }
        for entry in &out.entries {
            m.entries.insert((entry.account_id, entry.timestamp_ns), *entry);
        }
        m.applied_seq = m.applied_seq.max(seq);
    }

    /// Everything it knows, as the engine reads it (a complete prefetch, for tests).
    pub fn everything(&self) -> Prefetched {
        let m = self.read();
        let mut prefetched = Prefetched::default();
        for record in m.by_ts.values() {
            prefetched.committed.insert(record.transfer.id, record.clone());
        }
        for ((id, _), refused) in &m.failed {
            prefetched.refused.entry(*id).or_default().push(refused.clone());
        }
        for (id, state) in &m.pending {
            if *state == PendingState::Pending {
                continue;
            }
            if let Some(record) = m.transfers.get(id).and_then(|ts| m.by_ts.get(ts)) {
                prefetched.resolved.insert(*id, (*state, record.effect.debit_account_id));
            }
        }
        prefetched
    }

    /// What the writer's prefetch would find for `wanted`, and nothing else: for every id its
    /// committed transfer and remembered failures, and for a pending transfer a post or void
    /// names, how it was resolved. The reference-model test uses it so that a key the engine
    /// needs but did not ask for shows up as a wrong answer.
    pub fn prefetch(&self, wanted: &Wanted) -> Prefetched {
        let m = self.read();
        let mut prefetched = Prefetched::default();
        for id in wanted.ids.iter().chain(&wanted.pendings) {
            if let Some(record) = m.transfers.get(id).and_then(|ts| m.by_ts.get(ts)) {
                prefetched.committed.insert(*id, record.clone());
            }
            let refused: Vec<RefusedTransfer> = m
                .failed
                .range((*id, String::new())..)
                .take_while(|((failed, _), _)| failed == id)
                .map(|(_, r)| r.clone())
                .collect();
            if !refused.is_empty() {
                prefetched.refused.insert(*id, refused);
            }
        }
        for id in &wanted.pendings {
            let Some(state) = m.pending.get(id).filter(|s| **s != PendingState::Pending) else { continue };
            if let Some(record) = m.transfers.get(id).and_then(|ts| m.by_ts.get(ts)) {
                prefetched.resolved.insert(*id, (*state, record.effect.debit_account_id));
            }
        }
        prefetched
    }

    pub fn get_account(&self, id: AccountId) -> Option<Account> {
        self.read().accounts.get(&id).cloned()
    }

    pub fn all_accounts(&self) -> Vec<Account> {
        self.read().accounts.values().cloned().collect()
    }

    pub fn get_committed(&self, id: TransferId) -> Option<TransferRecord> {
        let m = self.read();
        m.transfers.get(&id).and_then(|ts| m.by_ts.get(ts)).cloned()
    }

    pub fn get_refused(&self, id: TransferId, scope: &str) -> Option<RefusedTransfer> {
        let m = self.read();
        m.failed.get(&(id, scope.to_owned())).or_else(|| m.failed.get(&(id, String::new()))).cloned()
    }

    pub fn get_prior(&self, id: TransferId, scope: &str) -> Option<Prior> {
        if let Some(refused) = self.get_refused(id, scope) {
            return Some(Prior::Failed(refused));
        }
        self.get_committed(id).map(Prior::Committed)
    }

    /// An account's statement entries with `from_ns <= timestamp < to_ns`, in either order,
    /// starting after `cursor_ns` (exclusive) when given.
    pub fn account_entries(
        &self,
        account_id: AccountId,
        from_ns: u64,
        to_ns: u64,
        descending: bool,
        cursor_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError> {
        let Some((lo, hi)) = crate::types::time_window(from_ns, to_ns, descending, cursor_ns) else {
            return Ok(Vec::new());
        };
        let m = self.read();
        let range = m.entries.range((account_id, lo)..(account_id, hi)).map(|(_, e)| *e);
        let limit = limit.min(PAGE_SIZE_MAX);
        Ok(if descending { range.rev().take(limit).collect() } else { range.take(limit).collect() })
    }

    /// Committed transfers with timestamp > `after_ns`, in commit order (the feed).
    pub fn transfers_after(&self, after_ns: u64, limit: usize) -> Vec<TransferRecord> {
        let m = self.read();
        m.by_ts
            .range((Bound::Excluded(after_ns), Bound::Unbounded))
            .take(limit.min(PAGE_SIZE_MAX))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The same, only those touching an account of `participant`.
    pub fn participant_transfers_after(
        &self,
        participant: &str,
        after_ns: u64,
        limit: usize,
    ) -> Vec<TransferRecord> {
        let m = self.read();
        let from = (participant.to_owned(), after_ns.saturating_add(1));
        let to = (participant.to_owned(), u64::MAX);
        m.feed
            .range(from..=to)
            .take(limit.min(PAGE_SIZE_MAX))
            .filter_map(|((_, ts), _)| m.by_ts.get(ts).cloned())
            .collect()
    }

    pub fn pending_state(&self, id: TransferId) -> Option<PendingState> {
        self.read().pending.get(&id).copied()
    }
}
