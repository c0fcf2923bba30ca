//! Ledger records: accounts, transfers, their flags, per-event results, and the limits on them.

use std::collections::BTreeMap;

use puente_money::CurrencyCode;
use serde::{Deserialize, Serialize};

pub use crate::limits::BATCH_EVENTS_MAX;
pub use crate::limits::METADATA_ENTRIES_MAX;
pub use crate::limits::METADATA_KEY_LEN_MAX;
pub use crate::limits::METADATA_VALUE_LEN_MAX;
pub use crate::limits::REFERENCE_LEN_MAX;
pub use crate::limits::TIMEOUT_MAX_MS;
/// Longest participant id, in bytes.
pub use puente_core::PARTICIPANT_ID_LEN_MAX;

pub type AccountId = u128;
pub type TransferId = u128;
pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFlags {
    /// Reject a transfer when debits (pending + posted + amount) would exceed
    /// credits_posted + overdraft_limit_minor. The usual flag for a customer wallet.
    pub debits_must_not_exceed_credits: bool,
    /// Reject a transfer when credits (pending + posted + amount) would exceed debits_posted.
    pub credits_must_not_exceed_debits: bool,
}

/// What a client asks for when opening an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: AccountId,
    pub participant: String,
    pub currency: CurrencyCode,
    pub flags: AccountFlags,
    /// Extra room below zero when `debits_must_not_exceed_credits` is set.
    pub overdraft_limit_minor: u64,
    pub holder_ref: String,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub participant: String,
    pub currency: CurrencyCode,
    pub flags: AccountFlags,
    pub overdraft_limit_minor: u64,
    pub holder_ref: String,
    pub metadata: Metadata,
    pub debits_pending_minor: u128,
    pub debits_posted_minor: u128,
    pub credits_pending_minor: u128,
    pub credits_posted_minor: u128,
    pub created_at_ns: u64,
    pub closed: bool,
}

impl Account {
    pub fn from_new(new: NewAccount, created_at_ns: u64) -> Account {
        Account {
            id: new.id,
            participant: new.participant,
            currency: new.currency,
            flags: new.flags,
            overdraft_limit_minor: new.overdraft_limit_minor,
            holder_ref: new.holder_ref,
            metadata: new.metadata,
            debits_pending_minor: 0,
            debits_posted_minor: 0,
            credits_pending_minor: 0,
            credits_posted_minor: 0,
            created_at_ns,
            closed: false,
        }
    }

    /// Credits posted minus debits posted: the balance of a credit-normal (liability) account.
    pub fn posted_balance_minor(&self) -> i128 {
        self.credits_posted_minor as i128 - self.debits_posted_minor as i128
    }

    /// What the holder may still spend: credits posted minus debits posted and pending.
    pub fn available_balance_minor(&self) -> i128 {
        self.credits_posted_minor as i128
            - self.debits_posted_minor as i128
            - self.debits_pending_minor as i128
    }

    /// Whether the account's balances respect its limit flags.
    pub fn within_limits(&self) -> bool {
        let debits = self.debits_pending_minor + self.debits_posted_minor;
        let credits = self.credits_pending_minor + self.credits_posted_minor;
        let debit_ok = !self.flags.debits_must_not_exceed_credits
            || debits <= self.credits_posted_minor + self.overdraft_limit_minor as u128;
        let credit_ok = !self.flags.credits_must_not_exceed_debits || credits <= self.debits_posted_minor;
        debit_ok && credit_ok
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferFlags {
    /// Links this transfer with the next: the chain succeeds or fails as one.
    pub linked: bool,
    /// Reserve funds (phase one of a two-phase transfer).
    pub pending: bool,
    /// Post (fully or partially) the pending transfer `pending_id`.
    pub post_pending: bool,
    /// Void the pending transfer `pending_id`.
    pub void_pending: bool,
    /// With `pending` and a timeout: at the timeout, post in full instead of voiding (a
    /// cancellation window, e.g. Regulation E's 30 minutes for remittances).
    pub post_on_expiry: bool,
}

/// What a client asks for. Stored exactly as sent: it is the idempotency content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    /// For post/void: 0 means "the pending transfer's".
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// For post: 0 means "the full pending amount".
    pub amount_minor: u64,
    pub currency: CurrencyCode,
    pub flags: TransferFlags,
    pub pending_id: TransferId,
    /// For pending transfers: 0 means no timeout.
    pub timeout_ms: u64,
    pub reference: String,
    pub metadata: Metadata,
}

/// What a committed transfer did, resolved by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount_minor: u64,
}

/// A committed transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    pub transfer: Transfer,
    pub effect: Effect,
    /// Server-assigned, strictly increasing across the whole ledger; also the feed position.
    pub timestamp_ns: u64,
    /// For a pending transfer: when it expires (0 = never).
    pub expires_at_ns: u64,
    /// For a post or void: the reservation it released (the pending transfer's amount), so
    /// the record alone gives its balance effect. 0 otherwise.
    pub released_minor: u64,
}

/// A transfer whose first attempt failed on the ledger's state. Remembered so that a retry
/// returns the same failure and can never change the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTransfer {
    pub transfer: Transfer,
    pub result: TransferResult,
    pub timestamp_ns: u64,
}

/// The state of a pending (two-phase) transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingState {
    Pending,
    Posted,
    Voided,
    Expired,
}

macro_rules! result_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant,)* }
        impl $name {
            /// UPPER_SNAKE_CASE code, used as the google.rpc.ErrorInfo reason and on the wire.
            pub fn code(&self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
            pub fn all() -> &'static [$name] {
                &[$($name::$variant,)*]
            }
            pub fn is_ok(&self) -> bool {
                self.code() == "OK"
            }
        }
    };
}

result_enum!(
    /// The result of one account in a CreateAccounts batch. Checked in this order.
    AccountResult {
        Ok => "OK",
        IdMustNotBeZero => "ID_MUST_NOT_BE_ZERO",
        ParticipantInvalid => "PARTICIPANT_INVALID",
        CurrencyNotConfigured => "CURRENCY_NOT_CONFIGURED",
        FlagsAreMutuallyExclusive => "FLAGS_ARE_MUTUALLY_EXCLUSIVE",
        OverdraftRequiresDebitLimit => "OVERDRAFT_REQUIRES_DEBIT_LIMIT",
        OverdraftTooLarge => "OVERDRAFT_TOO_LARGE",
        HolderRefTooLong => "HOLDER_REF_TOO_LONG",
        MetadataTooLarge => "METADATA_TOO_LARGE",
        ExistsWithDifferentParticipant => "EXISTS_WITH_DIFFERENT_PARTICIPANT",
        ExistsWithDifferentCurrency => "EXISTS_WITH_DIFFERENT_CURRENCY",
        ExistsWithDifferentFlags => "EXISTS_WITH_DIFFERENT_FLAGS",
        ExistsWithDifferentOverdraftLimit => "EXISTS_WITH_DIFFERENT_OVERDRAFT_LIMIT",
        ExistsWithDifferentHolderRef => "EXISTS_WITH_DIFFERENT_HOLDER_REF",
        ExistsWithDifferentMetadata => "EXISTS_WITH_DIFFERENT_METADATA",
        AccountsLimitReached => "ACCOUNTS_LIMIT_REACHED",
        AccountNotFound => "ACCOUNT_NOT_FOUND",
        AccountHasPendingTransfers => "ACCOUNT_HAS_PENDING_TRANSFERS",
        AccountReserved => "ACCOUNT_RESERVED",
        IdAlreadyUsed => "ID_ALREADY_USED",
        IdReserved => "ID_RESERVED",
        ParticipantNotFound => "PARTICIPANT_NOT_FOUND",
    }
);

result_enum!(
    /// The result of one transfer in a CreateTransfers batch. Validation results come first
    /// (they change nothing and are not remembered), then idempotency, then the ledger's state.
    TransferResult {
        Ok => "OK",
        LinkedEventFailed => "LINKED_EVENT_FAILED",
        LinkedEventChainOpen => "LINKED_EVENT_CHAIN_OPEN",
        IdMustNotBeZero => "ID_MUST_NOT_BE_ZERO",
        FlagsAreMutuallyExclusive => "FLAGS_ARE_MUTUALLY_EXCLUSIVE",
        DebitAccountIdMustNotBeZero => "DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO",
        CreditAccountIdMustNotBeZero => "CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO",
        AccountsMustBeDifferent => "ACCOUNTS_MUST_BE_DIFFERENT",
        PendingIdMustBeZero => "PENDING_ID_MUST_BE_ZERO",
        PendingIdMustNotBeZero => "PENDING_ID_MUST_NOT_BE_ZERO",
        PendingIdMustBeDifferent => "PENDING_ID_MUST_BE_DIFFERENT",
        TimeoutReservedForPendingTransfer => "TIMEOUT_RESERVED_FOR_PENDING_TRANSFER",
        TimeoutTooLarge => "TIMEOUT_TOO_LARGE",
        PostOnExpiryRequiresPendingTimeout => "POST_ON_EXPIRY_REQUIRES_PENDING_TIMEOUT",
        AmountMustNotBeZero => "AMOUNT_MUST_NOT_BE_ZERO",
        AmountTooLarge => "AMOUNT_TOO_LARGE",
        CurrencyNotConfigured => "CURRENCY_NOT_CONFIGURED",
        ReferenceTooLong => "REFERENCE_TOO_LONG",
        MetadataTooLarge => "METADATA_TOO_LARGE",
        ExistsWithDifferentFlags => "EXISTS_WITH_DIFFERENT_FLAGS",
        ExistsWithDifferentDebitAccountId => "EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID",
        ExistsWithDifferentCreditAccountId => "EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID",
        ExistsWithDifferentAmount => "EXISTS_WITH_DIFFERENT_AMOUNT",
        ExistsWithDifferentCurrency => "EXISTS_WITH_DIFFERENT_CURRENCY",
        ExistsWithDifferentPendingId => "EXISTS_WITH_DIFFERENT_PENDING_ID",
        ExistsWithDifferentTimeout => "EXISTS_WITH_DIFFERENT_TIMEOUT",
        ExistsWithDifferentReference => "EXISTS_WITH_DIFFERENT_REFERENCE",
        ExistsWithDifferentMetadata => "EXISTS_WITH_DIFFERENT_METADATA",
        DebitAccountNotFound => "DEBIT_ACCOUNT_NOT_FOUND",
        CreditAccountNotFound => "CREDIT_ACCOUNT_NOT_FOUND",
        DebitAccountNotOwned => "DEBIT_ACCOUNT_NOT_OWNED",
        AccountsMustHaveSameCurrency => "ACCOUNTS_MUST_HAVE_SAME_CURRENCY",
        TransferCurrencyMismatch => "TRANSFER_CURRENCY_MISMATCH",
        DebitAccountClosed => "DEBIT_ACCOUNT_CLOSED",
        CreditAccountClosed => "CREDIT_ACCOUNT_CLOSED",
        PendingTransferNotFound => "PENDING_TRANSFER_NOT_FOUND",
        PendingTransferNotPending => "PENDING_TRANSFER_NOT_PENDING",
        PendingTransferAlreadyPosted => "PENDING_TRANSFER_ALREADY_POSTED",
        PendingTransferAlreadyVoided => "PENDING_TRANSFER_ALREADY_VOIDED",
        PendingTransferExpired => "PENDING_TRANSFER_EXPIRED",
        PendingTransferHasDifferentDebitAccountId => "PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID",
        PendingTransferHasDifferentCreditAccountId => "PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID",
        PendingTransferHasDifferentCurrency => "PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY",
        ExceedsPendingTransferAmount => "EXCEEDS_PENDING_TRANSFER_AMOUNT",
        ExceedsCredits => "EXCEEDS_CREDITS",
        ExceedsDebits => "EXCEEDS_DEBITS",
        OverflowsBalance => "OVERFLOWS_BALANCE",
        NetDebitCapExceeded => "NET_DEBIT_CAP_EXCEEDED",
        HubAccountReserved => "HUB_ACCOUNT_RESERVED",
        KycLimitExceeded => "KYC_LIMIT_EXCEEDED",
        KycCurrencyNotCovered => "KYC_CURRENCY_NOT_COVERED",
        IdAlreadyUsed => "ID_ALREADY_USED",
        IdReserved => "ID_RESERVED",
    }
);

impl TransferResult {
    /// Results that depend on the ledger's state (not on the request alone). A transfer that
    /// fails with one of these is remembered, so its id stays failed.
    pub fn is_remembered_failure(&self) -> bool {
        use TransferResult::*;
        matches!(
            self,
            DebitAccountNotFound
                | CreditAccountNotFound
                | DebitAccountNotOwned
                | AccountsMustHaveSameCurrency
                | TransferCurrencyMismatch
                | DebitAccountClosed
                | CreditAccountClosed
                | PendingTransferNotFound
                | PendingTransferNotPending
                | PendingTransferAlreadyPosted
                | PendingTransferAlreadyVoided
                | PendingTransferExpired
                | PendingTransferHasDifferentDebitAccountId
                | PendingTransferHasDifferentCreditAccountId
                | PendingTransferHasDifferentCurrency
                | ExceedsPendingTransferAmount
                | ExceedsCredits
                | ExceedsDebits
                | OverflowsBalance
                | NetDebitCapExceeded
                | HubAccountReserved
                | KycLimitExceeded
                | KycCurrencyNotCovered
        )
    }
}

/// The outcome of one account creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOutcome {
    pub result: AccountResult,
    /// True when this id already existed with identical content (an idempotent retry).
    pub replayed: bool,
    pub account: Option<Account>,
}

/// The outcome of one transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOutcome {
    pub result: TransferResult,
    /// True when this id was seen before with identical content: the first outcome is returned.
    pub replayed: bool,
    /// The committed (or remembered-failed) timestamp; 0 for validation failures.
    pub timestamp_ns: u64,
}

pub fn metadata_fits(metadata: &Metadata) -> bool {
    metadata.len() <= METADATA_ENTRIES_MAX
        && metadata.iter().all(|(k, v)| {
            !k.is_empty() && k.len() <= METADATA_KEY_LEN_MAX && v.len() <= METADATA_VALUE_LEN_MAX
        })
}

/// A participant id: 1 to [`PARTICIPANT_ID_LEN_MAX`] of `[a-z0-9._-]` (lower case only, as the
/// API says, so that `Bank-A` and `bank-a` can never be two participants).
pub fn participant_valid(participant: &str) -> bool {
    !participant.is_empty()
        && participant.len() <= PARTICIPANT_ID_LEN_MAX
        && participant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.')
}

/// Participant ids that start with this belong to Puente itself (`puente-hub`, `puente-house`):
/// no one can register one, and only the system opens accounts for them.
pub const SYSTEM_PARTICIPANT_PREFIX: &str = "puente-";

/// True for the participants Puente itself owns.
pub fn is_system_participant(participant: &str) -> bool {
    participant.starts_with(SYSTEM_PARTICIPANT_PREFIX)
}

/// Who submits a request to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A participant: it acts only on its own accounts (another's do not exist for it).
    Participant(String),
    /// An operator: it may act on every account. Its own participant id scopes its failures.
    Operator(String),
    /// Puente itself (settlement, FX execution): it may use system ids
    /// ([`puente_core::ids`]). `scope` is the participant on whose behalf it acts; failures are
    /// remembered there.
    System { scope: String },
}

impl Actor {
    pub fn system(scope: impl Into<String>) -> Actor {
        Actor::System { scope: scope.into() }
    }

    /// The participant whose accounts alone this actor may touch (`None`: every account).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Actor::Participant(p) => Some(p),
            Actor::Operator(_) | Actor::System { .. } => None,
        }
    }

    /// The idempotency scope of the actor's failed attempts: the submitting participant.
    pub fn scope(&self) -> &str {
        match self {
            Actor::Participant(p) | Actor::Operator(p) => p,
            Actor::System { scope } => scope,
        }
    }

    pub fn is_system(&self) -> bool {
        matches!(self, Actor::System { .. })
    }
}

/// The first 16 bytes of the SHA-256 of free text: what a remembered failure keeps of its
/// reference and metadata (enough to tell a retry from a different request, nothing to read).
pub type TextDigest = [u8; 16];

fn text_digest(parts: &mut dyn Iterator<Item = &[u8]>) -> TextDigest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&context.finish().as_ref()[..16]);
    out
}

pub fn reference_digest(reference: &str) -> TextDigest {
    text_digest(&mut std::iter::once(reference.as_bytes()))
}

/// Over the entries in key order (a `BTreeMap` iterates in order), each key and value
/// length-prefixed.
pub fn metadata_digest(metadata: &Metadata) -> TextDigest {
    text_digest(&mut metadata.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]))
}

/// A failed attempt as the ledger remembers it: every field that decides a transfer and a digest
/// of its free text (reference, metadata), so that a retry gets the first outcome and a different
/// request under the same id is told apart, at a small fixed cost (about 150 bytes, whatever the
/// request's metadata). It binds only its submitter (`scope`): another participant's attempt
/// under the same id is unrelated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedTransfer {
    /// The submitting participant (see [`Actor::scope`]). Empty for failures remembered before
    /// failures were scoped: those bind every submitter, as they did then.
    pub scope: String,
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount_minor: u64,
    pub currency: CurrencyCode,
    pub flags: TransferFlags,
    pub pending_id: TransferId,
    pub timeout_ms: u64,
    pub reference_digest: TextDigest,
    pub metadata_digest: TextDigest,
    pub result: TransferResult,
    pub timestamp_ns: u64,
}

impl RefusedTransfer {
    pub fn new(scope: &str, t: &Transfer, result: TransferResult, timestamp_ns: u64) -> RefusedTransfer {
        RefusedTransfer {
            scope: scope.to_owned(),
            id: t.id,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount_minor: t.amount_minor,
            currency: t.currency,
            flags: t.flags,
            pending_id: t.pending_id,
            timeout_ms: t.timeout_ms,
            reference_digest: reference_digest(&t.reference),
            metadata_digest: metadata_digest(&t.metadata),
            result,
            timestamp_ns,
        }
    }

    /// A failure journaled before scoping (`Op::Fail`): it keeps binding every submitter.
    pub fn from_legacy(failed: &FailedTransfer) -> RefusedTransfer {
        RefusedTransfer::new("", &failed.transfer, failed.result, failed.timestamp_ns)
    }

    /// Whether this failure answers a request of `scope` (its own, or a legacy one).
    pub fn binds(&self, scope: &str) -> bool {
        self.scope.is_empty() || self.scope == scope
    }
}

/// When a pending transfer created at `timestamp_ns` with `timeout_ms` expires (0: never).
pub fn expires_at(timestamp_ns: u64, timeout_ms: u64) -> u64 {
    if timeout_ms == 0 { 0 } else { timestamp_ns.saturating_add(timeout_ms.saturating_mul(1_000_000)) }
}

/// The time range `[lo, hi)` a page of a statement covers: `from_ns <= t < to_ns`, and after the
/// cursor (exclusive) in the page's direction; `None` when it is empty.
pub fn time_window(from_ns: u64, to_ns: u64, descending: bool, cursor_ns: Option<u64>) -> Option<(u64, u64)> {
    let (mut lo, mut hi) = (from_ns, to_ns);
    if let Some(cursor) = cursor_ns {
        if descending {
            hi = hi.min(cursor);
        } else {
            lo = lo.max(cursor.saturating_add(1));
        }
    }
    (lo < hi).then_some((lo, hi))
}
