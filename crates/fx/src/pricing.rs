//! Pricing configuration and the quote engine.
//!
//! Size: the configuration, its validation and the quote engine share the pricing rules below
//! and are read together; the tests at the end are a third of the file.
//!
//! # Pricing rules (v1)
//!
//! * **Customer rate** (units of the buy currency per 1 unit of the sell currency) =
//!   `mid × (10_000 − spread_bps) / 10_000`, truncated (toward zero, i.e. against the customer)
//!   to [`CUSTOMER_RATE_SIGNIFICANT_DIGITS`] significant digits. The margin over mid is therefore
//!   at least `spread_bps` and at most `spread_bps` plus 10^-7 relative (0.001 bps).
//! * **Spread tier**: chosen by the *send amount* (the amount converted, fees excluded) valued in
//!   [`PricingConfig::tier_currency`] minor units at the mid rate, truncated; the tier is the last
//!   one whose `from_minor` is at or below that value. Spreads must not increase with amount.
//! * **Send fixed** (`FixedSide::Send(s)`): `s` is the amount converted;
//!   `converted = floor(s × customer_rate)` in the buy currency's minor units (exact integer
//!   arithmetic). The house keeps less than one minor unit of the buy currency.
//! * **Receive fixed** (`FixedSide::Receive(r)`): the recipient gets exactly `r`:
//!   `converted = r + covered third-party fee`, `s = ceil(converted / customer_rate)` — the
//!   smallest send amount whose value at the customer rate covers it; the customer overpays by
//!   less than one minor unit of the sell currency. The tier is the one that gives the smallest
//!   send amount and is consistent (the send amount lies in that tier). In the rare gap just
//!   below a tier boundary where no send amount of the lower tier suffices but the boundary
//!   amount of the upper tier converts to more than asked, the send amount is the boundary
//!   amount and the recipient receives `floor(s × customer_rate)` − third-party fee, i.e. at
//!   least what was asked (never less, and never more than the send amount is worth).
//! * In both directions: `converted ≤ s × customer_rate` exactly (the house never loses on
//!   rounding) and the difference is below one minor unit of the rounded currency.
//! * **Fees** in the sell currency, added on top: `fee_fixed_minor` (per sell currency) +
//!   `fee_pct_minor = ceil(s × fee_pct_bps / 10_000)`. **Taxes** (zero unless configured per
//!   sell currency): `fixed_minor + ceil(s × pct_bps / 10_000)`.
//!   `total_debit = s + fee_total + tax`.
//! * **Covered third-party fees** (zero unless configured per buy currency, in its minor units)
//!   are deducted from the converted amount: `receive = converted − third_party_fee`.
//! * **TTL** per segment (participant override allowed), within [`TTL_MIN_MS`]..=[`TTL_MAX_MS`].

use std::collections::BTreeMap;

use puente_money::{AMOUNT_MAX_MINOR, Currency, CurrencyCode, CurrencyTable, Rounding};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::decimal::{bps_of, convert_minor, convert_minor_inverse, round_significant};
use crate::error::FxError;
use crate::quote::{FixedKind, QUOTE_PARTICIPANT_LEN_MAX, Quote};
use crate::rates::{RATE_MAX_AGE_LIMIT_MS, RateBook};
use crate::terms::Pair;
pub use crate::terms::{CUSTOMER_RATE_SIGNIFICANT_DIGITS, QuoteId, SPREAD_MAX_BPS, Segment, TTL_MAX_MS};

/// Largest percentage fee, in basis points (5%).
pub const FEE_PCT_MAX_BPS: u32 = 500;
/// Largest fixed fee, in minor units of the sell currency (100,000: USD 1,000.00).
pub const FEE_FIXED_MAX_MINOR: u64 = 100_000;
/// Largest percentage tax, in basis points (20%).
pub const TAX_PCT_MAX_BPS: u32 = 2_000;
/// Largest fixed tax, in minor units of the sell currency.
pub const TAX_FIXED_MAX_MINOR: u64 = 100_000;
/// Largest covered third-party fee, in minor units of the buy currency.
pub const THIRD_PARTY_FEE_MAX_MINOR: u64 = 100_000;
/// Shortest quote lifetime: 1 second.
pub const TTL_MIN_MS: u64 = 1_000;
/// Most spread tiers per schedule.
pub const TIERS_MAX: usize = 16;
/// Most configured pairs.
pub const PAIRS_MAX: usize = 64;
/// Most participant overrides.
pub const PARTICIPANTS_MAX: usize = 100_000;

/// From `from_minor` (send amount valued in the tier currency's minor units) upward, the spread
/// is `spread_bps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadTier {
    pub from_minor: u64,
    pub spread_bps: u32,
}

/// Prices of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentPricing {
    /// Ascending by `from_minor`, the first from 0, spreads non-increasing.
    pub spread_tiers: Vec<SpreadTier>,
    /// Fixed fee per sell currency, in its minor units. Must list every currency of every pair.
    pub fee_fixed_minor: BTreeMap<CurrencyCode, u64>,
    pub fee_pct_bps: u32,
    pub ttl_ms: u64,
}

/// The three segments' prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segments {
    pub sme: SegmentPricing,
    pub remittance: SegmentPricing,
    pub institution: SegmentPricing,
}

impl Segments {
    pub fn get(&self, segment: Segment) -> &SegmentPricing {
        match segment {
            Segment::Sme => &self.sme,
            Segment::Remittance => &self.remittance,
            Segment::Institution => &self.institution,
        }
    }
}

/// Per-participant override; each present field replaces the segment's value in every segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantOverride {
    #[serde(default)]
    pub spread_tiers: Option<Vec<SpreadTier>>,
    #[serde(default)]
    pub fee_fixed_minor: Option<BTreeMap<CurrencyCode, u64>>,
    #[serde(default)]
    pub fee_pct_bps: Option<u32>,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// Taxes collected by the provider on a transfer, in the sell currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxRule {
    #[serde(default)]
    pub fixed_minor: u64,
    #[serde(default)]
    pub pct_bps: u32,
}

/// The whole pricing configuration (deserializable from JSON/TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// Pairs that may be quoted; each in both directions.
    pub pairs: Vec<Pair>,
    /// Currency in whose minor units tier thresholds are written (USD).
    pub tier_currency: CurrencyCode,
    /// Oldest mid rate a quote may use, at most [`RATE_MAX_AGE_LIMIT_MS`].
    pub max_rate_age_ms: u64,
    pub segments: Segments,
    #[serde(default)]
    pub participants: BTreeMap<String, ParticipantOverride>,
    /// Taxes per sell currency (none unless configured).
    #[serde(default)]
    pub taxes: BTreeMap<CurrencyCode, TaxRule>,
    /// Covered third-party fees per buy currency, in its minor units (none unless configured).
    #[serde(default)]
    pub third_party_fees_minor: BTreeMap<CurrencyCode, u64>,
}

/// The prices that apply to one participant in one segment.
#[derive(Debug, Clone, Copy)]
pub struct EffectivePricing<'a> {
    pub spread_tiers: &'a [SpreadTier],
    pub fee_fixed_minor: &'a BTreeMap<CurrencyCode, u64>,
    pub fee_pct_bps: u32,
    pub ttl_ms: u64,
}

fn invalid(text: String) -> FxError {
    FxError::InvalidConfig(text)
}

impl PricingConfig {
    /// A reasonable USD/MXN configuration (used in tests, benches and as an example):
    /// remittance 150/100/75 bps by USD 0 / 1,000 / 10,000, fee USD 2.99 or MXN 49.00, TTL 30
    /// min; SME 100/60/40 bps, USD 5.00, 5 min; institution 25/15 bps, no fixed fee, 30 s.
    pub fn example_usd_mxn() -> Self {
        let fees = |usd: u64, mxn: u64| BTreeMap::from([(CurrencyCode::USD, usd), (CurrencyCode::MXN, mxn)]);
        let tiers = |list: &[(u64, u32)]| {
            list.iter()
                .map(|&(from_minor, spread_bps)| SpreadTier { from_minor, spread_bps })
                .collect::<Vec<_>>()
        };
        PricingConfig {
            pairs: vec![Pair { base: CurrencyCode::USD, quote: CurrencyCode::MXN }],
            tier_currency: CurrencyCode::USD,
            max_rate_age_ms: 60_000,
            segments: Segments {
                sme: SegmentPricing {
                    spread_tiers: tiers(&[(0, 100), (1_000_000, 60), (10_000_000, 40)]),
                    fee_fixed_minor: fees(500, 9_000),
                    fee_pct_bps: 0,
                    ttl_ms: 5 * 60 * 1_000,
                },
                remittance: SegmentPricing {
                    spread_tiers: tiers(&[(0, 150), (100_000, 100), (1_000_000, 75)]),
                    fee_fixed_minor: fees(299, 4_900),
                    fee_pct_bps: 0,
                    ttl_ms: TTL_MAX_MS,
                },
                institution: SegmentPricing {
                    spread_tiers: tiers(&[(0, 25), (100_000_000, 15)]),
                    fee_fixed_minor: fees(0, 0),
                    fee_pct_bps: 0,
                    ttl_ms: 30_000,
                },
            },
            participants: BTreeMap::new(),
            taxes: BTreeMap::new(),
            third_party_fees_minor: BTreeMap::new(),
        }
    }

    /// The prices for `participant` in `segment` (participant overrides applied).
    pub fn effective(&self, participant: &str, segment: Segment) -> EffectivePricing<'_> {
        let base = self.segments.get(segment);
        let over = self.participants.get(participant);
        EffectivePricing {
            spread_tiers: over.and_then(|o| o.spread_tiers.as_deref()).unwrap_or(&base.spread_tiers),
            fee_fixed_minor: over.and_then(|o| o.fee_fixed_minor.as_ref()).unwrap_or(&base.fee_fixed_minor),
            fee_pct_bps: over.and_then(|o| o.fee_pct_bps).unwrap_or(base.fee_pct_bps),
            ttl_ms: over.and_then(|o| o.ttl_ms).unwrap_or(base.ttl_ms),
        }
    }

    /// Smallest and largest spread any quote can carry.
    pub fn spread_range_bps(&self) -> (u32, u32) {
        let mut all = Vec::new();
        for segment in Segment::ALL {
            all.extend(self.segments.get(segment).spread_tiers.iter().map(|t| t.spread_bps));
        }
        for over in self.participants.values() {
            all.extend(over.spread_tiers.iter().flatten().map(|t| t.spread_bps));
        }
        (all.iter().copied().min().unwrap_or(0), all.iter().copied().max().unwrap_or(0))
    }

    /// Checks every limit and that the schedules are complete for the configured pairs.
    pub fn validate(&self, currencies: &CurrencyTable) -> Result<(), FxError> {
        if self.pairs.is_empty() || self.pairs.len() > PAIRS_MAX {
            return Err(invalid(format!("need 1..={PAIRS_MAX} pairs")));
        }
        let mut traded = Vec::new();
        for (i, pair) in self.pairs.iter().enumerate() {
            Pair::new(pair.base, pair.quote)?;
            currencies.get(pair.base)?;
            currencies.get(pair.quote)?;
            if self.pairs[..i].iter().any(|p| p == pair || *p == pair.inverse()) {
                return Err(invalid(format!("pair {pair} listed twice")));
            }
            traded.extend([pair.base, pair.quote]);
        }
        currencies.get(self.tier_currency)?;
        if self.max_rate_age_ms > RATE_MAX_AGE_LIMIT_MS {
            return Err(invalid(format!("max_rate_age_ms above {RATE_MAX_AGE_LIMIT_MS}")));
        }
        if self.participants.len() > PARTICIPANTS_MAX {
            return Err(invalid(format!("more than {PARTICIPANTS_MAX} participant overrides")));
        }
        for id in self.participants.keys() {
            if id.is_empty() || id.len() > QUOTE_PARTICIPANT_LEN_MAX {
                return Err(invalid(format!(
                    "participant id length must be 1..={QUOTE_PARTICIPANT_LEN_MAX}"
                )));
            }
        }
        let mut who: Vec<&str> = vec![""];
        who.extend(self.participants.keys().map(String::as_str));
        for participant in who {
            for segment in Segment::ALL {
                let p = self.effective(participant, segment);
                let context = format!("participant {participant:?} segment {segment:?}");
                validate_tiers(p.spread_tiers).map_err(|e| invalid(format!("{context}: {e}")))?;
                if p.fee_pct_bps > FEE_PCT_MAX_BPS {
                    return Err(invalid(format!("{context}: fee_pct_bps above {FEE_PCT_MAX_BPS}")));
                }
                if !(TTL_MIN_MS..=TTL_MAX_MS).contains(&p.ttl_ms) {
                    return Err(invalid(format!("{context}: ttl_ms outside {TTL_MIN_MS}..={TTL_MAX_MS}")));
                }
                for code in &traded {
                    match p.fee_fixed_minor.get(code) {
                        None => return Err(invalid(format!("{context}: no fixed fee for {code}"))),
                        Some(&fee) if fee > FEE_FIXED_MAX_MINOR => {
                            return Err(invalid(format!("{context}: fixed fee above {FEE_FIXED_MAX_MINOR}")));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        for (code, tax) in &self.taxes {
            currencies.get(*code)?;
            if tax.fixed_minor > TAX_FIXED_MAX_MINOR || tax.pct_bps > TAX_PCT_MAX_BPS {
                return Err(invalid(format!("tax for {code} above limits")));
            }
        }
        for (code, fee) in &self.third_party_fees_minor {
            currencies.get(*code)?;
            if *fee > THIRD_PARTY_FEE_MAX_MINOR {
                return Err(invalid(format!("third-party fee for {code} above {THIRD_PARTY_FEE_MAX_MINOR}")));
            }
        }
        Ok(())
    }
}

fn validate_tiers(tiers: &[SpreadTier]) -> Result<(), String> {
    if tiers.is_empty() || tiers.len() > TIERS_MAX {
        return Err(format!("need 1..={TIERS_MAX} spread tiers"));
    }
    if tiers[0].from_minor != 0 {
        return Err("first tier must start at 0".into());
    }
    for pair in tiers.windows(2) {
        if pair[1].from_minor <= pair[0].from_minor {
            return Err("tier thresholds must increase".into());
        }
        if pair[1].spread_bps > pair[0].spread_bps {
            return Err("spreads must not increase with amount".into());
        }
    }
    if tiers.iter().any(|t| t.spread_bps > SPREAD_MAX_BPS) {
        return Err(format!("spread above {SPREAD_MAX_BPS} bps"));
    }
    Ok(())
}

/// Which amount the customer fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FixedSide {
    /// The amount converted, in minor units of the sell currency (fees are added on top).
    Send(u64),
    /// The amount the recipient receives, in minor units of the buy currency.
    Receive(u64),
}

/// A request for a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub participant: String,
    pub segment: Segment,
    /// Currency the customer pays (send currency).
    pub sell: CurrencyCode,
    /// Currency the recipient gets.
    pub buy: CurrencyCode,
    pub fixed: FixedSide,
}

/// The quote engine: a validated configuration and currency table. Pure and `Sync`.
#[derive(Debug, Clone)]
pub struct Pricer {
    config: PricingConfig,
    currencies: CurrencyTable,
}

/// Per-quote context: rates and scales.
/// What the sender pays beyond the amount sent (see `Pricer::charges`).
struct Charges {
    fee_fixed_minor: u64,
    fee_pct_minor: u64,
    fee_total_minor: u64,
    tax_minor: u64,
    total_debit_minor: u64,
}

struct Context<'a> {
    pricing: EffectivePricing<'a>,
    mid: Decimal,
    sell: Currency,
    buy: Currency,
    /// Sell → tier currency mid (None when the sell currency is the tier currency).
    tier_rate: Option<(Decimal, u32)>,
}

impl Context<'_> {
    /// Send amount valued in tier-currency minor units at mid, truncated (exact, monotone).
    fn tier_value(&self, send_minor: u64) -> Result<u64, FxError> {
        match self.tier_rate {
            None => Ok(send_minor),
            Some((rate, tier_scale)) => {
                match convert_minor(send_minor, rate, self.sell.scale, tier_scale, Rounding::Down) {
                    Err(FxError::AmountTooLarge) => Ok(u64::MAX),
                    other => other,
                }
            }
        }
    }

    /// Smallest send amount whose tier value is at least `threshold_minor` (exact).
    fn tier_start(&self, threshold_minor: u64) -> Result<u64, FxError> {
        match self.tier_rate {
            None => Ok(threshold_minor),
            Some((rate, tier_scale)) => {
                convert_minor_inverse(threshold_minor, rate, self.sell.scale, tier_scale, Rounding::Up)
            }
        }
    }

    fn tier_index(&self, send_minor: u64) -> Result<usize, FxError> {
        let value = self.tier_value(send_minor)?;
        Ok(self.pricing.spread_tiers.iter().rposition(|t| t.from_minor <= value).unwrap_or(0))
    }

    fn customer_rate(&self, tier: usize) -> Result<Decimal, FxError> {
        let spread = self.pricing.spread_tiers.get(tier).ok_or(FxError::Overflow)?.spread_bps;
        debug_assert!(spread <= SPREAD_MAX_BPS);
        let keep = Decimal::from(10_000u32.checked_sub(spread).ok_or(FxError::Overflow)?);
        let exact = self
            .mid
            .checked_mul(keep)
            .and_then(|v| v.checked_div(Decimal::from(10_000u32)))
            .ok_or(FxError::Overflow)?;
        let rate = round_significant(exact, CUSTOMER_RATE_SIGNIFICANT_DIGITS, RoundingStrategy::ToZero);
        if rate.is_zero() {
            return Err(FxError::Overflow);
        }
        debug_assert!(rate <= exact && exact <= self.mid);
        Ok(rate)
    }
}

impl Pricer {
    /// Validates `config` against `currencies`.
    pub fn new(config: PricingConfig, currencies: CurrencyTable) -> Result<Self, FxError> {
        config.validate(&currencies)?;
        Ok(Pricer { config, currencies })
    }

    pub fn config(&self) -> &PricingConfig {
        &self.config
    }

    pub fn currencies(&self) -> &CurrencyTable {
        &self.currencies
    }

    /// Prices `request` at `now_ms` with the caller-supplied `id` (see
    /// [`crate::generate_quote_id`]). See the module documentation for the rules.
    ///
    /// Needs a fresh (within `max_rate_age_ms`) mid for sell/buy and, when neither side is the
    /// tier currency, for sell/tier currency (direct, inverse or crossed in `book`).
    pub fn quote(
        &self,
        book: &RateBook,
        request: &QuoteRequest,
        id: QuoteId,
        now_ms: u64,
    ) -> Result<Quote, FxError> {
        if request.participant.is_empty() || request.participant.len() > QUOTE_PARTICIPANT_LEN_MAX {
            return Err(FxError::InvalidArgument("participant id must be 1..=64 bytes"));
        }
        let pair = Pair::new(request.sell, request.buy)?;
        if !self.config.pairs.iter().any(|p| *p == pair || *p == pair.inverse()) {
            return Err(FxError::PairNotPriced { sell: request.sell, buy: request.buy });
        }
        let max_age_ms = self.config.max_rate_age_ms;
        let rate = book.get(pair, now_ms, max_age_ms)?;
        let sell = self.currencies.get(request.sell)?;
        let buy = self.currencies.get(request.buy)?;
        let tier_rate = if request.sell == self.config.tier_currency {
            None
        } else if request.buy == self.config.tier_currency {
            Some((rate.mid, buy.scale))
        } else {
            let tier = self.currencies.get(self.config.tier_currency)?;
            Some((book.get(Pair::new(request.sell, tier.code)?, now_ms, max_age_ms)?.mid, tier.scale))
        };
        let pricing = self.config.effective(&request.participant, request.segment);
        let context = Context { pricing, mid: rate.mid, sell, buy, tier_rate };
        let third_party_fee_minor =
            self.config.third_party_fees_minor.get(&request.buy).copied().unwrap_or(0);

        let (send_amount_minor, tier, converted_amount_minor, fixed_side) =
            self.size(&context, request.fixed, third_party_fee_minor)?;
        if converted_amount_minor <= third_party_fee_minor {
            return Err(FxError::AmountTooSmall);
        }
        let receive_amount_minor = converted_amount_minor - third_party_fee_minor;
        let customer_rate = context.customer_rate(tier)?;
        let spread_bps = pricing.spread_tiers.get(tier).ok_or(FxError::Overflow)?.spread_bps;

        let Charges { fee_fixed_minor, fee_pct_minor, fee_total_minor, tax_minor, total_debit_minor } =
            self.charges(&pricing, request.sell, send_amount_minor)?;
        let expires_at_ms = now_ms.checked_add(pricing.ttl_ms).ok_or(FxError::Overflow)?;

        // House never loses on rounding: converted ≤ send × customer_rate, by less than one
        // minor unit of whichever side was rounded.
        let ceiling = convert_minor(send_amount_minor, customer_rate, sell.scale, buy.scale, Rounding::Down)?;
        if converted_amount_minor > ceiling {
            return Err(FxError::InconsistentQuote("converted amount exceeds send × rate"));
        }

        let quote = Quote {
            id,
            participant: request.participant.clone(),
            segment: request.segment,
            pair,
            fixed_side,
            mid_rate: rate.mid,
            customer_rate,
            spread_bps,
            rate_as_of_ms: rate.as_of_ms,
            send_amount_minor,
            fee_fixed_minor,
            fee_pct_minor,
            fee_total_minor,
            tax_minor,
            total_debit_minor,
            converted_amount_minor,
            third_party_fee_minor,
            receive_amount_minor,
            created_at_ms: now_ms,
            expires_at_ms,
        };
        quote.check_consistency()?;
        Ok(quote)
    }

    /// The amounts a quote converts: (send, spread tier, converted, which side was fixed).
    fn size(
        &self,
        context: &Context<'_>,
        fixed: FixedSide,
        third_party_fee_minor: u64,
    ) -> Result<(u64, usize, u64, FixedKind), FxError> {
        match fixed {
            FixedSide::Send(send) => {
                if send == 0 {
                    return Err(FxError::AmountTooSmall);
                }
                if send > AMOUNT_MAX_MINOR {
                    return Err(FxError::AmountTooLarge);
                }
                let tier = context.tier_index(send)?;
                let customer_rate = context.customer_rate(tier)?;
                let converted = convert_minor(
                    send,
                    customer_rate,
                    context.sell.scale,
                    context.buy.scale,
                    Rounding::Down,
                )?;
                Ok((send, tier, converted, FixedKind::Send))
            }
            FixedSide::Receive(receive) => {
                if receive == 0 {
                    return Err(FxError::AmountTooSmall);
                }
                if receive > AMOUNT_MAX_MINOR {
                    return Err(FxError::AmountTooLarge);
                }
                let target = receive.checked_add(third_party_fee_minor).ok_or(FxError::Overflow)?;
                let (send, tier, converted) = self.solve_receive(context, target)?;
                Ok((send, tier, converted, FixedKind::Receive))
            }
        }
    }

    /// What the sender pays beyond the amount sent: fees (fixed and percentage, rounded up)
    /// and taxes, and the total debit, at most [`AMOUNT_MAX_MINOR`].
    fn charges(
        &self,
        pricing: &EffectivePricing<'_>,
        sell: CurrencyCode,
        send_amount_minor: u64,
    ) -> Result<Charges, FxError> {
        let fee_fixed_minor = pricing.fee_fixed_minor.get(&sell).copied().unwrap_or(0);
        let fee_pct_minor = bps_of(send_amount_minor, pricing.fee_pct_bps, Rounding::Up)?;
        let fee_total_minor = fee_fixed_minor.checked_add(fee_pct_minor).ok_or(FxError::Overflow)?;
        let tax = self.config.taxes.get(&sell).copied().unwrap_or_default();
        let tax_minor = tax
            .fixed_minor
            .checked_add(bps_of(send_amount_minor, tax.pct_bps, Rounding::Up)?)
            .ok_or(FxError::Overflow)?;
        let total_debit_minor = send_amount_minor
            .checked_add(fee_total_minor)
            .and_then(|v| v.checked_add(tax_minor))
            .ok_or(FxError::Overflow)?;
        if total_debit_minor > AMOUNT_MAX_MINOR {
            return Err(FxError::AmountTooLarge);
        }
        Ok(Charges { fee_fixed_minor, fee_pct_minor, fee_total_minor, tax_minor, total_debit_minor })
    }

    /// Receive-fixed: the smallest consistent send amount converting to at least `target`.
    /// Returns (send, tier, converted).
    fn solve_receive(&self, context: &Context<'_>, target: u64) -> Result<(u64, usize, u64), FxError> {
        let (sell_scale, buy_scale) = (context.sell.scale, context.buy.scale);
        let mut best: Option<(u64, usize, u64)> = None;
        for (tier, spec) in context.pricing.spread_tiers.iter().enumerate() {
            let rate = context.customer_rate(tier)?;
            let send = match convert_minor_inverse(target, rate, sell_scale, buy_scale, Rounding::Up) {
                Ok(send) => send,
                Err(FxError::AmountTooLarge | FxError::Overflow) => continue,
                Err(other) => return Err(other),
            };
            let at = context.tier_index(send)?;
            let candidate = if at == tier {
                (send, tier, target)
            } else if at < tier {
                // Gap: the first send amount of this tier converts to more than the target.
                let start = match context.tier_start(spec.from_minor) {
                    Ok(start) => start,
                    Err(FxError::AmountTooLarge | FxError::Overflow) => continue,
                    Err(other) => return Err(other),
                };
                if start > AMOUNT_MAX_MINOR || context.tier_index(start)? != tier {
                    continue;
                }
                let converted = convert_minor(start, rate, sell_scale, buy_scale, Rounding::Down)?;
                debug_assert!(converted >= target);
                (start, tier, converted)
            } else {
                continue;
            };
            if best.is_none_or(|(best_send, _, _)| candidate.0 < best_send) {
                best = Some(candidate);
            }
        }
        best.ok_or(FxError::AmountTooLarge)
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

    fn setup() -> (Pricer, RateBook) {
        let pricer = Pricer::new(PricingConfig::example_usd_mxn(), CurrencyTable::default()).unwrap();
        let mut book = RateBook::new();
        book.set(USD_MXN, d("17.25"), 1_000, "test").unwrap();
        (pricer, book)
    }

    fn request(segment: Segment, sell: CurrencyCode, buy: CurrencyCode, fixed: FixedSide) -> QuoteRequest {
        QuoteRequest { participant: "acme".into(), segment, sell, buy, fixed }
    }

    #[test]
    fn remittance_send_200_usd() {
        let (pricer, book) = setup();
        let req = request(Segment::Remittance, CurrencyCode::USD, CurrencyCode::MXN, FixedSide::Send(20_000));
        let q = pricer.quote(&book, &req, [1; 16], 2_000).unwrap();
        // 17.25 × (1 − 0.015) = 16.99125
        assert_eq!(q.customer_rate, d("16.99125"));
        assert_eq!(q.spread_bps, 150);
        assert_eq!(q.converted_amount_minor, 339_825);
        assert_eq!(q.receive_amount_minor, 339_825);
        assert_eq!(q.fee_total_minor, 299);
        assert_eq!(q.total_debit_minor, 20_299);
        assert_eq!(q.expires_at_ms, 2_000 + TTL_MAX_MS);
    }

    #[test]
    fn receive_fixed_rounds_up_the_send() {
        let (pricer, book) = setup();
        let req =
            request(Segment::Remittance, CurrencyCode::USD, CurrencyCode::MXN, FixedSide::Receive(100_000));
        let q = pricer.quote(&book, &req, [1; 16], 2_000).unwrap();
        // 1000.00 / 16.99125 = 58.8535... -> 58.86
        assert_eq!(q.send_amount_minor, 5_886);
        assert_eq!(q.receive_amount_minor, 100_000);
        assert_eq!(q.fixed_side, FixedKind::Receive);
        // MXN -> USD
        let req =
            request(Segment::Remittance, CurrencyCode::MXN, CurrencyCode::USD, FixedSide::Receive(10_000));
        let q = pricer.quote(&book, &req, [2; 16], 2_000).unwrap();
        assert_eq!(q.receive_amount_minor, 10_000);
        assert_eq!(q.fee_fixed_minor, 4_900);
        // rate = 1/17.25 = 0.0579710144928 × 0.985 -> 0.057101449 (8 significant, truncated)
        assert_eq!(q.customer_rate, d("0.057101449"));
        assert_eq!(q.send_amount_minor, 175_127); // ceil(100 / 0.057101449) = 1751.27...
    }

    #[test]
    fn tiers_by_usd_value() {
        let (pricer, book) = setup();
        let at = |send: u64, sell: CurrencyCode, buy: CurrencyCode| {
            pricer
                .quote(&book, &request(Segment::Remittance, sell, buy, FixedSide::Send(send)), [0; 16], 2_000)
                .unwrap()
        };
        assert_eq!(at(99_999, CurrencyCode::USD, CurrencyCode::MXN).spread_bps, 150);
        assert_eq!(at(100_000, CurrencyCode::USD, CurrencyCode::MXN).spread_bps, 100);
        assert_eq!(at(1_000_000, CurrencyCode::USD, CurrencyCode::MXN).spread_bps, 75);
        // MXN 17,250.00 = USD 1,000.00 at mid.
        assert_eq!(at(1_724_999, CurrencyCode::MXN, CurrencyCode::USD).spread_bps, 150);
        assert_eq!(at(1_725_000, CurrencyCode::MXN, CurrencyCode::USD).spread_bps, 100);
    }

    #[test]
    fn receive_fixed_in_a_tier_gap_delivers_at_least_the_amount() {
        let (pricer, book) = setup();
        // USD 999.99 at 150 bps -> 16991.07... MXN; USD 1000.00 at 100 bps -> 17077.50 MXN.
        let below = pricer
            .quote(
                &book,
                &request(Segment::Remittance, CurrencyCode::USD, CurrencyCode::MXN, FixedSide::Send(99_999)),
                [0; 16],
                2_000,
            )
            .unwrap();
        let asked = below.receive_amount_minor + 5_000;
        let q = pricer
            .quote(
                &book,
                &request(
                    Segment::Remittance,
                    CurrencyCode::USD,
                    CurrencyCode::MXN,
                    FixedSide::Receive(asked),
                ),
                [0; 16],
                2_000,
            )
            .unwrap();
        assert_eq!(q.send_amount_minor, 100_000);
        assert_eq!(q.spread_bps, 100);
        assert_eq!(q.receive_amount_minor, 1_707_750);
        assert!(q.receive_amount_minor >= asked);
    }

    #[test]
    fn errors() {
        let (pricer, book) = setup();
        let now = 2_000;
        let send = |s| request(Segment::Remittance, CurrencyCode::USD, CurrencyCode::MXN, FixedSide::Send(s));
        assert_eq!(pricer.quote(&book, &send(0), [0; 16], now), Err(FxError::AmountTooSmall));
        assert_eq!(
            pricer.quote(&book, &send(AMOUNT_MAX_MINOR + 1), [0; 16], now),
            Err(FxError::AmountTooLarge)
        );
        assert!(matches!(
            pricer.quote(&book, &send(100), [0; 16], 1_000_000),
            Err(FxError::StaleRate { .. })
        ));
        let cad = request(Segment::Remittance, CurrencyCode::USD, CurrencyCode::CAD, FixedSide::Send(100));
        assert!(matches!(pricer.quote(&book, &cad, [0; 16], now), Err(FxError::PairNotPriced { .. })));
        let same = request(Segment::Remittance, CurrencyCode::USD, CurrencyCode::USD, FixedSide::Send(100));
        assert!(matches!(pricer.quote(&book, &same, [0; 16], now), Err(FxError::InvalidPair { .. })));
        let mut nobody = send(100);
        nobody.participant = String::new();
        assert!(matches!(pricer.quote(&book, &nobody, [0; 16], now), Err(FxError::InvalidArgument(_))));
        assert!(matches!(
            pricer.quote(&RateBook::new(), &send(100), [0; 16], now),
            Err(FxError::MissingRate { .. })
        ));
        // Tiny MXN amount converts to nothing.
        let tiny = request(Segment::Remittance, CurrencyCode::MXN, CurrencyCode::USD, FixedSide::Send(1));
        assert_eq!(pricer.quote(&book, &tiny, [0; 16], now), Err(FxError::AmountTooSmall));
        // Largest amounts do not panic.
        for fixed in [FixedSide::Send(AMOUNT_MAX_MINOR), FixedSide::Receive(AMOUNT_MAX_MINOR)] {
            for (sell, buy) in
                [(CurrencyCode::USD, CurrencyCode::MXN), (CurrencyCode::MXN, CurrencyCode::USD)]
            {
                let _ = pricer.quote(&book, &request(Segment::Sme, sell, buy, fixed), [0; 16], now);
            }
        }
    }

    #[test]
    fn participant_override_and_taxes() {
        let mut config = PricingConfig::example_usd_mxn();
        config.participants.insert(
            "vip".into(),
            ParticipantOverride {
                spread_tiers: Some(vec![SpreadTier { from_minor: 0, spread_bps: 20 }]),
                fee_pct_bps: Some(10),
                ..Default::default()
            },
        );
        config.taxes.insert(CurrencyCode::USD, TaxRule { fixed_minor: 100, pct_bps: 100 });
        config.third_party_fees_minor.insert(CurrencyCode::MXN, 500);
        let pricer = Pricer::new(config, CurrencyTable::default()).unwrap();
        let (_, book) = setup();
        let mut req =
            request(Segment::Remittance, CurrencyCode::USD, CurrencyCode::MXN, FixedSide::Send(20_000));
        req.participant = "vip".into();
        let q = pricer.quote(&book, &req, [0; 16], 2_000).unwrap();
        assert_eq!(q.spread_bps, 20);
        assert_eq!(q.fee_pct_minor, 20);
        assert_eq!(q.fee_fixed_minor, 299);
        assert_eq!(q.tax_minor, 300);
        assert_eq!(q.total_debit_minor, 20_000 + 319 + 300);
        assert_eq!(q.third_party_fee_minor, 500);
        assert_eq!(q.receive_amount_minor, q.converted_amount_minor - 500);
        req.fixed = FixedSide::Receive(100_000);
        let q = pricer.quote(&book, &req, [0; 16], 2_000).unwrap();
        assert_eq!(q.receive_amount_minor, 100_000);
        assert_eq!(q.converted_amount_minor, 100_500);
    }

    #[test]
    fn config_validation() {
        let table = CurrencyTable::default();
        let ok = PricingConfig::example_usd_mxn();
        ok.validate(&table).unwrap();
        let mut bad = ok.clone();
        bad.segments.remittance.ttl_ms = TTL_MAX_MS + 1;
        assert!(bad.validate(&table).is_err());
        let mut bad = ok.clone();
        bad.segments.sme.spread_tiers[1].spread_bps = 500;
        assert!(bad.validate(&table).is_err());
        let mut bad = ok.clone();
        bad.segments.sme.spread_tiers[0].from_minor = 1;
        assert!(bad.validate(&table).is_err());
        let mut bad = ok.clone();
        bad.segments.sme.fee_fixed_minor.remove(&CurrencyCode::MXN);
        assert!(bad.validate(&table).is_err());
        let mut bad = ok.clone();
        bad.segments.sme.fee_pct_bps = FEE_PCT_MAX_BPS + 1;
        assert!(bad.validate(&table).is_err());
        let mut bad = ok.clone();
        bad.pairs.push(USD_MXN.inverse());
        assert!(bad.validate(&table).is_err());
        let mut bad = ok.clone();
        bad.pairs = vec![Pair { base: CurrencyCode::USD, quote: CurrencyCode::CAD }];
        assert!(bad.validate(&table).is_err());
        let mut bad = ok.clone();
        bad.participants.insert("x".into(), ParticipantOverride { ttl_ms: Some(10), ..Default::default() });
        assert!(bad.validate(&table).is_err());
        assert_eq!(ok.spread_range_bps(), (15, 150));
    }

    #[test]
    fn config_deserializes_from_json() {
        let json = r#"{
            "pairs": [{"base": "USD", "quote": "MXN"}],
            "tier_currency": "USD",
            "max_rate_age_ms": 60000,
            "segments": {
                "sme": {"spread_tiers": [{"from_minor": 0, "spread_bps": 100}], "fee_fixed_minor": {"USD": 500, "MXN": 9000}, "fee_pct_bps": 0, "ttl_ms": 300000},
                "remittance": {"spread_tiers": [{"from_minor": 0, "spread_bps": 150}], "fee_fixed_minor": {"USD": 299, "MXN": 4900}, "fee_pct_bps": 25, "ttl_ms": 1800000},
                "institution": {"spread_tiers": [{"from_minor": 0, "spread_bps": 25}], "fee_fixed_minor": {"USD": 0, "MXN": 0}, "fee_pct_bps": 0, "ttl_ms": 30000}
            },
            "participants": {"bank-7": {"fee_pct_bps": 5}},
            "taxes": {"USD": {"pct_bps": 100}}
        }"#;
        let config: PricingConfig = serde_json::from_str(json).unwrap();
        config.validate(&CurrencyTable::default()).unwrap();
        assert_eq!(config.effective("bank-7", Segment::Remittance).fee_pct_bps, 5);
        assert_eq!(config.effective("other", Segment::Remittance).fee_pct_bps, 25);
        let round: PricingConfig = serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(round, config);
        assert!(
            serde_json::from_str::<PricingConfig>(&json.replace("\"tier_currency\"", "\"tier_currencyx\""))
                .is_err()
        );
    }
}
