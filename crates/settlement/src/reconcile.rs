//! Reconciliation: what the settlement banks report back, matched against the settlement
//! payments Puente expects, and the participants whose payments all matched.
//!
//! Pure: the caller validates each document against its XSD first (at the edge, see
//! `crates/server/src/reconcile.rs`), then [`parse`] extracts what matters, and [`reconcile`]
//! decides. Nothing here changes state: the decision lists the participants to confirm (through
//! the ledger's journaled confirmation) and the windows whose payments were rejected.
//!
//! Documents (ISO 20022):
//! - `camt.053.001.08` statements and `camt.054.001.08` notifications of the hub's settlement
//!   account in a currency (which accounts are the hub's is configuration: [`HubAccounts`]).
//!   Each entry (`Ntry`, and each `NtryDtls/TxDtls` in it) names a payment by
//!   `Refs/EndToEndId` and/or `Refs/UETR`, with an amount (`TxDtls/Amt`, else the entry's
//!   `Amt` when it has one transaction) and a status (`Sts/Cd`: BOOK counts, PDNG is pending;
//!   `RvslInd` true is a reversal). Statements of other accounts are reported, not matched.
//! - `pacs.002.001.11` status reports: `TxInfAndSts` by `OrgnlEndToEndId` / `OrgnlUETR` with
//!   `TxSts` (ACSC and ACCC: settled; RJCT: rejected, with `StsRsnInf`; anything else:
//!   pending) and optionally `OrgnlTxRef/IntrBkSttlmAmt`; a group status (`GrpSts`) for our
//!   pacs.009 message `PUENTE-W<window>-PACS009` applies to its payments that have no status of
//!   their own in the same report.
//!
//! Matching, per expected payment: every piece of evidence that names it must carry its
//! currency and exact amount (else a currency or amount mismatch), and at least one must state
//! them (a bare ACSC is not enough); two booked entries in the
//! same direction in one statement are a duplicate; of settled evidence (a booking, ACSC) and
//! negative evidence (RJCT, a reversal), the latest wins (on a tie, the negative), so a payment
//! rejected and later resent and settled matches once both reports are fed in. A participant is
//! confirmed only when every payment it is party to matched: nothing on a partial match.
//!
//! Size: parsing three ISO 20022 message types (camt.053, camt.054, pacs.002) and the matching
//! rules; pure code with its tests in `tests/reconcile.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use puente_ledger::settlement::WindowState;
use puente_money::CurrencyCode;
use serde::{Deserialize, Serialize};

use crate::SettlementError;
use crate::report::SettlementPayment;
use crate::xml::{CAMT053_NAMESPACE, CAMT054_NAMESPACE, PACS002_NAMESPACE};

/// Largest document accepted, in bytes (checked before anything parses it).
pub const DOCUMENT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most documents in one reconciliation.
pub const DOCUMENTS_MAX: usize = 64;
/// Most bytes of documents in one reconciliation (under the server's 64 MiB message bound).
pub const RECONCILIATION_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Most entries and status lines across the documents of one reconciliation.
pub const ENTRIES_MAX: usize = 100_000;
/// Most XML nodes in one document (elements, text, attributes' owners): bounds parsing memory.
pub const XML_NODES_MAX: u32 = 2_000_000;
/// Longest document name (a file name), in bytes.
pub const DOCUMENT_NAME_LEN_MAX: usize = 255;
/// Most windows one reconciliation looks at.
pub const WINDOWS_MAX: usize = 1_000;

/// The kinds of document reconciliation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DocumentKind {
    #[serde(rename = "camt.053.001.08")]
    Camt053,
    #[serde(rename = "camt.054.001.08")]
    Camt054,
    #[serde(rename = "pacs.002.001.11")]
    Pacs002,
}

impl DocumentKind {
    pub const ALL: [DocumentKind; 3] = [DocumentKind::Camt053, DocumentKind::Camt054, DocumentKind::Pacs002];

    /// The message identifier, e.g. `camt.053.001.08` (also the XSD's file stem).
    pub fn name(self) -> &'static str {
        match self {
            DocumentKind::Camt053 => "camt.053.001.08",
            DocumentKind::Camt054 => "camt.054.001.08",
            DocumentKind::Pacs002 => "pacs.002.001.11",
        }
    }

    pub fn namespace(self) -> &'static str {
        match self {
            DocumentKind::Camt053 => CAMT053_NAMESPACE,
            DocumentKind::Camt054 => CAMT054_NAMESPACE,
            DocumentKind::Pacs002 => PACS002_NAMESPACE,
        }
    }

    /// The kind of `bytes`: checks the size bound, refuses a DTD, parses (well-formedness only)
    /// and reads the namespace of the root `Document`.
    pub fn detect(name: &str, bytes: &[u8]) -> Result<DocumentKind, SettlementError> {
        let doc = |reason: String| SettlementError::Document { document: name.to_owned(), reason };
        let text = precheck(bytes).map_err(doc)?;
        let parsed = parse_xml(text).map_err(doc)?;
        let root = parsed.root_element();
        let namespace = root.tag_name().namespace().unwrap_or("");
        if root.tag_name().name() != "Document" {
            return Err(doc(format!(
                "the root element is {}, not an ISO 20022 Document",
                root.tag_name().name()
            )));
        }
        DocumentKind::ALL.into_iter().find(|k| k.namespace() == namespace).ok_or_else(|| {
            doc(format!("namespace {namespace:?} is not camt.053.001.08, camt.054.001.08 or pacs.002.001.11"))
        })
    }
}

fn precheck(bytes: &[u8]) -> Result<&str, String> {
    if bytes.is_empty() {
        return Err("empty document".into());
    }
    if bytes.len() > DOCUMENT_BYTES_MAX {
        return Err(format!("{} bytes, more than the {DOCUMENT_BYTES_MAX} accepted", bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    // ISO 20022 messages never carry a DTD; refusing one closes external entities and entity
    // expansion for every parser that reads the document (ours and the XSD validator).
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err("a document type declaration (DTD) is not accepted".into());
    }
    Ok(text)
}

fn parse_xml(text: &str) -> Result<roxmltree::Document<'_>, String> {
    let options =
        roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: XML_NODES_MAX, ..Default::default() };
    roxmltree::Document::parse_with_options(text, options).map_err(|e| format!("not well-formed XML: {e}"))
}

/// An amount as a document states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub currency: String,
    /// The decimal text as written (e.g. `275.00`).
    pub value: String,
}

impl Amount {
    fn text(&self) -> String {
        format!("{} {}", self.value, self.currency)
    }
}

/// One transaction reference of an entry, or one status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub end_to_end_id: String,
    pub uetr: String,
    pub amount: Option<Amount>,
}

/// One `Ntry` of a statement or notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based position in its statement.
    pub number: usize,
    pub amount: Amount,
    pub credit: bool,
    pub reversal: bool,
    /// `Sts/Cd` (or `Sts/Prtry`): BOOK, PDNG, INFO, FUTR.
    pub status: String,
    /// Booking time (a date alone counts as its last instant), 0 when absent.
    pub booked_ns: u64,
    /// One per `TxDtls` (one with empty references when the entry has none).
    pub references: Vec<Reference>,
}

/// One `Stmt` (camt.053) or `Ntfctn` (camt.054).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountReport {
    pub id: String,
    /// `Acct/Id/Othr/Id` or `Acct/Id/IBAN`.
    pub account: String,
    /// `Acct/Ccy`, else the first entry's currency (empty when neither).
    pub currency: String,
    pub entries: Vec<Entry>,
}

/// One `TxInfAndSts` of a pacs.002.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusLine {
    pub number: usize,
    pub reference: Reference,
    /// `TxSts` (empty: none).
    pub status: String,
    /// `StsRsnInf/Rsn/Cd` (or `Prtry`) and `AddtlInf`, joined.
    pub reason: String,
    pub at_ns: u64,
    /// `OrgnlGrpInf/OrgnlMsgId` (else the report's original group's).
    pub original_message_id: String,
}

/// An `OrgnlGrpInfAndSts` with a group status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub original_message_id: String,
    pub status: String,
    pub reason: String,
}

/// What reconciliation reads from one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedDocument {
    pub name: String,
    pub kind: DocumentKind,
    pub message_id: String,
    pub created_ns: u64,
    pub accounts: Vec<AccountReport>,
    pub statuses: Vec<StatusLine>,
    pub groups: Vec<GroupStatus>,
}

impl ParsedDocument {
    /// Entries plus status lines.
    pub fn items(&self) -> usize {
        self.accounts.iter().map(|a| a.entries.len()).sum::<usize>() + self.statuses.len()
    }
}

type Node<'a, 'input> = roxmltree::Node<'a, 'input>;

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i: 'a>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn path<'a, 'i>(node: Node<'a, 'i>, names: &[&str]) -> Option<Node<'a, 'i>> {
    names.iter().try_fold(node, |n, name| child(n, name))
}

fn text(node: Option<Node<'_, '_>>) -> String {
    node.and_then(|n| n.text()).map(|t| t.trim().to_owned()).unwrap_or_default()
}

fn amount_of(node: Option<Node<'_, '_>>) -> Option<Amount> {
    let node = node?;
    Some(Amount { currency: node.attribute("Ccy").unwrap_or("").to_owned(), value: text(Some(node)) })
}

/// ISODateTime (with or without an offset; without one it is read as UTC) as nanoseconds.
pub fn datetime_ns(text: &str) -> Option<u64> {
    let ns = match text.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.as_nanosecond(),
        Err(_) => {
            let dt = text.parse::<jiff::civil::DateTime>().ok()?;
            dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_nanosecond()
        }
    };
    u64::try_from(ns).ok()
}

/// ISODate as the last nanosecond of that day (UTC).
fn date_end_ns(text: &str) -> Option<u64> {
    let date = text.parse::<jiff::civil::Date>().ok()?;
    let next = date.tomorrow().ok()?.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    u64::try_from(next.timestamp().as_nanosecond()).ok()?.checked_sub(1)
}

fn date_or_datetime(node: Option<Node<'_, '_>>) -> u64 {
    let Some(node) = node else { return 0 };
    if let Some(dt) = child(node, "DtTm") {
        return datetime_ns(&text(Some(dt))).unwrap_or(0);
    }
    date_end_ns(&text(child(node, "Dt"))).unwrap_or(0)
}

/// Parses a document of `kind` (which the caller has validated against its XSD). Bounds: the
/// document size, XML nodes, and `entries_left` (decremented; refused when exhausted).
pub fn parse(
    name: &str,
    bytes: &[u8],
    kind: DocumentKind,
    entries_left: &mut usize,
) -> Result<ParsedDocument, SettlementError> {
    let doc = |reason: String| SettlementError::Document { document: name.to_owned(), reason };
    let source = precheck(bytes).map_err(doc)?;
    let parsed = parse_xml(source).map_err(doc)?;
    let root = parsed.root_element();
    if root.tag_name().namespace() != Some(kind.namespace()) {
        return Err(doc(format!("not a {} document", kind.name())));
    }
    let mut budget = Budget { name, left: entries_left };
    let body_name = match kind {
        DocumentKind::Camt053 => "BkToCstmrStmt",
        DocumentKind::Camt054 => "BkToCstmrDbtCdtNtfctn",
        DocumentKind::Pacs002 => "FIToFIPmtStsRpt",
    };
    let body = child(root, body_name).ok_or_else(|| doc(format!("no {body_name}")))?;
    let header = child(body, "GrpHdr");
    let message_id = text(header.and_then(|h| child(h, "MsgId")));
    let created_ns = datetime_ns(&text(header.and_then(|h| child(h, "CreDtTm")))).unwrap_or(0);
    let mut out = ParsedDocument {
        name: name.to_owned(),
        kind,
        message_id,
        created_ns,
        accounts: Vec::new(),
        statuses: Vec::new(),
        groups: Vec::new(),
    };
    match kind {
        DocumentKind::Camt053 | DocumentKind::Camt054 => {
            let report_name = if kind == DocumentKind::Camt053 { "Stmt" } else { "Ntfctn" };
            for report in children(body, report_name) {
                out.accounts.push(account_report(report, &mut budget)?);
            }
        }
        DocumentKind::Pacs002 => status_report(body, &mut out, &mut budget)?,
    }
    Ok(out)
}

/// The entries and status lines one reconciliation may still read (at most [`ENTRIES_MAX`]).
struct Budget<'a> {
    name: &'a str,
    left: &'a mut usize,
}

impl Budget<'_> {
    fn take(&mut self, n: usize) -> Result<(), SettlementError> {
        *self.left = self.left.checked_sub(n).ok_or_else(|| SettlementError::Document {
            document: self.name.to_owned(),
            reason: format!("more than {ENTRIES_MAX} entries and status lines in one reconciliation"),
        })?;
        Ok(())
    }
}

/// One statement (camt.053 `Stmt`) or notification (camt.054 `Ntfctn`): its account and
/// entries.
fn account_report(report: Node<'_, '_>, budget: &mut Budget<'_>) -> Result<AccountReport, SettlementError> {
    let acct = child(report, "Acct");
    let id = acct.and_then(|a| child(a, "Id"));
    let account = match id.and_then(|i| child(i, "IBAN")) {
        Some(iban) => text(Some(iban)),
        None => text(id.and_then(|i| path(i, &["Othr", "Id"]))),
    };
    let mut entries = Vec::new();
    for (i, ntry) in children(report, "Ntry").enumerate() {
        budget.take(1)?;
        entries.push(entry(i + 1, ntry, budget)?);
    }
    let mut currency = text(acct.and_then(|a| child(a, "Ccy")));
    if currency.is_empty() {
        currency = entries.first().map(|e| e.amount.currency.clone()).unwrap_or_default();
    }
    Ok(AccountReport { id: text(child(report, "Id")), account, currency, entries })
}

/// One entry (`Ntry`) and the transactions it carries (at least one reference, taking the
/// entry's amount when it is the only one and names none).
fn entry(number: usize, ntry: Node<'_, '_>, budget: &mut Budget<'_>) -> Result<Entry, SettlementError> {
    let amount =
        amount_of(child(ntry, "Amt")).unwrap_or(Amount { currency: String::new(), value: String::new() });
    let sts = child(ntry, "Sts");
    let status = match sts.and_then(|s| child(s, "Cd")) {
        Some(cd) => text(Some(cd)),
        None => text(sts.and_then(|s| child(s, "Prtry"))),
    };
    let mut references: Vec<Reference> = children(ntry, "NtryDtls")
        .flat_map(|d| children(d, "TxDtls"))
        .map(|tx| {
            let refs = child(tx, "Refs");
            Reference {
                end_to_end_id: text(refs.and_then(|r| child(r, "EndToEndId"))),
                uetr: text(refs.and_then(|r| child(r, "UETR"))).to_ascii_lowercase(),
                amount: amount_of(child(tx, "Amt")),
            }
        })
        .collect();
    budget.take(references.len().saturating_sub(1))?;
    if references.is_empty() {
        references.push(Reference { end_to_end_id: String::new(), uetr: String::new(), amount: None });
    }
    if references.len() == 1 && references[0].amount.is_none() {
        references[0].amount = Some(amount.clone());
    }
    Ok(Entry {
        number,
        amount,
        credit: text(child(ntry, "CdtDbtInd")) == "CRDT",
        reversal: text(child(ntry, "RvslInd")) == "true",
        status,
        booked_ns: date_or_datetime(child(ntry, "BookgDt")),
        references,
    })
}

/// A payment status report (pacs.002): its group statuses and transaction status lines.
fn status_report(
    body: Node<'_, '_>,
    out: &mut ParsedDocument,
    budget: &mut Budget<'_>,
) -> Result<(), SettlementError> {
    let mut group_message = String::new();
    for group in children(body, "OrgnlGrpInfAndSts") {
        let original = text(child(group, "OrgnlMsgId"));
        if group_message.is_empty() {
            group_message = original.clone();
        }
        let status = text(child(group, "GrpSts"));
        if !status.is_empty() {
            out.groups.push(GroupStatus {
                original_message_id: original,
                status,
                reason: reason(children(group, "StsRsnInf")),
            });
        }
    }
    for (i, tx) in children(body, "TxInfAndSts").enumerate() {
        budget.take(1)?;
        let original = text(path(tx, &["OrgnlGrpInf", "OrgnlMsgId"]));
        let at_ns = datetime_ns(&text(child(tx, "AccptncDtTm"))).unwrap_or(out.created_ns);
        out.statuses.push(StatusLine {
            number: i + 1,
            reference: Reference {
                end_to_end_id: text(child(tx, "OrgnlEndToEndId")),
                uetr: text(child(tx, "OrgnlUETR")).to_ascii_lowercase(),
                amount: amount_of(path(tx, &["OrgnlTxRef", "IntrBkSttlmAmt"])),
            },
            status: text(child(tx, "TxSts")),
            reason: reason(children(tx, "StsRsnInf")),
            at_ns,
            original_message_id: if original.is_empty() { group_message.clone() } else { original },
        });
    }
    Ok(())
}

fn reason<'a, 'i: 'a>(infos: impl Iterator<Item = Node<'a, 'i>>) -> String {
    let mut parts = Vec::new();
    for info in infos {
        let rsn = child(info, "Rsn");
        let code = match rsn.and_then(|r| child(r, "Cd")) {
            Some(cd) => text(Some(cd)),
            None => text(rsn.and_then(|r| child(r, "Prtry"))),
        };
        if !code.is_empty() {
            parts.push(code);
        }
        parts.extend(children(info, "AddtlInf").map(|n| text(Some(n))).filter(|t| !t.is_empty()));
    }
    parts.join(" ")
}

/// Decimal text (digits, an optional point and digits; no sign, no exponent) as minor units of
/// a currency with `scale` decimals; None when it is not exactly representable.
pub fn parse_minor(text: &str, scale: u32) -> Option<u128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if text.contains('.') && fraction.is_empty() {
        return None;
    }
    let scale = scale as usize;
    let (kept, extra) = fraction.split_at(fraction.len().min(scale));
    if extra.bytes().any(|b| b != b'0') || whole.len() > 30 {
        return None;
    }
    let mut minor: u128 = whole.parse().ok()?;
    minor = minor.checked_mul(10u128.checked_pow(scale as u32)?)?;
    let mut fraction_minor: u128 = if kept.is_empty() { 0 } else { kept.parse().ok()? };
    fraction_minor = fraction_minor.checked_mul(10u128.checked_pow((scale - kept.len()) as u32)?)?;
    minor.checked_add(fraction_minor)
}

// ----- matching -------------------------------------------------------------------------------

/// The hub's accounts at its settlement banks, per currency: the identifiers a statement's
/// `Acct/Id` may carry (`Othr/Id` or IBAN), compared exactly.
pub type HubAccounts = BTreeMap<CurrencyCode, Vec<String>>;

/// A settlement window as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedWindow {
    pub window_id: u64,
    pub currency: CurrencyCode,
    pub state: WindowState,
    pub scale: u32,
    pub payments: Vec<SettlementPayment>,
    /// Every participant with a position in the window, and whether it has confirmed.
    pub confirmed: BTreeMap<String, bool>,
}

impl ExpectedWindow {
    fn awaiting(&self) -> bool {
        matches!(self.state, WindowState::Settling | WindowState::Rejected)
    }
}

/// What became of one expected payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Settled evidence with its exact amount and currency, nothing against it.
    Matched,
    /// No evidence at all.
    Missing,
    /// Only pending evidence (PDNG, ACSP, ...).
    Pending,
    /// Rejected (pacs.002 RJCT) or reversed, and not settled since.
    Rejected,
    AmountMismatch,
    CurrencyMismatch,
    /// Booked twice in the same direction in one statement.
    Duplicate,
    /// Both its parties had already confirmed: nothing to decide.
    AlreadyConfirmed,
}

impl PaymentStatus {
    pub fn code(self) -> &'static str {
        match self {
            PaymentStatus::Matched => "MATCHED",
            PaymentStatus::Missing => "MISSING",
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Rejected => "REJECTED",
            PaymentStatus::AmountMismatch => "AMOUNT_MISMATCH",
            PaymentStatus::CurrencyMismatch => "CURRENCY_MISMATCH",
            PaymentStatus::Duplicate => "DUPLICATE",
            PaymentStatus::AlreadyConfirmed => "ALREADY_CONFIRMED",
        }
    }
}

/// The kinds of exception an operator must look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExceptionKind {
    /// An expected payment no document mentions.
    Missing,
    AmountMismatch,
    CurrencyMismatch,
    /// A payment booked more than once in the same direction in one statement.
    Duplicate,
    /// An entry or status that names no expected payment.
    UnknownEntry,
    /// A payment rejected by its bank (pacs.002 RJCT) or reversed.
    Rejected,
    /// A payment reported as not yet final (e.g. PDNG).
    Pending,
    /// A statement of an account that is not one of the hub's (not matched).
    NotHubAccount,
}

impl ExceptionKind {
    pub fn code(self) -> &'static str {
        match self {
            ExceptionKind::Missing => "MISSING",
            ExceptionKind::AmountMismatch => "AMOUNT_MISMATCH",
            ExceptionKind::CurrencyMismatch => "CURRENCY_MISMATCH",
            ExceptionKind::Duplicate => "DUPLICATE",
            ExceptionKind::UnknownEntry => "UNKNOWN_ENTRY",
            ExceptionKind::Rejected => "REJECTED",
            ExceptionKind::Pending => "PENDING",
            ExceptionKind::NotHubAccount => "NOT_HUB_ACCOUNT",
        }
    }
}

/// One exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    pub kind: ExceptionKind,
    /// 0 when no window is concerned.
    pub window_id: u64,
    /// 0 when no payment is concerned.
    pub payment_index: u32,
    pub end_to_end_id: String,
    pub uetr: String,
    pub payer: String,
    pub payee: String,
    /// Expected amount and currency (decimal text and code; empty when none is expected).
    pub expected: String,
    /// What the document said (amount and currency, or a status).
    pub reported: String,
    /// Where: `file: statement ID entry N` or `file: status N`.
    pub document: String,
    pub detail: String,
}

/// One payment's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOutcome {
    pub index: u32,
    pub end_to_end_id: String,
    pub uetr: String,
    pub payer: String,
    pub payee: String,
    pub amount_minor: u128,
    pub status: PaymentStatus,
    /// How many entries and status lines named it.
    pub evidence: usize,
}

/// One window's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowOutcome {
    pub window_id: u64,
    pub currency: CurrencyCode,
    /// The state before reconciliation.
    pub state: WindowState,
    pub payments: Vec<PaymentOutcome>,
    /// Participants every one of whose payments matched (to confirm).
    pub confirm: Vec<String>,
    /// Participants not confirmed after this reconciliation, with why.
    pub unconfirmed: Vec<(String, String)>,
    /// Why the window goes REJECTED (None: it does not).
    pub rejection: Option<String>,
    /// Filled in by whoever applies the decision: participants whose confirmation was new, and
    /// the state after.
    pub confirmed_now: Vec<String>,
    pub state_after: Option<WindowState>,
}

/// A document's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentSummary {
    pub name: String,
    pub kind: DocumentKind,
    pub message_id: String,
    pub items: usize,
}

/// The outcome of a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub documents: Vec<DocumentSummary>,
    /// Every window the documents name a payment of, whatever its state (e.g. SETTLED).
    #[serde(default)]
    pub named_windows: Vec<u64>,
    /// The windows awaiting confirmation that the documents concern, with their outcomes.
    pub windows: Vec<WindowOutcome>,
    pub exceptions: Vec<Exception>,
    /// True when nothing was applied (a dry run).
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Booked { credit: bool },
    Settled,
    Rejected,
    Pending,
}

#[derive(Debug, Clone)]
struct Evidence {
    kind: Kind,
    amount: Option<Amount>,
    at_ns: u64,
    /// (document, account report) for booked entries: where duplicates are counted.
    report: Option<(usize, usize)>,
    source: String,
    detail: String,
}

/// The window id of an EndToEndId of ours (`PUENTE-W<window>-<index>`).
pub fn window_of(end_to_end_id: &str) -> Option<u64> {
    let rest = end_to_end_id.strip_prefix("PUENTE-W")?;
    let (window, index) = rest.split_once('-')?;
    index.parse::<u32>().ok()?;
    window.parse().ok()
}

/// Windows named by the documents' EndToEndIds and pacs.002 message ids (so a caller can load
/// them: a reference to a settled window is then recognized as such).
pub fn referenced_windows(documents: &[ParsedDocument]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for d in documents {
        for a in &d.accounts {
            for e in &a.entries {
                out.extend(e.references.iter().filter_map(|r| window_of(&r.end_to_end_id)));
            }
        }
        for s in &d.statuses {
            out.extend(window_of(&s.reference.end_to_end_id));
        }
        for g in &d.groups {
            out.extend(pacs009_window(&g.original_message_id));
        }
    }
    out
}

fn pacs009_window(message_id: &str) -> Option<u64> {
    message_id.strip_prefix("PUENTE-W")?.strip_suffix("-PACS009")?.parse().ok()
}

enum Resolved {
    Payment(usize, usize),
    Unknown(String),
}

struct Matcher<'a> {
    windows: &'a [ExpectedWindow],
    by_e2e: BTreeMap<&'a str, (usize, usize)>,
    by_uetr: BTreeMap<String, (usize, usize)>,
}

impl<'a> Matcher<'a> {
    fn new(windows: &'a [ExpectedWindow]) -> Matcher<'a> {
        let mut by_e2e = BTreeMap::new();
        let mut by_uetr = BTreeMap::new();
        for (w, window) in windows.iter().enumerate() {
            for (p, payment) in window.payments.iter().enumerate() {
                by_e2e.insert(payment.end_to_end_id.as_str(), (w, p));
                by_uetr.insert(payment.uetr.to_ascii_lowercase(), (w, p));
            }
        }
        Matcher { windows, by_e2e, by_uetr }
    }

    fn resolve(&self, r: &Reference) -> Resolved {
        // "NOTPROVIDED" is ISO 20022's placeholder for a missing EndToEndId: the UETR decides.
        let r = &Reference {
            end_to_end_id: if r.end_to_end_id == "NOTPROVIDED" {
                String::new()
            } else {
                r.end_to_end_id.clone()
            },
            uetr: r.uetr.clone(),
            amount: None,
        };
        let by_e2e =
            (!r.end_to_end_id.is_empty()).then(|| self.by_e2e.get(r.end_to_end_id.as_str())).flatten();
        let by_uetr = (!r.uetr.is_empty()).then(|| self.by_uetr.get(&r.uetr)).flatten();
        let found = match (by_e2e, by_uetr) {
            (Some(a), Some(b)) if a != b => {
                return Resolved::Unknown("its EndToEndId and UETR name different payments".into());
            }
            (Some(a), _) | (None, Some(a)) => *a,
            (None, None) => {
                let detail = match window_of(&r.end_to_end_id) {
                    Some(id) => match self.windows.iter().find(|w| w.window_id == id) {
                        Some(w) => format!("no such payment in window {id} ({})", w.state.code()),
                        None => format!("window {id} is not awaiting confirmation"),
                    },
                    None if r.end_to_end_id.is_empty() && r.uetr.is_empty() => "no EndToEndId or UETR".into(),
                    None => "names no settlement payment".into(),
                };
                return Resolved::Unknown(detail);
            }
        };
        // Both named, one known and the other not: a wrong reference, not a match.
        if (!r.end_to_end_id.is_empty() && by_e2e.is_none()) || (!r.uetr.is_empty() && by_uetr.is_none()) {
            return Resolved::Unknown("its EndToEndId and UETR name different payments".into());
        }
        Resolved::Payment(found.0, found.1)
    }
}

/// Matches `documents` against `windows` (those awaiting confirmation, SETTLING or REJECTED,
/// and any others the documents name, so that references to them are recognized). A window
/// awaiting confirmation is in scope when a document names one of its payments or a document
/// is a statement of the hub's account in its currency; only payments of windows in scope can
/// be missing.
pub fn reconcile(
    windows: &[ExpectedWindow],
    hub_accounts: &HubAccounts,
    documents: &[ParsedDocument],
) -> Reconciliation {
    let matcher = Matcher::new(windows);
    let mut gathered = Gathered::default();
    for (d, doc) in documents.iter().enumerate() {
        gathered.statements(&matcher, hub_accounts, d, doc);
        gathered.statuses(&matcher, windows, doc);
    }
    let Gathered { evidence, mut exceptions, covered, referenced } = gathered;
    let mut outcomes = Vec::new();
    for (w, window) in windows.iter().enumerate() {
        let in_scope =
            window.awaiting() && (referenced.contains(&w) || covered.contains(window.currency.as_str()));
        if in_scope {
            outcomes.push(window_outcome(window, w, &evidence, &mut exceptions));
        } else {
            out_of_scope(window, w, &evidence, &mut exceptions);
        }
    }
    exceptions.sort_by(|a, b| {
        (a.window_id, a.payment_index, a.kind, &a.document).cmp(&(
            b.window_id,
            b.payment_index,
            b.kind,
            &b.document,
        ))
    });
    Reconciliation {
        documents: documents
            .iter()
            .map(|d| DocumentSummary {
                name: d.name.clone(),
                kind: d.kind,
                message_id: d.message_id.clone(),
                items: d.items(),
            })
            .collect(),
        named_windows: referenced.iter().filter_map(|w| windows.get(*w)).map(|w| w.window_id).collect(),
        windows: outcomes,
        exceptions,
        dry_run: false,
    }
}

/// What the documents say, per expected payment (window index, payment index), and what
/// they say that matches none.
#[derive(Default)]
struct Gathered {
    evidence: BTreeMap<(usize, usize), Vec<Evidence>>,
    exceptions: Vec<Exception>,
    /// Currencies whose hub account a statement covered.
    covered: BTreeSet<String>,
    /// Windows a document referred to.
    referenced: BTreeSet<usize>,
}

impl Gathered {
    /// The entries of a document's statements (camt.053) and notifications (camt.054).
    fn statements(&mut self, matcher: &Matcher, hub_accounts: &HubAccounts, d: usize, doc: &ParsedDocument) {
        for (a, account) in doc.accounts.iter().enumerate() {
            let hub = CurrencyCode::parse(&account.currency)
                .ok()
                .and_then(|c| hub_accounts.get(&c))
                .is_some_and(|ids| ids.iter().any(|id| id == &account.account));
            if !hub {
                self.exceptions.push(Exception {
                    kind: ExceptionKind::NotHubAccount,
                    window_id: 0,
                    payment_index: 0,
                    end_to_end_id: String::new(),
                    uetr: String::new(),
                    payer: String::new(),
                    payee: String::new(),
                    expected: String::new(),
                    reported: format!("{} {}", account.account, account.currency),
                    document: format!("{}: statement {}", doc.name, account.id),
                    detail: format!("{} entries not matched: not a hub account", account.entries.len()),
                });
                continue;
            }
            self.covered.insert(account.currency.clone());
            for entry in &account.entries {
                for (t, reference) in entry.references.iter().enumerate() {
                    let source = if entry.references.len() > 1 {
                        format!(
                            "{}: statement {} entry {} transaction {}",
                            doc.name,
                            account.id,
                            entry.number,
                            t + 1
                        )
                    } else {
                        format!("{}: statement {} entry {}", doc.name, account.id, entry.number)
                    };
                    let reported = reference.amount.as_ref().map(Amount::text).unwrap_or_default();
                    match matcher.resolve(reference) {
                        Resolved::Unknown(detail) => {
                            self.exceptions.push(unknown_entry(reference, reported, source, detail))
                        }
                        Resolved::Payment(w, p) => {
                            self.referenced.insert(w);
                            let kind = if entry.reversal {
                                Kind::Rejected
                            } else if entry.status == "BOOK" {
                                Kind::Booked { credit: entry.credit }
                            } else {
                                Kind::Pending
                            };
                            let detail = if entry.reversal {
                                "reversed (RvslInd)".to_owned()
                            } else {
                                format!("entry status {}", entry.status)
                            };
                            self.evidence.entry((w, p)).or_default().push(Evidence {
                                kind,
                                amount: reference.amount.clone(),
                                at_ns: entry.booked_ns,
                                report: Some((d, a)),
                                source,
                                detail,
                            });
                        }
                    }
                }
            }
        }
    }

    /// A document's payment status lines (pacs.002), and its group statuses for the payments
    /// no line names.
    fn statuses(&mut self, matcher: &Matcher, windows: &[ExpectedWindow], doc: &ParsedDocument) {
        let mut with_status: BTreeSet<(usize, usize)> = BTreeSet::new();
        for line in &doc.statuses {
            let source = format!("{}: status {}", doc.name, line.number);
            let reported = match &line.reference.amount {
                Some(a) => format!("{} {}", line.status, a.text()),
                None => line.status.clone(),
            };
            match matcher.resolve(&line.reference) {
                Resolved::Unknown(detail) => {
                    self.exceptions.push(unknown_entry(&line.reference, reported, source, detail))
                }
                Resolved::Payment(w, p) => {
                    self.referenced.insert(w);
                    with_status.insert((w, p));
                    self.evidence.entry((w, p)).or_default().push(Evidence {
                        kind: status_kind(&line.status),
                        amount: line.reference.amount.clone(),
                        at_ns: line.at_ns,
                        report: None,
                        source,
                        detail: status_detail(&line.status, &line.reason),
                    });
                }
            }
        }
        for group in &doc.groups {
            let Some(window_id) = pacs009_window(&group.original_message_id) else { continue };
            let Some(w) = windows.iter().position(|w| w.window_id == window_id) else { continue };
            self.referenced.insert(w);
            for p in 0..windows[w].payments.len() {
                if with_status.contains(&(w, p)) {
                    continue;
                }
                self.evidence.entry((w, p)).or_default().push(Evidence {
                    kind: status_kind(&group.status),
                    amount: None,
                    at_ns: doc.created_ns,
                    report: None,
                    source: format!("{}: group status", doc.name),
                    detail: status_detail(&group.status, &group.reason),
                });
            }
        }
    }
}

/// An entry or status line that names no expected payment.
fn unknown_entry(reference: &Reference, reported: String, document: String, detail: String) -> Exception {
    Exception {
        kind: ExceptionKind::UnknownEntry,
        window_id: window_of(&reference.end_to_end_id).unwrap_or(0),
        payment_index: 0,
        end_to_end_id: reference.end_to_end_id.clone(),
        uetr: reference.uetr.clone(),
        payer: String::new(),
        payee: String::new(),
        expected: String::new(),
        reported,
        document,
        detail,
    }
}

/// Evidence about a window that is not awaiting confirmation changes nothing. For a SETTLED
/// window, what is still news after weighing its evidence like any other (a rejection not
/// superseded since, a mismatch, a duplicate) is reported; for any other state (not settled
/// yet) every entry is unexpected.
fn out_of_scope(
    window: &ExpectedWindow,
    w: usize,
    evidence: &BTreeMap<(usize, usize), Vec<Evidence>>,
    exceptions: &mut Vec<Exception>,
) {
    for (p, payment) in window.payments.iter().enumerate() {
        let Some(found) = evidence.get(&(w, p)) else { continue };
        let suffix = format!(" (window {} is {})", window.window_id, window.state.code());
        if window.state == WindowState::Settled {
            let (_, raised) = decide(window, payment, found);
            for mut e in raised
                .into_iter()
                .filter(|e| !matches!(e.kind, ExceptionKind::Missing | ExceptionKind::Pending))
            {
                e.detail.push_str(&suffix);
                exceptions.push(e);
            }
            continue;
        }
        for e in found {
            let detail = format!("{}{suffix}", e.detail);
            exceptions.push(payment_exception(ExceptionKind::UnknownEntry, window, payment, e, detail));
        }
    }
}

/// A window awaiting confirmation: each payment weighed on its evidence, then who can be
/// confirmed (every payment of theirs matched) and the rejection to record, if any.
fn window_outcome(
    window: &ExpectedWindow,
    w: usize,
    evidence: &BTreeMap<(usize, usize), Vec<Evidence>>,
    exceptions: &mut Vec<Exception>,
) -> WindowOutcome {
    let mut payments = Vec::with_capacity(window.payments.len());
    let mut rejections = Vec::new();
    for (p, payment) in window.payments.iter().enumerate() {
        let found = evidence.get(&(w, p)).map(Vec::as_slice).unwrap_or(&[]);
        let done = window.confirmed.get(&payment.payer).copied().unwrap_or(false)
            && window.confirmed.get(&payment.payee).copied().unwrap_or(false);
        let (status, mut raised) = decide(window, payment, found);
        if done {
            // Both parties confirmed earlier: only a rejection or a mismatch is news.
            raised.retain(|e| e.kind != ExceptionKind::Missing && e.kind != ExceptionKind::Pending);
            for e in &mut raised {
                e.detail.push_str(" (both parties had already confirmed)");
            }
        } else if status == PaymentStatus::Rejected {
            rejections.push(format!(
                "{} ({} -> {}, {} {}) {}",
                payment.end_to_end_id,
                payment.payer,
                payment.payee,
                puente_money::format_minor(payment.amount_minor, window.scale),
                window.currency,
                raised.first().map(|e| e.detail.as_str()).unwrap_or("rejected")
            ));
        }
        exceptions.extend(raised);
        payments.push(PaymentOutcome {
            index: payment.index,
            end_to_end_id: payment.end_to_end_id.clone(),
            uetr: payment.uetr.clone(),
            payer: payment.payer.clone(),
            payee: payment.payee.clone(),
            amount_minor: payment.amount_minor,
            status: if done { PaymentStatus::AlreadyConfirmed } else { status },
            evidence: found.len(),
        });
    }
    let (confirm, unconfirmed) = who_to_confirm(window, &payments);
    let rejection = (!rejections.is_empty()).then(|| format!("rejected: {}", rejections.join("; ")));
    WindowOutcome {
        window_id: window.window_id,
        currency: window.currency,
        state: window.state,
        payments,
        confirm,
        unconfirmed,
        rejection,
        confirmed_now: Vec::new(),
        state_after: None,
    }
}

/// The unconfirmed participants whose every settlement payment matched (to confirm), and the
/// others with what blocks them. Nothing is confirmed on a partial match.
fn who_to_confirm(
    window: &ExpectedWindow,
    payments: &[PaymentOutcome],
) -> (Vec<String>, Vec<(String, String)>) {
    let mut confirm = Vec::new();
    let mut unconfirmed = Vec::new();
    for (participant, confirmed) in &window.confirmed {
        if *confirmed {
            continue;
        }
        let theirs: Vec<&PaymentOutcome> =
            payments.iter().filter(|p| &p.payer == participant || &p.payee == participant).collect();
        let blocking: Vec<String> = theirs
            .iter()
            .filter(|p| !matches!(p.status, PaymentStatus::Matched | PaymentStatus::AlreadyConfirmed))
            .map(|p| format!("{} {}", p.end_to_end_id, p.status.code()))
            .collect();
        if theirs.is_empty() {
            unconfirmed.push((participant.clone(), "party to no settlement payment".to_owned()));
        } else if blocking.is_empty() {
            confirm.push(participant.clone());
        } else {
            unconfirmed.push((participant.clone(), blocking.join(", ")));
        }
    }
    (confirm, unconfirmed)
}

fn status_kind(status: &str) -> Kind {
    match status {
        "ACSC" | "ACCC" => Kind::Settled,
        "RJCT" => Kind::Rejected,
        _ => Kind::Pending,
    }
}

fn status_detail(status: &str, reason: &str) -> String {
    match (status, reason.is_empty()) {
        ("RJCT", true) => "rejected by pacs.002 (no reason given)".into(),
        ("RJCT", false) => format!("rejected by pacs.002: {reason}"),
        (_, true) => format!("status {status}"),
        (_, false) => format!("status {status}: {reason}"),
    }
}

fn payment_exception(
    kind: ExceptionKind,
    window: &ExpectedWindow,
    payment: &SettlementPayment,
    e: &Evidence,
    detail: String,
) -> Exception {
    Exception {
        kind,
        window_id: window.window_id,
        payment_index: payment.index,
        end_to_end_id: payment.end_to_end_id.clone(),
        uetr: payment.uetr.clone(),
        payer: payment.payer.clone(),
        payee: payment.payee.clone(),
        expected: format!(
            "{} {}",
            puente_money::format_minor(payment.amount_minor, window.scale),
            window.currency
        ),
        reported: e.amount.as_ref().map(Amount::text).unwrap_or_default(),
        document: e.source.clone(),
        detail,
    }
}

/// Amount and currency: every piece of evidence that states one must agree. Raises a mismatch
/// for each that does not; the first sets `status`.
fn raise_amount_mismatches(
    window: &ExpectedWindow,
    payment: &SettlementPayment,
    found: &[Evidence],
    raised: &mut Vec<Exception>,
    status: &mut Option<PaymentStatus>,
) {
    for e in found {
        let Some(amount) = &e.amount else { continue };
        if amount.currency != window.currency.as_str() {
            let detail = format!("reported in {}, expected {}", amount.currency, window.currency);
            raised.push(payment_exception(ExceptionKind::CurrencyMismatch, window, payment, e, detail));
            status.get_or_insert(PaymentStatus::CurrencyMismatch);
        } else if parse_minor(&amount.value, window.scale) != Some(payment.amount_minor) {
            let detail = format!(
                "reported {}, expected {}",
                amount.value,
                puente_money::format_minor(payment.amount_minor, window.scale)
            );
            raised.push(payment_exception(ExceptionKind::AmountMismatch, window, payment, e, detail));
            status.get_or_insert(PaymentStatus::AmountMismatch);
        }
    }
}

/// Duplicates: booked twice in the same direction in one statement. Raises one for each; the
/// first sets `status` unless it is set.
fn raise_duplicates(
    window: &ExpectedWindow,
    payment: &SettlementPayment,
    found: &[Evidence],
    raised: &mut Vec<Exception>,
    status: &mut Option<PaymentStatus>,
) {
    let mut seen: BTreeMap<((usize, usize), bool), usize> = BTreeMap::new();
    for e in found {
        if let (Kind::Booked { credit }, Some(report)) = (e.kind, e.report) {
            let count = seen.entry((report, credit)).or_default();
            *count += 1;
            if *count == 2 {
                let detail =
                    format!("booked more than once as a {}", if credit { "credit" } else { "debit" });
                raised.push(payment_exception(ExceptionKind::Duplicate, window, payment, e, detail));
                status.get_or_insert(PaymentStatus::Duplicate);
            }
        }
    }
}

/// One payment's status from its evidence, and the exceptions it raises.
fn decide(
    window: &ExpectedWindow,
    payment: &SettlementPayment,
    found: &[Evidence],
) -> (PaymentStatus, Vec<Exception>) {
    let mut raised = Vec::new();
    if found.is_empty() {
        let e = Evidence {
            kind: Kind::Pending,
            amount: None,
            at_ns: 0,
            report: None,
            source: String::new(),
            detail: String::new(),
        };
        let detail = "expected, but no statement entry or status names it".to_owned();
        raised.push(payment_exception(ExceptionKind::Missing, window, payment, &e, detail));
        return (PaymentStatus::Missing, raised);
    }
    let mut status = None;
    raise_amount_mismatches(window, payment, found, &mut raised, &mut status);
    raise_duplicates(window, payment, found, &mut raised, &mut status);
    if let Some(status) = status {
        return (status, raised);
    }
    let latest = |negative: bool| {
        found
            .iter()
            .filter(|e| {
                if negative {
                    e.kind == Kind::Rejected
                } else {
                    matches!(e.kind, Kind::Booked { .. } | Kind::Settled)
                }
            })
            .max_by_key(|e| e.at_ns)
    };
    match (latest(false), latest(true)) {
        (_, Some(rejected)) if latest(false).is_none_or(|s| s.at_ns <= rejected.at_ns) => {
            let detail = rejected.detail.clone();
            raised.push(payment_exception(ExceptionKind::Rejected, window, payment, rejected, detail));
            (PaymentStatus::Rejected, raised)
        }
        // Settled, and its amount and currency confirmed by at least one document (every
        // stated amount was checked above): a status report alone that states no amount is
        // not enough.
        (Some(_), _) if found.iter().any(|e| e.amount.is_some()) => (PaymentStatus::Matched, raised),
        (Some(settled), _) => {
            let detail = format!(
                "{}, but no document states its amount: feed the statement that books it",
                settled.detail
            );
            raised.push(payment_exception(ExceptionKind::Pending, window, payment, settled, detail));
            (PaymentStatus::Pending, raised)
        }
        _ => {
            for e in found.iter().filter(|e| e.kind == Kind::Pending) {
                raised.push(payment_exception(ExceptionKind::Pending, window, payment, e, e.detail.clone()));
            }
            (PaymentStatus::Pending, raised)
        }
    }
}

// ----- documents ------------------------------------------------------------------------------

fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(['=', '+', '-', '@']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

impl Reconciliation {
    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, SettlementError> {
        serde_json::to_string_pretty(self).map_err(|e| SettlementError::Invalid(e.to_string()))
    }

    /// CSV, one row per exception:
    /// `kind,window_id,payment_index,end_to_end_id,uetr,payer,payee,expected,reported,document,detail`.
    pub fn exceptions_csv(&self) -> String {
        let mut out = String::from(
            "kind,window_id,payment_index,end_to_end_id,uetr,payer,payee,expected,reported,document,detail\n",
        );
        for e in &self.exceptions {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                e.kind.code(),
                e.window_id,
                e.payment_index,
                cell(&e.end_to_end_id),
                cell(&e.uetr),
                cell(&e.payer),
                cell(&e.payee),
                cell(&e.expected),
                cell(&e.reported),
                cell(&e.document),
                cell(&e.detail)
            );
        }
        out
    }

    /// A text table for operators: per window, its payments and who was confirmed; then the
    /// exceptions.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let items: usize = self.documents.iter().map(|d| d.items).sum();
        let _ = writeln!(
            out,
            "Reconciliation of {} documents ({items} entries and statuses){}",
            self.documents.len(),
            if self.dry_run { " — dry run, nothing applied" } else { "" }
        );
        for w in &self.windows {
            let after = w.state_after.map(|s| format!(" -> {}", s.code())).unwrap_or_default();
            let _ = writeln!(out, "\nWindow {} ({}) {}{after}", w.window_id, w.currency, w.state.code());
            if let Some(reason) = &w.rejection {
                let _ = writeln!(out, "  {reason}");
            }
            let _ = writeln!(
                out,
                "  {:>5}  {:<22} {:<20} {:<20} {:<18}",
                "#", "END-TO-END ID", "PAYER", "PAYEE", "STATUS"
            );
            for p in &w.payments {
                let _ = writeln!(
                    out,
                    "  {:>5}  {:<22} {:<20} {:<20} {:<18}",
                    p.index,
                    p.end_to_end_id,
                    p.payer,
                    p.payee,
                    p.status.code()
                );
            }
            let now: BTreeSet<&String> = w.confirmed_now.iter().collect();
            for participant in &w.confirm {
                let how = if self.dry_run {
                    "would confirm"
                } else if now.contains(participant) {
                    "confirmed"
                } else {
                    "already confirmed"
                };
                let _ = writeln!(out, "  {how}: {participant}");
            }
            for (participant, why) in &w.unconfirmed {
                let _ = writeln!(out, "  not confirmed: {participant} ({why})");
            }
        }
        if self.exceptions.is_empty() {
            let _ = writeln!(out, "\nNo exceptions.");
        } else {
            let _ = writeln!(out, "\n{} exceptions:", self.exceptions.len());
            for e in &self.exceptions {
                let mut what = String::new();
                if e.window_id != 0 {
                    let _ = write!(what, "window {} ", e.window_id);
                }
                if !e.end_to_end_id.is_empty() {
                    let _ = write!(what, "{} ", e.end_to_end_id);
                } else if !e.uetr.is_empty() {
                    let _ = write!(what, "UETR {} ", e.uetr);
                }
                let _ = writeln!(out, "  {:<17} {what}— {} [{}]", e.kind.code(), e.detail, e.document);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_amounts_parse_exactly() {
        assert_eq!(parse_minor("275.00", 2), Some(27_500));
        assert_eq!(parse_minor("275", 2), Some(27_500));
        assert_eq!(parse_minor("275.5", 2), Some(27_550));
        assert_eq!(parse_minor("275.500", 2), Some(27_550));
        assert_eq!(parse_minor("275.501", 2), None);
        assert_eq!(parse_minor("0.01", 2), Some(1));
        assert_eq!(parse_minor("7", 0), Some(7));
        for bad in ["", ".5", "5.", "-1", "1e3", "1,5", " 1", "１"] {
            assert_eq!(parse_minor(bad, 2), None, "{bad:?}");
        }
        assert_eq!(parse_minor(&"9".repeat(40), 2), None);
    }

    #[test]
    fn times_and_references() {
        assert_eq!(datetime_ns("2023-11-14T22:13:20.123Z"), Some(1_700_000_000_123_000_000));
        assert_eq!(datetime_ns("2023-11-14T22:13:20.123"), Some(1_700_000_000_123_000_000));
        assert_eq!(datetime_ns("2023-11-14T16:13:20.123-06:00"), Some(1_700_000_000_123_000_000));
        assert_eq!(datetime_ns("yesterday"), None);
        assert_eq!(date_end_ns("1970-01-01"), Some(86_400_000_000_000 - 1));
        assert_eq!(window_of("PUENTE-W12-3"), Some(12));
        assert_eq!(window_of("PUENTE-W12-US00"), None);
        assert_eq!(pacs009_window("PUENTE-W12-PACS009"), Some(12));
    }

    #[test]
    fn documents_with_a_dtd_or_too_large_are_refused() {
        let dtd = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><Document/>"#;
        assert!(DocumentKind::detect("x.xml", dtd).is_err());
        let big = vec![b' '; DOCUMENT_BYTES_MAX + 1];
        assert!(DocumentKind::detect("x.xml", &big).is_err());
        let other = br#"<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.009.001.09"/>"#;
        let error = DocumentKind::detect("x.xml", other).unwrap_err().to_string();
        assert!(error.contains("pacs.009.001.09"), "{error}");
        let ok = br#"<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.002.001.11"/>"#;
        assert_eq!(DocumentKind::detect("x.xml", ok).unwrap(), DocumentKind::Pacs002);
    }
}
