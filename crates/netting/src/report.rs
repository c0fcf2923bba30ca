//! Fees and savings report for one settlement window.
//!
//! Compares two ways of settling the same window:
//!
//! - **Gross (counterfactual)**: every obligation is settled on its own. A *cross-border*
//!   obligation (debtor and creditor in different countries) goes as one international wire
//!   (sending-bank fee + one correspondent deduction); a domestic one goes on its currency's
//!   settlement rail. Value crossing the border is converted once at the bank FX margin.
//! - **Netted (actual)**: per currency, the fewest-payments plan of the multilateral nets, each
//!   payment on that currency's domestic settlement rail ([`FeeModel::usd_settlement_rail`],
//!   [`FeeModel::mxn_settlement_rail`]: participants are assumed to hold settlement accounts in
//!   each currency they settle). The FX margin applies to the value of settlement payments
//!   between participants in different countries (same rule as gross: value crossing the
//!   border is converted once). When a house is named, the single FX conversion covering its
//!   imbalance (see [`crate::fx`]) is added, charged as one international wire plus the FX
//!   margin on the amount sold (conservative: it makes the netted side dearer).
//!
//! Allocation rule (per participant): *the payer bears the fee*. In the gross case the debtor of
//! each obligation bears its wire fee and FX margin; in the netted case the payer of each
//! settlement payment bears its rail fee and FX margin, and the house bears the FX conversion's
//! wire fee and margin.
//!
//! Currency of figures: fees are charged in the rail's currency (USD for wires, Fedwire and
//! ACH/Directo a México; MXN for SPEI) and kept that way in [`FeeAmounts`]; `*_usd_minor`
//! figures express MXN amounts in USD at the window's rate, rounded half-even to the cent. Each
//! line is converted on its own, so participant lines may not add up to the totals by up to one
//! cent each. FX margins are `value × bps / 10,000` rounded half-even to the minor unit, applied
//! to the summed value of the line (not obligation by obligation).
//!
//! Size: the report's figures, how they are computed, and their table, JSON and CSV renderings,
//! which must agree figure by figure; about 860 lines of code, then its tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use puente_money::{Currency, CurrencyCode, Rounding, round_to_minor};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::aggregate::CurrencyNetting;
use crate::fx::{self, FxCover};
use crate::settle::{SettlementPlan, SolverMethod};
use crate::{NettingError, NettingResult, ParticipantId};

const USD: Currency = Currency { code: CurrencyCode::USD, scale: 2 };
const MXN: Currency = Currency { code: CurrencyCode::MXN, scale: 2 };

/// Largest fee a [`FeeModel`] may configure, in minor units (10,000.00).
pub const FEE_MAX_MINOR: u64 = 1_000_000;

/// Largest FX margin a [`FeeModel`] may configure, in basis points (20%).
pub const FX_MARGIN_MAX_BPS: u32 = 2_000;

/// Basis points in one whole.
const BPS_PER_UNIT: u128 = 10_000;

/// Where a participant is domiciled; an obligation between countries is cross-border.
pub use puente_core::Country;

/// A payment rail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rail {
    /// Outgoing international wire from a US bank, through one correspondent.
    InternationalWire,
    /// Fedwire Funds Service (US, USD, real-time gross settlement).
    Fedwire,
    /// FedACH's Directo a México link into SPEI (USD in, MXN out, next banking day).
    AchDirectoMexico,
    /// SPEI (Mexico, MXN, real time, 24/7).
    Spei,
}

/// Bank fees and FX margin used to price a window. Deserializable from configuration; missing
/// fields take the defaults below (`#[serde(default)]`), unknown fields are rejected.
///
/// Defaults:
/// - international wire: USD 41.50 (average outgoing international wire fee of 11 large US banks) plus USD 15.00 for one
///   correspondent (low end of the USD 15–50 range);
/// - Fedwire: USD 0.94 per transfer: the Federal Reserve's 2024 gross per-transfer fee, tier 1
///   (first 14,000 a month), before volume discounts (frbservices.org; verify
///   against the current fee schedule);
/// - ACH / Directo a México: USD 0.67 per item;
/// - SPEI: MXN 8.00, the top of the MXN 0–8 range customers typically pay, so savings are not
///   overstated;
/// - FX margin: 300 bps (3%), inside the 2–5% range banks charge over mid-market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeeModel {
    pub international_wire_fee_usd_minor: u64,
    pub correspondent_fee_usd_minor: u64,
    pub fedwire_fee_usd_minor: u64,
    pub ach_directo_mexico_fee_usd_minor: u64,
    pub spei_fee_mxn_minor: u64,
    pub fx_margin_bps: u32,
    /// Rail for USD settlement payments: `Fedwire` (default) or `AchDirectoMexico`.
    pub usd_settlement_rail: Rail,
    /// Rail for MXN settlement payments: `Spei`.
    pub mxn_settlement_rail: Rail,
}

impl Default for FeeModel {
    fn default() -> Self {
        FeeModel {
            international_wire_fee_usd_minor: 4_150,
            correspondent_fee_usd_minor: 1_500,
            fedwire_fee_usd_minor: 94,
            ach_directo_mexico_fee_usd_minor: 67,
            spei_fee_mxn_minor: 800,
            fx_margin_bps: 300,
            usd_settlement_rail: Rail::Fedwire,
            mxn_settlement_rail: Rail::Spei,
        }
    }
}

impl FeeModel {
    /// Checks every fee against [`FEE_MAX_MINOR`], the margin against [`FX_MARGIN_MAX_BPS`], and
    /// that each settlement rail charges in the currency it settles.
    pub fn validate(&self) -> Result<(), NettingError> {
        let fees = [
            ("international_wire_fee_usd_minor", self.international_wire_fee_usd_minor),
            ("correspondent_fee_usd_minor", self.correspondent_fee_usd_minor),
            ("fedwire_fee_usd_minor", self.fedwire_fee_usd_minor),
            ("ach_directo_mexico_fee_usd_minor", self.ach_directo_mexico_fee_usd_minor),
            ("spei_fee_mxn_minor", self.spei_fee_mxn_minor),
        ];
        for (name, fee) in fees {
            if fee > FEE_MAX_MINOR {
                return Err(NettingError::InvalidFeeModel(format!("{name} = {fee} exceeds {FEE_MAX_MINOR}")));
            }
        }
        if self.fx_margin_bps > FX_MARGIN_MAX_BPS {
            return Err(NettingError::InvalidFeeModel(format!(
                "fx_margin_bps = {} exceeds {FX_MARGIN_MAX_BPS}",
                self.fx_margin_bps
            )));
        }
        if !matches!(self.usd_settlement_rail, Rail::Fedwire | Rail::AchDirectoMexico) {
            return Err(NettingError::InvalidFeeModel(
                "usd_settlement_rail must be Fedwire or AchDirectoMexico".into(),
            ));
        }
        if self.mxn_settlement_rail != Rail::Spei {
            return Err(NettingError::InvalidFeeModel("mxn_settlement_rail must be Spei".into()));
        }
        Ok(())
    }

    /// The fee of one payment on `rail`, with the currency it is charged in.
    pub fn rail_fee(&self, rail: Rail) -> (CurrencyCode, u64) {
        match rail {
            // Both are at most FEE_MAX_MINOR after validation; saturate rather than overflow.
            Rail::InternationalWire => (
                CurrencyCode::USD,
                self.international_wire_fee_usd_minor.saturating_add(self.correspondent_fee_usd_minor),
            ),
            Rail::Fedwire => (CurrencyCode::USD, self.fedwire_fee_usd_minor),
            Rail::AchDirectoMexico => (CurrencyCode::USD, self.ach_directo_mexico_fee_usd_minor),
            Rail::Spei => (CurrencyCode::MXN, self.spei_fee_mxn_minor),
        }
    }

    /// The domestic rail that settles payments in `currency` (USD and MXN only).
    pub fn settlement_rail(&self, currency: CurrencyCode) -> Result<Rail, NettingError> {
        match currency {
            CurrencyCode::USD => Ok(self.usd_settlement_rail),
            CurrencyCode::MXN => Ok(self.mxn_settlement_rail),
            other => Err(NettingError::UnsupportedCurrency(other)),
        }
    }
}

/// An amount held per fee currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeAmounts {
    pub usd_minor: u128,
    pub mxn_minor: u128,
}

impl FeeAmounts {
    fn add(&mut self, currency: CurrencyCode, amount_minor: u128) -> Result<(), NettingError> {
        let slot = match currency {
            CurrencyCode::USD => &mut self.usd_minor,
            CurrencyCode::MXN => &mut self.mxn_minor,
            other => return Err(NettingError::UnsupportedCurrency(other)),
        };
        *slot = slot.checked_add(amount_minor).ok_or(NettingError::Overflow)?;
        Ok(())
    }

    fn add_times(&mut self, currency: CurrencyCode, unit_minor: u64, count: u64) -> Result<(), NettingError> {
        let amount = u128::from(unit_minor).checked_mul(u128::from(count)).ok_or(NettingError::Overflow)?;
        self.add(currency, amount)
    }

    /// FX margin (`bps`) on each amount, half-even to the minor unit.
    fn margin(&self, bps: u32) -> Result<FeeAmounts, NettingError> {
        Ok(FeeAmounts {
            usd_minor: margin_minor(self.usd_minor, bps)?,
            mxn_minor: margin_minor(self.mxn_minor, bps)?,
        })
    }

    /// Both amounts expressed in USD (MXN converted at `rate_mxn_per_usd`, half-even).
    fn usd_equivalent_minor(&self, rate_mxn_per_usd: Decimal) -> Result<u128, NettingError> {
        self.usd_minor
            .checked_add(mxn_to_usd_minor(self.mxn_minor, rate_mxn_per_usd)?)
            .ok_or(NettingError::Overflow)
    }
}

/// What the report needs besides the netting result.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    pub result: &'a NettingResult,
    pub fees: &'a FeeModel,
    /// Country of every participant in `result` (others are ignored).
    pub countries: &'a BTreeMap<ParticipantId, Country>,
    /// MXN per USD: sizes the FX cover and expresses MXN figures in USD.
    pub rate_mxn_per_usd: Decimal,
    /// The house whose USD/MXN imbalance one FX conversion covers; `None`: no FX conversion.
    pub house: Option<&'a ParticipantId>,
}

/// The priced window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowReport {
    pub rate_mxn_per_usd: Decimal,
    pub fee_model: FeeModel,
    pub currencies: Vec<CurrencyReport>,
    pub totals: WindowTotals,
    /// Sorted by participant id.
    pub participants: Vec<ParticipantReport>,
    pub plans: Vec<SettlementPlan>,
    pub fx_cover: Option<FxCover>,
}

/// Netting figures of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyReport {
    pub currency: CurrencyCode,
    pub settlement_rail: Rail,
    pub solver: SolverMethod,
    pub gross_count: u64,
    pub gross_value_minor: u128,
    pub cross_border_count: u64,
    pub cross_border_value_minor: u128,
    pub bilateral_net_value_minor: u128,
    pub multilateral_net_value_minor: u128,
    pub payments_count: u64,
    pub payments_value_minor: u128,
    /// Settlement payments between participants in different countries.
    pub cross_border_payments_count: u64,
    pub cross_border_payments_value_minor: u128,
    /// `(gross − bilateral net) / gross`, in basis points, rounded down (0 when gross is 0).
    pub bilateral_efficiency_bps: u32,
    /// `(gross − multilateral net) / gross`, in basis points, rounded down (0 when gross is 0).
    pub multilateral_efficiency_bps: u32,
    /// `multilateral net / gross`, in basis points, rounded up (0 when gross is 0).
    pub multilateral_net_to_gross_bps: u32,
}

/// Window totals across currencies, in USD (MXN converted at the window rate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowTotals {
    pub gross_count: u64,
    pub gross_value_usd_minor: u128,
    pub bilateral_net_value_usd_minor: u128,
    pub multilateral_net_value_usd_minor: u128,
    pub multilateral_efficiency_bps: u32,
    pub multilateral_net_to_gross_bps: u32,
    /// Settlement payments across currencies (excluding the FX conversion).
    pub payments_count: u64,
    /// 1 when an FX conversion covers the house's imbalance, else 0.
    pub fx_conversions_count: u64,
    pub gross_bank_fees: FeeAmounts,
    pub actual_bank_fees: FeeAmounts,
    pub gross_bank_fees_usd_minor: u128,
    pub actual_bank_fees_usd_minor: u128,
    pub bank_fee_saving_usd_minor: i128,
    /// `saving / gross × 100`, two decimals, half-even; `None` when gross is 0.
    pub bank_fee_saving_percent: Option<Decimal>,
    pub gross_fx_margin_usd_minor: u128,
    pub actual_fx_margin_usd_minor: u128,
    /// Bank fees plus FX margin.
    pub gross_total_cost_usd_minor: u128,
    pub actual_total_cost_usd_minor: u128,
    pub total_saving_usd_minor: i128,
    pub total_saving_percent: Option<Decimal>,
}

/// One participant's share (allocation rule: the payer bears the fee; see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantReport {
    pub participant: ParticipantId,
    pub country: Country,
    /// Obligations where it is the debtor (all currencies).
    pub obligations_paid_count: u64,
    /// Settlement payments it makes (all currencies, excluding the FX conversion).
    pub payments_made_count: u64,
    pub gross_bank_fees: FeeAmounts,
    pub actual_bank_fees: FeeAmounts,
    pub gross_bank_fees_usd_minor: u128,
    pub actual_bank_fees_usd_minor: u128,
    pub bank_fee_saving_usd_minor: i128,
    pub bank_fee_saving_percent: Option<Decimal>,
    pub gross_fx_margin_usd_minor: u128,
    pub actual_fx_margin_usd_minor: u128,
}

#[derive(Default)]
struct ParticipantAcc {
    obligations_paid_count: u64,
    payments_made_count: u64,
    gross_bank_fees: FeeAmounts,
    actual_bank_fees: FeeAmounts,
    /// Gross case: value of cross-border obligations it owes.
    cross_border_sent: FeeAmounts,
    /// Netted case: value of cross-border settlement payments it makes and of FX it sells.
    fx_converted: FeeAmounts,
}

/// The window's participants (sorted ids) and the country of each, by position.
struct Parties<'a> {
    ids: &'a [ParticipantId],
    country_of: &'a [Country],
}

impl Parties<'_> {
    fn slot(&self, id: &ParticipantId) -> Result<usize, NettingError> {
        self.ids.binary_search(id).map_err(|_| NettingError::UnknownParticipantCountry(id.clone()))
    }

    fn cross_border(&self, a: usize, b: usize) -> bool {
        self.country_of[a] != self.country_of[b]
    }
}

/// The gross counterfactual of one currency: every obligation sent on its own, on the domestic
/// rail (`rail_fee`) or, across the border, by international wire (`wire_fee`), charged to its
/// debtor. Returns the cross-border obligations' count and value.
fn charge_gross(
    netting: &crate::CurrencyNetting,
    (rail_currency, rail_fee_minor): (CurrencyCode, u64),
    (wire_currency, wire_fee_minor): (CurrencyCode, u64),
    parties: &Parties<'_>,
    accs: &mut [ParticipantAcc],
) -> Result<(u64, u128), NettingError> {
    let currency = netting.currency;
    let mut cross_border_count: u64 = 0;
    let mut cross_border_value_minor: u128 = 0;
    for pair in &netting.bilateral {
        let (a, b) = (parties.slot(&pair.a)?, parties.slot(&pair.b)?);
        let cross_border = parties.cross_border(a, b);
        for (debtor, count, value_minor) in
            [(a, pair.a_to_b_count, pair.a_to_b_minor), (b, pair.b_to_a_count, pair.b_to_a_minor)]
        {
            if count == 0 {
                continue;
            }
            let acc = &mut accs[debtor];
            acc.obligations_paid_count =
                acc.obligations_paid_count.checked_add(count).ok_or(NettingError::Overflow)?;
            if cross_border {
                acc.gross_bank_fees.add_times(wire_currency, wire_fee_minor, count)?;
                acc.cross_border_sent.add(currency, value_minor)?;
                cross_border_count = cross_border_count.checked_add(count).ok_or(NettingError::Overflow)?;
                cross_border_value_minor =
                    cross_border_value_minor.checked_add(value_minor).ok_or(NettingError::Overflow)?;
            } else {
                acc.gross_bank_fees.add_times(rail_currency, rail_fee_minor, count)?;
            }
        }
    }
    Ok((cross_border_count, cross_border_value_minor))
}

/// The actual settlement payments of one currency on its domestic rail, charged to their payers
/// (a cross-border payment is also what its payer converts). Returns the cross-border
/// payments' count and value.
fn charge_plan(
    plan: &SettlementPlan,
    currency: CurrencyCode,
    (rail_currency, rail_fee_minor): (CurrencyCode, u64),
    parties: &Parties<'_>,
    accs: &mut [ParticipantAcc],
) -> Result<(u64, u128), NettingError> {
    let mut count: u64 = 0;
    let mut value_minor: u128 = 0;
    for payment in &plan.payments {
        let (payer, payee) = (parties.slot(&payment.payer)?, parties.slot(&payment.payee)?);
        let acc = &mut accs[payer];
        acc.payments_made_count = acc.payments_made_count.checked_add(1).ok_or(NettingError::Overflow)?;
        acc.actual_bank_fees.add(rail_currency, u128::from(rail_fee_minor))?;
        if parties.cross_border(payer, payee) {
            acc.fx_converted.add(currency, payment.amount_minor)?;
            count = count.checked_add(1).ok_or(NettingError::Overflow)?;
            value_minor = value_minor.checked_add(payment.amount_minor).ok_or(NettingError::Overflow)?;
        }
    }
    Ok((count, value_minor))
}

/// Prices the window: plans the settlement payments, sizes the FX cover and compares fees.
///
/// Errors: a currency other than USD or MXN in the window, a participant without a country, an
/// invalid fee model or rate, and arithmetic overflow.
pub fn build_report(input: &ReportInput<'_>) -> Result<WindowReport, NettingError> {
    let ReportInput { result, fees, countries, rate_mxn_per_usd, house } = *input;
    fees.validate()?;
    fx::validate_rate(rate_mxn_per_usd)?;

    let mut accs: Vec<ParticipantAcc> = Vec::with_capacity(result.participants.len());
    let mut country_of: Vec<Country> = Vec::with_capacity(result.participants.len());
    for participant in &result.participants {
        let country = countries
            .get(participant)
            .copied()
            .ok_or_else(|| NettingError::UnknownParticipantCountry(participant.clone()))?;
        country_of.push(country);
        accs.push(ParticipantAcc::default());
    }
    let parties = Parties { ids: &result.participants, country_of: &country_of };
    let wire = fees.rail_fee(Rail::InternationalWire);
    let mut sums = Sums::default();
    let mut currencies = Vec::with_capacity(result.currencies.len());
    let mut plans = Vec::with_capacity(result.currencies.len());
    for netting in &result.currencies {
        let (report, plan) = currency_report(netting, fees, wire, &parties, &mut accs, &mut sums)?;
        currencies.push(report);
        plans.push(plan);
    }
    // The house's single FX conversion.
    let mut fx_conversions_count = 0;
    let fx_cover = match house {
        Some(house) => {
            let cover = fx::fx_cover(result, house, USD, MXN, rate_mxn_per_usd)?;
            if let Some(conversion) = cover.conversion() {
                fx_conversions_count = 1;
                if let Ok(h) = parties.slot(house) {
                    let acc = &mut accs[h];
                    acc.actual_bank_fees.add(wire.0, u128::from(wire.1))?;
                    acc.fx_converted.add(conversion.sell_currency, conversion.sell_amount_minor)?;
                }
            }
            Some(cover)
        }
        None => None,
    };
    let participants = participant_reports(result, &accs, &country_of, fees, rate_mxn_per_usd, &mut sums)?;
    let totals = window_totals(&sums, fx_conversions_count, fees, rate_mxn_per_usd)?;
    Ok(WindowReport {
        rate_mxn_per_usd,
        fee_model: fees.clone(),
        currencies,
        totals,
        participants,
        plans,
        fx_cover,
    })
}

/// What the window's figures add up over currencies and participants.
#[derive(Default)]
struct Sums {
    gross_value: FeeAmounts,
    bilateral_value: FeeAmounts,
    multilateral_value: FeeAmounts,
    cross_border_value: FeeAmounts,
    gross_count: u64,
    payments_count: u64,
    gross_bank_fees: FeeAmounts,
    actual_bank_fees: FeeAmounts,
    fx_converted: FeeAmounts,
}

/// One currency: the gross case and the actual settlement payments charged to the
/// participants, checked against the netting result, and its line of the report.
fn currency_report(
    netting: &CurrencyNetting,
    fees: &FeeModel,
    wire: (CurrencyCode, u64),
    parties: &Parties<'_>,
    accs: &mut [ParticipantAcc],
    sums: &mut Sums,
) -> Result<(CurrencyReport, SettlementPlan), NettingError> {
    let currency = netting.currency;
    let rail = fees.settlement_rail(currency)?;
    let rail_fee = fees.rail_fee(rail);
    let (cross_border_count, cross_border_value_minor) =
        charge_gross(netting, rail_fee, wire, parties, accs)?;
    // Actual: the settlement payments on the domestic rail.
    let plan = netting.plan_payments()?;
    let (cross_border_payments_count, cross_border_payments_value_minor) =
        charge_plan(&plan, currency, rail_fee, parties, accs)?;
    let plan_count = u64::try_from(plan.payments.len()).map_err(|_| NettingError::Overflow)?;
    let plan_value_minor = plan.value_minor();
    // Holds for every result the aggregator produces; a hand-made or edited result may break
    // it, so this is an error rather than an assertion.
    if plan_value_minor != netting.multilateral_net_value_minor {
        return Err(NettingError::InconsistentResult(format!(
            "{currency}: payments move {plan_value_minor}, multilateral net value is {}",
            netting.multilateral_net_value_minor
        )));
    }
    sums.gross_value.add(currency, netting.gross_value_minor)?;
    sums.bilateral_value.add(currency, netting.bilateral_net_value_minor)?;
    sums.multilateral_value.add(currency, netting.multilateral_net_value_minor)?;
    sums.cross_border_value.add(currency, cross_border_value_minor)?;
    sums.gross_count = sums.gross_count.checked_add(netting.gross_count).ok_or(NettingError::Overflow)?;
    sums.payments_count = sums.payments_count.checked_add(plan_count).ok_or(NettingError::Overflow)?;
    let report = CurrencyReport {
        currency,
        settlement_rail: rail,
        solver: plan.method,
        gross_count: netting.gross_count,
        gross_value_minor: netting.gross_value_minor,
        cross_border_count,
        cross_border_value_minor,
        bilateral_net_value_minor: netting.bilateral_net_value_minor,
        multilateral_net_value_minor: netting.multilateral_net_value_minor,
        payments_count: plan_count,
        payments_value_minor: plan_value_minor,
        cross_border_payments_count,
        cross_border_payments_value_minor,
        bilateral_efficiency_bps: efficiency_bps(
            netting.gross_value_minor,
            netting.bilateral_net_value_minor,
        ),
        multilateral_efficiency_bps: efficiency_bps(
            netting.gross_value_minor,
            netting.multilateral_net_value_minor,
        ),
        multilateral_net_to_gross_bps: share_bps_up(
            netting.multilateral_net_value_minor,
            netting.gross_value_minor,
        ),
    };
    Ok((report, plan))
}

/// Every participant's line: its fees and FX margins, gross case against actual; their fee
/// totals go to `sums`.
fn participant_reports(
    result: &NettingResult,
    accs: &[ParticipantAcc],
    country_of: &[Country],
    fees: &FeeModel,
    rate: Decimal,
    sums: &mut Sums,
) -> Result<Vec<ParticipantReport>, NettingError> {
    let mut participants = Vec::with_capacity(accs.len());
    for (i, acc) in accs.iter().enumerate() {
        for (total, part) in [
            (&mut sums.gross_bank_fees, &acc.gross_bank_fees),
            (&mut sums.actual_bank_fees, &acc.actual_bank_fees),
            (&mut sums.fx_converted, &acc.fx_converted),
        ] {
            total.add(CurrencyCode::USD, part.usd_minor)?;
            total.add(CurrencyCode::MXN, part.mxn_minor)?;
        }
        let gross_usd = acc.gross_bank_fees.usd_equivalent_minor(rate)?;
        let actual_usd = acc.actual_bank_fees.usd_equivalent_minor(rate)?;
        participants.push(ParticipantReport {
            participant: result.participants[i].clone(),
            country: country_of[i],
            obligations_paid_count: acc.obligations_paid_count,
            payments_made_count: acc.payments_made_count,
            gross_bank_fees: acc.gross_bank_fees,
            actual_bank_fees: acc.actual_bank_fees,
            gross_bank_fees_usd_minor: gross_usd,
            actual_bank_fees_usd_minor: actual_usd,
            bank_fee_saving_usd_minor: difference(gross_usd, actual_usd)?,
            bank_fee_saving_percent: saving_percent(gross_usd, actual_usd)?,
            gross_fx_margin_usd_minor: acc
                .cross_border_sent
                .margin(fees.fx_margin_bps)?
                .usd_equivalent_minor(rate)?,
            actual_fx_margin_usd_minor: acc
                .fx_converted
                .margin(fees.fx_margin_bps)?
                .usd_equivalent_minor(rate)?,
        });
    }
    Ok(participants)
}

/// The window's totals in USD: values, efficiency, fees, FX margins and what netting saved.
fn window_totals(
    sums: &Sums,
    fx_conversions_count: u64,
    fees: &FeeModel,
    rate: Decimal,
) -> Result<WindowTotals, NettingError> {
    let gross_value_usd_minor = sums.gross_value.usd_equivalent_minor(rate)?;
    let multilateral_net_value_usd_minor = sums.multilateral_value.usd_equivalent_minor(rate)?;
    let gross_bank_fees_usd_minor = sums.gross_bank_fees.usd_equivalent_minor(rate)?;
    let actual_bank_fees_usd_minor = sums.actual_bank_fees.usd_equivalent_minor(rate)?;
    let gross_fx_margin_usd_minor =
        sums.cross_border_value.margin(fees.fx_margin_bps)?.usd_equivalent_minor(rate)?;
    let actual_fx_margin_usd_minor =
        sums.fx_converted.margin(fees.fx_margin_bps)?.usd_equivalent_minor(rate)?;
    let gross_total_cost_usd_minor =
        gross_bank_fees_usd_minor.checked_add(gross_fx_margin_usd_minor).ok_or(NettingError::Overflow)?;
    let actual_total_cost_usd_minor =
        actual_bank_fees_usd_minor.checked_add(actual_fx_margin_usd_minor).ok_or(NettingError::Overflow)?;
    Ok(WindowTotals {
        gross_count: sums.gross_count,
        gross_value_usd_minor,
        bilateral_net_value_usd_minor: sums.bilateral_value.usd_equivalent_minor(rate)?,
        multilateral_net_value_usd_minor,
        multilateral_efficiency_bps: efficiency_bps(gross_value_usd_minor, multilateral_net_value_usd_minor),
        multilateral_net_to_gross_bps: share_bps_up(multilateral_net_value_usd_minor, gross_value_usd_minor),
        payments_count: sums.payments_count,
        fx_conversions_count,
        gross_bank_fees: sums.gross_bank_fees,
        actual_bank_fees: sums.actual_bank_fees,
        gross_bank_fees_usd_minor,
        actual_bank_fees_usd_minor,
        bank_fee_saving_usd_minor: difference(gross_bank_fees_usd_minor, actual_bank_fees_usd_minor)?,
        bank_fee_saving_percent: saving_percent(gross_bank_fees_usd_minor, actual_bank_fees_usd_minor)?,
        gross_fx_margin_usd_minor,
        actual_fx_margin_usd_minor,
        gross_total_cost_usd_minor,
        actual_total_cost_usd_minor,
        total_saving_usd_minor: difference(gross_total_cost_usd_minor, actual_total_cost_usd_minor)?,
        total_saving_percent: saving_percent(gross_total_cost_usd_minor, actual_total_cost_usd_minor)?,
    })
}

impl WindowReport {
    /// The report as pretty-printed JSON (amounts as JSON integers in minor units; decimals as
    /// strings).
    pub fn to_json(&self) -> Result<String, NettingError> {
        serde_json::to_string_pretty(self).map_err(|e| NettingError::Serialization(e.to_string()))
    }

    /// The report as CSV text in long format, one figure per row:
    /// `section,participant,counterparty,currency,metric,value`. Sections: `window`,
    /// `currency`, `totals`, `participant`, `payment`, `fx_cover`. Metric names carry their unit
    /// (`*_minor`, `*_usd_minor`, `*_bps`, `*_percent`, `*_count`); empty cells mean "not
    /// applicable".
    #[expect(clippy::too_many_lines, reason = "one row per figure, in the order of the columns")]
    pub fn to_csv(&self) -> String {
        let mut out = String::from("section,participant,counterparty,currency,metric,value\n");
        let mut row = |section: &str,
                       participant: &str,
                       counterparty: &str,
                       currency: &str,
                       metric: &str,
                       value: &dyn std::fmt::Display| {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                csv_field(section),
                csv_field(participant),
                csv_field(counterparty),
                csv_field(currency),
                csv_field(metric),
                csv_field(&value.to_string())
            );
        };
        row("window", "", "", "", "rate_mxn_per_usd", &self.rate_mxn_per_usd);
        for c in &self.currencies {
            let code = c.currency.as_str();
            row("currency", "", "", code, "settlement_rail", &format!("{:?}", c.settlement_rail));
            row("currency", "", "", code, "solver", &format!("{:?}", c.solver));
            row("currency", "", "", code, "gross_count", &c.gross_count);
            row("currency", "", "", code, "gross_value_minor", &c.gross_value_minor);
            row("currency", "", "", code, "cross_border_count", &c.cross_border_count);
            row("currency", "", "", code, "cross_border_value_minor", &c.cross_border_value_minor);
            row("currency", "", "", code, "bilateral_net_value_minor", &c.bilateral_net_value_minor);
            row("currency", "", "", code, "multilateral_net_value_minor", &c.multilateral_net_value_minor);
            row("currency", "", "", code, "payments_count", &c.payments_count);
            row("currency", "", "", code, "payments_value_minor", &c.payments_value_minor);
            row("currency", "", "", code, "cross_border_payments_count", &c.cross_border_payments_count);
            row(
                "currency",
                "",
                "",
                code,
                "cross_border_payments_value_minor",
                &c.cross_border_payments_value_minor,
            );
            row("currency", "", "", code, "bilateral_efficiency_bps", &c.bilateral_efficiency_bps);
            row("currency", "", "", code, "multilateral_efficiency_bps", &c.multilateral_efficiency_bps);
            row("currency", "", "", code, "multilateral_net_to_gross_bps", &c.multilateral_net_to_gross_bps);
        }
        let t = &self.totals;
        let totals: [(&str, &dyn std::fmt::Display); 18] = [
            ("gross_count", &t.gross_count),
            ("gross_value_usd_minor", &t.gross_value_usd_minor),
            ("bilateral_net_value_usd_minor", &t.bilateral_net_value_usd_minor),
            ("multilateral_net_value_usd_minor", &t.multilateral_net_value_usd_minor),
            ("multilateral_efficiency_bps", &t.multilateral_efficiency_bps),
            ("multilateral_net_to_gross_bps", &t.multilateral_net_to_gross_bps),
            ("payments_count", &t.payments_count),
            ("fx_conversions_count", &t.fx_conversions_count),
            ("gross_bank_fees_usd_minor", &t.gross_bank_fees_usd_minor),
            ("actual_bank_fees_usd_minor", &t.actual_bank_fees_usd_minor),
            ("bank_fee_saving_usd_minor", &t.bank_fee_saving_usd_minor),
            ("bank_fee_saving_percent", &OptionalDecimal(t.bank_fee_saving_percent)),
            ("gross_fx_margin_usd_minor", &t.gross_fx_margin_usd_minor),
            ("actual_fx_margin_usd_minor", &t.actual_fx_margin_usd_minor),
            ("gross_total_cost_usd_minor", &t.gross_total_cost_usd_minor),
            ("actual_total_cost_usd_minor", &t.actual_total_cost_usd_minor),
            ("total_saving_usd_minor", &t.total_saving_usd_minor),
            ("total_saving_percent", &OptionalDecimal(t.total_saving_percent)),
        ];
        for (metric, value) in totals {
            row("totals", "", "", "", metric, value);
        }
        for (currency, metric, fees) in [
            ("USD", "gross_bank_fees_minor", t.gross_bank_fees.usd_minor),
            ("MXN", "gross_bank_fees_minor", t.gross_bank_fees.mxn_minor),
            ("USD", "actual_bank_fees_minor", t.actual_bank_fees.usd_minor),
            ("MXN", "actual_bank_fees_minor", t.actual_bank_fees.mxn_minor),
        ] {
            row("totals", "", "", currency, metric, &fees);
        }
        for p in &self.participants {
            let id = p.participant.as_str();
            let lines: [(&str, &dyn std::fmt::Display); 10] = [
                ("country", &format!("{:?}", p.country)),
                ("obligations_paid_count", &p.obligations_paid_count),
                ("payments_made_count", &p.payments_made_count),
                ("gross_bank_fees_usd_minor", &p.gross_bank_fees_usd_minor),
                ("actual_bank_fees_usd_minor", &p.actual_bank_fees_usd_minor),
                ("bank_fee_saving_usd_minor", &p.bank_fee_saving_usd_minor),
                ("bank_fee_saving_percent", &OptionalDecimal(p.bank_fee_saving_percent)),
                ("gross_fx_margin_usd_minor", &p.gross_fx_margin_usd_minor),
                ("actual_fx_margin_usd_minor", &p.actual_fx_margin_usd_minor),
                ("actual_spei_fees_mxn_minor", &p.actual_bank_fees.mxn_minor),
            ];
            for (metric, value) in lines {
                row("participant", id, "", "", metric, value);
            }
        }
        for plan in &self.plans {
            for payment in &plan.payments {
                row(
                    "payment",
                    payment.payer.as_str(),
                    payment.payee.as_str(),
                    payment.currency.as_str(),
                    "amount_minor",
                    &payment.amount_minor,
                );
            }
        }
        if let Some(cover) = &self.fx_cover {
            let house = cover.house.as_str();
            row("fx_cover", house, "", cover.base.as_str(), "house_net_minor", &cover.base_net_minor);
            row("fx_cover", house, "", cover.quote.as_str(), "house_net_minor", &cover.quote_net_minor);
            if let Some(conversion) = cover.conversion() {
                row(
                    "fx_cover",
                    house,
                    "",
                    conversion.sell_currency.as_str(),
                    "sell_amount_minor",
                    &conversion.sell_amount_minor,
                );
                row(
                    "fx_cover",
                    house,
                    "",
                    conversion.buy_currency.as_str(),
                    "buy_amount_minor",
                    &conversion.buy_amount_minor,
                );
                row("fx_cover", house, "", "", "funded_by_surplus", &conversion.funded_by_surplus);
            } else {
                row("fx_cover", house, "", "", "status", &format!("{:?}", cover.status));
            }
        }
        out
    }
}

struct OptionalDecimal(Option<Decimal>);

impl std::fmt::Display for OptionalDecimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => Ok(()),
        }
    }
}

/// Quotes a CSV cell when it holds a separator, quote or line break (RFC 4180). Participant ids
/// and metric names never need it; this is defence in depth.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `value × bps / 10,000`, half-even to the unit: the FX margin on a converted value.
pub fn margin_minor(value_minor: u128, bps: u32) -> Result<u128, NettingError> {
    let scaled = value_minor.checked_mul(u128::from(bps)).ok_or(NettingError::Overflow)?;
    let (quotient, remainder) = (scaled / BPS_PER_UNIT, scaled % BPS_PER_UNIT);
    let half = BPS_PER_UNIT / 2;
    let round_up = remainder > half || (remainder == half && quotient % 2 == 1);
    Ok(quotient + u128::from(round_up))
}

/// MXN minor units expressed in USD minor units at `rate_mxn_per_usd`, half-even to the cent.
pub fn mxn_to_usd_minor(mxn_minor: u128, rate_mxn_per_usd: Decimal) -> Result<u128, NettingError> {
    if mxn_minor == 0 {
        return Ok(0);
    }
    let usd_major =
        fx::to_major(mxn_minor, MXN.scale)?.checked_div(rate_mxn_per_usd).ok_or(NettingError::Overflow)?;
    Ok(u128::from(round_to_minor(usd_major, USD.scale, Rounding::HalfEven)?))
}

/// `(whole − part) / whole` in basis points, rounded down; 0 when `whole` is 0.
fn efficiency_bps(whole: u128, part: u128) -> u32 {
    if whole == 0 {
        return 0;
    }
    let saved = whole.saturating_sub(part);
    // saved ≤ whole, so the quotient is at most 10,000; the multiplication cannot overflow for
    // the bounded sums of a run (< 10^30), and saturates otherwise.
    let bps = saved.saturating_mul(BPS_PER_UNIT) / whole;
    u32::try_from(bps.min(BPS_PER_UNIT)).unwrap_or(u32::MAX)
}

/// `part / whole` in basis points, rounded up; 0 when `whole` is 0.
fn share_bps_up(part: u128, whole: u128) -> u32 {
    if whole == 0 {
        return 0;
    }
    let bps = part.saturating_mul(BPS_PER_UNIT).div_ceil(whole);
    u32::try_from(bps.min(BPS_PER_UNIT)).unwrap_or(u32::MAX)
}

fn difference(gross: u128, actual: u128) -> Result<i128, NettingError> {
    let gross = i128::try_from(gross).map_err(|_| NettingError::Overflow)?;
    let actual = i128::try_from(actual).map_err(|_| NettingError::Overflow)?;
    gross.checked_sub(actual).ok_or(NettingError::Overflow)
}

/// `(gross − actual) / gross × 100`, two decimals, half-even; `None` when gross is 0.
fn saving_percent(gross: u128, actual: u128) -> Result<Option<Decimal>, NettingError> {
    if gross == 0 {
        return Ok(None);
    }
    let saving = Decimal::try_from_i128_with_scale(difference(gross, actual)?, 0)
        .map_err(|_| NettingError::Overflow)?;
    let gross = fx::to_major(gross, 0)?;
    let percent = saving
        .checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|v| v.checked_div(gross))
        .ok_or(NettingError::Overflow)?;
    Ok(Some(percent.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::{NettingAggregator, Obligation};

    fn id(text: &str) -> ParticipantId {
        ParticipantId::new(text).unwrap()
    }

    #[test]
    fn fee_model_defaults_and_serde() {
        let model: FeeModel = serde_json::from_str("{}").unwrap();
        assert_eq!(model, FeeModel::default());
        assert_eq!(model.rail_fee(Rail::InternationalWire), (CurrencyCode::USD, 5_650));
        assert_eq!(model.rail_fee(Rail::AchDirectoMexico), (CurrencyCode::USD, 67));
        assert_eq!(model.rail_fee(Rail::Spei), (CurrencyCode::MXN, 800));
        model.validate().unwrap();
        let model: FeeModel =
            serde_json::from_str(r#"{"spei_fee_mxn_minor": 0, "usd_settlement_rail": "AchDirectoMexico"}"#)
                .unwrap();
        assert_eq!(model.spei_fee_mxn_minor, 0);
        assert_eq!(model.settlement_rail(CurrencyCode::USD).unwrap(), Rail::AchDirectoMexico);
        assert!(serde_json::from_str::<FeeModel>(r#"{"spei_fee": 1}"#).is_err());
        let bad = FeeModel { fx_margin_bps: 2_001, ..FeeModel::default() };
        assert!(matches!(bad.validate(), Err(NettingError::InvalidFeeModel(_))));
        let bad = FeeModel { mxn_settlement_rail: Rail::Fedwire, ..FeeModel::default() };
        assert!(bad.validate().is_err());
        let bad = FeeModel { fedwire_fee_usd_minor: FEE_MAX_MINOR + 1, ..FeeModel::default() };
        assert!(bad.validate().is_err());
        assert!(matches!(
            model.settlement_rail(CurrencyCode::CAD),
            Err(NettingError::UnsupportedCurrency(_))
        ));
    }

    #[test]
    fn helpers_round_as_documented() {
        assert_eq!(margin_minor(10_000, 300).unwrap(), 300);
        assert_eq!(margin_minor(50, 100).unwrap(), 0); // 0.5 → 0 (even)
        assert_eq!(margin_minor(150, 100).unwrap(), 2); // 1.5 → 2 (even)
        assert_eq!(margin_minor(151, 100).unwrap(), 2);
        assert_eq!(efficiency_bps(1_000, 1), 9_990);
        assert_eq!(share_bps_up(1, 1_000), 10);
        assert_eq!(share_bps_up(1, 3), 3_334);
        assert_eq!(efficiency_bps(0, 0), 0);
        let rate = Decimal::from_str("18.5").unwrap();
        assert_eq!(mxn_to_usd_minor(185_000, rate).unwrap(), 10_000);
        assert_eq!(mxn_to_usd_minor(800, rate).unwrap(), 43); // 0.4324... → 0.43
        assert_eq!(saving_percent(200, 1).unwrap(), Some(Decimal::from_str("99.50").unwrap()));
        assert_eq!(saving_percent(0, 0).unwrap(), None);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }

    /// Two US senders, two MX receivers, the house; remittances south in USD and a trade
    /// payment north, the house paying out in MXN.
    fn window() -> (NettingResult, BTreeMap<ParticipantId, Country>) {
        let rows = [
            ("US1", "MX1", CurrencyCode::USD, 30_000u64),
            ("US1", "MX2", CurrencyCode::USD, 30_000),
            ("US2", "MX1", CurrencyCode::USD, 20_000),
            ("MX1", "US2", CurrencyCode::USD, 50_000),
            ("US1", "US2", CurrencyCode::USD, 1_000),
            ("US1", "HOUSE", CurrencyCode::USD, 10_000),
            ("HOUSE", "MX2", CurrencyCode::MXN, 185_000),
        ];
        let mut agg = NettingAggregator::new();
        for (d, c, cur, amount) in rows {
            agg.push(&Obligation::new(id(d), id(c), cur, amount).unwrap()).unwrap();
        }
        let countries = [
            ("US1", Country::Us),
            ("US2", Country::Us),
            ("HOUSE", Country::Us),
            ("MX1", Country::Mx),
            ("MX2", Country::Mx),
        ]
        .into_iter()
        .map(|(p, c)| (id(p), c))
        .collect();
        (agg.finish().unwrap(), countries)
    }

    #[test]
    fn report_prices_gross_against_netted() {
        let (result, countries) = window();
        let fees = FeeModel::default();
        let house = id("HOUSE");
        let input = ReportInput {
            result: &result,
            fees: &fees,
            countries: &countries,
            rate_mxn_per_usd: Decimal::from_str("18.5").unwrap(),
            house: Some(&house),
        };
        let report = build_report(&input).unwrap();
        let usd = &report.currencies[1];
        assert_eq!(usd.currency, CurrencyCode::USD);
        assert_eq!(usd.gross_count, 6);
        assert_eq!(usd.gross_value_minor, 141_000);
        // Cross-border: US1→MX1, US1→MX2, US2→MX1, MX1→US2.
        assert_eq!(usd.cross_border_count, 4);
        assert_eq!(usd.cross_border_value_minor, 130_000);
        // Nets: US1 −71,000; US2 +31,000 (20k out, 50k + 1k in); MX1 0 (50k in, 50k out);
        // MX2 +30,000; HOUSE +10,000 (USD).
        assert_eq!(usd.multilateral_net_value_minor, 71_000);
        assert_eq!(usd.payments_count, 3);
        assert_eq!(usd.payments_value_minor, 71_000);
        let t = &report.totals;
        // Gross fees: 5 international wires of USD 56.50 (the 4 above and HOUSE→MX2 in MXN)
        // and 2 domestic Fedwire transfers of USD 0.94.
        assert_eq!(report.currencies[0].cross_border_count, 1);
        assert_eq!(t.gross_bank_fees.usd_minor, 5 * 5_650 + 2 * 94);
        assert_eq!(t.gross_bank_fees.mxn_minor, 0);
        assert_eq!(t.gross_bank_fees_usd_minor, 5 * 5_650 + 2 * 94);
        // Actual: 3 Fedwire + 1 SPEI (MXN 8.00 = USD 0.43 at 18.5) + the FX conversion's wire
        // (the house sells USD 100.00 for its MXN 1,850.00 deficit).
        let conversion = report.fx_cover.as_ref().unwrap().conversion().unwrap().clone();
        assert_eq!(conversion.sell_amount_minor, 10_000);
        assert!(conversion.funded_by_surplus);
        assert_eq!(t.actual_bank_fees.usd_minor, 3 * 94 + 5_650);
        assert_eq!(t.actual_bank_fees.mxn_minor, 800);
        assert_eq!(
            t.bank_fee_saving_usd_minor,
            t.gross_bank_fees_usd_minor as i128 - t.actual_bank_fees_usd_minor as i128
        );
        assert_eq!(t.actual_bank_fees_usd_minor, 3 * 94 + 5_650 + 43);
        assert_eq!(t.bank_fee_saving_usd_minor, 28_438 - 5_975);
        // 22,463 / 28,438 = 78.9894...%
        assert_eq!(t.bank_fee_saving_percent, Some(Decimal::from_str("78.99").unwrap()));
        // FX margin: 3% of USD 1,300.00 and of MXN 1,850.00 (= USD 3.00) crossing the border
        // gross, versus 3% of the cross-border settlement payments (US1→MX2 USD 300.00,
        // HOUSE→MX2 MXN 1,850.00) and of the USD 100.00 converted.
        assert_eq!(t.gross_fx_margin_usd_minor, 3_900 + 300);
        assert_eq!(usd.cross_border_payments_count, 1);
        assert_eq!(usd.cross_border_payments_value_minor, 30_000);
        assert_eq!(t.actual_fx_margin_usd_minor, 900 + 300 + 300);
        assert_eq!(t.fx_conversions_count, 1);

        // Per participant: the payer bears the fee.
        let us1 = report.participants.iter().find(|p| p.participant == id("US1")).unwrap();
        assert_eq!(us1.obligations_paid_count, 4);
        assert_eq!(us1.gross_bank_fees.usd_minor, 2 * 5_650 + 2 * 94);
        assert_eq!(us1.actual_bank_fees.usd_minor, u128::from(us1.payments_made_count) * 94);
        let house_line = report.participants.iter().find(|p| p.participant == house).unwrap();
        assert_eq!(house_line.actual_bank_fees.usd_minor, 5_650);
        assert_eq!(house_line.actual_bank_fees.mxn_minor, 800);
        assert_eq!(house_line.actual_fx_margin_usd_minor, 300 + 300);
        assert_eq!(us1.actual_fx_margin_usd_minor, 900);
        let fees_sum: u128 = report.participants.iter().map(|p| p.actual_bank_fees.usd_minor).sum();
        assert_eq!(fees_sum, t.actual_bank_fees.usd_minor);

        // Renders.
        let json = report.to_json().unwrap();
        let back: WindowReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let csv = report.to_csv();
        assert!(csv.starts_with("section,participant,counterparty,currency,metric,value\n"));
        assert!(csv.contains("currency,,,USD,multilateral_net_value_minor,71000\n"));
        assert!(csv.contains("fx_cover,HOUSE,,USD,sell_amount_minor,10000\n"));
        assert!(csv.lines().all(|line| line.split(',').count() == 6));
    }

    #[test]
    fn report_errors() {
        let (result, mut countries) = window();
        let fees = FeeModel::default();
        countries.remove(&id("MX2"));
        let input = ReportInput {
            result: &result,
            fees: &fees,
            countries: &countries,
            rate_mxn_per_usd: Decimal::from(18),
            house: None,
        };
        assert_eq!(build_report(&input), Err(NettingError::UnknownParticipantCountry(id("MX2"))));
        let (result, countries) = window();
        let input =
            ReportInput { result: &result, countries: &countries, rate_mxn_per_usd: Decimal::ZERO, ..input };
        assert!(matches!(build_report(&input), Err(NettingError::InvalidRate(_))));

        let (mut edited, countries) = window();
        edited.currencies[1].multilateral_net_value_minor += 1;
        let input = ReportInput {
            result: &edited,
            countries: &countries,
            rate_mxn_per_usd: Decimal::from(18),
            ..input
        };
        assert!(matches!(build_report(&input), Err(NettingError::InconsistentResult(_))));

        let mut agg = NettingAggregator::new();
        agg.push(&Obligation::new(id("US1"), id("MX1"), CurrencyCode::CAD, 1).unwrap()).unwrap();
        let result = agg.finish().unwrap();
        let input = ReportInput { result: &result, rate_mxn_per_usd: Decimal::from(18), ..input };
        assert_eq!(build_report(&input), Err(NettingError::UnsupportedCurrency(CurrencyCode::CAD)));
    }
}
