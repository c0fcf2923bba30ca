//! Validation of a settlement profile before it reaches the ledger. The ledger checks what
//! depends on its state (the settlement account exists, belongs to the participant and holds
//! the currency); this checks the rest.

use puente_ledger::settlement::{ParticipantProfile, SettlementRail};
use puente_money::CurrencyCode;

use crate::ids::{aba_valid, bic_valid, clabe_valid};

/// A bad field: its path in the profile and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileViolation {
    pub field: String,
    pub description: String,
}

/// Every problem with `profile` (empty when it is valid). Rules: USD settles on Fedwire or
/// ACH/Directo a México with an ABA routing number; MXN on SPEI with a CLABE; other currencies
/// are not settled across this corridor; a BIC, when given, is well-formed.
pub fn validate_profile(profile: &ParticipantProfile) -> Vec<ProfileViolation> {
    let mut violations = Vec::new();
    let mut bad = |field: String, description: &str| {
        violations.push(ProfileViolation { field, description: description.to_owned() })
    };
    if !profile.bic.is_empty() && !bic_valid(&profile.bic) {
        bad("bic".into(), "not a BIC (8 or 11 characters: AAAABBCC or AAAABBCCDDD)");
    }
    if profile.currencies.is_empty() {
        bad("currencies".into(), "at least one currency is required");
    }
    for (i, c) in profile.currencies.iter().enumerate() {
        let field = |name: &str| format!("currencies[{i}].{name}");
        match (c.currency, c.rail) {
            (CurrencyCode::USD, SettlementRail::Fedwire | SettlementRail::AchDirectoMexico) => {
                if !aba_valid(&c.bank_id) {
                    bad(field("bank_id"), "not a valid ABA routing number (9 digits, check digit)");
                }
            }
            (CurrencyCode::MXN, SettlementRail::Spei) => {
                if !clabe_valid(&c.bank_id) {
                    bad(field("bank_id"), "not a valid CLABE (18 digits, check digit)");
                }
            }
            (CurrencyCode::USD, _) => bad(field("rail"), "USD settles on FEDWIRE or ACH_DIRECTO_MEXICO"),
            (CurrencyCode::MXN, _) => bad(field("rail"), "MXN settles on SPEI"),
            _ => bad(field("currency"), "only USD and MXN are settled"),
        }
        if c.settlement_account_id == 0 {
            bad(field("settlement_account_id"), "required");
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use puente_ledger::settlement::{Country, CurrencyProfile};

    fn profile(currency: CurrencyCode, rail: SettlementRail, bank_id: &str) -> ParticipantProfile {
        ParticipantProfile {
            participant: "bank-a".into(),
            name: "Bank A".into(),
            bic: "BOFAUS3N".into(),
            country: Country::Us,
            currencies: vec![CurrencyProfile {
                currency,
                rail,
                bank_id: bank_id.into(),
                net_debit_cap_minor: 100,
                settlement_account_id: 7,
            }],
            updated_at_ns: 0,
        }
    }

    #[test]
    fn rails_and_check_digits() {
        assert!(
            validate_profile(&profile(CurrencyCode::USD, SettlementRail::Fedwire, "021000021")).is_empty()
        );
        assert!(
            validate_profile(&profile(CurrencyCode::MXN, SettlementRail::Spei, "032180000118359719"))
                .is_empty()
        );
        let v = validate_profile(&profile(CurrencyCode::USD, SettlementRail::Fedwire, "021000022"));
        assert_eq!(v[0].field, "currencies[0].bank_id");
        let v = validate_profile(&profile(CurrencyCode::MXN, SettlementRail::Spei, "032180000118359718"));
        assert!(v[0].description.contains("CLABE"));
        let v = validate_profile(&profile(CurrencyCode::MXN, SettlementRail::Fedwire, "021000021"));
        assert_eq!(v[0].field, "currencies[0].rail");
        let mut p = profile(CurrencyCode::USD, SettlementRail::AchDirectoMexico, "011000015");
        p.bic = "nope".into();
        assert_eq!(validate_profile(&p)[0].field, "bic");
    }
}
