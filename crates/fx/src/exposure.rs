//! The house's net position per currency from executed quotes: what it would need to hedge.
//! A pure accumulator.

use std::collections::BTreeMap;

use puente_money::{CURRENCIES_MAX, CurrencyCode};

use crate::error::FxError;
use crate::quote::Quote;

/// Net position per currency in minor units: positive = the house holds (is long) that
/// currency, negative = it owes (is short).
///
/// An executed quote adds `+(send_amount + fee_total)` in the sell currency (collected from the
/// customer; taxes are excluded because they are owed to the tax authority) and
/// `−converted_amount` in the buy currency (paid out, covered third-party fees included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    positions: BTreeMap<CurrencyCode, i128>,
    quotes: u64,
}

impl Exposure {
    pub fn new() -> Self {
        Exposure::default()
    }

    /// Adds `delta_minor` to the position in `currency`. At most [`CURRENCIES_MAX`] currencies.
    pub fn add_leg(&mut self, currency: CurrencyCode, delta_minor: i128) -> Result<(), FxError> {
        if !self.positions.contains_key(&currency) && self.positions.len() >= CURRENCIES_MAX {
            return Err(FxError::LimitExceeded { what: "exposure currencies", limit: CURRENCIES_MAX as u64 });
        }
        let position = self.positions.entry(currency).or_insert(0);
        *position = position.checked_add(delta_minor).ok_or(FxError::Overflow)?;
        Ok(())
    }

    /// Records an executed quote.
    pub fn add_quote(&mut self, quote: &Quote) -> Result<(), FxError> {
        self.apply(quote, 1)?;
        self.quotes = self.quotes.checked_add(1).ok_or(FxError::Overflow)?;
        Ok(())
    }

    /// Undoes an executed quote (for example a cancellation refunded in full).
    pub fn remove_quote(&mut self, quote: &Quote) -> Result<(), FxError> {
        let remaining = self.quotes.checked_sub(1).ok_or(FxError::InvalidArgument("no quote to remove"))?;
        self.apply(quote, -1)?;
        self.quotes = remaining;
        Ok(())
    }

    fn apply(&mut self, quote: &Quote, sign: i128) -> Result<(), FxError> {
        quote.check_consistency()?;
        let collected = quote.send_amount_minor as i128 + quote.fee_total_minor as i128;
        let paid = quote.converted_amount_minor as i128;
        // Check both legs before changing anything, so a failure leaves the state untouched.
        let sell = self.position(quote.pair.base).checked_add(sign * collected).ok_or(FxError::Overflow)?;
        let buy = self.position(quote.pair.quote).checked_sub(sign * paid).ok_or(FxError::Overflow)?;
        let new_currencies =
            [quote.pair.base, quote.pair.quote].iter().filter(|c| !self.positions.contains_key(c)).count();
        if self.positions.len() + new_currencies > CURRENCIES_MAX {
            return Err(FxError::LimitExceeded { what: "exposure currencies", limit: CURRENCIES_MAX as u64 });
        }
        self.positions.insert(quote.pair.base, sell);
        self.positions.insert(quote.pair.quote, buy);
        Ok(())
    }

    /// Net position in `currency` (0 if never touched).
    pub fn position(&self, currency: CurrencyCode) -> i128 {
        self.positions.get(&currency).copied().unwrap_or(0)
    }

    /// All positions, by currency code.
    pub fn positions(&self) -> impl Iterator<Item = (CurrencyCode, i128)> + '_ {
        self.positions.iter().map(|(code, value)| (*code, *value))
    }

    /// Number of quotes recorded (added minus removed).
    pub fn quote_count(&self) -> u64 {
        self.quotes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::tests::sample;

    #[test]
    fn accumulates_and_reverses() {
        let mut exposure = Exposure::new();
        let quote = sample();
        exposure.add_quote(&quote).unwrap();
        exposure.add_quote(&quote).unwrap();
        assert_eq!(exposure.position(CurrencyCode::USD), 2 * 20_299);
        assert_eq!(exposure.position(CurrencyCode::MXN), -2 * 339_825);
        assert_eq!(exposure.quote_count(), 2);
        exposure.remove_quote(&quote).unwrap();
        exposure.remove_quote(&quote).unwrap();
        assert!(exposure.positions().all(|(_, v)| v == 0));
        assert!(exposure.remove_quote(&quote).is_err());
        exposure.add_leg(CurrencyCode::CAD, -5).unwrap();
        assert_eq!(exposure.position(CurrencyCode::CAD), -5);
        assert_eq!(exposure.add_leg(CurrencyCode::CAD, i128::MIN), Err(FxError::Overflow));
        let mut bad = sample();
        bad.total_debit_minor = 0;
        assert!(exposure.add_quote(&bad).is_err());
    }
}
