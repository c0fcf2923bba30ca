//! Settlement windows beyond the engine's state: everything about a window that is computed,
//! not stored. Pure: no I/O, no clock (times come in as parameters).
//!
//! - [`ids`]: ABA routing numbers and CLABEs (check digits: weights 3, 7, 1 mod 10 for both), BICs.
//! - [`profile`]: validation of a participant's settlement profile before it reaches the
//!   ledger (rails per currency, bank identifiers, BIC).
//! - [`report`]: a window's netting and savings report (gross, bilateral and multilateral net,
//!   payments, efficiency, bank fees gross vs actual, per participant) built with
//!   `puente-netting`, as data, JSON, CSV and a text table; the settlement payments.
//! - [`cover`]: one FX cover per cutoff: the FX house's single conversion between a USD and
//!   an MXN window closed at the same cutoff, its canonical (signed) bytes, and what it saved
//!   against converting every remittance one by one.
//! - [`xml`]: ISO 20022 pacs.009 (settlement payments) and camt.053 (participant statements).
//! - [`reconcile`]: the banks' camt.053 / camt.054 / pacs.002 read and matched against the
//!   expected settlement payments; exceptions as data, JSON, CSV and a table.
//! - [`bank`]: the banks' side of those documents (to simulate a bank, and for tests).
//! - [`html`]: the night's settlement report as one self-contained HTML page (inline SVG).
//! - [`schedule`]: the next cutoff of a daily schedule in a named time zone.
//! - [`simulate`]: a seeded, realistic corridor day (participants, identifiers, transfers).

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod bank;
pub mod cover;
pub mod html;
pub mod ids;
pub mod profile;
pub mod reconcile;
pub mod report;
pub mod schedule;
pub mod simulate;
pub mod xml;

pub use report::{PositionLine, SettlementPayment, SettlementReport, build_report};

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error(transparent)]
    Netting(#[from] puente_netting::NettingError),
    #[error("participant {0} has no settlement profile for {1}")]
    MissingProfile(String, puente_money::CurrencyCode),
    #[error("window {0} has no flows (ask for the window with its flows)")]
    NoFlows(u64),
    #[error("invalid schedule: {0}")]
    Schedule(String),
    #[error("{0}")]
    Invalid(String),
    /// A document given to reconciliation cannot be read.
    #[error("{document}: {reason}")]
    Document { document: String, reason: String },
}

/// The id `puente simulate` gives a participant's account of `currency` and `role`
/// (deterministic, so that several simulated days share the accounts), as UUID text.
pub fn simulated_account_id(participant: &str, currency: &str, role: &str) -> String {
    uuid_v4_text(puente_core::ids::derive(
        "simulate/account",
        &[participant.as_bytes(), currency.as_bytes(), role.as_bytes()],
    ))
}

/// The id `puente simulate` gives the `index`-th transfer of the day seeded `seed`.
pub fn simulated_transfer_id(seed: u64, index: usize) -> String {
    uuid_v4_text(puente_core::ids::derive(
        "simulate/transfer",
        &[&seed.to_be_bytes(), &(index as u64).to_be_bytes()],
    ))
}

/// A 128-bit value as UUID version 4 text (version and variant bits set), e.g. for a UETR.
pub fn uuid_v4_text(value: u128) -> String {
    let v = (value & !(0xF000u128 << 64) & !(0xC000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48);
    let hex = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Nanoseconds since the epoch as RFC 3339 UTC text (ISO 20022 ISODateTime).
pub fn datetime_text(ns: u64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".into(),
    }
}

/// Nanoseconds since the epoch as a UTC date (ISO 20022 ISODate).
pub fn date_text(ns: u64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(ts) => ts.strftime("%Y-%m-%d").to_string(),
        Err(_) => "1970-01-01".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_is_v4() {
        for v in
            [0u128, u128::MAX, puente_core::ids::derive("a", &[]), puente_core::ids::derive("w", &[b"1"])]
        {
            let text = uuid_v4_text(v);
            let chars: Vec<char> = text.chars().collect();
            assert_eq!(text.len(), 36);
            assert_eq!(chars[14], '4', "{text}");
            assert!("89ab".contains(chars[19]), "{text}");
        }
    }

    #[test]
    fn amounts_and_times_format() {
        assert_eq!(puente_money::format_minor(12_345, 2), "123.45");
        assert_eq!(puente_money::format_minor(5, 2), "0.05");
        assert_eq!(puente_money::format_signed_minor(-5, 2), "-0.05");
        assert_eq!(puente_money::format_minor(7, 0), "7");
        assert_eq!(datetime_text(1_700_000_000_123_000_000), "2023-11-14T22:13:20.123Z");
        assert_eq!(date_text(1_700_000_000_123_000_000), "2023-11-14");
    }
}
