//! A window's netting and savings report, and its settlement payments.
//!
//! Built from the ledger's view of the window (per-pair flows, which the engine keeps as it
//! commits obligations: memory bounded by participants², not by obligations) with
//! `puente-netting`: gross, bilateral net, multilateral net, fewest payments, efficiency, and
//! bank fees had each obligation settled gross versus the fees of the payments actually made
//! (fee model and allocation rule: `puente_netting::report`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use puente_ledger::settlement::{Country, ParticipantProfile, SettlementRail, WindowState, WindowView};
use puente_money::CurrencyCode;
use puente_netting::{FeeModel, NettingAggregator, ParticipantId, ReportInput, WindowReport};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{SettlementError, uuid_v4_text};

/// One settlement payment of a window (a pacs.009 credit transfer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementPayment {
    /// 1-based, in plan order.
    pub index: u32,
    /// `PUENTE-W<window>-<index>`: the ISO 20022 EndToEndId and InstrId.
    pub end_to_end_id: String,
    /// Deterministic UETR (UUID v4 text) derived from the window and index.
    pub uetr: String,
    pub payer: String,
    pub payee: String,
    pub currency: CurrencyCode,
    pub amount_minor: u128,
    /// The payer's rail for this currency.
    pub rail: SettlementRail,
    pub payer_name: String,
    pub payee_name: String,
    pub payer_bic: String,
    pub payee_bic: String,
    /// ABA routing number or CLABE of each side.
    pub payer_bank_id: String,
    pub payee_bank_id: String,
}

/// One participant's net position in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionLine {
    pub participant: String,
    pub country: Country,
    pub paid_minor: u128,
    pub received_minor: u128,
    pub paid_count: u64,
    pub received_count: u64,
    /// received − paid: positive means it receives at settlement.
    pub net_minor: i128,
    pub confirmed: bool,
}

/// The report of one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReport {
    pub window_id: u64,
    pub currency: CurrencyCode,
    pub state: WindowState,
    pub obligation_count: u64,
    pub first_transfer_ns: u64,
    pub last_transfer_ns: u64,
    pub positions: Vec<PositionLine>,
    pub payments: Vec<SettlementPayment>,
    /// The netting and fee figures (`puente_netting::WindowReport`).
    pub netting: WindowReport,
    /// The FX house's one conversion for this window's cutoff (with the window of the other
    /// currency closed at the same cutoff), signed; `None` without a partner window. Set by the
    /// settlement desk, which holds the signing key ([`crate::cover`]).
    pub fx_cover: Option<crate::cover::SignedCover>,
}

/// Builds the report of `window` (which must carry its flows) with the participants'
/// `profiles`, the fee model and the rate used to express MXN figures in USD.
pub fn build_report(
    window: &WindowView,
    profiles: &BTreeMap<String, ParticipantProfile>,
    fees: &FeeModel,
    rate_mxn_per_usd: Decimal,
) -> Result<SettlementReport, SettlementError> {
    if window.flows.is_empty() && window.obligation_count > 0 {
        return Err(SettlementError::NoFlows(window.id));
    }
    let currency = window.currency;
    let profile_of = |participant: &str| settlement_profile(profiles, participant, currency);
    let mut aggregator = NettingAggregator::new();
    let mut countries = BTreeMap::new();
    for flow in &window.flows {
        let debtor = ParticipantId::new(&flow.debtor)?;
        let creditor = ParticipantId::new(&flow.creditor)?;
        aggregator.push_aggregate(&debtor, &creditor, currency, flow.count, flow.value_minor)?;
    }
    let mut positions = Vec::with_capacity(window.positions.len());
    for p in &window.positions {
        let profile = profile_of(&p.participant)?;
        countries.insert(ParticipantId::new(&p.participant)?, profile.country);
        positions.push(PositionLine {
            participant: p.participant.clone(),
            country: profile.country,
            paid_minor: p.paid_minor,
            received_minor: p.received_minor,
            paid_count: p.paid_count,
            received_count: p.received_count,
            net_minor: p.net_minor,
            confirmed: p.confirmed,
        });
    }
    let result = aggregator.finish()?;
    // The ledger's positions and the netting of its flows must agree exactly.
    for p in &window.positions {
        let net = result.net_minor(&ParticipantId::new(&p.participant)?, currency);
        if net != p.net_minor {
            return Err(SettlementError::Invalid(format!(
                "window {}: {} nets {} from flows but {} in the ledger",
                window.id, p.participant, net, p.net_minor
            )));
        }
    }
    let netting = puente_netting::build_report(&ReportInput {
        result: &result,
        fees,
        countries: &countries,
        rate_mxn_per_usd,
        house: None,
    })?;
    let payments = settlement_payments(window, &netting, profiles)?;
    Ok(SettlementReport {
        window_id: window.id,
        currency,
        state: window.state,
        obligation_count: window.obligation_count,
        first_transfer_ns: window.first_transfer_ns,
        last_transfer_ns: window.last_transfer_ns,
        positions,
        payments,
        netting,
        fx_cover: None,
    })
}

/// The settlement profile of `participant`, which must have a `currency` section.
fn settlement_profile<'a>(
    profiles: &'a BTreeMap<String, ParticipantProfile>,
    participant: &str,
    currency: CurrencyCode,
) -> Result<&'a ParticipantProfile, SettlementError> {
    profiles
        .get(participant)
        .filter(|p| p.currency(currency).is_some())
        .ok_or_else(|| SettlementError::MissingProfile(participant.to_owned(), currency))
}

/// The payments of the netting's plans, numbered from 1, with their ids and each side's bank
/// details from its profile.
fn settlement_payments(
    window: &WindowView,
    netting: &WindowReport,
    profiles: &BTreeMap<String, ParticipantProfile>,
) -> Result<Vec<SettlementPayment>, SettlementError> {
    let currency = window.currency;
    let profile_of = |participant: &str| settlement_profile(profiles, participant, currency);
    let mut payments = Vec::new();
    for plan in &netting.plans {
        for payment in &plan.payments {
            let index = payments.len() as u32 + 1;
            let payer = profile_of(payment.payer.as_str())?;
            let payee = profile_of(payment.payee.as_str())?;
            let (Some(payer_currency), Some(payee_currency)) =
                (payer.currency(currency), payee.currency(currency))
            else {
                return Err(SettlementError::MissingProfile(payment.payer.to_string(), currency));
            };
            let name = |p: &ParticipantProfile| {
                if p.name.is_empty() { p.participant.clone() } else { p.name.clone() }
            };
            payments.push(SettlementPayment {
                index,
                end_to_end_id: format!("PUENTE-W{}-{index}", window.id),
                uetr: uuid_v4_text(puente_core::ids::derive(
                    "settlement/payment-uetr",
                    &[&window.id.to_be_bytes(), &(index as u64).to_be_bytes()],
                )),
                payer: payment.payer.to_string(),
                payee: payment.payee.to_string(),
                currency,
                amount_minor: payment.amount_minor,
                rail: payer_currency.rail,
                payer_name: name(payer),
                payee_name: name(payee),
                payer_bic: payer.bic.clone(),
                payee_bic: payee.bic.clone(),
                payer_bank_id: payer_currency.bank_id.clone(),
                payee_bank_id: payee_currency.bank_id.clone(),
            });
        }
    }
    Ok(payments)
}

pub fn rail_name(rail: SettlementRail) -> &'static str {
    match rail {
        SettlementRail::Fedwire => "FEDWIRE",
        SettlementRail::AchDirectoMexico => "ACH_DIRECTO_MEXICO",
        SettlementRail::Spei => "SPEI",
    }
}

fn bps_text(bps: u32) -> String {
    format!("{}.{:02}%", bps / 100, bps % 100)
}

fn percent_text(p: Option<Decimal>) -> String {
    p.map(|p| format!("{p}%")).unwrap_or_else(|| "n/a".into())
}

/// CSV cells here are ids, codes and numbers (participant ids cannot hold separators); quote
/// defensively anyway.
fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

impl SettlementReport {
    /// Pretty JSON (amounts in minor units as JSON integers; decimals as strings).
    pub fn to_json(&self) -> Result<String, SettlementError> {
        serde_json::to_string_pretty(self).map_err(|e| SettlementError::Invalid(e.to_string()))
    }

    /// Long-format CSV: `section,participant,counterparty,currency,metric,value` (the netting
    /// report's rows, see `puente_netting::WindowReport::to_csv`), plus `settlement` rows for
    /// the window and `position` rows for each participant's net.
    pub fn to_csv(&self) -> String {
        let mut out = self.netting.to_csv();
        let code = self.currency.as_str();
        let _ = writeln!(out, "settlement,,,{code},window_id,{}", self.window_id);
        let _ = writeln!(out, "settlement,,,{code},state,{}", self.state.code());
        let _ = writeln!(out, "settlement,,,{code},obligation_count,{}", self.obligation_count);
        for p in &self.positions {
            let _ = writeln!(out, "position,{},,{code},net_minor,{}", cell(&p.participant), p.net_minor);
            let _ = writeln!(out, "position,{},,{code},confirmed,{}", cell(&p.participant), p.confirmed);
        }
        if let Some(cover) = &self.fx_cover {
            out.push_str(&cover.csv_rows());
        }
        out
    }

    /// The payments as CSV: one row per payment, amounts as decimal text.
    pub fn payments_csv(&self, scale: u32) -> String {
        let mut out = String::from(
            "index,end_to_end_id,uetr,payer,payee,currency,amount,rail,payer_bank_id,payee_bank_id\n",
        );
        for p in &self.payments {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                p.index,
                cell(&p.end_to_end_id),
                p.uetr,
                cell(&p.payer),
                cell(&p.payee),
                p.currency,
                puente_money::format_minor(p.amount_minor, scale),
                rail_name(p.rail),
                cell(&p.payer_bank_id),
                cell(&p.payee_bank_id)
            );
        }
        out
    }

    /// A text table for operators.
    #[expect(clippy::too_many_lines, reason = "one line per figure, in reading order")]
    pub fn to_table(&self, scale: u32) -> String {
        let n = &self.netting;
        let money = |minor: u128| puente_money::format_minor(minor, scale);
        let usd = |minor: u128| format!("{} USD", puente_money::format_minor(minor, 2));
        let mut out = String::new();
        let _ =
            writeln!(out, "Settlement window {} ({}) — {}", self.window_id, self.currency, self.state.code());
        for c in &n.currencies {
            let code = c.currency;
            let _ = writeln!(
                out,
                "  obligations (gross)     {:>8}  {:>20} {code}",
                c.gross_count,
                money(c.gross_value_minor)
            );
            let _ = writeln!(
                out,
                "  bilateral net                     {:>20} {code}",
                money(c.bilateral_net_value_minor)
            );
            let _ = writeln!(
                out,
                "  multilateral net                  {:>20} {code}",
                money(c.multilateral_net_value_minor)
            );
            let _ = writeln!(
                out,
                "  settlement payments     {:>8}  ({:?} solver, {:?})",
                c.payments_count, c.solver, c.settlement_rail
            );
            let _ = writeln!(
                out,
                "  netting efficiency      {:>8}  (bilateral {})",
                bps_text(c.multilateral_efficiency_bps),
                bps_text(c.bilateral_efficiency_bps)
            );
        }
        let t = &n.totals;
        let _ = writeln!(out, "  bank fees if gross      {:>29}", usd(t.gross_bank_fees_usd_minor));
        let _ = writeln!(out, "  bank fees incurred      {:>29}", usd(t.actual_bank_fees_usd_minor));
        let _ = writeln!(
            out,
            "  saving                  {:>29}  ({})",
            format!("{} USD", puente_money::format_signed_minor(t.bank_fee_saving_usd_minor, 2)),
            percent_text(t.bank_fee_saving_percent)
        );
        let _ = writeln!(
            out,
            "  saving incl. FX margin  {:>29}  ({})",
            format!("{} USD", puente_money::format_signed_minor(t.total_saving_usd_minor, 2)),
            percent_text(t.total_saving_percent)
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:<3} {:>18} {:>18} {:>18} {:>12} {:>12} {:>12} {:>9}",
            "PARTICIPANT",
            "CTY",
            "PAID",
            "RECEIVED",
            "NET",
            "FEES GROSS",
            "FEES ACTUAL",
            "SAVING",
            "CONFIRMED"
        );
        for p in &self.positions {
            let fees = n.participants.iter().find(|r| r.participant.as_str() == p.participant);
            let (gross, actual, saving) = fees
                .map(|f| {
                    (
                        puente_money::format_minor(f.gross_bank_fees_usd_minor, 2),
                        puente_money::format_minor(f.actual_bank_fees_usd_minor, 2),
                        puente_money::format_signed_minor(f.bank_fee_saving_usd_minor, 2),
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<20} {:<3} {:>18} {:>18} {:>18} {:>12} {:>12} {:>12} {:>9}",
                p.participant,
                p.country.code(),
                money(p.paid_minor),
                money(p.received_minor),
                puente_money::format_signed_minor(p.net_minor, scale),
                gross,
                actual,
                saving,
                if p.confirmed { "yes" } else { "no" }
            );
        }
        if !self.payments.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:>5}  {:<20} {:<20} {:>18}  {:<18} END-TO-END ID",
                "#", "PAYER", "PAYEE", "AMOUNT", "RAIL"
            );
            for p in &self.payments {
                let _ = writeln!(
                    out,
                    "{:>5}  {:<20} {:<20} {:>18}  {:<18} {}",
                    p.index,
                    p.payer,
                    p.payee,
                    money(p.amount_minor),
                    rail_name(p.rail),
                    p.end_to_end_id
                );
            }
        }
        if let Some(cover) = &self.fx_cover {
            let _ = writeln!(out);
            out.push_str(&cover.to_table());
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use puente_ledger::settlement::{CurrencyProfile, WindowFlow, WindowPosition};

    pub fn profiles() -> BTreeMap<String, ParticipantProfile> {
        let mut out = BTreeMap::new();
        for (id, country, bank_id) in [
            ("US00", Country::Us, "021000021"),
            ("US01", Country::Us, "011000015"),
            ("MX00", Country::Mx, "021000021"),
        ] {
            out.insert(
                id.to_owned(),
                ParticipantProfile {
                    participant: id.into(),
                    name: format!("Bank {id} & Co <test>"),
                    bic: if id == "US00" { "BOFAUS3N".into() } else { String::new() },
                    country,
                    currencies: vec![CurrencyProfile {
                        currency: CurrencyCode::USD,
                        rail: SettlementRail::Fedwire,
                        bank_id: bank_id.into(),
                        net_debit_cap_minor: 100_000_000,
                        settlement_account_id: 1,
                    }],
                    updated_at_ns: 1,
                },
            );
        }
        out
    }

    /// US00 → MX00 3 × 100.00, MX00 → US00 1 × 50.00, US01 → MX00 1 × 25.00.
    pub fn window() -> WindowView {
        let flow = |d: &str, c: &str, count, value| WindowFlow {
            debtor: d.into(),
            creditor: c.into(),
            count,
            value_minor: value,
        };
        let pos = |p: &str, paid: u128, received: u128, pc, rc| WindowPosition {
            participant: p.into(),
            paid_minor: paid,
            received_minor: received,
            paid_count: pc,
            received_count: rc,
            net_minor: received as i128 - paid as i128,
            confirmed: false,
        };
        WindowView {
            id: 7,
            currency: CurrencyCode::USD,
            state: WindowState::Closed,
            opened_at_ns: 1_700_000_000_000_000_000,
            closed_at_ns: 1_700_000_100_000_000_000,
            settled_at_ns: 0,
            completed_at_ns: 0,
            first_transfer_ns: 1_700_000_000_000_000_001,
            last_transfer_ns: 1_700_000_050_000_000_000,
            obligation_count: 5,
            gross_value_minor: 37_500,
            attempts: 0,
            reason: String::new(),
            positions: vec![
                pos("MX00", 5_000, 32_500, 1, 4),
                pos("US00", 30_000, 5_000, 3, 1),
                pos("US01", 2_500, 0, 1, 0),
            ],
            flows: vec![
                flow("MX00", "US00", 1, 5_000),
                flow("US00", "MX00", 3, 30_000),
                flow("US01", "MX00", 1, 2_500),
            ],
        }
    }

    #[test]
    fn report_of_a_small_window() {
        let report = build_report(&window(), &profiles(), &FeeModel::default(), Decimal::new(18, 0)).unwrap();
        let usd = &report.netting.currencies[0];
        assert_eq!((usd.gross_count, usd.gross_value_minor), (5, 37_500));
        assert_eq!(usd.bilateral_net_value_minor, 27_500);
        assert_eq!(usd.multilateral_net_value_minor, 27_500);
        assert_eq!(report.payments.len(), 2);
        let total: u128 = report.payments.iter().map(|p| p.amount_minor).sum();
        assert_eq!(total, 27_500);
        assert!(report.payments.iter().all(|p| p.payee == "MX00"));
        assert_eq!(report.payments[0].end_to_end_id, "PUENTE-W7-1");
        // Five cross-border wires at 56.50 versus two Fedwire payments at 0.94.
        assert_eq!(report.netting.totals.gross_bank_fees_usd_minor, 5 * 5_650);
        assert_eq!(report.netting.totals.actual_bank_fees_usd_minor, 2 * 94);
        let csv = report.to_csv();
        assert!(csv.contains("position,US00,,USD,net_minor,-25000"), "{csv}");
        assert!(report.to_table(2).contains("US01"));
        assert!(report.payments_csv(2).contains(",250.00,FEDWIRE,"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["window_id"], 7);
        // A participant without a profile cannot be reported.
        let mut missing = profiles();
        missing.remove("US01");
        assert!(matches!(
            build_report(&window(), &missing, &FeeModel::default(), Decimal::new(18, 0)),
            Err(SettlementError::MissingProfile(..))
        ));
    }
}
