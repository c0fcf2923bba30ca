//! The journal's on-disk encoding, format `PUENTEJ3`: an explicit, versioned codec owned here.
//! Domain types do not derive their disk layout; changing a struct cannot change the file.
//!
//! A record's payload:
//!
//! ```text
//! seq            u64 LE      (first, as in PUENTEJ2, so tail scans read it the same way)
//! version        u8          (PAYLOAD_VERSION)
//! op count       varint
//! ops            [tag u8][body length varint][body] ...
//! ```
//!
//! Every op therefore has an address: the byte offset of its tag. Integers are LEB128 varints
//! unless fixed (ids: 16 bytes LE; digests: 16 or 32 bytes); timestamps are varints of
//! nanoseconds since the epoch, so an op decodes alone, from its location; strings and byte strings are a
//! varint length then the bytes; options a 0/1 byte then the value. Enumerations are written
//! as explicit codes listed here (never a derive's variant index). Every balance-changing op is
//! self-describing: a post or void carries the accounts it resolved to, the amount posted and
//! the reservation released; an expiry or automatic post the pending transfer's accounts and
//! amount. Golden-bytes tests pin every op.
//!
//! Size: one encoder and one decoder per record kind (18), kept in one file on purpose: the on-disk
//! format is read and reviewed in one place, beside its golden-bytes tests.

use std::collections::BTreeMap;

use puente_money::CurrencyCode;

use crate::engine::Op;
use crate::engine::holders::{Holder, HolderKind, SealedPii};
use crate::engine::identity::Role;
use crate::engine::settlement::{Country, CurrencyProfile, ParticipantProfile, SettlementRail, WindowState};
use crate::types::*;

/// The payload version this code writes (and the only one it reads in `PUENTEJ3` segments).
pub const PAYLOAD_VERSION: u8 = 1;
/// Bytes before the op count: seq, version.
pub const PAYLOAD_PREFIX_BYTES: usize = 8 + 1;
/// Longest string or byte string accepted when decoding (larger than any the engine allows).
const DECODE_BYTES_MAX: usize = 1 << 20;
/// Most entries in a decoded collection (metadata, profile currencies, US tiers).
const DECODE_ENTRIES_MAX: usize = 1 << 16;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal format: {0}")]
pub struct FormatError(pub String);

fn bad(what: impl Into<String>) -> FormatError {
    FormatError(what.into())
}

// ----- tags ---------------------------------------------------------------------------------

mod tag {
    pub const CREATE_ACCOUNT: u8 = 1;
    pub const TRANSFER: u8 = 2;
    pub const REFUSED: u8 = 3;
    pub const EXPIRE: u8 = 4;
    pub const AUTO_POST: u8 = 5;
    pub const SET_PROFILE: u8 = 6;
    pub const CLOSE_WINDOW: u8 = 7;
    pub const WINDOW_TRANSITION: u8 = 8;
    pub const SETTLE_WINDOW: u8 = 9;
    pub const CONFIRM_SETTLEMENT: u8 = 10;
    pub const CLOSE_ACCOUNT: u8 = 11;
    pub const REGISTER_PARTICIPANT: u8 = 12;
    pub const ADD_API_KEY: u8 = 13;
    pub const REVOKE_API_KEY: u8 = 14;
    pub const BIND_CERTIFICATE: u8 = 15;
    pub const UNBIND_CERTIFICATE: u8 = 16;
    pub const REGISTER_HOLDER: u8 = 17;
    pub const SET_KYC_POLICY: u8 = 18;
}

/// Transfer result codes as written: the position in this list. Append only.
const RESULT_CODES: &[&str] = &[
    "OK",
    "LINKED_EVENT_FAILED",
    "LINKED_EVENT_CHAIN_OPEN",
    "ID_MUST_NOT_BE_ZERO",
    "FLAGS_ARE_MUTUALLY_EXCLUSIVE",
    "DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO",
    "CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO",
    "ACCOUNTS_MUST_BE_DIFFERENT",
    "PENDING_ID_MUST_BE_ZERO",
    "PENDING_ID_MUST_NOT_BE_ZERO",
    "PENDING_ID_MUST_BE_DIFFERENT",
    "TIMEOUT_RESERVED_FOR_PENDING_TRANSFER",
    "TIMEOUT_TOO_LARGE",
    "POST_ON_EXPIRY_REQUIRES_PENDING_TIMEOUT",
    "AMOUNT_MUST_NOT_BE_ZERO",
    "AMOUNT_TOO_LARGE",
    "CURRENCY_NOT_CONFIGURED",
    "REFERENCE_TOO_LONG",
    "METADATA_TOO_LARGE",
    "EXISTS_WITH_DIFFERENT_FLAGS",
    "EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID",
    "EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID",
    "EXISTS_WITH_DIFFERENT_AMOUNT",
    "EXISTS_WITH_DIFFERENT_CURRENCY",
    "EXISTS_WITH_DIFFERENT_PENDING_ID",
    "EXISTS_WITH_DIFFERENT_TIMEOUT",
    "EXISTS_WITH_DIFFERENT_REFERENCE",
    "EXISTS_WITH_DIFFERENT_METADATA",
    "DEBIT_ACCOUNT_NOT_FOUND",
    "CREDIT_ACCOUNT_NOT_FOUND",
    "DEBIT_ACCOUNT_NOT_OWNED",
    "ACCOUNTS_MUST_HAVE_SAME_CURRENCY",
    "TRANSFER_CURRENCY_MISMATCH",
    "DEBIT_ACCOUNT_CLOSED",
    "CREDIT_ACCOUNT_CLOSED",
    "PENDING_TRANSFER_NOT_FOUND",
    "PENDING_TRANSFER_NOT_PENDING",
    "PENDING_TRANSFER_ALREADY_POSTED",
    "PENDING_TRANSFER_ALREADY_VOIDED",
    "PENDING_TRANSFER_EXPIRED",
    "PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID",
    "PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID",
    "PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY",
    "EXCEEDS_PENDING_TRANSFER_AMOUNT",
    "EXCEEDS_CREDITS",
    "EXCEEDS_DEBITS",
    "OVERFLOWS_BALANCE",
    "NET_DEBIT_CAP_EXCEEDED",
    "HUB_ACCOUNT_RESERVED",
    "KYC_LIMIT_EXCEEDED",
    "KYC_CURRENCY_NOT_COVERED",
    "ID_ALREADY_USED",
    "ID_RESERVED",
];

fn result_code(result: TransferResult) -> u8 {
    let position = RESULT_CODES.iter().position(|code| *code == result.code());
    // Every variant is listed (checked by a test); a missing one would be a build-time bug.
    position.unwrap_or_else(|| panic!("result {} has no journal code", result.code())) as u8
}

fn result_of(code: u8) -> Result<TransferResult, FormatError> {
    let text = RESULT_CODES.get(code as usize).ok_or_else(|| bad(format!("result code {code}")))?;
    TransferResult::all()
        .iter()
        .copied()
        .find(|r| r.code() == *text)
        .ok_or_else(|| bad(format!("result {text}")))
}

fn role_code(role: Role) -> u8 {
    match role {
        Role::Operator => 1,
        Role::Participant => 2,
    }
}

fn role_of(code: u8) -> Result<Role, FormatError> {
    match code {
        1 => Ok(Role::Operator),
        2 => Ok(Role::Participant),
        _ => Err(bad(format!("role {code}"))),
    }
}

fn state_code(state: WindowState) -> u8 {
    match state {
        WindowState::Open => 1,
        WindowState::Closing => 2,
        WindowState::Closed => 3,
        WindowState::Settling => 4,
        WindowState::Settled => 5,
        WindowState::Aborted => 6,
        WindowState::Failed => 7,
        WindowState::Rejected => 8,
    }
}

fn state_of(code: u8) -> Result<WindowState, FormatError> {
    Ok(match code {
        1 => WindowState::Open,
        2 => WindowState::Closing,
        3 => WindowState::Closed,
        4 => WindowState::Settling,
        5 => WindowState::Settled,
        6 => WindowState::Aborted,
        7 => WindowState::Failed,
        8 => WindowState::Rejected,
        _ => return Err(bad(format!("window state {code}"))),
    })
}

fn country_code(country: Country) -> u8 {
    match country {
        Country::Us => 1,
        Country::Mx => 2,
    }
}

fn country_of(code: u8) -> Result<Country, FormatError> {
    match code {
        1 => Ok(Country::Us),
        2 => Ok(Country::Mx),
        _ => Err(bad(format!("country {code}"))),
    }
}

fn rail_code(rail: SettlementRail) -> u8 {
    match rail {
        SettlementRail::Fedwire => 1,
        SettlementRail::AchDirectoMexico => 2,
        SettlementRail::Spei => 3,
    }
}

fn rail_of(code: u8) -> Result<SettlementRail, FormatError> {
    match code {
        1 => Ok(SettlementRail::Fedwire),
        2 => Ok(SettlementRail::AchDirectoMexico),
        3 => Ok(SettlementRail::Spei),
        _ => Err(bad(format!("rail {code}"))),
    }
}

fn kind_code(kind: HolderKind) -> u8 {
    match kind {
        HolderKind::Individual => 1,
        HolderKind::Business => 2,
    }
}

fn kind_of(code: u8) -> Result<HolderKind, FormatError> {
    match code {
        1 => Ok(HolderKind::Individual),
        2 => Ok(HolderKind::Business),
        _ => Err(bad(format!("holder kind {code}"))),
    }
}

fn transfer_flags_byte(f: TransferFlags) -> u8 {
    u8::from(f.linked)
        | u8::from(f.pending) << 1
        | u8::from(f.post_pending) << 2
        | u8::from(f.void_pending) << 3
        | u8::from(f.post_on_expiry) << 4
}

fn transfer_flags_of(byte: u8) -> Result<TransferFlags, FormatError> {
    if byte >> 5 != 0 {
        return Err(bad(format!("transfer flags {byte:#x}")));
    }
    Ok(TransferFlags {
        linked: byte & 1 != 0,
        pending: byte & 2 != 0,
        post_pending: byte & 4 != 0,
        void_pending: byte & 8 != 0,
        post_on_expiry: byte & 16 != 0,
    })
}

fn account_flags_byte(f: AccountFlags) -> u8 {
    u8::from(f.debits_must_not_exceed_credits) | u8::from(f.credits_must_not_exceed_debits) << 1
}

fn account_flags_of(byte: u8) -> Result<AccountFlags, FormatError> {
    if byte >> 2 != 0 {
        return Err(bad(format!("account flags {byte:#x}")));
    }
    Ok(AccountFlags {
        debits_must_not_exceed_credits: byte & 1 != 0,
        credits_must_not_exceed_debits: byte & 2 != 0,
    })
}

// ----- writer -------------------------------------------------------------------------------

/// Appends encodings to a buffer.
pub struct Writer<'a> {
    pub out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }
    fn id(&mut self, v: u128) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.out.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn currency(&mut self, c: CurrencyCode) {
        self.out.extend_from_slice(c.as_str().as_bytes());
    }
    fn ts(&mut self, ts: u64) {
        self.varint(ts);
    }
    fn metadata(&mut self, m: &Metadata) {
        self.varint(m.len() as u64);
        for (k, v) in m {
            self.str(k);
            self.str(v);
        }
    }
    fn opt_varint(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.varint(v);
            }
            None => self.u8(0),
        }
    }
    fn effect(&mut self, e: &Effect) {
        self.id(e.debit_account_id);
        self.id(e.credit_account_id);
        self.varint(e.amount_minor);
    }
}

/// The timestamp an op carries.
pub fn op_timestamp(op: &Op) -> u64 {
    match op {
        Op::CreateAccount(a) => a.created_at_ns,
        Op::Transfer(r) => r.timestamp_ns,
        Op::Fail(f) => f.timestamp_ns,
        Op::Refused(r) => r.timestamp_ns,
        Op::SetProfile(p) => p.updated_at_ns,
        Op::RegisterHolder(h) => h.created_at_ns,
        Op::Expire { timestamp_ns, .. }
        | Op::AutoPost { timestamp_ns, .. }
        | Op::CloseWindow { timestamp_ns, .. }
        | Op::WindowTransition { timestamp_ns, .. }
        | Op::SettleWindow { timestamp_ns, .. }
        | Op::ConfirmSettlement { timestamp_ns, .. }
        | Op::CloseAccount { timestamp_ns, .. }
        | Op::RegisterParticipant { timestamp_ns, .. }
        | Op::AddApiKey { timestamp_ns, .. }
        | Op::RevokeApiKey { timestamp_ns, .. }
        | Op::BindCertificate { timestamp_ns, .. }
        | Op::UnbindCertificate { timestamp_ns, .. }
        | Op::SetKycPolicy { timestamp_ns, .. } => *timestamp_ns,
    }
}

/// Encodes a record's payload into `out` (cleared first). Returns, for each op, the offset of
/// its tag within the payload.
/// Encodes a record's payload into `out` (appended). Returns, in `offsets`, the offset of each
/// op's tag within the payload. `scratch` is reused between calls.
pub fn encode_payload(
    seq: u64,
    ops: &[Op],
    out: &mut Vec<u8>,
    offsets: &mut Vec<u32>,
    scratch: &mut Vec<u8>,
) {
    let start = out.len();
    offsets.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(PAYLOAD_VERSION);
    let mut w = Writer { out };
    w.varint(ops.len() as u64);
    for op in ops {
        offsets.push((w.out.len() - start) as u32);
        scratch.clear();
        let tag = encode_op_body(op, scratch);
        w.u8(tag);
        w.bytes(scratch);
    }
}

/// Encodes one op standalone (tag, length, body).
pub fn encode_op(op: &Op, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    let tag = encode_op_body(op, &mut body);
    let mut w = Writer { out };
    w.u8(tag);
    w.bytes(&body);
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per op kind, the codec's table (its golden-bytes tests pin each)"
)]
fn encode_op_body(op: &Op, body: &mut Vec<u8>) -> u8 {
    let mut w = Writer { out: body };
    match op {
        Op::CreateAccount(a) => {
            debug_assert!(
                a.debits_pending_minor == 0
                    && a.debits_posted_minor == 0
                    && a.credits_pending_minor == 0
                    && a.credits_posted_minor == 0
                    && !a.closed,
                "a created account is new"
            );
            w.id(a.id);
            w.str(&a.participant);
            w.currency(a.currency);
            w.u8(account_flags_byte(a.flags));
            w.varint(a.overdraft_limit_minor);
            w.str(&a.holder_ref);
            w.metadata(&a.metadata);
            w.ts(a.created_at_ns);
            tag::CREATE_ACCOUNT
        }
        Op::Transfer(r) => {
            let t = &r.transfer;
            w.id(t.id);
            w.u8(transfer_flags_byte(t.flags));
            w.id(t.debit_account_id);
            w.id(t.credit_account_id);
            w.varint(t.amount_minor);
            w.currency(t.currency);
            w.ts(r.timestamp_ns);
            w.str(&t.reference);
            w.metadata(&t.metadata);
            if t.flags.post_pending || t.flags.void_pending {
                w.id(t.pending_id);
                w.effect(&r.effect);
                w.varint(r.released_minor);
            } else {
                debug_assert!(
                    t.pending_id == 0
                        && r.effect.debit_account_id == t.debit_account_id
                        && r.effect.credit_account_id == t.credit_account_id
                        && r.effect.amount_minor == t.amount_minor,
                    "a single-phase or pending transfer's effect is itself"
                );
                if t.flags.pending {
                    w.varint(t.timeout_ms);
                    debug_assert_eq!(r.expires_at_ns, expires_at(r.timestamp_ns, t.timeout_ms));
                }
            }
            tag::TRANSFER
        }
        Op::Fail(f) => encode_op_body(&Op::Refused(RefusedTransfer::from_legacy(f)), body),
        Op::Refused(r) => {
            w.str(&r.scope);
            w.id(r.id);
            w.u8(transfer_flags_byte(r.flags));
            w.id(r.debit_account_id);
            w.id(r.credit_account_id);
            w.varint(r.amount_minor);
            w.currency(r.currency);
            w.id(r.pending_id);
            w.varint(r.timeout_ms);
            w.out.extend_from_slice(&r.reference_digest);
            w.out.extend_from_slice(&r.metadata_digest);
            w.u8(result_code(r.result));
            w.ts(r.timestamp_ns);
            tag::REFUSED
        }
        Op::Expire { pending_id, timestamp_ns, effect }
        | Op::AutoPost { pending_id, timestamp_ns, effect } => {
            w.id(*pending_id);
            w.ts(*timestamp_ns);
            w.effect(effect);
            if matches!(op, Op::AutoPost { .. }) { tag::AUTO_POST } else { tag::EXPIRE }
        }
        Op::SetProfile(p) => {
            w.str(&p.participant);
            w.str(&p.name);
            w.str(&p.bic);
            w.u8(country_code(p.country));
            w.varint(p.currencies.len() as u64);
            for c in &p.currencies {
                w.currency(c.currency);
                w.u8(rail_code(c.rail));
                w.str(&c.bank_id);
                w.varint(c.net_debit_cap_minor);
                w.id(c.settlement_account_id);
            }
            w.ts(p.updated_at_ns);
            tag::SET_PROFILE
        }
        Op::CloseWindow { window_id, next_window_id, timestamp_ns } => {
            w.varint(*window_id);
            w.varint(*next_window_id);
            w.ts(*timestamp_ns);
            tag::CLOSE_WINDOW
        }
        Op::WindowTransition { window_id, to, reason, timestamp_ns } => {
            w.varint(*window_id);
            w.u8(state_code(*to));
            w.str(reason);
            w.ts(*timestamp_ns);
            tag::WINDOW_TRANSITION
        }
        Op::SettleWindow { window_id, attempt, timestamp_ns } => {
            w.varint(*window_id);
            w.varint(u64::from(*attempt));
            w.ts(*timestamp_ns);
            tag::SETTLE_WINDOW
        }
        Op::ConfirmSettlement { window_id, participant, timestamp_ns } => {
            w.varint(*window_id);
            w.str(participant);
            w.ts(*timestamp_ns);
            tag::CONFIRM_SETTLEMENT
        }
        Op::CloseAccount { account_id, timestamp_ns } => {
            w.id(*account_id);
            w.ts(*timestamp_ns);
            tag::CLOSE_ACCOUNT
        }
        Op::RegisterParticipant { id, name, role, timestamp_ns } => {
            w.str(id);
            w.str(name);
            w.u8(role_code(*role));
            w.ts(*timestamp_ns);
            tag::REGISTER_PARTICIPANT
        }
        Op::AddApiKey { participant, key_id, key_sha256, timestamp_ns } => {
            w.str(participant);
            w.str(key_id);
            w.out.extend_from_slice(key_sha256);
            w.ts(*timestamp_ns);
            tag::ADD_API_KEY
        }
        Op::RevokeApiKey { participant, key_id, timestamp_ns } => {
            w.str(participant);
            w.str(key_id);
            w.ts(*timestamp_ns);
            tag::REVOKE_API_KEY
        }
        Op::BindCertificate { participant, cert_sha256, timestamp_ns }
        | Op::UnbindCertificate { participant, cert_sha256, timestamp_ns } => {
            w.str(participant);
            w.out.extend_from_slice(cert_sha256);
            w.ts(*timestamp_ns);
            if matches!(op, Op::BindCertificate { .. }) {
                tag::BIND_CERTIFICATE
            } else {
                tag::UNBIND_CERTIFICATE
            }
        }
        Op::RegisterHolder(h) => {
            w.str(&h.participant);
            w.str(&h.id);
            w.u8(kind_code(h.kind));
            w.str(&h.country);
            w.str(h.tier.as_str());
            for field in [
                &h.pii.full_name,
                &h.pii.address,
                &h.pii.clabe,
                &h.pii.account_number,
                &h.pii.routing_number,
                &h.pii.rfc,
            ] {
                w.bytes(field);
            }
            w.ts(h.created_at_ns);
            tag::REGISTER_HOLDER
        }
        Op::SetKycPolicy { policy, timestamp_ns } => {
            w.str(&policy.udi_rate.to_string());
            w.varint(policy.us_tiers.len() as u64);
            for (name, limits) in &policy.us_tiers {
                w.str(name);
                w.opt_varint(limits.monthly_credit_limit_minor);
                w.opt_varint(limits.balance_limit_minor);
            }
            w.ts(*timestamp_ns);
            tag::SET_KYC_POLICY
        }
    }
}

pub use crate::types::expires_at;

// ----- reader -------------------------------------------------------------------------------

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }
    pub fn position(&self) -> usize {
        self.at
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end =
            self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or_else(|| bad("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u64_le(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| bad("u64"))?))
    }
    pub fn varint(&mut self) -> Result<u64, FormatError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(bad("varint overflows u64"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }
    fn id(&mut self) -> Result<u128, FormatError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().map_err(|_| bad("id"))?))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        self.take(N)?.try_into().map_err(|_| bad("array"))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, FormatError> {
        let len = self.varint()? as usize;
        if len > DECODE_BYTES_MAX {
            return Err(bad(format!("a string of {len} bytes")));
        }
        Ok(self.take(len)?.to_vec())
    }
    fn str(&mut self) -> Result<String, FormatError> {
        String::from_utf8(self.bytes()?).map_err(|_| bad("a string that is not UTF-8"))
    }
    fn currency(&mut self) -> Result<CurrencyCode, FormatError> {
        let bytes = self.take(3)?;
        let text = std::str::from_utf8(bytes).map_err(|_| bad("currency"))?;
        CurrencyCode::parse(text).map_err(|e| bad(e.to_string()))
    }
    fn ts(&mut self) -> Result<u64, FormatError> {
        self.varint()
    }
    fn count(&mut self) -> Result<usize, FormatError> {
        let n = self.varint()? as usize;
        if n > DECODE_ENTRIES_MAX {
            return Err(bad(format!("{n} entries")));
        }
        Ok(n)
    }
    fn metadata(&mut self) -> Result<Metadata, FormatError> {
        let n = self.count()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?;
            let v = self.str()?;
            m.insert(k, v);
        }
        Ok(m)
    }
    fn opt_varint(&mut self) -> Result<Option<u64>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.varint()?)),
            other => Err(bad(format!("option byte {other}"))),
        }
    }
    fn effect(&mut self) -> Result<Effect, FormatError> {
        Ok(Effect {
            debit_account_id: self.id()?,
            credit_account_id: self.id()?,
            amount_minor: self.varint()?,
        })
    }
    fn done(&self) -> Result<(), FormatError> {
        if self.at == self.bytes.len() { Ok(()) } else { Err(bad("trailing bytes")) }
    }
}

/// A decoded payload: its sequence number and ops, with each op's offset in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPayload {
    pub seq: u64,
    pub ops: Vec<Op>,
    pub offsets: Vec<u32>,
}

/// Decodes a whole payload.
pub fn decode_payload(payload: &[u8]) -> Result<DecodedPayload, FormatError> {
    if payload.len() < PAYLOAD_PREFIX_BYTES {
        return Err(bad("a payload shorter than its prefix"));
    }
    let mut r = Reader::new(payload);
    let seq = r.u64_le()?;
    let version = r.u8()?;
    if version != PAYLOAD_VERSION {
        return Err(bad(format!("payload version {version} (this build reads {PAYLOAD_VERSION})")));
    }
    let n = r.varint()? as usize;
    if n > payload.len() {
        return Err(bad(format!("{n} ops in {} bytes", payload.len())));
    }
    let mut ops = Vec::with_capacity(n);
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        offsets.push(r.position() as u32);
        ops.push(decode_op(&mut r)?);
    }
    r.done()?;
    Ok(DecodedPayload { seq, ops, offsets })
}

/// Decodes the op that starts at the beginning of `bytes` (read from its location; `bytes`
/// may run past its end). Returns the op and its encoded length.
pub fn decode_op_at(bytes: &[u8]) -> Result<(Op, usize), FormatError> {
    let mut r = Reader::new(bytes);
    let op = decode_op(&mut r)?;
    Ok((op, r.position()))
}

/// Decodes one op (tag, length, body) at the reader's position.
pub fn decode_op(r: &mut Reader<'_>) -> Result<Op, FormatError> {
    let tag = r.u8()?;
    let len = r.varint()? as usize;
    let body = r.take(len)?;
    let mut b = Reader::new(body);
    let op = decode_body(tag, &mut b)?;
    b.done()?;
    Ok(op)
}

#[expect(clippy::too_many_lines, reason = "one arm per op kind, mirroring `encode_op_body`")]
fn decode_body(tag: u8, r: &mut Reader<'_>) -> Result<Op, FormatError> {
    Ok(match tag {
        tag::CREATE_ACCOUNT => {
            let id = r.id()?;
            let participant = r.str()?;
            let currency = r.currency()?;
            let flags = account_flags_of(r.u8()?)?;
            let overdraft_limit_minor = r.varint()?;
            let holder_ref = r.str()?;
            let metadata = r.metadata()?;
            let created_at_ns = r.ts()?;
            Op::CreateAccount(Account::from_new(
                NewAccount { id, participant, currency, flags, overdraft_limit_minor, holder_ref, metadata },
                created_at_ns,
            ))
        }
        tag::TRANSFER => {
            let id = r.id()?;
            let flags = transfer_flags_of(r.u8()?)?;
            let debit_account_id = r.id()?;
            let credit_account_id = r.id()?;
            let amount_minor = r.varint()?;
            let currency = r.currency()?;
            let timestamp_ns = r.ts()?;
            let reference = r.str()?;
            let metadata = r.metadata()?;
            let mut transfer = Transfer {
                id,
                debit_account_id,
                credit_account_id,
                amount_minor,
                currency,
                flags,
                pending_id: 0,
                timeout_ms: 0,
                reference,
                metadata,
            };
            let (effect, released_minor, expires_at_ns) = if flags.post_pending || flags.void_pending {
                transfer.pending_id = r.id()?;
                let effect = r.effect()?;
                (effect, r.varint()?, 0)
            } else {
                let effect = Effect { debit_account_id, credit_account_id, amount_minor };
                if flags.pending {
                    transfer.timeout_ms = r.varint()?;
                }
                (effect, 0, if flags.pending { expires_at(timestamp_ns, transfer.timeout_ms) } else { 0 })
            };
            Op::Transfer(TransferRecord { transfer, effect, timestamp_ns, expires_at_ns, released_minor })
        }
        tag::REFUSED => Op::Refused(RefusedTransfer {
            scope: r.str()?,
            id: r.id()?,
            flags: transfer_flags_of(r.u8()?)?,
            debit_account_id: r.id()?,
            credit_account_id: r.id()?,
            amount_minor: r.varint()?,
            currency: r.currency()?,
            pending_id: r.id()?,
            timeout_ms: r.varint()?,
            reference_digest: r.array()?,
            metadata_digest: r.array()?,
            result: result_of(r.u8()?)?,
            timestamp_ns: r.ts()?,
        }),
        tag::EXPIRE | tag::AUTO_POST => {
            let pending_id = r.id()?;
            let timestamp_ns = r.ts()?;
            let effect = r.effect()?;
            if tag == tag::EXPIRE {
                Op::Expire { pending_id, timestamp_ns, effect }
            } else {
                Op::AutoPost { pending_id, timestamp_ns, effect }
            }
        }
        tag::SET_PROFILE => {
            let participant = r.str()?;
            let name = r.str()?;
            let bic = r.str()?;
            let country = country_of(r.u8()?)?;
            let n = r.count()?;
            let mut currencies = Vec::with_capacity(n);
            for _ in 0..n {
                currencies.push(CurrencyProfile {
                    currency: r.currency()?,
                    rail: rail_of(r.u8()?)?,
                    bank_id: r.str()?,
                    net_debit_cap_minor: r.varint()?,
                    settlement_account_id: r.id()?,
                });
            }
            let updated_at_ns = r.ts()?;
            Op::SetProfile(ParticipantProfile { participant, name, bic, country, currencies, updated_at_ns })
        }
        tag::CLOSE_WINDOW => {
            Op::CloseWindow { window_id: r.varint()?, next_window_id: r.varint()?, timestamp_ns: r.ts()? }
        }
        tag::WINDOW_TRANSITION => Op::WindowTransition {
            window_id: r.varint()?,
            to: state_of(r.u8()?)?,
            reason: r.str()?,
            timestamp_ns: r.ts()?,
        },
        tag::SETTLE_WINDOW => Op::SettleWindow {
            window_id: r.varint()?,
            attempt: u32::try_from(r.varint()?).map_err(|_| bad("attempt"))?,
            timestamp_ns: r.ts()?,
        },
        tag::CONFIRM_SETTLEMENT => {
            Op::ConfirmSettlement { window_id: r.varint()?, participant: r.str()?, timestamp_ns: r.ts()? }
        }
        tag::CLOSE_ACCOUNT => Op::CloseAccount { account_id: r.id()?, timestamp_ns: r.ts()? },
        tag::REGISTER_PARTICIPANT => Op::RegisterParticipant {
            id: r.str()?,
            name: r.str()?,
            role: role_of(r.u8()?)?,
            timestamp_ns: r.ts()?,
        },
        tag::ADD_API_KEY => Op::AddApiKey {
            participant: r.str()?,
            key_id: r.str()?,
            key_sha256: r.array()?,
            timestamp_ns: r.ts()?,
        },
        tag::REVOKE_API_KEY => {
            Op::RevokeApiKey { participant: r.str()?, key_id: r.str()?, timestamp_ns: r.ts()? }
        }
        tag::BIND_CERTIFICATE => {
            Op::BindCertificate { participant: r.str()?, cert_sha256: r.array()?, timestamp_ns: r.ts()? }
        }
        tag::UNBIND_CERTIFICATE => {
            Op::UnbindCertificate { participant: r.str()?, cert_sha256: r.array()?, timestamp_ns: r.ts()? }
        }
        tag::REGISTER_HOLDER => {
            let participant = r.str()?;
            let id = r.str()?;
            let kind = kind_of(r.u8()?)?;
            let country = r.str()?;
            let tier = puente_kyc::kyc::Tier::parse(&r.str()?).map_err(|e| bad(e.to_string()))?;
            let pii = SealedPii {
                full_name: r.bytes()?,
                address: r.bytes()?,
                clabe: r.bytes()?,
                account_number: r.bytes()?,
                routing_number: r.bytes()?,
                rfc: r.bytes()?,
            };
            let created_at_ns = r.ts()?;
            Op::RegisterHolder(Box::new(Holder { participant, id, kind, country, tier, pii, created_at_ns }))
        }
        tag::SET_KYC_POLICY => {
            let udi_rate: rust_decimal::Decimal = r.str()?.parse().map_err(|_| bad("UDI rate"))?;
            let n = r.count()?;
            let mut us_tiers = BTreeMap::new();
            for _ in 0..n {
                let name = r.str()?;
                let limits = puente_kyc::kyc::UsTierLimits {
                    monthly_credit_limit_minor: r.opt_varint()?,
                    balance_limit_minor: r.opt_varint()?,
                };
                us_tiers.insert(name, limits);
            }
            let timestamp_ns = r.ts()?;
            let policy = puente_kyc::kyc::KycPolicy { udi_rate, us_tiers };
            Op::SetKycPolicy { policy, timestamp_ns }
        }
        other => return Err(bad(format!("unknown op tag {other}"))),
    })
}
