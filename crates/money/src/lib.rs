//! Money types for Puente.
//!
//! Rules enforced here (see ARCHITECTURE.md, "Rules of money"):
//! - Amounts are integer *minor units* (`u64`, e.g. cents for USD, centavos for MXN).
//!   Balances that sum many amounts use `u128`.
//! - Decimal text is parsed exactly with `rust_decimal`; an amount written with more decimal
//!   places than its currency's scale is rejected, never rounded.
//! - Rounding only happens in [`round_to_minor`], with an explicit [`Rounding`] mode.
//! - No floating point type appears in this crate.

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Largest amount of a single transfer, in minor units: 10^17 (one quadrillion USD in cents).
/// Keeps every sum of a bounded batch far away from `u128` overflow and inside `Decimal`'s
/// 96-bit mantissa.
pub const AMOUNT_MAX_MINOR: u64 = 100_000_000_000_000_000;
/// Decimal digits of [`AMOUNT_MAX_MINOR`]: more significant digits than this (integer part
/// plus the currency's scale) can only be a larger amount.
const AMOUNT_MAX_DIGITS: u64 = AMOUNT_MAX_MINOR.ilog10() as u64 + 1;

/// Largest scale (decimal places) a configured currency may have.
pub const SCALE_MAX: u32 = 6;

/// Longest amount string accepted from outside.
pub const AMOUNT_TEXT_LEN_MAX: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency code {0:?} is not three upper-case letters (ISO 4217)")]
    InvalidCurrencyCode(String),
    #[error("currency {0} is not configured")]
    UnknownCurrency(String),
    #[error("amount {text:?} is not a decimal number")]
    InvalidAmount { text: String },
    #[error("amount {text:?} is negative")]
    NegativeAmount { text: String },
    #[error("amount {text:?} has {decimals} decimal places; {currency} allows at most {scale}")]
    TooManyDecimals { text: String, decimals: u32, currency: CurrencyCode, scale: u32 },
    #[error("amount exceeds the maximum of {AMOUNT_MAX_MINOR} minor units")]
    AmountTooLarge,
    #[error("currency {code}: scale {scale} exceeds the maximum of {SCALE_MAX}")]
    ScaleTooLarge { code: CurrencyCode, scale: u32 },
    #[error("arithmetic overflow")]
    Overflow,
}

/// An ISO 4217 alphabetic code, stored inline (`Copy`, three ASCII upper-case letters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CurrencyCode([u8; 3]);

impl CurrencyCode {
    pub const USD: CurrencyCode = CurrencyCode(*b"USD");
    pub const MXN: CurrencyCode = CurrencyCode(*b"MXN");
    pub const CAD: CurrencyCode = CurrencyCode(*b"CAD");

    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let bytes = text.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(|b| b.is_ascii_uppercase()) {
            return Err(MoneyError::InvalidCurrencyCode(truncate(text, 16)));
        }
        Ok(CurrencyCode([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn as_str(&self) -> &str {
        // Invariant: constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    pub fn as_bytes(&self) -> [u8; 3] {
        self.0
    }
}

impl FromStr for CurrencyCode {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CurrencyCode::parse(s)
    }
}

impl TryFrom<String> for CurrencyCode {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CurrencyCode::parse(&value)
    }
}

impl From<CurrencyCode> for String {
    fn from(value: CurrencyCode) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured currency: its code and its number of decimal places (minor-unit exponent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency {
    pub code: CurrencyCode,
    pub scale: u32,
}

impl Currency {
    pub fn new(code: CurrencyCode, scale: u32) -> Result<Self, MoneyError> {
        if scale > SCALE_MAX {
            return Err(MoneyError::ScaleTooLarge { code, scale });
        }
        Ok(Currency { code, scale })
    }

    /// Parses decimal text ("1234.5", "0.01") into minor units, exactly.
    ///
    /// Rejects: empty or non-decimal text, exponents, negative values, more decimal places
    /// than `scale` (even trailing zeros: "1.500" is not a USD amount), values above
    /// [`AMOUNT_MAX_MINOR`].
    pub fn parse_amount(&self, text: &str) -> Result<u64, MoneyError> {
        let invalid = || MoneyError::InvalidAmount { text: truncate(text, AMOUNT_TEXT_LEN_MAX) };
        if text.is_empty() {
            return Err(invalid());
        }
        // Only plain decimal notation: digits, at most one '.', an optional leading '-'.
        let body = text.strip_prefix('-').unwrap_or(text);
        if body.is_empty()
            || body.starts_with('.')
            || body.ends_with('.')
            || !body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            || body.bytes().filter(|b| *b == b'.').count() > 1
        {
            return Err(invalid());
        }
        // Well-formed decimal text from here on: decide from the digits what is wrong with
        // it, before any arithmetic (which has its own, smaller, limits).
        let (integer, fraction) = body.split_once('.').unwrap_or((body, ""));
        if body.len() < text.len() && body.bytes().any(|b| matches!(b, b'1'..=b'9')) {
            return Err(MoneyError::NegativeAmount { text: truncate(text, AMOUNT_TEXT_LEN_MAX) });
        }
        let decimals = u32::try_from(fraction.len()).unwrap_or(u32::MAX);
        if decimals > self.scale {
            return Err(MoneyError::TooManyDecimals {
                text: truncate(text, AMOUNT_TEXT_LEN_MAX),
                decimals,
                currency: self.code,
                scale: self.scale,
            });
        }
        // An integer part with more significant digits than the maximum allows is too large,
        // however many digits it has (10^31 is as much "too large" as 10^15 + 0.01).
        let significant = integer.trim_start_matches('0').len() as u64;
        if significant + u64::from(self.scale) > AMOUNT_MAX_DIGITS {
            return Err(MoneyError::AmountTooLarge);
        }
        if text.len() > AMOUNT_TEXT_LEN_MAX {
            return Err(invalid());
        }
        let value = Decimal::from_str_exact(text).map_err(|_| invalid())?;
        decimal_to_minor_exact(value, self.scale)
    }

    /// Formats minor units as plain decimal text with exactly `scale` decimals ("1234.50").
    pub fn format_amount(&self, amount_minor: u128) -> String {
        format_minor(amount_minor, self.scale)
    }

    /// Formats a signed quantity (for example a net position) in minor units.
    pub fn format_signed(&self, amount_minor: i128) -> String {
        format_signed_minor(amount_minor, self.scale)
    }

    /// The amount as an exact `Decimal` in major units.
    pub fn to_decimal(&self, amount_minor: u64) -> Decimal {
        Decimal::from_i128_with_scale(amount_minor as i128, self.scale)
    }
}

fn decimal_to_minor_exact(value: Decimal, scale: u32) -> Result<u64, MoneyError> {
    let multiplier = Decimal::from(10u64.pow(scale));
    let minor = value.checked_mul(multiplier).ok_or(MoneyError::AmountTooLarge)?;
    if minor.fract() != Decimal::ZERO {
        return Err(MoneyError::Overflow);
    }
    let minor = minor.trunc().mantissa() / 10i128.pow(minor.trunc().scale());
    let minor = u64::try_from(minor).map_err(|_| MoneyError::AmountTooLarge)?;
    if minor > AMOUNT_MAX_MINOR {
        return Err(MoneyError::AmountTooLarge);
    }
    Ok(minor)
}

/// How a computed (non-representable) amount is brought to a whole number of minor units.
/// Every caller names its mode; there is no default rounding anywhere in Puente.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rounding {
    /// Toward zero (truncate). Used for amounts the house pays out.
    Down,
    /// Away from zero. Used for amounts the house collects.
    Up,
    /// Nearest, ties to even (banker's rounding).
    HalfEven,
}

/// Rounds a non-negative decimal amount in major units to minor units with an explicit mode.
pub fn round_to_minor(value: Decimal, scale: u32, rounding: Rounding) -> Result<u64, MoneyError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(MoneyError::NegativeAmount { text: value.to_string() });
    }
    let strategy = match rounding {
        Rounding::Down => RoundingStrategy::ToZero,
        Rounding::Up => RoundingStrategy::AwayFromZero,
        Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
    };
    let rounded = value.round_dp_with_strategy(scale, strategy);
    decimal_to_minor_exact(rounded, scale)
}

/// The set of currencies this deployment handles. USD and MXN by default; more (CAD, ...)
/// are added by configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTable {
    currencies: BTreeMap<CurrencyCode, Currency>,
}

/// Most currencies a table may hold.
pub const CURRENCIES_MAX: usize = 64;

impl Default for CurrencyTable {
    fn default() -> Self {
        let mut currencies = BTreeMap::new();
        currencies.insert(CurrencyCode::USD, Currency { code: CurrencyCode::USD, scale: 2 });
        currencies.insert(CurrencyCode::MXN, Currency { code: CurrencyCode::MXN, scale: 2 });
        CurrencyTable { currencies }
    }
}

impl CurrencyTable {
    pub fn empty() -> Self {
        CurrencyTable { currencies: BTreeMap::new() }
    }

    /// Adds (or replaces) a currency.
    pub fn with(mut self, currency: Currency) -> Result<Self, MoneyError> {
        let currency = Currency::new(currency.code, currency.scale)?;
        if self.currencies.len() >= CURRENCIES_MAX && !self.currencies.contains_key(&currency.code) {
            return Err(MoneyError::Overflow);
        }
        self.currencies.insert(currency.code, currency);
        Ok(self)
    }

    pub fn get(&self, code: CurrencyCode) -> Result<Currency, MoneyError> {
        self.currencies.get(&code).copied().ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn lookup(&self, text: &str) -> Result<Currency, MoneyError> {
        self.get(CurrencyCode::parse(text)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Currency> {
        self.currencies.values()
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// An amount in minor units as plain decimal text with `scale` decimal places (`12345`, 2 →
/// `"123.45"`): what every report, document and wire message shows. Exact, no rounding.
pub fn format_minor(amount_minor: u128, scale: u32) -> String {
    if scale == 0 {
        return amount_minor.to_string();
    }
    let divisor = 10u128.pow(scale);
    format!("{}.{:0width$}", amount_minor / divisor, amount_minor % divisor, width = scale as usize)
}

/// A signed amount in minor units as decimal text (`-123.45`).
pub fn format_signed_minor(amount_minor: i128, scale: u32) -> String {
    let text = format_minor(amount_minor.unsigned_abs(), scale);
    if amount_minor < 0 { format!("-{text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        CurrencyTable::default().get(CurrencyCode::USD).unwrap()
    }

    #[test]
    fn parses_exact_amounts() {
        assert_eq!(usd().parse_amount("0").unwrap(), 0);
        assert_eq!(usd().parse_amount("0.01").unwrap(), 1);
        assert_eq!(usd().parse_amount("1234.5").unwrap(), 123_450);
        assert_eq!(usd().parse_amount("200").unwrap(), 20_000);
        assert_eq!(usd().parse_amount("1000000000000000").unwrap(), AMOUNT_MAX_MINOR);
    }

    #[test]
    fn rejects_what_it_cannot_hold_exactly() {
        assert!(matches!(usd().parse_amount("1.001"), Err(MoneyError::TooManyDecimals { decimals: 3, .. })));
        assert!(matches!(usd().parse_amount("1.500"), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!(usd().parse_amount("-1"), Err(MoneyError::NegativeAmount { .. })));
        for bad in ["", "abc", "1e3", "1.", ".5", "1.2.3", "+1", " 1", "1,00", "NaN", "inf", "0x10"] {
            assert!(matches!(usd().parse_amount(bad), Err(MoneyError::InvalidAmount { .. })), "{bad}");
        }
        assert_eq!(usd().parse_amount("1000000000000000.01"), Err(MoneyError::AmountTooLarge));
        assert_eq!(usd().parse_amount("99999999999999999999999999"), Err(MoneyError::AmountTooLarge));
    }

    #[test]
    fn any_number_of_digits_too_many_is_too_large_not_malformed() {
        // 31 digits: beyond what a Decimal holds, still "exceeds the maximum".
        let thirty_one = format!("1{}", "0".repeat(30));
        assert_eq!(thirty_one.len(), 31);
        for text in [
            thirty_one.clone(),
            format!("{thirty_one}.00"),
            "9".repeat(31),
            "1".repeat(200),
            format!("000{}", "9".repeat(17)),
            "1000000000000001".to_owned(),
        ] {
            assert_eq!(usd().parse_amount(&text), Err(MoneyError::AmountTooLarge), "{text}");
        }
        assert!(usd().parse_amount(&thirty_one).unwrap_err().to_string().contains("exceeds the maximum"));
        // The largest amount still parses, leading zeros or not; scale 0 allows more digits.
        assert_eq!(usd().parse_amount("0001000000000000000.00"), Ok(AMOUNT_MAX_MINOR));
        let jpy = Currency::new(CurrencyCode::parse("JPY").unwrap(), 0).unwrap();
        assert_eq!(jpy.parse_amount("100000000000000000"), Ok(AMOUNT_MAX_MINOR));
        assert_eq!(jpy.parse_amount("100000000000000001"), Err(MoneyError::AmountTooLarge));
        // Other faults keep their own messages, whatever the length.
        assert!(matches!(
            usd().parse_amount(&format!("-{thirty_one}")),
            Err(MoneyError::NegativeAmount { .. })
        ));
        assert!(matches!(
            usd().parse_amount(&format!("{thirty_one}.001")),
            Err(MoneyError::TooManyDecimals { decimals: 3, .. })
        ));
        assert!(matches!(
            usd().parse_amount(&format!("{thirty_one}x")),
            Err(MoneyError::InvalidAmount { .. })
        ));
        assert_eq!(usd().parse_amount("-0.00"), Ok(0));
    }

    #[test]
    fn formats_with_scale() {
        assert_eq!(usd().format_amount(123_450), "1234.50");
        assert_eq!(usd().format_amount(1), "0.01");
        assert_eq!(usd().format_signed(-5), "-0.05");
        let jpy = Currency::new(CurrencyCode::parse("JPY").unwrap(), 0).unwrap();
        assert_eq!(jpy.format_amount(500), "500");
    }

    #[test]
    fn currency_codes_are_strict() {
        assert!(CurrencyCode::parse("usd").is_err());
        assert!(CurrencyCode::parse("US").is_err());
        assert!(CurrencyCode::parse("USDX").is_err());
        assert_eq!(CurrencyCode::parse("MXN").unwrap(), CurrencyCode::MXN);
        let table = CurrencyTable::default();
        assert!(matches!(table.lookup("CAD"), Err(MoneyError::UnknownCurrency(_))));
        let table = table.with(Currency { code: CurrencyCode::CAD, scale: 2 }).unwrap();
        assert_eq!(table.lookup("CAD").unwrap().scale, 2);
    }

    #[test]
    fn rounding_is_explicit() {
        let d = Decimal::from_str("10.005").unwrap();
        assert_eq!(round_to_minor(d, 2, Rounding::Down).unwrap(), 1000);
        assert_eq!(round_to_minor(d, 2, Rounding::Up).unwrap(), 1001);
        assert_eq!(round_to_minor(d, 2, Rounding::HalfEven).unwrap(), 1000);
        let d = Decimal::from_str("10.015").unwrap();
        assert_eq!(round_to_minor(d, 2, Rounding::HalfEven).unwrap(), 1002);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(minor in 0u64..=AMOUNT_MAX_MINOR) {
            let text = usd().format_amount(minor as u128);
            prop_assert_eq!(usd().parse_amount(&text).unwrap(), minor);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,50}") {
            let _ = usd().parse_amount(&text);
        }

        #[test]
        fn rounding_moves_less_than_one_minor_unit(mantissa in 0i64..1_000_000_000_000, scale in 0u32..8) {
            let value = Decimal::new(mantissa, scale);
            let down = round_to_minor(value, 2, Rounding::Down).unwrap();
            let up = round_to_minor(value, 2, Rounding::Up).unwrap();
            prop_assert!(up - down <= 1);
            prop_assert!(Decimal::from(down) / Decimal::from(100) <= value);
            prop_assert!(Decimal::from(up) / Decimal::from(100) >= value);
        }
    }
}
