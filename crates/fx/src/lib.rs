//! Puente FX: pure pricing and quoting for the USD/MXN corridor (and any configured pair).
//!
//! * [`RateBook`]: mid-market rates with inverse and cross derivation and staleness checks.
//! * [`parse_ecb_csv`]: the ECB reference-rate history importer.
//! * [`PricingConfig`] / [`Pricer`]: spreads by segment and amount tier, fees, taxes, TTLs;
//!   quotes with either side fixed and explicit, house-safe rounding (see [`pricing`]).
//! * [`Quote`]: canonical versioned encoding and Ed25519 signatures ([`QuoteSigner`],
//!   [`verify_quote`]), [`check_executable`]; [`QuoteKeyring`]: signing keys with ids, for
//!   rotation.
//! * [`Disclosure`]: Regulation E pre-payment disclosure in English and Spanish.
//! * [`Exposure`]: the house's net position per currency.
//!
//! Rules: no floating point; amounts are `u64` minor units, rates `rust_decimal::Decimal`;
//! all arithmetic checked; no I/O and no clock (callers pass `now_ms`), except the randomness
//! helpers in [`entropy`]; no panics reachable from input, every failure is an [`FxError`].

#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod decimal;
pub mod disclosure;
pub mod ecb;
pub mod entropy;
pub mod error;
pub mod exposure;
pub mod keyring;
pub mod pricing;
pub mod quote;
pub mod rates;
pub mod terms;

#[cfg(test)]
mod proptests;

pub use disclosure::{CANCELLATION_WINDOW_MS, Disclosure, Lang};
pub use ecb::{EcbDay, date_to_unix_ms, parse_ecb_csv};
pub use entropy::{generate_pkcs8, generate_quote_id, generate_signing_seed};
pub use error::FxError;
pub use exposure::Exposure;
pub use keyring::{PublicKey, QuoteKeyring, verify_canonical};
pub use pricing::{
    EffectivePricing, FixedSide, ParticipantOverride, Pricer, PricingConfig, QuoteRequest, Segment,
    SegmentPricing, Segments, SpreadTier, TaxRule,
};
pub use quote::{FixedKind, Quote, QuoteId, QuoteSigner, check_executable, verify_quote};
pub use rates::{Derivation, Pair, Rate, RateBook};
