//! Participants and obligations.

use std::fmt;

use puente_money::{AMOUNT_MAX_MINOR, CurrencyCode};
use serde::{Deserialize, Serialize};

use crate::{NettingError, PARTICIPANT_ID_LEN_MAX};

/// A settlement participant (a bank, an MTO, the house), identified by a short text id.
///
/// Valid ids are 1 to [`PARTICIPANT_ID_LEN_MAX`] bytes of ASCII letters, digits, `.`, `_`, `:`
/// and `-`, starting with a letter or digit. The restricted alphabet keeps ids safe to put in
/// CSV cells (no separators, quotes or formula prefixes) and in logs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParticipantId(String);

impl ParticipantId {
    pub fn new(text: &str) -> Result<Self, NettingError> {
        let bytes = text.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= PARTICIPANT_ID_LEN_MAX
            && bytes[0].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !valid {
            let shown: String = text.chars().take(PARTICIPANT_ID_LEN_MAX + 8).collect();
            return Err(NettingError::InvalidParticipantId(shown));
        }
        Ok(ParticipantId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ParticipantId {
    type Error = NettingError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ParticipantId::new(&value)
    }
}

impl From<ParticipantId> for String {
    fn from(value: ParticipantId) -> Self {
        value.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One completed-but-unsettled transfer: `debtor` owes `creditor` `amount_minor` minor units of
/// `currency`.
///
/// Fields are public so obligations can be built and reused cheaply (for example by overwriting
/// a scratch obligation in a hot loop); [`crate::NettingAggregator::push`] validates every
/// obligation it is given, and [`Obligation::new`] validates up front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obligation {
    pub debtor: ParticipantId,
    pub creditor: ParticipantId,
    pub currency: CurrencyCode,
    pub amount_minor: u64,
}

impl Obligation {
    pub fn new(
        debtor: ParticipantId,
        creditor: ParticipantId,
        currency: CurrencyCode,
        amount_minor: u64,
    ) -> Result<Self, NettingError> {
        let obligation = Obligation { debtor, creditor, currency, amount_minor };
        obligation.validate()?;
        Ok(obligation)
    }

    /// Checks what the type cannot: a positive amount no larger than
    /// [`puente_money::AMOUNT_MAX_MINOR`], and two different parties.
    pub fn validate(&self) -> Result<(), NettingError> {
        if self.amount_minor == 0 {
            return Err(NettingError::ZeroAmount);
        }
        if self.amount_minor > AMOUNT_MAX_MINOR {
            return Err(NettingError::AmountTooLarge {
                amount_minor: self.amount_minor,
                max_minor: AMOUNT_MAX_MINOR,
            });
        }
        if self.debtor == self.creditor {
            return Err(NettingError::SelfObligation(self.debtor.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_are_strict() {
        for good in ["BANK1", "u.s-bank_01", "MX:040012", "a", &"x".repeat(64)] {
            assert!(ParticipantId::new(good).is_ok(), "{good}");
        }
        for bad in ["", " a", "-a", "=cmd", "a,b", "a\"b", "ñ", "a b", &"x".repeat(65)] {
            assert!(matches!(ParticipantId::new(bad), Err(NettingError::InvalidParticipantId(_))), "{bad}");
        }
    }

    #[test]
    fn participant_id_serde_validates() {
        let id: ParticipantId = serde_json::from_str("\"BANK1\"").unwrap();
        assert_eq!(id.as_str(), "BANK1");
        assert!(serde_json::from_str::<ParticipantId>("\"a,b\"").is_err());
    }

    #[test]
    fn obligations_are_validated() {
        let a = ParticipantId::new("A").unwrap();
        let b = ParticipantId::new("B").unwrap();
        assert!(Obligation::new(a.clone(), b.clone(), CurrencyCode::USD, 1).is_ok());
        assert_eq!(
            Obligation::new(a.clone(), b.clone(), CurrencyCode::USD, 0),
            Err(NettingError::ZeroAmount)
        );
        assert!(matches!(
            Obligation::new(a.clone(), b, CurrencyCode::USD, AMOUNT_MAX_MINOR + 1),
            Err(NettingError::AmountTooLarge { .. })
        ));
        assert!(matches!(
            Obligation::new(a.clone(), a, CurrencyCode::USD, 5),
            Err(NettingError::SelfObligation(_))
        ));
    }
}
