//! Reconciliation of the banks' documents, round trip through our own writers: a window's
//! payments → the documents a settlement bank sends back (`bank::simulate`: camt.053 and
//! camt.054 of the hub's account, pacs.002) → validated with xmllint against the vendored XSDs
//! (`tests/data/iso20022/`) → parsed → matched. Then hand-edited variants (still schema-valid):
//! a missing entry, a wrong amount, a wrong currency, a duplicate, an unknown EndToEndId, a
//! rejected pacs.002 (and its later settlement), another account's statement.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use puente_ledger::settlement::{
    Country, CurrencyProfile, ParticipantProfile, SettlementRail, WindowFlow, WindowPosition, WindowState,
    WindowView, hub_account_id,
};
use puente_money::CurrencyCode;
use puente_netting::FeeModel;
use puente_settlement::bank::{self, BankDocuments};
use puente_settlement::reconcile::{
    self, DocumentKind, ENTRIES_MAX, ExceptionKind, ExpectedWindow, HubAccounts, PaymentStatus,
    Reconciliation,
};
use puente_settlement::{SettlementReport, build_report};
use rust_decimal::Decimal;

const AT: u64 = 1_790_000_300_000_000_000;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/iso20022")
}

/// Validates with xmllint (stdin) against the vendored schema; Err(stderr) when invalid.
fn xmllint(xml: &str, kind: DocumentKind) -> Result<(), String> {
    let schema = schema_dir().join(format!("{}.xsd", kind.name()));
    let mut child = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(&schema)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xmllint is required (scripts/ci-deps installs libxml2-utils)");
    child.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

fn profile(id: &str, bank_id: &str) -> ParticipantProfile {
    ParticipantProfile {
        participant: id.into(),
        name: format!("{id} Bank"),
        bic: String::new(),
        country: if id.starts_with("MX") { Country::Mx } else { Country::Us },
        currencies: vec![CurrencyProfile {
            currency: CurrencyCode::USD,
            rail: SettlementRail::Fedwire,
            bank_id: bank_id.into(),
            net_debit_cap_minor: 1_000_000_000,
            settlement_account_id: 1,
        }],
        updated_at_ns: 1,
    }
}

/// US00 owes 1,000.00, US01 owes 500.00, MX00 is owed 1,200.00 and MX01 300.00: three
/// payments, US01 party to two of them.
fn settled_window() -> (WindowView, SettlementReport) {
    let flows = [("US00", "MX00", 100_000u128), ("US01", "MX00", 20_000), ("US01", "MX01", 30_000)];
    let mut positions: BTreeMap<&str, (u128, u128)> = BTreeMap::new();
    for (d, c, v) in flows {
        positions.entry(d).or_default().0 += v;
        positions.entry(c).or_default().1 += v;
    }
    let window = WindowView {
        id: 9,
        currency: CurrencyCode::USD,
        state: WindowState::Settling,
        opened_at_ns: AT - 3_000_000_000_000,
        closed_at_ns: AT - 2_000_000_000_000,
        settled_at_ns: AT - 1_000_000_000_000,
        completed_at_ns: 0,
        first_transfer_ns: AT - 2_900_000_000_000,
        last_transfer_ns: AT - 2_100_000_000_000,
        obligation_count: 3,
        gross_value_minor: 150_000,
        attempts: 0,
        reason: String::new(),
        positions: positions
            .iter()
            .map(|(p, (paid, received))| WindowPosition {
                participant: (*p).into(),
                paid_minor: *paid,
                received_minor: *received,
                paid_count: u64::from(*paid > 0),
                received_count: u64::from(*received > 0),
                net_minor: *received as i128 - *paid as i128,
                confirmed: false,
            })
            .collect(),
        flows: flows
            .iter()
            .map(|(d, c, v)| WindowFlow {
                debtor: (*d).into(),
                creditor: (*c).into(),
                count: 1,
                value_minor: *v,
            })
            .collect(),
    };
    let profiles: BTreeMap<String, ParticipantProfile> = [
        profile("US00", "021000021"),
        profile("US01", "011000015"),
        profile("MX00", "021000021"),
        profile("MX01", "011000015"),
    ]
    .into_iter()
    .map(|p| (p.participant.clone(), p))
    .collect();
    let report = build_report(&window, &profiles, &FeeModel::default(), Decimal::new(18, 0)).unwrap();
    (window, report)
}

fn expected(window: &WindowView, report: &SettlementReport) -> ExpectedWindow {
    ExpectedWindow {
        window_id: window.id,
        currency: window.currency,
        state: window.state,
        scale: 2,
        payments: report.payments.clone(),
        confirmed: window.positions.iter().map(|p| (p.participant.clone(), p.confirmed)).collect(),
    }
}

fn hub() -> HubAccounts {
    [(CurrencyCode::USD, vec![format!("{:032x}", hub_account_id(CurrencyCode::USD))])].into_iter().collect()
}

fn bank_documents(report: &SettlementReport, rejected: &[(u32, String, String)]) -> BankDocuments {
    bank::simulate(
        9,
        CurrencyCode::USD,
        2,
        hub_account_id(CurrencyCode::USD),
        &report.payments,
        rejected,
        AT - 10,
        AT,
    )
}

/// Validates, detects, parses and reconciles `documents` (name, XML) against `windows`.
fn run(windows: &[ExpectedWindow], documents: &[(&str, String)]) -> Reconciliation {
    let mut left = ENTRIES_MAX;
    let mut parsed = Vec::new();
    for (name, xml) in documents {
        let kind = DocumentKind::detect(name, xml.as_bytes()).unwrap();
        xmllint(xml, kind).unwrap_or_else(|e| panic!("{name} fails its schema:\n{e}\n{xml}"));
        parsed.push(reconcile::parse(name, xml.as_bytes(), kind, &mut left).unwrap());
    }
    reconcile::reconcile(windows, &hub(), &parsed)
}

fn statuses(r: &Reconciliation) -> Vec<PaymentStatus> {
    r.windows[0].payments.iter().map(|p| p.status).collect()
}

fn kinds(r: &Reconciliation) -> Vec<ExceptionKind> {
    r.exceptions.iter().map(|e| e.kind).collect()
}

/// The vendored schemas are the official ones, unchanged: their SHA-256 digests are pinned
/// here and in `tests/data/README.md` (taken from the ISO 20022 copies they came from).
#[test]
fn vendored_schemas_are_the_official_ones() {
    let pinned = [
        ("camt.053.001.08.xsd", "ca0b135cc8e2dde5b2f99af6b6c514a8f29d6e7c6cf98e9ea84d247189868ff5"),
        ("camt.054.001.08.xsd", "2b392a1f7e70e70902fd0d803ff85989613bd1cae351663240b0bb9243be2c28"),
        ("pacs.002.001.11.xsd", "4d84ae6428b776644c0755f26d99980b4e0dcb63053e06ef43f8db13328d783b"),
        ("pacs.009.001.09.xsd", "798685a82f8ac70d7826274d17006271847a28a66472d06394f5b93a5671992b"),
    ];
    let mut vendored: Vec<String> = std::fs::read_dir(schema_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    vendored.sort();
    assert_eq!(vendored, pinned.map(|(name, _)| name.to_owned()), "a schema was added or removed: pin it");
    for (name, digest) in pinned {
        let bytes = std::fs::read(schema_dir().join(name)).unwrap();
        assert_eq!(
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)),
            digest,
            "{name} changed"
        );
    }
}

#[test]
fn every_bank_document_validates_and_a_clean_night_confirms_everyone() {
    let (window, report) = settled_window();
    assert_eq!(report.payments.len(), 3, "{:?}", report.payments);
    let docs = bank_documents(&report, &[]);
    let windows = [expected(&window, &report)];
    // Each document alone is enough evidence.
    for (name, xml) in [
        ("camt053.xml", docs.camt053.clone()),
        ("camt054.xml", docs.camt054.clone()),
        ("pacs002.xml", docs.pacs002.clone().unwrap()),
    ] {
        let r = run(&windows, &[(name, xml)]);
        assert!(r.exceptions.is_empty(), "{name}: {:#?}", r.exceptions);
        assert_eq!(statuses(&r), vec![PaymentStatus::Matched; 3], "{name}");
        assert_eq!(r.windows[0].confirm, vec!["MX00", "MX01", "US00", "US01"], "{name}");
        assert!(r.windows[0].rejection.is_none());
    }
    // A status report that states no amount does not confirm on its own (matching is by
    // reference and amount and currency); with the statement that books the payments it does.
    let pacs = docs.pacs002.clone().unwrap();
    let bare = strip_between(&pacs, "<OrgnlTxRef>", "</OrgnlTxRef>");
    let r = run(&windows, &[("pacs002.xml", bare.clone())]);
    assert_eq!(kinds(&r), vec![ExceptionKind::Pending; 3], "{:#?}", r.exceptions);
    assert!(r.exceptions[0].detail.contains("no document states its amount"), "{:?}", r.exceptions[0]);
    assert!(r.windows[0].confirm.is_empty());
    let r = run(&windows, &[("pacs002.xml", bare), ("camt053.xml", docs.camt053.clone())]);
    assert!(r.exceptions.is_empty(), "{:#?}", r.exceptions);
    assert_eq!(r.windows[0].confirm.len(), 4);
    // A bank that does not carry the EndToEndId (ISO's NOTPROVIDED) is matched by UETR.
    let pacs = docs.pacs002.clone().unwrap();
    let anonymous = report
        .payments
        .iter()
        .fold(pacs, |xml, p| xml.replace(&format!(">{}<", p.end_to_end_id), ">NOTPROVIDED<"));
    let r = run(&windows, &[("pacs002.xml", anonymous)]);
    assert!(r.exceptions.is_empty(), "{:#?}", r.exceptions);
    assert_eq!(statuses(&r), vec![PaymentStatus::Matched; 3]);
    // All together (a notification and the statement book the same payments: not duplicates).
    let all = run(
        &windows,
        &[
            ("a.xml", docs.camt053.clone()),
            ("b.xml", docs.camt054.clone()),
            ("c.xml", docs.pacs002.clone().unwrap()),
        ],
    );
    assert!(all.exceptions.is_empty(), "{:#?}", all.exceptions);
    assert_eq!(all.windows[0].payments.iter().map(|p| p.evidence).collect::<Vec<_>>(), vec![5, 5, 5]);
    // The documents render.
    assert!(all.to_table().contains("No exceptions."));
    assert_eq!(all.exceptions_csv().lines().count(), 1);
    let json: serde_json::Value = serde_json::from_str(&all.to_json().unwrap()).unwrap();
    assert_eq!(json["windows"][0]["payments"][0]["status"], "MATCHED");
    // Idempotent: once everyone has confirmed, the same statement confirms nothing new.
    let mut done = windows.clone();
    for c in done[0].confirmed.values_mut() {
        *c = true;
    }
    let again = run(&done, &[("a.xml", docs.camt053)]);
    assert!(again.windows[0].confirm.is_empty() && again.exceptions.is_empty(), "{again:#?}");
    assert_eq!(statuses(&again), vec![PaymentStatus::AlreadyConfirmed; 3]);
}

/// The payment US01 → MX01 (the one MX01 receives).
fn us01_to_mx01(report: &SettlementReport) -> &puente_settlement::SettlementPayment {
    report.payments.iter().find(|p| p.payer == "US01" && p.payee == "MX01").unwrap()
}

#[test]
fn a_missing_entry_confirms_only_those_whose_payments_all_matched() {
    let (window, report) = settled_window();
    let missing = us01_to_mx01(&report).clone();
    let docs = bank_documents(&report, &[]);
    // Hand edit: drop both of the payment's entries from the statement.
    let statement = remove_entries(&docs.camt053, &missing.end_to_end_id);
    assert_eq!(statement.matches("<Ntry>").count(), 4);
    let r = run(&[expected(&window, &report)], &[("camt053.xml", statement)]);
    assert_eq!(kinds(&r), vec![ExceptionKind::Missing], "{:#?}", r.exceptions);
    assert_eq!(r.exceptions[0].end_to_end_id, missing.end_to_end_id);
    assert_eq!(
        r.exceptions[0].expected,
        format!("{} USD", puente_money::format_minor(missing.amount_minor, 2))
    );
    // US01 is party to a matched payment too, but not confirmed: nothing on a partial match.
    assert_eq!(r.windows[0].confirm, vec!["MX00", "US00"]);
    let unconfirmed: Vec<&str> = r.windows[0].unconfirmed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(unconfirmed, vec!["MX01", "US01"]);
    assert!(r.windows[0].rejection.is_none());
}

#[test]
fn a_wrong_amount_or_currency_is_a_mismatch_not_a_match() {
    let (window, report) = settled_window();
    let payment = us01_to_mx01(&report).clone();
    let docs = bank_documents(&report, &[]);
    let amount = puente_money::format_minor(payment.amount_minor, 2);
    let wrong = puente_money::format_minor(payment.amount_minor - 1, 2);
    let edited = edit_entries(&docs.camt053, &payment.end_to_end_id, |entry| {
        entry.replacen(&format!(">{amount}<"), &format!(">{wrong}<"), 1)
    });
    let r = run(&[expected(&window, &report)], &[("camt053.xml", edited)]);
    assert_eq!(kinds(&r), vec![ExceptionKind::AmountMismatch; 2], "{:#?}", r.exceptions);
    assert!(r.exceptions[0].detail.contains(&wrong), "{:?}", r.exceptions[0]);
    assert_eq!(r.windows[0].confirm, vec!["MX00", "US00"]);

    let edited = edit_entries(&docs.camt053, &payment.end_to_end_id, |entry| {
        entry.replace("Ccy=\"USD\"", "Ccy=\"MXN\"")
    });
    let r = run(&[expected(&window, &report)], &[("camt053.xml", edited)]);
    assert_eq!(kinds(&r), vec![ExceptionKind::CurrencyMismatch; 2], "{:#?}", r.exceptions);
    assert_eq!(r.windows[0].confirm, vec!["MX00", "US00"]);
}

#[test]
fn a_duplicated_entry_confirms_neither_party() {
    let (window, report) = settled_window();
    let payment = us01_to_mx01(&report).clone();
    let docs = bank_documents(&report, &[]);
    let entry = entries_of(&docs.camt053, &payment.end_to_end_id)[0].clone();
    let edited = docs.camt053.replacen(&entry, &format!("{entry}{entry}"), 1);
    let r = run(&[expected(&window, &report)], &[("camt053.xml", edited)]);
    assert_eq!(kinds(&r), vec![ExceptionKind::Duplicate], "{:#?}", r.exceptions);
    assert_eq!(statuses(&r).iter().filter(|s| **s == PaymentStatus::Duplicate).count(), 1);
    assert_eq!(r.windows[0].confirm, vec!["MX00", "US00"]);
}

#[test]
fn an_unknown_end_to_end_id_is_reported_and_the_rest_still_matches() {
    let (window, report) = settled_window();
    let payment = report.payments[0].clone();
    let docs = bank_documents(&report, &[]);
    let entry = entries_of(&docs.camt053, &payment.end_to_end_id)[0].clone();
    let stranger = entry
        .replace(&payment.end_to_end_id, "INVOICE-2026-0042")
        .replace(&payment.uetr, "5a0e7f3c-1b2d-4e5f-8a9b-0c1d2e3f4a5b");
    let foreign_window = entry
        .replace(&payment.end_to_end_id, "PUENTE-W4-1")
        .replace(&format!("<UETR>{}</UETR>", payment.uetr), "");
    let edited = docs.camt053.replacen(&entry, &format!("{entry}{stranger}{foreign_window}"), 1);
    let r = run(&[expected(&window, &report)], &[("camt053.xml", edited)]);
    assert_eq!(kinds(&r), vec![ExceptionKind::UnknownEntry; 2], "{:#?}", r.exceptions);
    assert!(r.exceptions.iter().any(|e| e.end_to_end_id == "INVOICE-2026-0042"));
    let w4 = r.exceptions.iter().find(|e| e.end_to_end_id == "PUENTE-W4-1").unwrap();
    assert_eq!(w4.window_id, 4);
    assert!(w4.detail.contains("window 4"), "{w4:?}");
    assert_eq!(statuses(&r), vec![PaymentStatus::Matched; 3]);
    assert_eq!(r.windows[0].confirm.len(), 4);
}

#[test]
fn a_rejected_payment_blocks_its_parties_and_a_later_settlement_retries() {
    let (window, report) = settled_window();
    let payment = us01_to_mx01(&report).clone();
    let rejected = [(payment.index, "AC04".to_owned(), "Closed account number".to_owned())];
    let docs = bank_documents(&report, &rejected);
    let windows = [expected(&window, &report)];
    let r = run(
        &windows,
        &[("camt053.xml", docs.camt053.clone()), ("pacs002.xml", docs.pacs002.clone().unwrap())],
    );
    assert_eq!(kinds(&r), vec![ExceptionKind::Rejected], "{:#?}", r.exceptions);
    assert!(r.exceptions[0].detail.contains("AC04"), "{:?}", r.exceptions[0]);
    let rejection = r.windows[0].rejection.clone().expect("the window goes REJECTED");
    assert!(rejection.contains(&payment.end_to_end_id) && rejection.contains("AC04"), "{rejection}");
    assert_eq!(r.windows[0].confirm, vec!["MX00", "US00"]);

    // The payment is resent and settles: a later pacs.002 (ACSC) and the next statement book
    // it. Fed in with the earlier documents, the later evidence wins.
    let later = bank::simulate(
        9,
        CurrencyCode::USD,
        2,
        hub_account_id(CurrencyCode::USD),
        std::slice::from_ref(&payment),
        &[],
        AT,
        AT + 3_600_000_000_000,
    );
    let pacs = later.pacs002.unwrap().replace("PUENTE-W9-PACS002", "PUENTE-W9-PACS002-2");
    let r = run(
        &windows,
        &[
            ("camt053.xml", docs.camt053),
            ("pacs002.xml", docs.pacs002.unwrap()),
            ("pacs002-2.xml", pacs),
            ("camt053-2.xml", later.camt053),
        ],
    );
    assert!(r.exceptions.is_empty(), "{:#?}", r.exceptions);
    assert_eq!(statuses(&r), vec![PaymentStatus::Matched; 3]);
    assert_eq!(r.windows[0].confirm.len(), 4);
    assert!(r.windows[0].rejection.is_none());
}

#[test]
fn a_settled_window_reports_only_news() {
    let (window, report) = settled_window();
    let payment = us01_to_mx01(&report).clone();
    let mut settled = expected(&window, &report);
    settled.state = WindowState::Settled;
    for c in settled.confirmed.values_mut() {
        *c = true;
    }
    let rejected = [(payment.index, "AC04".to_owned(), "Closed account".to_owned())];
    let docs = bank_documents(&report, &rejected);
    // A rejection nothing superseded is news, even after settlement; nothing changes.
    let r = run(std::slice::from_ref(&settled), &[("pacs002.xml", docs.pacs002.clone().unwrap())]);
    assert_eq!(kinds(&r), vec![ExceptionKind::Rejected], "{:#?}", r.exceptions);
    assert!(r.exceptions[0].detail.ends_with("(window 9 is SETTLED)"), "{:?}", r.exceptions[0]);
    assert!(r.windows.is_empty(), "a settled window has no outcome to apply");
    assert_eq!(r.named_windows, vec![9]);
    // Superseded by a later settlement: nothing to report.
    let later = bank::simulate(
        9,
        CurrencyCode::USD,
        2,
        hub_account_id(CurrencyCode::USD),
        std::slice::from_ref(&payment),
        &[],
        AT,
        AT + 1_000_000_000,
    );
    let r = run(
        std::slice::from_ref(&settled),
        &[("pacs002.xml", docs.pacs002.unwrap()), ("later.xml", later.pacs002.unwrap())],
    );
    assert!(r.exceptions.is_empty(), "{:#?}", r.exceptions);
}

#[test]
fn a_whole_message_rejected_by_group_status() {
    let (window, report) = settled_window();
    let report_xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.002.001.11">
  <FIToFIPmtStsRpt>
    <GrpHdr><MsgId>BANK-1</MsgId><CreDtTm>2026-09-21T10:00:00-05:00</CreDtTm></GrpHdr>
    <OrgnlGrpInfAndSts>
      <OrgnlMsgId>PUENTE-W{}-PACS009</OrgnlMsgId><OrgnlMsgNmId>pacs.009.001.09</OrgnlMsgNmId>
      <GrpSts>RJCT</GrpSts><StsRsnInf><Rsn><Cd>FF01</Cd></Rsn></StsRsnInf>
    </OrgnlGrpInfAndSts>
  </FIToFIPmtStsRpt>
</Document>"#,
        window.id
    );
    let r = run(&[expected(&window, &report)], &[("pacs002.xml", report_xml)]);
    assert_eq!(kinds(&r), vec![ExceptionKind::Rejected; 3], "{:#?}", r.exceptions);
    assert!(r.windows[0].confirm.is_empty());
    assert!(r.windows[0].rejection.as_deref().unwrap().contains("FF01"));
}

#[test]
fn another_accounts_statement_is_reported_not_matched() {
    let (window, report) = settled_window();
    let docs = bank_documents(&report, &[]);
    let hub_hex = format!("{:032x}", hub_account_id(CurrencyCode::USD));
    let other = docs.camt053.replace(&hub_hex, "000123456789");
    let r = run(&[expected(&window, &report)], &[("other.xml", other)]);
    assert_eq!(kinds(&r), vec![ExceptionKind::NotHubAccount], "{:#?}", r.exceptions);
    // Nothing named the window's payments, and no hub statement covered its currency: out of
    // scope, nothing missing, nothing confirmed.
    assert!(r.windows.is_empty(), "{:#?}", r.windows);
}

#[test]
fn schema_errors_and_broken_documents_are_caught_before_matching() {
    let (_, report) = settled_window();
    let docs = bank_documents(&report, &[]);
    // An entry without its amount: well-formed, but the schema refuses it.
    let broken = docs.camt053.replacen("<Amt Ccy=\"USD\">0.00</Amt>", "", 1);
    let error = xmllint(&broken, DocumentKind::Camt053).unwrap_err();
    assert!(error.contains("Amt") || error.contains("expected"), "{error}");
    assert!(
        DocumentKind::detect("x", b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.053.001.08'>")
            .is_err()
    );
    let mut left = 1;
    let parsed = reconcile::parse("x", docs.camt053.as_bytes(), DocumentKind::Camt053, &mut left);
    assert!(parsed.unwrap_err().to_string().contains("entries"), "the entry bound holds");
}

// ----- hand editing ---------------------------------------------------------------------------

/// Every `<Ntry>…</Ntry>` block (with its indentation and newline) that mentions `needle`.
fn entries_of(xml: &str, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Ntry>") {
        let line_start = rest[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let end = rest[start..].find("</Ntry>\n").map(|i| start + i + "</Ntry>\n".len()).unwrap();
        let block = &rest[line_start..end];
        if block.contains(&format!(">{needle}<")) {
            out.push(block.to_owned());
        }
        rest = &rest[end..];
    }
    out
}

fn remove_entries(xml: &str, needle: &str) -> String {
    entries_of(xml, needle).iter().fold(xml.to_owned(), |xml, block| xml.replacen(block.as_str(), "", 1))
}

fn edit_entries(xml: &str, needle: &str, edit: impl Fn(&str) -> String) -> String {
    entries_of(xml, needle)
        .iter()
        .fold(xml.to_owned(), |xml, block| xml.replacen(block.as_str(), &edit(block), 1))
}

/// `xml` without every `open`…`close` element (with its indentation and newline).
fn strip_between(xml: &str, open: &str, close: &str) -> String {
    let mut out = xml.to_owned();
    while let Some(start) = out.find(open) {
        let line_start = out[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let end = start + out[start..].find(close).unwrap() + close.len();
        let end = if out[end..].starts_with('\n') { end + 1 } else { end };
        out.replace_range(line_start..end, "");
    }
    out
}
