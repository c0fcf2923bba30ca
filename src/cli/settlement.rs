//! `puente settlement ...`: settlement profiles, windows, the settlement run, reports, payments
//! (pacs.009), statements (camt.053) and confirmations, over `puente.v1.SettlementService`.
//!
//! Size: every `puente settlement` subcommand with its table and JSON output (~800 lines);
//! reconciliation already has its own file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use puente_client::{ClientError, pb};
use serde_json::{Value, json};

use super::{CliError, Output, time_text};

pub type SettlementClient =
    pb::settlement_service_client::SettlementServiceClient<puente_client::AuthChannel>;

/// Windows with more participants than this get a progress bar while their files are written.
const PROGRESS_PARTICIPANTS_MIN: usize = 8;

#[derive(Subcommand, Debug)]
pub enum SettlementCommand {
    /// List settlement windows (oldest first).
    Windows {
        /// Only this currency.
        #[arg(long)]
        currency: Option<String>,
        /// Only this state: open, closing, closed, settling, settled, rejected, aborted, failed.
        #[arg(long)]
        state: Option<String>,
        /// Rows per page (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Token from the previous page (`next page:` line) to continue from.
        #[arg(long, default_value = "", hide_default_value = true)]
        page_token: String,
    },
    /// Show one window with every participant's position.
    Show {
        /// Window id.
        window: u64,
    },
    /// Close a window (the next one opens at once). Give the window id to make a retry safe;
    /// with --currency the currently open window of that currency is looked up first.
    Close {
        /// The window to close.
        #[arg(long, conflicts_with = "currency")]
        window: Option<u64>,
        /// Close the open window of this currency.
        #[arg(long)]
        currency: Option<String>,
    },
    /// Settle a closed window: post every net position in one atomic ledger operation. With
    /// --out-dir, also write the pacs.009 payments, CSV/JSON, every participant's camt.053 and
    /// report.html (the night as one page).
    /// Without a window: the nightly batch: close every open window that has obligations, then
    /// settle every CLOSED or ABORTED window (fails if any window ends FAILED or ABORTED).
    Run {
        /// Window id (CLOSED, or ABORTED/REJECTED to retry).
        window: Option<u64>,
        /// Write pacs009.xml, payments.csv, payments.json, report.json, report.csv and
        /// camt053-<participant>.xml here.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// The window's netting and savings report: a table, or --json / --csv. Every format ends
    /// with the journal's chain head when the report was generated (`journal chain head: seq N
    /// <hex>`), to check later with `puente verify`.
    Report {
        /// Window id.
        window: u64,
        /// CSV (long format) instead of a table.
        #[arg(long)]
        csv: bool,
        /// table, csv, json or html (one self-contained page; see also --reconciliation).
        #[arg(long)]
        format: Option<String>,
        /// With --format html: show the exceptions of this reconciliation.json
        /// (`reconcile --out-dir` writes it).
        #[arg(long)]
        reconciliation: Option<PathBuf>,
        /// MXN per USD for USD figures [default: the server's].
        #[arg(long)]
        rate: Option<String>,
    },
    /// The window's settlement payments: a table, or --format pacs009|csv|json.
    Payments {
        /// Window id.
        window: u64,
        /// Output: table, json, csv or pacs009 (ISO 20022 XML).
        #[arg(long)]
        format: Option<String>,
    },
    /// A participant's camt.053 statement for a settled window.
    Statement {
        /// Window id (SETTLING, REJECTED or SETTLED).
        window: u64,
        /// Participant whose settlement account statement (camt.053) to print.
        participant: String,
    },
    /// Record that a participant's settlement completed (--all: every participant).
    Confirm {
        /// Window id (SETTLING).
        window: u64,
        /// Participant whose settlement payment arrived.
        #[arg(long, required_unless_present = "all")]
        participant: Option<String>,
        /// Confirm every participant of the window.
        #[arg(long)]
        all: bool,
    },
    /// Settlement profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Reconcile the settlement banks' documents (camt.053 / camt.054 of the hub's accounts,
    /// pacs.002): confirm every participant all of whose payments matched, and report the
    /// exceptions (table, --json, --csv; exits non-zero when there are any).
    Reconcile(super::reconcile::ReconcileArgs),
    /// Write what the settlement bank of a settled window would send back (camt.053, camt.054,
    /// pacs.002), optionally with rejected payments: for demos and tests.
    SimulateBank(super::reconcile::SimulateBankArgs),
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Set a participant's settlement profile (at least one of the USD or MXN groups).
    Set(Box<ProfileArgs>),
    /// Show a profile with the participant's net debit positions.
    Get {
        /// Participant id.
        participant: String,
    },
    /// List every profile.
    List,
}

#[derive(clap::Args, Debug)]
pub struct ProfileArgs {
    /// Participant id.
    #[arg(long)]
    participant: String,
    /// us or mx.
    #[arg(long)]
    country: String,
    /// Legal name shown in payments and statements [default: the participant id].
    #[arg(long, default_value = "", hide_default_value = true)]
    name: String,
    /// The participant's BIC (8 or 11 characters), if it has one.
    #[arg(long, default_value = "", hide_default_value = true)]
    bic: String,
    /// fedwire or ach-directo-mexico.
    #[arg(long, default_value = "fedwire")]
    usd_rail: String,
    /// ABA routing number.
    #[arg(long)]
    usd_aba: Option<String>,
    /// Net Debit Cap in USD, e.g. 250000.00.
    #[arg(long)]
    usd_net_debit_cap: Option<String>,
    /// The USD settlement account (UUID).
    #[arg(long)]
    usd_account: Option<String>,
    /// CLABE.
    #[arg(long)]
    mxn_clabe: Option<String>,
    /// Net Debit Cap in MXN.
    #[arg(long)]
    mxn_net_debit_cap: Option<String>,
    /// The MXN settlement account (UUID).
    #[arg(long)]
    mxn_account: Option<String>,
}

/// Connects to the settlement service.
pub async fn connect(
    server: &str,
    options: &puente_client::ConnectOptions,
) -> Result<SettlementClient, CliError> {
    let channel = puente_client::channel(server, options).await?;
    Ok(SettlementClient::new(channel)
        .max_decoding_message_size(puente_client::MESSAGE_BYTES_MAX)
        .max_encoding_message_size(puente_client::MESSAGE_BYTES_MAX))
}

fn status(error: tonic::Status) -> CliError {
    CliError::from(ClientError::from(error))
}

pub fn state_name(state: i32) -> &'static str {
    match pb::WindowState::try_from(state) {
        Ok(pb::WindowState::Open) => "OPEN",
        Ok(pb::WindowState::Closing) => "CLOSING",
        Ok(pb::WindowState::Closed) => "CLOSED",
        Ok(pb::WindowState::Settling) => "SETTLING",
        Ok(pb::WindowState::Settled) => "SETTLED",
        Ok(pb::WindowState::Aborted) => "ABORTED",
        Ok(pb::WindowState::Failed) => "FAILED",
        Ok(pb::WindowState::Rejected) => "REJECTED",
        _ => "UNSPECIFIED",
    }
}

fn parse_state(text: &str) -> Result<pb::WindowState, CliError> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "open" => pb::WindowState::Open,
        "closing" => pb::WindowState::Closing,
        "closed" => pb::WindowState::Closed,
        "settling" => pb::WindowState::Settling,
        "settled" => pb::WindowState::Settled,
        "aborted" => pb::WindowState::Aborted,
        "failed" => pb::WindowState::Failed,
        "rejected" => pb::WindowState::Rejected,
        other => {
            return Err(CliError::Usage(format!(
                "--state {other:?}: open, closing, closed, settling, settled, rejected, aborted or failed"
            )));
        }
    })
}

fn money(m: &Option<pb::Money>) -> String {
    m.as_ref().map(|m| m.value.clone()).unwrap_or_default()
}

fn window_json(w: &pb::SettlementWindow) -> Value {
    json!({
        "window_id": w.window_id, "currency": w.currency_code, "state": state_name(w.state),
        "open_time": time_text(&w.open_time), "close_time": time_text(&w.close_time),
        "settle_time": time_text(&w.settle_time), "complete_time": time_text(&w.complete_time),
        "first_position": w.first_position, "last_position": w.last_position,
        "obligation_count": w.obligation_count, "gross_value": money(&w.gross_value),
        "attempts": w.attempts, "reason": w.reason,
        "positions": w.positions.iter().map(|p| json!({
            "participant": p.participant, "paid": money(&p.paid), "received": money(&p.received),
            "paid_count": p.paid_count, "received_count": p.received_count, "net": money(&p.net),
            "confirmed": p.confirmed,
        })).collect::<Vec<_>>(),
    })
}

fn window_rows(windows: &[pb::SettlementWindow]) -> String {
    let mut out = format!(
        "{:>6}  {:<3}  {:<9}  {:>11}  {:>20}  {:<27}  {:<27}  {}\n",
        "ID", "CCY", "STATE", "OBLIGATIONS", "GROSS", "OPENED", "CLOSED", "REASON"
    );
    for w in windows {
        out.push_str(&format!(
            "{:>6}  {:<3}  {:<9}  {:>11}  {:>20}  {:<27}  {:<27}  {}\n",
            w.window_id,
            w.currency_code,
            state_name(w.state),
            w.obligation_count,
            money(&w.gross_value),
            time_text(&w.open_time),
            time_text(&w.close_time),
            w.reason
        ));
    }
    out
}

fn positions_rows(w: &pb::SettlementWindow) -> String {
    let mut out = window_rows(std::slice::from_ref(w));
    if !w.positions.is_empty() {
        out.push_str(&format!(
            "\n{:<24}  {:>18}  {:>18}  {:>18}  {:>9}\n",
            "PARTICIPANT", "PAID", "RECEIVED", "NET", "CONFIRMED"
        ));
        for p in &w.positions {
            out.push_str(&format!(
                "{:<24}  {:>18}  {:>18}  {:>18}  {:>9}\n",
                p.participant,
                money(&p.paid),
                money(&p.received),
                money(&p.net),
                if p.confirmed { "yes" } else { "no" }
            ));
        }
    }
    out
}

fn changed_text(changed: bool) -> &'static str {
    if changed { "" } else { " (unchanged: already done)" }
}

pub async fn run(
    client: &mut SettlementClient,
    command: SettlementCommand,
    out: &Output,
) -> Result<(), CliError> {
    match command {
        SettlementCommand::Windows { currency, state, page_size, page_token } => {
            list_windows(client, currency, state, page_size, page_token, out).await?
        }
        SettlementCommand::Show { window } => {
            let w = client
                .get_window(pb::GetWindowRequest { window_id: window })
                .await
                .map_err(status)?
                .into_inner();
            let w = w.window.unwrap_or_default();
            out.print(window_json(&w), || positions_rows(&w));
        }
        SettlementCommand::Close { window, currency } => close(client, window, currency, out).await?,
        SettlementCommand::Run { window: Some(window), out_dir } => {
            run_window(client, window, out_dir, out).await?
        }
        SettlementCommand::Run { window: None, out_dir } => run_all(client, out_dir, out).await?,
        SettlementCommand::Report { format: Some(format), window, reconciliation, .. }
            if format.eq_ignore_ascii_case("html") =>
        {
            let reconciliation = read_reconciliation(reconciliation)?;
            print!("{}", super::reconcile::night_html(client, &[window], reconciliation.as_ref()).await?);
        }
        SettlementCommand::Report { window, csv, rate, format, .. } => {
            print_report(client, window, csv, rate, format, out).await?
        }
        SettlementCommand::Payments { window, format } => {
            let format = payment_format(format.as_deref(), out)?;
            let request = pb::ListSettlementPaymentsRequest { window_id: window, format: format as i32 };
            let payments = client.list_settlement_payments(request).await.map_err(status)?.into_inner();
            print!("{}", payments.document);
        }
        SettlementCommand::Statement { window, participant } => {
            let request = pb::GetSettlementStatementRequest { window_id: window, participant };
            let statement = client.get_settlement_statement(request).await.map_err(status)?.into_inner();
            print!("{}", statement.document);
        }
        SettlementCommand::Confirm { window, participant, all } => {
            confirm(client, window, participant, all, out).await?
        }
        SettlementCommand::Profile(command) => profile(client, command, out).await?,
        SettlementCommand::Reconcile(args) => super::reconcile::reconcile(client, args, out).await?,
        SettlementCommand::SimulateBank(args) => super::reconcile::simulate_bank(client, args, out).await?,
    }
    Ok(())
}

/// The reconciliation whose exceptions `report --format html` shows (`--reconciliation`).
fn read_reconciliation(
    path: Option<PathBuf>,
) -> Result<Option<puente_settlement::reconcile::Reconciliation>, CliError> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
            Some(serde_json::from_str::<puente_settlement::reconcile::Reconciliation>(&text).map_err(
                |e| CliError::Usage(format!("{}: not a reconciliation.json: {e}", path.display())),
            )?)
        }
        None => None,
    })
}

/// `puente settlement report` as a table, CSV or JSON (`--format`, else `--csv` or `--json`).
async fn print_report(
    client: &mut SettlementClient,
    window: u64,
    csv: bool,
    rate: Option<String>,
    format: Option<String>,
    out: &Output,
) -> Result<(), CliError> {
    let (csv, json) = match format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => (csv, out.json),
        Some("csv") => (true, false),
        Some("json") => (false, true),
        Some("table") => (false, false),
        Some(other) => {
            return Err(CliError::Usage(format!("--format {other:?}: table, csv, json or html")));
        }
    };
    let format = if json {
        pb::ReportFormat::Json
    } else if csv {
        pb::ReportFormat::Csv
    } else {
        pb::ReportFormat::Table
    };
    let request = pb::GetSettlementReportRequest {
        window_id: window,
        format: format as i32,
        rate_mxn_per_usd: rate.unwrap_or_default(),
    };
    let report = client.get_settlement_report(request).await.map_err(status)?.into_inner();
    print!("{}", report.document);
    if !report.document.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// The format of `puente settlement payments` (`--format`, else JSON with `--json`, else CSV).
fn payment_format(format: Option<&str>, out: &Output) -> Result<pb::PaymentFormat, CliError> {
    Ok(match format {
        None if out.json => pb::PaymentFormat::Json,
        None => pb::PaymentFormat::Csv,
        Some("pacs009" | "pacs.009" | "xml") => pb::PaymentFormat::Pacs009,
        Some("csv") => pb::PaymentFormat::Csv,
        Some("json") => pb::PaymentFormat::Json,
        Some(other) => {
            return Err(CliError::Usage(format!("--format {other:?}: pacs009, csv or json")));
        }
    })
}

/// Lists windows (a page).
async fn list_windows(
    client: &mut SettlementClient,
    currency: Option<String>,
    state: Option<String>,
    page_size: i32,
    page_token: String,
    out: &Output,
) -> Result<(), CliError> {
    let request = pb::ListWindowsRequest {
        currency_code: currency.unwrap_or_default(),
        state: match state {
            Some(s) => parse_state(&s)? as i32,
            None => 0,
        },
        page_size,
        page_token,
    };
    let page = client.list_windows(request).await.map_err(status)?.into_inner();
    let value = json!({
        "windows": page.windows.iter().map(window_json).collect::<Vec<_>>(),
        "next_page_token": page.next_page_token,
    });
    out.print(value, || {
        let mut text = window_rows(&page.windows);
        if !page.next_page_token.is_empty() {
            text.push_str(&format!("next page: --page-token {}\n", page.next_page_token));
        }
        text
    });
    Ok(())
}

/// Closes a window (by id, or the open one of a currency) and nets it.
async fn close(
    client: &mut SettlementClient,
    window: Option<u64>,
    currency: Option<String>,
    out: &Output,
) -> Result<(), CliError> {
    let window_id = match (window, currency) {
        (Some(id), _) => id,
        (None, Some(currency)) => {
            // Look the open window up first, so that a retry of this command closes the
            // same window (and finds it closed) rather than the next one.
            let request = pb::ListWindowsRequest {
                currency_code: currency.clone(),
                state: pb::WindowState::Open as i32,
                page_size: 1,
                page_token: String::new(),
            };
            let open = client.list_windows(request).await.map_err(status)?.into_inner();
            open.windows
                .first()
                .map(|w| w.window_id)
                .ok_or_else(|| CliError::Client(format!("no open {currency} window")))?
        }
        (None, None) => return Err(CliError::Usage("give --window ID or --currency CCY".into())),
    };
    let spinner = spinner(&format!("closing window {window_id} and netting it"));
    let closed = client
        .close_window(pb::CloseWindowRequest { window_id, currency_code: String::new() })
        .await
        .map_err(status);
    spinner.finish_and_clear();
    let closed = closed?.into_inner();
    let w = closed.window.clone().unwrap_or_default();
    let mut value = window_json(&w);
    value["changed"] = json!(closed.changed);
    value["next_window_id"] = json!(closed.next_window_id);
    out.print(value, || {
        format!(
            "window {} is {}{}{}; window {} is open\n",
            w.window_id,
            state_name(w.state),
            if w.reason.is_empty() { String::new() } else { format!(" ({})", w.reason) },
            changed_text(closed.changed),
            closed.next_window_id
        )
    });
    Ok(())
}

/// Settles one window (and writes the night's documents with --out-dir).
async fn run_window(
    client: &mut SettlementClient,
    window: u64,
    out_dir: Option<PathBuf>,
    out: &Output,
) -> Result<(), CliError> {
    let (value, mut text, state, reason) = run_one(client, window, out_dir.as_deref()).await?;
    if let Some(dir) = &out_dir
        && matches!(state, pb::WindowState::Settling | pb::WindowState::Settled)
    {
        text.push_str(&write_night(client, &[window], dir).await?);
    }
    out.print(value, || text);
    if state == pb::WindowState::Aborted {
        return Err(CliError::Client(format!("settlement of window {window} aborted: {reason}")));
    }
    Ok(())
}

/// The nightly run: closes every open window with obligations (and retries CLOSING or FAILED
/// ones), then settles every CLOSED or ABORTED window, oldest first.
async fn run_all(
    client: &mut SettlementClient,
    out_dir: Option<PathBuf>,
    out: &Output,
) -> Result<(), CliError> {
    let mut values = Vec::new();
    let mut texts = String::new();
    let mut failures = Vec::new();
    let list = |state: pb::WindowState| pb::ListWindowsRequest {
        state: state as i32,
        page_size: 1000,
        ..Default::default()
    };
    let mut to_close: Vec<pb::SettlementWindow> =
        client.list_windows(list(pb::WindowState::Open)).await.map_err(status)?.into_inner().windows;
    to_close.retain(|w| w.obligation_count > 0);
    // A close cut short by a crash (CLOSING) or refused earlier (FAILED) is retried.
    for state in [pb::WindowState::Closing, pb::WindowState::Failed] {
        to_close.extend(client.list_windows(list(state)).await.map_err(status)?.into_inner().windows);
    }
    for w in &to_close {
        let request = pb::CloseWindowRequest { window_id: w.window_id, currency_code: String::new() };
        let closed = client.close_window(request).await.map_err(status)?.into_inner();
        let c = closed.window.unwrap_or_default();
        texts.push_str(&format!(
            "closed window {} ({}): {}\n",
            c.window_id,
            c.currency_code,
            state_name(c.state)
        ));
        if c.state == pb::WindowState::Failed as i32 {
            failures.push(format!("window {} FAILED: {}", c.window_id, c.reason));
        }
    }
    let mut ready =
        client.list_windows(list(pb::WindowState::Closed)).await.map_err(status)?.into_inner().windows;
    ready.extend(
        client.list_windows(list(pb::WindowState::Aborted)).await.map_err(status)?.into_inner().windows,
    );
    ready.sort_by_key(|w| w.window_id);
    for w in ready {
        let dir = out_dir.as_ref().map(|d| d.join(format!("window-{}", w.window_id)));
        let (value, text, state, reason) = run_one(client, w.window_id, dir.as_deref()).await?;
        values.push(value);
        texts.push_str(&text);
        if state == pb::WindowState::Aborted {
            failures.push(format!("window {} ABORTED: {reason}", w.window_id));
        }
    }
    if values.is_empty() {
        texts.push_str("no window to settle\n");
    } else if let Some(dir) = &out_dir {
        let settled: Vec<u64> = values
            .iter()
            .filter(|v| matches!(v["window"]["state"].as_str(), Some("SETTLING" | "SETTLED")))
            .filter_map(|v| v["window"]["window_id"].as_u64())
            .collect();
        if !settled.is_empty() {
            texts.push_str(&write_night(client, &settled, dir).await?);
        }
    }
    out.print(json!({"runs": values, "failures": failures}), || texts);
    if !failures.is_empty() {
        return Err(CliError::Client(failures.join("; ")));
    }
    Ok(())
}

/// Records that participants' settlements completed (one, or every one of the window).
async fn confirm(
    client: &mut SettlementClient,
    window: u64,
    participant: Option<String>,
    all: bool,
    out: &Output,
) -> Result<(), CliError> {
    let participants = if all {
        let w = client.get_window(pb::GetWindowRequest { window_id: window }).await.map_err(status)?;
        w.into_inner().window.unwrap_or_default().positions.into_iter().map(|p| p.participant).collect()
    } else {
        participant.into_iter().collect::<Vec<_>>()
    };
    let mut last = None;
    let mut changed = Vec::new();
    for participant in participants {
        let request = pb::ConfirmSettlementRequest { window_id: window, participant: participant.clone() };
        let response = client.confirm_settlement(request).await.map_err(status)?.into_inner();
        changed.push(json!({"participant": participant, "changed": response.changed}));
        last = response.window;
    }
    let w = last.unwrap_or_default();
    let value = json!({"window": window_json(&w), "confirmations": changed});
    out.print(value, || format!("window {} is {}\n", w.window_id, state_name(w.state)));
    Ok(())
}

/// Settles one window (and writes its documents into `out_dir`): (JSON, text, state, reason).
async fn run_one(
    client: &mut SettlementClient,
    window: u64,
    out_dir: Option<&Path>,
) -> Result<(Value, String, pb::WindowState, String), CliError> {
    let spinner = spinner(&format!("settling window {window}"));
    let result = client.run_settlement(pb::RunSettlementRequest { window_id: window }).await.map_err(status);
    spinner.finish_and_clear();
    let result = result?.into_inner();
    let w = result.window.clone().unwrap_or_default();
    let state = pb::WindowState::try_from(w.state).unwrap_or(pb::WindowState::Unspecified);
    let mut files = Vec::new();
    if let Some(dir) = out_dir
        && matches!(state, pb::WindowState::Settling | pb::WindowState::Rejected | pb::WindowState::Settled)
    {
        files = write_outputs(client, &w, dir).await?;
    }
    let value = json!({
        "window": window_json(&w),
        "changed": result.changed,
        "transfers": result.transfers.iter().map(|t| json!({
            "participant": t.participant, "transfer_id": t.transfer_id,
            "settlement_account_id": t.settlement_account_id, "net": money(&t.net),
        })).collect::<Vec<_>>(),
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    });
    let mut text = format!(
        "window {} ({}) is {}{}{}\n",
        w.window_id,
        w.currency_code,
        state_name(w.state),
        if w.reason.is_empty() { String::new() } else { format!(" ({})", w.reason) },
        changed_text(result.changed)
    );
    if !result.transfers.is_empty() {
        text.push_str(&format!(
            "\n{:<24}  {:>18}  {:<36}  {}\n",
            "PARTICIPANT", "NET", "TRANSFER", "SETTLEMENT ACCOUNT"
        ));
        for t in &result.transfers {
            text.push_str(&format!(
                "{:<24}  {:>18}  {:<36}  {}\n",
                t.participant,
                money(&t.net),
                t.transfer_id,
                t.settlement_account_id
            ));
        }
    }
    for f in &files {
        text.push_str(&format!("wrote {}\n", f.display()));
    }
    Ok((value, text, state, w.reason))
}

/// Writes `dir/report.html`, the night of `windows`; returns the line to print.
async fn write_night(client: &mut SettlementClient, windows: &[u64], dir: &Path) -> Result<String, CliError> {
    let html = super::reconcile::night_html(client, windows, None).await?;
    std::fs::create_dir_all(dir).map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
    let path = dir.join("report.html");
    std::fs::write(&path, html).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    Ok(format!("wrote {}\n", path.display()))
}

fn spinner(message: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner().with_message(message.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// Writes the window's documents into `dir`, with a progress bar on large windows.
async fn write_outputs(
    client: &mut SettlementClient,
    w: &pb::SettlementWindow,
    dir: &Path,
) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
    let participants: Vec<String> = w.positions.iter().map(|p| p.participant.clone()).collect();
    let steps = 5 + participants.len() as u64;
    let bar = if participants.len() >= PROGRESS_PARTICIPANTS_MIN {
        let style = ProgressStyle::with_template("{msg:<28} [{bar:40}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        ProgressBar::new(steps).with_style(style)
    } else {
        ProgressBar::hidden()
    };
    let mut files = Vec::new();
    let mut write = |name: &str, text: &str| -> Result<(), CliError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        files.push(path);
        Ok(())
    };
    let window_id = w.window_id;
    bar.set_message("payments");
    for (name, format) in [
        ("pacs009.xml", pb::PaymentFormat::Pacs009),
        ("payments.csv", pb::PaymentFormat::Csv),
        ("payments.json", pb::PaymentFormat::Json),
    ] {
        let request = pb::ListSettlementPaymentsRequest { window_id, format: format as i32 };
        let document = client.list_settlement_payments(request).await.map_err(status)?.into_inner().document;
        if !document.is_empty() {
            write(name, &document)?;
        }
        bar.inc(1);
    }
    bar.set_message("report");
    for (name, format) in [("report.json", pb::ReportFormat::Json), ("report.csv", pb::ReportFormat::Csv)] {
        let request = pb::GetSettlementReportRequest {
            window_id,
            format: format as i32,
            rate_mxn_per_usd: String::new(),
        };
        let document = client.get_settlement_report(request).await.map_err(status)?.into_inner().document;
        write(name, &document)?;
        bar.inc(1);
    }
    bar.set_message("statements (camt.053)");
    for participant in participants {
        let request = pb::GetSettlementStatementRequest { window_id, participant: participant.clone() };
        let document = client.get_settlement_statement(request).await.map_err(status)?.into_inner().document;
        write(&format!("camt053-{participant}.xml"), &document)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(files)
}

fn profile_json(p: &pb::ParticipantProfile) -> Value {
    json!({
        "participant": p.participant, "name": p.name, "bic": p.bic,
        "country": match pb::Country::try_from(p.country) { Ok(pb::Country::Us) => "US", Ok(pb::Country::Mx) => "MX", _ => "" },
        "currencies": p.currencies.iter().map(|c| json!({
            "currency": c.currency_code,
            "rail": match pb::SettlementRail::try_from(c.rail) {
                Ok(pb::SettlementRail::Fedwire) => "FEDWIRE",
                Ok(pb::SettlementRail::AchDirectoMexico) => "ACH_DIRECTO_MEXICO",
                Ok(pb::SettlementRail::Spei) => "SPEI",
                _ => "",
            },
            "bank_id": c.bank_id, "net_debit_cap": c.net_debit_cap,
            "settlement_account_id": c.settlement_account_id,
        })).collect::<Vec<_>>(),
        "update_time": time_text(&p.update_time),
    })
}

/// The profile that `puente settlement profile set` asks for: at least one of the USD or MXN
/// groups, complete.
fn profile_from_args(args: ProfileArgs) -> Result<pb::ParticipantProfile, CliError> {
    let country = match args.country.to_ascii_lowercase().as_str() {
        "us" => pb::Country::Us,
        "mx" => pb::Country::Mx,
        other => return Err(CliError::Usage(format!("--country {other:?}: us or mx"))),
    };
    let mut currencies = Vec::new();
    if let (Some(aba), Some(cap), Some(account)) = (args.usd_aba, args.usd_net_debit_cap, args.usd_account) {
        let rail = match args.usd_rail.to_ascii_lowercase().replace('_', "-").as_str() {
            "fedwire" => pb::SettlementRail::Fedwire,
            "ach-directo-mexico" | "ach" => pb::SettlementRail::AchDirectoMexico,
            other => {
                return Err(CliError::Usage(format!("--usd-rail {other:?}: fedwire or ach-directo-mexico")));
            }
        };
        currencies.push(pb::CurrencySettlement {
            currency_code: "USD".into(),
            rail: rail as i32,
            bank_id: aba,
            net_debit_cap: cap,
            settlement_account_id: account,
        });
    }
    if let (Some(clabe), Some(cap), Some(account)) =
        (args.mxn_clabe, args.mxn_net_debit_cap, args.mxn_account)
    {
        currencies.push(pb::CurrencySettlement {
            currency_code: "MXN".into(),
            rail: pb::SettlementRail::Spei as i32,
            bank_id: clabe,
            net_debit_cap: cap,
            settlement_account_id: account,
        });
    }
    if currencies.is_empty() {
        return Err(CliError::Usage(
            "give --usd-aba, --usd-net-debit-cap and --usd-account, and/or the --mxn-* group".into(),
        ));
    }
    Ok(pb::ParticipantProfile {
        participant: args.participant,
        name: args.name,
        bic: args.bic,
        country: country as i32,
        currencies,
        update_time: None,
    })
}

/// The table of `puente settlement profile list`.
fn profiles_table(profiles: &[pb::ParticipantProfile]) -> String {
    let mut text = format!("{:<24}  {:<3}  {:<12}  {}\n", "PARTICIPANT", "CTY", "BIC", "CURRENCIES");
    for p in profiles {
        let v = profile_json(p);
        text.push_str(&format!(
            "{:<24}  {:<3}  {:<12}  {}\n",
            p.participant,
            v["country"].as_str().unwrap_or(""),
            p.bic,
            p.currencies
                .iter()
                .map(|c| format!("{} (cap {})", c.currency_code, c.net_debit_cap))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text
}

async fn profile(
    client: &mut SettlementClient,
    command: ProfileCommand,
    out: &Output,
) -> Result<(), CliError> {
    match command {
        ProfileCommand::Set(args) => {
            let profile = profile_from_args(*args)?;
            let request = pb::SetParticipantProfileRequest { profile: Some(profile) };
            let stored = client.set_participant_profile(request).await.map_err(status)?.into_inner();
            let p = stored.profile.unwrap_or_default();
            out.print(profile_json(&p), || format!("profile of {} set\n", p.participant));
        }
        ProfileCommand::Get { participant } => {
            let request = pb::GetParticipantProfileRequest { participant };
            let response = client.get_participant_profile(request).await.map_err(status)?.into_inner();
            let p = response.profile.unwrap_or_default();
            let mut value = profile_json(&p);
            value["net_debit_positions"] = json!(
                response
                    .net_debit_positions
                    .iter()
                    .map(|m| json!({"currency": m.currency_code, "value": m.value}))
                    .collect::<Vec<_>>()
            );
            out.print(value.clone(), || {
                format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default())
            });
        }
        ProfileCommand::List => {
            let response = client
                .list_participant_profiles(pb::ListParticipantProfilesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let value = json!(response.profiles.iter().map(profile_json).collect::<Vec<_>>());
            out.print(value, || profiles_table(&response.profiles));
        }
    }
    Ok(())
}
