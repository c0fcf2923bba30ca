//! Puente's netting core: the pure heart of the nightly settlement batch.
//!
//! Transfers between participants accumulate as [`Obligation`]s during a settlement window.
//! At cutoff they are netted so that only net positions have to move (and cross the border):
//!
//! 1. [`NettingAggregator`] folds obligations one at a time into bounded state (memory grows
//!    with participants² × currencies, never with the number of obligations) and
//!    [`NettingAggregator::finish`] yields a [`NettingResult`]: gross figures, bilateral net per
//!    unordered pair and multilateral net per participant, per currency.
//! 2. [`settle`] turns multilateral net positions into the fewest payments:
//!    [`exact_min_payments`] (dynamic programming over subsets, n ≤
//!    [`EXACT_SOLVER_PARTICIPANTS_MAX`]), [`greedy_payments`] (at most n − 1 payments) and
//!    [`plan_payments`], which picks between them.
//! 3. [`fx`] sizes the single FX conversion that covers the house's imbalance between USD and
//!    MXN, with explicit rounding through [`puente_money::round_to_minor`].
//! 4. [`report`] prices the window: bank fees had every obligation settled gross versus the fees
//!    of the settlement payments actually made on domestic rails, savings overall and per
//!    participant, as serde-serializable data and as CSV text.
//!
//! Rules: amounts are integer minor units (`u64` per obligation, `u128`/`i128` for sums, always
//! checked arithmetic); no floating point; no I/O (no files, clock or network); every input error
//! is a [`NettingError`], never a panic; every collection has a documented limit (the `*_MAX`
//! constants below). Internal invariants are checked with `assert!` (they hold for every input;
//! a failure is a bug in this crate).

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod aggregate;
pub mod fx;
pub mod participant;
pub mod report;
pub mod settle;
pub mod sim;

pub use aggregate::{
    AggregatorSize, BilateralPosition, CurrencyNetting, NettingAggregator, NettingResult, ParticipantPosition,
};
pub use fx::{FxConversion, FxCover, FxCoverStatus, fx_cover};
pub use participant::{Obligation, ParticipantId};
pub use report::{
    Country, CurrencyReport, FeeAmounts, FeeModel, ParticipantReport, Rail, ReportInput, WindowReport,
    WindowTotals, build_report,
};
pub use settle::{
    IndexedPayment, IndexedPlan, Payment, SettlementPlan, SolverMethod, check_payments_reproduce,
    exact_min_payments, greedy_payments, plan_payments,
};

use puente_money::{CurrencyCode, MoneyError};

/// Most distinct participants in one netting run (one window). Bounds the aggregator's memory:
/// at most `PARTICIPANTS_MAX · (PARTICIPANTS_MAX − 1) / 2` pair cells per currency.
pub const PARTICIPANTS_MAX: usize = 1_000;

/// Most distinct currencies in one netting run.
pub const CURRENCIES_MAX: usize = 8;

/// Most obligations one aggregator accepts: 2^36 (about 68.7 billion). With amounts capped at
/// [`puente_money::AMOUNT_MAX_MINOR`] (10^17) every sum stays below 6.9 · 10^27, far inside
/// `u128`/`i128` and inside `rust_decimal`'s 96-bit mantissa (7.9 · 10^28).
pub const OBLIGATIONS_MAX: u64 = 1 << 36;

/// Longest participant id, in bytes.
pub use puente_core::PARTICIPANT_ID_LEN_MAX;

/// Most non-zero positions the exact fewest-payments solver accepts (it uses 2^n memory and
/// n · 2^n time: 4,096 subsets for 12).
pub const EXACT_SOLVER_PARTICIPANTS_MAX: usize = 12;

/// Errors of the netting core. Every error reachable from input is one of these; nothing in
/// this crate panics on input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NettingError {
    #[error(
        "participant id {0:?} is invalid: 1 to {PARTICIPANT_ID_LEN_MAX} ASCII letters, digits, \
         '.', '_', ':' or '-', starting with a letter or digit"
    )]
    InvalidParticipantId(String),
    #[error("participant {0} cannot owe itself")]
    SelfObligation(ParticipantId),
    #[error("obligation amount is zero")]
    ZeroAmount,
    #[error("obligation amount {amount_minor} exceeds the maximum of {max_minor} minor units")]
    AmountTooLarge { amount_minor: u64, max_minor: u64 },
    #[error("more than {max} participants in one netting run")]
    TooManyParticipants { max: usize },
    #[error("more than {max} currencies in one netting run")]
    TooManyCurrencies { max: usize },
    #[error("more than {max} obligations in one netting run")]
    TooManyObligations { max: u64 },
    #[error("net positions do not sum to zero (sum = {sum_minor} minor units)")]
    NetsDoNotSumToZero { sum_minor: i128 },
    #[error("{len} positions exceed the maximum of {max}")]
    TooManyPositions { len: usize, max: usize },
    #[error("{nonzero} non-zero positions exceed the exact solver's maximum of {max}")]
    TooManyForExactSolver { nonzero: usize, max: usize },
    #[error("payments do not reproduce the net positions: {0}")]
    PaymentsMismatch(String),
    #[error("exchange rate {0} is invalid (must be > 0 and <= {max})", max = fx::RATE_MAX)]
    InvalidRate(String),
    #[error("currency {0} is not supported here")]
    UnsupportedCurrency(CurrencyCode),
    #[error("no country is configured for participant {0}")]
    UnknownParticipantCountry(ParticipantId),
    #[error("fee model is invalid: {0}")]
    InvalidFeeModel(String),
    #[error("netting result is inconsistent: {0}")]
    InconsistentResult(String),
    #[error("serialization failed: {0}")]
    Serialization(String),
    #[error("arithmetic overflow")]
    Overflow,
    #[error(transparent)]
    Money(#[from] MoneyError),
}
