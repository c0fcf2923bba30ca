//! `puente.v1.SettlementService`, the wire of the settlement desk (`settlement_desk.rs`):
//! requests are checked and converted here, the work is the desk's, every status is decided in
//! `error.rs`.

use puente_ledger::settlement::{
    Country, CurrencyProfile, ParticipantProfile, SettlementRail, WindowId, WindowState,
};
use puente_money::{CurrencyCode, CurrencyTable};
use puente_proto::v1 as pb;
use puente_settlement::SettlementReport;
use puente_settlement::cover::SignedCover;
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::convert::{
    self, format_id, money, parse_optional_currency, scale, signed_money, state_out, timestamp, window_out,
};
use crate::error::{ApiError, Violation, check};
use crate::grpc::settlement_service_server::SettlementService;
use crate::settlement_desk::{ChainHead, SettlementDesk, document_time};

// ----- wire conversions ----------------------------------------------------------------------

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

fn required_window(id: u64, violations: &mut Vec<Violation>) -> WindowId {
    if id == 0 {
        violations.push(Violation::new("window_id", "required"));
    }
    id
}

fn usd(minor: u128) -> String {
    puente_money::format_minor(minor, 2)
}

fn usd_signed(minor: i128) -> String {
    puente_money::format_signed_minor(minor, 2)
}

fn cover_out(signed: &SignedCover, currencies: &CurrencyTable) -> pb::FxCover {
    let c = &signed.cover;
    let (usd_code, mxn_code) = (CurrencyCode::USD, CurrencyCode::MXN);
    let conversion = c.conversion.as_ref();
    let s = &c.saving;
    pb::FxCover {
        usd_window_id: c.usd_window_id,
        mxn_window_id: c.mxn_window_id,
        house: c.house.clone(),
        rate_mxn_per_usd: c.rate_mxn_per_usd.to_string(),
        house_usd_net: Some(signed_money(currencies, usd_code, c.house_usd_net_minor)),
        house_mxn_net: Some(signed_money(currencies, mxn_code, c.house_mxn_net_minor)),
        status: c.status.code().to_owned(),
        sell: conversion.map(|v| money(currencies, v.sell_currency, v.sell_amount_minor)),
        buy: conversion.map(|v| money(currencies, v.buy_currency, v.buy_amount_minor)),
        funded_by_surplus: conversion.is_some_and(|v| v.funded_by_surplus),
        house_usd_after: Some(signed_money(currencies, usd_code, c.house_usd_after_minor)),
        house_mxn_after: Some(signed_money(currencies, mxn_code, c.house_mxn_after_minor)),
        remittances_count: s.remittances_count,
        one_by_one_cost_usd: usd(s.one_by_one_total_usd_minor),
        cover_cost_usd: usd(s.cover_total_usd_minor),
        saving_usd: usd_signed(s.saving_usd_minor),
        saving_percent: s.saving_percent.map(|p| p.to_string()).unwrap_or_default(),
        canonical: hex::decode(&signed.canonical_hex).unwrap_or_default(),
        signature: hex::decode(&signed.signature_hex).unwrap_or_default(),
        signing_key_id: signed.key_id.clone(),
        recorded: signed.recorded,
    }
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
        fx_cover: r.fx_cover.as_ref().map(|c| cover_out(c, currencies)),
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

// ----- the service ---------------------------------------------------------------------------

pub struct SettlementApi {
    desk: SettlementDesk,
}

impl SettlementApi {
    pub fn new(desk: SettlementDesk) -> SettlementApi {
        SettlementApi { desk }
    }

    fn currencies(&self) -> &CurrencyTable {
        self.desk.ledger().currencies()
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
        let profile = self.desk.set_profile(profile).await?;
        Ok(Response::new(pb::SetParticipantProfileResponse {
            profile: Some(profile_out(&profile, self.currencies())),
        }))
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
        let profile = self.desk.get_profile(participant.clone()).await?;
        let positions = self.desk.positions(participant).await?;
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
        let profiles = self.desk.profiles().await?;
        Ok(Response::new(pb::ListParticipantProfilesResponse {
            profiles: profiles.values().map(|p| profile_out(p, self.currencies())).collect(),
        }))
    }

    async fn list_windows(
        &self,
        request: Request<pb::ListWindowsRequest>,
    ) -> Result<Response<pb::ListWindowsResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let currency = parse_optional_currency(
            &request.currency_code,
            "currency_code",
            self.currencies(),
            &mut violations,
        );
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
        let windows = self.desk.list_windows(currency, state_in(request.state), after_id, page_size).await?;
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
        let mut window = self.desk.get_window(window_id, false).await?;
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
        let currency = parse_optional_currency(
            &request.currency_code,
            "currency_code",
            self.currencies(),
            &mut violations,
        );
        if request.window_id == 0 && currency.is_none() {
            violations.push(Violation::new("window_id", "a window id or a currency_code is required"));
        }
        check(violations)?;
        let window_id = (request.window_id != 0).then_some(request.window_id);
        let closed = self.desk.close(window_id, currency).await?;
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
        let (window, changed) = self.desk.run(window_id).await?;
        if changed && window.state != WindowState::Aborted {
            crate::settlement_schedule::record_run(&self.desk, window_id).await;
        }
        let currencies = self.currencies();
        let transfers = self
            .desk
            .settlement_transfers(&window)
            .await?
            .into_iter()
            .map(|t| pb::SettlementTransfer {
                participant: t.participant,
                transfer_id: format_id(t.transfer_id),
                settlement_account_id: t.settlement_account_id.map(format_id).unwrap_or_default(),
                net: Some(signed_money(currencies, window.currency, t.net_minor)),
            })
            .collect();
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
        let report = self.desk.report(window_id, rate).await?;
        // Read after the report's state: the head covers at least what the report reflects.
        let head = ChainHead::of(self.desk.ledger());
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
        let window = self.desk.get_window(window_id, false).await?;
        let report = self.desk.report(window_id, None).await?;
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
        let (caller, mut request) = auth::caller_and_body(request)?;
        request.participant = auth::named_participant(&caller, &request.participant)?;
        let mut violations = Vec::new();
        let window_id = required_window(request.window_id, &mut violations);
        if request.participant.is_empty() {
            violations.push(Violation::new("participant", "required"));
        }
        check(violations)?;
        let document = self.desk.statement(window_id, &request.participant).await?;
        Ok(Response::new(pb::GetSettlementStatementResponse { document }))
    }

    async fn reconcile_statements(
        &self,
        request: Request<pb::ReconcileStatementsRequest>,
    ) -> Result<Response<pb::ReconcileStatementsResponse>, Status> {
        Ok(Response::new(crate::reconcile::reconcile_statements(&self.desk, request.into_inner()).await?))
    }

    async fn confirm_settlement(
        &self,
        request: Request<pb::ConfirmSettlementRequest>,
    ) -> Result<Response<pb::ConfirmSettlementResponse>, Status> {
        let (caller, mut request) = auth::caller_and_body(request)?;
        request.participant = auth::named_participant(&caller, &request.participant)?;
        let mut violations = Vec::new();
        let window_id = required_window(request.window_id, &mut violations);
        if request.participant.is_empty() {
            violations.push(Violation::new("participant", "required"));
        }
        check(violations)?;
        let (mut window, changed) = self.desk.confirm(window_id, request.participant).await?;
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
