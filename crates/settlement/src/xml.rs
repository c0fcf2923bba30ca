//! ISO 20022 documents, written by hand (a small escaping writer; element order follows the
//! schemas in `shared/iso20022/`, against which the tests validate every document):
//!
//! - [`pacs009`]: `pacs.009.001.09` FI-to-FI credit transfers, one per settlement payment. USD
//!   banks are identified by ABA routing number (`ClrSysMmbId` with code `USABA`), MXN banks by
//!   their SPEI institution code (the first three digits of the CLABE, proprietary clearing
//!   system `SPEI`) with the CLABE as the account (`Othr`, scheme `CLABE`); a BIC when known.
//! - [`camt053`]: `camt.053.001.08` statement of a participant's settlement account for one
//!   window: opening and closing booked balances and the settlement entry.

use std::fmt::Write as _;

use puente_ledger::settlement::SettlementRail;
use puente_money::CurrencyCode;

use crate::{SettlementReport, date_text, datetime_text};

pub const PACS009_NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pacs.009.001.09";
pub const CAMT053_NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08";
pub const CAMT054_NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:camt.054.001.08";
pub const PACS002_NAMESPACE: &str = "urn:iso:std:iso:20022:tech:xsd:pacs.002.001.11";

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters (ISO 20022 MaxNText counts characters), never empty.
pub(crate) fn max_text(text: &str, max: usize) -> String {
    let clipped: String = text.chars().take(max).collect();
    if clipped.trim().is_empty() { "-".into() } else { clipped }
}

pub(crate) struct Writer {
    pub(crate) out: String,
    depth: usize,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer { out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"), depth: 0 }
    }
    pub(crate) fn open(&mut self, tag: &str) {
        let _ = writeln!(self.out, "{:indent$}<{tag}>", "", indent = self.depth * 2);
        self.depth += 1;
    }
    pub(crate) fn open_attr(&mut self, tag: &str, attr: &str, value: &str) {
        let _ =
            writeln!(self.out, "{:indent$}<{tag} {attr}=\"{}\">", "", escape(value), indent = self.depth * 2);
        self.depth += 1;
    }
    pub(crate) fn close(&mut self, tag: &str) {
        self.depth -= 1;
        let _ = writeln!(self.out, "{:indent$}</{tag}>", "", indent = self.depth * 2);
    }
    pub(crate) fn leaf(&mut self, tag: &str, text: &str) {
        let _ = writeln!(self.out, "{:indent$}<{tag}>{}</{tag}>", "", escape(text), indent = self.depth * 2);
    }
    pub(crate) fn amount(&mut self, tag: &str, currency: CurrencyCode, text: &str) {
        let _ = writeln!(
            self.out,
            "{:indent$}<{tag} Ccy=\"{currency}\">{text}</{tag}>",
            "",
            indent = self.depth * 2
        );
    }
}

/// A financial institution: BIC when known, clearing-system member id, name.
fn institution(w: &mut Writer, tag: &str, rail: SettlementRail, bank_id: &str, bic: &str, name: &str) {
    w.open(tag);
    w.open("FinInstnId");
    if !bic.is_empty() {
        w.leaf("BICFI", bic);
    }
    w.open("ClrSysMmbId");
    w.open("ClrSysId");
    match rail {
        SettlementRail::Spei => w.leaf("Prtry", "SPEI"),
        SettlementRail::Fedwire | SettlementRail::AchDirectoMexico => w.leaf("Cd", "USABA"),
    }
    w.close("ClrSysId");
    let member = match rail {
        SettlementRail::Spei => bank_id.get(..3).unwrap_or(bank_id),
        _ => bank_id,
    };
    w.leaf("MmbId", &max_text(member, 35));
    w.close("ClrSysMmbId");
    w.leaf("Nm", &max_text(name, 140));
    w.close("FinInstnId");
    w.close(tag);
}

fn clabe_account(w: &mut Writer, tag: &str, clabe: &str) {
    w.open(tag);
    w.open("Id");
    w.open("Othr");
    w.leaf("Id", &max_text(clabe, 34));
    w.open("SchmeNm");
    w.leaf("Prtry", "CLABE");
    w.close("SchmeNm");
    w.close("Othr");
    w.close("Id");
    w.close(tag);
}

/// The window's settlement payments as one pacs.009 message created at `created_ns`; `None`
/// when the window has no payment (a pacs.009 carries at least one transaction).
pub fn pacs009(report: &SettlementReport, scale: u32, created_ns: u64, settlement_ns: u64) -> Option<String> {
    if report.payments.is_empty() {
        return None;
    }
    let currency = report.currency;
    let total: u128 = report.payments.iter().map(|p| p.amount_minor).sum();
    let mut w = Writer::new();
    w.open_attr("Document", "xmlns", PACS009_NAMESPACE);
    w.open("FICdtTrf");
    w.open("GrpHdr");
    w.leaf("MsgId", &format!("PUENTE-W{}-PACS009", report.window_id));
    w.leaf("CreDtTm", &datetime_text(created_ns));
    w.leaf("NbOfTxs", &report.payments.len().to_string());
    w.amount("TtlIntrBkSttlmAmt", currency, &puente_money::format_minor(total, scale));
    w.leaf("IntrBkSttlmDt", &date_text(settlement_ns));
    w.open("SttlmInf");
    w.leaf("SttlmMtd", "CLRG");
    w.close("SttlmInf");
    w.close("GrpHdr");
    for p in &report.payments {
        w.open("CdtTrfTxInf");
        w.open("PmtId");
        w.leaf("InstrId", &p.end_to_end_id);
        w.leaf("EndToEndId", &p.end_to_end_id);
        w.leaf("UETR", &p.uetr);
        w.close("PmtId");
        w.amount("IntrBkSttlmAmt", currency, &puente_money::format_minor(p.amount_minor, scale));
        institution(&mut w, "Dbtr", p.rail, &p.payer_bank_id, &p.payer_bic, &p.payer_name);
        if p.rail == SettlementRail::Spei {
            clabe_account(&mut w, "DbtrAcct", &p.payer_bank_id);
        }
        institution(&mut w, "Cdtr", p.rail, &p.payee_bank_id, &p.payee_bic, &p.payee_name);
        if p.rail == SettlementRail::Spei {
            clabe_account(&mut w, "CdtrAcct", &p.payee_bank_id);
        }
        w.open("RmtInf");
        w.leaf("Ustrd", &format!("Puente net settlement, window {}, payment {}", report.window_id, p.index));
        w.close("RmtInf");
        w.close("CdtTrfTxInf");
    }
    w.close("FICdtTrf");
    w.close("Document");
    Some(w.out)
}

/// One booked entry of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    pub transfer_id: u128,
    pub amount_minor: u128,
    pub credit: bool,
    pub booked_ns: u64,
    pub end_to_end_id: String,
    /// The payment's UETR (empty: none).
    pub uetr: String,
    pub info: String,
}

/// What a participant's camt.053 statement for one window shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInput {
    pub window_id: u64,
    pub participant: String,
    pub participant_name: String,
    pub currency: CurrencyCode,
    pub scale: u32,
    pub account_id: u128,
    pub from_ns: u64,
    pub to_ns: u64,
    pub created_ns: u64,
    /// Posted balance (credits − debits) before and after the entries.
    pub opening_minor: i128,
    pub closing_minor: i128,
    pub entries: Vec<StatementEntry>,
}

fn balance(w: &mut Writer, code: &str, currency: CurrencyCode, scale: u32, minor: i128, at_ns: u64) {
    w.open("Bal");
    w.open("Tp");
    w.open("CdOrPrtry");
    w.leaf("Cd", code);
    w.close("CdOrPrtry");
    w.close("Tp");
    w.amount("Amt", currency, &puente_money::format_minor(minor.unsigned_abs(), scale));
    w.leaf("CdtDbtInd", if minor < 0 { "DBIT" } else { "CRDT" });
    w.open("Dt");
    w.leaf("DtTm", &datetime_text(at_ns));
    w.close("Dt");
    w.close("Bal");
}

/// A participant's settlement-account statement for one window (camt.053.001.08).
pub fn camt053(input: &StatementInput) -> String {
    let id = max_text(&format!("PUENTE-W{}-{}", input.window_id, input.participant), 35);
    let mut w = Writer::new();
    w.open_attr("Document", "xmlns", CAMT053_NAMESPACE);
    w.open("BkToCstmrStmt");
    w.open("GrpHdr");
    w.leaf("MsgId", &id);
    w.leaf("CreDtTm", &datetime_text(input.created_ns));
    w.close("GrpHdr");
    w.open("Stmt");
    w.leaf("Id", &id);
    w.leaf("ElctrncSeqNb", &input.window_id.to_string());
    w.leaf("CreDtTm", &datetime_text(input.created_ns));
    w.open("FrToDt");
    w.leaf("FrDtTm", &datetime_text(input.from_ns));
    w.leaf("ToDtTm", &datetime_text(input.to_ns.max(input.from_ns)));
    w.close("FrToDt");
    w.open("Acct");
    w.open("Id");
    w.open("Othr");
    w.leaf("Id", &format!("{:032x}", input.account_id));
    w.open("SchmeNm");
    w.leaf("Prtry", "PUENTE");
    w.close("SchmeNm");
    w.close("Othr");
    w.close("Id");
    w.leaf("Ccy", input.currency.as_str());
    w.leaf("Nm", &max_text(&input.participant_name, 70));
    w.close("Acct");
    balance(&mut w, "OPBD", input.currency, input.scale, input.opening_minor, input.from_ns);
    balance(&mut w, "CLBD", input.currency, input.scale, input.closing_minor, input.to_ns.max(input.from_ns));
    for e in &input.entries {
        entry(&mut w, e, input.currency, input.scale);
    }
    w.close("Stmt");
    w.close("BkToCstmrStmt");
    w.close("Document");
    w.out
}

/// One booked `Ntry` (camt.053 and camt.054 share `ReportEntry10`).
pub(crate) fn entry(w: &mut Writer, e: &StatementEntry, currency: CurrencyCode, scale: u32) {
    w.open("Ntry");
    w.leaf("NtryRef", &max_text(&e.end_to_end_id, 35));
    w.amount("Amt", currency, &puente_money::format_minor(e.amount_minor, scale));
    w.leaf("CdtDbtInd", if e.credit { "CRDT" } else { "DBIT" });
    w.open("Sts");
    w.leaf("Cd", "BOOK");
    w.close("Sts");
    w.open("BookgDt");
    w.leaf("DtTm", &datetime_text(e.booked_ns));
    w.close("BookgDt");
    w.leaf("AcctSvcrRef", &format!("{:032x}", e.transfer_id));
    w.open("BkTxCd");
    w.open("Prtry");
    w.leaf("Cd", "NETTING-SETTLEMENT");
    w.leaf("Issr", "PUENTE");
    w.close("Prtry");
    w.close("BkTxCd");
    w.open("NtryDtls");
    w.open("TxDtls");
    w.open("Refs");
    w.leaf("EndToEndId", &max_text(&e.end_to_end_id, 35));
    if !e.uetr.is_empty() {
        w.leaf("UETR", &e.uetr);
    }
    w.close("Refs");
    w.close("TxDtls");
    w.close("NtryDtls");
    w.leaf("AddtlNtryInf", &max_text(&e.info, 500));
    w.close("Ntry");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{profiles, window};
    use puente_netting::FeeModel;
    use rust_decimal::Decimal;

    pub(crate) fn sample_statement() -> StatementInput {
        StatementInput {
            window_id: 7,
            participant: "US00".into(),
            participant_name: "A & B".into(),
            currency: CurrencyCode::USD,
            scale: 2,
            account_id: 42,
            from_ns: 1,
            to_ns: 2,
            created_ns: 3,
            opening_minor: 0,
            closing_minor: -25_000,
            entries: vec![StatementEntry {
                transfer_id: 9,
                amount_minor: 25_000,
                credit: false,
                booked_ns: 2,
                end_to_end_id: "PUENTE-W7-US00".into(),
                uetr: String::new(),
                info: "net".into(),
            }],
        }
    }

    #[test]
    fn documents_are_well_formed_and_escaped() {
        let report =
            crate::build_report(&window(), &profiles(), &FeeModel::default(), Decimal::new(18, 0)).unwrap();
        let xml = pacs009(&report, 2, 1_700_000_200_000_000_000, 1_700_000_200_000_000_000).unwrap();
        assert!(xml.contains("<NbOfTxs>2</NbOfTxs>"));
        assert!(xml.contains("<TtlIntrBkSttlmAmt Ccy=\"USD\">275.00</TtlIntrBkSttlmAmt>"));
        assert!(xml.contains("Bank MX00 &amp; Co &lt;test&gt;"));
        assert_eq!(xml.matches("<CdtTrfTxInf>").count(), 2);
        let statement = camt053(&sample_statement());
        assert!(statement.contains("<CdtDbtInd>DBIT</CdtDbtInd>"));
        assert!(statement.contains("<Nm>A &amp; B</Nm>"));
        assert_eq!(escape("a\u{1}b'"), "ab&apos;");
    }
}
