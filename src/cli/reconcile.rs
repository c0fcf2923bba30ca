//! `puente settlement reconcile FILE…` (the banks' camt.053 / camt.054 / pacs.002 in,
//! confirmations and exceptions out), `puente settlement simulate-bank` (what a settlement bank
//! would send back, for demos and tests), and the night's HTML report (`report --format html`,
//! `run --out-dir`, `reconcile --out-dir`).

use std::path::{Path, PathBuf};

use puente_client::pb;
use puente_settlement::html::{Night, NightWindow};
use puente_settlement::reconcile::{
    DOCUMENT_BYTES_MAX, DOCUMENTS_MAX, RECONCILIATION_BYTES_MAX, Reconciliation,
};
use puente_settlement::{SettlementPayment, SettlementReport};
use serde_json::json;

use super::settlement::SettlementClient;
use super::{CliError, Output};

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// The banks' documents: camt.053 statements and camt.054 notifications of the hub's
    /// accounts, pacs.002 status reports. Give every document of the windows concerned
    /// (earlier ones too): the evidence is weighed across them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Decide and report, but confirm nothing.
    #[arg(long)]
    dry_run: bool,
    /// The exceptions as CSV instead of a table.
    #[arg(long)]
    csv: bool,
    /// Also write reconciliation.json, exceptions.csv and report.html (the night, with the
    /// exceptions) here.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SimulateBankArgs {
    /// A SETTLING (or later) window.
    window: u64,
    /// Where to write camt053-*.xml, camt054-*.xml and pacs002-*.xml.
    #[arg(long)]
    out_dir: PathBuf,
    /// Reject this payment (its index; optionally an ISO reason code and text:
    /// `2:AC04:Closed account`). Repeatable.
    #[arg(long)]
    reject: Vec<String>,
    /// The hub's account as the bank names it [default: the hub's ledger account id].
    #[arg(long)]
    hub_account: Option<String>,
}

fn status(error: tonic::Status) -> CliError {
    CliError::from(puente_client::ClientError::from(error))
}

fn io(path: &Path, error: std::io::Error) -> CliError {
    CliError::Usage(format!("{}: {error}", path.display()))
}

/// The bank documents in `files` (at most [`DOCUMENTS_MAX`], each and all within their size
/// bounds).
fn read_documents(files: &[PathBuf]) -> Result<Vec<pb::BankDocument>, CliError> {
    if files.len() > DOCUMENTS_MAX {
        return Err(CliError::Usage(format!("at most {DOCUMENTS_MAX} documents in one reconciliation")));
    }
    let mut documents = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for path in files {
        let size = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
        if size > DOCUMENT_BYTES_MAX as u64 {
            return Err(CliError::Usage(format!(
                "{}: {size} bytes, more than the {DOCUMENT_BYTES_MAX} accepted",
                path.display()
            )));
        }
        total += size;
        if total > RECONCILIATION_BYTES_MAX as u64 {
            return Err(CliError::Usage(format!(
                "more than {RECONCILIATION_BYTES_MAX} bytes of documents in one reconciliation"
            )));
        }
        let content = std::fs::read(path).map_err(|e| io(path, e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        documents.push(pb::BankDocument { name, content });
    }
    Ok(documents)
}

/// `puente settlement reconcile`.
pub async fn reconcile(
    client: &mut SettlementClient,
    args: ReconcileArgs,
    out: &Output,
) -> Result<(), CliError> {
    let documents = read_documents(&args.files)?;
    let request = pb::ReconcileStatementsRequest {
        documents,
        dry_run: args.dry_run,
        format: pb::ReportFormat::Json as i32,
    };
    let response = client.reconcile_statements(request).await.map_err(status)?.into_inner();
    let outcome: Reconciliation = serde_json::from_str(&response.document)
        .map_err(|e| CliError::Client(format!("unreadable reconciliation from the server: {e}")))?;
    let mut files = Vec::new();
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut write = |name: &str, text: &str| -> Result<(), CliError> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
            files.push(path);
            Ok(())
        };
        write("reconciliation.json", &response.document)?;
        write("exceptions.csv", &outcome.exceptions_csv())?;
        let mut windows: Vec<u64> = outcome.windows.iter().map(|w| w.window_id).collect();
        windows.extend(&outcome.named_windows);
        windows.sort_unstable();
        windows.dedup();
        let html = night_html(client, &windows, Some(&outcome)).await?;
        write("report.html", &html)?;
    }
    if args.csv && !out.json {
        print!("{}", outcome.exceptions_csv());
    } else {
        let mut value: serde_json::Value = serde_json::from_str(&response.document).unwrap_or_default();
        value["files"] = json!(files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>());
        out.print(value, || {
            let mut text = outcome.to_table();
            for f in &files {
                text.push_str(&format!("wrote {}\n", f.display()));
            }
            text
        });
    }
    if !outcome.exceptions.is_empty() {
        return Err(CliError::Client(format!(
            "{} reconciliation exceptions (participants with unmatched payments stay unconfirmed)",
            outcome.exceptions.len()
        )));
    }
    Ok(())
}

/// Decimals of a currency, read from a decimal amount the server formatted.
fn scale_of(money: &Option<pb::Money>) -> u32 {
    money.as_ref().and_then(|m| m.value.split_once('.')).map(|(_, f)| f.len() as u32).unwrap_or(0)
}

/// The chain head the report document carries beside the report's own fields (read apart:
/// serde's `flatten` cannot carry the report's u128 amounts).
#[derive(serde::Deserialize)]
struct ReportHead {
    journal_chain_head: ChainHead,
}

#[derive(serde::Deserialize)]
struct ChainHead {
    seq: u64,
    sha256: String,
}

/// One window's report as the server computes it (JSON document), its scale and chain head.
pub async fn window_report(
    client: &mut SettlementClient,
    window: u64,
) -> Result<(NightWindow, (u64, String)), CliError> {
    let request = pb::GetSettlementReportRequest {
        window_id: window,
        format: pb::ReportFormat::Json as i32,
        rate_mxn_per_usd: String::new(),
    };
    let response = client.get_settlement_report(request).await.map_err(status)?.into_inner();
    let scale = scale_of(&response.report.as_ref().and_then(|r| r.gross_value.clone()));
    let unreadable =
        |e: serde_json::Error| CliError::Client(format!("unreadable report of window {window}: {e}"));
    let report: SettlementReport = serde_json::from_str(&response.document).map_err(unreadable)?;
    let head: ReportHead = serde_json::from_str(&response.document).map_err(unreadable)?;
    Ok((NightWindow { report, scale }, (head.journal_chain_head.seq, head.journal_chain_head.sha256)))
}

/// The night's HTML page for `windows` (with the latest chain head of their reports).
pub async fn night_html(
    client: &mut SettlementClient,
    windows: &[u64],
    reconciliation: Option<&Reconciliation>,
) -> Result<String, CliError> {
    let mut reports = Vec::with_capacity(windows.len());
    let mut head = None;
    for window in windows {
        let (report, window_head) = window_report(client, *window).await?;
        reports.push(report);
        head = Some(window_head);
    }
    Ok(puente_settlement::html::render(&Night {
        generated_ns: puente_ledger::now_ns(),
        windows: &reports,
        reconciliation,
        chain_head: head,
    }))
}

/// The payments `--reject INDEX[:CODE[:TEXT]]` rejects (the bank's reason code and text,
/// NARR and a plain text if not given); each must be a payment of the window.
fn parse_rejections(
    specs: &[String],
    window: u64,
    payments: &[SettlementPayment],
) -> Result<Vec<(u32, String, String)>, CliError> {
    let mut rejected = Vec::new();
    for spec in specs {
        let mut parts = spec.splitn(3, ':');
        let index = parts.next().and_then(|i| i.parse::<u32>().ok()).ok_or_else(|| {
            CliError::Usage(format!("--reject {spec:?}: INDEX[:CODE[:TEXT]], e.g. 2:AC04:Closed account"))
        })?;
        if !payments.iter().any(|p| p.index == index) {
            return Err(CliError::Usage(format!(
                "--reject {spec:?}: window {} has no payment {index}",
                window
            )));
        }
        let code = parts.next().unwrap_or("NARR").to_owned();
        let text = parts.next().unwrap_or("Rejected by the settlement bank").to_owned();
        rejected.push((index, code, text));
    }
    Ok(rejected)
}

/// `puente settlement simulate-bank`.
pub async fn simulate_bank(
    client: &mut SettlementClient,
    args: SimulateBankArgs,
    out: &Output,
) -> Result<(), CliError> {
    let window = client
        .get_window(pb::GetWindowRequest { window_id: args.window })
        .await
        .map_err(status)?
        .into_inner()
        .window
        .unwrap_or_default();
    let currency = puente_money::CurrencyCode::parse(&window.currency_code)
        .map_err(|e| CliError::Client(format!("window {}: {e}", args.window)))?;
    let request =
        pb::ListSettlementPaymentsRequest { window_id: args.window, format: pb::PaymentFormat::Json as i32 };
    let response = client.list_settlement_payments(request).await.map_err(status)?.into_inner();
    let payments: Vec<SettlementPayment> = serde_json::from_str(&response.document)
        .map_err(|e| CliError::Client(format!("unreadable payments of window {}: {e}", args.window)))?;
    let rejected = parse_rejections(&args.reject, args.window, &payments)?;
    let hub_id = puente_ledger::settlement::hub_account_id(currency);
    let at = puente_ledger::now_ns();
    let from = window.settle_time.map(|t| t.seconds.max(0) as u64 * 1_000_000_000).unwrap_or(at).min(at);
    let scale = scale_of(&window.gross_value);
    let mut docs = puente_settlement::bank::simulate(
        args.window,
        currency,
        scale,
        hub_id,
        &payments,
        &rejected,
        from,
        at,
    );
    if let Some(account) = &args.hub_account {
        let hex = format!("{hub_id:032x}");
        docs.camt053 = docs.camt053.replace(&hex, &puente_settlement::xml::escape(account));
        docs.camt054 = docs.camt054.replace(&hex, &puente_settlement::xml::escape(account));
    }
    std::fs::create_dir_all(&args.out_dir).map_err(|e| io(&args.out_dir, e))?;
    let mut files = Vec::new();
    let w = args.window;
    let mut outputs = vec![
        (format!("camt053-hub-{currency}-w{w}.xml"), docs.camt053),
        (format!("camt054-hub-{currency}-w{w}.xml"), docs.camt054),
    ];
    if let Some(pacs) = docs.pacs002 {
        outputs.push((format!("pacs002-w{w}.xml"), pacs));
    }
    for (name, text) in outputs {
        let path = args.out_dir.join(name);
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        files.push(path.display().to_string());
    }
    out.print(
        json!({"window_id": w, "payments": payments.len(), "rejected": rejected.len(), "files": files}),
        || files.iter().map(|f| format!("wrote {f}\n")).collect(),
    );
    Ok(())
}
