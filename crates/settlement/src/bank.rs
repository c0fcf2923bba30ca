//! What the settlement banks send back, written with the same small XML writer as our own
//! documents: a camt.053 statement and a camt.054 notification of the hub's settlement account,
//! and a pacs.002 status report for our pacs.009. Used to simulate the banks (`puente
//! settlement simulate-bank`, demos) and by the reconciliation tests, which feed these
//! documents, and hand-edited variants of them, back through `reconcile`.
//!
//! The model (ARCHITECTURE.md, "Settlement"): each currency's settlement bank books every
//! settlement payment of a window through the hub's account there, once in from the payer's
//! bank (CRDT) and once out to the payee's bank (DBIT), each entry carrying the payment's
//! EndToEndId and UETR; and it reports each payment's status (ACSC when settled, RJCT with a
//! reason) against our pacs.009's EndToEndId and UETR.

use puente_money::CurrencyCode;

use crate::datetime_text;
use crate::report::SettlementPayment;
use crate::xml::{
    CAMT054_NAMESPACE, PACS002_NAMESPACE, StatementEntry, StatementInput, Writer, camt053, entry, max_text,
};

/// A payment's status as a bank reports it in a pacs.002.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentStatus {
    pub end_to_end_id: String,
    pub uetr: String,
    /// ISO 20022 ExternalPaymentTransactionStatus1Code: ACSC, ACCC, RJCT, PDNG, ...
    pub status: String,
    /// ExternalStatusReason1Code (e.g. AC04) and text, for RJCT.
    pub reason_code: String,
    pub reason_text: String,
    pub currency: CurrencyCode,
    pub amount_minor: u128,
    pub accepted_ns: u64,
}

/// A pacs.002.001.11 status report for the pacs.009 `original_message_id`.
pub fn pacs002(
    message_id: &str,
    created_ns: u64,
    original_message_id: &str,
    statuses: &[PaymentStatus],
    scale: u32,
) -> String {
    let mut w = Writer::new();
    w.open_attr("Document", "xmlns", PACS002_NAMESPACE);
    w.open("FIToFIPmtStsRpt");
    w.open("GrpHdr");
    w.leaf("MsgId", &max_text(message_id, 35));
    w.leaf("CreDtTm", &datetime_text(created_ns));
    w.close("GrpHdr");
    w.open("OrgnlGrpInfAndSts");
    w.leaf("OrgnlMsgId", &max_text(original_message_id, 35));
    w.leaf("OrgnlMsgNmId", "pacs.009.001.09");
    w.close("OrgnlGrpInfAndSts");
    for s in statuses {
        w.open("TxInfAndSts");
        w.leaf("OrgnlInstrId", &max_text(&s.end_to_end_id, 35));
        w.leaf("OrgnlEndToEndId", &max_text(&s.end_to_end_id, 35));
        if !s.uetr.is_empty() {
            w.leaf("OrgnlUETR", &s.uetr);
        }
        w.leaf("TxSts", &max_text(&s.status, 4));
        if !s.reason_code.is_empty() || !s.reason_text.is_empty() {
            w.open("StsRsnInf");
            if !s.reason_code.is_empty() {
                w.open("Rsn");
                w.leaf("Cd", &max_text(&s.reason_code, 4));
                w.close("Rsn");
            }
            if !s.reason_text.is_empty() {
                w.leaf("AddtlInf", &max_text(&s.reason_text, 105));
            }
            w.close("StsRsnInf");
        }
        w.leaf("AccptncDtTm", &datetime_text(s.accepted_ns));
        w.open("OrgnlTxRef");
        w.amount("IntrBkSttlmAmt", s.currency, &puente_money::format_minor(s.amount_minor, scale));
        w.close("OrgnlTxRef");
        w.close("TxInfAndSts");
    }
    w.close("FIToFIPmtStsRpt");
    w.close("Document");
    w.out
}

/// A camt.054.001.08 notification of `account_id` (the hub's account, as its 32 hex digits
/// under the proprietary scheme PUENTE, like our camt.053) with `entries`.
pub fn camt054(
    message_id: &str,
    created_ns: u64,
    account_id: u128,
    currency: CurrencyCode,
    scale: u32,
    entries: &[StatementEntry],
) -> String {
    let id = max_text(message_id, 35);
    let mut w = Writer::new();
    w.open_attr("Document", "xmlns", CAMT054_NAMESPACE);
    w.open("BkToCstmrDbtCdtNtfctn");
    w.open("GrpHdr");
    w.leaf("MsgId", &id);
    w.leaf("CreDtTm", &datetime_text(created_ns));
    w.close("GrpHdr");
    w.open("Ntfctn");
    w.leaf("Id", &id);
    w.leaf("CreDtTm", &datetime_text(created_ns));
    w.open("Acct");
    w.open("Id");
    w.open("Othr");
    w.leaf("Id", &format!("{account_id:032x}"));
    w.open("SchmeNm");
    w.leaf("Prtry", "PUENTE");
    w.close("SchmeNm");
    w.close("Othr");
    w.close("Id");
    w.leaf("Ccy", currency.as_str());
    w.close("Acct");
    for e in entries {
        entry(&mut w, e, currency, scale);
    }
    w.close("Ntfctn");
    w.close("BkToCstmrDbtCdtNtfctn");
    w.close("Document");
    w.out
}

/// The hub account's entries for `payments` (a pass-through: in from the payer's bank, out to
/// the payee's bank), booked at `booked_ns`; payments whose index is in `skip` are left out.
pub fn hub_entries(payments: &[SettlementPayment], booked_ns: u64, skip: &[u32]) -> Vec<StatementEntry> {
    let mut out = Vec::new();
    for p in payments.iter().filter(|p| !skip.contains(&p.index)) {
        for (credit, leg) in [(true, "in"), (false, "out")] {
            out.push(StatementEntry {
                transfer_id: puente_core::ids::derive("puente/bank", &[p.uetr.as_bytes(), leg.as_bytes()]),
                amount_minor: p.amount_minor,
                credit,
                booked_ns,
                end_to_end_id: p.end_to_end_id.clone(),
                uetr: p.uetr.clone(),
                info: format!(
                    "Settlement payment {} {} {}",
                    p.end_to_end_id,
                    if credit { "from" } else { "to" },
                    if credit { &p.payer } else { &p.payee }
                ),
            });
        }
    }
    out
}

/// What the banks send back for a window whose `payments` all settle, except those listed in
/// `rejected` (index, ISO reason code, text), which are rejected and never booked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankDocuments {
    /// camt.053 end-of-day statement of the hub's account.
    pub camt053: String,
    /// camt.054 notification of the same bookings.
    pub camt054: String,
    /// pacs.002 status report (None when there is no payment).
    pub pacs002: Option<String>,
}

/// Simulates the settlement bank of one window (see [`BankDocuments`]).
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    window_id: u64,
    currency: CurrencyCode,
    scale: u32,
    hub_account_id: u128,
    payments: &[SettlementPayment],
    rejected: &[(u32, String, String)],
    from_ns: u64,
    at_ns: u64,
) -> BankDocuments {
    let skip: Vec<u32> = rejected.iter().map(|r| r.0).collect();
    let entries = hub_entries(payments, at_ns, &skip);
    let statement = camt053(&StatementInput {
        window_id,
        participant: format!("HUB-{currency}"),
        participant_name: format!("Puente settlement hub {currency}"),
        currency,
        scale,
        account_id: hub_account_id,
        from_ns,
        to_ns: at_ns,
        created_ns: at_ns,
        opening_minor: 0,
        closing_minor: 0,
        entries: entries.clone(),
    });
    let notification = camt054(
        &format!("PUENTE-W{window_id}-HUB-{currency}-N"),
        at_ns,
        hub_account_id,
        currency,
        scale,
        &entries,
    );
    let statuses: Vec<PaymentStatus> = payments
        .iter()
        .map(|p| {
            let rejection = rejected.iter().find(|r| r.0 == p.index);
            PaymentStatus {
                end_to_end_id: p.end_to_end_id.clone(),
                uetr: p.uetr.clone(),
                status: if rejection.is_some() { "RJCT" } else { "ACSC" }.into(),
                reason_code: rejection.map(|r| r.1.clone()).unwrap_or_default(),
                reason_text: rejection.map(|r| r.2.clone()).unwrap_or_default(),
                currency,
                amount_minor: p.amount_minor,
                accepted_ns: at_ns,
            }
        })
        .collect();
    let status_report = (!statuses.is_empty()).then(|| {
        pacs002(
            &format!("PUENTE-W{window_id}-PACS002"),
            at_ns,
            &format!("PUENTE-W{window_id}-PACS009"),
            &statuses,
            scale,
        )
    });
    BankDocuments { camt053: statement, camt054: notification, pacs002: status_report }
}
