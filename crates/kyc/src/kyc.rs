//! Account-holder tiers and their monthly credit and balance limits.
//!
//! Mexican tiers follow the CNBV's levels for deposit accounts, in UDIs (Unidades de Inversión):
//!
//! | tier | credits a month | balance |
//! | --- | --- | --- |
//! | `MX_NIVEL_1` | 750 UDIs | 1,000 UDIs |
//! | `MX_NIVEL_2` | 3,000 UDIs | no limit |
//! | `MX_NIVEL_3` | 10,000 UDIs | no limit |
//! | `MX_NIVEL_4` | no limit | no limit |
//!
//! [`KycPolicy::limits`] turns UDIs into centavos at the policy's UDI rate, rounding *down*:
//! the conservative side, so an account is never allowed more than the regulatory amount (at
//! most one centavo less). US tiers (`US_<NAME>`) are configured in USD cents per deployment.
//!
//! [`MonthlyUsage::check_credit`] counts credits per UTC calendar month ([`month_of`]).

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

/// `MX_NIVEL_1`: credits a month, in UDIs.
pub const MX_NIVEL_1_MONTHLY_CREDIT_LIMIT_UDI: Decimal = Decimal::from_parts(750, 0, 0, false, 0);
/// `MX_NIVEL_1`: the balance cap, in UDIs.
pub const MX_NIVEL_1_BALANCE_LIMIT_UDI: Decimal = Decimal::from_parts(1_000, 0, 0, false, 0);
/// `MX_NIVEL_2`: credits a month, in UDIs.
pub const MX_NIVEL_2_MONTHLY_CREDIT_LIMIT_UDI: Decimal = Decimal::from_parts(3_000, 0, 0, false, 0);
/// `MX_NIVEL_3`: credits a month, in UDIs.
pub const MX_NIVEL_3_MONTHLY_CREDIT_LIMIT_UDI: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);
/// The highest UDI rate a policy accepts, in MXN per UDI.
pub const UDI_RATE_MAX_MXN: Decimal = Decimal::from_parts(1_000, 0, 0, false, 0);
/// The most decimal places of a UDI rate.
pub const UDI_RATE_DECIMALS_MAX: u32 = 6;
/// The longest `<NAME>` of a `US_<NAME>` tier, in characters.
pub const US_TIER_NAME_LEN_MAX: usize = 32;

const US_TIER_PREFIX: &str = "US_";
const CENTAVOS_PER_PESO: Decimal = Decimal::from_parts(100, 0, 0, false, 0);
const NS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// Everything that can go wrong with tiers, policies and limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KycError {
    /// The text is not a tier.
    #[error("invalid tier: {reason}")]
    InvalidTier {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `US_<NAME>` tier that the policy does not configure.
    #[error("tier {tier} is not configured in the policy's us_tiers")]
    UnknownTier {
        /// The tier text.
        tier: String,
    },
    /// A key of `us_tiers` is not a `US_<NAME>` tier text.
    #[error("us_tiers key {key:?} is not a US tier: expected US_<NAME> with NAME of [A-Z0-9_]{{1,32}}")]
    InvalidUsTierKey {
        /// The key.
        key: String,
    },
    /// The UDI rate is out of range.
    #[error("invalid UDI rate: {reason}")]
    InvalidUdiRate {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The credit would take the month's credits over the limit.
    #[error(
        "monthly credit limit exceeded: limit {limit_minor}, already credited {used_minor}, \
         requested {requested_minor} (minor units)"
    )]
    MonthlyLimitExceeded {
        /// The monthly limit, in minor units.
        limit_minor: u64,
        /// Credited so far this month, in minor units.
        used_minor: u64,
        /// This credit, in minor units.
        requested_minor: u64,
    },
    /// The credit would take the balance over the limit.
    #[error("balance limit exceeded: limit {limit_minor}, balance after {balance_after_minor} (minor units)")]
    BalanceLimitExceeded {
        /// The balance limit, in minor units.
        limit_minor: u64,
        /// The balance the credit would leave, in minor units.
        balance_after_minor: i128,
    },
    /// A credit dated in a month before the month already counted (a clock went backwards).
    #[error("credit for month {month} is before the month already counted ({usage_month})")]
    MonthBeforeUsage {
        /// The credit's month (YYYYMM).
        month: u32,
        /// The usage's month (YYYYMM).
        usage_month: u32,
    },
    /// An amount does not fit its integer type.
    #[error("arithmetic overflow")]
    Overflow,
}

/// An account holder's KYC tier. Text form: `MX_NIVEL_1` to `MX_NIVEL_4`, `US_<NAME>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Tier {
    /// CNBV Nivel 1: 750 UDIs of credits a month, balance up to 1,000 UDIs.
    MxNivel1,
    /// CNBV Nivel 2: 3,000 UDIs of credits a month.
    MxNivel2,
    /// CNBV Nivel 3: 10,000 UDIs of credits a month.
    MxNivel3,
    /// CNBV Nivel 4: no limit.
    MxNivel4,
    /// A US tier configured in [`KycPolicy::us_tiers`]. Holds the whole tier text, `US_`
    /// prefix included (e.g. `"US_BASIC"`), as [`Tier::parse`] makes it.
    Us(String),
}

/// Whether `text` is `US_<NAME>` with NAME of `[A-Z0-9_]{1,32}`.
fn check_us_tier(text: &str) -> Result<(), KycError> {
    let name = text
        .strip_prefix(US_TIER_PREFIX)
        .ok_or(KycError::InvalidTier { reason: "expected MX_NIVEL_1 to MX_NIVEL_4 or US_<NAME>" })?;
    if name.is_empty() || name.len() > US_TIER_NAME_LEN_MAX {
        return Err(KycError::InvalidTier { reason: "US tier NAME must have 1 to 32 characters" });
    }
    if !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
        return Err(KycError::InvalidTier { reason: "US tier NAME must be of [A-Z0-9_]" });
    }
    Ok(())
}

impl Tier {
    /// Parses the text form, exactly (no trimming, uppercase only).
    pub fn parse(text: &str) -> Result<Tier, KycError> {
        match text {
            "MX_NIVEL_1" => Ok(Tier::MxNivel1),
            "MX_NIVEL_2" => Ok(Tier::MxNivel2),
            "MX_NIVEL_3" => Ok(Tier::MxNivel3),
            "MX_NIVEL_4" => Ok(Tier::MxNivel4),
            _ => {
                check_us_tier(text)?;
                Ok(Tier::Us(text.to_owned()))
            }
        }
    }

    /// The text form, as [`Tier::parse`] accepts it.
    pub fn as_str(&self) -> &str {
        match self {
            Tier::MxNivel1 => "MX_NIVEL_1",
            Tier::MxNivel2 => "MX_NIVEL_2",
            Tier::MxNivel3 => "MX_NIVEL_3",
            Tier::MxNivel4 => "MX_NIVEL_4",
            Tier::Us(text) => text,
        }
    }

    /// Monthly credit and balance limits in UDIs of a Mexican tier; `None` for a US tier.
    fn mx_limits_udi(&self) -> Option<(Option<Decimal>, Option<Decimal>)> {
        match self {
            Tier::MxNivel1 => {
                Some((Some(MX_NIVEL_1_MONTHLY_CREDIT_LIMIT_UDI), Some(MX_NIVEL_1_BALANCE_LIMIT_UDI)))
            }
            Tier::MxNivel2 => Some((Some(MX_NIVEL_2_MONTHLY_CREDIT_LIMIT_UDI), None)),
            Tier::MxNivel3 => Some((Some(MX_NIVEL_3_MONTHLY_CREDIT_LIMIT_UDI), None)),
            Tier::MxNivel4 => Some((None, None)),
            Tier::Us(_) => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Tier {
    type Error = KycError;

    fn try_from(text: String) -> Result<Tier, KycError> {
        Tier::parse(&text)
    }
}

impl From<Tier> for String {
    fn from(tier: Tier) -> String {
        match tier {
            Tier::Us(text) => text,
            other => other.as_str().to_owned(),
        }
    }
}

/// The limits of one US tier, in USD cents; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsTierLimits {
    /// Credits allowed per UTC calendar month, in cents.
    #[serde(default)]
    pub monthly_credit_limit_minor: Option<u64>,
    /// The highest balance allowed, in cents.
    #[serde(default)]
    pub balance_limit_minor: Option<u64>,
}

/// The deployment's KYC policy. Deserializing validates it like [`KycPolicy::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KycPolicyFields")]
pub struct KycPolicy {
    /// MXN per UDI (Banxico publishes it daily), e.g. `8.70`: > 0, ≤ 1000, at most 6 decimals.
    pub udi_rate: Decimal,
    /// US tiers by their whole tier text (e.g. `"US_BASIC"`, the same text as
    /// [`Tier::as_str`]).
    #[serde(default)]
    pub us_tiers: BTreeMap<String, UsTierLimits>,
}

/// The fields of [`KycPolicy`] before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KycPolicyFields {
    udi_rate: Decimal,
    #[serde(default)]
    us_tiers: BTreeMap<String, UsTierLimits>,
}

impl TryFrom<KycPolicyFields> for KycPolicy {
    type Error = KycError;

    fn try_from(fields: KycPolicyFields) -> Result<KycPolicy, KycError> {
        let policy = KycPolicy { udi_rate: fields.udi_rate, us_tiers: fields.us_tiers };
        policy.validate()?;
        Ok(policy)
    }
}

/// Checks a UDI rate: > 0, ≤ [`UDI_RATE_MAX_MXN`], at most [`UDI_RATE_DECIMALS_MAX`] decimals.
fn check_udi_rate(rate: Decimal) -> Result<(), KycError> {
    if rate <= Decimal::ZERO {
        return Err(KycError::InvalidUdiRate { reason: "must be greater than 0" });
    }
    if rate > UDI_RATE_MAX_MXN {
        return Err(KycError::InvalidUdiRate { reason: "must be at most 1000 MXN per UDI" });
    }
    if rate.normalize().scale() > UDI_RATE_DECIMALS_MAX {
        return Err(KycError::InvalidUdiRate { reason: "must have at most 6 decimal places" });
    }
    Ok(())
}

/// UDIs to centavos at `rate` MXN per UDI, rounded down.
fn udi_to_centavos(udi: Decimal, rate: Decimal) -> Result<u64, KycError> {
    udi.checked_mul(rate)
        .and_then(|mxn| mxn.checked_mul(CENTAVOS_PER_PESO))
        .and_then(|centavos| centavos.floor().to_u64())
        .ok_or(KycError::Overflow)
}

/// The limits of a tier, in minor units of `currency`; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    /// `"MXN"` (centavos) for Mexican tiers, `"USD"` (cents) for US tiers.
    pub currency: &'static str,
    /// Credits allowed per UTC calendar month, in minor units.
    pub monthly_credit_limit_minor: Option<u64>,
    /// The highest balance allowed, in minor units.
    pub balance_limit_minor: Option<u64>,
}

impl KycPolicy {
    /// A policy with no US tier, refusing a UDI rate that is not > 0, ≤ 1000 with at most 6
    /// decimal places.
    pub fn new(udi_rate: Decimal) -> Result<KycPolicy, KycError> {
        check_udi_rate(udi_rate)?;
        Ok(KycPolicy { udi_rate, us_tiers: BTreeMap::new() })
    }

    /// Checks the UDI rate and that every `us_tiers` key is a `US_<NAME>` tier text.
    pub fn validate(&self) -> Result<(), KycError> {
        check_udi_rate(self.udi_rate)?;
        for key in self.us_tiers.keys() {
            check_us_tier(key).map_err(|_| KycError::InvalidUsTierKey { key: key.clone() })?;
        }
        Ok(())
    }

    /// The limits of `tier`. Mexican tiers: UDIs × `udi_rate`, in centavos rounded down (never
    /// more than the regulatory amount). US tiers: from `us_tiers`, in cents.
    pub fn limits(&self, tier: &Tier) -> Result<TierLimits, KycError> {
        match tier.mx_limits_udi() {
            Some((monthly_udi, balance_udi)) => {
                check_udi_rate(self.udi_rate)?;
                let convert =
                    |udi: Option<Decimal>| udi.map(|udi| udi_to_centavos(udi, self.udi_rate)).transpose();
                Ok(TierLimits {
                    currency: "MXN",
                    monthly_credit_limit_minor: convert(monthly_udi)?,
                    balance_limit_minor: convert(balance_udi)?,
                })
            }
            None => {
                let limits = self
                    .us_tiers
                    .get(tier.as_str())
                    .ok_or_else(|| KycError::UnknownTier { tier: tier.as_str().to_owned() })?;
                Ok(TierLimits {
                    currency: "USD",
                    monthly_credit_limit_minor: limits.monthly_credit_limit_minor,
                    balance_limit_minor: limits.balance_limit_minor,
                })
            }
        }
    }
}

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + u64::from(month <= 2);
    // month ≤ 12 and day ≤ 31: the casts cannot truncate.
    (year, month as u32, day as u32)
}

/// The UTC calendar month of a Unix timestamp in nanoseconds, as `YYYYMM` (e.g. `202611`).
pub fn month_of(timestamp_ns: u64) -> u32 {
    let (year, month, _) = civil_from_days(timestamp_ns / NS_PER_DAY);
    // u64 nanoseconds end in year 2554: year * 100 + month fits in u32.
    u32::try_from(year * 100).unwrap_or(u32::MAX - 12) + month
}

/// Credits counted in one UTC calendar month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyUsage {
    /// The month counted, `YYYYMM` ([`month_of`]); 0 before the first credit.
    pub month: u32,
    /// Credited in that month, in minor units.
    pub credited_minor: u64,
}

impl MonthlyUsage {
    /// Checks a credit of `amount_minor` in `month` leaving the balance at
    /// `balance_after_minor`, and returns the usage after it. A later month starts from zero;
    /// an earlier month is refused ([`KycError::MonthBeforeUsage`]). The monthly limit is
    /// checked first, then the balance limit.
    pub fn check_credit(
        &self,
        month: u32,
        amount_minor: u64,
        limits: &TierLimits,
        balance_after_minor: i128,
    ) -> Result<MonthlyUsage, KycError> {
        if month < self.month {
            return Err(KycError::MonthBeforeUsage { month, usage_month: self.month });
        }
        let used_minor = if month == self.month { self.credited_minor } else { 0 };
        let credited = used_minor.checked_add(amount_minor);
        if let Some(limit_minor) = limits.monthly_credit_limit_minor
            && credited.is_none_or(|credited| credited > limit_minor)
        {
            return Err(KycError::MonthlyLimitExceeded {
                limit_minor,
                used_minor,
                requested_minor: amount_minor,
            });
        }
        let credited_minor = credited.ok_or(KycError::Overflow)?;
        if let Some(limit_minor) = limits.balance_limit_minor
            && balance_after_minor > i128::from(limit_minor)
        {
            return Err(KycError::BalanceLimitExceeded { limit_minor, balance_after_minor });
        }
        Ok(MonthlyUsage { month, credited_minor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::value::{Error as DeError, MapDeserializer, StrDeserializer};
    use std::str::FromStr;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn tier_text_roundtrips() {
        for text in ["MX_NIVEL_1", "MX_NIVEL_2", "MX_NIVEL_3", "MX_NIVEL_4", "US_BASIC", "US_A", "US_0_9"] {
            let tier = Tier::parse(text).unwrap();
            assert_eq!(tier.as_str(), text);
            assert_eq!(tier.to_string(), text);
            assert_eq!(String::from(tier.clone()), text);
            let deserialized = Tier::deserialize(StrDeserializer::<DeError>::new(text)).unwrap();
            assert_eq!(deserialized, tier);
        }
        assert_eq!(Tier::parse("US_BASIC").unwrap(), Tier::Us("US_BASIC".to_owned()));
        let longest = format!("US_{}", "X".repeat(US_TIER_NAME_LEN_MAX));
        assert!(Tier::parse(&longest).is_ok());
        for bad in [
            "",
            "MX_NIVEL_5",
            "MX_NIVEL_0",
            "mx_nivel_1",
            " MX_NIVEL_1",
            "US_",
            "US_basic",
            "US_B-C",
            "US_Ñ",
            "USBASIC",
            &format!("US_{}", "X".repeat(US_TIER_NAME_LEN_MAX + 1)),
        ] {
            assert!(matches!(Tier::parse(bad), Err(KycError::InvalidTier { .. })), "{bad:?}");
            assert!(Tier::deserialize(StrDeserializer::<DeError>::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn udi_rate_validation() {
        assert!(KycPolicy::new(dec("8.70")).is_ok());
        assert!(KycPolicy::new(dec("8.123456")).is_ok());
        assert!(KycPolicy::new(dec("8.123456000")).is_ok(), "trailing zeros are not decimals");
        assert!(KycPolicy::new(dec("1000")).is_ok());
        assert!(KycPolicy::new(dec("0.000001")).is_ok());
        for bad in ["0", "-1", "1000.000001", "8.1234567", "0.0000001"] {
            assert!(matches!(KycPolicy::new(dec(bad)), Err(KycError::InvalidUdiRate { .. })), "{bad}");
        }
    }

    #[test]
    fn mx_limits_round_down() {
        let policy = KycPolicy::new(dec("8.70")).unwrap();
        let n1 = policy.limits(&Tier::MxNivel1).unwrap();
        assert_eq!(
            n1,
            TierLimits {
                currency: "MXN",
                monthly_credit_limit_minor: Some(652_500),
                balance_limit_minor: Some(870_000)
            }
        );
        assert_eq!(policy.limits(&Tier::MxNivel2).unwrap().monthly_credit_limit_minor, Some(2_610_000));
        assert_eq!(policy.limits(&Tier::MxNivel3).unwrap().monthly_credit_limit_minor, Some(8_700_000));
        assert_eq!(policy.limits(&Tier::MxNivel2).unwrap().balance_limit_minor, None);
        let n4 = policy.limits(&Tier::MxNivel4).unwrap();
        assert_eq!((n4.monthly_credit_limit_minor, n4.balance_limit_minor), (None, None));
        // 750 × 8.123457 = 6092.59275 MXN = 609259.275 centavos → 609259.
        let policy = KycPolicy::new(dec("8.123457")).unwrap();
        assert_eq!(policy.limits(&Tier::MxNivel1).unwrap().monthly_credit_limit_minor, Some(609_259));
        // A hand-built policy with a bad rate is refused, not used.
        let bad = KycPolicy { udi_rate: Decimal::ZERO, us_tiers: BTreeMap::new() };
        assert!(matches!(bad.limits(&Tier::MxNivel1), Err(KycError::InvalidUdiRate { .. })));
    }

    #[test]
    fn us_limits() {
        let mut policy = KycPolicy::new(dec("8.70")).unwrap();
        policy.us_tiers.insert(
            "US_BASIC".to_owned(),
            UsTierLimits { monthly_credit_limit_minor: Some(250_000), balance_limit_minor: None },
        );
        policy.validate().unwrap();
        let limits = policy.limits(&Tier::parse("US_BASIC").unwrap()).unwrap();
        assert_eq!(
            limits,
            TierLimits {
                currency: "USD",
                monthly_credit_limit_minor: Some(250_000),
                balance_limit_minor: None
            }
        );
        assert_eq!(
            policy.limits(&Tier::parse("US_GOLD").unwrap()).unwrap_err(),
            KycError::UnknownTier { tier: "US_GOLD".to_owned() }
        );
        policy.us_tiers.insert("GOLD".to_owned(), UsTierLimits::default());
        assert_eq!(policy.validate().unwrap_err(), KycError::InvalidUsTierKey { key: "GOLD".to_owned() });
    }

    #[test]
    fn policy_deserializes_validated() {
        let fields =
            |rate: &'static str| MapDeserializer::<_, DeError>::new([("udi_rate", rate)].into_iter());
        let policy = KycPolicy::deserialize(fields("8.70")).unwrap();
        assert_eq!(policy, KycPolicy::new(dec("8.70")).unwrap());
        assert!(KycPolicy::deserialize(fields("0")).is_err());
        assert!(KycPolicy::deserialize(fields("8.1234567")).is_err());
    }

    #[test]
    fn month_of_examples() {
        assert_eq!(month_of(0), 197_001);
        // 2026-11-15T12:00:00Z
        assert_eq!(month_of(1_794_744_000 * 1_000_000_000), 202_611);
        // 2024-02-29T23:59:59.999999999Z and the next nanosecond.
        let march_2024_ns = 1_709_251_200 * 1_000_000_000u64;
        assert_eq!(month_of(march_2024_ns - 1), 202_402);
        assert_eq!(month_of(march_2024_ns), 202_403);
        assert_eq!(month_of(u64::MAX), 255_407);
    }

    #[test]
    fn check_credit_rules() {
        let limits = TierLimits {
            currency: "MXN",
            monthly_credit_limit_minor: Some(1_000),
            balance_limit_minor: Some(1_500),
        };
        let usage = MonthlyUsage::default();
        let usage = usage.check_credit(202_611, 600, &limits, 600).unwrap();
        assert_eq!(usage, MonthlyUsage { month: 202_611, credited_minor: 600 });
        assert_eq!(
            usage.check_credit(202_611, 401, &limits, 1_001).unwrap_err(),
            KycError::MonthlyLimitExceeded { limit_minor: 1_000, used_minor: 600, requested_minor: 401 }
        );
        let usage = usage.check_credit(202_611, 400, &limits, 1_000).unwrap();
        assert_eq!(usage.credited_minor, 1_000);
        assert!(usage.check_credit(202_611, 1, &limits, 0).is_err());
        assert_eq!(usage.check_credit(202_611, 0, &limits, 0).unwrap(), usage);
        // A new month resets the count; the balance limit still holds.
        let next = usage.check_credit(202_612, 1_000, &limits, 1_400).unwrap();
        assert_eq!(next, MonthlyUsage { month: 202_612, credited_minor: 1_000 });
        assert_eq!(
            usage.check_credit(202_612, 10, &limits, 1_501).unwrap_err(),
            KycError::BalanceLimitExceeded { limit_minor: 1_500, balance_after_minor: 1_501 }
        );
        assert_eq!(
            next.check_credit(202_611, 1, &limits, 0).unwrap_err(),
            KycError::MonthBeforeUsage { month: 202_611, usage_month: 202_612 }
        );
        // Overflow: refused as over the limit, or as overflow with no limit.
        let full = MonthlyUsage { month: 1, credited_minor: u64::MAX };
        assert!(matches!(full.check_credit(1, 1, &limits, 0), Err(KycError::MonthlyLimitExceeded { .. })));
        let unlimited =
            TierLimits { currency: "USD", monthly_credit_limit_minor: None, balance_limit_minor: None };
        assert_eq!(full.check_credit(1, 1, &unlimited, i128::MAX).unwrap_err(), KycError::Overflow);
        assert_eq!(full.check_credit(2, 1, &unlimited, i128::MAX).unwrap().credited_minor, 1);
    }

    /// Day-by-day reference: (year, month) of every day from 1970-01-01 to past the end of u64 ns.
    fn reference_months() -> Vec<u32> {
        let days_total = u64::MAX / NS_PER_DAY + 1;
        let mut months = Vec::with_capacity(usize::try_from(days_total).unwrap());
        let (mut year, mut month, mut day) = (1970u32, 1u32, 1u32);
        for _ in 0..days_total {
            months.push(year * 100 + month);
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
        months
    }

    fn reference() -> &'static [u32] {
        static MONTHS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
        MONTHS.get_or_init(reference_months)
    }

    #[test]
    fn month_of_matches_reference_every_day() {
        for (days, &expected) in reference().iter().enumerate() {
            let start = days as u64 * NS_PER_DAY;
            assert_eq!(month_of(start), expected, "day {days}");
            if let Some(end) = start.checked_add(NS_PER_DAY - 1) {
                assert_eq!(month_of(end), expected, "end of day {days}");
            }
        }
    }

    #[derive(Debug, Clone)]
    struct Step {
        next_month: bool,
        amount_minor: u64,
        balance_after_minor: i128,
    }

    fn step(limit: u64) -> impl Strategy<Value = Step> {
        (any::<bool>(), 0..=limit.saturating_mul(2).max(1), -1_000i128..=i128::from(limit) * 2).prop_map(
            |(next_month, amount_minor, balance_after_minor)| Step {
                next_month,
                amount_minor,
                balance_after_minor,
            },
        )
    }

    proptest! {
        #[test]
        fn month_of_matches_reference(ns in any::<u64>()) {
            let days = usize::try_from(ns / NS_PER_DAY).unwrap();
            prop_assert_eq!(month_of(ns), reference()[days]);
        }

        #[test]
        fn tier_parse_never_panics(text in any::<String>()) {
            if let Ok(tier) = Tier::parse(&text) {
                prop_assert_eq!(tier.as_str(), text.as_str());
            }
        }

        #[test]
        fn us_tier_grammar_accepted(name in "[A-Z0-9_]{1,32}") {
            let text = format!("US_{name}");
            prop_assert_eq!(Tier::parse(&text).unwrap(), Tier::Us(text.clone()));
        }

        #[test]
        fn mx_limits_never_above_regulatory_amount(rate in 1u64..=1_000_000_000) {
            // rate in millionths of an MXN: 0.000001 to 1000 MXN per UDI.
            let udi_rate = Decimal::new(i64::try_from(rate).unwrap(), 6);
            let policy = KycPolicy::new(udi_rate).unwrap();
            for (tier, udi) in [
                (Tier::MxNivel1, MX_NIVEL_1_MONTHLY_CREDIT_LIMIT_UDI),
                (Tier::MxNivel2, MX_NIVEL_2_MONTHLY_CREDIT_LIMIT_UDI),
                (Tier::MxNivel3, MX_NIVEL_3_MONTHLY_CREDIT_LIMIT_UDI),
            ] {
                let limit = policy.limits(&tier).unwrap().monthly_credit_limit_minor.unwrap();
                let exact = udi * udi_rate * Decimal::ONE_HUNDRED;
                prop_assert!(Decimal::from(limit) <= exact);
                prop_assert!(exact - Decimal::from(limit) < Decimal::ONE);
            }
        }

        #[test]
        fn credited_never_exceeds_limits(
            (limit, balance_limit, steps) in (0u64..10_000, 0u64..20_000).prop_flat_map(|(limit, balance_limit)| {
                (Just(limit), Just(balance_limit), proptest::collection::vec(step(limit), 1..40))
            }),
        ) {
            let limits = TierLimits {
                currency: "USD",
                monthly_credit_limit_minor: Some(limit),
                balance_limit_minor: Some(balance_limit),
            };
            let mut usage = MonthlyUsage { month: 202_601, credited_minor: 0 };
            let mut month = 202_601;
            let mut accepted_this_month = 0u64;
            for step in steps {
                if step.next_month {
                    month += 1;
                }
                let used = if month == usage.month { usage.credited_minor } else { 0 };
                match usage.check_credit(month, step.amount_minor, &limits, step.balance_after_minor) {
                    Ok(next) => {
                        prop_assert!(next.credited_minor <= limit);
                        prop_assert!(step.balance_after_minor <= i128::from(balance_limit));
                        prop_assert_eq!(next.credited_minor, used + step.amount_minor);
                        if next.month != usage.month {
                            accepted_this_month = 0;
                        }
                        accepted_this_month += step.amount_minor;
                        prop_assert_eq!(next.credited_minor, accepted_this_month);
                        usage = next;
                    }
                    Err(KycError::MonthlyLimitExceeded { limit_minor, used_minor, requested_minor }) => {
                        prop_assert_eq!(limit_minor, limit);
                        prop_assert_eq!(used_minor, used);
                        prop_assert!(used_minor + requested_minor > limit);
                    }
                    Err(KycError::BalanceLimitExceeded { balance_after_minor, .. }) => {
                        prop_assert!(used + step.amount_minor <= limit);
                        prop_assert!(balance_after_minor > i128::from(balance_limit));
                    }
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
                prop_assert!(usage.credited_minor <= limit);
            }
        }
    }
}
