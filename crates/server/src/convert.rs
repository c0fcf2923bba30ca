//! Wire <-> ledger conversions. Parsing is all-or-nothing: every bad field of a request is
//! reported (with its path) and nothing is executed.

use puente_ledger::settlement::{WindowState, WindowView};
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

/// Parses a currency code the table knows; a violation otherwise (empty text included).
pub fn parse_currency(
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

/// An optional currency code: empty text is `None`, anything else must be known.
pub fn parse_optional_currency(
    text: &str,
    field: &str,
    currencies: &CurrencyTable,
    violations: &mut Vec<Violation>,
) -> Option<CurrencyCode> {
    if text.is_empty() {
        return None;
    }
    parse_currency(text, field, currencies, violations)
}

/// An amount in minor units as wire `Money` (decimal text at the currency's scale).
pub fn money(currencies: &CurrencyTable, code: CurrencyCode, amount_minor: u128) -> pb::Money {
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

/// A signed amount in minor units as wire `Money`.
pub fn signed_money(currencies: &CurrencyTable, code: CurrencyCode, amount_minor: i128) -> pb::Money {
    pb::Money { currency_code: code.to_string(), value: format_signed(currencies, code, amount_minor) }
}

/// The currency's number of decimal places (2 for one the table does not know).
pub fn scale(currencies: &CurrencyTable, code: CurrencyCode) -> u32 {
    currencies.get(code).map(|c| c.scale).unwrap_or(2)
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
    out.system_generated = ledger::engine::is_expiry_record(record);
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
            // A failure is remembered without its free text (reference, metadata): only digests.
            let transfer = ledger::Transfer {
                id: failed.id,
                debit_account_id: failed.debit_account_id,
                credit_account_id: failed.credit_account_id,
                amount_minor: failed.amount_minor,
                currency: failed.currency,
                flags: failed.flags,
                pending_id: failed.pending_id,
                timeout_ms: failed.timeout_ms,
                reference: String::new(),
                metadata: ledger::Metadata::new(),
            };
            let mut out = base_transfer(&transfer, currencies);
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

// ----- settlement windows (shared by SettlementService and ReconcileStatements) ---------------

/// A window state on the wire.
pub fn state_out(state: WindowState) -> pb::WindowState {
    match state {
        WindowState::Open => pb::WindowState::Open,
        WindowState::Closing => pb::WindowState::Closing,
        WindowState::Closed => pb::WindowState::Closed,
        WindowState::Settling => pb::WindowState::Settling,
        WindowState::Settled => pb::WindowState::Settled,
        WindowState::Aborted => pb::WindowState::Aborted,
        WindowState::Failed => pb::WindowState::Failed,
        WindowState::Rejected => pb::WindowState::Rejected,
    }
}

/// A window on the wire (with the positions, or without).
pub fn window_out(w: &WindowView, currencies: &CurrencyTable, with_positions: bool) -> pb::SettlementWindow {
    let c = w.currency;
    pb::SettlementWindow {
        window_id: w.id,
        currency_code: c.to_string(),
        state: state_out(w.state) as i32,
        open_time: timestamp(w.opened_at_ns),
        close_time: timestamp(w.closed_at_ns),
        settle_time: timestamp(w.settled_at_ns),
        complete_time: timestamp(w.completed_at_ns),
        first_position: w.first_transfer_ns,
        last_position: w.last_transfer_ns,
        obligation_count: w.obligation_count,
        gross_value: Some(money(currencies, c, w.gross_value_minor)),
        attempts: w.attempts,
        reason: w.reason.clone(),
        positions: if with_positions {
            w.positions
                .iter()
                .map(|p| pb::WindowPosition {
                    participant: p.participant.clone(),
                    paid: Some(money(currencies, c, p.paid_minor)),
                    received: Some(money(currencies, c, p.received_minor)),
                    paid_count: p.paid_count,
                    received_count: p.received_count,
                    net: Some(signed_money(currencies, c, p.net_minor)),
                    confirmed: p.confirmed,
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// Property targets for every parser of outside input in this module (the security issue's
/// "a fuzz or property target for every parser"). Run with the normal test suite, briefly.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use puente_money::{AMOUNT_MAX_MINOR, Currency};

    const CASES: u32 = 256;

    /// USD and MXN (scale 2) plus currencies of scale 0 and the largest scale.
    fn currencies() -> CurrencyTable {
        let add = |table: CurrencyTable, code: &str, scale| {
            table.with(Currency::new(CurrencyCode::parse(code).unwrap(), scale).unwrap()).unwrap()
        };
        add(add(CurrencyTable::default(), "JPY", 0), "XBT", puente_money::SCALE_MAX)
    }

    /// Text of any kind: unicode, control characters, and very long runs.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            any::<String>(),
            "\\PC{0,40}",
            (any::<String>(), 1usize..5_000).prop_map(|(s, n)| s.repeat(n).chars().take(100_000).collect()),
        ]
    }

    fn id_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => any::<u128>().prop_map(format_id),
            1 => any::<u128>().prop_map(|id| format!("{id:032x}")),
            1 => any::<u128>().prop_map(|id| format_id(id).to_uppercase()),
            1 => any::<u128>().prop_map(|id| format!("{{{}}}", format_id(id))),
            1 => any::<u128>().prop_map(|id| format!("urn:uuid:{}", format_id(id))),
            1 => "[0-9a-fA-F-]{0,40}",
            2 => any_text(),
        ]
    }

    fn amount_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "-?[0-9]{0,20}(\\.[0-9]{0,8})?",
            1 => "[0-9]{15,19}(\\.[0-9]{0,3})?",
            1 => "[-+0-9.eE_, ]{0,12}",
            1 => (1usize..10_000).prop_map(|n| "9".repeat(n)),
            1 => (1usize..10_000).prop_map(|n| format!("0.{}", "0".repeat(n))),
            2 => any_text(),
        ]
    }

    fn currency_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec!["USD", "MXN", "JPY", "XBT", "CAD", "usd", "US", "USDX", ""])
                .prop_map(str::to_owned),
            1 => "[A-Z]{3}",
            1 => "\\PC{3}",
            1 => any_text(),
        ]
    }

    fn metadata() -> impl Strategy<Value = std::collections::HashMap<String, String>> {
        prop::collection::vec((any_text(), any_text()), 0..4).prop_map(|pairs| pairs.into_iter().collect())
    }

    fn money_in() -> impl Strategy<Value = Option<pb::Money>> {
        prop::option::weighted(
            0.9,
            (currency_text(), amount_text())
                .prop_map(|(currency_code, value)| pb::Money { currency_code, value }),
        )
    }

    fn kind() -> impl Strategy<Value = i32> {
        prop_oneof![4 => 0i32..6, 1 => any::<i32>()]
    }

    /// Mostly well-formed transfers (so the checks on accepted ones run often), and some
    /// arbitrary ones.
    fn transfer() -> impl Strategy<Value = pb::Transfer> {
        prop_oneof![3 => well_formed_transfer(), 1 => arbitrary_transfer()]
    }

    fn optional_id() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), any::<u128>().prop_map(format_id)]
    }

    prop_compose! {
        fn well_formed_transfer()(
            id in any::<u128>().prop_map(format_id),
            accounts in prop_oneof![
                (any::<u128>(), any::<u128>()).prop_map(|(d, c)| (format_id(d), format_id(c))),
                (optional_id(), optional_id()),
            ],
            pending_id in optional_id(),
            currency_code in prop::sample::select(vec!["USD", "MXN", "JPY", "XBT"]).prop_map(str::to_owned),
            value in prop_oneof![
                3 => "[0-9]{1,18}(\\.[0-9]{1,6})?",
                1 => Just(String::new()),
                1 => amount_text(),
            ],
            kind in 1i32..=4,
            rest in arbitrary_transfer(),
        ) -> pb::Transfer {
            pb::Transfer {
                id,
                debit_account_id: accounts.0,
                credit_account_id: accounts.1,
                pending_id,
                amount: Some(pb::Money { currency_code, value }),
                kind,
                ..rest
            }
        }
    }

    prop_compose! {
        fn arbitrary_transfer()(
            ids in (id_text(), id_text(), id_text(), id_text()),
            amount in money_in(),
            kind in kind(),
            flags in any::<(bool, bool)>(),
            timeout_ms in any::<u64>(),
            reference in any_text(),
            metadata in metadata(),
        ) -> pb::Transfer {
            pb::Transfer {
                id: ids.0,
                debit_account_id: ids.1,
                credit_account_id: ids.2,
                pending_id: ids.3,
                amount,
                kind,
                linked: flags.0,
                post_on_expiry: flags.1,
                timeout_ms,
                reference,
                metadata,
                ..Default::default()
            }
        }
    }

    prop_compose! {
        fn account_in()(
            id in prop_oneof![3 => any::<u128>().prop_map(format_id), 1 => id_text()],
            participant in any_text(),
            currency_code in prop_oneof![
                3 => prop::sample::select(vec!["USD", "MXN", "JPY", "XBT"]).prop_map(str::to_owned),
                1 => currency_text(),
            ],
            flags in any::<(bool, bool)>(),
            overdraft_limit in prop_oneof![Just(String::new()), "[0-9]{1,18}(\\.[0-9]{1,6})?", amount_text()],
            holder_ref in any_text(),
            metadata in metadata(),
        ) -> pb::Account {
            pb::Account {
                id,
                participant,
                currency_code,
                debits_must_not_exceed_credits: flags.0,
                credits_must_not_exceed_debits: flags.1,
                overdraft_limit,
                holder_ref,
                metadata,
                ..Default::default()
            }
        }
    }

    /// An accepted amount is within the limit, and its formatted text parses back to it.
    fn assert_amount_round_trips(table: &CurrencyTable, code: CurrencyCode, minor: u64) {
        assert!(minor <= AMOUNT_MAX_MINOR, "{minor} above the maximum");
        let currency = table.get(code).unwrap();
        let text = currency.format_amount(minor as u128);
        assert_eq!(currency.parse_amount(&text), Ok(minor), "{text:?} in {code}");
    }

    fn assert_id_round_trips(id: u128) {
        let mut violations = Vec::new();
        assert_eq!(parse_id(&format_id(id), "id", &mut violations), Some(id));
        assert!(violations.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn transfer_in_never_panics_and_accepts_only_valid_amounts(t in transfer(), index in 0usize..10_000) {
            let table = currencies();
            let mut violations = Vec::new();
            let parsed = transfer_in(&t, index, &table, &mut violations);
            let prefix = format!("transfers[{index}].");
            prop_assert!(violations.iter().all(|v| v.field.starts_with(&prefix)), "{violations:?}");
            if violations.is_empty() {
                let money = t.amount.as_ref().expect("an accepted transfer has an amount");
                prop_assert_eq!(table.lookup(&money.currency_code).map(|c| c.code), Ok(parsed.currency));
                assert_amount_round_trips(&table, parsed.currency, parsed.amount_minor);
                if !money.value.is_empty() {
                    prop_assert_eq!(table.get(parsed.currency).unwrap().parse_amount(&money.value), Ok(parsed.amount_minor));
                }
                prop_assert!((1..=4).contains(&t.kind));
                for id in [parsed.id, parsed.debit_account_id, parsed.credit_account_id, parsed.pending_id] {
                    assert_id_round_trips(id);
                }
                prop_assert_eq!(parsed.timeout_ms, t.timeout_ms);
                prop_assert_eq!(parsed.metadata.len(), t.metadata.len());
            }
        }

        #[test]
        fn new_account_never_panics_and_accepts_only_valid_limits(a in account_in(), index in 0usize..10_000) {
            let table = currencies();
            let mut violations = Vec::new();
            let parsed = new_account(&a, index, &table, &mut violations);
            let prefix = format!("accounts[{index}].");
            prop_assert!(violations.iter().all(|v| v.field.starts_with(&prefix)), "{violations:?}");
            if violations.is_empty() {
                prop_assert_eq!(table.lookup(&a.currency_code).map(|c| c.code), Ok(parsed.currency));
                assert_amount_round_trips(&table, parsed.currency, parsed.overdraft_limit_minor);
                if !a.overdraft_limit.is_empty() {
                    prop_assert_eq!(
                        table.get(parsed.currency).unwrap().parse_amount(&a.overdraft_limit),
                        Ok(parsed.overdraft_limit_minor)
                    );
                }
                assert_id_round_trips(parsed.id);
                prop_assert_eq!(&parsed.participant, &a.participant);
            }
        }

        #[test]
        fn parse_id_never_panics_and_round_trips(text in id_text(), id in any::<u128>()) {
            let mut violations = Vec::new();
            let parsed = parse_id(&text, "f", &mut violations);
            // Some exactly when the text is a UUID; a violation exactly when it is not.
            prop_assert_eq!(parsed.is_some() || text.is_empty(), violations.is_empty());
            if let Some(parsed) = parsed {
                assert_id_round_trips(parsed);
            }
            assert_id_round_trips(id);
            let mut violations = Vec::new();
            prop_assert_eq!(parse_id(&format!("{id:032x}"), "f", &mut violations), Some(id));
            prop_assert_eq!(parse_id(&format_id(id).to_uppercase(), "f", &mut violations), Some(id));
            prop_assert!(violations.is_empty());
        }

        #[test]
        fn timestamp_ns_never_panics_and_round_trips(
            ts in prop::option::of((any::<i64>(), prop_oneof![any::<i32>(), 0i32..1_000_000_000])),
            ns in any::<u64>(),
        ) {
            let ts = ts.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos });
            let mut violations = Vec::new();
            let parsed = timestamp_ns(&ts, "t", &mut violations);
            prop_assert_eq!(parsed.is_some() || ts.is_none(), violations.is_empty());
            if let Some(parsed) = parsed.filter(|ns| *ns != 0) {
                prop_assert_eq!(timestamp(parsed), ts);
            }
            let mut violations = Vec::new();
            let back = timestamp_ns(&timestamp(ns), "t", &mut violations);
            prop_assert_eq!(back.unwrap_or(0), ns);
            prop_assert!(violations.is_empty());
        }

        #[test]
        fn page_size_never_panics(requested in prop_oneof![any::<i32>(), -2i32..1_003]) {
            let mut violations = Vec::new();
            let size = page_size(requested, "page_size", &mut violations);
            prop_assert_eq!((1..=1000).contains(&size), violations.is_empty());
            prop_assert_eq!(size == 0, !violations.is_empty());
        }

        #[test]
        fn page_tokens_never_panic_and_round_trip(
            text in prop_oneof![any_text(), "p[+-]?[0-9]{0,25}"],
            position in any::<u64>(),
        ) {
            let mut violations = Vec::new();
            let parsed = position_page_token(&text, &mut violations);
            prop_assert_eq!(parsed.is_some() || text.is_empty(), violations.is_empty());
            let _ = account_page_token(&text, &mut violations);
            let mut violations = Vec::new();
            prop_assert_eq!(position_page_token(&position_token(position), &mut violations), Some(position));
            prop_assert!(violations.is_empty());
        }
    }
}
