//! The settlement desk: participants' settlement profiles, windows, the settlement run,
//! reports (with the journal's chain head) and statements, through the ledger's single writer
//! (`Ledger::settlement`); reports and documents are computed by `puente-settlement`. Also the
//! cutoff scheduler that closes windows at a wall-clock time in a named time zone. No protobuf
//! here: the wire is `settlement_service.rs`, as `fx_service.rs` is `fx_desk.rs`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use puente_ledger::settlement::{
    self as st, ParticipantProfile, SettlementRefusal, WindowChange, WindowId, WindowState, WindowView,
};
use puente_ledger::{Call, Ledger};
use puente_money::CurrencyCode;
use puente_netting::FeeModel;
use puente_settlement::cover::{CoverInput, CutoffCover, SignedCover};
use puente_settlement::schedule::Cutoff;
use puente_settlement::xml::{StatementEntry, StatementInput};
use puente_settlement::{SettlementReport, build_report};
use rust_decimal::Decimal;

use crate::error::ApiError;
use crate::fx_desk::{FxDesk, HOUSE_PARTICIPANT, house_account_id};

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
    /// The FX house's bank details for its system-defined settlement profile.
    pub house: HouseBank,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            fees: FeeModel::default(),
            rate_mxn_per_usd: Decimal::new(18, 0),
            cutoff: None,
            hub_accounts: Default::default(),
            house: HouseBank::default(),
        }
    }
}

/// Where the FX house (`puente-house`) settles: the bank identifiers of its system-defined
/// settlement profile (its settlement accounts on the ledger are system accounts,
/// `house_account_id("settlement", currency)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseBank {
    pub name: String,
    pub bic: String,
    /// Where the house is domiciled: its payouts to the other country count as cross-border in
    /// the fee report.
    pub country: st::Country,
    /// ABA routing number of its USD account (Fedwire).
    pub usd_aba: String,
    /// CLABE of its MXN account (SPEI).
    pub mxn_clabe: String,
}

impl Default for HouseBank {
    fn default() -> Self {
        HouseBank {
            name: "Puente FX house".into(),
            bic: String::new(),
            country: st::Country::Us,
            // Placeholders with valid check digits; configure the house's real accounts.
            usd_aba: "021000021".into(),
            mxn_clabe: "002180000000000012".into(),
        }
    }
}

/// The ids of the two ledger legs of the FX cover of a cutoff (`n` = 1: the house sells, 2: it
/// buys): system ids, so no participant can use them first, and a rerun finds them.
pub fn cover_leg_id(usd_window_id: WindowId, mxn_window_id: WindowId, n: u8) -> u128 {
    puente_core::ids::system_id(
        "settlement/fx-cover-leg",
        &[&usd_window_id.to_be_bytes(), &mxn_window_id.to_be_bytes(), &[n]],
    )
}

/// Metadata keys of the cover's legs: what a rerun needs to return the same cover.
const COVER_RATE_KEY: &str = "fx_cover_rate_mxn_per_usd";
const COVER_KEY_ID_KEY: &str = "fx_cover_key_id";
const COVER_SIGNATURE_KEY: &str = "fx_cover_signature";
const COVER_SHA256_KEY: &str = "fx_cover_sha256";

/// The settlement desk, shared by the gRPC service, reconciliation and the scheduler.
#[derive(Clone)]
pub struct SettlementDesk {
    ledger: Ledger,
    config: Arc<SettlementConfig>,
    test_pause: Option<Duration>,
    /// The FX desk: its rates price the cover, its key signs it. None: no FX cover.
    fx: Option<Arc<FxDesk>>,
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
        SettlementDesk { ledger, config: Arc::new(config), test_pause, fx: None }
    }

    /// The desk with the FX desk whose house gets one FX cover per cutoff.
    pub fn with_fx(mut self, fx: Option<Arc<FxDesk>>) -> SettlementDesk {
        self.fx = fx;
        self
    }

    pub fn config(&self) -> &SettlementConfig {
        &self.config
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// One settlement call through the ledger's writer; the answer's type follows the call.
    pub(crate) async fn call<T, C: Call<Answer = Result<T, SettlementRefusal>>>(
        &self,
        call: C,
    ) -> Result<T, ApiError> {
        Ok(self.ledger.call(call).await??)
    }

    /// A window command, answered with the window after it and whether it changed anything.
    pub(crate) async fn window<C: Call<Answer = Result<WindowChange, SettlementRefusal>>>(
        &self,
        call: C,
    ) -> Result<(WindowView, bool), ApiError> {
        let WindowChange { window, changed } = self.call(call).await?;
        Ok((window, changed))
    }

    pub async fn get_window(&self, window_id: WindowId, with_flows: bool) -> Result<WindowView, ApiError> {
        self.call(st::GetWindow { window_id, with_flows }).await
    }

    pub async fn profiles(&self) -> Result<BTreeMap<String, ParticipantProfile>, ApiError> {
        let list = self.call(st::ListProfiles).await?;
        Ok(list.into_iter().map(|p| (p.participant.clone(), p)).collect())
    }

    async fn open_window_of(&self, currency: CurrencyCode) -> Result<WindowId, ApiError> {
        let call = st::ListWindows {
            currency: Some(currency),
            state: Some(WindowState::Open),
            after_id: 0,
            limit: 1,
        };
        Ok(self.call(call).await?.first().map(|w| w.id).unwrap_or(0))
    }

    /// Closes a window: OPEN → CLOSING (the next window opens), then netting, then CLOSED or
    /// FAILED. A window left CLOSING by a crash, or FAILED, is taken up again.
    pub async fn close(
        &self,
        window_id: Option<WindowId>,
        currency: Option<CurrencyCode>,
    ) -> Result<Closed, ApiError> {
        let (mut window, mut changed) = self.window(st::CloseWindow { window_id, currency }).await?;
        if matches!(window.state, WindowState::Closing | WindowState::Failed) {
            let detail = self.get_window(window.id, true).await?;
            let profiles = self.profiles().await?;
            let failure = build_report(&detail, &profiles, &self.config.fees, self.config.rate_mxn_per_usd)
                .err()
                .map(|e| format!("netting failed: {e}"));
            let (closed, finished) = self.window(st::FinishClose { window_id: window.id, failure }).await?;
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
        let (window, changed) = self.window(st::Settle { window_id }).await?;
        tracing::info!(
            window_id,
            state = window.state.code(),
            changed,
            attempts = window.attempts,
            "settlement run"
        );
        // The FX cover of this window's cutoff, once both windows have settled (a rerun finds
        // it recorded and changes nothing).
        self.record_cover(&window).await?;
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
        let mut report = build_report(&window, &profiles, &self.config.fees, rate)
            .map_err(|e| ApiError::Settlement(report_refusal(e)))?;
        report.fx_cover = self.cover(&window).await?;
        Ok(report)
    }

    /// Closes every open window (the scheduler's job at each cutoff).
    pub async fn close_all_open(&self) -> Result<Vec<Closed>, ApiError> {
        let call = st::ListWindows {
            currency: None,
            state: Some(WindowState::Open),
            after_id: 0,
            limit: st::WINDOW_PAGE_MAX,
        };
        let open = self.call(call).await?;
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
        self.call(st::GetProfile(participant)).await
    }

    /// Sets a participant's profile. Puente's own participants (`puente-*`) are refused: the
    /// FX house's profile is system-defined ([`SettlementDesk::ensure_house_profile`]).
    pub async fn set_profile(&self, profile: ParticipantProfile) -> Result<ParticipantProfile, ApiError> {
        if profile.participant.starts_with("puente-") {
            return Err(ApiError::Settlement(SettlementRefusal::ProfileInvalid {
                field: "participant".into(),
                reason: "Puente's own participants (puente-*) have system-defined profiles".into(),
            }));
        }
        self.store_profile(profile).await
    }

    async fn store_profile(&self, profile: ParticipantProfile) -> Result<ParticipantProfile, ApiError> {
        self.call(st::SetProfile(profile)).await
    }

    /// A participant's net debit positions in the open windows, per currency.
    pub async fn positions(&self, participant: String) -> Result<Vec<(CurrencyCode, i128)>, ApiError> {
        self.call(st::Positions(participant)).await
    }

    pub async fn list_windows(
        &self,
        currency: Option<CurrencyCode>,
        state: Option<WindowState>,
        after_id: WindowId,
        limit: usize,
    ) -> Result<Vec<WindowView>, ApiError> {
        self.call(st::ListWindows { currency, state, after_id, limit }).await
    }

    pub async fn confirm(
        &self,
        window_id: WindowId,
        participant: String,
    ) -> Result<(WindowView, bool), ApiError> {
        self.window(st::Confirm { window_id, participant }).await
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

// ----- one FX cover per cutoff ----------------------------------------------------------------

impl SettlementDesk {
    /// Sets the FX house's system-defined settlement profile (USD and MXN on its system
    /// settlement accounts, no effective Net Debit Cap: the FX desk manages its exposure), so
    /// windows holding FX legs close and the house settles like any participant. Idempotent:
    /// the same profile again changes nothing. Without an FX desk there is no house.
    pub async fn ensure_house_profile(&self) -> Result<(), ApiError> {
        let Some(fx) = &self.fx else { return Ok(()) };
        let bank = &self.config.house;
        let mut currencies = Vec::new();
        for (code, rail, bank_id) in [
            (CurrencyCode::USD, st::SettlementRail::Fedwire, &bank.usd_aba),
            (CurrencyCode::MXN, st::SettlementRail::Spei, &bank.mxn_clabe),
        ] {
            if fx.currencies().get(code).is_err() {
                continue;
            }
            currencies.push(st::CurrencyProfile {
                currency: code,
                rail,
                bank_id: bank_id.clone(),
                net_debit_cap_minor: puente_money::AMOUNT_MAX_MINOR,
                settlement_account_id: house_account_id("settlement", code),
            });
        }
        if currencies.is_empty() {
            return Ok(());
        }
        let profile = ParticipantProfile {
            participant: HOUSE_PARTICIPANT.into(),
            name: bank.name.clone(),
            bic: bank.bic.clone(),
            country: bank.country,
            currencies,
            updated_at_ns: 0,
        };
        self.store_profile(profile).await?;
        Ok(())
    }

    /// The window of the other currency closed at the same cutoff as `window` (see
    /// `puente_settlement::cover::pair_of`), looked for among the windows whose ids are within
    /// half a page of it (two windows open per cutoff, one per currency).
    async fn partner_of(&self, window: &WindowView) -> Result<Option<WindowView>, ApiError> {
        let other = match window.currency {
            c if c == CurrencyCode::USD => CurrencyCode::MXN,
            c if c == CurrencyCode::MXN => CurrencyCode::USD,
            _ => return Ok(None),
        };
        if window.state == WindowState::Open {
            return Ok(None);
        }
        let after_id = window.id.saturating_sub(st::WINDOW_PAGE_MAX as u64 / 2);
        let candidates = self.list_windows(Some(other), None, after_id, st::WINDOW_PAGE_MAX).await?;
        Ok(puente_settlement::cover::pair_of(window, &candidates).cloned())
    }

    /// The FX cover of `window`'s cutoff: the recorded one (from its ledger legs) once the
    /// conversion is posted, else the plan at the FX desk's current mid rate (or the
    /// configured rate), signed. None without an FX desk or a partner window.
    pub async fn cover(&self, window: &WindowView) -> Result<Option<SignedCover>, ApiError> {
        let Some(fx) = self.fx.clone() else { return Ok(None) };
        let Some(partner) = self.partner_of(window).await? else { return Ok(None) };
        let (usd, mxn) = if window.currency == CurrencyCode::USD {
            (window.id, partner.id)
        } else {
            (partner.id, window.id)
        };
        let usd = self.get_window(usd, true).await?;
        let mxn = self.get_window(mxn, true).await?;
        if let Some(recorded) = self.recorded_cover(&fx, &usd, &mxn).await? {
            return Ok(Some(recorded));
        }
        let rate = fx.mid_rate(CurrencyCode::USD, CurrencyCode::MXN).unwrap_or(self.config.rate_mxn_per_usd);
        let cover = self.size(&usd, &mxn, rate)?;
        let canonical = cover.canonical_bytes();
        let (key_id, signature) = fx.sign_document(&canonical).map_err(ApiError::from)?;
        Ok(Some(SignedCover {
            cover,
            canonical_hex: hex::encode(&canonical),
            signature_hex: hex::encode(signature),
            key_id,
            recorded: false,
        }))
    }

    fn size(&self, usd: &WindowView, mxn: &WindowView, rate: Decimal) -> Result<CutoffCover, ApiError> {
        puente_settlement::cover::size_cover(&CoverInput {
            usd,
            mxn,
            house: HOUSE_PARTICIPANT,
            fees: &self.config.fees,
            rate_mxn_per_usd: rate,
        })
        .map_err(|e| ApiError::Settlement(report_refusal(e)))
    }

    /// The cover recorded on the ledger for these windows, if its legs exist: sized again from
    /// the (closed, immutable) windows at the recorded rate, and checked against the recorded
    /// digest and signature.
    async fn recorded_cover(
        &self,
        fx: &FxDesk,
        usd: &WindowView,
        mxn: &WindowView,
    ) -> Result<Option<SignedCover>, ApiError> {
        let Some(leg) = self.ledger.get_committed(cover_leg_id(usd.id, mxn.id, 1)).await? else {
            return Ok(None);
        };
        let metadata = &leg.transfer.metadata;
        let field = |key: &str| -> Result<&String, ApiError> {
            metadata.get(key).ok_or_else(|| corrupt_cover(usd.id, mxn.id, &format!("no {key}")))
        };
        let rate: Decimal =
            field(COVER_RATE_KEY)?.parse().map_err(|_| corrupt_cover(usd.id, mxn.id, "bad rate"))?;
        let key_id = field(COVER_KEY_ID_KEY)?.clone();
        let signature_hex = field(COVER_SIGNATURE_KEY)?.clone();
        let cover = self.size(usd, mxn, rate)?;
        let canonical = cover.canonical_bytes();
        if &quote_sha256(&canonical) != field(COVER_SHA256_KEY)? {
            return Err(corrupt_cover(usd.id, mxn.id, "the windows no longer give the recorded cover"));
        }
        let signature =
            hex::decode(&signature_hex).map_err(|_| corrupt_cover(usd.id, mxn.id, "bad signature"))?;
        if let Err(error) = fx.verify_document(&key_id, &canonical, &signature) {
            // The key may have been rotated out: the record stands, but say so.
            tracing::warn!(usd_window = usd.id, mxn_window = mxn.id, %key_id, %error,
                "the recorded FX cover's signature does not verify with the current keys");
        }
        Ok(Some(SignedCover {
            cover,
            canonical_hex: hex::encode(&canonical),
            signature_hex,
            key_id,
            recorded: true,
        }))
    }

    /// Records the cover of `window`'s cutoff once both windows have settled: the conversion
    /// as one linked chain of two house transfers (settlement account → conversion account in
    /// the currency sold, conversion account → settlement account in the currency bought, ids
    /// from [`cover_leg_id`]), carrying the rate, the signature, its key id and the digest of
    /// the canonical bytes. Journaled by the ledger's writer like any transfer, so it survives
    /// restarts; a rerun finds the legs and returns the same cover. Returns the cover (None:
    /// no FX desk, no partner, or the partner not settled yet).
    pub async fn record_cover(&self, window: &WindowView) -> Result<Option<SignedCover>, ApiError> {
        let settled = |w: &WindowView| {
            matches!(w.state, WindowState::Settling | WindowState::Rejected | WindowState::Settled)
        };
        let Some(fx) = self.fx.clone() else { return Ok(None) };
        if !settled(window) {
            return Ok(None);
        }
        let Some(partner) = self.partner_of(window).await? else { return Ok(None) };
        if !settled(&partner) {
            return Ok(None);
        }
        let Some(mut signed) = self.cover(window).await? else { return Ok(None) };
        let c = &signed.cover;
        let Some(conversion) = c.conversion.clone().filter(|_| !signed.recorded) else {
            // Recorded already, or nothing to convert (no deficit, or deficits in both).
            return Ok(Some(signed));
        };
        let legs = cover_legs(&signed, &conversion)?;
        let (sell, buy) = (conversion.sell_currency, conversion.buy_currency);
        let outcomes =
            self.ledger.create_transfers(puente_ledger::Actor::system(HOUSE_PARTICIPANT), legs).await?;
        if let Some(failure) = outcomes.iter().find(|o| !o.result.is_ok()) {
            // EXISTS_WITH_DIFFERENT_*: a concurrent run recorded it at another rate; read it.
            let usd = self.get_window(c.usd_window_id, true).await?;
            let mxn = self.get_window(c.mxn_window_id, true).await?;
            if let Some(recorded) = self.recorded_cover(&fx, &usd, &mxn).await? {
                return Ok(Some(recorded));
            }
            return Err(corrupt_cover(c.usd_window_id, c.mxn_window_id, failure.result.code()));
        }
        tracing::info!(usd_window = c.usd_window_id, mxn_window = c.mxn_window_id, sell = %sell,
            sell_minor = conversion.sell_amount_minor, buy = %buy, buy_minor = conversion.buy_amount_minor,
            rate = %c.rate_mxn_per_usd, key_id = %signed.key_id, "FX cover recorded");
        signed.recorded = true;
        Ok(Some(signed))
    }
}

/// The cover's conversion as one linked chain of two house transfers: settlement account →
/// conversion account in the currency sold, conversion account → settlement account in the
/// currency bought, carrying the rate, the signature, its key id and the digest of the
/// canonical bytes.
fn cover_legs(
    signed: &SignedCover,
    conversion: &puente_netting::FxConversion,
) -> Result<Vec<puente_ledger::Transfer>, ApiError> {
    let c = &signed.cover;
    let amount = |minor: u128| {
        u64::try_from(minor).map_err(|_| corrupt_cover(c.usd_window_id, c.mxn_window_id, "amount too large"))
    };
    let canonical = c.canonical_bytes();
    let metadata: puente_ledger::Metadata = [
        ("fx_cover_usd_window".to_owned(), c.usd_window_id.to_string()),
        ("fx_cover_mxn_window".to_owned(), c.mxn_window_id.to_string()),
        (COVER_RATE_KEY.to_owned(), c.rate_mxn_per_usd.to_string()),
        (COVER_KEY_ID_KEY.to_owned(), signed.key_id.clone()),
        (COVER_SIGNATURE_KEY.to_owned(), signed.signature_hex.clone()),
        (COVER_SHA256_KEY.to_owned(), quote_sha256(&canonical)),
    ]
    .into();
    let leg = |n: u8, debit: u128, credit: u128, currency: CurrencyCode, amount_minor: u64| {
        puente_ledger::Transfer {
            id: cover_leg_id(c.usd_window_id, c.mxn_window_id, n),
            debit_account_id: debit,
            credit_account_id: credit,
            amount_minor,
            currency,
            flags: puente_ledger::TransferFlags { linked: n == 1, ..Default::default() },
            pending_id: 0,
            timeout_ms: 0,
            reference: format!("fx cover of windows {} and {}", c.usd_window_id, c.mxn_window_id),
            metadata: metadata.clone(),
        }
    };
    let (sell, buy) = (conversion.sell_currency, conversion.buy_currency);
    let legs = vec![
        leg(
            1,
            house_account_id("settlement", sell),
            house_account_id("conversion", sell),
            sell,
            amount(conversion.sell_amount_minor)?,
        ),
        leg(
            2,
            house_account_id("conversion", buy),
            house_account_id("settlement", buy),
            buy,
            amount(conversion.buy_amount_minor)?,
        ),
    ];
    Ok(legs)
}

/// SHA-256 of canonical bytes, hex.
fn quote_sha256(canonical: &[u8]) -> String {
    crate::fx_desk::quote_digest(canonical)
}

fn corrupt_cover(usd: WindowId, mxn: WindowId, reason: &str) -> ApiError {
    ApiError::Settlement(SettlementRefusal::ProfileInvalid {
        field: "fx_cover".into(),
        reason: format!("FX cover of windows {usd} and {mxn}: {reason}"),
    })
}
