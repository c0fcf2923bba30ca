//! The operator's whole night against the real server, with nobody calling ConfirmSettlement:
//! simulate a day → `settlement run --out-dir` → the settlement banks' documents (camt.053,
//! camt.054, pacs.002; `settlement simulate-bank`, one payment rejected) → `settlement
//! reconcile` → REJECTED, then the payment resent and reconciled again → SETTLED. A document
//! that fails its XSD is refused and changes nothing; the same documents twice confirm nothing
//! new. The night's HTML page is rendered in headless Chromium (`--dump-dom`, `--screenshot`):
//! no console message at all (the page has no script, and its Content-Security-Policy turns
//! any outside reference into one), a real screenshot, and every key number in the page equal
//! to the server's JSON report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use puente_client::pb;

use crate::support::{Server, temp_dir};

/// The browser (Debian's `chromium`; `scripts/test` installs it when missing). Never skipped.
fn chromium() -> String {
    std::env::var("PUENTE_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

/// Flags for a headless Chromium that stays off the network and keeps no state.
fn chromium_command(profile: &Path) -> Command {
    let mut command = Command::new("timeout");
    command.arg("120").arg(chromium()).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
        "--enable-logging=stderr",
        "--v=0",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Renders `page`: (the DOM after load, the console messages Chromium logged).
fn render(page: &Path, scratch: &Path) -> (String, Vec<String>) {
    let profile = tempfile::tempdir_in(scratch).unwrap();
    let output = chromium_command(profile.path())
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test installs chromium): {e}", chromium()));
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    let console = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8(output.stdout).unwrap(), console)
}

/// Takes a screenshot of `page` into `png`; returns its width and height.
fn screenshot(page: &Path, png: &Path, scratch: &Path) -> (u32, u32) {
    let profile = tempfile::tempdir_in(scratch).unwrap();
    let output = chromium_command(profile.path())
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    let bytes = std::fs::read(png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // A page of text and charts, not a blank: a blank 1280x900 PNG is a few kilobytes.
    assert!(bytes.len() > 30_000, "screenshot of {} bytes looks empty", bytes.len());
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// The start tag and the text of the element with `id` in `dom`.
fn element<'a>(dom: &'a str, id: &str) -> (&'a str, &'a str) {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no element {id} in the page"));
    let end = at + dom[at..].find('>').unwrap();
    let start = dom[..at].rfind('<').unwrap();
    let text_end = end + 1 + dom[end + 1..].find('<').unwrap();
    (&dom[start..=end], &dom[end + 1..text_end])
}

fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let at = tag.find(&key).unwrap_or_else(|| panic!("no {name} in {tag}")) + key.len();
    &tag[at..at + tag[at..].find('"').unwrap()]
}

fn cli(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_puente"))
        .arg("--server")
        .arg(addr)
        .env("PUENTE_API_KEY_FILE", crate::support::key_file_for(addr))
        .args(args)
        .output()
        .unwrap()
}

fn ok(addr: &str, args: &[&str]) -> String {
    let output = cli(addr, args);
    assert!(
        output.status.success(),
        "puente {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn files_in(dirs: &[&Path]) -> Vec<String> {
    let mut files: Vec<String> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".xml"))
        .collect();
    files.sort();
    files
}

/// Reconciles `files` (JSON out): (exit success, the reconciliation).
fn reconcile(addr: &str, files: &[String], out_dir: &Path) -> (bool, serde_json::Value) {
    let mut args = vec!["--json", "settlement", "reconcile", "--out-dir", out_dir.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let output = cli(addr, &args);
    let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), value)
}

async fn windows(addr: &str) -> BTreeMap<u64, pb::SettlementWindow> {
    let mut settlement = crate::support::operator_client(addr).await.settlement();
    let mut out = BTreeMap::new();
    for w in settlement.list_windows(pb::ListWindowsRequest::default()).await.unwrap().into_inner().windows {
        let full = settlement.get_window(pb::GetWindowRequest { window_id: w.window_id }).await.unwrap();
        out.insert(w.window_id, full.into_inner().window.unwrap());
    }
    out
}

fn state_of(w: &pb::SettlementWindow) -> pb::WindowState {
    pb::WindowState::try_from(w.state).unwrap()
}

fn xmllint(file: &str) {
    let name = Path::new(file).file_name().unwrap().to_str().unwrap();
    let xsd = if name.starts_with("camt053") {
        "camt.053.001.08.xsd"
    } else if name.starts_with("camt054") {
        "camt.054.001.08.xsd"
    } else {
        "pacs.002.001.11.xsd"
    };
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/iso20022").join(xsd);
    let output = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(schema)
        .arg(file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{file}: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_night_settles_from_the_banks_documents_and_reads_in_a_browser() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let addr = server.addr.clone();
    ok(&addr, &["simulate", "--seed", "21", "--transfers", "600", "--us", "3", "--mx", "3"]);
    let night = dir.path().join("night");
    let text = ok(&addr, &["settlement", "run", "--out-dir", night.to_str().unwrap()]);
    assert!(text.contains("report.html"), "{text}");
    let settling: Vec<pb::SettlementWindow> =
        windows(&addr).await.into_values().filter(|w| state_of(w) == pb::WindowState::Settling).collect();
    assert_eq!(settling.len(), 2, "{settling:?}");
    let usd = settling.iter().find(|w| w.currency_code == "USD").unwrap().window_id;
    let mxn = settling.iter().find(|w| w.currency_code == "MXN").unwrap().window_id;

    // The banks answer: every payment settles, except USD payment 1 (closed account).
    let bank1 = dir.path().join("bank1");
    let b1 = bank1.to_str().unwrap();
    ok(
        &addr,
        &[
            "settlement",
            "simulate-bank",
            &usd.to_string(),
            "--out-dir",
            b1,
            "--reject",
            "1:AC04:Closed account",
        ],
    );
    ok(&addr, &["settlement", "simulate-bank", &mxn.to_string(), "--out-dir", b1]);
    let first = files_in(&[&bank1]);
    assert_eq!(first.len(), 6, "{first:?}");
    first.iter().for_each(|f| xmllint(f));

    // A document that fails its schema is refused with the schema error; nothing changes.
    let broken = dir.path().join("broken-pacs002.xml");
    let pacs = first.iter().find(|f| f.contains("pacs002")).unwrap();
    let text = std::fs::read_to_string(pacs).unwrap();
    let msg_id = &text[text.find("<MsgId>").unwrap()..text.find("</MsgId>").unwrap() + "</MsgId>".len()];
    std::fs::write(&broken, text.replacen(msg_id, "", 1)).unwrap();
    let before = windows(&addr).await;
    let mut args = vec!["settlement", "reconcile"];
    args.extend(first.iter().map(String::as_str));
    args.push(broken.to_str().unwrap());
    let refused = cli(&addr, &args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("DOCUMENT_INVALID") && stderr.contains("broken-pacs002.xml"), "{stderr}");
    assert!(stderr.contains("MsgId") && stderr.contains("pacs.002.001.11.xsd"), "{stderr}");
    assert_eq!(windows(&addr).await, before, "a refused reconciliation changes nothing");

    // Reconcile: the MXN window settles; the USD one is REJECTED, and the parties of the
    // rejected payment stay unconfirmed while everyone else is confirmed.
    let rejected_dir = dir.path().join("rejected");
    let (success, outcome) = reconcile(&addr, &first, &rejected_dir);
    assert!(!success, "exceptions make the command fail: {outcome}");
    let exceptions = outcome["exceptions"].as_array().unwrap();
    assert_eq!(exceptions.len(), 1, "{outcome}");
    assert_eq!(exceptions[0]["kind"], "REJECTED");
    assert_eq!(exceptions[0]["end_to_end_id"], format!("PUENTE-W{usd}-1"));
    let now = windows(&addr).await;
    assert_eq!(state_of(&now[&mxn]), pb::WindowState::Settled);
    assert_eq!(state_of(&now[&usd]), pb::WindowState::Rejected);
    assert!(now[&usd].reason.contains("AC04"), "{:?}", now[&usd].reason);
    let payer = exceptions[0]["payer"].as_str().unwrap();
    let payee = exceptions[0]["payee"].as_str().unwrap();
    for p in &now[&usd].positions {
        let blocked = p.participant == payer || p.participant == payee;
        assert_eq!(p.confirmed, !blocked, "{p:?}");
    }
    let rejected_page = rejected_dir.join("report.html");
    assert!(rejected_page.exists());

    // The same documents again confirm nothing new.
    let (_, again) = reconcile(&addr, &first, &dir.path().join("again"));
    for w in again["windows"].as_array().unwrap() {
        assert!(w["confirmed_now"].as_array().unwrap().is_empty(), "{again}");
    }
    assert_eq!(windows(&addr).await, now);

    // The payment is resent and settles; fed in with the night's earlier documents, the later
    // evidence wins and the window settles. No ConfirmSettlement was called by hand.
    let bank2 = dir.path().join("bank2");
    ok(&addr, &["settlement", "simulate-bank", &usd.to_string(), "--out-dir", bank2.to_str().unwrap()]);
    let all = files_in(&[&bank1, &bank2]);
    let final_dir = dir.path().join("final");
    let (success, outcome) = reconcile(&addr, &all, &final_dir);
    assert!(success, "{outcome}");
    assert!(outcome["exceptions"].as_array().unwrap().is_empty(), "{outcome}");
    let now = windows(&addr).await;
    assert_eq!(state_of(&now[&usd]), pb::WindowState::Settled);
    assert!(now[&usd].positions.iter().all(|p| p.confirmed));
    // Once settled, the whole night's documents again: nothing to do, nothing to report (the
    // rejection was superseded).
    let (success, again) = reconcile(&addr, &all, &dir.path().join("settled-again"));
    assert!(success && again["exceptions"].as_array().unwrap().is_empty(), "{again}");
    assert!(again["windows"].as_array().unwrap().is_empty(), "{again}");

    // `report --format html` makes the same page for one window, with the exceptions of a saved
    // reconciliation.
    let saved = rejected_dir.join("reconciliation.json");
    let html = ok(
        &addr,
        &[
            "settlement",
            "report",
            &usd.to_string(),
            "--format",
            "html",
            "--reconciliation",
            saved.to_str().unwrap(),
        ],
    );
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains(&format!("id=\"w{usd}-gross\"")) && !html.contains(&format!("id=\"w{mxn}-gross\""))
    );
    assert!(html.contains("data-kind=\"REJECTED\""));

    // The pages in a browser. First a page that must trip the console check (so the check is
    // known to work), then the night with its exception, then the settled night.
    let scratch = dir.path().join("browser");
    std::fs::create_dir_all(&scratch).unwrap();
    let control = scratch.join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">\
         </head><body><img src=\"http://127.0.0.1:9/x.png\"></body></html>",
    )
    .unwrap();
    let (_, console) = render(&control, &scratch);
    assert!(!console.is_empty(), "the console check must see a blocked load");

    let (dom, console) = render(&rejected_page, &scratch);
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert_eq!(attribute(element(&dom, "verdict").0, "data-state"), "ATTENTION");
    assert_eq!(attribute(element(&dom, "exceptions-count").0, "data-value"), "1");
    assert_eq!(attribute(element(&dom, "exception-0").0, "data-kind"), "REJECTED");
    assert_eq!(attribute(element(&dom, &format!("w{usd}-state")).0, "data-value"), "REJECTED");

    let page = final_dir.join("report.html");
    let (width, height) = screenshot(&page, &scratch.join("night.png"), &scratch);
    assert_eq!((width, height), (1280, 900));
    let (dom, console) = render(&page, &scratch);
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert_eq!(attribute(element(&dom, "verdict").0, "data-state"), "SETTLED");
    assert_eq!(attribute(element(&dom, "exceptions-count").0, "data-value"), "0");
    // Every key number equals the server's JSON report.
    let (mut gross_fees, mut actual_fees) = (0u128, 0u128);
    let mut head_seq = 0;
    for window in [usd, mxn] {
        let json: serde_json::Value =
            serde_json::from_str(&ok(&addr, &["--json", "settlement", "report", &window.to_string()]))
                .unwrap();
        let figures = &json["netting"]["currencies"][0];
        let currency = json["currency"].as_str().unwrap();
        for (id, key) in [
            ("gross", "gross_value_minor"),
            ("net", "multilateral_net_value_minor"),
            ("cross-border", "cross_border_payments_value_minor"),
        ] {
            let (tag, text) = element(&dom, &format!("w{window}-{id}"));
            let minor = figures[key].as_u64().unwrap();
            assert_eq!(attribute(tag, "data-minor"), minor.to_string(), "w{window}-{id}");
            assert_eq!(attribute(tag, "data-currency"), currency);
            // Shown with thousands separators: the same digits.
            assert_eq!(
                text.replace(',', ""),
                format!("{}.{:02}", minor / 100, minor % 100),
                "w{window}-{id}"
            );
        }
        let (tag, _) = element(&dom, &format!("w{window}-efficiency-bps"));
        assert_eq!(attribute(tag, "data-value"), figures["multilateral_efficiency_bps"].to_string());
        let (tag, _) = element(&dom, &format!("w{window}-payments"));
        assert_eq!(attribute(tag, "data-value"), json["payments"].as_array().unwrap().len().to_string());
        // The JSON names states as Rust does ("Settled"), the page as the API does ("SETTLED").
        let state = json["state"].as_str().unwrap().to_ascii_uppercase();
        assert_eq!(attribute(element(&dom, &format!("w{window}-state")).0, "data-value"), state);
        for p in json["positions"].as_array().unwrap() {
            let (tag, _) = element(&dom, &format!("w{window}-p-{}-net", p["participant"].as_str().unwrap()));
            assert_eq!(attribute(tag, "data-minor"), p["net_minor"].to_string());
        }
        for p in json["payments"].as_array().unwrap() {
            let (tag, _) = element(&dom, &format!("w{window}-pay-{}", p["index"]));
            assert_eq!(attribute(tag, "data-minor"), p["amount_minor"].to_string());
        }
        gross_fees += json["netting"]["totals"]["gross_bank_fees_usd_minor"].as_u64().unwrap() as u128;
        actual_fees += json["netting"]["totals"]["actual_bank_fees_usd_minor"].as_u64().unwrap() as u128;
        head_seq = head_seq.max(json["journal_chain_head"]["seq"].as_u64().unwrap());
    }
    let (tag, text) = element(&dom, "fee-saving");
    let saving = gross_fees - actual_fees;
    assert_eq!(attribute(tag, "data-minor"), saving.to_string());
    assert_eq!(text.replace(',', ""), format!("{}.{:02}", saving / 100, saving % 100));
    assert_eq!(attribute(element(&dom, "fee-gross").0, "data-minor"), gross_fees.to_string());
    // Nothing was written since the page was made: the same journal chain head.
    assert_eq!(attribute(element(&dom, "chain-seq").0, "data-value"), head_seq.to_string());
    assert!(dom.contains("id=\"fx-cover\""));
}
