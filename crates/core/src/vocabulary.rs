//! The nouns more than one crate uses, defined once: the ledger (settlement profiles), the
//! netting core (cross-border obligations) and the settlement documents all name a
//! participant's country and bound its id the same way.

use serde::{Deserialize, Serialize};

/// Longest participant id, in bytes (the ledger, the netting core and FX quotes share it).
pub const PARTICIPANT_ID_LEN_MAX: usize = 64;

/// Where a participant is domiciled; an obligation between countries is cross-border.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Country {
    Us,
    Mx,
}

impl Country {
    /// ISO 3166-1 alpha-2 code.
    pub fn code(self) -> &'static str {
        match self {
            Country::Us => "US",
            Country::Mx => "MX",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_iso_3166() {
        assert_eq!(Country::Us.code(), "US");
        assert_eq!(Country::Mx.code(), "MX");
    }
}
