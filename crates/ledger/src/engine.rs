//! The ledger's state machine. Pure: no I/O, no clock (the caller passes `now_ns`).
//!
//! Live processing and crash recovery share one function, [`Engine::apply`]: a request is
//! validated into journal [`Op`]s, each op is applied to the in-memory state, and recovery
//! re-applies the journal's ops in order. Whatever the live path computed, replay recomputes.

use std::collections::{BTreeSet, HashMap};

use puente_money::{AMOUNT_MAX_MINOR, CurrencyCode, CurrencyTable};
use serde::{Deserialize, Serialize};

use crate::types::*;

pub mod holders;
pub mod identity;
pub mod settlement;

use settlement::{SettlementState, SettlementUndo};

/// Most accounts one ledger holds (accounts live in memory: ~300 B each).
pub const ACCOUNTS_MAX: usize = 10_000_000;
/// Most pending transfers expired in one step.
pub const EXPIRE_BATCH_MAX: usize = BATCH_EVENTS_MAX;

/// One journal operation: the unit of durability and of replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    CreateAccount(Account),
    Transfer(TransferRecord),
    /// A remembered failure: no balance effect, only idempotency.
    Fail(FailedTransfer),
    /// A pending transfer timed out and released its funds.
    Expire {
        pending_id: TransferId,
        timestamp_ns: u64,
    },
    /// A pending transfer flagged `post_on_expiry` reached its timeout and posted in full
    /// (a cancellation window that closed without a cancellation).
    AutoPost {
        pending_id: TransferId,
        timestamp_ns: u64,
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
        policy: puente_identity::kyc::KycPolicy,
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

/// Where the engine looks up transfers that are not in memory (the store).
pub trait TransferLookup {
    /// A committed transfer (transfer ids of committed transfers are ledger-wide).
    fn committed(&self, id: TransferId) -> Result<Option<TransferRecord>, crate::LedgerError>;
    /// A remembered failure that binds `scope`: its own, or one remembered before scoping.
    fn refused(&self, id: TransferId, scope: &str) -> Result<Option<RefusedTransfer>, crate::LedgerError>;
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
    TransferRecord {
        transfer: Transfer {
            id: expiry_record_id(pending_id, posted),
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount_minor: pending.amount_minor,
            currency: pending.currency,
            flags: TransferFlags { post_pending: posted, void_pending: !posted, ..Default::default() },
            pending_id,
            timeout_ms: 0,
            reference: if posted { "posted at expiry".into() } else { "expired".into() },
            metadata: Metadata::new(),
        },
        // Like a client's void, an expiry's amount is the reservation it released.
        effect: Effect {
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount_minor: pending.amount_minor,
        },
        timestamp_ns,
        expires_at_ns: 0,
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
    Settlement(SettlementUndo),
    KycUsage((String, String), Option<puente_identity::kyc::MonthlyUsage>),
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
            accounts: HashMap::new(),
            pendings: HashMap::new(),
            expiry: BTreeSet::new(),
            recent_committed: HashMap::new(),
            recent_refused: HashMap::new(),
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
    }

    /// What the ledger has seen under `id` that answers a request of `scope`: the submitter's
    /// own remembered failure first, then a committed transfer (ledger-wide), then a failure
    /// remembered before scoping. Looks in memory first, then the store.
    fn seen(
        &self,
        lookup: &dyn TransferLookup,
        id: TransferId,
        scope: &str,
    ) -> Result<Option<Prior>, crate::LedgerError> {
        let own = self.recent_refused.get(&id).and_then(|all| all.iter().find(|r| r.binds(scope)));
        if let Some(refused) = own {
            return Ok(Some(Prior::Failed(refused.clone())));
        }
        if let Some(refused) = lookup.refused(id, scope)? {
            return Ok(Some(Prior::Failed(refused)));
        }
        if let Some(record) = self.recent_committed.get(&id) {
            return Ok(Some(Prior::Committed(record.clone())));
        }
        Ok(lookup.committed(id)?.map(Prior::Committed))
    }

    /// Whether a transfer was committed under `id` (in memory or in the store).
    fn committed(&self, lookup: &dyn TransferLookup, id: TransferId) -> Result<bool, crate::LedgerError> {
        Ok(self.recent_committed.contains_key(&id) || lookup.committed(id)?.is_some())
    }

    fn next_timestamp(&mut self, now_ns: u64) -> u64 {
        let ts = now_ns.max(self.last_timestamp_ns + 1);
        debug_assert!(ts > self.last_timestamp_ns);
        ts
    }

    // ----- accounts -----------------------------------------------------------------------

    pub fn create_accounts(
        &mut self,
        actor: &Actor,
        batch: Vec<NewAccount>,
        now_ns: u64,
        out: &mut Output,
    ) -> Vec<AccountOutcome> {
        assert!(batch.len() <= BATCH_EVENTS_MAX);
        let mut outcomes = Vec::with_capacity(batch.len());
        for new in batch {
            let result = self.validate_account(actor, &new);
            if result != AccountResult::Ok {
                outcomes.push(AccountOutcome { result, replayed: false, account: None });
                continue;
            }
            if let Some(existing) = self.accounts.get(&new.id) {
                // Another participant's account: the id is taken, and nothing more is said.
                if actor.owner().is_some_and(|a| a != existing.participant) {
                    outcomes.push(AccountOutcome {
                        result: AccountResult::IdAlreadyUsed,
                        replayed: false,
                        account: None,
                    });
                    continue;
                }
                let result = compare_account(existing, &new);
                let account = (result == AccountResult::Ok).then(|| existing.clone());
                outcomes.push(AccountOutcome { result, replayed: result == AccountResult::Ok, account });
                continue;
            }
            if self.accounts.len() >= ACCOUNTS_MAX {
                outcomes.push(AccountOutcome {
                    result: AccountResult::AccountsLimitReached,
                    replayed: false,
                    account: None,
                });
                continue;
            }
            let ts = self.next_timestamp(now_ns);
            let account = Account::from_new(new, ts);
            self.apply(Op::CreateAccount(account.clone()), out);
            outcomes.push(AccountOutcome {
                result: AccountResult::Ok,
                replayed: false,
                account: Some(account),
            });
        }
        outcomes
    }

    /// Closes an account: no new transfers may touch it. Refused while it has pending
    /// (reserved) amounts; closing a closed account is an idempotent success. Another
    /// participant's account is reported as not found.
    pub fn close_account(
        &mut self,
        actor: &Actor,
        id: AccountId,
        now_ns: u64,
        out: &mut Output,
    ) -> AccountOutcome {
        let refused = |result| AccountOutcome { result, replayed: false, account: None };
        let Some(account) = self.accounts.get(&id) else {
            return refused(AccountResult::AccountNotFound);
        };
        if actor.owner().is_some_and(|a| a != account.participant) {
            return refused(AccountResult::AccountNotFound);
        }
        if is_system_participant(&account.participant) && !actor.is_system() {
            return refused(AccountResult::AccountReserved);
        }
        if account.closed {
            return AccountOutcome {
                result: AccountResult::Ok,
                replayed: true,
                account: Some(account.clone()),
            };
        }
        if account.debits_pending_minor != 0 || account.credits_pending_minor != 0 {
            return refused(AccountResult::AccountHasPendingTransfers);
        }
        let timestamp_ns = self.next_timestamp(now_ns);
        self.apply(Op::CloseAccount { account_id: id, timestamp_ns }, out);
        AccountOutcome {
            result: AccountResult::Ok,
            replayed: false,
            account: self.accounts.get(&id).cloned(),
        }
    }

    fn validate_account(&self, actor: &Actor, new: &NewAccount) -> AccountResult {
        use AccountResult::*;
        if new.id == 0 {
            return IdMustNotBeZero;
        }
        if puente_core::ids::is_system_id(new.id) && !actor.is_system() {
            return IdReserved;
        }
        if !participant_valid(&new.participant)
            || actor.owner().is_some_and(|a| a != new.participant)
            || (is_system_participant(&new.participant) && !actor.is_system())
        {
            return ParticipantInvalid;
        }
        // An operator opens accounts only for registered participants (a participant's own
        // request names itself, and Puente's own participants are not in the registry).
        if matches!(actor, Actor::Operator(_)) && self.identity.participant(&new.participant).is_none() {
            return ParticipantNotFound;
        }
        if self.currencies.get(new.currency).is_err() {
            return CurrencyNotConfigured;
        }
        if new.flags.debits_must_not_exceed_credits && new.flags.credits_must_not_exceed_debits {
            return FlagsAreMutuallyExclusive;
        }
        if new.overdraft_limit_minor > 0 && !new.flags.debits_must_not_exceed_credits {
            return OverdraftRequiresDebitLimit;
        }
        if new.overdraft_limit_minor > AMOUNT_MAX_MINOR {
            return OverdraftTooLarge;
        }
        if new.holder_ref.len() > REFERENCE_LEN_MAX {
            return HolderRefTooLong;
        }
        if !metadata_fits(&new.metadata) {
            return MetadataTooLarge;
        }
        Ok
    }

    // ----- transfers ----------------------------------------------------------------------

    /// Processes one batch of transfers in order. Linked chains succeed or fail as one.
    pub fn create_transfers(
        &mut self,
        lookup: &dyn TransferLookup,
        actor: &Actor,
        batch: &[Transfer],
        now_ns: u64,
        out: &mut Output,
    ) -> Result<Vec<TransferOutcome>, crate::LedgerError> {
        assert!(batch.len() <= BATCH_EVENTS_MAX);
        let mut outcomes: Vec<TransferOutcome> = Vec::with_capacity(batch.len());
        let mut index = 0;
        while index < batch.len() {
            // A chain runs from `index` to the first event without `linked`.
            let mut end = index;
            while end < batch.len() && batch[end].flags.linked {
                end += 1;
            }
            if end == batch.len() {
                // The last event is linked: the chain is open, all of it fails.
                for i in index..batch.len() {
                    let result = if i + 1 == batch.len() {
                        TransferResult::LinkedEventChainOpen
                    } else {
                        TransferResult::LinkedEventFailed
                    };
                    outcomes.push(TransferOutcome { result, replayed: false, timestamp_ns: 0 });
                }
                break;
            }
            let chain = &batch[index..=end];
            if chain.len() == 1 {
                let outcome = self.create_transfer(lookup, actor, &chain[0], now_ns, out)?;
                outcomes.push(outcome);
            } else {
                self.run_chain(lookup, actor, chain, now_ns, out, &mut outcomes)?;
            }
            index = end + 1;
        }
        debug_assert_eq!(outcomes.len(), batch.len());
        Ok(outcomes)
    }

    fn run_chain(
        &mut self,
        lookup: &dyn TransferLookup,
        actor: &Actor,
        chain: &[Transfer],
        now_ns: u64,
        out: &mut Output,
        outcomes: &mut Vec<TransferOutcome>,
    ) -> Result<(), crate::LedgerError> {
        let marks = (out.ops.len(), out.entries.len(), out.records.len());
        self.undo = Some(Vec::new());
        let mut chain_outcomes = Vec::with_capacity(chain.len());
        let mut failed: Option<(usize, TransferOutcome)> = None;
        for (i, transfer) in chain.iter().enumerate() {
            // Inside a chain, a failure is not remembered until the chain is rolled back.
            let outcome = self.create_transfer_inner(lookup, actor, transfer, now_ns, out, false);
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(error) => {
                    self.rollback(marks, out);
                    return Err(error);
                }
            };
            if outcome.result != TransferResult::Ok {
                failed = Some((i, outcome));
                break;
            }
            chain_outcomes.push(outcome);
        }
        match failed {
            None => {
                self.undo = None;
                outcomes.extend(chain_outcomes);
            }
            Some((culprit, outcome)) => {
                self.rollback(marks, out);
                let mut outcome = outcome;
                if outcome.result.is_remembered_failure() && !outcome.replayed {
                    outcome.timestamp_ns =
                        self.remember_failure(actor, &chain[culprit], outcome.result, now_ns, out);
                }
                for i in 0..chain.len() {
                    if i == culprit {
                        outcomes.push(outcome.clone());
                    } else {
                        outcomes.push(TransferOutcome {
                            result: TransferResult::LinkedEventFailed,
                            replayed: false,
                            timestamp_ns: 0,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Undoes a failed chain: state from the undo log, output back to `marks` (ops, entries,
    /// records).
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
                Undo::Settlement(step) => self.settlement_rollback(step),
                Undo::KycUsage(key, previous) => self.undo_kyc_usage(key, previous),
            }
        }
        out.ops.truncate(marks.0);
        out.entries.truncate(marks.1);
        out.records.truncate(marks.2);
        // Timestamps consumed by the rolled-back chain stay consumed: gaps are allowed,
        // reuse is not.
    }

    /// One transfer outside any chain.
    pub fn create_transfer(
        &mut self,
        lookup: &dyn TransferLookup,
        actor: &Actor,
        transfer: &Transfer,
        now_ns: u64,
        out: &mut Output,
    ) -> Result<TransferOutcome, crate::LedgerError> {
        self.create_transfer_inner(lookup, actor, transfer, now_ns, out, true)
    }

    fn create_transfer_inner(
        &mut self,
        lookup: &dyn TransferLookup,
        actor: &Actor,
        transfer: &Transfer,
        now_ns: u64,
        out: &mut Output,
        remember: bool,
    ) -> Result<TransferOutcome, crate::LedgerError> {
        let fail = |result| TransferOutcome { result, replayed: false, timestamp_ns: 0 };
        let result = self.validate_transfer(actor, transfer);
        if result != TransferResult::Ok {
            return Ok(fail(result));
        }
        if let Some(prior) = self.seen(lookup, transfer.id, actor.scope())? {
            // A committed transfer that touches none of the caller's accounts was never the
            // caller's: its id is taken, and nothing of it (fields, outcome) is said.
            if let (Some(owner), Prior::Committed(record)) = (actor.owner(), &prior) {
                let owns = |id: &AccountId| self.accounts.get(id).is_some_and(|a| a.participant == owner);
                if !owns(&record.effect.debit_account_id) && !owns(&record.effect.credit_account_id) {
                    return Ok(fail(TransferResult::IdAlreadyUsed));
                }
            }
            let result = match &prior {
                Prior::Committed(record) => compare_transfer(&record.transfer, transfer),
                Prior::Failed(refused) => compare_refused(refused, transfer),
            };
            if result != TransferResult::Ok {
                return Ok(fail(result));
            }
            return Ok(match prior {
                Prior::Committed(record) => TransferOutcome {
                    result: TransferResult::Ok,
                    replayed: true,
                    timestamp_ns: record.timestamp_ns,
                },
                Prior::Failed(refused) => TransferOutcome {
                    result: refused.result,
                    replayed: true,
                    timestamp_ns: refused.timestamp_ns,
                },
            });
        }
        let effect = match self.check_state(lookup, actor, transfer, now_ns)? {
            Ok(effect) => effect,
            Err(result) => {
                let mut outcome = fail(result);
                if remember && result.is_remembered_failure() {
                    outcome.timestamp_ns = self.remember_failure(actor, transfer, result, now_ns, out);
                }
                return Ok(outcome);
            }
        };
        let timestamp_ns = self.next_timestamp(now_ns);
        let expires_at_ns = if transfer.flags.pending && transfer.timeout_ms > 0 {
            timestamp_ns.saturating_add(transfer.timeout_ms.saturating_mul(1_000_000))
        } else {
            0
        };
        let record = TransferRecord { transfer: transfer.clone(), effect, timestamp_ns, expires_at_ns };
        self.apply(Op::Transfer(record), out);
        Ok(TransferOutcome { result: TransferResult::Ok, replayed: false, timestamp_ns })
    }

    fn remember_failure(
        &mut self,
        actor: &Actor,
        transfer: &Transfer,
        result: TransferResult,
        now_ns: u64,
        out: &mut Output,
    ) -> u64 {
        let timestamp_ns = self.next_timestamp(now_ns);
        self.apply(Op::Refused(RefusedTransfer::new(actor.scope(), transfer, result, timestamp_ns)), out);
        timestamp_ns
    }

    fn validate_transfer(&self, actor: &Actor, t: &Transfer) -> TransferResult {
        use TransferResult::*;
        if t.id == 0 {
            return IdMustNotBeZero;
        }
        // System ids (settlement, FX legs and cancels, expiry records) are Puente's alone.
        if puente_core::ids::is_system_id(t.id) && !actor.is_system() {
            return IdReserved;
        }
        let kinds = [t.flags.pending, t.flags.post_pending, t.flags.void_pending];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return FlagsAreMutuallyExclusive;
        }
        if t.flags.post_on_expiry && (!t.flags.pending || t.timeout_ms == 0) {
            return PostOnExpiryRequiresPendingTimeout;
        }
        let resolving = t.flags.post_pending || t.flags.void_pending;
        if resolving {
            if t.pending_id == 0 {
                return PendingIdMustNotBeZero;
            }
            if t.pending_id == t.id {
                return PendingIdMustBeDifferent;
            }
            if t.timeout_ms != 0 {
                return TimeoutReservedForPendingTransfer;
            }
            if t.debit_account_id != 0 && t.debit_account_id == t.credit_account_id {
                return AccountsMustBeDifferent;
            }
        } else {
            if t.debit_account_id == 0 {
                return DebitAccountIdMustNotBeZero;
            }
            if t.credit_account_id == 0 {
                return CreditAccountIdMustNotBeZero;
            }
            if t.debit_account_id == t.credit_account_id {
                return AccountsMustBeDifferent;
            }
            if t.pending_id != 0 {
                return PendingIdMustBeZero;
            }
            if t.timeout_ms != 0 && !t.flags.pending {
                return TimeoutReservedForPendingTransfer;
            }
            if t.amount_minor == 0 {
                return AmountMustNotBeZero;
            }
        }
        if t.timeout_ms > TIMEOUT_MAX_MS {
            return TimeoutTooLarge;
        }
        if t.amount_minor > AMOUNT_MAX_MINOR {
            return AmountTooLarge;
        }
        if self.currencies.get(t.currency).is_err() {
            return CurrencyNotConfigured;
        }
        if t.reference.len() > REFERENCE_LEN_MAX {
            return ReferenceTooLong;
        }
        if !metadata_fits(&t.metadata) {
            return MetadataTooLarge;
        }
        Ok
    }

    /// Checks a transfer against the ledger's state; returns what it would do.
    fn check_state(
        &self,
        lookup: &dyn TransferLookup,
        actor: &Actor,
        t: &Transfer,
        now_ns: u64,
    ) -> Result<Result<Effect, TransferResult>, crate::LedgerError> {
        if t.flags.post_pending || t.flags.void_pending {
            // A pending transfer Puente made (an FX leg held for a cancellation window) is
            // resolved only by Puente: a sender voiding one leg alone would be refunded while
            // the other legs still pay the recipient.
            if puente_core::ids::is_system_id(t.pending_id) && !actor.is_system() {
                return Ok(Err(TransferResult::PendingTransferNotFound));
            }
            let Some(p) = self.pendings.get(&t.pending_id) else {
                let known = self.committed(lookup, t.pending_id)?;
                return Ok(Err(if known {
                    TransferResult::PendingTransferNotPending
                } else {
                    TransferResult::PendingTransferNotFound
                }));
            };
            // Another participant's pending transfer does not exist for this caller.
            if let Some(owner) = actor.owner() {
                let owned = self.accounts.get(&p.debit_account_id).is_some_and(|a| a.participant == owner);
                if !owned {
                    return Ok(Err(TransferResult::PendingTransferNotFound));
                }
            }
            match p.state {
                PendingState::Pending => {}
                PendingState::Posted => return Ok(Err(TransferResult::PendingTransferAlreadyPosted)),
                PendingState::Voided => return Ok(Err(TransferResult::PendingTransferAlreadyVoided)),
                PendingState::Expired => return Ok(Err(TransferResult::PendingTransferExpired)),
            }
            if p.expires_at_ns != 0 && p.expires_at_ns <= now_ns {
                return Ok(Err(TransferResult::PendingTransferExpired));
            }
            if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
                return Ok(Err(TransferResult::PendingTransferHasDifferentDebitAccountId));
            }
            if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
                return Ok(Err(TransferResult::PendingTransferHasDifferentCreditAccountId));
            }
            if t.currency != p.currency {
                return Ok(Err(TransferResult::PendingTransferHasDifferentCurrency));
            }
            let amount_minor = if t.flags.void_pending {
                if t.amount_minor != 0 && t.amount_minor != p.amount_minor {
                    return Ok(Err(TransferResult::ExceedsPendingTransferAmount));
                }
                p.amount_minor
            } else if t.amount_minor == 0 {
                p.amount_minor
            } else if t.amount_minor > p.amount_minor {
                return Ok(Err(TransferResult::ExceedsPendingTransferAmount));
            } else {
                t.amount_minor
            };
            return Ok(Ok(Effect {
                debit_account_id: p.debit_account_id,
                credit_account_id: p.credit_account_id,
                amount_minor,
            }));
        }
        let Some(debit) = self.accounts.get(&t.debit_account_id) else {
            return Ok(Err(TransferResult::DebitAccountNotFound));
        };
        let Some(credit) = self.accounts.get(&t.credit_account_id) else {
            return Ok(Err(TransferResult::CreditAccountNotFound));
        };
        // Another participant's account does not exist for this caller (existence must not leak).
        if actor.owner().is_some_and(|a| a != debit.participant) {
            return Ok(Err(TransferResult::DebitAccountNotFound));
        }
        if debit.currency != credit.currency {
            return Ok(Err(TransferResult::AccountsMustHaveSameCurrency));
        }
        if t.currency != debit.currency {
            return Ok(Err(TransferResult::TransferCurrencyMismatch));
        }
        if debit.closed {
            return Ok(Err(TransferResult::DebitAccountClosed));
        }
        if credit.closed {
            return Ok(Err(TransferResult::CreditAccountClosed));
        }
        let amount = t.amount_minor as u128;
        // Balances are u128 and amounts at most 10^17: overflow needs > 10^21 transfers.
        let debits = debit.debits_pending_minor + debit.debits_posted_minor;
        let credits = credit.credits_pending_minor + credit.credits_posted_minor;
        if debits.checked_add(amount).is_none() || credits.checked_add(amount).is_none() {
            return Ok(Err(TransferResult::OverflowsBalance));
        }
        if debit.flags.debits_must_not_exceed_credits
            && debits + amount > debit.credits_posted_minor + debit.overdraft_limit_minor as u128
        {
            return Ok(Err(TransferResult::ExceedsCredits));
        }
        if credit.flags.credits_must_not_exceed_debits && credits + amount > credit.debits_posted_minor {
            return Ok(Err(TransferResult::ExceedsDebits));
        }
        if let Err(result) = self.check_net_debit_cap(t) {
            return Ok(Err(result));
        }
        // The credited account's holder: its KYC tier's monthly and balance limits.
        if let Err(result) = self.check_kyc_credit(
            actor,
            t.credit_account_id,
            t.amount_minor,
            now_ns.max(self.last_timestamp_ns + 1),
        ) {
            return Ok(Err(result));
        }
        Ok(Ok(Effect {
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount_minor: t.amount_minor,
        }))
    }

    // ----- expiry -------------------------------------------------------------------------

    /// Expires every pending transfer whose timeout has passed (at most EXPIRE_BATCH_MAX).
    /// Returns how many were expired.
    pub fn expire_due(&mut self, now_ns: u64, out: &mut Output) -> usize {
        let mut due = Vec::new();
        for (at, id) in self.expiry.iter() {
            if *at > now_ns || due.len() >= EXPIRE_BATCH_MAX {
                break;
            }
            due.push(*id);
        }
        for pending_id in &due {
            let timestamp_ns = self.next_timestamp(now_ns);
            let post = self.pendings.get(pending_id).is_some_and(|p| p.post_on_expiry);
            let op = if post {
                Op::AutoPost { pending_id: *pending_id, timestamp_ns }
            } else {
                Op::Expire { pending_id: *pending_id, timestamp_ns }
            };
            self.apply(op, out);
        }
        due.len()
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
    pub fn apply(&mut self, op: Op, out: &mut Output) {
        match &op {
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
                self.save_account(e.debit_account_id);
                self.save_account(e.credit_account_id);
                let amount = e.amount_minor as u128;
                let kind;
                if t.flags.pending {
                    kind = EntryKind::Pending;
                    let kyc_counted = self.count_kyc_credit(e.credit_account_id, e.amount_minor, ts);
                    self.update(e.debit_account_id, |a| a.debits_pending_minor += amount);
                    self.update(e.credit_account_id, |a| a.credits_pending_minor += amount);
                    self.save_pending(t.id);
                    self.pendings.insert(
                        t.id,
                        Pending {
                            debit_account_id: e.debit_account_id,
                            credit_account_id: e.credit_account_id,
                            amount_minor: e.amount_minor,
                            currency: t.currency,
                            expires_at_ns: record.expires_at_ns,
                            post_on_expiry: t.flags.post_on_expiry,
                            state: PendingState::Pending,
                            created_at_ns: ts,
                            kyc_counted,
                        },
                    );
                    if record.expires_at_ns != 0 {
                        self.expiry.insert((record.expires_at_ns, t.id));
                        self.note(Undo::ExpiryInserted(record.expires_at_ns, t.id));
                    }
                    self.settlement_on_pending(
                        e.debit_account_id,
                        e.credit_account_id,
                        t.currency,
                        amount as i128,
                    );
                } else if t.flags.post_pending || t.flags.void_pending {
                    let p = self.pendings.get(&t.pending_id).cloned();
                    let p =
                        p.unwrap_or_else(|| panic!("journal: resolving unknown pending {}", t.pending_id));
                    assert_eq!(
                        p.state,
                        PendingState::Pending,
                        "journal: pending {} resolved twice",
                        t.pending_id
                    );
                    let reserved = p.amount_minor as u128;
                    let posted = if t.flags.post_pending { amount } else { 0 };
                    kind = if t.flags.post_pending { EntryKind::PostPending } else { EntryKind::VoidPending };
                    self.update(e.debit_account_id, |a| {
                        a.debits_pending_minor -= reserved;
                        a.debits_posted_minor += posted;
                    });
                    self.update(e.credit_account_id, |a| {
                        a.credits_pending_minor -= reserved;
                        a.credits_posted_minor += posted;
                    });
                    self.save_pending(t.pending_id);
                    if p.expires_at_ns != 0 && self.expiry.remove(&(p.expires_at_ns, t.pending_id)) {
                        self.note(Undo::ExpiryRemoved(p.expires_at_ns, t.pending_id));
                    }
                    let state =
                        if t.flags.post_pending { PendingState::Posted } else { PendingState::Voided };
                    if let Some(p) = self.pendings.get_mut(&t.pending_id) {
                        p.state = state;
                    }
                    // The credit that will not arrive gives its KYC room back.
                    if p.kyc_counted {
                        self.release_kyc_credit(
                            p.credit_account_id,
                            p.amount_minor - posted as u64,
                            p.created_at_ns,
                        );
                    }
                    self.settlement_on_pending(
                        p.debit_account_id,
                        p.credit_account_id,
                        p.currency,
                        -(reserved as i128),
                    );
                    let posted = posted as u64;
                    self.settlement_on_posted(
                        e.debit_account_id,
                        e.credit_account_id,
                        p.currency,
                        posted,
                        ts,
                    );
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
                self.record_entries(out, e, ts, t.id, kind);
                self.recent_committed.insert(t.id, record.clone());
                self.note(Undo::Recent(t.id));
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
            Op::Expire { pending_id, timestamp_ns } | Op::AutoPost { pending_id, timestamp_ns } => {
                let posting = matches!(op, Op::AutoPost { .. });
                self.bump_timestamp(*timestamp_ns);
                let p = self.pendings.get(pending_id).cloned();
                let p = p.unwrap_or_else(|| panic!("journal: expiring unknown pending {pending_id}"));
                assert_eq!(
                    p.state,
                    PendingState::Pending,
                    "journal: pending {pending_id} expired after resolution"
                );
                let reserved = p.amount_minor as u128;
                self.save_account(p.debit_account_id);
                self.save_account(p.credit_account_id);
                assert!(
                    !posting || p.post_on_expiry,
                    "journal: auto-post of pending {pending_id} without the flag"
                );
                let posted = if posting { reserved } else { 0 };
                self.update(p.debit_account_id, |a| {
                    a.debits_pending_minor -= reserved;
                    a.debits_posted_minor += posted;
                });
                self.update(p.credit_account_id, |a| {
                    a.credits_pending_minor -= reserved;
                    a.credits_posted_minor += posted;
                });
                self.save_pending(*pending_id);
                if self.expiry.remove(&(p.expires_at_ns, *pending_id)) {
                    self.note(Undo::ExpiryRemoved(p.expires_at_ns, *pending_id));
                }
                if let Some(p) = self.pendings.get_mut(pending_id) {
                    p.state = if posting { PendingState::Posted } else { PendingState::Expired };
                }
                if !posting && p.kyc_counted {
                    self.release_kyc_credit(p.credit_account_id, p.amount_minor, p.created_at_ns);
                }
                self.settlement_on_pending(
                    p.debit_account_id,
                    p.credit_account_id,
                    p.currency,
                    -(reserved as i128),
                );
                let posted = posted as u64;
                self.settlement_on_posted(
                    p.debit_account_id,
                    p.credit_account_id,
                    p.currency,
                    posted,
                    *timestamp_ns,
                );
                let effect = Effect {
                    debit_account_id: p.debit_account_id,
                    credit_account_id: p.credit_account_id,
                    amount_minor: p.amount_minor,
                };
                let kind = if posting { EntryKind::PostPending } else { EntryKind::Expired };
                self.record_entries(out, effect, *timestamp_ns, *pending_id, kind);
                out.records.push(expiry_record(*pending_id, &p, posting, *timestamp_ns));
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

    fn record_entries(
        &mut self,
        out: &mut Output,
        e: Effect,
        ts: u64,
        transfer_id: TransferId,
        kind: EntryKind,
    ) {
        for (account_id, is_debit) in [(e.debit_account_id, true), (e.credit_account_id, false)] {
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

    // ----- invariants ---------------------------------------------------------------------

    /// Per currency, total debits equal total credits (posted and pending), and no account
    /// breaks its limits. Returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut totals: HashMap<CurrencyCode, [u128; 4]> = HashMap::new();
        for a in self.accounts.values() {
            let t = totals.entry(a.currency).or_default();
            t[0] += a.debits_pending_minor;
            t[1] += a.debits_posted_minor;
            t[2] += a.credits_pending_minor;
            t[3] += a.credits_posted_minor;
            if !a.within_limits() {
                return Err(format!("account {} breaks its balance limits", a.id));
            }
        }
        for (currency, [dp, dpo, cp, cpo]) in totals {
            if dp != cp {
                return Err(format!("{currency}: pending debits {dp} != pending credits {cp}"));
            }
            if dpo != cpo {
                return Err(format!("{currency}: posted debits {dpo} != posted credits {cpo}"));
            }
        }
        let reserved: u128 = self
            .pendings
            .values()
            .filter(|p| p.state == PendingState::Pending)
            .map(|p| p.amount_minor as u128)
            .sum();
        let pending_total: u128 = self.accounts.values().map(|a| a.debits_pending_minor).sum();
        if reserved != pending_total {
            return Err(format!("open pending transfers hold {reserved} but accounts show {pending_total}"));
        }
        self.check_settlement_invariants()
    }
}

fn compare_account(existing: &Account, new: &NewAccount) -> AccountResult {
    use AccountResult::*;
    if existing.participant != new.participant {
        ExistsWithDifferentParticipant
    } else if existing.currency != new.currency {
        ExistsWithDifferentCurrency
    } else if existing.flags != new.flags {
        ExistsWithDifferentFlags
    } else if existing.overdraft_limit_minor != new.overdraft_limit_minor {
        ExistsWithDifferentOverdraftLimit
    } else if existing.holder_ref != new.holder_ref {
        ExistsWithDifferentHolderRef
    } else if existing.metadata != new.metadata {
        ExistsWithDifferentMetadata
    } else {
        Ok
    }
}

/// A retry against a remembered failure: the same checks as [`compare_transfer`], the free text
/// through its digests.
fn compare_refused(prior: &RefusedTransfer, t: &Transfer) -> TransferResult {
    use TransferResult::*;
    if prior.flags != t.flags {
        ExistsWithDifferentFlags
    } else if prior.debit_account_id != t.debit_account_id {
        ExistsWithDifferentDebitAccountId
    } else if prior.credit_account_id != t.credit_account_id {
        ExistsWithDifferentCreditAccountId
    } else if prior.amount_minor != t.amount_minor {
        ExistsWithDifferentAmount
    } else if prior.currency != t.currency {
        ExistsWithDifferentCurrency
    } else if prior.pending_id != t.pending_id {
        ExistsWithDifferentPendingId
    } else if prior.timeout_ms != t.timeout_ms {
        ExistsWithDifferentTimeout
    } else if prior.reference_digest != reference_digest(&t.reference) {
        ExistsWithDifferentReference
    } else if prior.metadata_digest != metadata_digest(&t.metadata) {
        ExistsWithDifferentMetadata
    } else {
        Ok
    }
}

fn compare_transfer(prior: &Transfer, t: &Transfer) -> TransferResult {
    use TransferResult::*;
    if prior.flags != t.flags {
        ExistsWithDifferentFlags
    } else if prior.debit_account_id != t.debit_account_id {
        ExistsWithDifferentDebitAccountId
    } else if prior.credit_account_id != t.credit_account_id {
        ExistsWithDifferentCreditAccountId
    } else if prior.amount_minor != t.amount_minor {
        ExistsWithDifferentAmount
    } else if prior.currency != t.currency {
        ExistsWithDifferentCurrency
    } else if prior.pending_id != t.pending_id {
        ExistsWithDifferentPendingId
    } else if prior.timeout_ms != t.timeout_ms {
        ExistsWithDifferentTimeout
    } else if prior.reference != t.reference {
        ExistsWithDifferentReference
    } else if prior.metadata != t.metadata {
        ExistsWithDifferentMetadata
    } else {
        Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferResult as R;

    const NOW: u64 = 1_000_000_000_000;
    const MS: u64 = 1_000_000;

    /// Nothing is in the store: the engine's own overlay holds everything decided.
    /// A store that has seen nothing (also used by the tests of `settlement` and `holders`).
    pub(super) struct NoStore;

    impl TransferLookup for NoStore {
        fn committed(&self, _id: TransferId) -> Result<Option<TransferRecord>, crate::LedgerError> {
            Ok(None)
        }
        fn refused(
            &self,
            _id: TransferId,
            _scope: &str,
        ) -> Result<Option<RefusedTransfer>, crate::LedgerError> {
            Ok(None)
        }
    }

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
        let outcomes = engine.create_transfers(&NoStore, &sys(), batch, now, &mut out).unwrap();
        engine.check_invariants().unwrap();
        outcomes
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
        assert_eq!(e.pending(10).unwrap().state, PendingState::Posted);
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
        assert_eq!(e.pending(10).unwrap().state, PendingState::Expired);
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
        assert_eq!(e.pending(2).unwrap().state, PendingState::Pending);
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
            engine.create_transfers(&NoStore, &sys(), &[hold(10, true, 1)], 2_000, &mut out).unwrap();
        assert_eq!(results[0].result, R::Ok);
        assert_eq!(engine.account(1).unwrap().debits_pending_minor, 500);
        // Before the timeout nothing happens; at it, the reservation posts.
        assert_eq!(engine.expire_due(2_000 + 999_999, &mut out), 0);
        assert_eq!(engine.expire_due(2_000 + 1_000_000, &mut out), 1);
        let debit = engine.account(1).unwrap();
        assert_eq!((debit.debits_pending_minor, debit.debits_posted_minor), (0, 500));
        assert_eq!(engine.account(2).unwrap().credits_posted_minor, 500);
        assert_eq!(engine.pending(10).unwrap().state, PendingState::Posted);
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
            engine.create_transfers(&NoStore, &sys(), &[transfer(5, 2, 1, 1)], 4_000, &mut out).unwrap();
        assert_eq!(outcomes[0].result, R::CreditAccountClosed);
        assert!(replay(&out.ops).account(1).unwrap().closed);
    }
}
