//! Every XML document this crate writes validates against the official ISO 20022 schemas
//! vendored in `tests/data/iso20022/` (origin and digests in `tests/data/README.md`), with
//! `xmllint` (package libxml2-utils, installed by `scripts/test`, the README's test command).
//! A missing xmllint or schema fails the test with a message saying so: it is never skipped
//! silently.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use puente_ledger::settlement::{
    Country, CurrencyProfile, ParticipantProfile, SettlementRail, WindowFlow, WindowPosition, WindowState,
    WindowView,
};
use puente_money::CurrencyCode;
use puente_netting::FeeModel;
use puente_settlement::xml::{StatementEntry, StatementInput, camt053, pacs009};
use rust_decimal::Decimal;

fn schema(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/iso20022").join(name);
    assert!(path.exists(), "schema {} not found (versioned under tests/data/iso20022)", path.display());
    path
}

/// Validates `xml` with xmllint; panics with its output when invalid.
pub fn validate(xml: &str, xsd: &str) {
    let dir = tempfile_dir();
    let file = dir.join("doc.xml");
    std::fs::write(&file, xml).unwrap();
    let output = Command::new(required_tool("xmllint", "libxml2-utils"))
        .args(["--noout", "--schema"])
        .arg(schema(xsd))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run xmllint: {e}"));
    assert!(
        output.status.success(),
        "{xsd} rejects the document:\n{}\n{xml}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The path of `program` on PATH; panics, saying how to get it, when it is not there.
fn required_tool(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "{program} is not installed (Debian package {debian_package}): run the tests with \
             scripts/test, which installs what they need (scripts/test-deps), not plain cargo test"
        )
    })
}

#[test]
#[should_panic(expected = "run the tests with scripts/test, which installs what they need")]
fn a_missing_tool_says_to_run_scripts_test() {
    required_tool("puente-no-such-tool", "puente-no-such-package");
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "puente-xsd-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn profile(
    id: &str,
    country: Country,
    currency: CurrencyCode,
    rail: SettlementRail,
    bank_id: &str,
    bic: &str,
) -> ParticipantProfile {
    ParticipantProfile {
        participant: id.into(),
        name: format!("{id} Bank & Trust <\"quoted\">"),
        bic: bic.into(),
        country,
        currencies: vec![CurrencyProfile {
            currency,
            rail,
            bank_id: bank_id.into(),
            net_debit_cap_minor: 1_000_000_000,
            settlement_account_id: 1,
        }],
        updated_at_ns: 1,
    }
}

fn window(currency: CurrencyCode) -> WindowView {
    let pos = |p: &str, paid: u128, received: u128| WindowPosition {
        participant: p.into(),
        paid_minor: paid,
        received_minor: received,
        paid_count: u64::from(paid > 0),
        received_count: u64::from(received > 0),
        net_minor: received as i128 - paid as i128,
        confirmed: false,
    };
    WindowView {
        id: 3,
        currency,
        state: WindowState::Settling,
        opened_at_ns: 1_790_000_000_000_000_000,
        closed_at_ns: 1_790_000_100_000_000_000,
        settled_at_ns: 1_790_000_200_000_000_000,
        completed_at_ns: 0,
        first_transfer_ns: 1_790_000_000_000_000_001,
        last_transfer_ns: 1_790_000_050_000_000_000,
        obligation_count: 2,
        gross_value_minor: 1_234_567,
        attempts: 0,
        reason: String::new(),
        positions: vec![pos("A", 1_000_000, 0), pos("B", 234_567, 0), pos("C", 0, 1_234_567)],
        flows: vec![
            WindowFlow { debtor: "A".into(), creditor: "C".into(), count: 1, value_minor: 1_000_000 },
            WindowFlow { debtor: "B".into(), creditor: "C".into(), count: 1, value_minor: 234_567 },
        ],
    }
}

#[test]
fn pacs009_validates_for_fedwire_and_spei() {
    let usd: BTreeMap<String, ParticipantProfile> = [
        profile("A", Country::Us, CurrencyCode::USD, SettlementRail::Fedwire, "021000021", "BOFAUS3N"),
        profile("B", Country::Mx, CurrencyCode::USD, SettlementRail::AchDirectoMexico, "011000015", ""),
        profile("C", Country::Mx, CurrencyCode::USD, SettlementRail::Fedwire, "021000021", "BNMXMXMMXXX"),
    ]
    .into_iter()
    .map(|p| (p.participant.clone(), p))
    .collect();
    let report = puente_settlement::build_report(
        &window(CurrencyCode::USD),
        &usd,
        &FeeModel::default(),
        Decimal::new(18, 0),
    )
    .unwrap();
    let xml = pacs009(&report, 2, 1_790_000_300_000_000_000, 1_790_000_200_000_000_000).unwrap();
    validate(&xml, "pacs.009.001.09.xsd");

    let mxn: BTreeMap<String, ParticipantProfile> = [
        profile("A", Country::Mx, CurrencyCode::MXN, SettlementRail::Spei, "032180000118359719", ""),
        profile("B", Country::Mx, CurrencyCode::MXN, SettlementRail::Spei, "002180000000000012", ""),
        profile("C", Country::Us, CurrencyCode::MXN, SettlementRail::Spei, "032180000118359719", "BOFAUS3N"),
    ]
    .into_iter()
    .map(|p| (p.participant.clone(), p))
    .collect();
    assert!(mxn.values().all(|p| puente_settlement::profile::validate_profile(p).is_empty()));
    let report = puente_settlement::build_report(
        &window(CurrencyCode::MXN),
        &mxn,
        &FeeModel::default(),
        Decimal::new(18, 0),
    )
    .unwrap();
    let xml = pacs009(&report, 2, 1_790_000_300_000_000_000, 1_790_000_200_000_000_000).unwrap();
    validate(&xml, "pacs.009.001.09.xsd");
}

#[test]
fn camt053_validates() {
    for (opening, closing, credit) in [(0, -1_000_000, false), (5, 1_234_572, true)] {
        let xml = camt053(&StatementInput {
            window_id: 3,
            participant: "a-very-long-participant-identifier-0123456789".into(),
            participant_name: "Ñandú & Co <MX>".into(),
            currency: CurrencyCode::MXN,
            scale: 2,
            account_id: u128::MAX,
            from_ns: 1_790_000_000_000_000_000,
            to_ns: 1_790_000_200_000_000_000,
            created_ns: 1_790_000_300_000_000_000,
            opening_minor: opening,
            closing_minor: closing,
            entries: vec![StatementEntry {
                transfer_id: 77,
                amount_minor: (closing - opening).unsigned_abs(),
                credit,
                booked_ns: 1_790_000_200_000_000_000,
                end_to_end_id: "PUENTE-W3-a-very-long-participant-identifier".into(),
                uetr: String::new(),
                info: "Net settlement of window 3".into(),
            }],
        });
        validate(&xml, "camt.053.001.08.xsd");
    }
}
