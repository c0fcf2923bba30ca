//! Settlement windows end to end, over gRPC against the real server: `puente simulate` →
//! close → run → report / payments (pacs.009) / statements (camt.053) → confirm → SETTLED; the
//! Net Debit Cap over the wire; idempotent retries; and a SIGKILL in the middle of a settlement
//! run. Every XML document is validated with xmllint against `tests/data/iso20022/*.xsd`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use puente_client::{NewAccount, NewTransfer, pb};

use crate::support::{Server, minor, temp_dir};

type SettlementClient = pb::settlement_service_client::SettlementServiceClient<puente_client::AuthChannel>;

async fn settlement_client(addr: &str) -> SettlementClient {
    crate::support::operator_client(addr).await.settlement()
}

/// Validates `xml` against `tests/data/iso20022/<xsd>` with xmllint (required: scripts/test
/// installs it). Never skipped: a missing xmllint fails with a message saying to run
/// scripts/test.
fn validate_xml(xml: &str, xsd: &str, dir: &Path, name: &str) {
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/iso20022").join(xsd);
    assert!(schema.exists(), "{} missing (versioned under tests/data/iso20022)", schema.display());
    let file = dir.join(name);
    std::fs::write(&file, xml).unwrap();
    let output = Command::new(required_tool("xmllint", "libxml2-utils"))
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run xmllint: {e}"));
    assert!(output.status.success(), "{name} fails {xsd}:\n{}", String::from_utf8_lossy(&output.stderr));
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

fn puente(addr: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_puente"))
        .arg("--server")
        .arg(addr)
        .env("PUENTE_API_KEY_FILE", crate::support::key_file_for(addr))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "puente {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn state(w: &pb::SettlementWindow) -> pb::WindowState {
    pb::WindowState::try_from(w.state).unwrap()
}

fn value(m: &Option<pb::Money>) -> i128 {
    minor(&m.as_ref().unwrap().value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_close_run_report_confirm() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let addr = server.addr.clone();
    let summary: serde_json::Value = serde_json::from_str(&puente(
        &addr,
        &["--json", "simulate", "--seed", "11", "--transfers", "3000", "--us", "5", "--mx", "6"],
    ))
    .unwrap();
    assert_eq!(summary["results"]["OK"], 3000, "{summary}");
    // Rerunning the same seed is an idempotent retry, not a second day.
    let again: serde_json::Value = serde_json::from_str(&puente(
        &addr,
        &["--json", "simulate", "--seed", "11", "--transfers", "3000", "--us", "5", "--mx", "6"],
    ))
    .unwrap();
    assert_eq!(again["replayed"], 3000, "{again}");

    let mut settlement = settlement_client(&addr).await;
    let mut ledger = server.client().await;
    let open = settlement
        .list_windows(pb::ListWindowsRequest { state: pb::WindowState::Open as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .windows;
    assert_eq!(open.len(), 2, "one open window per currency: {open:?}");
    let usd = open.iter().find(|w| w.currency_code == "USD").unwrap().clone();
    let obligations: u64 = open.iter().map(|w| w.obligation_count).sum();
    assert_eq!(obligations, 3000);

    // Close (twice: the retry changes nothing and the next window stays the same).
    let closed = settlement
        .close_window(pb::CloseWindowRequest { window_id: usd.window_id, currency_code: String::new() })
        .await
        .unwrap()
        .into_inner();
    let window = closed.window.clone().unwrap();
    assert_eq!((state(&window), closed.changed), (pb::WindowState::Closed, true), "{window:?}");
    assert!(closed.next_window_id > usd.window_id);
    let retry = settlement
        .close_window(pb::CloseWindowRequest { window_id: usd.window_id, currency_code: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((state(retry.window.as_ref().unwrap()), retry.changed), (pb::WindowState::Closed, false));
    assert_eq!(retry.next_window_id, closed.next_window_id);
    let nets: BTreeMap<String, i128> =
        window.positions.iter().map(|p| (p.participant.clone(), value(&p.net))).collect();
    assert_eq!(nets.values().sum::<i128>(), 0);

    // Report before settlement: figures add up.
    let report = settlement
        .get_settlement_report(pb::GetSettlementReportRequest {
            window_id: usd.window_id,
            format: pb::ReportFormat::Json as i32,
            rate_mxn_per_usd: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let figures = report.report.unwrap();
    assert_eq!(figures.gross_count, usd.obligation_count);
    assert_eq!(value(&figures.gross_value), value(&usd.gross_value));
    let multilateral: i128 = nets.values().filter(|v| **v > 0).sum();
    assert_eq!(value(&figures.multilateral_net_value), multilateral);
    assert!(value(&figures.bilateral_net_value) >= multilateral);
    assert!(figures.payments_count < nets.len() as u64, "at most n - 1 payments");
    assert!(figures.bank_fee_saving_usd.parse::<f64>().unwrap() > 0.0, "{figures:?}");
    assert!(figures.participants.iter().all(|p| !p.saving_usd.is_empty()));
    let json: serde_json::Value = serde_json::from_str(&report.document).unwrap();
    assert_eq!(json["window_id"], usd.window_id);
    // The report carries the journal's chain head when it was generated, in the response and
    // in its documents.
    let head = report.journal_chain_head.clone().expect("journal_chain_head");
    assert!(head.seq > 0, "{head:?}");
    assert_eq!(head.sha256.len(), 64, "{head:?}");
    assert!(head.sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{head:?}");
    assert_eq!(json["journal_chain_head"]["seq"], head.seq);
    assert_eq!(json["journal_chain_head"]["sha256"], head.sha256.as_str());

    // Run the settlement (twice: settled exactly once).
    let run = settlement
        .run_settlement(pb::RunSettlementRequest { window_id: usd.window_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((state(run.window.as_ref().unwrap()), run.changed), (pb::WindowState::Settling, true));
    assert_eq!(run.transfers.len(), nets.values().filter(|v| **v != 0).count());
    let rerun = settlement
        .run_settlement(pb::RunSettlementRequest { window_id: usd.window_id })
        .await
        .unwrap()
        .into_inner();
    assert!(!rerun.changed);
    assert_eq!(
        rerun.transfers.iter().map(|t| &t.transfer_id).collect::<Vec<_>>(),
        run.transfers.iter().map(|t| &t.transfer_id).collect::<Vec<_>>()
    );
    // Every settlement account's balance is its participant's net position; the hub nets to 0.
    for t in &run.transfers {
        let account = ledger.get_account(&t.settlement_account_id).await.unwrap();
        assert_eq!(minor(&account.posted_balance), nets[&t.participant], "{}", t.participant);
        assert_eq!(minor(&account.posted_balance), value(&t.net));
        let transfer = ledger.get_transfer(&t.transfer_id).await.unwrap();
        assert_eq!(transfer.state, pb::TransferState::Posted as i32);
    }
    let hub = ledger.list_accounts("puente-hub", 100, "").await.unwrap().accounts;
    assert_eq!(hub.len(), 1);
    assert_eq!(minor(&hub[0].posted_balance), 0);

    // Payments as pacs.009, CSV and JSON; statements as camt.053; all valid.
    let payments = settlement
        .list_settlement_payments(pb::ListSettlementPaymentsRequest {
            window_id: usd.window_id,
            format: pb::PaymentFormat::Pacs009 as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payments.payments.len() as u64, figures.payments_count);
    let paid: i128 = payments.payments.iter().map(|p| value(&p.amount)).sum();
    assert_eq!(paid, multilateral);
    validate_xml(&payments.document, "pacs.009.001.09.xsd", dir.path(), "pacs009.xml");
    for participant in nets.keys() {
        let statement = settlement
            .get_settlement_statement(pb::GetSettlementStatementRequest {
                window_id: usd.window_id,
                participant: participant.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        validate_xml(
            &statement.document,
            "camt.053.001.08.xsd",
            dir.path(),
            &format!("camt053-{participant}.xml"),
        );
    }
    let csv = puente(&addr, &["settlement", "payments", &usd.window_id.to_string(), "--format", "csv"]);
    assert_eq!(csv.lines().count() as u64, figures.payments_count + 1);

    // The CLI: report as table, CSV and JSON; run --out-dir writes the documents.
    let table = puente(&addr, &["settlement", "report", &usd.window_id.to_string()]);
    assert!(table.contains("netting efficiency"), "{table}");
    // A later report (after the settlement run was journaled) has a head at least as far on.
    let later_line = table.lines().find(|l| l.starts_with("journal chain head: seq ")).expect(&table);
    let mut fields = later_line["journal chain head: seq ".len()..].split(' ');
    let later_seq: u64 = fields.next().unwrap().parse().unwrap();
    let later_hash = fields.next().unwrap();
    assert!(later_seq >= head.seq, "{later_line} vs {head:?}");
    assert_eq!(later_hash.len(), 64, "{later_line}");
    let cli_json: serde_json::Value =
        serde_json::from_str(&puente(&addr, &["--json", "settlement", "report", &usd.window_id.to_string()]))
            .unwrap();
    assert!(cli_json["journal_chain_head"]["seq"].as_u64().unwrap() >= later_seq, "{cli_json}");
    assert_eq!(cli_json["journal_chain_head"]["sha256"].as_str().unwrap().len(), 64);
    let csv = puente(&addr, &["settlement", "report", &usd.window_id.to_string(), "--csv"]);
    assert!(csv.starts_with("section,participant,counterparty,currency,metric,value"));
    assert!(csv.contains(",journal_chain_seq,") && csv.contains(",journal_chain_sha256,"), "{csv}");
    let out_dir = dir.path().join("out");
    puente(&addr, &["settlement", "run", &usd.window_id.to_string(), "--out-dir", out_dir.to_str().unwrap()]);
    let written = std::fs::read_to_string(out_dir.join("pacs009.xml")).unwrap();
    assert_eq!(written, payments.document, "documents are deterministic");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert!(written["journal_chain_head"]["seq"].as_u64().unwrap() >= later_seq, "{written}");

    // Confirm every participant; the last confirmation settles the window; retries change
    // nothing.
    let participants: Vec<String> = nets.keys().cloned().collect();
    for (i, participant) in participants.iter().enumerate() {
        let confirmed = settlement
            .confirm_settlement(pb::ConfirmSettlementRequest {
                window_id: usd.window_id,
                participant: participant.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let expected =
            if i + 1 == participants.len() { pb::WindowState::Settled } else { pb::WindowState::Settling };
        // Participants with a zero net were confirmed at settlement.
        if nets[participant] != 0 {
            assert!(confirmed.changed);
        }
        assert_eq!(state(confirmed.window.as_ref().unwrap()), expected);
    }
    let again = settlement
        .confirm_settlement(pb::ConfirmSettlementRequest {
            window_id: usd.window_id,
            participant: participants[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);
    let settled = settlement
        .get_window(pb::GetWindowRequest { window_id: usd.window_id })
        .await
        .unwrap()
        .into_inner()
        .window
        .unwrap();
    assert_eq!(state(&settled), pb::WindowState::Settled);
    assert!(settled.positions.iter().all(|p| p.confirmed));
    let listed = puente(&addr, &["settlement", "windows", "--state", "settled"]);
    assert!(listed.contains("SETTLED"), "{listed}");

    // The nightly batch (`puente settlement run` without a window): closes the MXN window,
    // which has obligations (the new, empty USD window stays open), and settles it.
    let batch: serde_json::Value =
        serde_json::from_str(&puente(&addr, &["--json", "settlement", "run"])).unwrap();
    let runs = batch["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{batch}");
    assert_eq!(runs[0]["window"]["currency"], "MXN");
    assert_eq!(runs[0]["window"]["state"], "SETTLING");
    let again: serde_json::Value =
        serde_json::from_str(&puente(&addr, &["--json", "settlement", "run"])).unwrap();
    assert!(again["runs"].as_array().unwrap().is_empty(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_debit_cap_and_profiles_over_the_wire() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut ledger = server.client().await;
    let mut settlement = settlement_client(&server.addr).await;
    crate::support::participant(&mut ledger, "bank-a").await;
    crate::support::participant(&mut ledger, "bank-b").await;
    let a_ops = ledger.create_account(NewAccount::new("bank-a", "USD")).await.unwrap().id;
    let a_settle =
        ledger.create_account(NewAccount::new("bank-a", "USD").holder_ref("settlement")).await.unwrap().id;
    let b_ops = ledger.create_account(NewAccount::new("bank-b", "USD")).await.unwrap().id;
    let profile = |bank_id: &str, cap: &str| pb::ParticipantProfile {
        participant: "bank-a".into(),
        name: "Bank A".into(),
        bic: String::new(),
        country: pb::Country::Us as i32,
        currencies: vec![pb::CurrencySettlement {
            currency_code: "USD".into(),
            rail: pb::SettlementRail::Fedwire as i32,
            bank_id: bank_id.into(),
            net_debit_cap: cap.into(),
            settlement_account_id: a_settle.clone(),
        }],
        update_time: None,
    };
    // A bad routing number is refused with the field's path.
    let error = settlement
        .set_participant_profile(pb::SetParticipantProfileRequest {
            profile: Some(profile("021000022", "100.00")),
        })
        .await
        .unwrap_err();
    let error = puente_client::ClientError::from(error);
    let puente_client::ClientError::Status { code, violations, .. } = &error else { panic!("{error:?}") };
    assert_eq!(*code, tonic::Code::InvalidArgument);
    assert_eq!(violations[0].0, "profile.currencies[0].bank_id");
    settlement
        .set_participant_profile(pb::SetParticipantProfileRequest {
            profile: Some(profile("021000021", "100.00")),
        })
        .await
        .unwrap();

    let send = |id: &str, amount: &str| NewTransfer::new(&a_ops, &b_ops, "USD", amount).id(id).0;
    let ids: Vec<String> = (0..6).map(|_| puente_client::new_id()).collect();
    let results = ledger.create_transfers(vec![send(&ids[0], "60.00")]).await.unwrap();
    assert_eq!(results[0].code, "OK");
    let results = ledger.create_transfers(vec![send(&ids[1], "40.01")]).await.unwrap();
    assert_eq!(results[0].code, "NET_DEBIT_CAP_EXCEEDED");
    // A pending transfer counts against the cap while pending; voiding it releases it.
    let hold = NewTransfer::new(&a_ops, &b_ops, "USD", "40.00").id(&ids[2]).pending(0).0;
    assert_eq!(ledger.create_transfers(vec![hold]).await.unwrap()[0].code, "OK");
    assert_eq!(
        ledger.create_transfers(vec![send(&ids[3], "0.01")]).await.unwrap()[0].code,
        "NET_DEBIT_CAP_EXCEEDED"
    );
    let positions = settlement
        .get_participant_profile(pb::GetParticipantProfileRequest { participant: "bank-a".into() })
        .await
        .unwrap()
        .into_inner()
        .net_debit_positions;
    assert_eq!(positions[0].value, "100.00");
    let void = NewTransfer::void(&ids[2], "USD").id(&ids[4]).0;
    assert_eq!(ledger.create_transfers(vec![void]).await.unwrap()[0].code, "OK");
    assert_eq!(ledger.create_transfers(vec![send(&ids[5], "40.00")]).await.unwrap()[0].code, "OK");
    // bank-b has no profile, so no cap; a transfer back gives bank-a room again.
    let back = NewTransfer::new(&b_ops, &a_ops, "USD", "500.00").0;
    assert_eq!(ledger.create_transfers(vec![back]).await.unwrap()[0].code, "OK");
    // Closing fails while bank-b has no profile; it is FAILED with the reason, and a retry
    // after bank-b sets one closes it.
    let closed = settlement
        .close_window(pb::CloseWindowRequest { window_id: 0, currency_code: "USD".into() })
        .await
        .unwrap()
        .into_inner();
    let window = closed.window.unwrap();
    assert_eq!(state(&window), pb::WindowState::Failed);
    assert!(window.reason.contains("bank-b"), "{}", window.reason);
    let error = settlement
        .run_settlement(pb::RunSettlementRequest { window_id: window.window_id })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    let b_settle = ledger.create_account(NewAccount::new("bank-b", "USD")).await.unwrap().id;
    let mut b_profile = profile("011000015", "1000.00");
    b_profile.participant = "bank-b".into();
    b_profile.currencies[0].settlement_account_id = b_settle;
    settlement
        .set_participant_profile(pb::SetParticipantProfileRequest { profile: Some(b_profile) })
        .await
        .unwrap();
    let closed = settlement
        .close_window(pb::CloseWindowRequest { window_id: window.window_id, currency_code: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((state(closed.window.as_ref().unwrap()), closed.changed), (pb::WindowState::Closed, true));
    let missing = settlement.get_window(pb::GetWindowRequest { window_id: 999 }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// The server with the test pause around the settlement run's ledger operation, its stderr
/// in `log`.
struct PausedServer {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl PausedServer {
    fn start(data: &Path, log: &Path) -> PausedServer {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_puente"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "info")
            .env("PUENTE_TEST_SETTLEMENT_PAUSE_MS", "2000")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("server exited").unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        crate::support::bootstrap(&addr, data).expect("bootstrap");
        PausedServer { child, addr, log: log.to_owned() }
    }

    /// Waits until the log holds `needle` `count` times.
    fn wait_for(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.matches(needle).count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the server log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_settlement_run_settles_exactly_once() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    // A window to settle, built with the normal server.
    let (window_id, nets) = {
        let server = Server::start(&data);
        puente(&server.addr, &["simulate", "--seed", "5", "--transfers", "500", "--us", "3", "--mx", "3"]);
        let mut settlement = settlement_client(&server.addr).await;
        let closed = settlement
            .close_window(pb::CloseWindowRequest { window_id: 0, currency_code: "USD".into() })
            .await
            .unwrap()
            .into_inner();
        let window = closed.window.unwrap();
        assert_eq!(state(&window), pb::WindowState::Closed);
        let nets: BTreeMap<String, i128> =
            window.positions.iter().map(|p| (p.participant.clone(), value(&p.net))).collect();
        (window.window_id, nets)
    };
    let participants: Vec<String> = nets.keys().cloned().collect();
    let zero: BTreeMap<String, i128> = nets.keys().map(|p| (p.clone(), 0)).collect();

    // 1. Killed before the ledger operation: nothing was settled; the window is still CLOSED.
    let server = PausedServer::start(&data, &log);
    let addr = server.addr.clone();
    let run = tokio::spawn(async move {
        let mut client = settlement_client(&addr).await;
        client.run_settlement(pb::RunSettlementRequest { window_id }).await
    });
    server.wait_for("test pause before posting", 1);
    server.kill();
    assert!(run.await.unwrap().is_err(), "the run was cut off");
    let server = PausedServer::start(&data, &log);
    let mut client = settlement_client(&server.addr).await;
    let window =
        client.get_window(pb::GetWindowRequest { window_id }).await.unwrap().into_inner().window.unwrap();
    assert_eq!(state(&window), pb::WindowState::Closed);
    assert_eq!(balances(&server.addr, &participants).await, zero);

    // 2. Killed after the ledger operation, before the answer: settled, exactly once.
    let addr = server.addr.clone();
    let run = tokio::spawn(async move {
        let mut client = settlement_client(&addr).await;
        client.run_settlement(pb::RunSettlementRequest { window_id }).await
    });
    server.wait_for("posted; test pause before answering", 1);
    server.kill();
    assert!(run.await.unwrap().is_err(), "the run was cut off");
    let server = Server::start(&data);
    let mut client = settlement_client(&server.addr).await;
    let window =
        client.get_window(pb::GetWindowRequest { window_id }).await.unwrap().into_inner().window.unwrap();
    assert_eq!(state(&window), pb::WindowState::Settling);
    let settled = balances(&server.addr, &participants).await;
    let expected: BTreeMap<String, i128> = nets.iter().map(|(p, n)| (p.clone(), *n)).collect();
    assert_eq!(settled, expected);

    // 3. The operator reruns: nothing changes.
    let rerun = client.run_settlement(pb::RunSettlementRequest { window_id }).await.unwrap().into_inner();
    assert!(!rerun.changed);
    assert_eq!(balances(&server.addr, &participants).await, expected);
    let mut ledger = server.client().await;
    let hub = ledger.list_accounts("puente-hub", 10, "").await.unwrap().accounts;
    assert_eq!(minor(&hub[0].posted_balance), 0);
    for t in &rerun.transfers {
        let lines = crate::support::all_lines(&mut ledger, &t.settlement_account_id).await;
        assert_eq!(lines.len(), 1, "one settlement entry for {}", t.participant);
    }
}

/// The posted balances of the participants' USD settlement accounts.
async fn balances(addr: &str, participants: &[String]) -> BTreeMap<String, i128> {
    let mut ledger = crate::support::operator_client(addr).await;
    let mut out = BTreeMap::new();
    for p in participants {
        let account = ledger.get_account(&sim_account(p, "USD", "settlement")).await.unwrap();
        out.insert(p.clone(), minor(&account.posted_balance));
    }
    out
}

/// The settlement account `puente simulate` opens (same derivation as src/cli/simulate.rs).
pub fn sim_account(participant: &str, currency: &str, role: &str) -> String {
    puente_settlement::simulated_account_id(participant, currency, role)
}

/// One FX cover per cutoff through the real server: two FX executions put the house long USD
/// and short MXN; closing both windows (one cutoff) plans the house's one conversion, signed
/// with the FX desk's key; running both windows records it on the ledger (the house's MXN
/// settlement account back at exactly zero, its USD one holding net − sold); reruns and later
/// reports, after the rate moved, return the same cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fx_cover_per_cutoff() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let mut settlement = settlement_client(&server.addr).await;
    crate::support::participant(&mut client, "remit-app").await;
    crate::support::participant(&mut client, "mx-bank").await;
    let funding =
        client.create_account(NewAccount::new("remit-app", "USD").holder_ref("funding")).await.unwrap();
    let sender = client
        .create_account(NewAccount::new("remit-app", "USD").no_overdraft().holder_ref("ana"))
        .await
        .unwrap();
    let recipient =
        client.create_account(NewAccount::new("mx-bank", "MXN").holder_ref("luis")).await.unwrap();
    let remit_settle =
        client.create_account(NewAccount::new("remit-app", "USD").holder_ref("settlement")).await.unwrap();
    let mx_settle =
        client.create_account(NewAccount::new("mx-bank", "MXN").holder_ref("settlement")).await.unwrap();
    client.transfer(NewTransfer::new(&funding.id, &sender.id, "USD", "1000.00")).await.unwrap();
    for (participant, country, currency, rail, bank_id, account) in [
        ("remit-app", pb::Country::Us, "USD", pb::SettlementRail::Fedwire, "021000021", &remit_settle.id),
        ("mx-bank", pb::Country::Mx, "MXN", pb::SettlementRail::Spei, "002180000000000012", &mx_settle.id),
    ] {
        settlement
            .set_participant_profile(pb::SetParticipantProfileRequest {
                profile: Some(pb::ParticipantProfile {
                    participant: participant.into(),
                    name: participant.into(),
                    bic: String::new(),
                    country: country as i32,
                    currencies: vec![pb::CurrencySettlement {
                        currency_code: currency.into(),
                        rail: rail as i32,
                        bank_id: bank_id.into(),
                        net_debit_cap: "100000.00".into(),
                        settlement_account_id: account.clone(),
                    }],
                    update_time: None,
                }),
            })
            .await
            .unwrap();
    }
    // The house's profile is the system's: nobody sets it, and it is there.
    let house = settlement
        .get_participant_profile(pb::GetParticipantProfileRequest { participant: "puente-house".into() })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert_eq!(house.currencies.len(), 2, "{house:?}");
    let mut claimed = house.clone();
    claimed.currencies[0].net_debit_cap = "1.00".into();
    let error = settlement
        .set_participant_profile(pb::SetParticipantProfileRequest { profile: Some(claimed) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");

    // Two remittances (SME: posted at once): the house collects USD and pays out MXN.
    client.set_rate("USD", "MXN", "18.50", "test").await.unwrap();
    for send in ["200.00", "150.00"] {
        let quote = client
            .quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", puente_client::Fixed::Send(send))
            .await
            .unwrap();
        client.execute_quote(&quote, &sender.id, &recipient.id, &puente_client::new_id()).await.unwrap();
    }

    // One cutoff: the operator closes both windows.
    let mut ids = BTreeMap::new();
    for currency in ["USD", "MXN"] {
        let closed = settlement
            .close_window(pb::CloseWindowRequest { window_id: 0, currency_code: currency.into() })
            .await
            .unwrap()
            .into_inner();
        let window = closed.window.unwrap();
        assert_eq!(state(&window), pb::WindowState::Closed, "{window:?}");
        ids.insert(currency, window);
    }
    let (usd, mxn) = (&ids["USD"], &ids["MXN"]);
    let net_of = |w: &pb::SettlementWindow| {
        w.positions.iter().find(|p| p.participant == "puente-house").map(|p| value(&p.net)).unwrap()
    };
    let (house_usd, house_mxn) = (net_of(usd), net_of(mxn));
    assert!(house_usd > 0 && house_mxn < 0, "{house_usd} {house_mxn}");

    let reader = settlement.clone();
    let report = |window_id: u64| {
        let mut settlement = reader.clone();
        async move {
            settlement
                .get_settlement_report(pb::GetSettlementReportRequest {
                    window_id,
                    format: pb::ReportFormat::Json as i32,
                    rate_mxn_per_usd: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let planned = report(usd.window_id).await;
    let cover = planned.report.unwrap().fx_cover.expect("the USD window's cutoff has a cover");
    assert_eq!((cover.usd_window_id, cover.mxn_window_id), (usd.window_id, mxn.window_id));
    assert_eq!((cover.status.as_str(), cover.recorded), ("CONVERT", false));
    // The FX desk's mid rate (normalized), not the configured 18.
    assert_eq!(cover.rate_mxn_per_usd, "18.5");
    // Buy exactly the MXN deficit; sell USD rounded up to cover it at the rate.
    let buy = cover.buy.clone().unwrap();
    let sell = cover.sell.clone().unwrap();
    assert_eq!((buy.currency_code.as_str(), minor(&buy.value)), ("MXN", -house_mxn));
    assert_eq!(sell.currency_code, "USD");
    let sold = minor(&sell.value);
    assert!(sold * 1850 >= -house_mxn * 100 && (sold - 1) * 1850 < -house_mxn * 100, "{sold}");
    assert_eq!(cover.remittances_count, 2);
    assert!(cover.saving_usd.parse::<f64>().unwrap() > 0.0, "{cover:?}");
    // Signed like a quote: verifies with the FX desk's public key.
    let keys = client.fx_public_keys().await.unwrap();
    let key = keys.iter().find(|k| k.key_id == cover.signing_key_id).expect("the signing key is served");
    puente_fx::verify_canonical(&key.public_key, &cover.canonical, &cover.signature).unwrap();
    assert!(puente_fx::verify_canonical(&key.public_key, &cover.canonical[1..], &cover.signature).is_err());
    // The MXN window's report shows the same cover; so do the documents.
    let mxn_report = report(mxn.window_id).await;
    assert_eq!(mxn_report.report.unwrap().fx_cover.unwrap().canonical, cover.canonical);
    let json: serde_json::Value = serde_json::from_str(&planned.document).unwrap();
    assert_eq!(json["fx_cover"]["cover"]["status"], "Convert", "{json}");

    // Run: the cover waits for both windows, then is recorded once.
    let run = settlement.run_settlement(pb::RunSettlementRequest { window_id: usd.window_id }).await.unwrap();
    assert_eq!(state(run.into_inner().window.as_ref().unwrap()), pb::WindowState::Settling);
    assert!(!report(usd.window_id).await.report.unwrap().fx_cover.unwrap().recorded);
    let run = settlement
        .run_settlement(pb::RunSettlementRequest { window_id: mxn.window_id })
        .await
        .unwrap()
        .into_inner();
    let house_mxn_account = run
        .transfers
        .iter()
        .find(|t| t.participant == "puente-house")
        .map(|t| t.settlement_account_id.clone())
        .expect("the house settles like any participant");
    let recorded = report(usd.window_id).await.report.unwrap().fx_cover.unwrap();
    assert!(recorded.recorded);
    assert_eq!(
        (recorded.canonical.clone(), recorded.signature.clone()),
        (cover.canonical.clone(), cover.signature.clone())
    );
    // The house's MXN settlement account: −deficit at settlement, +deficit bought: zero.
    assert_eq!(minor(&client.get_account(&house_mxn_account).await.unwrap().posted_balance), 0);

    // The rate moves; reruns and reports still give the recorded cover.
    client.set_rate("USD", "MXN", "20.00", "test").await.unwrap();
    for window_id in [usd.window_id, mxn.window_id] {
        let rerun =
            settlement.run_settlement(pb::RunSettlementRequest { window_id }).await.unwrap().into_inner();
        assert!(!rerun.changed);
        let again = report(window_id).await.report.unwrap().fx_cover.unwrap();
        assert_eq!(again, recorded, "a rerun returns the same cover");
    }
    let table = puente(&server.addr, &["settlement", "report", &usd.window_id.to_string()]);
    assert!(table.contains("FX cover of windows") && table.contains("recorded"), "{table}");
}
