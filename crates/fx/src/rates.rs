//! Mid-market rates: [`Pair`], [`Rate`] and the [`RateBook`].

use std::collections::BTreeMap;

use puente_money::CurrencyCode;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::decimal::{round_significant, significant_digits};
use crate::error::FxError;

/// Smallest mid rate accepted or derived: 10^-8 units of quote per unit of base.
pub const RATE_MIN: Decimal = Decimal::from_parts(1, 0, 0, false, 8);
/// Largest mid rate accepted or derived: 10^8 units of quote per unit of base.
pub const RATE_MAX: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 0);
/// Most significant digits a mid rate may carry. Set rates with more are rejected (never
/// rounded silently); inverse and cross rates are rounded half-even to this many digits.
pub const RATE_SIGNIFICANT_DIGITS: u32 = 12;
/// Most direct pairs a book holds.
pub const RATEBOOK_PAIRS_MAX: usize = 1024;
/// Longest `source` label, in bytes.
pub const RATE_SOURCE_LEN_MAX: usize = 64;
/// Largest `max_age_ms` a caller may ask for: 7 days (covers a long holiday weekend of daily
/// reference rates).
pub const RATE_MAX_AGE_LIMIT_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// How far in the future of `now_ms` a rate (or quote) timestamp may be before it is rejected
/// as coming from the future (clock skew between machines).
pub const CLOCK_SKEW_MAX_MS: u64 = 5_000;

pub use crate::terms::Pair;

// Its constructor checks against `FxError`, which names pairs: here, so that `terms` (which
// `error` reads) depends on nothing.
impl Pair {
    pub fn new(base: CurrencyCode, quote: CurrencyCode) -> Result<Self, FxError> {
        if base == quote {
            return Err(FxError::InvalidPair { base, quote });
        }
        Ok(Pair { base, quote })
    }

    pub fn inverse(&self) -> Pair {
        Pair { base: self.quote, quote: self.base }
    }
}

/// How a rate returned by [`RateBook::get`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derivation {
    /// Set directly for this pair.
    Direct,
    /// `1 / rate` of the opposite pair.
    Inverse,
    /// `(via/quote) / (via/base)`, each leg direct or inverse.
    Cross { via: CurrencyCode },
}

/// A mid-market rate as returned by [`RateBook::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub pair: Pair,
    /// Units of `pair.quote` per 1 `pair.base`; normalized, at most
    /// [`RATE_SIGNIFICANT_DIGITS`] significant digits, within [`RATE_MIN`]..=[`RATE_MAX`].
    pub mid: Decimal,
    /// Time of the rate; for a cross rate, the older of the two legs.
    pub as_of_ms: u64,
    pub source: String,
    pub derivation: Derivation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    mid: Decimal,
    as_of_ms: u64,
    source: String,
}

/// Mid-market rates per pair, with inverse and cross derivation. Pure: the caller passes the
/// time (`now_ms`) when reading.
#[derive(Debug, Clone, Default)]
pub struct RateBook {
    cross_currency: Option<CurrencyCode>,
    entries: BTreeMap<Pair, Entry>,
}

fn check_range(pair: Pair, mid: Decimal) -> Result<(), FxError> {
    if mid.is_sign_negative() || mid.is_zero() {
        return Err(FxError::InvalidRate { pair, reason: "rate must be positive" });
    }
    if mid < RATE_MIN || mid > RATE_MAX {
        return Err(FxError::InvalidRate { pair, reason: "rate outside 10^-8..=10^8" });
    }
    Ok(())
}

impl RateBook {
    /// A book without cross derivation.
    pub fn new() -> Self {
        RateBook::default()
    }

    /// A book that crosses pairs without a direct (or inverse) rate through `via`
    /// (for example USD: USD/CAD and USD/MXN give CAD/MXN).
    pub fn with_cross_currency(via: CurrencyCode) -> Self {
        RateBook { cross_currency: Some(via), entries: BTreeMap::new() }
    }

    pub fn cross_currency(&self) -> Option<CurrencyCode> {
        self.cross_currency
    }

    /// Number of pairs set directly.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets (or replaces) the mid rate of `pair`. A rate previously set for the inverse pair
    /// is removed, so the two directions can never disagree.
    ///
    /// Rejects: `base == quote`, rates outside [`RATE_MIN`]..=[`RATE_MAX`], rates with more than
    /// [`RATE_SIGNIFICANT_DIGITS`] significant digits, sources longer than
    /// [`RATE_SOURCE_LEN_MAX`], more than [`RATEBOOK_PAIRS_MAX`] pairs.
    pub fn set(&mut self, pair: Pair, mid: Decimal, as_of_ms: u64, source: &str) -> Result<(), FxError> {
        let pair = Pair::new(pair.base, pair.quote)?;
        check_range(pair, mid)?;
        if significant_digits(mid) > RATE_SIGNIFICANT_DIGITS {
            return Err(FxError::InvalidRate { pair, reason: "more than 12 significant digits" });
        }
        if source.len() > RATE_SOURCE_LEN_MAX {
            return Err(FxError::LimitExceeded {
                what: "rate source length",
                limit: RATE_SOURCE_LEN_MAX as u64,
            });
        }
        let removed_inverse = self.entries.remove(&pair.inverse());
        if removed_inverse.is_none()
            && !self.entries.contains_key(&pair)
            && self.entries.len() >= RATEBOOK_PAIRS_MAX
        {
            return Err(FxError::LimitExceeded { what: "rate book pairs", limit: RATEBOOK_PAIRS_MAX as u64 });
        }
        self.entries.insert(pair, Entry { mid: mid.normalize(), as_of_ms, source: source.to_owned() });
        debug_assert!(!self.entries.contains_key(&pair.inverse()));
        Ok(())
    }

    /// Direct or inverse rate, without freshness checks.
    fn lookup(&self, pair: Pair) -> Result<Option<Rate>, FxError> {
        if let Some(entry) = self.entries.get(&pair) {
            return Ok(Some(Rate {
                pair,
                mid: entry.mid,
                as_of_ms: entry.as_of_ms,
                source: entry.source.clone(),
                derivation: Derivation::Direct,
            }));
        }
        if let Some(entry) = self.entries.get(&pair.inverse()) {
            let inverse = Decimal::ONE.checked_div(entry.mid).ok_or(FxError::Overflow)?;
            let mid =
                round_significant(inverse, RATE_SIGNIFICANT_DIGITS, RoundingStrategy::MidpointNearestEven);
            check_range(pair, mid)?;
            return Ok(Some(Rate {
                pair,
                mid,
                as_of_ms: entry.as_of_ms,
                source: entry.source.clone(),
                derivation: Derivation::Inverse,
            }));
        }
        Ok(None)
    }

    /// The mid rate of `pair` at `now_ms`: direct, else the inverse of the opposite pair, else
    /// crossed through the configured cross currency (with the older timestamp of the legs).
    ///
    /// Errors: [`FxError::MissingRate`], [`FxError::StaleRate`] when older than `max_age_ms`,
    /// [`FxError::RateFromFuture`] when dated more than [`CLOCK_SKEW_MAX_MS`] after `now_ms`,
    /// [`FxError::LimitExceeded`] when `max_age_ms` exceeds [`RATE_MAX_AGE_LIMIT_MS`].
    pub fn get(&self, pair: Pair, now_ms: u64, max_age_ms: u64) -> Result<Rate, FxError> {
        let pair = Pair::new(pair.base, pair.quote)?;
        if max_age_ms > RATE_MAX_AGE_LIMIT_MS {
            return Err(FxError::LimitExceeded { what: "max rate age (ms)", limit: RATE_MAX_AGE_LIMIT_MS });
        }
        let rate = match self.lookup(pair)? {
            Some(rate) => rate,
            None => self.cross(pair)?,
        };
        if rate.as_of_ms > now_ms.saturating_add(CLOCK_SKEW_MAX_MS) {
            return Err(FxError::RateFromFuture { pair, as_of_ms: rate.as_of_ms, now_ms });
        }
        if now_ms.saturating_sub(rate.as_of_ms) > max_age_ms {
            return Err(FxError::StaleRate { pair, as_of_ms: rate.as_of_ms, now_ms, max_age_ms });
        }
        Ok(rate)
    }

    fn cross(&self, pair: Pair) -> Result<Rate, FxError> {
        let missing = FxError::MissingRate { pair };
        let via = match self.cross_currency {
            Some(via) if via != pair.base && via != pair.quote => via,
            _ => return Err(missing),
        };
        let Some(base_leg) = self.lookup(Pair { base: via, quote: pair.base })? else {
            return Err(missing);
        };
        let Some(quote_leg) = self.lookup(Pair { base: via, quote: pair.quote })? else {
            return Err(missing);
        };
        // 1 base = (1 / (via/base)) via = (via/quote) / (via/base) quote.
        let crossed = quote_leg.mid.checked_div(base_leg.mid).ok_or(FxError::Overflow)?;
        let mid = round_significant(crossed, RATE_SIGNIFICANT_DIGITS, RoundingStrategy::MidpointNearestEven);
        check_range(pair, mid)?;
        Ok(Rate {
            pair,
            mid,
            as_of_ms: base_leg.as_of_ms.min(quote_leg.as_of_ms),
            source: format!("{}+{} via {via}", base_leg.source, quote_leg.source),
            derivation: Derivation::Cross { via },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }
    const USD_MXN: Pair = Pair { base: CurrencyCode::USD, quote: CurrencyCode::MXN };
    const USD_CAD: Pair = Pair { base: CurrencyCode::USD, quote: CurrencyCode::CAD };
    const CAD_MXN: Pair = Pair { base: CurrencyCode::CAD, quote: CurrencyCode::MXN };

    #[test]
    fn direct_inverse_and_stale() {
        let mut book = RateBook::new();
        book.set(USD_MXN, d("17.2500"), 1_000, "test").unwrap();
        let rate = book.get(USD_MXN, 2_000, 10_000).unwrap();
        assert_eq!(rate.mid.to_string(), "17.25");
        assert_eq!(rate.derivation, Derivation::Direct);
        let inverse = book.get(USD_MXN.inverse(), 2_000, 10_000).unwrap();
        assert_eq!(inverse.mid, d("0.0579710144928"));
        assert_eq!(inverse.derivation, Derivation::Inverse);
        assert!(matches!(book.get(USD_MXN, 20_000, 10_000), Err(FxError::StaleRate { .. })));
        // Exactly max age is still fresh.
        assert!(book.get(USD_MXN, 11_000, 10_000).is_ok());
        assert!(matches!(book.get(USD_CAD, 2_000, 10_000), Err(FxError::MissingRate { .. })));
        assert!(book.get(USD_MXN, 0, 10_000).is_ok()); // within clock skew
        let mut future = RateBook::new();
        future.set(USD_MXN, d("17"), 100_000, "x").unwrap();
        assert!(matches!(future.get(USD_MXN, 1_000, 10_000), Err(FxError::RateFromFuture { .. })));
        assert!(matches!(
            book.get(USD_MXN, 2_000, RATE_MAX_AGE_LIMIT_MS + 1),
            Err(FxError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn setting_the_inverse_replaces() {
        let mut book = RateBook::new();
        book.set(USD_MXN, d("17"), 1, "a").unwrap();
        book.set(USD_MXN.inverse(), d("0.05"), 2, "b").unwrap();
        assert_eq!(book.len(), 1);
        assert_eq!(book.get(USD_MXN, 2, 10).unwrap().mid, d("20"));
    }

    #[test]
    fn cross_through_usd_uses_older_leg() {
        let mut book = RateBook::with_cross_currency(CurrencyCode::USD);
        book.set(USD_CAD, d("1.36"), 5_000, "ecb").unwrap();
        book.set(USD_MXN, d("17"), 3_000, "ecb").unwrap();
        let rate = book.get(CAD_MXN, 6_000, 10_000).unwrap();
        assert_eq!(rate.mid, d("12.5"));
        assert_eq!(rate.as_of_ms, 3_000);
        assert_eq!(rate.derivation, Derivation::Cross { via: CurrencyCode::USD });
        let back = book.get(CAD_MXN.inverse(), 6_000, 10_000).unwrap();
        assert_eq!(back.mid, d("0.08"));
        // Stale through the older leg.
        assert!(matches!(book.get(CAD_MXN, 13_001, 10_000), Err(FxError::StaleRate { .. })));
        // Without the cross currency there is no rate.
        let mut plain = RateBook::new();
        plain.set(USD_CAD, d("1.36"), 5_000, "ecb").unwrap();
        plain.set(USD_MXN, d("17"), 3_000, "ecb").unwrap();
        assert!(matches!(plain.get(CAD_MXN, 6_000, 10_000), Err(FxError::MissingRate { .. })));
    }

    #[test]
    fn rejects_bad_rates() {
        let mut book = RateBook::new();
        assert!(book.set(USD_MXN, d("0"), 1, "x").is_err());
        assert!(book.set(USD_MXN, d("-1"), 1, "x").is_err());
        assert!(book.set(USD_MXN, d("1000000000"), 1, "x").is_err());
        assert!(book.set(USD_MXN, d("17.1234567890123"), 1, "x").is_err());
        assert!(book.set(USD_MXN, d("17"), 1, &"s".repeat(65)).is_err());
        let same = Pair { base: CurrencyCode::USD, quote: CurrencyCode::USD };
        assert!(matches!(book.set(same, d("1"), 1, "x"), Err(FxError::InvalidPair { .. })));
        assert!(matches!(book.get(same, 1, 1), Err(FxError::InvalidPair { .. })));
        assert!(book.is_empty());
    }

    #[test]
    fn pair_limit() {
        let mut book = RateBook::new();
        let mut count = 0;
        'outer: for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = CurrencyCode::parse(std::str::from_utf8(&[a, b, c]).unwrap()).unwrap();
                    if code == CurrencyCode::USD {
                        continue;
                    }
                    let result = book.set(Pair { base: CurrencyCode::USD, quote: code }, d("2"), 1, "x");
                    if count == RATEBOOK_PAIRS_MAX {
                        assert!(matches!(result, Err(FxError::LimitExceeded { .. })));
                        break 'outer;
                    }
                    result.unwrap();
                    count += 1;
                }
            }
        }
        // Replacing an existing pair still works at the limit.
        let first = Pair { base: CurrencyCode::USD, quote: CurrencyCode::parse("AAA").unwrap() };
        book.set(first, d("3"), 2, "y").unwrap();
        book.set(first.inverse(), d("0.5"), 3, "z").unwrap();
    }
}
