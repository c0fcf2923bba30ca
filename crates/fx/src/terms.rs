//! The nouns and bounds that pricing, quotes, rates and errors all name: defined here, once,
//! so that none of those modules imports another only for a type (no import cycles).

use std::fmt;

use puente_money::CurrencyCode;
use serde::{Deserialize, Serialize};

/// A quote identifier, supplied by the caller (see [`crate::generate_quote_id`]).
pub type QuoteId = [u8; 16];

/// Largest spread, in basis points (10%).
pub const SPREAD_MAX_BPS: u32 = 1_000;
/// Longest quote lifetime: 30 minutes.
pub const TTL_MAX_MS: u64 = 30 * 60 * 1_000;
/// Significant digits of a customer rate (truncated).
pub const CUSTOMER_RATE_SIGNIFICANT_DIGITS: u32 = 8;

/// Customer segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    Sme,
    Remittance,
    Institution,
}

impl Segment {
    pub const ALL: [Segment; 3] = [Segment::Sme, Segment::Remittance, Segment::Institution];
}

/// A currency pair. A rate for the pair is the number of units of `quote` per 1 unit of `base`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pair {
    pub base: CurrencyCode,
    pub quote: CurrencyCode,
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.quote)
    }
}

impl fmt::Debug for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.quote)
    }
}
