//! Puente KYC: the account holder's personal data and know-your-customer rules. (Participants,
//! their roles and API keys are not here: they are ledger state, `puente_ledger::identity`.)
//!
//! * [`pii`]: AES-256-GCM sealing of personal data at rest ([`Keyring`], key rotation, the
//!   [`Redacted`] wrapper for logs).
//! * [`rfc`]: the format of the Mexican tax id ([`Rfc`]); format and date only, no SAT check
//!   digit verification.
//! * [`kyc`]: account-holder tiers ([`Tier`]) and their monthly credit and balance limits
//!   ([`KycPolicy`], [`MonthlyUsage`]).
//!
//! Rules: no floating point; amounts are `u64` minor units, UDI amounts and rates
//! `rust_decimal::Decimal`; all arithmetic checked; no clock (callers pass timestamps); the only
//! I/O is reading a key file ([`Keyring::from_file`]) and randomness from
//! `ring::rand::SystemRandom`; no panics reachable from input. Each module has its one error
//! enum; no error ever carries key material.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod kyc;
pub mod pii;
pub mod rfc;

pub use kyc::{KycError, KycPolicy, MonthlyUsage, Tier, TierLimits, UsTierLimits, month_of};
pub use pii::{Keyring, PLAINTEXT_LEN_MAX, PiiError, Redacted, SEALED_LEN_MAX};
pub use rfc::{Rfc, RfcError, RfcKind};
