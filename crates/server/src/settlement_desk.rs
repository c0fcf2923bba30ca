//! The settlement desk: participants' settlement profiles, windows, the settlement run,
//! reports (with the journal's chain head) and statements, through the ledger's single writer
//! (`Ledger::settlement`); reports and documents are computed by `puente-settlement`. Also the
//! cutoff scheduler that closes windows at a wall-clock time in a named time zone. No protobuf
//! here: the wire is `settlement_service.rs`, as `fx_service.rs` is `fx_desk.rs`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use puente_ledger::Ledger;
use puente_ledger::settlement::{
    self as st, ParticipantProfile, SettlementRefusal, SettlementRequest, SettlementResponse, WindowId,
    WindowState, WindowView,
};
use puente_money::CurrencyCode;
use puente_netting::FeeModel;
use puente_settlement::schedule::Cutoff;
use puente_settlement::xml::{StatementEntry, StatementInput};
use puente_settlement::{SettlementReport, build_report};
use rust_decimal::Decimal;

use crate::error::ApiError;

/// Environment variable (tests only): milliseconds to pause before and after the ledger
/// operation of a settlement run, so a test can kill the server in the middle of a run.
pub const TEST_PAUSE_ENV: &str = "PUENTE_TEST_SETTLEMENT_PAUSE_MS";
/// Longest accepted test pause.
const TEST_PAUSE_MAX_MS: u64 = 60_000;

/// Settlement configuration (`[settlement]` in the config file).
#[derive(Debug, Clone)]
pub struct SettlementConfig {
    /// Bank fees for the savings report (defaults: `puente_netting::FeeModel`).
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

/// The settlement desk, shared by the gRPC service, reconciliation and the scheduler.
#[derive(Clone)]
pub struct SettlementDesk {
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

impl SettlementDesk {
    pub fn new(ledger: Ledger, config: SettlementConfig) -> SettlementDesk {
        let test_pause = std::env::var(TEST_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| Duration::from_millis(ms.min(TEST_PAUSE_MAX_MS)));
        SettlementDesk { ledger, config: Arc::new(config), test_pause }
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

// ----- journal chain head in reports --------------------------------------------------------

/// The journal's chain head (`Ledger::chain_head`) as reports carry it: settlement reports
/// record it outside the data directory, so `puente verify` can later check the journal up to
/// it (see ARCHITECTURE.md, "Durability").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ChainHead {
    pub seq: u64,
    /// Lower-case hex of the SHA-256 chain hash.
    pub sha256: String,
}

/// A report document with the chain head added at the end (`journal_chain_head`).
#[derive(serde::Serialize)]
struct ReportWithHead<'a> {
    #[serde(flatten)]
    report: &'a SettlementReport,
    journal_chain_head: &'a ChainHead,
}

impl ChainHead {
    pub(crate) fn of(ledger: &Ledger) -> ChainHead {
        let (seq, hash) = ledger.chain_head();
        ChainHead { seq, sha256: puente_ledger::journal::chain_hex(&hash) }
    }

    /// The JSON report plus `"journal_chain_head": {"seq": N, "sha256": "<hex>"}`.
    pub(crate) fn json(&self, report: &SettlementReport) -> Result<String, ApiError> {
        serde_json::to_string_pretty(&ReportWithHead { report, journal_chain_head: self })
            .map_err(|e| ApiError::invalid("format", e.to_string()))
    }

    /// The CSV report plus two `settlement` rows: `journal_chain_seq` and
    /// `journal_chain_sha256`.
    pub(crate) fn csv(&self, report: &SettlementReport) -> String {
        let mut out = report.to_csv();
        let code = report.currency.as_str();
        out.push_str(&format!("settlement,,,{code},journal_chain_seq,{}\n", self.seq));
        out.push_str(&format!("settlement,,,{code},journal_chain_sha256,{}\n", self.sha256));
        out
    }

    /// The table plus a last line `journal chain head: seq N <hex>`.
    pub(crate) fn table(&self, report: &SettlementReport, scale: u32) -> String {
        let mut out = report.to_table(scale);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("journal chain head: seq {} {}\n", self.seq, self.sha256));
        out
    }
}

/// One participant's settlement transfer of a window (see `RunSettlement`).
pub struct SettlementTransferView {
    pub participant: String,
    pub transfer_id: u128,
    /// The participant's settlement account in the window's currency (`None`: no profile).
    pub settlement_account_id: Option<u128>,
    pub net_minor: i128,
}

impl SettlementDesk {
    pub async fn get_profile(&self, participant: String) -> Result<ParticipantProfile, ApiError> {
        match self.call(SettlementRequest::GetProfile(participant)).await? {
            SettlementResponse::Profile(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn set_profile(&self, profile: ParticipantProfile) -> Result<ParticipantProfile, ApiError> {
        match self.call(SettlementRequest::SetProfile(profile)).await? {
            SettlementResponse::Profile(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    /// A participant's net debit positions in the open windows, per currency.
    pub async fn positions(&self, participant: String) -> Result<Vec<(CurrencyCode, i128)>, ApiError> {
        match self.call(SettlementRequest::Positions(participant)).await? {
            SettlementResponse::Positions(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_windows(
        &self,
        currency: Option<CurrencyCode>,
        state: Option<WindowState>,
        after_id: WindowId,
        limit: usize,
    ) -> Result<Vec<WindowView>, ApiError> {
        match self.call(SettlementRequest::ListWindows { currency, state, after_id, limit }).await? {
            SettlementResponse::Windows(w) => Ok(w),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn confirm(
        &self,
        window_id: WindowId,
        participant: String,
    ) -> Result<(WindowView, bool), ApiError> {
        self.window(SettlementRequest::Confirm { window_id, participant }).await
    }

    /// The settlement transfers of a window being or having been settled (none before).
    pub async fn settlement_transfers(
        &self,
        window: &WindowView,
    ) -> Result<Vec<SettlementTransferView>, ApiError> {
        if !matches!(window.state, WindowState::Settling | WindowState::Rejected | WindowState::Settled) {
            return Ok(Vec::new());
        }
        let profiles = self.profiles().await?;
        Ok(window
            .positions
            .iter()
            .filter(|p| p.net_minor != 0)
            .map(|p| SettlementTransferView {
                participant: p.participant.clone(),
                transfer_id: window.settlement_transfer_id(&p.participant),
                settlement_account_id: profiles
                    .get(&p.participant)
                    .and_then(|pr| pr.currency(window.currency))
                    .map(|c| c.settlement_account_id),
                net_minor: p.net_minor,
            })
            .collect())
    }

    /// A participant's camt.053 statement of its settlement account for a window being or
    /// having been settled: the opening balance before the settlement transfer, the transfer,
    /// the closing balance.
    pub async fn statement(&self, window_id: WindowId, participant: &str) -> Result<String, ApiError> {
        let window = self.get_window(window_id, false).await?;
        if !matches!(window.state, WindowState::Settling | WindowState::Rejected | WindowState::Settled) {
            return Err(ApiError::Settlement(SettlementRefusal::WrongState {
                window_id,
                state: window.state,
                expected: "SETTLING, REJECTED or SETTLED",
            }));
        }
        let Some(position) = window.positions.iter().find(|p| p.participant == participant) else {
            return Err(ApiError::Settlement(SettlementRefusal::ParticipantNotInWindow {
                window_id,
                participant: participant.to_owned(),
            }));
        };
        let profiles = self.profiles().await?;
        let profile = profiles.get(&position.participant);
        let Some(account_id) =
            profile.and_then(|p| p.currency(window.currency)).map(|c| c.settlement_account_id)
        else {
            return Err(ApiError::Settlement(SettlementRefusal::ProfileNotFound(
                position.participant.clone(),
            )));
        };
        let ledger = &self.ledger;
        let transfer_id = window.settlement_transfer_id(&position.participant);
        let booked = ledger.get_committed(transfer_id).await.map_err(ApiError::from)?;
        let at = booked.as_ref().map(|r| r.timestamp_ns).unwrap_or(window.settled_at_ns);
        let before =
            ledger.account_entries(account_id, 0, at, true, None, 1).await.map_err(ApiError::from)?;
        let opening = before
            .first()
            .map(|(e, _)| e.credits_posted_minor as i128 - e.debits_posted_minor as i128)
            .unwrap_or(0);
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
        Ok(puente_settlement::xml::camt053(&StatementInput {
            window_id,
            participant: position.participant.clone(),
            participant_name: profile
                .map(|p| if p.name.is_empty() { p.participant.clone() } else { p.name.clone() })
                .unwrap_or_default(),
            currency: window.currency,
            scale: ledger.currencies().get(window.currency).map(|c| c.scale).unwrap_or(2),
            account_id,
            from_ns: window.opened_at_ns,
            to_ns: at,
            created_ns: at,
            opening_minor: opening,
            closing_minor: closing,
            entries,
        }))
    }
}

/// When a window's documents are dated: its settlement, else its close, else now.
pub(crate) fn document_time(w: &WindowView) -> u64 {
    [w.settled_at_ns, w.closed_at_ns].into_iter().find(|t| *t != 0).unwrap_or_else(puente_ledger::now_ns)
}
