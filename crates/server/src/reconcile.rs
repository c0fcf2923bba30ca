//! `ReconcileStatements`: the banks' camt.053 / camt.054 / pacs.002 in, confirmations out.
//!
//! The edge of reconciliation (the matching itself is pure, `puente_settlement::reconcile`):
//!
//! 1. Bounds first: at most [`DOCUMENTS_MAX`] documents of at most [`reconcile::DOCUMENT_BYTES_MAX`]
//!    bytes, no DTD, well-formed, a known ISO 20022 namespace.
//! 2. Every document is validated against its official XSD with `xmllint` (libxml2) in a child
//!    process: the schemas are vendored in the repository (`tests/data/iso20022/`) and
//!    compiled into the binary (`include_str!`), so the server validates against exactly the
//!    schemas it was tested with; they are written once into a private temporary directory
//!    for xmllint. libxml2 is the reference XSD implementation; running it as a short-lived
//!    child (`--nonet`, no DTDs reach it, a timeout, at most [`XSD_VALIDATIONS_CONCURRENT_MAX`]
//!    at once) keeps a C parser of untrusted input out of the process that holds the ledger. A
//!    document that fails is refused with the schema errors (INVALID_ARGUMENT,
//!    DOCUMENT_INVALID, one violation per document), and nothing changes.
//! 3. The windows awaiting confirmation (SETTLING, REJECTED) and any window the documents name
//!    are loaded with their settlement payments, the documents are matched, and the decision is
//!    applied through the journaled engine commands: `RejectPayments` (→ REJECTED) and
//!    `Confirm` per participant, each idempotent, so a retry after a failure mid-way completes
//!    it and the same documents again change nothing.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use puente_ledger::settlement::{
    Confirm, ListWindows, RejectPayments, WINDOW_PAGE_MAX, WindowState, WindowView, hub_account_id,
};
use puente_proto::v1 as pb;
use puente_settlement::reconcile::{
    self, DOCUMENT_NAME_LEN_MAX, DOCUMENTS_MAX, DocumentKind, ENTRIES_MAX, ExceptionKind, ExpectedWindow,
    HubAccounts, PaymentStatus, RECONCILIATION_BYTES_MAX, Reconciliation, WINDOWS_MAX,
};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

use crate::convert::{money, scale, window_out};
use crate::error::{ApiError, Violation};
use crate::settlement_desk::SettlementDesk;

/// The XSD validator, found on `PATH` (Debian: package libxml2-utils).
pub const XMLLINT_PROGRAM: &str = "xmllint";
/// Longest one validation may take before the child is killed.
pub const XSD_VALIDATION_TIMEOUT_MS: u64 = 20_000;
/// Most validations running at once (each is a child process).
pub const XSD_VALIDATIONS_CONCURRENT_MAX: usize = 2;
/// Longest schema error text kept per document, in bytes.
pub const XSD_ERROR_BYTES_MAX: usize = 2_048;

/// The schemas, compiled in: exactly the files the tests validate against.
const SCHEMAS: [(DocumentKind, &str); 3] = [
    (DocumentKind::Camt053, include_str!("../../../tests/data/iso20022/camt.053.001.08.xsd")),
    (DocumentKind::Camt054, include_str!("../../../tests/data/iso20022/camt.054.001.08.xsd")),
    (DocumentKind::Pacs002, include_str!("../../../tests/data/iso20022/pacs.002.001.11.xsd")),
];

/// The directory the schemas were written to (once per process; removed at exit).
fn schema_dir() -> Result<PathBuf, ApiError> {
    static DIR: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("puente-xsd-").tempdir().map_err(|e| e.to_string())?;
        for (kind, text) in SCHEMAS {
            std::fs::write(dir.path().join(format!("{}.xsd", kind.name())), text)
                .map_err(|e| e.to_string())?;
        }
        Ok(dir)
    });
    match dir {
        Ok(dir) => Ok(dir.path().to_owned()),
        Err(e) => Err(ApiError::ValidatorUnavailable(format!("cannot write the schemas: {e}"))),
    }
}

fn validations() -> &'static Semaphore {
    static LIMIT: OnceLock<Semaphore> = OnceLock::new();
    LIMIT.get_or_init(|| Semaphore::new(XSD_VALIDATIONS_CONCURRENT_MAX))
}

/// Validates `bytes` against the XSD of `kind`: `Ok(Err(errors))` when the document is invalid
/// (the errors name it `name`, not a temporary path), `Err` when xmllint cannot be run.
pub async fn validate(kind: DocumentKind, name: &str, bytes: &[u8]) -> Result<Result<(), String>, ApiError> {
    let schema = schema_dir()?.join(format!("{}.xsd", kind.name()));
    let _permit = validations().acquire().await.map_err(|e| ApiError::ValidatorUnavailable(e.to_string()))?;
    let unavailable = |e: std::io::Error| {
        ApiError::ValidatorUnavailable(format!("{XMLLINT_PROGRAM} (package libxml2-utils): {e}"))
    };
    let mut child = tokio::process::Command::new(XMLLINT_PROGRAM)
        .args(["--noout", "--nonet", "--schema"])
        .arg(&schema)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(unavailable)?;
    let mut stdin = child.stdin.take().ok_or_else(|| ApiError::ValidatorUnavailable("no stdin".into()))?;
    let input = bytes.to_vec();
    let writer = tokio::spawn(async move {
        // xmllint may stop reading early on a broken document: a closed pipe is not an error.
        let _ = stdin.write_all(&input).await;
    });
    let timeout = Duration::from_millis(XSD_VALIDATION_TIMEOUT_MS);
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.map_err(unavailable)?,
        Err(_) => return Ok(Err(format!("validation took longer than {XSD_VALIDATION_TIMEOUT_MS} ms"))),
    };
    let _ = writer.await;
    if output.status.success() {
        return Ok(Ok(()));
    }
    // Exit codes 3 and 4 are "invalid" and "schema rejects it"; 1 is "not well-formed". Any
    // other code (e.g. 5, the schema itself unreadable) is a problem of this server.
    match output.status.code() {
        Some(1 | 3 | 4) => {}
        code => {
            return Err(ApiError::ValidatorUnavailable(format!(
                "{XMLLINT_PROGRAM} exited with {code:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    let mut errors = String::new();
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        // "-:12: element Amt: Schemas validity error : ..." and "- fails to validate".
        let line = match line.strip_prefix("-:") {
            Some(rest) => format!("line {rest}"),
            None if line.trim() == "- fails to validate" => continue,
            None => line.to_owned(),
        };
        if !errors.is_empty() {
            errors.push('\n');
        }
        errors.push_str(line.trim());
        if errors.len() > XSD_ERROR_BYTES_MAX {
            let mut end = XSD_ERROR_BYTES_MAX;
            while !errors.is_char_boundary(end) {
                end -= 1;
            }
            errors.truncate(end);
            errors.push_str(" …");
            break;
        }
    }
    if errors.is_empty() {
        errors = format!("fails {}", kind.name());
    }
    Ok(Err(format!("{name} fails {}.xsd: {errors}", kind.name())))
}

fn document_name(name: &str, index: usize) -> String {
    if name.is_empty() { format!("document {}", index + 1) } else { name.to_owned() }
}

/// Checks, validates and parses the request's documents: all of them, or every problem.
async fn documents(
    request: &pb::ReconcileStatementsRequest,
) -> Result<Vec<reconcile::ParsedDocument>, ApiError> {
    if request.documents.is_empty() {
        return Err(ApiError::invalid("documents", "at least one document is required"));
    }
    if request.documents.len() > DOCUMENTS_MAX {
        return Err(ApiError::invalid(
            "documents",
            format!("{} documents, at most {DOCUMENTS_MAX} in one reconciliation", request.documents.len()),
        ));
    }
    let total: usize = request.documents.iter().map(|d| d.content.len()).sum();
    if total > RECONCILIATION_BYTES_MAX {
        return Err(ApiError::invalid(
            "documents",
            format!("{total} bytes of documents, at most {RECONCILIATION_BYTES_MAX} in one reconciliation"),
        ));
    }
    let mut violations = Vec::new();
    let mut kinds = Vec::with_capacity(request.documents.len());
    for (i, d) in request.documents.iter().enumerate() {
        if d.name.len() > DOCUMENT_NAME_LEN_MAX {
            violations.push(Violation::new(format!("documents[{i}].name"), "at most 255 bytes"));
            continue;
        }
        let name = document_name(&d.name, i);
        match DocumentKind::detect(&name, &d.content) {
            Ok(kind) => kinds.push(Some(kind)),
            Err(e) => {
                violations.push(Violation::new(format!("documents[{i}].content"), e.to_string()));
                kinds.push(None);
            }
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::DocumentInvalid(violations));
    }
    for (i, (d, kind)) in request.documents.iter().zip(&kinds).enumerate() {
        let Some(kind) = kind else { continue };
        if let Err(errors) = validate(*kind, &document_name(&d.name, i), &d.content).await? {
            violations.push(Violation::new(format!("documents[{i}].content"), errors));
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::DocumentInvalid(violations));
    }
    let mut left = ENTRIES_MAX;
    let mut parsed = Vec::with_capacity(kinds.len());
    for (i, (d, kind)) in request.documents.iter().zip(kinds).enumerate() {
        let Some(kind) = kind else { continue };
        match reconcile::parse(&document_name(&d.name, i), &d.content, kind, &mut left) {
            Ok(doc) => parsed.push(doc),
            Err(e) => violations.push(Violation::new(format!("documents[{i}].content"), e.to_string())),
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::DocumentInvalid(violations));
    }
    Ok(parsed)
}

/// Windows in `state`, every page (at most [`WINDOWS_MAX`]).
async fn windows_in(settlement: &SettlementDesk, state: WindowState) -> Result<Vec<WindowView>, ApiError> {
    let mut out = Vec::new();
    let mut after_id = 0;
    loop {
        let call = ListWindows { currency: None, state: Some(state), after_id, limit: WINDOW_PAGE_MAX };
        let page = settlement.call(call).await?;
        let full = page.len() == WINDOW_PAGE_MAX;
        after_id = page.last().map(|w| w.id).unwrap_or(after_id);
        out.extend(page);
        if !full || out.len() >= WINDOWS_MAX {
            out.truncate(WINDOWS_MAX);
            return Ok(out);
        }
    }
}

/// The hub's accounts: the configured bank accounts plus, per currency, the hub's ledger
/// account id as 32 hex digits (what Puente's own camt documents name it).
fn hub_accounts(settlement: &SettlementDesk) -> HubAccounts {
    let mut accounts = settlement.config().hub_accounts.clone();
    for currency in settlement.ledger().currencies().iter().map(|c| c.code) {
        accounts.entry(currency).or_default().push(format!("{:032x}", hub_account_id(currency)));
    }
    accounts
}

/// The windows to reconcile: those awaiting confirmation, and those the documents name (at most
/// [`WINDOWS_MAX`]).
async fn windows_to_reconcile(
    settlement: &SettlementDesk,
    documents: &[reconcile::ParsedDocument],
) -> Result<Vec<WindowView>, ApiError> {
    let mut views = windows_in(settlement, WindowState::Settling).await?;
    views.extend(windows_in(settlement, WindowState::Rejected).await?);
    for id in reconcile::referenced_windows(documents) {
        if views.len() >= WINDOWS_MAX {
            break;
        }
        if views.iter().any(|w| w.id == id) {
            continue;
        }
        match settlement.get_window(id, false).await {
            Ok(w) => views.push(w),
            Err(ApiError::Settlement(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(views)
}

/// The RPC.
pub async fn reconcile_statements(
    settlement: &SettlementDesk,
    request: pb::ReconcileStatementsRequest,
) -> Result<pb::ReconcileStatementsResponse, ApiError> {
    let documents = documents(&request).await?;
    let views = windows_to_reconcile(settlement, &documents).await?;
    let currencies = settlement.ledger().currencies();
    let mut expected = Vec::with_capacity(views.len());
    for w in &views {
        if matches!(w.state, WindowState::Open | WindowState::Closing | WindowState::Failed) {
            continue;
        }
        let Ok(report) = settlement.report(w.id, None).await else { continue };
        expected.push(ExpectedWindow {
            window_id: w.id,
            currency: w.currency,
            state: w.state,
            scale: scale(currencies, w.currency),
            payments: report.payments,
            confirmed: w.positions.iter().map(|p| (p.participant.clone(), p.confirmed)).collect(),
        });
    }
    let mut outcome = reconcile::reconcile(&expected, &hub_accounts(settlement), &documents);
    outcome.dry_run = request.dry_run;
    let mut after = Vec::with_capacity(outcome.windows.len());
    for w in &mut outcome.windows {
        if !request.dry_run {
            if let Some(reason) = &w.rejection {
                let reject = RejectPayments { window_id: w.window_id, reason: reason.clone() };
                settlement.window(reject).await?;
            }
            for participant in &w.confirm {
                let confirm = Confirm { window_id: w.window_id, participant: participant.clone() };
                if settlement.window(confirm).await?.1 {
                    w.confirmed_now.push(participant.clone());
                }
            }
        }
        let view = settlement.get_window(w.window_id, false).await?;
        w.state_after = Some(view.state);
        after.push(view);
    }
    crate::metrics::count_reconciliation(&outcome);
    tracing::info!(
        documents = outcome.documents.len(),
        windows = outcome.windows.len(),
        confirmed = outcome.windows.iter().map(|w| w.confirmed_now.len()).sum::<usize>(),
        exceptions = outcome.exceptions.len(),
        dry_run = request.dry_run,
        "reconciliation"
    );
    let document = match pb::ReportFormat::try_from(request.format).unwrap_or(pb::ReportFormat::Unspecified) {
        pb::ReportFormat::Unspecified => String::new(),
        pb::ReportFormat::Json => {
            outcome.to_json().map_err(|e| ApiError::invalid("format", e.to_string()))?
        }
        pb::ReportFormat::Csv => outcome.exceptions_csv(),
        pb::ReportFormat::Table => outcome.to_table(),
    };
    Ok(response(&outcome, &after, currencies, document))
}

fn response(
    outcome: &Reconciliation,
    after: &[WindowView],
    currencies: &puente_money::CurrencyTable,
    document: String,
) -> pb::ReconcileStatementsResponse {
    pb::ReconcileStatementsResponse {
        windows: outcome
            .windows
            .iter()
            .zip(after)
            .map(|(w, view)| pb::ReconciledWindow {
                window: Some(window_out(view, currencies, true)),
                payments: w
                    .payments
                    .iter()
                    .map(|p| pb::ReconciledPayment {
                        index: p.index,
                        end_to_end_id: p.end_to_end_id.clone(),
                        uetr: p.uetr.clone(),
                        payer: p.payer.clone(),
                        payee: p.payee.clone(),
                        amount: Some(money(currencies, w.currency, p.amount_minor)),
                        r#match: match_out(p.status) as i32,
                    })
                    .collect(),
                matched_participants: w.confirm.clone(),
                confirmed_participants: w.confirmed_now.clone(),
                rejection: w.rejection.clone().unwrap_or_default(),
            })
            .collect(),
        exceptions: outcome
            .exceptions
            .iter()
            .map(|e| pb::ReconciliationException {
                kind: kind_out(e.kind) as i32,
                window_id: e.window_id,
                payment_index: e.payment_index,
                end_to_end_id: e.end_to_end_id.clone(),
                uetr: e.uetr.clone(),
                payer: e.payer.clone(),
                payee: e.payee.clone(),
                expected: e.expected.clone(),
                reported: e.reported.clone(),
                document: e.document.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
        document,
    }
}

fn match_out(status: PaymentStatus) -> pb::PaymentMatch {
    match status {
        PaymentStatus::Matched => pb::PaymentMatch::Matched,
        PaymentStatus::Missing => pb::PaymentMatch::Missing,
        PaymentStatus::Pending => pb::PaymentMatch::Pending,
        PaymentStatus::Rejected => pb::PaymentMatch::Rejected,
        PaymentStatus::AmountMismatch => pb::PaymentMatch::AmountMismatch,
        PaymentStatus::CurrencyMismatch => pb::PaymentMatch::CurrencyMismatch,
        PaymentStatus::Duplicate => pb::PaymentMatch::Duplicate,
        PaymentStatus::AlreadyConfirmed => pb::PaymentMatch::AlreadyConfirmed,
    }
}

fn kind_out(kind: ExceptionKind) -> pb::ReconciliationExceptionKind {
    match kind {
        ExceptionKind::Missing => pb::ReconciliationExceptionKind::Missing,
        ExceptionKind::AmountMismatch => pb::ReconciliationExceptionKind::AmountMismatch,
        ExceptionKind::CurrencyMismatch => pb::ReconciliationExceptionKind::CurrencyMismatch,
        ExceptionKind::Duplicate => pb::ReconciliationExceptionKind::Duplicate,
        ExceptionKind::UnknownEntry => pb::ReconciliationExceptionKind::UnknownEntry,
        ExceptionKind::Rejected => pb::ReconciliationExceptionKind::Rejected,
        ExceptionKind::Pending => pb::ReconciliationExceptionKind::Pending,
        ExceptionKind::NotHubAccount => pb::ReconciliationExceptionKind::NotHubAccount,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_embedded_schemas_validate_and_refuse() {
        let ok = r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.002.001.11">
  <FIToFIPmtStsRpt><GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-01-01T00:00:00Z</CreDtTm></GrpHdr></FIToFIPmtStsRpt>
</Document>"#;
        assert_eq!(validate(DocumentKind::Pacs002, "ok.xml", ok.as_bytes()).await.unwrap(), Ok(()));
        let bad = ok.replace("<MsgId>M1</MsgId>", "");
        let errors = validate(DocumentKind::Pacs002, "bad.xml", bad.as_bytes()).await.unwrap().unwrap_err();
        assert!(errors.starts_with("bad.xml fails pacs.002.001.11.xsd: line "), "{errors}");
        assert!(errors.contains("CreDtTm") && errors.contains("MsgId"), "{errors}");
        assert!(!errors.contains("/tmp"), "no temporary path leaks: {errors}");
    }
}
