//! Sizing the single FX conversion that covers the house's cross-currency imbalance.
//!
//! Each currency is netted on its own (see [`crate::NettingAggregator`]); the multilateral nets
//! of a currency sum to zero, so the house (the participant that runs the corridor and funds the
//! payouts) is where the imbalance between currencies shows: typically it collects USD from US
//! senders (positive USD net) and owes MXN to Mexican payout banks (negative MXN net).
//! [`fx_cover`] sizes the one conversion that turns surplus in one currency into exactly the
//! deficit in the other.
//!
//! Rounding (explicit, via [`puente_money::round_to_minor`]): the house *buys exactly its
//! deficit* and *sells the matching amount of the other currency rounded up* to a whole minor
//! unit ([`Rounding::Up`]), so the conversion always covers the deficit; the result is checked
//! exactly (`sold × rate ≥ bought`).

use puente_money::{Currency, CurrencyCode, Rounding, round_to_minor};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{NettingError, NettingResult, ParticipantId};

/// Largest accepted rate, in quote units per base unit (guards against inverted or garbage
/// rates; USD/MXN is about 17–20).
pub const RATE_MAX: u32 = 100_000;

/// Most decimal places accepted in a rate.
pub const RATE_SCALE_MAX: u32 = 12;

/// The house's imbalance between two currencies and the conversion that covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxCover {
    pub house: ParticipantId,
    /// Base currency of the rate (USD for USD/MXN).
    pub base: CurrencyCode,
    /// Quote currency of the rate (MXN for USD/MXN).
    pub quote: CurrencyCode,
    /// Quote units per one base unit (MXN per USD), as supplied by the caller.
    pub rate_quote_per_base: Decimal,
    /// The house's multilateral net in the base currency (positive: it receives; surplus).
    pub base_net_minor: i128,
    /// The house's multilateral net in the quote currency.
    pub quote_net_minor: i128,
    pub status: FxCoverStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FxCoverStatus {
    /// No negative net in either currency: nothing to convert.
    NoDeficit,
    /// A deficit in exactly one currency, covered by this conversion.
    Convert(FxConversion),
    /// Deficits in both currencies: no single conversion covers them; the house must fund
    /// both sides from outside the window.
    DeficitInBoth,
}

/// One FX conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxConversion {
    pub sell_currency: CurrencyCode,
    /// Rounded up to a whole minor unit (see the module docs).
    pub sell_amount_minor: u128,
    pub buy_currency: CurrencyCode,
    /// Exactly the house's deficit in `buy_currency`.
    pub buy_amount_minor: u128,
    /// Whether the house's surplus in `sell_currency` is at least `sell_amount_minor`.
    pub funded_by_surplus: bool,
}

impl FxCover {
    pub fn conversion(&self) -> Option<&FxConversion> {
        match &self.status {
            FxCoverStatus::Convert(conversion) => Some(conversion),
            _ => None,
        }
    }
}

/// Validates a rate: positive, at most [`RATE_MAX`], at most [`RATE_SCALE_MAX`] decimals.
pub fn validate_rate(rate: Decimal) -> Result<(), NettingError> {
    if rate <= Decimal::ZERO || rate > Decimal::from(RATE_MAX) || rate.scale() > RATE_SCALE_MAX {
        return Err(NettingError::InvalidRate(rate.to_string()));
    }
    Ok(())
}

/// Sizes the conversion that covers `house`'s imbalance between `base` and `quote`, at
/// `rate_quote_per_base` (for USD/MXN: `base` = USD, `quote` = MXN, rate in MXN per USD).
///
/// A house absent from the window has zero nets (status [`FxCoverStatus::NoDeficit`]).
pub fn fx_cover(
    result: &NettingResult,
    house: &ParticipantId,
    base: Currency,
    quote: Currency,
    rate_quote_per_base: Decimal,
) -> Result<FxCover, NettingError> {
    validate_rate(rate_quote_per_base)?;
    if base.code == quote.code {
        return Err(NettingError::UnsupportedCurrency(base.code));
    }
    let base_net_minor = result.net_minor(house, base.code);
    let quote_net_minor = result.net_minor(house, quote.code);
    let status = match (base_net_minor < 0, quote_net_minor < 0) {
        (false, false) => FxCoverStatus::NoDeficit,
        (true, true) => FxCoverStatus::DeficitInBoth,
        (false, true) => {
            // Sell base, buy the quote deficit: sold_base = deficit / rate, rounded up.
            let buy_amount_minor = quote_net_minor.unsigned_abs();
            let buy_major = to_major(buy_amount_minor, quote.scale)?;
            let sell_major = buy_major.checked_div(rate_quote_per_base).ok_or(NettingError::Overflow)?;
            let mut sell_amount_minor = u128::from(round_to_minor(sell_major, base.scale, Rounding::Up)?);
            // Decimal division keeps 28 significant digits; make coverage exact regardless.
            if to_major(sell_amount_minor, base.scale)?
                .checked_mul(rate_quote_per_base)
                .ok_or(NettingError::Overflow)?
                < buy_major
            {
                sell_amount_minor += 1;
            }
            let covered = to_major(sell_amount_minor, base.scale)?
                .checked_mul(rate_quote_per_base)
                .ok_or(NettingError::Overflow)?;
            assert!(covered >= buy_major, "the conversion must cover the deficit");
            FxCoverStatus::Convert(FxConversion {
                sell_currency: base.code,
                sell_amount_minor,
                buy_currency: quote.code,
                buy_amount_minor,
                funded_by_surplus: base_net_minor >= 0 && base_net_minor.unsigned_abs() >= sell_amount_minor,
            })
        }
        (true, false) => {
            // Sell quote, buy the base deficit: sold_quote = deficit × rate, rounded up.
            let buy_amount_minor = base_net_minor.unsigned_abs();
            let buy_major = to_major(buy_amount_minor, base.scale)?;
            let sell_major = buy_major.checked_mul(rate_quote_per_base).ok_or(NettingError::Overflow)?;
            let mut sell_amount_minor = u128::from(round_to_minor(sell_major, quote.scale, Rounding::Up)?);
            if to_major(sell_amount_minor, quote.scale)?
                .checked_div(rate_quote_per_base)
                .ok_or(NettingError::Overflow)?
                < buy_major
            {
                sell_amount_minor += 1;
            }
            FxCoverStatus::Convert(FxConversion {
                sell_currency: quote.code,
                sell_amount_minor,
                buy_currency: base.code,
                buy_amount_minor,
                funded_by_surplus: quote_net_minor.unsigned_abs() >= sell_amount_minor,
            })
        }
    };
    Ok(FxCover {
        house: house.clone(),
        base: base.code,
        quote: quote.code,
        rate_quote_per_base,
        base_net_minor,
        quote_net_minor,
        status,
    })
}

/// Minor units to an exact `Decimal` in major units.
pub(crate) fn to_major(amount_minor: u128, scale: u32) -> Result<Decimal, NettingError> {
    let signed = i128::try_from(amount_minor).map_err(|_| NettingError::Overflow)?;
    Decimal::try_from_i128_with_scale(signed, scale).map_err(|_| NettingError::Overflow)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::{NettingAggregator, Obligation};

    const USD: Currency = Currency { code: CurrencyCode::USD, scale: 2 };
    const MXN: Currency = Currency { code: CurrencyCode::MXN, scale: 2 };

    fn id(text: &str) -> ParticipantId {
        ParticipantId::new(text).unwrap()
    }

    fn result_of(obligations: &[(&str, &str, CurrencyCode, u64)]) -> NettingResult {
        let mut agg = NettingAggregator::new();
        for &(d, c, cur, amount) in obligations {
            agg.push(&Obligation::new(id(d), id(c), cur, amount).unwrap()).unwrap();
        }
        agg.finish().unwrap()
    }

    #[test]
    fn house_with_usd_surplus_sells_usd_for_its_mxn_deficit() {
        // Senders pay the house USD 100.00; the house owes a payout bank MXN 1,850.01.
        let result = result_of(&[
            ("US1", "HOUSE", CurrencyCode::USD, 10_000),
            ("HOUSE", "MX1", CurrencyCode::MXN, 185_001),
        ]);
        let rate = Decimal::from_str("18.5").unwrap();
        let cover = fx_cover(&result, &id("HOUSE"), USD, MXN, rate).unwrap();
        assert_eq!((cover.base_net_minor, cover.quote_net_minor), (10_000, -185_001));
        let conversion = cover.conversion().unwrap();
        assert_eq!(conversion.buy_currency, CurrencyCode::MXN);
        assert_eq!(conversion.buy_amount_minor, 185_001);
        // 1850.01 / 18.5 = 100.000540..., rounded up to 100.01.
        assert_eq!(conversion.sell_currency, CurrencyCode::USD);
        assert_eq!(conversion.sell_amount_minor, 10_001);
        assert!(!conversion.funded_by_surplus, "USD 100.00 does not cover USD 100.01");
    }

    #[test]
    fn house_with_mxn_surplus_sells_mxn_for_its_usd_deficit() {
        let result = result_of(&[
            ("MX1", "HOUSE", CurrencyCode::MXN, 1_000_000),
            ("HOUSE", "US1", CurrencyCode::USD, 3_333),
        ]);
        let rate = Decimal::from_str("18.123457").unwrap();
        let cover = fx_cover(&result, &id("HOUSE"), USD, MXN, rate).unwrap();
        let conversion = cover.conversion().unwrap();
        assert_eq!(conversion.buy_amount_minor, 3_333);
        // 33.33 × 18.123457 = 604.05382..., rounded up to 604.06.
        assert_eq!(conversion.sell_amount_minor, 60_406);
        assert!(conversion.funded_by_surplus);
    }

    #[test]
    fn no_deficit_or_both_deficits() {
        let result = result_of(&[("US1", "HOUSE", CurrencyCode::USD, 5)]);
        let rate = Decimal::from(18);
        let cover = fx_cover(&result, &id("HOUSE"), USD, MXN, rate).unwrap();
        assert_eq!(cover.status, FxCoverStatus::NoDeficit);
        let cover = fx_cover(&result, &id("ABSENT"), USD, MXN, rate).unwrap();
        assert_eq!(cover.status, FxCoverStatus::NoDeficit);
        let result =
            result_of(&[("HOUSE", "US1", CurrencyCode::USD, 5), ("HOUSE", "MX1", CurrencyCode::MXN, 5)]);
        let cover = fx_cover(&result, &id("HOUSE"), USD, MXN, rate).unwrap();
        assert_eq!(cover.status, FxCoverStatus::DeficitInBoth);
    }

    #[test]
    fn bad_rates_are_rejected() {
        let result = result_of(&[("A", "B", CurrencyCode::USD, 5)]);
        for rate in ["0", "-18", "100000.01", "0.0000000000001"] {
            let rate = Decimal::from_str(rate).unwrap();
            assert!(matches!(fx_cover(&result, &id("A"), USD, MXN, rate), Err(NettingError::InvalidRate(_))));
        }
        assert!(fx_cover(&result, &id("A"), USD, USD, Decimal::ONE).is_err());
    }
}
