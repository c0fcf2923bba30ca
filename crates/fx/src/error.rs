//! The one error type of this crate.

use puente_money::{CurrencyCode, MoneyError};

use crate::terms::Pair;

/// Everything that can go wrong while pricing, quoting, signing or parsing.
///
/// Every variant is reachable from input; no code path in this crate panics on input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FxError {
    #[error("no rate for {pair}")]
    MissingRate { pair: Pair },
    #[error("rate for {pair} is stale: as of {as_of_ms} ms, now {now_ms} ms, max age {max_age_ms} ms")]
    StaleRate { pair: Pair, as_of_ms: u64, now_ms: u64, max_age_ms: u64 },
    #[error("rate for {pair} is dated {as_of_ms} ms, in the future of now ({now_ms} ms)")]
    RateFromFuture { pair: Pair, as_of_ms: u64, now_ms: u64 },
    #[error("invalid rate for {pair}: {reason}")]
    InvalidRate { pair: Pair, reason: &'static str },
    #[error("invalid pair {base}/{quote}: base and quote must differ")]
    InvalidPair { base: CurrencyCode, quote: CurrencyCode },
    #[error("pair {sell}->{buy} is not configured for pricing")]
    PairNotPriced { sell: CurrencyCode, buy: CurrencyCode },
    #[error("limit exceeded: {what} (limit {limit})")]
    LimitExceeded { what: &'static str, limit: u64 },
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("ECB file, line {line}: {reason}")]
    EcbFormat { line: usize, reason: &'static str },
    #[error("invalid pricing configuration: {0}")]
    InvalidConfig(String),
    #[error("money: {0}")]
    Money(#[from] MoneyError),
    #[error("amount too small: nothing would be delivered")]
    AmountTooSmall,
    #[error("amount too large")]
    AmountTooLarge,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("quote expired at {expires_at_ms} ms (now {now_ms} ms)")]
    QuoteExpired { expires_at_ms: u64, now_ms: u64 },
    #[error("quote created at {created_at_ms} ms is in the future (now {now_ms} ms)")]
    QuoteNotYetValid { created_at_ms: u64, now_ms: u64 },
    #[error("quote is internally inconsistent: {0}")]
    InconsistentQuote(&'static str),
    #[error("malformed canonical quote encoding: {0}")]
    MalformedQuote(&'static str),
    #[error("unsupported canonical quote encoding version {0}")]
    UnsupportedVersion(u8),
    #[error("signature does not verify: the quote was tampered with or signed by another key")]
    InvalidSignature,
    #[error("invalid key material: {0}")]
    InvalidKey(&'static str),
    /// A quote-signing keyring that does not parse; names a line, never key material.
    #[error("invalid quote-signing keyring: {0}")]
    InvalidKeyring(String),
    #[error("the system random number generator failed")]
    RandomFailure,
}
