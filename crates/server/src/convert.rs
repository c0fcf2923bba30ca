//! Wire <-> ledger conversions. Parsing is all-or-nothing: every bad field of a request is
//! reported (with its path) and nothing is executed.

use puente_ledger::{self as ledger, AccountId, EntryKind, PendingState, Prior, TransferRecord};
use puente_money::{CurrencyCode, CurrencyTable};
use puente_proto::v1 as pb;
use uuid::Uuid;

use crate::error::Violation;

pub fn format_id(id: u128) -> String {
    Uuid::from_u128(id).to_string()
}

/// Parses UUID text (hyphens optional). Empty text is `None`.
pub fn parse_id(text: &str, field: &str, violations: &mut Vec<Violation>) -> Option<u128> {
    if text.is_empty() {
        return None;
    }
    match Uuid::try_parse(text) {
        Ok(uuid) => Some(uuid.as_u128()),
        Err(_) => {
            violations.push(Violation::new(field, "not a UUID (expected 32 hex digits, hyphens optional)"));
            None
        }
    }
}

pub fn required_id(text: &str, field: &str, violations: &mut Vec<Violation>) -> u128 {
    if text.is_empty() {
        violations.push(Violation::new(field, "required"));
        return 0;
    }
    parse_id(text, field, violations).unwrap_or(0)
}

pub fn timestamp(ns: u64) -> Option<prost_types::Timestamp> {
    if ns == 0 {
        return None;
    }
    Some(prost_types::Timestamp { seconds: (ns / 1_000_000_000) as i64, nanos: (ns % 1_000_000_000) as i32 })
}

pub fn timestamp_ns(
    ts: &Option<prost_types::Timestamp>,
    field: &str,
    violations: &mut Vec<Violation>,
) -> Option<u64> {
    let ts = ts.as_ref()?;
    if ts.seconds < 0 || !(0..1_000_000_000).contains(&ts.nanos) {
        violations.push(Violation::new(field, "must be a valid time after 1970"));
        return None;
    }
    let ns = (ts.seconds as u64).checked_mul(1_000_000_000).and_then(|s| s.checked_add(ts.nanos as u64));
    if ns.is_none() {
        violations.push(Violation::new(field, "too far in the future"));
    }
    ns
}

fn parse_currency(
    text: &str,
    field: &str,
    currencies: &CurrencyTable,
    violations: &mut Vec<Violation>,
) -> Option<CurrencyCode> {
    match currencies.lookup(text) {
        Ok(currency) => Some(currency.code),
        Err(error) => {
            violations.push(Violation::new(field, error.to_string()));
            None
        }
    }
}

/// Parses a Money; `allow_empty` lets an empty value mean 0 (a full post).
fn parse_money(
    money: &Option<pb::Money>,
    field: &str,
    currencies: &CurrencyTable,
    allow_empty: bool,
    violations: &mut Vec<Violation>,
) -> Option<(CurrencyCode, u64)> {
    let Some(money) = money else {
        violations.push(Violation::new(field, "required"));
        return None;
    };
    let code =
        parse_currency(&money.currency_code, &format!("{field}.currency_code"), currencies, violations)?;
    let currency = currencies.get(code).ok()?;
    if money.value.is_empty() && allow_empty {
        return Some((code, 0));
    }
    match currency.parse_amount(&money.value) {
        Ok(amount) => Some((code, amount)),
        Err(error) => {
            violations.push(Violation::new(format!("{field}.value"), error.to_string()));
            None
        }
    }
}

fn money(currencies: &CurrencyTable, code: CurrencyCode, amount_minor: u128) -> pb::Money {
    let value = match currencies.get(code) {
        Ok(c) => c.format_amount(amount_minor),
        Err(_) => amount_minor.to_string(),
    };
    pb::Money { currency_code: code.to_string(), value }
}

fn format_amount(currencies: &CurrencyTable, code: CurrencyCode, amount_minor: u128) -> String {
    money(currencies, code, amount_minor).value
}

fn format_signed(currencies: &CurrencyTable, code: CurrencyCode, amount_minor: i128) -> String {
    match currencies.get(code) {
        Ok(c) => c.format_signed(amount_minor),
        Err(_) => amount_minor.to_string(),
    }
}

pub fn new_account(
    account: &pb::Account,
    index: usize,
    currencies: &CurrencyTable,
    violations: &mut Vec<Violation>,
) -> ledger::NewAccount {
    let field = |name: &str| format!("accounts[{index}].{name}");
    let id = required_id(&account.id, &field("id"), violations);
    let currency = parse_currency(&account.currency_code, &field("currency_code"), currencies, violations);
    let overdraft_limit_minor = if account.overdraft_limit.is_empty() {
        0
    } else {
        match currency.and_then(|c| currencies.get(c).ok()) {
            Some(c) => c.parse_amount(&account.overdraft_limit).unwrap_or_else(|error| {
                violations.push(Violation::new(field("overdraft_limit"), error.to_string()));
                0
            }),
            None => 0,
        }
    };
    ledger::NewAccount {
        id,
        participant: account.participant.clone(),
        currency: currency.unwrap_or(CurrencyCode::USD),
        flags: ledger::AccountFlags {
            debits_must_not_exceed_credits: account.debits_must_not_exceed_credits,
            credits_must_not_exceed_debits: account.credits_must_not_exceed_debits,
        },
        overdraft_limit_minor,
        holder_ref: account.holder_ref.clone(),
        metadata: account.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

pub fn account(a: &ledger::Account, currencies: &CurrencyTable) -> pb::Account {
    let amount = |minor| format_amount(currencies, a.currency, minor);
    pb::Account {
        id: format_id(a.id),
        participant: a.participant.clone(),
        currency_code: a.currency.to_string(),
        debits_must_not_exceed_credits: a.flags.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits: a.flags.credits_must_not_exceed_debits,
        overdraft_limit: amount(a.overdraft_limit_minor as u128),
        holder_ref: a.holder_ref.clone(),
        metadata: a.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        debits_pending: amount(a.debits_pending_minor),
        debits_posted: amount(a.debits_posted_minor),
        credits_pending: amount(a.credits_pending_minor),
        credits_posted: amount(a.credits_posted_minor),
        posted_balance: format_signed(currencies, a.currency, a.posted_balance_minor()),
        available_balance: format_signed(currencies, a.currency, a.available_balance_minor()),
        create_time: timestamp(a.created_at_ns),
        closed: a.closed,
    }
}

pub fn transfer_in(
    t: &pb::Transfer,
    index: usize,
    currencies: &CurrencyTable,
    violations: &mut Vec<Violation>,
) -> ledger::Transfer {
    let field = |name: &str| format!("transfers[{index}].{name}");
    let before = violations.len();
    let kind = pb::TransferKind::try_from(t.kind).unwrap_or(pb::TransferKind::Unspecified);
    let flags = ledger::TransferFlags {
        linked: t.linked,
        pending: kind == pb::TransferKind::Pending,
        post_pending: kind == pb::TransferKind::PostPending,
        void_pending: kind == pb::TransferKind::VoidPending,
        post_on_expiry: t.post_on_expiry,
    };
    if kind == pb::TransferKind::Unspecified {
        violations.push(Violation::new(
            field("kind"),
            "required: SINGLE_PHASE, PENDING, POST_PENDING or VOID_PENDING",
        ));
    }
    let resolving = flags.post_pending || flags.void_pending;
    let id = required_id(&t.id, &field("id"), violations);
    let (debit_account_id, credit_account_id) = if resolving {
        (
            parse_id(&t.debit_account_id, &field("debit_account_id"), violations).unwrap_or(0),
            parse_id(&t.credit_account_id, &field("credit_account_id"), violations).unwrap_or(0),
        )
    } else {
        (
            required_id(&t.debit_account_id, &field("debit_account_id"), violations),
            required_id(&t.credit_account_id, &field("credit_account_id"), violations),
        )
    };
    let pending_id = if resolving {
        required_id(&t.pending_id, &field("pending_id"), violations)
    } else {
        parse_id(&t.pending_id, &field("pending_id"), violations).unwrap_or(0)
    };
    let (currency, amount_minor) =
        parse_money(&t.amount, &field("amount"), currencies, resolving, violations)
            .unwrap_or((CurrencyCode::USD, 0));
    debug_assert!(violations.len() >= before);
    ledger::Transfer {
        id,
        debit_account_id,
        credit_account_id,
        amount_minor,
        currency,
        flags,
        pending_id,
        timeout_ms: t.timeout_ms,
        reference: t.reference.clone(),
        metadata: t.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn kind_of(flags: &ledger::TransferFlags) -> pb::TransferKind {
    if flags.pending {
        pb::TransferKind::Pending
    } else if flags.post_pending {
        pb::TransferKind::PostPending
    } else if flags.void_pending {
        pb::TransferKind::VoidPending
    } else {
        pb::TransferKind::SinglePhase
    }
}

fn base_transfer(t: &ledger::Transfer, currencies: &CurrencyTable) -> pb::Transfer {
    let id_or_empty = |id: u128| if id == 0 { String::new() } else { format_id(id) };
    pb::Transfer {
        id: format_id(t.id),
        debit_account_id: id_or_empty(t.debit_account_id),
        credit_account_id: id_or_empty(t.credit_account_id),
        amount: Some(money(currencies, t.currency, t.amount_minor as u128)),
        kind: kind_of(&t.flags) as i32,
        linked: t.flags.linked,
        post_on_expiry: t.flags.post_on_expiry,
        pending_id: id_or_empty(t.pending_id),
        timeout_ms: t.timeout_ms,
        reference: t.reference.clone(),
        metadata: t.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ..Default::default()
    }
}

/// A committed transfer as the wire shows it; `pending_state` is the state of a pending one.
pub fn transfer_out(
    record: &TransferRecord,
    pending_state: Option<PendingState>,
    currencies: &CurrencyTable,
) -> pb::Transfer {
    let mut out = base_transfer(&record.transfer, currencies);
    out.create_time = timestamp(record.timestamp_ns);
    out.position = record.timestamp_ns;
    out.expire_time = timestamp(record.expires_at_ns);
    out.effective_amount =
        Some(money(currencies, record.transfer.currency, record.effect.amount_minor as u128));
    out.debit_account_id = format_id(record.effect.debit_account_id);
    out.credit_account_id = format_id(record.effect.credit_account_id);
    out.state = match (record.transfer.flags.pending, pending_state) {
        (false, _) => pb::TransferState::Posted,
        (true, Some(PendingState::Posted)) => pb::TransferState::PendingPosted,
        (true, Some(PendingState::Voided)) => pb::TransferState::PendingVoided,
        (true, Some(PendingState::Expired)) => pb::TransferState::PendingExpired,
        (true, _) => pb::TransferState::Pending,
    } as i32;
    out
}

pub fn prior_out(
    prior: &Prior,
    pending_state: Option<PendingState>,
    currencies: &CurrencyTable,
) -> pb::Transfer {
    match prior {
        Prior::Committed(record) => transfer_out(record, pending_state, currencies),
        Prior::Failed(failed) => {
            let mut out = base_transfer(&failed.transfer, currencies);
            out.create_time = timestamp(failed.timestamp_ns);
            out.state = pb::TransferState::Failed as i32;
            out.failure_code = failed.result.code().to_owned();
            out
        }
    }
}

pub fn entry_kind(kind: EntryKind) -> pb::EntryKind {
    match kind {
        EntryKind::Posted => pb::EntryKind::Posted,
        EntryKind::Pending => pb::EntryKind::Pending,
        EntryKind::PostPending => pb::EntryKind::PostPending,
        EntryKind::VoidPending => pb::EntryKind::VoidPending,
        EntryKind::Expired => pb::EntryKind::Expired,
    }
}

pub fn statement_line(
    entry: &ledger::Entry,
    currency: CurrencyCode,
    currencies: &CurrencyTable,
) -> pb::StatementLine {
    let posted = entry.credits_posted_minor as i128 - entry.debits_posted_minor as i128;
    let available = posted - entry.debits_pending_minor as i128;
    pb::StatementLine {
        time: timestamp(entry.timestamp_ns),
        transfer_id: format_id(entry.transfer_id),
        kind: entry_kind(entry.kind) as i32,
        debit: entry.is_debit,
        amount: Some(money(currencies, currency, entry.amount_minor as u128)),
        posted_balance: format_signed(currencies, currency, posted),
        available_balance: format_signed(currencies, currency, available),
        position: entry.timestamp_ns,
    }
}

pub fn posted_balance(entry: Option<&ledger::Entry>) -> i128 {
    entry.map(|e| e.credits_posted_minor as i128 - e.debits_posted_minor as i128).unwrap_or(0)
}

pub fn signed(currencies: &CurrencyTable, code: CurrencyCode, minor: i128) -> String {
    format_signed(currencies, code, minor)
}

pub fn page_size(requested: i32, field: &str, violations: &mut Vec<Violation>) -> usize {
    match requested {
        0 => 100,
        1..=1000 => requested as usize,
        _ => {
            violations.push(Violation::new(field, "must be between 0 (default 100) and 1000"));
            0
        }
    }
}

pub fn account_page_token(text: &str, violations: &mut Vec<Violation>) -> AccountId {
    parse_id(text, "page_token", violations).unwrap_or(0)
}

pub fn position_page_token(text: &str, violations: &mut Vec<Violation>) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    match text.strip_prefix("p").and_then(|n| n.parse::<u64>().ok()) {
        Some(position) => Some(position),
        None => {
            violations.push(Violation::new("page_token", "not a token from a previous response"));
            None
        }
    }
}

pub fn position_token(position: u64) -> String {
    format!("p{position}")
}
