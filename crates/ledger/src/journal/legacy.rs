//! Reading `PUENTEJ2` journals (bincode of the op types as they were), frozen here so that the
//! domain types can change without breaking old files. Only read, never written.
//!
//! The structures below are copies of the types `PUENTEJ2` encoded, field for field and
//! variant for variant, in their original order (bincode writes enum variants by position and
//! struct fields in order). `into_op` turns them into today's [`Op`]s; the few facts they
//! lacked (the reservation a post released, an expiry's accounts) are filled in by
//! `Engine::apply` when the op is replayed.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::engine::Op;
use crate::types::{self as t, Effect};

type Metadata = BTreeMap<String, String>;

#[derive(Deserialize)]
struct Entry {
    seq: u64,
    ops: Vec<LegacyOp>,
}

#[derive(Deserialize, Clone, Copy)]
struct AccountFlags {
    debits_must_not_exceed_credits: bool,
    credits_must_not_exceed_debits: bool,
}

#[derive(Deserialize)]
struct Account {
    id: u128,
    participant: String,
    currency: String,
    flags: AccountFlags,
    overdraft_limit_minor: u64,
    holder_ref: String,
    metadata: Metadata,
    debits_pending_minor: u128,
    debits_posted_minor: u128,
    credits_pending_minor: u128,
    credits_posted_minor: u128,
    created_at_ns: u64,
    closed: bool,
}

#[derive(Deserialize, Clone, Copy)]
struct TransferFlags {
    linked: bool,
    pending: bool,
    post_pending: bool,
    void_pending: bool,
    post_on_expiry: bool,
}

#[derive(Deserialize)]
struct Transfer {
    id: u128,
    debit_account_id: u128,
    credit_account_id: u128,
    amount_minor: u64,
    currency: String,
    flags: TransferFlags,
    pending_id: u128,
    timeout_ms: u64,
    reference: String,
    metadata: Metadata,
}

#[derive(Deserialize, Clone, Copy)]
struct LegacyEffect {
    debit_account_id: u128,
    credit_account_id: u128,
    amount_minor: u64,
}

#[derive(Deserialize)]
struct TransferRecord {
    transfer: Transfer,
    effect: LegacyEffect,
    timestamp_ns: u64,
    expires_at_ns: u64,
}

/// `TransferResult` as `PUENTEJ2` numbered it (variant order of the enum then).
#[derive(Deserialize, Clone, Copy)]
#[allow(clippy::enum_variant_names)]
enum LegacyResult {
    Ok,
    LinkedEventFailed,
    LinkedEventChainOpen,
    IdMustNotBeZero,
    FlagsAreMutuallyExclusive,
    DebitAccountIdMustNotBeZero,
    CreditAccountIdMustNotBeZero,
    AccountsMustBeDifferent,
    PendingIdMustBeZero,
    PendingIdMustNotBeZero,
    PendingIdMustBeDifferent,
    TimeoutReservedForPendingTransfer,
    TimeoutTooLarge,
    PostOnExpiryRequiresPendingTimeout,
    AmountMustNotBeZero,
    AmountTooLarge,
    CurrencyNotConfigured,
    ReferenceTooLong,
    MetadataTooLarge,
    ExistsWithDifferentFlags,
    ExistsWithDifferentDebitAccountId,
    ExistsWithDifferentCreditAccountId,
    ExistsWithDifferentAmount,
    ExistsWithDifferentCurrency,
    ExistsWithDifferentPendingId,
    ExistsWithDifferentTimeout,
    ExistsWithDifferentReference,
    ExistsWithDifferentMetadata,
    DebitAccountNotFound,
    CreditAccountNotFound,
    DebitAccountNotOwned,
    AccountsMustHaveSameCurrency,
    TransferCurrencyMismatch,
    DebitAccountClosed,
    CreditAccountClosed,
    PendingTransferNotFound,
    PendingTransferNotPending,
    PendingTransferAlreadyPosted,
    PendingTransferAlreadyVoided,
    PendingTransferExpired,
    PendingTransferHasDifferentDebitAccountId,
    PendingTransferHasDifferentCreditAccountId,
    PendingTransferHasDifferentCurrency,
    ExceedsPendingTransferAmount,
    ExceedsCredits,
    ExceedsDebits,
    OverflowsBalance,
    NetDebitCapExceeded,
    HubAccountReserved,
    KycLimitExceeded,
    KycCurrencyNotCovered,
    IdAlreadyUsed,
    IdReserved,
}

impl LegacyResult {
    fn current(self) -> t::TransferResult {
        use LegacyResult as L;
        use t::TransferResult as R;
        match self {
            L::Ok => R::Ok,
            L::LinkedEventFailed => R::LinkedEventFailed,
            L::LinkedEventChainOpen => R::LinkedEventChainOpen,
            L::IdMustNotBeZero => R::IdMustNotBeZero,
            L::FlagsAreMutuallyExclusive => R::FlagsAreMutuallyExclusive,
            L::DebitAccountIdMustNotBeZero => R::DebitAccountIdMustNotBeZero,
            L::CreditAccountIdMustNotBeZero => R::CreditAccountIdMustNotBeZero,
            L::AccountsMustBeDifferent => R::AccountsMustBeDifferent,
            L::PendingIdMustBeZero => R::PendingIdMustBeZero,
            L::PendingIdMustNotBeZero => R::PendingIdMustNotBeZero,
            L::PendingIdMustBeDifferent => R::PendingIdMustBeDifferent,
            L::TimeoutReservedForPendingTransfer => R::TimeoutReservedForPendingTransfer,
            L::TimeoutTooLarge => R::TimeoutTooLarge,
            L::PostOnExpiryRequiresPendingTimeout => R::PostOnExpiryRequiresPendingTimeout,
            L::AmountMustNotBeZero => R::AmountMustNotBeZero,
            L::AmountTooLarge => R::AmountTooLarge,
            L::CurrencyNotConfigured => R::CurrencyNotConfigured,
            L::ReferenceTooLong => R::ReferenceTooLong,
            L::MetadataTooLarge => R::MetadataTooLarge,
            L::ExistsWithDifferentFlags => R::ExistsWithDifferentFlags,
            L::ExistsWithDifferentDebitAccountId => R::ExistsWithDifferentDebitAccountId,
            L::ExistsWithDifferentCreditAccountId => R::ExistsWithDifferentCreditAccountId,
            L::ExistsWithDifferentAmount => R::ExistsWithDifferentAmount,
            L::ExistsWithDifferentCurrency => R::ExistsWithDifferentCurrency,
            L::ExistsWithDifferentPendingId => R::ExistsWithDifferentPendingId,
            L::ExistsWithDifferentTimeout => R::ExistsWithDifferentTimeout,
            L::ExistsWithDifferentReference => R::ExistsWithDifferentReference,
            L::ExistsWithDifferentMetadata => R::ExistsWithDifferentMetadata,
            L::DebitAccountNotFound => R::DebitAccountNotFound,
            L::CreditAccountNotFound => R::CreditAccountNotFound,
            L::DebitAccountNotOwned => R::DebitAccountNotOwned,
            L::AccountsMustHaveSameCurrency => R::AccountsMustHaveSameCurrency,
            L::TransferCurrencyMismatch => R::TransferCurrencyMismatch,
            L::DebitAccountClosed => R::DebitAccountClosed,
            L::CreditAccountClosed => R::CreditAccountClosed,
            L::PendingTransferNotFound => R::PendingTransferNotFound,
            L::PendingTransferNotPending => R::PendingTransferNotPending,
            L::PendingTransferAlreadyPosted => R::PendingTransferAlreadyPosted,
            L::PendingTransferAlreadyVoided => R::PendingTransferAlreadyVoided,
            L::PendingTransferExpired => R::PendingTransferExpired,
            L::PendingTransferHasDifferentDebitAccountId => R::PendingTransferHasDifferentDebitAccountId,
            L::PendingTransferHasDifferentCreditAccountId => R::PendingTransferHasDifferentCreditAccountId,
            L::PendingTransferHasDifferentCurrency => R::PendingTransferHasDifferentCurrency,
            L::ExceedsPendingTransferAmount => R::ExceedsPendingTransferAmount,
            L::ExceedsCredits => R::ExceedsCredits,
            L::ExceedsDebits => R::ExceedsDebits,
            L::OverflowsBalance => R::OverflowsBalance,
            L::NetDebitCapExceeded => R::NetDebitCapExceeded,
            L::HubAccountReserved => R::HubAccountReserved,
            L::KycLimitExceeded => R::KycLimitExceeded,
            L::KycCurrencyNotCovered => R::KycCurrencyNotCovered,
            L::IdAlreadyUsed => R::IdAlreadyUsed,
            L::IdReserved => R::IdReserved,
        }
    }
}

#[derive(Deserialize)]
struct FailedTransfer {
    transfer: Transfer,
    result: LegacyResult,
    timestamp_ns: u64,
}

#[derive(Deserialize)]
struct RefusedTransfer {
    scope: String,
    id: u128,
    debit_account_id: u128,
    credit_account_id: u128,
    amount_minor: u64,
    currency: String,
    flags: TransferFlags,
    pending_id: u128,
    timeout_ms: u64,
    reference_digest: [u8; 16],
    metadata_digest: [u8; 16],
    result: LegacyResult,
    timestamp_ns: u64,
}

#[derive(Deserialize, Clone, Copy)]
enum Country {
    Us,
    Mx,
}

#[derive(Deserialize, Clone, Copy)]
enum SettlementRail {
    Fedwire,
    AchDirectoMexico,
    Spei,
}

#[derive(Deserialize)]
struct CurrencyProfile {
    currency: String,
    rail: SettlementRail,
    bank_id: String,
    net_debit_cap_minor: u64,
    settlement_account_id: u128,
}

#[derive(Deserialize)]
struct ParticipantProfile {
    participant: String,
    name: String,
    bic: String,
    country: Country,
    currencies: Vec<CurrencyProfile>,
    updated_at_ns: u64,
}

#[derive(Deserialize, Clone, Copy)]
enum WindowState {
    Open,
    Closing,
    Closed,
    Settling,
    Settled,
    Aborted,
    Failed,
    /// Appended by the reconciliation change (bincode numbers variants by position).
    Rejected,
}

#[derive(Deserialize, Clone, Copy)]
enum Role {
    Operator,
    Participant,
}

#[derive(Deserialize, Clone, Copy)]
enum HolderKind {
    Individual,
    Business,
}

#[derive(Deserialize)]
struct SealedPii {
    full_name: Vec<u8>,
    address: Vec<u8>,
    clabe: Vec<u8>,
    account_number: Vec<u8>,
    routing_number: Vec<u8>,
    rfc: Vec<u8>,
}

#[derive(Deserialize)]
struct Holder {
    participant: String,
    id: String,
    kind: HolderKind,
    country: String,
    /// The tier's text (`MX_NIVEL_1`, `US_BASIC`): `Tier` serialized itself as a string.
    tier: String,
    pii: SealedPii,
    created_at_ns: u64,
}

#[derive(Deserialize)]
struct UsTierLimits {
    monthly_credit_limit_minor: Option<u64>,
    balance_limit_minor: Option<u64>,
}

#[derive(Deserialize)]
struct KycPolicy {
    udi_rate: String,
    us_tiers: BTreeMap<String, UsTierLimits>,
}

/// `Op` as `PUENTEJ2` numbered it.
#[derive(Deserialize)]
enum LegacyOp {
    CreateAccount(Account),
    Transfer(TransferRecord),
    Fail(FailedTransfer),
    Expire { pending_id: u128, timestamp_ns: u64 },
    AutoPost { pending_id: u128, timestamp_ns: u64 },
    SetProfile(ParticipantProfile),
    CloseWindow { window_id: u64, next_window_id: u64, timestamp_ns: u64 },
    WindowTransition { window_id: u64, to: WindowState, reason: String, timestamp_ns: u64 },
    SettleWindow { window_id: u64, attempt: u32, timestamp_ns: u64 },
    ConfirmSettlement { window_id: u64, participant: String, timestamp_ns: u64 },
    CloseAccount { account_id: u128, timestamp_ns: u64 },
    RegisterParticipant { id: String, name: String, role: Role, timestamp_ns: u64 },
    AddApiKey { participant: String, key_id: String, key_sha256: [u8; 32], timestamp_ns: u64 },
    RevokeApiKey { participant: String, key_id: String, timestamp_ns: u64 },
    BindCertificate { participant: String, cert_sha256: [u8; 32], timestamp_ns: u64 },
    UnbindCertificate { participant: String, cert_sha256: [u8; 32], timestamp_ns: u64 },
    RegisterHolder(Box<Holder>),
    SetKycPolicy { policy: KycPolicy, timestamp_ns: u64 },
    Refused(RefusedTransfer),
}

fn currency(text: &str) -> Result<puente_money::CurrencyCode, String> {
    puente_money::CurrencyCode::parse(text).map_err(|e| e.to_string())
}

fn transfer(t: Transfer) -> Result<t::Transfer, String> {
    Ok(t::Transfer {
        id: t.id,
        debit_account_id: t.debit_account_id,
        credit_account_id: t.credit_account_id,
        amount_minor: t.amount_minor,
        currency: currency(&t.currency)?,
        flags: flags(t.flags),
        pending_id: t.pending_id,
        timeout_ms: t.timeout_ms,
        reference: t.reference,
        metadata: t.metadata,
    })
}

fn flags(f: TransferFlags) -> t::TransferFlags {
    t::TransferFlags {
        linked: f.linked,
        pending: f.pending,
        post_pending: f.post_pending,
        void_pending: f.void_pending,
        post_on_expiry: f.post_on_expiry,
    }
}

/// An effect not recorded in `PUENTEJ2` (an expiry's): filled in by `Engine::apply`.
const UNKNOWN_EFFECT: Effect = Effect { debit_account_id: 0, credit_account_id: 0, amount_minor: 0 };

impl LegacyOp {
    /// Today's op. Facts `PUENTEJ2` did not record are left for `Engine::apply` to fill in.
    #[expect(clippy::too_many_lines, reason = "one arm per `PUENTEJ2` op kind, frozen with that format")]
    fn into_op(self) -> Result<Op, String> {
        use crate::engine::settlement as st;
        Ok(match self {
            LegacyOp::CreateAccount(a) => {
                let mut account = t::Account::from_new(
                    t::NewAccount {
                        id: a.id,
                        participant: a.participant,
                        currency: currency(&a.currency)?,
                        flags: t::AccountFlags {
                            debits_must_not_exceed_credits: a.flags.debits_must_not_exceed_credits,
                            credits_must_not_exceed_debits: a.flags.credits_must_not_exceed_debits,
                        },
                        overdraft_limit_minor: a.overdraft_limit_minor,
                        holder_ref: a.holder_ref,
                        metadata: a.metadata,
                    },
                    a.created_at_ns,
                );
                account.debits_pending_minor = a.debits_pending_minor;
                account.debits_posted_minor = a.debits_posted_minor;
                account.credits_pending_minor = a.credits_pending_minor;
                account.credits_posted_minor = a.credits_posted_minor;
                account.closed = a.closed;
                Op::CreateAccount(account)
            }
            LegacyOp::Transfer(r) => Op::Transfer(t::TransferRecord {
                transfer: transfer(r.transfer)?,
                effect: Effect {
                    debit_account_id: r.effect.debit_account_id,
                    credit_account_id: r.effect.credit_account_id,
                    amount_minor: r.effect.amount_minor,
                },
                timestamp_ns: r.timestamp_ns,
                expires_at_ns: r.expires_at_ns,
                released_minor: 0,
            }),
            LegacyOp::Fail(f) => {
                let failed = t::FailedTransfer {
                    transfer: transfer(f.transfer)?,
                    result: f.result.current(),
                    timestamp_ns: f.timestamp_ns,
                };
                Op::Fail(failed)
            }
            LegacyOp::Refused(r) => Op::Refused(t::RefusedTransfer {
                scope: r.scope,
                id: r.id,
                debit_account_id: r.debit_account_id,
                credit_account_id: r.credit_account_id,
                amount_minor: r.amount_minor,
                currency: currency(&r.currency)?,
                flags: flags(r.flags),
                pending_id: r.pending_id,
                timeout_ms: r.timeout_ms,
                reference_digest: r.reference_digest,
                metadata_digest: r.metadata_digest,
                result: r.result.current(),
                timestamp_ns: r.timestamp_ns,
            }),
            LegacyOp::Expire { pending_id, timestamp_ns } => {
                Op::Expire { pending_id, timestamp_ns, effect: UNKNOWN_EFFECT }
            }
            LegacyOp::AutoPost { pending_id, timestamp_ns } => {
                Op::AutoPost { pending_id, timestamp_ns, effect: UNKNOWN_EFFECT }
            }
            LegacyOp::SetProfile(p) => {
                let mut currencies = Vec::with_capacity(p.currencies.len());
                for c in p.currencies {
                    currencies.push(st::CurrencyProfile {
                        currency: currency(&c.currency)?,
                        rail: match c.rail {
                            SettlementRail::Fedwire => st::SettlementRail::Fedwire,
                            SettlementRail::AchDirectoMexico => st::SettlementRail::AchDirectoMexico,
                            SettlementRail::Spei => st::SettlementRail::Spei,
                        },
                        bank_id: c.bank_id,
                        net_debit_cap_minor: c.net_debit_cap_minor,
                        settlement_account_id: c.settlement_account_id,
                    });
                }
                Op::SetProfile(st::ParticipantProfile {
                    participant: p.participant,
                    name: p.name,
                    bic: p.bic,
                    country: match p.country {
                        Country::Us => st::Country::Us,
                        Country::Mx => st::Country::Mx,
                    },
                    currencies,
                    updated_at_ns: p.updated_at_ns,
                })
            }
            LegacyOp::CloseWindow { window_id, next_window_id, timestamp_ns } => {
                Op::CloseWindow { window_id, next_window_id, timestamp_ns }
            }
            LegacyOp::WindowTransition { window_id, to, reason, timestamp_ns } => Op::WindowTransition {
                window_id,
                to: match to {
                    WindowState::Open => st::WindowState::Open,
                    WindowState::Closing => st::WindowState::Closing,
                    WindowState::Closed => st::WindowState::Closed,
                    WindowState::Settling => st::WindowState::Settling,
                    WindowState::Settled => st::WindowState::Settled,
                    WindowState::Aborted => st::WindowState::Aborted,
                    WindowState::Failed => st::WindowState::Failed,
                    WindowState::Rejected => st::WindowState::Rejected,
                },
                reason,
                timestamp_ns,
            },
            LegacyOp::SettleWindow { window_id, attempt, timestamp_ns } => {
                Op::SettleWindow { window_id, attempt, timestamp_ns }
            }
            LegacyOp::ConfirmSettlement { window_id, participant, timestamp_ns } => {
                Op::ConfirmSettlement { window_id, participant, timestamp_ns }
            }
            LegacyOp::CloseAccount { account_id, timestamp_ns } => {
                Op::CloseAccount { account_id, timestamp_ns }
            }
            LegacyOp::RegisterParticipant { id, name, role, timestamp_ns } => Op::RegisterParticipant {
                id,
                name,
                role: match role {
                    Role::Operator => crate::engine::identity::Role::Operator,
                    Role::Participant => crate::engine::identity::Role::Participant,
                },
                timestamp_ns,
            },
            LegacyOp::AddApiKey { participant, key_id, key_sha256, timestamp_ns } => {
                Op::AddApiKey { participant, key_id, key_sha256, timestamp_ns }
            }
            LegacyOp::RevokeApiKey { participant, key_id, timestamp_ns } => {
                Op::RevokeApiKey { participant, key_id, timestamp_ns }
            }
            LegacyOp::BindCertificate { participant, cert_sha256, timestamp_ns } => {
                Op::BindCertificate { participant, cert_sha256, timestamp_ns }
            }
            LegacyOp::UnbindCertificate { participant, cert_sha256, timestamp_ns } => {
                Op::UnbindCertificate { participant, cert_sha256, timestamp_ns }
            }
            LegacyOp::RegisterHolder(h) => {
                use crate::engine::holders as hd;
                let tier = puente_kyc::kyc::Tier::parse(&h.tier)
                    .map_err(|e| format!("holder {}: tier {:?}: {e}", h.id, h.tier))?;
                Op::RegisterHolder(Box::new(hd::Holder {
                    participant: h.participant,
                    id: h.id,
                    kind: match h.kind {
                        HolderKind::Individual => hd::HolderKind::Individual,
                        HolderKind::Business => hd::HolderKind::Business,
                    },
                    country: h.country,
                    tier,
                    pii: hd::SealedPii {
                        full_name: h.pii.full_name,
                        address: h.pii.address,
                        clabe: h.pii.clabe,
                        account_number: h.pii.account_number,
                        routing_number: h.pii.routing_number,
                        rfc: h.pii.rfc,
                    },
                    created_at_ns: h.created_at_ns,
                }))
            }
            LegacyOp::SetKycPolicy { policy, timestamp_ns } => {
                let udi_rate =
                    policy.udi_rate.parse().map_err(|_| format!("UDI rate {}", policy.udi_rate))?;
                let us_tiers = policy
                    .us_tiers
                    .into_iter()
                    .map(|(name, l)| {
                        let limits = puente_kyc::kyc::UsTierLimits {
                            monthly_credit_limit_minor: l.monthly_credit_limit_minor,
                            balance_limit_minor: l.balance_limit_minor,
                        };
                        (name, limits)
                    })
                    .collect();
                Op::SetKycPolicy { policy: puente_kyc::kyc::KycPolicy { udi_rate, us_tiers }, timestamp_ns }
            }
        })
    }
}

/// Decodes a `PUENTEJ2` record payload into today's ops.
pub fn decode_payload(payload: &[u8]) -> Result<(u64, Vec<Op>), String> {
    let entry: Entry = bincode::deserialize(payload).map_err(|e| e.to_string())?;
    let ops = entry.ops.into_iter().map(LegacyOp::into_op).collect::<Result<Vec<_>, _>>()?;
    Ok((entry.seq, ops))
}

/// The chain hash stored with record `seq` of the `PUENTEJ2` file at `path` (the archive of a
/// migrated journal), if it holds that record intact.
pub fn stored_hash_at(
    path: &std::path::Path,
    seq: u64,
) -> Result<Option<super::ChainHash>, crate::LedgerError> {
    use std::io::{Read, Seek, SeekFrom};
    let file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if reader.read_exact(&mut magic).is_err() || &magic != super::LEGACY_MAGIC {
        return Ok(None);
    }
    reader.seek(SeekFrom::Start(8))?;
    let mut offset = 8;
    let mut payload = Vec::new();
    while offset < file_len {
        let Ok((record_len, stored)) = super::read_record(&mut reader, file_len - offset, &mut payload)
        else {
            return Ok(None);
        };
        let record_seq = payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        if record_seq == Some(seq) {
            return Ok(Some(stored));
        }
        offset += record_len;
    }
    Ok(None)
}
