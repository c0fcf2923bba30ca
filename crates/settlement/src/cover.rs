//! One FX cover per cutoff (cross-currency netting): the single conversion that covers the FX
//! house's imbalance between a USD window and an MXN window closed at the same cutoff.
//!
//! Each currency settles in its own window, and the nets of a window sum to zero, so the house
//! (the participant whose liquidity accounts take the FX legs) is where the imbalance between
//! currencies shows: it collects USD from senders (positive USD net) and owes MXN to payout
//! banks (negative MXN net). After both windows settle, the house's settlement account holds
//! its USD net and is short its MXN net; one conversion (sized by
//! [`puente_netting::fx_cover`]: buy exactly the deficit, sell the other currency rounded up)
//! brings the deficit currency back to exactly zero. What is left in the surplus currency (net
//! − sold) is what the house kept: its spread and fees, shown as `house_*_after_minor`.
//!
//! Pairing: a USD window and an MXN window share a cutoff when both have been closed and their
//! close times are at most [`COVER_PAIRING_TOLERANCE_NS`] apart (the scheduler's
//! `close_all_open` closes them milliseconds apart; an operator closing both by hand has five
//! minutes); the nearest such window of the other currency is the partner ([`pair_of`]).
//!
//! The saving ([`CoverSaving`]) compares the one conversion with converting every remittance
//! one by one, from the same [`FeeModel`]: each conversion is charged one international wire
//! (sending fee + correspondent) and the FX margin on the value it buys. One by one, the
//! remittances are the house's obligations in the deficit currency (count and gross value, the
//! house's `paid` figures in that window); the cover buys only the net deficit once. Margins
//! are half-even to the minor unit; MXN figures are expressed in USD at the cover's rate,
//! half-even to the cent.
//!
//! The cover is signed like a quote: [`CutoffCover::canonical_bytes`] is a versioned encoding
//! with its own magic (`PNTC`, so it can never be read as a quote), signed with the FX desk's
//! Ed25519 key (the server does the signing; this module is pure).

use std::collections::BTreeMap;

use puente_ledger::settlement::{WindowState, WindowView};
use puente_money::{Currency, CurrencyCode};
use puente_netting::report::{margin_minor, mxn_to_usd_minor};
use puente_netting::{FeeModel, FxConversion, FxCoverStatus, NettingAggregator, ParticipantId, Rail};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::SettlementError;

/// Windows of different currencies whose closes are at most this far apart share a cutoff
/// (five minutes).
pub const COVER_PAIRING_TOLERANCE_NS: u64 = 5 * 60 * 1_000_000_000;
/// The first bytes of a cover's canonical encoding (a quote's are different: a signed cover is
/// never a signed quote).
pub const COVER_ENCODING_MAGIC: &[u8; 4] = b"PNTC";
/// Version of the canonical encoding.
pub const COVER_ENCODING_VERSION: u8 = 1;
/// Longest rate text in the encoding, in bytes.
const RATE_TEXT_LEN_MAX: usize = 40;

const USD: Currency = Currency { code: CurrencyCode::USD, scale: 2 };
const MXN: Currency = Currency { code: CurrencyCode::MXN, scale: 2 };

/// What sizing a cover needs.
#[derive(Debug, Clone, Copy)]
pub struct CoverInput<'a> {
    /// The USD window, with its flows.
    pub usd: &'a WindowView,
    /// The MXN window closed at the same cutoff, with its flows.
    pub mxn: &'a WindowView,
    /// The FX house's participant id.
    pub house: &'a str,
    pub fees: &'a FeeModel,
    /// MXN per USD: the conversion's rate (the FX desk's mid rate, or the configured one).
    pub rate_mxn_per_usd: Decimal,
}

/// Whether the house needs a conversion at this cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoverStatus {
    /// No deficit in either currency: nothing to convert.
    NoDeficit,
    /// A deficit in exactly one currency, covered by the conversion.
    Convert,
    /// Deficits in both currencies: no conversion covers them; the house funds both sides.
    DeficitInBoth,
}

impl CoverStatus {
    pub fn code(self) -> &'static str {
        match self {
            CoverStatus::NoDeficit => "NO_DEFICIT",
            CoverStatus::Convert => "CONVERT",
            CoverStatus::DeficitInBoth => "DEFICIT_IN_BOTH",
        }
    }
}

/// One conversion against converting every remittance one by one (all figures in USD minor
/// units; see the module docs for the rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverSaving {
    /// The deficit currency (what is bought); `None` without a conversion.
    pub currency: Option<CurrencyCode>,
    /// The house's obligations in the deficit currency: conversions had each remittance been
    /// converted on its own.
    pub remittances_count: u64,
    /// Their gross value, in the deficit currency.
    pub remittances_value_minor: u128,
    pub one_by_one_fees_usd_minor: u128,
    pub one_by_one_margin_usd_minor: u128,
    pub one_by_one_total_usd_minor: u128,
    /// 1 with a conversion, else 0.
    pub cover_count: u64,
    pub cover_fees_usd_minor: u128,
    pub cover_margin_usd_minor: u128,
    pub cover_total_usd_minor: u128,
    /// one by one − cover (fees plus margin).
    pub saving_usd_minor: i128,
    /// `saving / one by one × 100`, two decimals, half-even; `None` when one by one is 0.
    pub saving_percent: Option<Decimal>,
}

/// The cover of one cutoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoffCover {
    pub usd_window_id: u64,
    pub mxn_window_id: u64,
    pub house: String,
    /// MXN per USD.
    pub rate_mxn_per_usd: Decimal,
    /// The house's nets in the two windows (positive: it receives at settlement).
    pub house_usd_net_minor: i128,
    pub house_mxn_net_minor: i128,
    pub status: CoverStatus,
    pub conversion: Option<FxConversion>,
    /// The house's settlement accounts' change over the cutoff: its net from the settlement
    /// transfers plus the conversion. The deficit currency ends at exactly 0; the surplus
    /// currency keeps net − sold (what the house kept).
    pub house_usd_after_minor: i128,
    pub house_mxn_after_minor: i128,
    pub saving: CoverSaving,
}

/// A cover as recorded and signed (hex of the canonical bytes and of the Ed25519 signature,
/// with the signing key's id, so a reader can verify it with the FX desk's public keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCover {
    pub cover: CutoffCover,
    pub canonical_hex: String,
    pub signature_hex: String,
    pub key_id: String,
    /// True once the conversion is journaled (posted on the ledger, or recorded when there is
    /// nothing to convert); false for a plan ahead of the settlement run.
    pub recorded: bool,
}

/// The partner of `window` among `candidates`: the nearest closed window of the other currency
/// (USD ↔ MXN) whose close is at most [`COVER_PAIRING_TOLERANCE_NS`] from `window`'s. Open
/// windows have no partner. Ties go to the lower window id.
pub fn pair_of<'a>(window: &WindowView, candidates: &'a [WindowView]) -> Option<&'a WindowView> {
    let other = match window.currency {
        c if c == CurrencyCode::USD => CurrencyCode::MXN,
        c if c == CurrencyCode::MXN => CurrencyCode::USD,
        _ => return None,
    };
    if window.state == WindowState::Open || window.closed_at_ns == 0 {
        return None;
    }
    candidates
        .iter()
        .filter(|w| w.currency == other && w.state != WindowState::Open && w.closed_at_ns != 0)
        .map(|w| (w.closed_at_ns.abs_diff(window.closed_at_ns), w.id, w))
        .filter(|(distance, _, _)| *distance <= COVER_PAIRING_TOLERANCE_NS)
        .min_by_key(|(distance, id, _)| (*distance, *id))
        .map(|(_, _, w)| w)
}

/// Sizes the cover of a cutoff and prices it against converting every remittance one by one.
///
/// Errors: windows of the wrong currencies, windows without their flows, flows that disagree
/// with the positions, an invalid rate or fee model, overflow.
pub fn size_cover(input: &CoverInput<'_>) -> Result<CutoffCover, SettlementError> {
    let CoverInput { usd, mxn, house, fees, rate_mxn_per_usd } = *input;
    if usd.currency != CurrencyCode::USD || mxn.currency != CurrencyCode::MXN {
        return Err(SettlementError::Invalid(format!(
            "an FX cover pairs a USD and an MXN window, not {} and {}",
            usd.currency, mxn.currency
        )));
    }
    fees.validate()?;
    let house_id = ParticipantId::new(house)?;
    let mut aggregator = NettingAggregator::new();
    for window in [usd, mxn] {
        if window.flows.is_empty() && window.obligation_count > 0 {
            return Err(SettlementError::NoFlows(window.id));
        }
        for flow in &window.flows {
            let debtor = ParticipantId::new(&flow.debtor)?;
            let creditor = ParticipantId::new(&flow.creditor)?;
            aggregator.push_aggregate(&debtor, &creditor, window.currency, flow.count, flow.value_minor)?;
        }
    }
    let result = aggregator.finish()?;
    fn position<'w>(w: &'w WindowView, house: &str) -> Option<&'w puente_ledger::settlement::WindowPosition> {
        w.positions.iter().find(|p| p.participant == house)
    }
    for window in [usd, mxn] {
        let ledger_net = position(window, house).map_or(0, |p| p.net_minor);
        let netted = result.net_minor(&house_id, window.currency);
        if ledger_net != netted {
            return Err(SettlementError::Invalid(format!(
                "window {}: {house} nets {netted} from flows but {ledger_net} in the ledger",
                window.id
            )));
        }
    }
    let cover = puente_netting::fx_cover(&result, &house_id, USD, MXN, rate_mxn_per_usd)?;
    let (status, conversion) = match &cover.status {
        FxCoverStatus::NoDeficit => (CoverStatus::NoDeficit, None),
        FxCoverStatus::DeficitInBoth => (CoverStatus::DeficitInBoth, None),
        FxCoverStatus::Convert(conversion) => (CoverStatus::Convert, Some(conversion.clone())),
    };
    let (mut usd_after, mut mxn_after) = (cover.base_net_minor, cover.quote_net_minor);
    let mut saving = CoverSaving::default();
    if let Some(c) = &conversion {
        let sold = i128::try_from(c.sell_amount_minor).map_err(|_| overflow())?;
        let bought = i128::try_from(c.buy_amount_minor).map_err(|_| overflow())?;
        let (sell_after, buy_after) = if c.sell_currency == CurrencyCode::USD {
            (&mut usd_after, &mut mxn_after)
        } else {
            (&mut mxn_after, &mut usd_after)
        };
        *sell_after = sell_after.checked_sub(sold).ok_or_else(overflow)?;
        *buy_after = buy_after.checked_add(bought).ok_or_else(overflow)?;
        let deficit_window = if c.buy_currency == CurrencyCode::USD { usd } else { mxn };
        let (count, value) = position(deficit_window, house).map_or((0, 0), |p| (p.paid_count, p.paid_minor));
        saving = price_saving(fees, c, count, value, rate_mxn_per_usd)?;
    }
    Ok(CutoffCover {
        usd_window_id: usd.id,
        mxn_window_id: mxn.id,
        house: house.to_owned(),
        rate_mxn_per_usd,
        house_usd_net_minor: cover.base_net_minor,
        house_mxn_net_minor: cover.quote_net_minor,
        status,
        conversion,
        house_usd_after_minor: usd_after,
        house_mxn_after_minor: mxn_after,
        saving,
    })
}

fn overflow() -> SettlementError {
    SettlementError::Netting(puente_netting::NettingError::Overflow)
}

/// In USD minor units: `amount` of `currency` at `rate` (MXN half-even to the cent).
fn usd_minor(currency: CurrencyCode, amount_minor: u128, rate: Decimal) -> Result<u128, SettlementError> {
    Ok(if currency == CurrencyCode::USD { amount_minor } else { mxn_to_usd_minor(amount_minor, rate)? })
}

fn price_saving(
    fees: &FeeModel,
    conversion: &FxConversion,
    remittances_count: u64,
    remittances_value_minor: u128,
    rate: Decimal,
) -> Result<CoverSaving, SettlementError> {
    let (wire_currency, wire_fee_minor) = fees.rail_fee(Rail::InternationalWire);
    let bought = conversion.buy_currency;
    let wire_usd = usd_minor(wire_currency, u128::from(wire_fee_minor), rate)?;
    let one_by_one_fees = wire_usd.checked_mul(u128::from(remittances_count)).ok_or_else(overflow)?;
    let one_by_one_margin =
        usd_minor(bought, margin_minor(remittances_value_minor, fees.fx_margin_bps)?, rate)?;
    let cover_margin =
        usd_minor(bought, margin_minor(conversion.buy_amount_minor, fees.fx_margin_bps)?, rate)?;
    let one_by_one_total = one_by_one_fees.checked_add(one_by_one_margin).ok_or_else(overflow)?;
    let cover_total = wire_usd.checked_add(cover_margin).ok_or_else(overflow)?;
    let saving = i128::try_from(one_by_one_total).map_err(|_| overflow())?
        - i128::try_from(cover_total).map_err(|_| overflow())?;
    let saving_percent = if one_by_one_total == 0 {
        None
    } else {
        let percent = Decimal::from_i128_with_scale(saving, 0)
            .checked_mul(Decimal::ONE_HUNDRED)
            .and_then(|v| v.checked_div(Decimal::from_i128_with_scale(one_by_one_total as i128, 0)))
            .ok_or_else(overflow)?;
        Some(percent.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven))
    };
    Ok(CoverSaving {
        currency: Some(bought),
        remittances_count,
        remittances_value_minor,
        one_by_one_fees_usd_minor: one_by_one_fees,
        one_by_one_margin_usd_minor: one_by_one_margin,
        one_by_one_total_usd_minor: one_by_one_total,
        cover_count: 1,
        cover_fees_usd_minor: wire_usd,
        cover_margin_usd_minor: cover_margin,
        cover_total_usd_minor: cover_total,
        saving_usd_minor: saving,
        saving_percent,
    })
}

impl CutoffCover {
    /// The canonical, versioned encoding that is signed: magic `PNTC`, version, both window
    /// ids (u64 BE), the house (u16 BE length + bytes), the rate as normalized decimal text
    /// (u8 length + bytes), both nets (i128 BE), the status (0 no deficit, 1 convert, 2
    /// deficit in both) and, with a conversion, sell currency, sell amount (u128 BE), buy
    /// currency, buy amount. Everything a reader relies on is in it; the saving is derived
    /// from it and the fee model.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(COVER_ENCODING_MAGIC);
        out.push(COVER_ENCODING_VERSION);
        out.extend_from_slice(&self.usd_window_id.to_be_bytes());
        out.extend_from_slice(&self.mxn_window_id.to_be_bytes());
        let house = &self.house.as_bytes()[..self.house.len().min(puente_core::PARTICIPANT_ID_LEN_MAX)];
        out.extend_from_slice(&(house.len() as u16).to_be_bytes());
        out.extend_from_slice(house);
        let rate = self.rate_mxn_per_usd.normalize().to_string();
        let rate = &rate.as_bytes()[..rate.len().min(RATE_TEXT_LEN_MAX)];
        out.push(rate.len() as u8);
        out.extend_from_slice(rate);
        out.extend_from_slice(&self.house_usd_net_minor.to_be_bytes());
        out.extend_from_slice(&self.house_mxn_net_minor.to_be_bytes());
        match (&self.status, &self.conversion) {
            (CoverStatus::Convert, Some(c)) => {
                out.push(1);
                out.extend_from_slice(&c.sell_currency.as_bytes());
                out.extend_from_slice(&c.sell_amount_minor.to_be_bytes());
                out.extend_from_slice(&c.buy_currency.as_bytes());
                out.extend_from_slice(&c.buy_amount_minor.to_be_bytes());
            }
            (CoverStatus::DeficitInBoth, _) => out.push(2),
            _ => out.push(0),
        }
        out
    }
}

impl SignedCover {
    /// Text lines for the operator's table.
    pub fn to_table(&self) -> String {
        let c = &self.cover;
        let usd = |minor: u128| format!("{} USD", puente_money::format_minor(minor, 2));
        let mut out = format!(
            "FX cover of windows {} (USD) and {} (MXN) — {}{}\n",
            c.usd_window_id,
            c.mxn_window_id,
            c.status.code(),
            if self.recorded { ", recorded" } else { ", planned (recorded when both windows settle)" }
        );
        out.push_str(&format!(
            "  house {} nets             {} USD, {} MXN at {} MXN/USD\n",
            c.house,
            puente_money::format_signed_minor(c.house_usd_net_minor, 2),
            puente_money::format_signed_minor(c.house_mxn_net_minor, 2),
            c.rate_mxn_per_usd
        ));
        if let Some(v) = &c.conversion {
            out.push_str(&format!(
                "  conversion              sell {} {}, buy {} {}\n",
                puente_money::format_minor(v.sell_amount_minor, 2),
                v.sell_currency,
                puente_money::format_minor(v.buy_amount_minor, 2),
                v.buy_currency
            ));
            let s = &c.saving;
            out.push_str(&format!(
                "  one by one ({:>6})      {:>20}\n  one conversion          {:>20}\n  saving                  {:>20}  ({})\n",
                s.remittances_count,
                usd(s.one_by_one_total_usd_minor),
                usd(s.cover_total_usd_minor),
                format!("{} USD", puente_money::format_signed_minor(s.saving_usd_minor, 2)),
                s.saving_percent.map(|p| format!("{p}%")).unwrap_or_else(|| "n/a".into())
            ));
        }
        out.push_str(&format!(
            "  house after             {} USD, {} MXN\n  signed by key {}: {}\n",
            puente_money::format_signed_minor(c.house_usd_after_minor, 2),
            puente_money::format_signed_minor(c.house_mxn_after_minor, 2),
            self.key_id,
            self.signature_hex
        ));
        out
    }

    /// `fx_cover` CSV rows (`section,participant,counterparty,currency,metric,value`).
    pub fn csv_rows(&self) -> String {
        let c = &self.cover;
        let h = &c.house;
        let mut rows: Vec<(String, &str, String)> = vec![
            (String::new(), "usd_window_id", c.usd_window_id.to_string()),
            (String::new(), "mxn_window_id", c.mxn_window_id.to_string()),
            (String::new(), "status", c.status.code().to_owned()),
            (String::new(), "rate_mxn_per_usd", c.rate_mxn_per_usd.to_string()),
            ("USD".into(), "house_net_minor", c.house_usd_net_minor.to_string()),
            ("MXN".into(), "house_net_minor", c.house_mxn_net_minor.to_string()),
            ("USD".into(), "house_after_minor", c.house_usd_after_minor.to_string()),
            ("MXN".into(), "house_after_minor", c.house_mxn_after_minor.to_string()),
        ];
        if let Some(v) = &c.conversion {
            rows.push((v.sell_currency.to_string(), "sell_amount_minor", v.sell_amount_minor.to_string()));
            rows.push((v.buy_currency.to_string(), "buy_amount_minor", v.buy_amount_minor.to_string()));
        }
        let s = &c.saving;
        for (metric, value) in [
            ("remittances_count", s.remittances_count.to_string()),
            ("remittances_value_minor", s.remittances_value_minor.to_string()),
            ("one_by_one_total_usd_minor", s.one_by_one_total_usd_minor.to_string()),
            ("cover_total_usd_minor", s.cover_total_usd_minor.to_string()),
            ("saving_usd_minor", s.saving_usd_minor.to_string()),
            ("saving_percent", s.saving_percent.map(|p| p.to_string()).unwrap_or_default()),
            ("recorded", self.recorded.to_string()),
            ("key_id", self.key_id.clone()),
            ("signature_hex", self.signature_hex.clone()),
        ] {
            rows.push((String::new(), metric, value));
        }
        rows.into_iter()
            .map(|(currency, metric, value)| format!("fx_cover,{h},,{currency},{metric},{value}\n"))
            .collect()
    }
}

/// The house's nets per currency in a set of windows (for tests and checks).
pub fn house_nets(windows: &[&WindowView], house: &str) -> BTreeMap<CurrencyCode, i128> {
    let mut out = BTreeMap::new();
    for w in windows {
        let net = w.positions.iter().find(|p| p.participant == house).map_or(0, |p| p.net_minor);
        *out.entry(w.currency).or_insert(0) += net;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;
    use puente_ledger::settlement::{WindowFlow, WindowPosition};

    use super::*;

    const HOUSE: &str = "puente-house";

    /// A window of `currency` from (debtor, creditor, count, value) flows, positions derived.
    fn window(
        id: u64,
        currency: CurrencyCode,
        closed_at_ns: u64,
        flows: &[(&str, &str, u64, u128)],
    ) -> WindowView {
        let mut positions: BTreeMap<String, WindowPosition> = BTreeMap::new();
        let blank = |p: &str| WindowPosition {
            participant: p.to_owned(),
            paid_minor: 0,
            received_minor: 0,
            paid_count: 0,
            received_count: 0,
            net_minor: 0,
            confirmed: false,
        };
        let mut merged: BTreeMap<(String, String), (u64, u128)> = BTreeMap::new();
        for &(d, c, count, value) in flows {
            let e = merged.entry((d.to_owned(), c.to_owned())).or_default();
            e.0 += count;
            e.1 += value;
            let dp = positions.entry(d.to_owned()).or_insert_with(|| blank(d));
            dp.paid_minor += value;
            dp.paid_count += count;
            dp.net_minor -= value as i128;
            let cp = positions.entry(c.to_owned()).or_insert_with(|| blank(c));
            cp.received_minor += value;
            cp.received_count += count;
            cp.net_minor += value as i128;
        }
        WindowView {
            id,
            currency,
            state: WindowState::Closed,
            opened_at_ns: 1,
            closed_at_ns,
            settled_at_ns: 0,
            completed_at_ns: 0,
            first_transfer_ns: 2,
            last_transfer_ns: 3,
            obligation_count: flows.iter().map(|f| f.2).sum(),
            gross_value_minor: flows.iter().map(|f| f.3).sum(),
            attempts: 0,
            reason: String::new(),
            positions: positions.into_values().collect(),
            flows: merged
                .into_iter()
                .map(|((debtor, creditor), (count, value_minor))| WindowFlow {
                    debtor,
                    creditor,
                    count,
                    value_minor,
                })
                .collect(),
        }
    }

    /// The hand-computed day. USD window 1: senders at two US apps pay the house for 5
    /// remittances, USD 1,000.00 in all; one US app also owes another USD 50.00. MXN window 2:
    /// the house pays out 5 remittances to two Mexican banks, MXN 17,800.00 in all; one bank
    /// pays the house back MXN 100.00 (a refund). Rate 18.35 MXN per USD.
    fn day() -> (WindowView, WindowView) {
        let usd = window(
            1,
            CurrencyCode::USD,
            1_000_000_000_000,
            &[
                ("remit-a", HOUSE, 3, 60_000),    // 600.00
                ("remit-b", HOUSE, 2, 40_000),    // 400.00
                ("remit-a", "remit-b", 1, 5_000), // 50.00, not the house's
            ],
        );
        let mxn = window(
            2,
            CurrencyCode::MXN,
            1_000_000_000_000 + 3_000_000,
            &[
                (HOUSE, "mx-bank-1", 3, 1_070_000), // 10,700.00
                (HOUSE, "mx-bank-2", 2, 710_000),   // 7,100.00
                ("mx-bank-1", HOUSE, 1, 10_000),    // 100.00 back
            ],
        );
        (usd, mxn)
    }

    #[test]
    fn a_hand_computed_day() {
        let (usd, mxn) = day();
        let fees = FeeModel::default();
        let rate = Decimal::from_str("18.35").unwrap();
        let cover = size_cover(&CoverInput {
            usd: &usd,
            mxn: &mxn,
            house: HOUSE,
            fees: &fees,
            rate_mxn_per_usd: rate,
        })
        .unwrap();
        // House nets: USD +600.00 + 400.00 = +1,000.00; MXN −10,700.00 − 7,100.00 + 100.00 =
        // −17,700.00.
        assert_eq!((cover.house_usd_net_minor, cover.house_mxn_net_minor), (100_000, -1_770_000));
        assert_eq!(cover.status, CoverStatus::Convert);
        let c = cover.conversion.clone().unwrap();
        // Buy exactly MXN 17,700.00; sell 17,700.00 / 18.35 = 964.5776566… USD, rounded up to
        // USD 964.58 (964.58 × 18.35 = 17,700.043 ≥ 17,700.00; 964.57 × 18.35 = 17,699.8595 <).
        assert_eq!((c.buy_currency, c.buy_amount_minor), (CurrencyCode::MXN, 1_770_000));
        assert_eq!((c.sell_currency, c.sell_amount_minor), (CurrencyCode::USD, 96_458));
        assert!(c.funded_by_surplus);
        // After settlement and the conversion: MXN −17,700.00 + 17,700.00 = 0; USD 1,000.00 −
        // 964.58 = 35.42 kept by the house.
        assert_eq!((cover.house_usd_after_minor, cover.house_mxn_after_minor), (3_542, 0));
        let s = &cover.saving;
        // One by one: the house's 5 MXN payouts, MXN 17,800.00 gross.
        assert_eq!((s.remittances_count, s.remittances_value_minor), (5, 1_780_000));
        // Fees: 5 × (41.50 + 15.00) = USD 282.50 against one wire, USD 56.50.
        assert_eq!((s.one_by_one_fees_usd_minor, s.cover_fees_usd_minor), (28_250, 5_650));
        // Margin 3%: MXN 534.00 = 534 / 18.35 = USD 29.1008… → 29.10; on the cover MXN 531.00 =
        // USD 28.9373… → 28.94.
        assert_eq!((s.one_by_one_margin_usd_minor, s.cover_margin_usd_minor), (2_910, 2_894));
        // Totals 282.50 + 29.10 = 311.60 and 56.50 + 28.94 = 85.44; saving USD 226.16, 72.58%
        // (226.16 / 311.60 = 0.725802…).
        assert_eq!((s.one_by_one_total_usd_minor, s.cover_total_usd_minor), (31_160, 8_544));
        assert_eq!(s.saving_usd_minor, 22_616);
        assert_eq!(s.saving_percent, Some(Decimal::from_str("72.58").unwrap()));
        // Canonical bytes: magic, and they change with any figure.
        let bytes = cover.canonical_bytes();
        assert_eq!(&bytes[..5], b"PNTC\x01");
        let mut other = cover.clone();
        other.conversion.as_mut().unwrap().sell_amount_minor += 1;
        assert_ne!(other.canonical_bytes(), bytes);
        assert_eq!(cover.canonical_bytes(), bytes, "deterministic");
    }

    #[test]
    fn pairing_by_cutoff() {
        let (usd, mxn) = day();
        let far = window(3, CurrencyCode::MXN, 1_000_000_000_000 + COVER_PAIRING_TOLERANCE_NS + 1, &[]);
        let mut open = window(4, CurrencyCode::MXN, 0, &[]);
        open.state = WindowState::Open;
        let candidates = vec![far.clone(), mxn.clone(), open, usd.clone()];
        assert_eq!(pair_of(&usd, &candidates).map(|w| w.id), Some(2));
        assert_eq!(pair_of(&mxn, &candidates).map(|w| w.id), Some(1));
        assert_eq!(pair_of(&usd, &[far]).map(|w| w.id), None, "more than the tolerance apart");
    }

    #[test]
    fn no_house_no_conversion_and_wrong_currencies() {
        let usd = window(1, CurrencyCode::USD, 10, &[("a", "b", 1, 100)]);
        let mxn = window(2, CurrencyCode::MXN, 10, &[]);
        let fees = FeeModel::default();
        let input = CoverInput {
            usd: &usd,
            mxn: &mxn,
            house: HOUSE,
            fees: &fees,
            rate_mxn_per_usd: Decimal::from(18),
        };
        let cover = size_cover(&input).unwrap();
        assert_eq!((cover.status, cover.conversion.is_none()), (CoverStatus::NoDeficit, true));
        assert_eq!(cover.saving, CoverSaving::default());
        assert!(size_cover(&CoverInput { usd: &mxn, mxn: &usd, ..input }).is_err());
        let mut flowless = usd.clone();
        flowless.flows.clear();
        assert!(matches!(
            size_cover(&CoverInput { usd: &flowless, ..input }),
            Err(SettlementError::NoFlows(1))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random house flows in both windows at a random rate: a conversion always buys exactly
        /// the deficit and sells enough to cover it (and not one minor unit more than needed);
        /// after the settlement transfers (each window's net) and the conversion, the deficit
        /// currency is at exactly zero, and the surplus currency at net − sold (never negative
        /// when the surplus funds it).
        #[test]
        fn the_conversion_covers_the_deficit_and_the_house_reaches_zero(
            usd_in in prop::collection::vec(1u128..5_000_000, 0..8),
            usd_out in prop::collection::vec(1u128..5_000_000, 0..8),
            mxn_in in prop::collection::vec(1u128..90_000_000, 0..8),
            mxn_out in prop::collection::vec(1u128..90_000_000, 0..8),
            rate_units in 1_000_000u64..40_000_000,
        ) {
            let rate = Decimal::new(rate_units as i64, 6); // 1.000000 to 40.000000 MXN per USD
            let flows = |inflow: &[u128], outflow: &[u128], who: &str| -> Vec<(String, String, u128)> {
                inflow.iter().map(|v| (who.to_owned(), HOUSE.to_owned(), *v))
                    .chain(outflow.iter().map(|v| (HOUSE.to_owned(), who.to_owned(), *v)))
                    .collect()
            };
            let usd_flows = flows(&usd_in, &usd_out, "us-app");
            let mxn_flows = flows(&mxn_in, &mxn_out, "mx-bank");
            let as_refs = |f: &[(String, String, u128)]| -> Vec<(String, String, u64, u128)> {
                f.iter().map(|(d, c, v)| (d.clone(), c.clone(), 1, *v)).collect()
            };
            let usd_rows = as_refs(&usd_flows);
            let mxn_rows = as_refs(&mxn_flows);
            let usd_tuples: Vec<(&str, &str, u64, u128)> = usd_rows.iter().map(|(d, c, n, v)| (d.as_str(), c.as_str(), *n, *v)).collect();
            let mxn_tuples: Vec<(&str, &str, u64, u128)> = mxn_rows.iter().map(|(d, c, n, v)| (d.as_str(), c.as_str(), *n, *v)).collect();
            let usd = window(1, CurrencyCode::USD, 10, &usd_tuples);
            let mxn = window(2, CurrencyCode::MXN, 10, &mxn_tuples);
            let fees = FeeModel::default();
            let cover = size_cover(&CoverInput { usd: &usd, mxn: &mxn, house: HOUSE, fees: &fees, rate_mxn_per_usd: rate }).unwrap();
            let nets = house_nets(&[&usd, &mxn], HOUSE);
            let (usd_net, mxn_net) = (nets[&CurrencyCode::USD], nets[&CurrencyCode::MXN]);
            prop_assert_eq!((cover.house_usd_net_minor, cover.house_mxn_net_minor), (usd_net, mxn_net));
            // Settlement moves each window's net into the house's settlement account: its
            // position in each window is then zero (net − settled = 0), and the accounts hold
            // (usd_net, mxn_net). The conversion then moves them to the `after` figures.
            match cover.status {
                CoverStatus::NoDeficit => {
                    prop_assert!(usd_net >= 0 && mxn_net >= 0);
                    prop_assert_eq!((cover.house_usd_after_minor, cover.house_mxn_after_minor), (usd_net, mxn_net));
                }
                CoverStatus::DeficitInBoth => prop_assert!(usd_net < 0 && mxn_net < 0),
                CoverStatus::Convert => {
                    let c = cover.conversion.clone().unwrap();
                    let scale = Decimal::new(1, 2);
                    let sold = Decimal::from_i128_with_scale(c.sell_amount_minor as i128, 0) * scale;
                    let bought = Decimal::from_i128_with_scale(c.buy_amount_minor as i128, 0) * scale;
                    let one = scale;
                    if c.buy_currency == CurrencyCode::MXN {
                        prop_assert_eq!(c.buy_amount_minor as i128, -mxn_net);
                        prop_assert!(sold * rate >= bought, "covers");
                        prop_assert!((sold - one) * rate < bought, "no more than needed");
                        prop_assert_eq!(cover.house_mxn_after_minor, 0);
                        prop_assert_eq!(cover.house_usd_after_minor, usd_net - c.sell_amount_minor as i128);
                        prop_assert_eq!(c.funded_by_surplus, cover.house_usd_after_minor >= 0);
                    } else {
                        prop_assert_eq!(c.buy_amount_minor as i128, -usd_net);
                        prop_assert!(sold >= bought * rate, "covers");
                        prop_assert!(sold - one < bought * rate, "no more than needed");
                        prop_assert_eq!(cover.house_usd_after_minor, 0);
                        prop_assert_eq!(cover.house_mxn_after_minor, mxn_net - c.sell_amount_minor as i128);
                        prop_assert_eq!(c.funded_by_surplus, cover.house_mxn_after_minor >= 0);
                    }
                    // One conversion never costs more than converting each remittance when
                    // there are at least as many remittances as conversions.
                    prop_assert!(cover.saving.remittances_count >= 1);
                    prop_assert!(cover.saving.saving_usd_minor >= 0, "{:?}", cover.saving);
                }
            }
        }
    }
}
