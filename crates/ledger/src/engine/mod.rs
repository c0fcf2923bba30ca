//! The ledger's state machine. Pure: no I/O, no clock (the caller passes `now_ns`).
//!
//! Live processing and crash recovery share one function, [`Engine::apply`]: a request is
//! validated into journal [`Op`]s, each op is applied to the in-memory state, and recovery
//! re-applies the journal's ops in order. Whatever the live path computed, replay recomputes.
//!
//! Size: the engine's state, `apply` and the shared validation; about 760 lines of code, then
//! its tests (each domain's ops live in their own module).

use crate::hashing::HashMap;
use std::collections::BTreeSet;

use puente_money::{AMOUNT_MAX_MINOR, CurrencyCode, CurrencyTable};
use serde::{Deserialize, Serialize};

use crate::types::*;

pub mod call;
pub mod holders;
pub mod identity;
pub mod settlement;

pub use call::Call;

use settlement::{SettlementState, SettlementUndo};

mod accounts;
mod invariants;
mod pending;
mod transfers;

pub use crate::limits::ACCOUNTS_MAX;
pub use crate::limits::EXPIRE_BATCH_MAX;

/// One journal operation: the unit of durability and of replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    CreateAccount(Account),
    Transfer(TransferRecord),
    /// A remembered failure: no balance effect, only idempotency.
    Fail(FailedTransfer),
    /// A pending transfer timed out and released its funds. `effect`: the pending transfer's
    /// accounts and amount (filled in by `apply` when an old journal did not record it).
    Expire {
        pending_id: TransferId,
        timestamp_ns: u64,
        effect: Effect,
    },
    /// A pending transfer flagged `post_on_expiry` reached its timeout and posted in full
    /// (a cancellation window that closed without a cancellation).
    AutoPost {
        pending_id: TransferId,
        timestamp_ns: u64,
        effect: Effect,
    },
    /// A participant's settlement profile was set (replaces the previous one).
    SetProfile(settlement::ParticipantProfile),
    /// A settlement window went OPEN → CLOSING and the next window of its currency opened.
    CloseWindow {
        window_id: settlement::WindowId,
        next_window_id: settlement::WindowId,
        timestamp_ns: u64,
    },
    /// A settlement window changed state (CLOSING/FAILED → CLOSED/FAILED, → ABORTED,
    /// SETTLING/REJECTED → REJECTED).
    WindowTransition {
        window_id: settlement::WindowId,
        to: settlement::WindowState,
        reason: String,
        timestamp_ns: u64,
    },
    /// A window's settlement transfers (the `Transfer` ops just before this one, in the same
    /// journal record) were posted: CLOSED/ABORTED → SETTLING.
    SettleWindow {
        window_id: settlement::WindowId,
        attempt: u32,
        timestamp_ns: u64,
    },
    /// A participant confirmed its settlement; the last confirmation makes the window SETTLED.
    ConfirmSettlement {
        window_id: settlement::WindowId,
        participant: String,
        timestamp_ns: u64,
    },
    /// An account was closed: it takes no new transfers (its balances stay readable).
    CloseAccount {
        account_id: AccountId,
        timestamp_ns: u64,
    },
    /// A participant was registered (see `engine::identity`).
    RegisterParticipant {
        id: String,
        name: String,
        role: identity::Role,
        timestamp_ns: u64,
    },
    /// An API key (its SHA-256 only) was issued to a participant.
    AddApiKey {
        participant: String,
        key_id: String,
        key_sha256: identity::Digest,
        timestamp_ns: u64,
    },
    /// An API key was revoked: it authenticates nobody from now on.
    RevokeApiKey {
        participant: String,
        key_id: String,
        timestamp_ns: u64,
    },
    /// A client certificate (its SHA-256 over DER) now authenticates a participant (mTLS).
    BindCertificate {
        participant: String,
        cert_sha256: identity::Digest,
        timestamp_ns: u64,
    },
    UnbindCertificate {
        participant: String,
        cert_sha256: identity::Digest,
        timestamp_ns: u64,
    },
    /// An account holder was registered (personal data sealed; see `engine::holders`).
    RegisterHolder(Box<holders::Holder>),
    /// The KYC policy (UDI rate, US tiers) in force from now on.
    SetKycPolicy {
        policy: puente_kyc::kyc::KycPolicy,
        timestamp_ns: u64,
    },
    /// A failed attempt remembered for its submitter only, compactly (see [`RefusedTransfer`]).
    /// Replaces `Fail`, which kept the whole request and bound every submitter; old journals
    /// still hold `Fail` ops and replay them as they were.
    Refused(RefusedTransfer),
}

/// What a committed op did to one account: a row of the account's statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Posted,
    Pending,
    PostPending,
    VoidPending,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub account_id: AccountId,
    pub timestamp_ns: u64,
    pub transfer_id: TransferId,
    pub kind: EntryKind,
    /// True when this account is the debit side.
    pub is_debit: bool,
    /// The amount moved into (or out of, for void/expiry/post releases) the balances.
    pub amount_minor: u64,
    pub debits_pending_minor: u128,
    pub debits_posted_minor: u128,
    pub credits_pending_minor: u128,
    pub credits_posted_minor: u128,
}

/// A transfer already seen: committed, or failed on the state (remembered for its submitter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prior {
    Committed(TransferRecord),
    Failed(RefusedTransfer),
}

impl Prior {
    pub fn id(&self) -> TransferId {
        match self {
            Prior::Committed(r) => r.transfer.id,
            Prior::Failed(f) => f.id,
        }
    }

    /// The accounts it named (for a committed post or void: the pending transfer's).
    pub fn accounts(&self) -> (AccountId, AccountId) {
        match self {
            Prior::Committed(r) => (r.effect.debit_account_id, r.effect.credit_account_id),
            Prior::Failed(f) => (f.debit_account_id, f.credit_account_id),
        }
    }
}

/// What the writer looked up before running a group (TigerBeetle's prefetch): every fact the
/// group needs that is not in memory. The engine reads only this, so committing a group cannot
/// fail and never calls back into storage. An id absent from every map was looked up and found
/// nowhere (the writer asks for every id a group names; `Engine::wanted` lists them).
#[derive(Debug, Default, Clone)]
pub struct Prefetched {
    /// Committed transfers (ids of committed transfers are ledger-wide).
    pub committed: HashMap<TransferId, TransferRecord>,
    /// Remembered failures, every submitter's (each binds only its own).
    pub refused: HashMap<TransferId, Vec<RefusedTransfer>>,
    /// Pending transfers already resolved (no longer in memory): how, and their debit account.
    pub resolved: HashMap<TransferId, (PendingState, AccountId)>,
}

impl Prefetched {
    pub fn is_empty(&self) -> bool {
        self.committed.is_empty() && self.refused.is_empty() && self.resolved.is_empty()
    }

    pub fn clear(&mut self) {
        self.committed.clear();
        self.refused.clear();
        self.resolved.clear();
    }

    fn refused(&self, id: TransferId, scope: &str) -> Option<&RefusedTransfer> {
        // Its own scope first, then a failure remembered before scoping.
        let all = self.refused.get(&id)?;
        all.iter().find(|r| r.scope == scope).or_else(|| all.iter().find(|r| r.scope.is_empty()))
    }
}

/// What a group needs looked up before it runs (see [`Prefetched`]).
#[derive(Debug, Default)]
pub struct Wanted {
    /// Transfer ids: their committed transfer and their remembered failures.
    pub ids: Vec<TransferId>,
    /// Pending transfers a post or void names that are not in memory: their committed
    /// transfer and, when resolved, how.
    pub pendings: Vec<TransferId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount_minor: u64,
    pub currency: CurrencyCode,
    pub expires_at_ns: u64,
    /// At the timeout, post in full instead of voiding.
    pub post_on_expiry: bool,
    pub state: PendingState,
    /// When it was created: the KYC month its credit was counted in.
    pub created_at_ns: u64,
    /// Whether its credit counted towards the credited holder's KYC month (released again by
    /// a void, an expiry or the unposted part of a partial post).
    pub kyc_counted: bool,
}

/// What processing produced, to be journaled and then indexed.
#[derive(Debug, Default)]
pub struct Output {
    pub ops: Vec<Op>,
    pub entries: Vec<Entry>,
    pub touched_accounts: Vec<AccountId>,
    /// Every balance change as a transfer record, in commit order: client transfers and the
    /// ledger's own expiry voids and automatic posts (see [`expiry_record`]). The feed and the
    /// transfer indexes are made of these.
    pub records: Vec<TransferRecord>,
    /// For each record: the index in `ops` of the op that made it.
    pub record_ops: Vec<u32>,
    /// For each entry: the index in `ops` of the op that made it, and the reservation it
    /// released (a post's, void's or expiry's; 0 otherwise).
    pub entry_info: Vec<(u32, u64)>,
    /// An op changed participants, keys or certificates: the credentials in force change.
    pub credentials_changed: bool,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn clear(&mut self) {
        self.ops.clear();
        self.entries.clear();
        self.touched_accounts.clear();
        self.records.clear();
        self.record_ops.clear();
        self.entry_info.clear();
        self.credentials_changed = false;
    }
}

/// The transfer record of a balance change the ledger makes by itself when a pending transfer
/// reaches its timeout: a void (`Expire`) or a full post (`AutoPost`). Its id is a system id
/// derived from the pending transfer's, so it can be read with GetTransfer, appears in the
/// feed and in transfer lists, and no client can ever use it.
pub fn expiry_record(
    pending_id: TransferId,
    pending: &Pending,
    posted: bool,
    timestamp_ns: u64,
) -> TransferRecord {
    let effect = Effect {
        debit_account_id: pending.debit_account_id,
        credit_account_id: pending.credit_account_id,
        amount_minor: pending.amount_minor,
    };
    expiry_record_from(pending_id, effect, pending.currency, posted, timestamp_ns)
}

/// [`expiry_record`] from what an `Expire` or `AutoPost` op records.
pub fn expiry_record_from(
    pending_id: TransferId,
    effect: Effect,
    currency: CurrencyCode,
    posted: bool,
    timestamp_ns: u64,
) -> TransferRecord {
    TransferRecord {
        transfer: Transfer {
            id: expiry_record_id(pending_id, posted),
            debit_account_id: effect.debit_account_id,
            credit_account_id: effect.credit_account_id,
            amount_minor: effect.amount_minor,
            currency,
            flags: TransferFlags { post_pending: posted, void_pending: !posted, ..Default::default() },
            pending_id,
            timeout_ms: 0,
            reference: if posted { "posted at expiry".into() } else { "expired".into() },
            metadata: Metadata::new(),
        },
        // Like a client's void, an expiry's amount is the reservation it released.
        effect,
        timestamp_ns,
        expires_at_ns: 0,
        released_minor: effect.amount_minor,
    }
}

/// The id of the ledger's own record of pending transfer `pending_id` reaching its timeout.
pub fn expiry_record_id(pending_id: TransferId, posted: bool) -> TransferId {
    let domain = if posted { "ledger/auto-post" } else { "ledger/expiry" };
    puente_core::ids::system_id(domain, &[&pending_id.to_be_bytes()])
}

/// True when `record` is one the ledger made by itself at a pending transfer's timeout.
pub fn is_expiry_record(record: &TransferRecord) -> bool {
    let t = &record.transfer;
    (t.flags.post_pending || t.flags.void_pending)
        && t.id == expiry_record_id(t.pending_id, t.flags.post_pending)
}

/// Saved state for rolling back a failed linked chain.
enum Undo {
    Account(Box<Account>),
    Pending(TransferId, Option<Pending>),
    ExpiryInserted(u64, TransferId),
    ExpiryRemoved(u64, TransferId),
    Recent(TransferId),
    Resolved(TransferId),
    Settlement(SettlementUndo),
    KycUsage((String, String), Option<puente_kyc::kyc::MonthlyUsage>),
}

/// The engine's state between two groups, for a snapshot: everything but the currency table
/// (configuration) and what lives only within a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineState {
    accounts: HashMap<AccountId, Account>,
    pendings: HashMap<TransferId, Pending>,
    expiry: BTreeSet<(u64, TransferId)>,
    last_timestamp_ns: u64,
    settlement: SettlementState,
    identity: identity::IdentityState,
    holders: holders::HolderState,
}

pub struct Engine {
    currencies: CurrencyTable,
    accounts: HashMap<AccountId, Account>,
    pendings: HashMap<TransferId, Pending>,
    expiry: BTreeSet<(u64, TransferId)>,
    /// Transfers committed since the store last caught up (not yet visible through lookup).
    recent_committed: HashMap<TransferId, TransferRecord>,
    /// Failures remembered since the store last caught up, by id (one per submitter).
    recent_refused: HashMap<TransferId, Vec<RefusedTransfer>>,
    /// Pending transfers resolved since the store last caught up: how, and their debit account.
    recent_resolved: HashMap<TransferId, (PendingState, AccountId)>,
    last_timestamp_ns: u64,
    undo: Option<Vec<Undo>>,
    settlement: SettlementState,
    identity: identity::IdentityState,
    holders: holders::HolderState,
}

impl Engine {
    pub fn new(currencies: CurrencyTable) -> Engine {
        Engine {
            currencies,
            accounts: HashMap::default(),
            pendings: HashMap::default(),
            expiry: BTreeSet::new(),
            recent_committed: HashMap::default(),
            recent_refused: HashMap::default(),
            recent_resolved: HashMap::default(),
            last_timestamp_ns: 0,
            undo: None,
            settlement: SettlementState::default(),
            identity: identity::IdentityState::default(),
            holders: holders::HolderState::default(),
        }
    }

    pub fn currencies(&self) -> &CurrencyTable {
        &self.currencies
    }

    /// A copy of the state, taken between groups (nothing of a group is in flight).
    pub fn state(&self) -> EngineState {
        debug_assert!(self.undo.is_none());
        EngineState {
            accounts: self.accounts.clone(),
            pendings: self.pendings.clone(),
            expiry: self.expiry.clone(),
            last_timestamp_ns: self.last_timestamp_ns,
            settlement: self.settlement.clone(),
            identity: self.identity.clone(),
            holders: self.holders.clone(),
        }
    }

    /// An engine with `state` (from a snapshot).
    pub fn from_state(currencies: CurrencyTable, state: EngineState) -> Engine {
        let mut engine = Engine::new(currencies);
        engine.accounts = state.accounts;
        engine.pendings = state.pendings;
        engine.expiry = state.expiry;
        engine.last_timestamp_ns = state.last_timestamp_ns;
        engine.settlement = state.settlement;
        engine.identity = state.identity;
        engine.holders = state.holders;
        engine
    }

    /// Pending transfers resolved in the current group (how, and their debit account).
    pub fn recent_resolved(&self) -> impl Iterator<Item = (TransferId, (PendingState, AccountId))> + '_ {
        self.recent_resolved.iter().map(|(id, v)| (*id, *v))
    }

    /// Whether pending transfer `id` is live (in memory).
    pub fn is_live_pending(&self, id: TransferId) -> bool {
        self.pendings.contains_key(&id)
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    pub fn pending(&self, id: TransferId) -> Option<&Pending> {
        self.pendings.get(&id)
    }

    pub fn last_timestamp_ns(&self) -> u64 {
        self.last_timestamp_ns
    }

    /// The earliest expiry among unresolved pending transfers.
    pub fn next_expiry_ns(&self) -> Option<u64> {
        self.expiry.iter().next().map(|(at, _)| *at)
    }

    /// Forget the in-memory overlay once the store shows everything decided so far.
    pub fn store_caught_up(&mut self) {
        self.recent_committed.clear();
        self.recent_refused.clear();
        self.recent_resolved.clear();
    }

    /// What a batch of transfers needs looked up before it runs.
    pub fn wanted(&self, batch: &[Transfer], wanted: &mut Wanted) {
        for t in batch {
            wanted.ids.push(t.id);
            if (t.flags.post_pending || t.flags.void_pending) && !self.pendings.contains_key(&t.pending_id) {
                wanted.pendings.push(t.pending_id);
            }
        }
    }

    /// What the ledger has seen under `id` that answers a request of `scope`: the submitter's
    /// own remembered failure first (or one remembered before scoping), then a committed
    /// transfer (ledger-wide). Looks in memory first, then in what was prefetched.
    fn seen(&self, prefetched: &Prefetched, id: TransferId, scope: &str) -> Option<Prior> {
        let recent = self.recent_refused.get(&id).and_then(|all| {
            all.iter().find(|r| r.scope == scope).or_else(|| all.iter().find(|r| r.scope.is_empty()))
        });
        if let Some(refused) = recent.or_else(|| prefetched.refused(id, scope)) {
            return Some(Prior::Failed(refused.clone()));
        }
        self.recent_committed
            .get(&id)
            .or_else(|| prefetched.committed.get(&id))
            .cloned()
            .map(Prior::Committed)
    }

    /// Whether a transfer was committed under `id`.
    fn committed(&self, prefetched: &Prefetched, id: TransferId) -> bool {
        self.recent_committed.contains_key(&id) || prefetched.committed.contains_key(&id)
    }

    /// How a pending transfer no longer in memory was resolved, and its debit account.
    fn resolved(&self, prefetched: &Prefetched, id: TransferId) -> Option<(PendingState, AccountId)> {
        self.recent_resolved.get(&id).or_else(|| prefetched.resolved.get(&id)).copied()
    }

    fn next_timestamp(&mut self, now_ns: u64) -> u64 {
        let ts = now_ns.max(self.last_timestamp_ns + 1);
        debug_assert!(ts > self.last_timestamp_ns);
        ts
    }

    fn rollback(&mut self, marks: (usize, usize, usize), out: &mut Output) {
        let undo = self.undo.take().unwrap_or_default();
        for step in undo.into_iter().rev() {
            match step {
                Undo::Account(account) => {
                    self.accounts.insert(account.id, *account);
                }
                Undo::Pending(id, prior) => match prior {
                    Some(p) => {
                        self.pendings.insert(id, p);
                    }
                    None => {
                        self.pendings.remove(&id);
                    }
                },
                Undo::ExpiryInserted(at, id) => {
                    self.expiry.remove(&(at, id));
                }
                Undo::ExpiryRemoved(at, id) => {
                    self.expiry.insert((at, id));
                }
                Undo::Recent(id) => {
                    self.recent_committed.remove(&id);
                }
                Undo::Resolved(id) => {
                    self.recent_resolved.remove(&id);
                }
                Undo::Settlement(step) => self.settlement_rollback(step),
                Undo::KycUsage(key, previous) => self.undo_kyc_usage(key, previous),
            }
        }
        out.ops.truncate(marks.0);
        out.entries.truncate(marks.1);
        out.entry_info.truncate(marks.1);
        out.records.truncate(marks.2);
        out.record_ops.truncate(marks.2);
        // Timestamps consumed by the rolled-back chain stay consumed: gaps are allowed,
        // reuse is not.
    }

    // ----- the one place state changes --------------------------------------------------

    fn save_account(&mut self, id: AccountId) {
        if let Some(undo) = self.undo.as_mut()
            && let Some(account) = self.accounts.get(&id)
        {
            undo.push(Undo::Account(Box::new(account.clone())));
        }
    }

    fn save_pending(&mut self, id: TransferId) {
        if let Some(undo) = self.undo.as_mut() {
            undo.push(Undo::Pending(id, self.pendings.get(&id).cloned()));
        }
    }

    fn note(&mut self, step: Undo) {
        if let Some(undo) = self.undo.as_mut() {
            undo.push(step);
        }
    }

    /// Applies one op to the state and records what it did in `out`.
    ///
    /// Used by live processing (after validation) and by journal replay. An op that cannot be
    /// applied (unknown account, pending not pending) means the journal and the engine
    /// disagree: that is corruption, and it panics. Live processing validated the op first, so
    /// this is not reachable from a request.
    ///
    /// The op pushed to `out.ops` is complete: facts an old journal did not record (the
    /// reservation a post released, an expiry's accounts and amount) are filled in from the
    /// state, and checked where they were recorded.
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per op kind; the one place state changes (ARCHITECTURE.md)"
    )]
    pub fn apply(&mut self, mut op: Op, out: &mut Output) {
        let auto_post = matches!(op, Op::AutoPost { .. });
        match &mut op {
            Op::CloseAccount { account_id, timestamp_ns } => {
                self.bump_timestamp(*timestamp_ns);
                self.save_account(*account_id);
                self.update(*account_id, |a| a.closed = true);
                out.touched_accounts.push(*account_id);
            }
            Op::CreateAccount(account) => {
                assert!(
                    !self.accounts.contains_key(&account.id),
                    "journal: account {} created twice",
                    account.id
                );
                self.bump_timestamp(account.created_at_ns);
                self.accounts.insert(account.id, account.clone());
                out.touched_accounts.push(account.id);
            }
            Op::Transfer(record) => {
                self.bump_timestamp(record.timestamp_ns);
                let t = &record.transfer;
                let e = record.effect;
                let ts = record.timestamp_ns;
                let kind;
                if t.flags.post_pending || t.flags.void_pending {
                    let posting = t.flags.post_pending;
                    let state = if posting { PendingState::Posted } else { PendingState::Voided };
                    let posted = if posting { e.amount_minor } else { 0 };
                    let released = self.release(t.pending_id, posted, ts, state);
                    assert!(
                        record.released_minor == 0 || record.released_minor == released.amount_minor,
                        "journal: transfer {} released {} of pending {}, which holds {}",
                        t.id,
                        record.released_minor,
                        t.pending_id,
                        released.amount_minor
                    );
                    assert!(
                        e.debit_account_id == released.debit_account_id
                            && e.credit_account_id == released.credit_account_id,
                        "journal: transfer {} resolves pending {} between other accounts",
                        t.id,
                        t.pending_id
                    );
                    record.released_minor = released.amount_minor;
                    kind = if posting { EntryKind::PostPending } else { EntryKind::VoidPending };
                } else {
                    self.save_account(e.debit_account_id);
                    self.save_account(e.credit_account_id);
                    let amount = e.amount_minor as u128;
                    if t.flags.pending {
                        kind = EntryKind::Pending;
                        self.reserve(record);
                    } else {
                        kind = EntryKind::Posted;
                        self.count_kyc_credit(e.credit_account_id, e.amount_minor, ts);
                        self.update(e.debit_account_id, |a| a.debits_posted_minor += amount);
                        self.update(e.credit_account_id, |a| a.credits_posted_minor += amount);
                        self.settlement_on_posted(
                            e.debit_account_id,
                            e.credit_account_id,
                            t.currency,
                            e.amount_minor,
                            ts,
                        );
                    }
                }
                let id = t.id;
                self.record_entries(out, e, ts, id, kind, record.released_minor);
                self.recent_committed.insert(id, record.clone());
                self.note(Undo::Recent(id));
                out.record_ops.push(out.ops.len() as u32);
                out.records.push(record.clone());
            }
            Op::Fail(failed) => {
                // Failures are remembered outside linked chains only: nothing to undo.
                debug_assert!(self.undo.is_none());
                self.bump_timestamp(failed.timestamp_ns);
                self.recent_refused
                    .entry(failed.transfer.id)
                    .or_default()
                    .push(RefusedTransfer::from_legacy(failed));
            }
            Op::Refused(refused) => {
                debug_assert!(self.undo.is_none());
                self.bump_timestamp(refused.timestamp_ns);
                if refused.result == TransferResult::KycLimitExceeded {
                    self.count_kyc_refusal(&refused.scope, refused.credit_account_id, refused.timestamp_ns);
                }
                self.recent_refused.entry(refused.id).or_default().push(refused.clone());
            }
            Op::Expire { pending_id, timestamp_ns, effect }
            | Op::AutoPost { pending_id, timestamp_ns, effect } => {
                let posting = auto_post;
                let (pending_id, ts) = (*pending_id, *timestamp_ns);
                self.bump_timestamp(ts);
                let live = self.pendings.get(&pending_id).cloned();
                let live = live.unwrap_or_else(|| panic!("journal: expiring unknown pending {pending_id}"));
                assert!(
                    !posting || live.post_on_expiry,
                    "journal: auto-post of pending {pending_id} without the flag"
                );
                let state = if posting { PendingState::Posted } else { PendingState::Expired };
                let posted = if posting { live.amount_minor } else { 0 };
                let released = self.release(pending_id, posted, ts, state);
                assert!(
                    effect.amount_minor == 0 || *effect == released,
                    "journal: the expiry of pending {pending_id} recorded other accounts or amount"
                );
                *effect = released;
                let kind = if posting { EntryKind::PostPending } else { EntryKind::Expired };
                self.record_entries(out, released, ts, pending_id, kind, released.amount_minor);
                out.record_ops.push(out.ops.len() as u32);
                out.records.push(expiry_record(pending_id, &live, posting, ts));
            }
            Op::SetProfile(_)
            | Op::CloseWindow { .. }
            | Op::WindowTransition { .. }
            | Op::SettleWindow { .. }
            | Op::ConfirmSettlement { .. } => self.apply_settlement(&op),
            Op::RegisterParticipant { .. }
            | Op::AddApiKey { .. }
            | Op::RevokeApiKey { .. }
            | Op::BindCertificate { .. }
            | Op::UnbindCertificate { .. } => {
                self.apply_identity(&op);
                out.credentials_changed = true;
            }
            Op::RegisterHolder(_) | Op::SetKycPolicy { .. } => self.apply_holder(&op),
        }
        out.ops.push(op);
    }

    fn bump_timestamp(&mut self, ts: u64) {
        assert!(ts > self.last_timestamp_ns, "journal: timestamp {ts} not after {}", self.last_timestamp_ns);
        self.last_timestamp_ns = ts;
    }

    fn update(&mut self, id: AccountId, change: impl FnOnce(&mut Account)) {
        let account = self.accounts.get_mut(&id);
        let account = account.unwrap_or_else(|| panic!("journal: unknown account {id}"));
        change(account);
    }

    /// Records the statement entries of the op being applied (the next one pushed to `out`).
    fn record_entries(
        &mut self,
        out: &mut Output,
        e: Effect,
        ts: u64,
        transfer_id: TransferId,
        kind: EntryKind,
        released_minor: u64,
    ) {
        let op_index = out.ops.len() as u32;
        for (account_id, is_debit) in [(e.debit_account_id, true), (e.credit_account_id, false)] {
            out.entry_info.push((op_index, released_minor));
            let a = &self.accounts[&account_id];
            out.entries.push(Entry {
                account_id,
                timestamp_ns: ts,
                transfer_id,
                kind,
                is_debit,
                amount_minor: e.amount_minor,
                debits_pending_minor: a.debits_pending_minor,
                debits_posted_minor: a.debits_posted_minor,
                credits_pending_minor: a.credits_pending_minor,
                credits_posted_minor: a.credits_posted_minor,
            });
            out.touched_accounts.push(account_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferResult as R;

    const NOW: u64 = 1_000_000_000_000;
    const MS: u64 = 1_000_000;

    /// Puente itself (no ownership checks, system ids allowed): what most engine tests act as.
    pub(super) fn sys() -> Actor {
        Actor::system("tests")
    }

    fn new_account(id: AccountId, flags: AccountFlags, overdraft: u64) -> NewAccount {
        NewAccount {
            id,
            participant: "bank-a".into(),
            currency: CurrencyCode::USD,
            flags,
            overdraft_limit_minor: overdraft,
            holder_ref: String::new(),
            metadata: Metadata::new(),
        }
    }

    const DEBIT_LIMIT: AccountFlags =
        AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: false };
    const CREDIT_LIMIT: AccountFlags =
        AccountFlags { debits_must_not_exceed_credits: false, credits_must_not_exceed_debits: true };

    /// Accounts 1 and 2 without limits, 3 with a debit limit and 4 with a credit limit.
    fn engine() -> Engine {
        let mut engine = Engine::new(CurrencyTable::default());
        let mut out = Output::default();
        let accounts = vec![
            new_account(1, AccountFlags::default(), 0),
            new_account(2, AccountFlags::default(), 0),
            new_account(3, DEBIT_LIMIT, 0),
            new_account(4, CREDIT_LIMIT, 0),
        ];
        let outcomes = engine.create_accounts(&sys(), accounts, NOW, &mut out);
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        engine
    }

    /// A single-phase USD transfer (also used by the tests of `settlement` and `holders`).
    pub(super) fn transfer(id: TransferId, debit: AccountId, credit: AccountId, amount: u64) -> Transfer {
        Transfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount_minor: amount,
            currency: CurrencyCode::USD,
            flags: TransferFlags::default(),
            pending_id: 0,
            timeout_ms: 0,
            reference: String::new(),
            metadata: Metadata::new(),
        }
    }

    fn pending(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: u64,
        timeout_ms: u64,
    ) -> Transfer {
        let mut t = transfer(id, debit, credit, amount);
        t.flags.pending = true;
        t.timeout_ms = timeout_ms;
        t
    }

    fn resolve(id: TransferId, pending_id: TransferId, amount: u64, post: bool) -> Transfer {
        let mut t = transfer(id, 0, 0, amount);
        t.flags.post_pending = post;
        t.flags.void_pending = !post;
        t.pending_id = pending_id;
        t
    }

    fn linked(mut t: Transfer) -> Transfer {
        t.flags.linked = true;
        t
    }

    fn run(engine: &mut Engine, batch: &[Transfer], now: u64) -> Vec<TransferOutcome> {
        let mut out = Output::default();
        let outcomes = engine.create_transfers(&Prefetched::default(), &sys(), batch, now, &mut out);
        engine.check_invariants().unwrap();
        outcomes
    }

    /// How a pending transfer resolved in the current group ended.
    fn resolved(engine: &Engine, id: TransferId) -> Option<PendingState> {
        engine.recent_resolved().find(|(i, _)| *i == id).map(|(_, (state, _))| state)
    }

    fn results(outcomes: &[TransferOutcome]) -> Vec<TransferResult> {
        outcomes.iter().map(|o| o.result).collect()
    }

    /// (debits_pending, debits_posted, credits_pending, credits_posted)
    fn balances(engine: &Engine, id: AccountId) -> (u128, u128, u128, u128) {
        let a = engine.account(id).unwrap();
        (a.debits_pending_minor, a.debits_posted_minor, a.credits_pending_minor, a.credits_posted_minor)
    }

    #[test]
    fn partial_post_releases_the_whole_reservation() {
        let mut e = engine();
        assert_eq!(results(&run(&mut e, &[pending(10, 1, 2, 100, 0)], NOW)), [R::Ok]);
        assert_eq!(balances(&e, 1), (100, 0, 0, 0));
        assert_eq!(
            results(&run(&mut e, &[resolve(11, 10, 101, true)], NOW)),
            [R::ExceedsPendingTransferAmount]
        );
        assert_eq!(results(&run(&mut e, &[resolve(12, 10, 60, true)], NOW)), [R::Ok]);
        assert_eq!(balances(&e, 1), (0, 60, 0, 0));
        assert_eq!(balances(&e, 2), (0, 0, 0, 60));
        assert!(e.pending(10).is_none(), "a resolved pending transfer leaves memory");
        assert_eq!(resolved(&e, 10), Some(PendingState::Posted));
        // A post of 0 means the full amount.
        run(&mut e, &[pending(20, 1, 2, 40, 0)], NOW);
        assert_eq!(results(&run(&mut e, &[resolve(21, 20, 0, true)], NOW)), [R::Ok]);
        assert_eq!(balances(&e, 1), (0, 100, 0, 0));
    }

    #[test]
    fn void_releases_and_resolves() {
        let mut e = engine();
        run(&mut e, &[pending(10, 1, 2, 100, 5_000)], NOW);
        assert_eq!(e.next_expiry_ns(), Some(e.last_timestamp_ns() + 5_000 * MS));
        // A void's amount is 0 or the pending amount.
        assert_eq!(
            results(&run(&mut e, &[resolve(11, 10, 50, false)], NOW)),
            [R::ExceedsPendingTransferAmount]
        );
        assert_eq!(results(&run(&mut e, &[resolve(12, 10, 0, false)], NOW)), [R::Ok]);
        assert_eq!(balances(&e, 1), (0, 0, 0, 0));
        assert_eq!(balances(&e, 2), (0, 0, 0, 0));
        assert_eq!(e.next_expiry_ns(), None);
        assert_eq!(
            results(&run(&mut e, &[resolve(13, 10, 0, true)], NOW)),
            [R::PendingTransferAlreadyVoided]
        );
        assert_eq!(
            results(&run(&mut e, &[resolve(14, 10, 0, false)], NOW)),
            [R::PendingTransferAlreadyVoided]
        );
        // Resolving something that is not a pending transfer.
        run(&mut e, &[transfer(15, 1, 2, 1)], NOW);
        assert_eq!(results(&run(&mut e, &[resolve(16, 15, 0, false)], NOW)), [R::PendingTransferNotPending]);
        assert_eq!(results(&run(&mut e, &[resolve(17, 99, 0, false)], NOW)), [R::PendingTransferNotFound]);
    }

    #[test]
    fn post_after_expiry_fails() {
        let mut e = engine();
        let created = run(&mut e, &[pending(10, 1, 2, 100, 3)], NOW)[0].timestamp_ns;
        run(&mut e, &[pending(20, 1, 2, 5, 3)], NOW);
        let expires_at = created + 3 * MS;
        assert_eq!(e.pending(10).unwrap().expires_at_ns, expires_at);
        // Just before the deadline it can be posted; at the deadline it cannot, even before
        // the writer swept it.
        assert_eq!(results(&run(&mut e, &[resolve(21, 20, 0, true)], expires_at - 1)), [R::Ok]);
        assert_eq!(
            results(&run(&mut e, &[resolve(11, 10, 0, true)], expires_at)),
            [R::PendingTransferExpired]
        );
        assert_eq!(balances(&e, 1), (100, 5, 0, 0));
        let mut out = Output::default();
        assert_eq!(e.expire_due(expires_at - 1, &mut out), 0);
        assert_eq!(e.expire_due(expires_at, &mut out), 1);
        e.check_invariants().unwrap();
        assert_eq!(balances(&e, 1), (0, 5, 0, 0));
        assert_eq!(balances(&e, 2), (0, 0, 0, 5));
        assert!(e.pending(10).is_none(), "a resolved pending transfer leaves memory");
        assert_eq!(resolved(&e, 10), Some(PendingState::Expired));
        assert_eq!(out.entries.iter().filter(|x| x.kind == EntryKind::Expired).count(), 2);
        assert_eq!(
            results(&run(&mut e, &[resolve(12, 10, 0, false)], expires_at)),
            [R::PendingTransferExpired]
        );
        assert_eq!(e.expire_due(u64::MAX - 1, &mut out), 0);
        // The failure on id 11 was remembered: a retry returns it, even though nothing changed.
        let retry = run(&mut e, &[resolve(11, 10, 0, true)], expires_at + 1);
        assert_eq!((retry[0].result, retry[0].replayed), (R::PendingTransferExpired, true));
    }

    #[test]
    fn post_twice() {
        let mut e = engine();
        run(&mut e, &[pending(10, 1, 2, 100, 0)], NOW);
        let first = run(&mut e, &[resolve(11, 10, 30, true)], NOW);
        assert_eq!(results(&first), [R::Ok]);
        // The same request again is a replay; a new id posting it again fails.
        let retry = run(&mut e, &[resolve(11, 10, 30, true)], NOW + 5);
        assert_eq!(
            (retry[0].result, retry[0].replayed, retry[0].timestamp_ns),
            (R::Ok, true, first[0].timestamp_ns)
        );
        assert_eq!(
            results(&run(&mut e, &[resolve(12, 10, 30, true)], NOW)),
            [R::PendingTransferAlreadyPosted]
        );
        assert_eq!(results(&run(&mut e, &[resolve(11, 10, 31, true)], NOW)), [R::ExistsWithDifferentAmount]);
        assert_eq!(balances(&e, 1), (0, 30, 0, 0));
        // Both posts in one batch: the second fails.
        run(&mut e, &[pending(20, 1, 2, 10, 0)], NOW);
        let both = run(&mut e, &[resolve(21, 20, 0, true), resolve(22, 20, 0, true)], NOW);
        assert_eq!(results(&both), [R::Ok, R::PendingTransferAlreadyPosted]);
    }

    #[test]
    fn linked_chain_rollback_restores_everything() {
        let mut e = engine();
        run(&mut e, &[transfer(1, 1, 3, 50), pending(2, 1, 2, 20, 10_000)], NOW);
        let before: Vec<Account> = (1..=4).map(|id| e.account(id).unwrap().clone()).collect();
        let expiry_before = e.next_expiry_ns();
        let chain = [
            linked(pending(10, 3, 2, 30, 1)),
            linked(resolve(11, 2, 5, true)),
            linked(transfer(12, 2, 1, 7)),
            linked(pending(13, 1, 2, 4, 0)),
            linked(resolve(14, 13, 0, false)),
            transfer(15, 3, 1, 21), // 30 are reserved by #10 out of 50: fails
        ];
        let outcomes = run(&mut e, &chain, NOW);
        assert_eq!(
            results(&outcomes),
            [
                R::LinkedEventFailed,
                R::LinkedEventFailed,
                R::LinkedEventFailed,
                R::LinkedEventFailed,
                R::LinkedEventFailed,
                R::ExceedsCredits
            ]
        );
        assert!(outcomes[..5].iter().all(|o| o.timestamp_ns == 0 && !o.replayed));
        let after: Vec<Account> = (1..=4).map(|id| e.account(id).unwrap().clone()).collect();
        assert_eq!(after, before);
        assert_eq!(e.next_expiry_ns(), expiry_before);
        assert!(e.pending(10).is_none() && e.pending(13).is_none());
        assert_eq!(e.pending(2).unwrap().state, PendingState::Pending, "the rollback restored it");
        assert_eq!(resolved(&e, 2), None);
        // The rolled-back ids are free; the culprit's failure is remembered.
        assert_eq!(results(&run(&mut e, &[resolve(11, 2, 0, false)], NOW)), [R::Ok]);
        let culprit = run(&mut e, &[transfer(15, 3, 1, 21)], NOW);
        assert_eq!((culprit[0].result, culprit[0].replayed), (R::ExceedsCredits, true));
        // Within the limit the same chain (with new ids at the end) commits as one.
        let chain = [linked(pending(10, 3, 2, 30, 1)), linked(transfer(12, 2, 1, 7)), transfer(16, 3, 1, 20)];
        assert_eq!(results(&run(&mut e, &chain, NOW)), [R::Ok, R::Ok, R::Ok]);
        assert_eq!(balances(&e, 3), (30, 20, 0, 50));
        // An open chain at the end of the batch fails entirely without touching anything.
        let before: Vec<Account> = (1..=4).map(|id| e.account(id).unwrap().clone()).collect();
        let open = run(
            &mut e,
            &[transfer(30, 1, 2, 1), linked(transfer(31, 1, 2, 1)), linked(transfer(32, 1, 2, 1))],
            NOW,
        );
        assert_eq!(results(&open), [R::Ok, R::LinkedEventFailed, R::LinkedEventChainOpen]);
        assert_eq!(balances(&e, 1).1, before[0].debits_posted_minor + 1);
    }

    #[test]
    fn overdraft_limit() {
        let mut e = engine();
        let mut out = Output::default();
        let created = e.create_accounts(&sys(), vec![new_account(5, DEBIT_LIMIT, 100)], NOW, &mut out);
        assert!(created[0].result.is_ok());
        let bad = e.create_accounts(&sys(), vec![new_account(6, AccountFlags::default(), 1)], NOW, &mut out);
        assert_eq!(bad[0].result, AccountResult::OverdraftRequiresDebitLimit);
        assert_eq!(results(&run(&mut e, &[transfer(10, 5, 1, 101)], NOW)), [R::ExceedsCredits]);
        assert_eq!(results(&run(&mut e, &[pending(11, 5, 1, 60, 0)], NOW)), [R::Ok]);
        assert_eq!(results(&run(&mut e, &[transfer(12, 5, 1, 41)], NOW)), [R::ExceedsCredits]);
        assert_eq!(results(&run(&mut e, &[transfer(13, 5, 1, 40)], NOW)), [R::Ok]);
        assert_eq!(e.account(5).unwrap().available_balance_minor(), -100);
        // Credits make room.
        run(&mut e, &[transfer(14, 1, 5, 10)], NOW);
        assert_eq!(results(&run(&mut e, &[transfer(15, 5, 1, 11)], NOW)), [R::ExceedsCredits]);
        assert_eq!(results(&run(&mut e, &[transfer(16, 5, 1, 10)], NOW)), [R::Ok]);
        // Debit limit without overdraft: exactly the credits.
        assert_eq!(results(&run(&mut e, &[transfer(17, 3, 1, 1)], NOW)), [R::ExceedsCredits]);
    }

    #[test]
    fn credits_must_not_exceed_debits() {
        let mut e = engine();
        assert_eq!(results(&run(&mut e, &[transfer(10, 1, 4, 1)], NOW)), [R::ExceedsDebits]);
        run(&mut e, &[transfer(11, 4, 1, 50)], NOW);
        // Pending credits count against the limit; pending debits do not make room.
        assert_eq!(results(&run(&mut e, &[pending(12, 1, 4, 30, 0)], NOW)), [R::Ok]);
        assert_eq!(results(&run(&mut e, &[transfer(13, 1, 4, 21)], NOW)), [R::ExceedsDebits]);
        run(&mut e, &[pending(14, 4, 1, 100, 0)], NOW);
        assert_eq!(results(&run(&mut e, &[transfer(15, 1, 4, 21)], NOW)), [R::ExceedsDebits]);
        assert_eq!(results(&run(&mut e, &[transfer(16, 1, 4, 20)], NOW)), [R::Ok]);
        assert_eq!(balances(&e, 4), (100, 50, 30, 20));
    }

    #[test]
    fn timestamps_strictly_increase() {
        let mut e = engine();
        let mut seen = vec![e.last_timestamp_ns()];
        // Many events at one `now`, then a clock that goes backwards.
        for (i, now) in [NOW, NOW, NOW, NOW - 1_000, 5, NOW + 1, NOW + 1].into_iter().enumerate() {
            let id = 100 + i as u128 * 10;
            let batch = [transfer(id, 1, 2, 1), pending(id + 1, 1, 2, 1, 1), transfer(id + 2, 3, 1, 1)];
            let outcomes = run(&mut e, &batch, now);
            assert_eq!(results(&outcomes), [R::Ok, R::Ok, R::ExceedsCredits]);
            seen.extend(outcomes.iter().map(|o| o.timestamp_ns));
            let mut out = Output::default();
            e.expire_due(now + 2 * MS, &mut out);
            for op in &out.ops {
                let Op::Expire { timestamp_ns, .. } = op else { panic!("{op:?}") };
                seen.push(*timestamp_ns);
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(*seen.last().unwrap(), e.last_timestamp_ns());
    }

    /// A fresh engine rebuilt by applying `ops` in order (what recovery does).
    fn replay(ops: &[Op]) -> Engine {
        let mut engine = Engine::new(CurrencyTable::default());
        let mut sink = Output::default();
        for op in ops.iter().cloned() {
            engine.apply(op, &mut sink);
        }
        engine
    }

    fn hold(id: TransferId, post_on_expiry: bool, timeout_ms: u64) -> Transfer {
        let mut t = pending(id, 1, 2, 500, timeout_ms);
        t.flags.post_on_expiry = post_on_expiry;
        t
    }

    #[test]
    fn post_on_expiry_posts_in_full_at_the_timeout() {
        let mut engine = Engine::new(CurrencyTable::default());
        let mut out = Output::default();
        let accounts =
            vec![new_account(1, AccountFlags::default(), 0), new_account(2, AccountFlags::default(), 0)];
        engine.create_accounts(&sys(), accounts, 1_000, &mut out);
        let results =
            engine.create_transfers(&Prefetched::default(), &sys(), &[hold(10, true, 1)], 2_000, &mut out);
        assert_eq!(results[0].result, R::Ok);
        assert_eq!(engine.account(1).unwrap().debits_pending_minor, 500);
        // Before the timeout nothing happens; at it, the reservation posts.
        assert_eq!(engine.expire_due(2_000 + 999_999, &mut out), 0);
        assert_eq!(engine.expire_due(2_000 + 1_000_000, &mut out), 1);
        let debit = engine.account(1).unwrap();
        assert_eq!((debit.debits_pending_minor, debit.debits_posted_minor), (0, 500));
        assert_eq!(engine.account(2).unwrap().credits_posted_minor, 500);
        assert!(engine.pending(10).is_none(), "a resolved pending transfer leaves memory");
        assert_eq!(resolved(&engine, 10), Some(PendingState::Posted));
        assert!(matches!(out.ops.last(), Some(Op::AutoPost { pending_id: 10, .. })));
        assert_eq!(out.entries.last().unwrap().kind, EntryKind::PostPending);
        engine.check_invariants().unwrap();
        assert_eq!(replay(&out.ops).account(1), engine.account(1));
    }

    #[test]
    fn post_on_expiry_needs_a_pending_timeout() {
        let mut engine = engine();
        let no_timeout = hold(10, true, 0);
        let mut not_pending = hold(11, true, 5);
        not_pending.flags.pending = false;
        let outcomes = run(&mut engine, &[no_timeout, not_pending], NOW + MS);
        assert_eq!(results(&outcomes), [R::PostOnExpiryRequiresPendingTimeout; 2]);
    }

    #[test]
    fn closing_is_owner_checked_idempotent_and_replayed() {
        let mut engine = Engine::new(CurrencyTable::default());
        let mut out = Output::default();
        let accounts =
            vec![new_account(1, AccountFlags::default(), 0), new_account(2, AccountFlags::default(), 0)];
        engine.create_accounts(&sys(), accounts, 1_000, &mut out);
        let owner = "bank-a";
        assert_eq!(
            engine.close_account(&Actor::Participant("bank-b".into()), 1, 2_000, &mut out).result,
            AccountResult::AccountNotFound
        );
        assert_eq!(engine.close_account(&sys(), 9, 2_000, &mut out).result, AccountResult::AccountNotFound);
        let closed = engine.close_account(&Actor::Participant(owner.into()), 1, 2_000, &mut out);
        assert_eq!((closed.result, closed.replayed), (AccountResult::Ok, false));
        assert!(closed.account.unwrap().closed);
        let again = engine.close_account(&sys(), 1, 3_000, &mut out);
        assert_eq!((again.result, again.replayed), (AccountResult::Ok, true));
        let outcomes =
            engine.create_transfers(&Prefetched::default(), &sys(), &[transfer(5, 2, 1, 1)], 4_000, &mut out);
        assert_eq!(outcomes[0].result, R::CreditAccountClosed);
        assert!(replay(&out.ops).account(1).unwrap().closed);
    }
}
