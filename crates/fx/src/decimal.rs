//! Exact helpers for rates (`Decimal`) and amounts (integer minor units).
//!
//! Amount conversions are done in `u128` integer arithmetic on the rate's mantissa and scale,
//! so they are exact: no `Decimal` rounding of intermediate products can move a result by one
//! minor unit.

use puente_money::{AMOUNT_MAX_MINOR, Rounding};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::error::FxError;

/// Number of decimal digits of `value` (at least 1).
pub(crate) fn digit_count(mut value: u128) -> u32 {
    let mut digits = 1;
    while value >= 10 {
        value /= 10;
        digits += 1;
    }
    digits
}

/// Number of significant digits of a (normalized) decimal.
pub(crate) fn significant_digits(value: Decimal) -> u32 {
    let normalized = value.normalize();
    digit_count(normalized.mantissa().unsigned_abs())
}

/// Rounds a positive decimal to `digits` significant digits with an explicit strategy, and
/// normalizes the result (no trailing zeros). Values of `10^digits` and more keep their
/// integer digits (rounded to an integer).
pub(crate) fn round_significant(value: Decimal, digits: u32, strategy: RoundingStrategy) -> Decimal {
    let normalized = value.normalize();
    let n = digit_count(normalized.mantissa().unsigned_abs()) as i64;
    let scale = normalized.scale() as i64;
    let dp = (scale - n + digits as i64).max(0);
    if dp >= scale {
        return normalized;
    }
    normalized.round_dp_with_strategy(dp as u32, strategy).normalize()
}

fn pow10(exponent: u32) -> Result<u128, FxError> {
    10u128.checked_pow(exponent).ok_or(FxError::Overflow)
}

/// Positive rate as (mantissa, scale): `rate = mantissa / 10^scale`.
fn rate_parts(rate: Decimal) -> Result<(u128, u32), FxError> {
    let rate = rate.normalize();
    if rate.is_sign_negative() || rate.is_zero() {
        return Err(FxError::InvalidArgument("rate must be positive"));
    }
    Ok((rate.mantissa().unsigned_abs(), rate.scale()))
}

fn div_round(numerator: u128, denominator: u128, rounding: Rounding) -> Result<u128, FxError> {
    if denominator == 0 {
        return Err(FxError::Overflow);
    }
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    let round_up = match rounding {
        Rounding::Down => false,
        Rounding::Up => remainder != 0,
        Rounding::HalfEven => {
            let twice = remainder.checked_mul(2).ok_or(FxError::Overflow)?;
            twice > denominator || (twice == denominator && quotient % 2 == 1)
        }
    };
    if round_up { quotient.checked_add(1).ok_or(FxError::Overflow) } else { Ok(quotient) }
}

fn to_amount(value: u128) -> Result<u64, FxError> {
    if value > AMOUNT_MAX_MINOR as u128 {
        return Err(FxError::AmountTooLarge);
    }
    u64::try_from(value).map_err(|_| FxError::AmountTooLarge)
}

/// `amount_minor` (scale `from_scale`) times `rate` (major units of "to" per major unit of
/// "from"), in minor units of scale `to_scale`, rounded with `rounding`. Exact.
pub(crate) fn convert_minor(
    amount_minor: u64,
    rate: Decimal,
    from_scale: u32,
    to_scale: u32,
    rounding: Rounding,
) -> Result<u64, FxError> {
    let (mantissa, rate_scale) = rate_parts(rate)?;
    // amount * 10^-from * m * 10^-e * 10^to = amount * m * 10^to / 10^(e + from)
    let up = to_scale;
    let down = rate_scale.checked_add(from_scale).ok_or(FxError::Overflow)?;
    let common = up.min(down);
    let numerator = (amount_minor as u128)
        .checked_mul(mantissa)
        .and_then(|v| v.checked_mul(pow10(up - common).ok()?))
        .ok_or(FxError::Overflow)?;
    let denominator = pow10(down - common)?;
    to_amount(div_round(numerator, denominator, rounding)?)
}

/// The inverse of [`convert_minor`]: `target_minor` (scale `to_scale`) divided by `rate`, in
/// minor units of scale `from_scale`, rounded with `rounding`. Exact. With `Rounding::Up` it is
/// the smallest amount `a` with `a * rate >= target` (exactly).
pub(crate) fn convert_minor_inverse(
    target_minor: u64,
    rate: Decimal,
    from_scale: u32,
    to_scale: u32,
    rounding: Rounding,
) -> Result<u64, FxError> {
    let (mantissa, rate_scale) = rate_parts(rate)?;
    // target * 10^-to / (m * 10^-e) * 10^from = target * 10^(e + from) / (m * 10^to)
    let up = rate_scale.checked_add(from_scale).ok_or(FxError::Overflow)?;
    let down = to_scale;
    let common = up.min(down);
    let numerator = (target_minor as u128).checked_mul(pow10(up - common)?).ok_or(FxError::Overflow)?;
    let denominator = mantissa.checked_mul(pow10(down - common)?).ok_or(FxError::Overflow)?;
    to_amount(div_round(numerator, denominator, rounding)?)
}

/// `amount_minor * bps / 10_000`, rounded with `rounding`. Exact.
pub(crate) fn bps_of(amount_minor: u64, bps: u32, rounding: Rounding) -> Result<u64, FxError> {
    let numerator = (amount_minor as u128).checked_mul(bps as u128).ok_or(FxError::Overflow)?;
    to_amount(div_round(numerator, 10_000, rounding)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn significant_rounding() {
        assert_eq!(round_significant(d("17.123456789"), 8, RoundingStrategy::ToZero), d("17.123456"));
        assert_eq!(round_significant(d("0.0584012345678"), 8, RoundingStrategy::ToZero), d("0.058401234"));
        assert_eq!(round_significant(d("17.50000"), 8, RoundingStrategy::ToZero).to_string(), "17.5");
        assert_eq!(round_significant(d("123456789.9"), 8, RoundingStrategy::ToZero), d("123456789"));
        assert_eq!(significant_digits(d("1.0500")), 3);
    }

    #[test]
    fn conversions_are_exact() {
        // 200.00 USD at 17.123456 = 3424.6912 MXN -> 3424.69 down, 3424.70 up.
        assert_eq!(convert_minor(20_000, d("17.123456"), 2, 2, Rounding::Down).unwrap(), 342_469);
        assert_eq!(convert_minor(20_000, d("17.123456"), 2, 2, Rounding::Up).unwrap(), 342_470);
        // 1000 MXN centavos = 10.00 MXN at 17 -> 0.588... USD -> 59 cents up.
        assert_eq!(convert_minor_inverse(1_000, d("17"), 2, 2, Rounding::Up).unwrap(), 59);
        assert_eq!(convert_minor_inverse(1_000, d("17"), 2, 2, Rounding::Down).unwrap(), 58);
        // scales differ: 100 JPY (scale 0) at 0.0067 USD/JPY = 0.67 USD.
        assert_eq!(convert_minor(100, d("0.0067"), 0, 2, Rounding::Down).unwrap(), 67);
        assert_eq!(bps_of(20_000, 150, Rounding::Up).unwrap(), 300);
        assert_eq!(bps_of(1, 1, Rounding::Up).unwrap(), 1);
        assert_eq!(bps_of(1, 1, Rounding::Down).unwrap(), 0);
        assert_eq!(div_round(5, 2, Rounding::HalfEven).unwrap(), 2);
        assert_eq!(div_round(7, 2, Rounding::HalfEven).unwrap(), 4);
        assert!(convert_minor(1, Decimal::ZERO, 2, 2, Rounding::Down).is_err());
        assert_eq!(
            convert_minor(AMOUNT_MAX_MINOR, d("99999999"), 2, 2, Rounding::Down),
            Err(FxError::AmountTooLarge)
        );
    }
}
