//! How client commands print: tables for people, JSON (`--json`) for scripts, and the
//! conversions both share (money, times, kinds and states).

use std::time::{Duration, UNIX_EPOCH};

use puente_client::pb;
use serde_json::{Value, json};

use super::CliError;

pub(super) struct Output {
    pub(super) json: bool,
}

impl Output {
    /// One page of a list: `{"<key>": [...], "next_page_token": ...}` as JSON, or the table
    /// with a hint for the next page.
    pub(super) fn print_page<T>(
        &self,
        key: &str,
        items: &[T],
        to_json: impl Fn(&T) -> Value,
        table: impl FnOnce(&[T]) -> String,
        next_page_token: &str,
    ) {
        let value =
            json!({ key: items.iter().map(to_json).collect::<Vec<_>>(), "next_page_token": next_page_token });
        self.print(value, || {
            let mut text = table(items);
            if !next_page_token.is_empty() {
                text.push_str(&format!("next page: --page-token {next_page_token}\n"));
            }
            text
        });
    }

    pub(super) fn print(&self, value: Value, table: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        } else {
            print!("{}", table());
        }
    }
}

pub(super) fn time_text(ts: &Option<puente_proto::Timestamp>) -> String {
    match ts {
        Some(ts) if ts.seconds >= 0 => {
            let time = UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos.max(0) as u32);
            humantime::format_rfc3339_micros(time).to_string()
        }
        _ => String::new(),
    }
}

pub(super) fn parse_time(
    text: &Option<String>,
    flag: &str,
) -> Result<Option<puente_proto::Timestamp>, CliError> {
    let Some(text) = text else { return Ok(None) };
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
        CliError::Usage(format!("{flag}: {e} (expected RFC 3339, e.g. 2026-11-25T00:00:00Z)"))
    })?;
    let since =
        time.duration_since(UNIX_EPOCH).map_err(|_| CliError::Usage(format!("{flag}: before 1970")))?;
    Ok(Some(puente_proto::Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }))
}

pub(super) fn account_json(a: &pb::Account) -> Value {
    json!({
        "id": a.id, "participant": a.participant, "currency": a.currency_code,
        "debits_must_not_exceed_credits": a.debits_must_not_exceed_credits,
        "credits_must_not_exceed_debits": a.credits_must_not_exceed_debits,
        "overdraft_limit": a.overdraft_limit, "holder_ref": a.holder_ref, "metadata": a.metadata,
        "debits_pending": a.debits_pending, "debits_posted": a.debits_posted,
        "credits_pending": a.credits_pending, "credits_posted": a.credits_posted,
        "posted_balance": a.posted_balance, "available_balance": a.available_balance,
        "create_time": time_text(&a.create_time), "closed": a.closed, "state": account_state(a),
    })
}

pub(super) fn money_text(m: &Option<pb::Money>) -> String {
    m.as_ref().map(|m| format!("{} {}", m.value, m.currency_code)).unwrap_or_default()
}

pub(super) fn kind_name(kind: i32) -> &'static str {
    match pb::TransferKind::try_from(kind) {
        Ok(pb::TransferKind::SinglePhase) => "single_phase",
        Ok(pb::TransferKind::Pending) => "pending",
        Ok(pb::TransferKind::PostPending) => "post_pending",
        Ok(pb::TransferKind::VoidPending) => "void_pending",
        _ => "unspecified",
    }
}

pub(super) fn state_name(state: i32) -> &'static str {
    match pb::TransferState::try_from(state) {
        Ok(pb::TransferState::Posted) => "posted",
        Ok(pb::TransferState::Pending) => "pending",
        Ok(pb::TransferState::PendingPosted) => "pending_posted",
        Ok(pb::TransferState::PendingVoided) => "pending_voided",
        Ok(pb::TransferState::PendingExpired) => "pending_expired",
        Ok(pb::TransferState::Failed) => "failed",
        _ => "unspecified",
    }
}

pub(super) fn transfer_json(t: &pb::Transfer) -> Value {
    json!({
        "id": t.id, "debit_account_id": t.debit_account_id, "credit_account_id": t.credit_account_id,
        "amount": t.amount.as_ref().map(|m| json!({"currency": m.currency_code, "value": m.value})),
        "effective_amount": t.effective_amount.as_ref().map(|m| json!({"currency": m.currency_code, "value": m.value})),
        "kind": kind_name(t.kind), "linked": t.linked, "pending_id": t.pending_id, "timeout_ms": t.timeout_ms,
        "reference": t.reference, "metadata": t.metadata, "create_time": time_text(&t.create_time),
        "position": t.position, "state": state_name(t.state), "failure_code": t.failure_code,
        "expire_time": time_text(&t.expire_time),
    })
}

/// "open", or "closed" for an account that takes no new transfers.
pub(super) fn account_state(a: &pb::Account) -> &'static str {
    if a.closed { "closed" } else { "open" }
}

pub(super) fn account_rows(accounts: &[pb::Account]) -> String {
    let mut out = format!(
        "{:<36}  {:<16}  {:<3}  {:<6}  {:>16}  {:>16}  {:>14}  {}\n",
        "ID", "PARTICIPANT", "CCY", "STATE", "POSTED", "AVAILABLE", "PENDING DEBITS", "HOLDER"
    );
    for a in accounts {
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<3}  {:<6}  {:>16}  {:>16}  {:>14}  {}\n",
            a.id,
            a.participant,
            a.currency_code,
            account_state(a),
            a.posted_balance,
            a.available_balance,
            a.debits_pending,
            a.holder_ref
        ));
    }
    out
}

pub(super) fn transfer_rows(transfers: &[pb::Transfer]) -> String {
    let mut out = format!(
        "{:<20}  {:<36}  {:<14}  {:<15}  {:>16}  {:<36}  {:<36}\n",
        "POSITION", "ID", "KIND", "STATE", "AMOUNT", "DEBIT", "CREDIT"
    );
    for t in transfers {
        out.push_str(&format!(
            "{:<20}  {:<36}  {:<14}  {:<15}  {:>16}  {:<36}  {:<36}\n",
            t.position,
            t.id,
            kind_name(t.kind),
            state_name(t.state),
            money_text(if t.effective_amount.is_some() { &t.effective_amount } else { &t.amount }),
            t.debit_account_id,
            t.credit_account_id
        ));
    }
    out
}
