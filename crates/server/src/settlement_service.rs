//! `puente.v1.SettlementService`: settlement profiles, windows, the settlement run, reports,
//! payments (pacs.009) and statements (camt.053). State changes go through the ledger's single
//! writer (`Ledger::settlement`); reports and documents are computed by `puente-settlement`.
//! Also the cutoff scheduler that closes windows at a wall-clock time in a named time zone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::grpc::settlement_service_server::SettlementService;
use puente_ledger::Ledger;
use puente_ledger::settlement::{
    self as st, Country, CurrencyProfile, ParticipantProfile, SettlementRail, SettlementRefusal,
    SettlementRequest, SettlementResponse, WindowId, WindowState, WindowView,
};
use puente_money::{CurrencyCode, CurrencyTable};
use puente_netting::FeeModel;
use puente_proto::v1 as pb;
use puente_settlement::schedule::Cutoff;
use puente_settlement::xml::{StatementEntry, StatementInput};
use puente_settlement::{SettlementReport, build_report};
use rust_decimal::Decimal;
use tonic::{Code, Request, Response, Status};
use tonic_types::ErrorDetails;

use crate::auth;
use crate::convert::{self, format_id, timestamp};
use crate::error::{ApiError, Violation, check};

/// Environment variable (tests only): milliseconds to pause before and after the ledger
/// operation of a settlement run, so a test can kill the server in the middle of a run.
pub const TEST_PAUSE_ENV: &str = "PUENTE_TEST_SETTLEMENT_PAUSE_MS";
/// Longest accepted test pause.
const TEST_PAUSE_MAX_MS: u64 = 60_000;

/// Settlement configuration (`[settlement]` in the config file).
#[derive(Debug, Clone)]
pub struct SettlementConfig {
    /// Bank fees for the savings report (defaults: `domain.md` §3).
    pub fees: FeeModel,
    /// MXN per USD used to express MXN figures in USD when a request names none.
    pub rate_mxn_per_usd: Decimal,
    /// Close every open window daily at this cutoff (None: only on an operator's command).
    pub cutoff: Option<Cutoff>,
    /// The hub's accounts at its settlement banks, per currency, as the banks' statements name
    /// them (`Acct/Id`); reconciliation matches statements of these accounts only. The hub's
    /// ledger account id (32 hex digits) always counts.
    pub hub_accounts: puente_settlement::reconcile::HubAccounts,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            fees: FeeModel::default(),
            rate_mxn_per_usd: Decimal::new(18, 0),
            cutoff: None,
            hub_accounts: Default::default(),
        }
    }
}

/// The error codes of settlement refusals (used by `error.rs`).
pub fn code_and_reason(refusal: &SettlementRefusal) -> (Code, &'static str) {
    match refusal {
        SettlementRefusal::ProfileInvalid { .. } => (Code::InvalidArgument, "INVALID_FIELD"),
        SettlementRefusal::ProfileNotFound(_) => (Code::NotFound, "PROFILE_NOT_FOUND"),
        SettlementRefusal::WindowNotFound(_) => (Code::NotFound, "WINDOW_NOT_FOUND"),
        SettlementRefusal::NoOpenWindow(_) => (Code::FailedPrecondition, "NO_OPEN_WINDOW"),
        SettlementRefusal::WrongState { .. } => (Code::FailedPrecondition, "WINDOW_STATE_INVALID"),
        SettlementRefusal::ParticipantNotInWindow { .. } => (Code::NotFound, "PARTICIPANT_NOT_IN_WINDOW"),
        SettlementRefusal::MissingProfiles { .. } => (Code::FailedPrecondition, "PROFILE_MISSING"),
    }
}

/// The google.rpc details of a settlement refusal (used by `error.rs`).
pub fn add_details(
    refusal: &SettlementRefusal,
    details: &mut ErrorDetails,
    metadata: &mut std::collections::HashMap<String, String>,
) {
    match refusal {
        SettlementRefusal::ProfileInvalid { field, reason } => {
            details.add_bad_request_violation(format!("profile.{field}"), reason.clone());
        }
        SettlementRefusal::WrongState { window_id, state, .. } => {
            metadata.insert("window_id".into(), window_id.to_string());
            metadata.insert("state".into(), state.code().into());
        }
        SettlementRefusal::WindowNotFound(id) => {
            metadata.insert("window_id".into(), id.to_string());
        }
        SettlementRefusal::MissingProfiles { participants, .. } => {
            metadata.insert("participants".into(), participants.join(",").chars().take(256).collect());
        }
        _ => {}
    }
}

/// Settlement logic shared by the gRPC service and the scheduler.
#[derive(Clone)]
pub struct Settlement {
    ledger: Ledger,
    config: Arc<SettlementConfig>,
    test_pause: Option<Duration>,
}

/// What closing did.
pub struct Closed {
    pub window: WindowView,
    pub changed: bool,
    pub next_window_id: WindowId,
}

impl Settlement {
    pub fn new(ledger: Ledger, config: SettlementConfig) -> Settlement {
        let test_pause = std::env::var(TEST_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| Duration::from_millis(ms.min(TEST_PAUSE_MAX_MS)));
        Settlement { ledger, config: Arc::new(config), test_pause }
    }

    pub fn config(&self) -> &SettlementConfig {
        &self.config
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub(crate) async fn call(&self, request: SettlementRequest) -> Result<SettlementResponse, ApiError> {
        Ok(self.ledger.settlement(request).await??)
    }

    pub(crate) async fn window(&self, request: SettlementRequest) -> Result<(WindowView, bool), ApiError> {
        match self.call(request).await? {
            SettlementResponse::Window { window, changed } => Ok((window, changed)),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn get_window(&self, window_id: WindowId, with_flows: bool) -> Result<WindowView, ApiError> {
        Ok(self.window(SettlementRequest::GetWindow { window_id, with_flows }).await?.0)
    }

    pub async fn profiles(&self) -> Result<BTreeMap<String, ParticipantProfile>, ApiError> {
        match self.call(SettlementRequest::ListProfiles).await? {
            SettlementResponse::Profiles(list) => {
                Ok(list.into_iter().map(|p| (p.participant.clone(), p)).collect())
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn open_window_of(&self, currency: CurrencyCode) -> Result<WindowId, ApiError> {
        let request = SettlementRequest::ListWindows {
            currency: Some(currency),
            state: Some(WindowState::Open),
            after_id: 0,
            limit: 1,
        };
        match self.call(request).await? {
            SettlementResponse::Windows(w) => Ok(w.first().map(|w| w.id).unwrap_or(0)),
            other => Err(unexpected(&other)),
        }
    }

    /// Closes a window: OPEN → CLOSING (the next window opens), then netting, then CLOSED or
    /// FAILED. A window left CLOSING by a crash, or FAILED, is taken up again.
    pub async fn close(
        &self,
        window_id: Option<WindowId>,
        currency: Option<CurrencyCode>,
    ) -> Result<Closed, ApiError> {
        let (mut window, mut changed) =
            self.window(SettlementRequest::CloseWindow { window_id, currency }).await?;
        if matches!(window.state, WindowState::Closing | WindowState::Failed) {
            let detail = self.get_window(window.id, true).await?;
            let profiles = self.profiles().await?;
            let failure = build_report(&detail, &profiles, &self.config.fees, self.config.rate_mxn_per_usd)
                .err()
                .map(|e| format!("netting failed: {e}"));
            let (closed, finished) =
                self.window(SettlementRequest::FinishClose { window_id: window.id, failure }).await?;
            window = closed;
            changed |= finished;
        }
        let next_window_id = self.open_window_of(window.currency).await?;
        tracing::info!(
            window_id = window.id,
            state = window.state.code(),
            changed,
            next_window_id,
            "settlement window closed"
        );
        Ok(Closed { window, changed, next_window_id })
    }

    /// Settles a window (see `RunSettlement`).
    pub async fn run(&self, window_id: WindowId) -> Result<(WindowView, bool), ApiError> {
        let before = self.get_window(window_id, false).await?;
        if let Some(pause) = self.test_pause
            && matches!(before.state, WindowState::Closed | WindowState::Aborted)
        {
            tracing::warn!(window_id, "settlement run: test pause before posting");
            tokio::time::sleep(pause).await;
        }
        let (window, changed) = self.window(SettlementRequest::Settle { window_id }).await?;
        tracing::info!(
            window_id,
            state = window.state.code(),
            changed,
            attempts = window.attempts,
            "settlement run"
        );
        if changed && window.state != WindowState::Aborted {
            self.record_run(window_id).await;
        }
        if let Some(pause) = self.test_pause
            && changed
        {
            tracing::warn!(window_id, "settlement run: posted; test pause before answering");
            tokio::time::sleep(pause).await;
        }
        Ok((window, changed))
    }

    pub async fn report(
        &self,
        window_id: WindowId,
        rate: Option<Decimal>,
    ) -> Result<SettlementReport, ApiError> {
        let window = self.get_window(window_id, true).await?;
        let profiles = self.profiles().await?;
        let rate = rate.unwrap_or(self.config.rate_mxn_per_usd);
        build_report(&window, &profiles, &self.config.fees, rate)
            .map_err(|e| ApiError::Settlement(report_refusal(e)))
    }

    /// Closes every open window (the scheduler's job at each cutoff).
    pub async fn close_all_open(&self) -> Result<Vec<Closed>, ApiError> {
        let request = SettlementRequest::ListWindows {
            currency: None,
            state: Some(WindowState::Open),
            after_id: 0,
            limit: st::WINDOW_PAGE_MAX,
        };
        let open = match self.call(request).await? {
            SettlementResponse::Windows(w) => w,
            other => return Err(unexpected(&other)),
        };
        let mut closed = Vec::new();
        for window in open {
            closed.push(self.close(Some(window.id), None).await?);
        }
        Ok(closed)
    }
}

/// A report that cannot be built is a precondition failure of the window (e.g. a participant
/// without a profile), reported as such.
fn report_refusal(error: puente_settlement::SettlementError) -> SettlementRefusal {
    match error {
        puente_settlement::SettlementError::MissingProfile(participant, currency) => {
            SettlementRefusal::MissingProfiles { window_id: 0, currency, participants: vec![participant] }
        }
        other => SettlementRefusal::ProfileInvalid { field: "window".into(), reason: other.to_string() },
    }
}

pub(crate) fn unexpected(response: &SettlementResponse) -> ApiError {
    ApiError::Ledger(puente_ledger::LedgerError::Storage(format!(
        "unexpected settlement response {response:?}"
    )))
}

/// How often the open-window gauges are refreshed.
const METRICS_REFRESH: Duration = Duration::from_secs(10);

/// The settlement background task: refreshes the open-window metrics every
/// [`METRICS_REFRESH`] and, when a cutoff is configured, closes every open window at each
/// cutoff. Stops when the ledger becomes unhealthy.
pub fn spawn_scheduler(settlement: Settlement) -> Option<tokio::task::JoinHandle<()>> {
    Some(tokio::spawn(async move {
        let cutoff = settlement.config.cutoff.clone();
        let mut next_cutoff = None;
        loop {
            let now = puente_ledger::now_ns();
            if let Some(cutoff) = &cutoff {
                match next_cutoff {
                    Some(at) if at <= now => {
                        match settlement.close_all_open().await {
                            Ok(closed) => {
                                tracing::info!(windows = closed.len(), "settlement cutoff: windows closed")
                            }
                            Err(error) => {
                                tracing::error!(%error, "settlement cutoff failed; retrying at the next one")
                            }
                        }
                        next_cutoff = None;
                        continue;
                    }
                    Some(_) => {}
                    None => match cutoff.next_after(now) {
                        Ok(at) => {
                            let in_s = (at - now) / 1_000_000_000;
                            tracing::info!(zone = cutoff.zone_name(), in_s, "settlement: next cutoff");
                            next_cutoff = Some(at);
                        }
                        Err(error) => tracing::error!(%error, "settlement schedule: no next cutoff"),
                    },
                }
            }
            settlement.refresh_metrics().await;
            let wait =
                next_cutoff.map(|at| Duration::from_nanos(at.saturating_sub(now))).unwrap_or(METRICS_REFRESH);
            tokio::time::sleep(wait.min(METRICS_REFRESH)).await;
            if !settlement.ledger.is_healthy() {
                return;
            }
        }
    }))
}

impl Settlement {
    /// Sets the open-window gauges (`puente_settlement_open_*`).
    pub async fn refresh_metrics(&self) {
        let request = SettlementRequest::ListWindows {
            currency: None,
            state: Some(WindowState::Open),
            after_id: 0,
            limit: st::WINDOW_PAGE_MAX,
        };
        crate::settlement_metrics::refresh(self).await;
        let Ok(SettlementResponse::Windows(open)) = self.call(request).await else { return };
        crate::metrics::set_open_windows(open.len() as u64);
        for w in &open {
            crate::metrics::set_open_window_transfers(w.currency.as_str(), w.obligation_count);
            crate::metrics::set_open_window_gross_minor(w.currency.as_str(), w.gross_value_minor);
        }
    }

    /// Records a settlement run in the metrics (netting efficiency of the window, time).
    async fn record_run(&self, window_id: WindowId) {
        if let Ok(report) = self.report(window_id, None).await {
            let bps = report.netting.currencies.first().map(|c| c.multilateral_efficiency_bps).unwrap_or(0);
            crate::metrics::set_last_netting_run(bps, puente_ledger::now_ns() / 1_000_000_000);
        }
        self.refresh_metrics().await;
    }
}

// ----- journal chain head in reports --------------------------------------------------------

/// The journal's chain head (`Ledger::chain_head`) as reports carry it: settlement reports
/// record it outside the data directory, so `puente verify` can later check the journal up to
/// it (see ARCHITECTURE.md, "Durability").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct ChainHead {
    seq: u64,
    /// Lower-case hex of the SHA-256 chain hash.
    sha256: String,
}

/// A report document with the chain head added at the end (`journal_chain_head`).
#[derive(serde::Serialize)]
struct ReportWithHead<'a> {
    #[serde(flatten)]
    report: &'a SettlementReport,
    journal_chain_head: &'a ChainHead,
}

impl ChainHead {
    fn of(ledger: &Ledger) -> ChainHead {
        let (seq, hash) = ledger.chain_head();
        ChainHead { seq, sha256: puente_ledger::journal::chain_hex(&hash) }
    }

    /// The JSON report plus `"journal_chain_head": {"seq": N, "sha256": "<hex>"}`.
    fn json(&self, report: &SettlementReport) -> Result<String, ApiError> {
        serde_json::to_string_pretty(&ReportWithHead { report, journal_chain_head: self })
            .map_err(|e| ApiError::invalid("format", e.to_string()))
    }

    /// The CSV report plus two `settlement` rows: `journal_chain_seq` and
    /// `journal_chain_sha256`.
    fn csv(&self, report: &SettlementReport) -> String {
        let mut out = report.to_csv();
        let code = report.currency.as_str();
        out.push_str(&format!("settlement,,,{code},journal_chain_seq,{}\n", self.seq));
        out.push_str(&format!("settlement,,,{code},journal_chain_sha256,{}\n", self.sha256));
        out
    }

    /// The table plus a last line `journal chain head: seq N <hex>`.
    fn table(&self, report: &SettlementReport, scale: u32) -> String {
        let mut out = report.to_table(scale);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("journal chain head: seq {} {}\n", self.seq, self.sha256));
        out
    }
}

// ----- wire conversions ----------------------------------------------------------------------

pub(crate) fn money(currencies: &CurrencyTable, code: CurrencyCode, minor: u128) -> pb::Money {
    let value = currencies.get(code).map(|c| c.format_amount(minor)).unwrap_or_else(|_| minor.to_string());
    pb::Money { currency_code: code.to_string(), value }
}

fn signed_money(currencies: &CurrencyTable, code: CurrencyCode, minor: i128) -> pb::Money {
    let value = currencies.get(code).map(|c| c.format_signed(minor)).unwrap_or_else(|_| minor.to_string());
    pb::Money { currency_code: code.to_string(), value }
}

pub(crate) fn scale(currencies: &CurrencyTable, code: CurrencyCode) -> u32 {
    currencies.get(code).map(|c| c.scale).unwrap_or(2)
}

fn state_out(state: WindowState) -> pb::WindowState {
    match state {
        WindowState::Open => pb::WindowState::Open,
        WindowState::Closing => pb::WindowState::Closing,
        WindowState::Closed => pb::WindowState::Closed,
        WindowState::Settling => pb::WindowState::Settling,
        WindowState::Settled => pb::WindowState::Settled,
        WindowState::Aborted => pb::WindowState::Aborted,
        WindowState::Failed => pb::WindowState::Failed,
        WindowState::Rejected => pb::WindowState::Rejected,
    }
}

fn state_in(state: i32) -> Option<WindowState> {
    match pb::WindowState::try_from(state).unwrap_or(pb::WindowState::Unspecified) {
        pb::WindowState::Unspecified => None,
        pb::WindowState::Open => Some(WindowState::Open),
        pb::WindowState::Closing => Some(WindowState::Closing),
        pb::WindowState::Closed => Some(WindowState::Closed),
        pb::WindowState::Settling => Some(WindowState::Settling),
        pb::WindowState::Settled => Some(WindowState::Settled),
        pb::WindowState::Aborted => Some(WindowState::Aborted),
        pb::WindowState::Failed => Some(WindowState::Failed),
        pb::WindowState::Rejected => Some(WindowState::Rejected),
    }
}

fn rail_out(rail: SettlementRail) -> pb::SettlementRail {
    match rail {
        SettlementRail::Fedwire => pb::SettlementRail::Fedwire,
        SettlementRail::AchDirectoMexico => pb::SettlementRail::AchDirectoMexico,
        SettlementRail::Spei => pb::SettlementRail::Spei,
    }
}

fn country_out(country: Country) -> pb::Country {
    match country {
        Country::Us => pb::Country::Us,
        Country::Mx => pb::Country::Mx,
    }
}

pub(crate) fn window_out(
    w: &WindowView,
    currencies: &CurrencyTable,
    with_positions: bool,
) -> pb::SettlementWindow {
    let c = w.currency;
    pb::SettlementWindow {
        window_id: w.id,
        currency_code: c.to_string(),
        state: state_out(w.state) as i32,
        open_time: timestamp(w.opened_at_ns),
        close_time: timestamp(w.closed_at_ns),
        settle_time: timestamp(w.settled_at_ns),
        complete_time: timestamp(w.completed_at_ns),
        first_position: w.first_transfer_ns,
        last_position: w.last_transfer_ns,
        obligation_count: w.obligation_count,
        gross_value: Some(money(currencies, c, w.gross_value_minor)),
        attempts: w.attempts,
        reason: w.reason.clone(),
        positions: if with_positions {
            w.positions
                .iter()
                .map(|p| pb::WindowPosition {
                    participant: p.participant.clone(),
                    paid: Some(money(currencies, c, p.paid_minor)),
                    received: Some(money(currencies, c, p.received_minor)),
                    paid_count: p.paid_count,
                    received_count: p.received_count,
                    net: Some(signed_money(currencies, c, p.net_minor)),
                    confirmed: p.confirmed,
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn profile_out(p: &ParticipantProfile, currencies: &CurrencyTable) -> pb::ParticipantProfile {
    pb::ParticipantProfile {
        participant: p.participant.clone(),
        name: p.name.clone(),
        bic: p.bic.clone(),
        country: country_out(p.country) as i32,
        currencies: p
            .currencies
            .iter()
            .map(|c| pb::CurrencySettlement {
                currency_code: c.currency.to_string(),
                rail: rail_out(c.rail) as i32,
                bank_id: c.bank_id.clone(),
                net_debit_cap: money(currencies, c.currency, u128::from(c.net_debit_cap_minor)).value,
                settlement_account_id: format_id(c.settlement_account_id),
            })
            .collect(),
        update_time: timestamp(p.updated_at_ns),
    }
}

fn profile_in(
    p: &pb::ParticipantProfile,
    currencies: &CurrencyTable,
    violations: &mut Vec<Violation>,
) -> ParticipantProfile {
    let country = match pb::Country::try_from(p.country).unwrap_or(pb::Country::Unspecified) {
        pb::Country::Us => Country::Us,
        pb::Country::Mx => Country::Mx,
        pb::Country::Unspecified => {
            violations.push(Violation::new("profile.country", "required: US or MX"));
            Country::Us
        }
    };
    let mut out = Vec::with_capacity(p.currencies.len());
    for (i, c) in p.currencies.iter().enumerate() {
        let field = |name: &str| format!("profile.currencies[{i}].{name}");
        let currency = match currencies.lookup(&c.currency_code) {
            Ok(currency) => Some(currency),
            Err(error) => {
                violations.push(Violation::new(field("currency_code"), error.to_string()));
                None
            }
        };
        let rail = match pb::SettlementRail::try_from(c.rail).unwrap_or(pb::SettlementRail::Unspecified) {
            pb::SettlementRail::Fedwire => SettlementRail::Fedwire,
            pb::SettlementRail::AchDirectoMexico => SettlementRail::AchDirectoMexico,
            pb::SettlementRail::Spei => SettlementRail::Spei,
            pb::SettlementRail::Unspecified => {
                violations
                    .push(Violation::new(field("rail"), "required: FEDWIRE, ACH_DIRECTO_MEXICO or SPEI"));
                SettlementRail::Fedwire
            }
        };
        let cap = match currency {
            Some(currency) => currency.parse_amount(&c.net_debit_cap).unwrap_or_else(|error| {
                violations.push(Violation::new(field("net_debit_cap"), error.to_string()));
                0
            }),
            None => 0,
        };
        let account =
            convert::required_id(&c.settlement_account_id, &field("settlement_account_id"), violations);
        out.push(CurrencyProfile {
            currency: currency.map(|c| c.code).unwrap_or(CurrencyCode::USD),
            rail,
            bank_id: c.bank_id.clone(),
            net_debit_cap_minor: cap,
            settlement_account_id: account,
        });
    }
    let profile = ParticipantProfile {
        participant: p.participant.clone(),
        name: p.name.clone(),
        bic: p.bic.clone(),
        country,
        currencies: out,
        updated_at_ns: 0,
    };
    for v in puente_settlement::profile::validate_profile(&profile) {
        let field = format!("profile.{}", v.field);
        if !violations.iter().any(|existing| existing.field == field) {
            violations.push(Violation::new(field, v.description));
        }
    }
    profile
}

fn parse_currency(
    text: &str,
    field: &str,
    currencies: &CurrencyTable,
    violations: &mut Vec<Violation>,
) -> Option<CurrencyCode> {
    if text.is_empty() {
        return None;
    }
    match currencies.lookup(text) {
        Ok(c) => Some(c.code),
        Err(error) => {
            violations.push(Violation::new(field, error.to_string()));
            None
        }
    }
}

fn required_window(id: u64, violations: &mut Vec<Violation>) -> WindowId {
    if id == 0 {
        violations.push(Violation::new("window_id", "required"));
    }
    id
}

fn usd(minor: u128) -> String {
    puente_settlement::decimal_text(minor, 2)
}

fn usd_signed(minor: i128) -> String {
    puente_settlement::signed_decimal_text(minor, 2)
}

fn report_out(r: &SettlementReport, currencies: &CurrencyTable) -> pb::SettlementReport {
    let c = r.currency;
    let n = &r.netting;
    let figures = n.currencies.iter().find(|x| x.currency == c);
    let t = &n.totals;
    let percent = |p: Option<Decimal>| p.map(|p| p.to_string()).unwrap_or_default();
    pb::SettlementReport {
        window_id: r.window_id,
        currency_code: c.to_string(),
        state: state_out(r.state) as i32,
        gross_count: figures.map(|f| f.gross_count).unwrap_or(0),
        gross_value: Some(money(currencies, c, figures.map(|f| f.gross_value_minor).unwrap_or(0))),
        bilateral_net_value: Some(money(
            currencies,
            c,
            figures.map(|f| f.bilateral_net_value_minor).unwrap_or(0),
        )),
        multilateral_net_value: Some(money(
            currencies,
            c,
            figures.map(|f| f.multilateral_net_value_minor).unwrap_or(0),
        )),
        payments_count: t.payments_count,
        netting_efficiency_bps: figures.map(|f| f.multilateral_efficiency_bps).unwrap_or(0),
        gross_bank_fees_usd: usd(t.gross_bank_fees_usd_minor),
        actual_bank_fees_usd: usd(t.actual_bank_fees_usd_minor),
        bank_fee_saving_usd: usd_signed(t.bank_fee_saving_usd_minor),
        bank_fee_saving_percent: percent(t.bank_fee_saving_percent),
        total_saving_usd: usd_signed(t.total_saving_usd_minor),
        total_saving_percent: percent(t.total_saving_percent),
        rate_mxn_per_usd: n.rate_mxn_per_usd.to_string(),
        participants: r
            .positions
            .iter()
            .map(|p| {
                let fees = n.participants.iter().find(|f| f.participant.as_str() == p.participant);
                pb::ParticipantSavings {
                    participant: p.participant.clone(),
                    country: country_out(p.country) as i32,
                    net: Some(signed_money(currencies, c, p.net_minor)),
                    obligations_paid_count: fees.map(|f| f.obligations_paid_count).unwrap_or(0),
                    payments_made_count: fees.map(|f| f.payments_made_count).unwrap_or(0),
                    gross_bank_fees_usd: usd(fees.map(|f| f.gross_bank_fees_usd_minor).unwrap_or(0)),
                    actual_bank_fees_usd: usd(fees.map(|f| f.actual_bank_fees_usd_minor).unwrap_or(0)),
                    saving_usd: usd_signed(fees.map(|f| f.bank_fee_saving_usd_minor).unwrap_or(0)),
                    saving_percent: percent(fees.and_then(|f| f.bank_fee_saving_percent)),
                }
            })
            .collect(),
    }
}

/// When a window's documents are dated: its settlement, else its close, else now.
fn document_time(w: &WindowView) -> u64 {
    [w.settled_at_ns, w.closed_at_ns].into_iter().find(|t| *t != 0).unwrap_or_else(puente_ledger::now_ns)
}

// ----- the service ---------------------------------------------------------------------------

pub struct SettlementApi {
    settlement: Settlement,
}

impl SettlementApi {
    pub fn new(settlement: Settlement) -> SettlementApi {
        SettlementApi { settlement }
    }

    fn currencies(&self) -> &CurrencyTable {
        self.settlement.ledger.currencies()
    }
}

#[tonic::async_trait]
impl SettlementService for SettlementApi {
    async fn set_participant_profile(
        &self,
        request: Request<pb::SetParticipantProfileRequest>,
    ) -> Result<Response<pb::SetParticipantProfileResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        let Some(profile) = request.profile else {
            return Err(ApiError::invalid("profile", "required").into());
        };
        let profile = profile_in(&profile, self.currencies(), &mut violations);
        check(violations)?;
        match self.settlement.call(SettlementRequest::SetProfile(profile)).await? {
            SettlementResponse::Profile(p) => Ok(Response::new(pb::SetParticipantProfileResponse {
                profile: Some(profile_out(&p, self.currencies())),
            })),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn get_participant_profile(
        &self,
        request: Request<pb::GetParticipantProfileRequest>,
    ) -> Result<Response<pb::GetParticipantProfileResponse>, Status> {
        let caller = auth::caller(&request)?;
        let participant = auth::named_participant(&caller, &request.into_inner().participant)?;
        if participant.is_empty() {
            return Err(ApiError::invalid("participant", "required").into());
        }
        let profile = match self.settlement.call(SettlementRequest::GetProfile(participant.clone())).await? {
            SettlementResponse::Profile(p) => p,
            other => return Err(unexpected(&other).into()),
        };
        let positions = match self.settlement.call(SettlementRequest::Positions(participant)).await? {
            SettlementResponse::Positions(p) => p,
            other => return Err(unexpected(&other).into()),
        };
        let currencies = self.currencies();
        Ok(Response::new(pb::GetParticipantProfileResponse {
            profile: Some(profile_out(&profile, currencies)),
            net_debit_positions: positions.iter().map(|(c, v)| signed_money(currencies, *c, *v)).collect(),
        }))
    }

    async fn list_participant_profiles(
        &self,
        _request: Request<pb::ListParticipantProfilesRequest>,
    ) -> Result<Response<pb::ListParticipantProfilesResponse>, Status> {
        let profiles = self.settlement.profiles().await?;
        Ok(Response::new(pb::ListParticipantProfilesResponse {
            profiles: profiles.values().map(|p| profile_out(p, self.currencies())).collect(),
        }))
    }

    async fn list_windows(
        &self,
        request: Request<pb::ListWindowsRequest>,
    ) -> Result<Response<pb::ListWindowsResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let mut violations = Vec::new();
        let currency =
            parse_currency(&request.currency_code, "currency_code", self.currencies(), &mut violations);
        let page_size = convert::page_size(request.page_size, "page_size", &mut violations);
        let after_id = if request.page_token.is_empty() {
            0
        } else {
            match request.page_token.strip_prefix('w').and_then(|n| n.parse::<u64>().ok()) {
                Some(id) => id,
                None => {
                    violations.push(Violation::new("page_token", "not a token from a previous response"));
                    0
                }
            }
        };
        check(violations)?;
        let request = SettlementRequest::ListWindows {
            currency,
            state: state_in(request.state),
            after_id,
            limit: page_size,
        };
        let windows = match self.settlement.call(request).await? {
            SettlementResponse::Windows(w) => w,
            other => return Err(unexpected(&other).into()),
        };
        let next_page_token = match windows.last() {
            Some(last) if windows.len() == page_size => format!("w{}", last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListWindowsResponse {
            windows: windows
                .iter()
                .map(|w| window_for(&caller, window_out(w, self.currencies(), false)))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_window(
        &self,
        request: Request<pb::GetWindowRequest>,
    ) -> Result<Response<pb::GetWindowResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut violations = Vec::new();
        let window_id = required_window(request.into_inner().window_id, &mut violations);
        check(violations)?;
        let mut window = self.settlement.get_window(window_id, false).await?;
        // A participant sees the window and its own position only.
        if let Some(own) = caller.scope() {
            window.positions.retain(|p| p.participant == own);
        }
        Ok(Response::new(pb::GetWindowResponse {
            window: Some(window_for(&caller, window_out(&window, self.currencies(), true))),
        }))
    }

    async fn close_window(
        &self,
        request: Request<pb::CloseWindowRequest>,
    ) -> Result<Response<pb::CloseWindowResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        let currency =
            parse_currency(&request.currency_code, "currency_code", self.currencies(), &mut violations);
        if request.window_id == 0 && currency.is_none() {
            violations.push(Violation::new("window_id", "a window id or a currency_code is required"));
        }
        check(violations)?;
        let window_id = (request.window_id != 0).then_some(request.window_id);
        let closed = self.settlement.close(window_id, currency).await?;
        Ok(Response::new(pb::CloseWindowResponse {
            window: Some(window_out(&closed.window, self.currencies(), true)),
            changed: closed.changed,
            next_window_id: closed.next_window_id,
        }))
    }

    async fn run_settlement(
        &self,
        request: Request<pb::RunSettlementRequest>,
    ) -> Result<Response<pb::RunSettlementResponse>, Status> {
        let mut violations = Vec::new();
        let window_id = required_window(request.into_inner().window_id, &mut violations);
        check(violations)?;
        let (window, changed) = self.settlement.run(window_id).await?;
        let currencies = self.currencies();
        let mut transfers = Vec::new();
        if matches!(window.state, WindowState::Settling | WindowState::Rejected | WindowState::Settled) {
            let profiles = self.settlement.profiles().await?;
            for p in window.positions.iter().filter(|p| p.net_minor != 0) {
                let account = profiles
                    .get(&p.participant)
                    .and_then(|pr| pr.currency(window.currency))
                    .map(|c| format_id(c.settlement_account_id))
                    .unwrap_or_default();
                transfers.push(pb::SettlementTransfer {
                    participant: p.participant.clone(),
                    transfer_id: format_id(window.settlement_transfer_id(&p.participant)),
                    settlement_account_id: account,
                    net: Some(signed_money(currencies, window.currency, p.net_minor)),
                });
            }
        }
        Ok(Response::new(pb::RunSettlementResponse {
            window: Some(window_out(&window, currencies, true)),
            changed,
            transfers,
        }))
    }

    async fn get_settlement_report(
        &self,
        request: Request<pb::GetSettlementReportRequest>,
    ) -> Result<Response<pb::GetSettlementReportResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        let window_id = required_window(request.window_id, &mut violations);
        let rate = if request.rate_mxn_per_usd.is_empty() {
            None
        } else {
            match request.rate_mxn_per_usd.parse::<Decimal>() {
                Ok(rate) if rate > Decimal::ZERO => Some(rate),
                _ => {
                    violations.push(Violation::new("rate_mxn_per_usd", "a positive decimal, e.g. 18.25"));
                    None
                }
            }
        };
        check(violations)?;
        let report = self.settlement.report(window_id, rate).await?;
        // Read after the report's state: the head covers at least what the report reflects.
        let head = ChainHead::of(&self.settlement.ledger);
        let scale = scale(self.currencies(), report.currency);
        let document =
            match pb::ReportFormat::try_from(request.format).unwrap_or(pb::ReportFormat::Unspecified) {
                pb::ReportFormat::Unspecified => String::new(),
                pb::ReportFormat::Json => head.json(&report)?,
                pb::ReportFormat::Csv => head.csv(&report),
                pb::ReportFormat::Table => head.table(&report, scale),
            };
        Ok(Response::new(pb::GetSettlementReportResponse {
            report: Some(report_out(&report, self.currencies())),
            document,
            journal_chain_head: Some(pb::JournalChainHead { seq: head.seq, sha256: head.sha256 }),
        }))
    }

    async fn list_settlement_payments(
        &self,
        request: Request<pb::ListSettlementPaymentsRequest>,
    ) -> Result<Response<pb::ListSettlementPaymentsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        let window_id = required_window(request.window_id, &mut violations);
        check(violations)?;
        let window = self.settlement.get_window(window_id, false).await?;
        let report = self.settlement.report(window_id, None).await?;
        let currencies = self.currencies();
        let scale = scale(currencies, report.currency);
        let at = document_time(&window);
        let document =
            match pb::PaymentFormat::try_from(request.format).unwrap_or(pb::PaymentFormat::Unspecified) {
                pb::PaymentFormat::Unspecified => String::new(),
                pb::PaymentFormat::Pacs009 => {
                    puente_settlement::xml::pacs009(&report, scale, at, at).unwrap_or_default()
                }
                pb::PaymentFormat::Csv => report.payments_csv(scale),
                pb::PaymentFormat::Json => serde_json::to_string_pretty(&report.payments)
                    .map_err(|e| ApiError::invalid("format", e.to_string()))?,
            };
        Ok(Response::new(pb::ListSettlementPaymentsResponse {
            payments: report
                .payments
                .iter()
                .map(|p| pb::SettlementPayment {
                    index: p.index,
                    end_to_end_id: p.end_to_end_id.clone(),
                    uetr: p.uetr.clone(),
                    payer: p.payer.clone(),
                    payee: p.payee.clone(),
                    amount: Some(money(currencies, p.currency, p.amount_minor)),
                    rail: rail_out(p.rail) as i32,
                    payer_bank_id: p.payer_bank_id.clone(),
                    payee_bank_id: p.payee_bank_id.clone(),
                })
                .collect(),
            document,
        }))
    }

    async fn get_settlement_statement(
        &self,
        request: Request<pb::GetSettlementStatementRequest>,
    ) -> Result<Response<pb::GetSettlementStatementResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut request = request.into_inner();
        request.participant = auth::named_participant(&caller, &request.participant)?;
        let mut violations = Vec::new();
        let window_id = required_window(request.window_id, &mut violations);
        if request.participant.is_empty() {
            violations.push(Violation::new("participant", "required"));
        }
        check(violations)?;
        let window = self.settlement.get_window(window_id, false).await?;
        if !matches!(window.state, WindowState::Settling | WindowState::Rejected | WindowState::Settled) {
            return Err(ApiError::Settlement(SettlementRefusal::WrongState {
                window_id,
                state: window.state,
                expected: "SETTLING, REJECTED or SETTLED",
            })
            .into());
        }
        let Some(position) = window.positions.iter().find(|p| p.participant == request.participant) else {
            return Err(ApiError::Settlement(SettlementRefusal::ParticipantNotInWindow {
                window_id,
                participant: request.participant,
            })
            .into());
        };
        let profiles = self.settlement.profiles().await?;
        let profile = profiles.get(&position.participant);
        let Some(account_id) =
            profile.and_then(|p| p.currency(window.currency)).map(|c| c.settlement_account_id)
        else {
            return Err(ApiError::Settlement(SettlementRefusal::ProfileNotFound(
                position.participant.clone(),
            ))
            .into());
        };
        let ledger = &self.settlement.ledger;
        let transfer_id = window.settlement_transfer_id(&position.participant);
        let booked = ledger.get_committed(transfer_id).await.map_err(ApiError::from)?;
        let at = booked.as_ref().map(|r| r.timestamp_ns).unwrap_or(window.settled_at_ns);
        let before =
            ledger.account_entries(account_id, 0, at, true, None, 1).await.map_err(ApiError::from)?;
        let opening = convert::posted_balance(before.first().map(|(e, _)| e));
        let mut entries = Vec::new();
        let mut closing = opening;
        if let Some(record) = &booked {
            let credit = record.effect.credit_account_id == account_id;
            let amount = i128::from(record.effect.amount_minor);
            closing = if credit { opening + amount } else { opening - amount };
            entries.push(StatementEntry {
                transfer_id: record.transfer.id,
                amount_minor: u128::from(record.effect.amount_minor),
                credit,
                booked_ns: record.timestamp_ns,
                end_to_end_id: format!("PUENTE-W{}-{}", window.id, position.participant),
                uetr: String::new(),
                info: format!("Net settlement of window {} ({})", window.id, window.currency),
            });
        }
        let currencies = self.currencies();
        let document = puente_settlement::xml::camt053(&StatementInput {
            window_id,
            participant: position.participant.clone(),
            participant_name: profile
                .map(|p| if p.name.is_empty() { p.participant.clone() } else { p.name.clone() })
                .unwrap_or_default(),
            currency: window.currency,
            scale: scale(currencies, window.currency),
            account_id,
            from_ns: window.opened_at_ns,
            to_ns: at,
            created_ns: at,
            opening_minor: opening,
            closing_minor: closing,
            entries,
        });
        Ok(Response::new(pb::GetSettlementStatementResponse { document }))
    }

    async fn reconcile_statements(
        &self,
        request: Request<pb::ReconcileStatementsRequest>,
    ) -> Result<Response<pb::ReconcileStatementsResponse>, Status> {
        Ok(Response::new(
            crate::reconcile::reconcile_statements(&self.settlement, request.into_inner()).await?,
        ))
    }

    async fn confirm_settlement(
        &self,
        request: Request<pb::ConfirmSettlementRequest>,
    ) -> Result<Response<pb::ConfirmSettlementResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut request = request.into_inner();
        request.participant = auth::named_participant(&caller, &request.participant)?;
        let mut violations = Vec::new();
        let window_id = required_window(request.window_id, &mut violations);
        if request.participant.is_empty() {
            violations.push(Violation::new("participant", "required"));
        }
        check(violations)?;
        let (mut window, changed) = self
            .settlement
            .window(SettlementRequest::Confirm { window_id, participant: request.participant })
            .await?;
        if let Some(own) = caller.scope() {
            window.positions.retain(|p| p.participant == own);
        }
        Ok(Response::new(pb::ConfirmSettlementResponse {
            window: Some(window_for(&caller, window_out(&window, self.currencies(), true))),
            changed,
        }))
    }
}

/// What a caller may see of a window: operators everything; a participant the window's
/// schedule and state and its own position, but not the network's totals, the ledger
/// positions of other participants' obligations, or a failure reason (which may name others).
fn window_for(
    caller: &puente_ledger::identity::Caller,
    mut window: pb::SettlementWindow,
) -> pb::SettlementWindow {
    if let Some(own) = caller.scope() {
        window.positions.retain(|p| p.participant == own);
        window.obligation_count = 0;
        window.gross_value = None;
        window.first_position = 0;
        window.last_position = 0;
        if !window.reason.is_empty() {
            window.reason = "see the operator".to_owned();
        }
    }
    window
}
