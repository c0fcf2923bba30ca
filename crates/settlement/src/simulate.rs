//! A seeded, realistic corridor day for demos, tests and benchmarks: participants of skewed
//! sizes on both sides, remittances mostly US → MX with log-normal-ish amounts around USD 300,
//! SME trade payments both ways (the generator is `puente_netting::sim::corridor_day`), plus
//! each participant's settlement identifiers (valid ABA routing numbers, CLABEs and BICs).

use puente_ledger::settlement::Country;
use puente_netting::Obligation;
use puente_netting::sim::{CorridorMix, corridor_day};

use crate::SettlementError;
use crate::ids::{make_aba, make_clabe};

/// One simulated participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimParticipant {
    pub id: String,
    pub name: String,
    pub country: Country,
    pub bic: String,
    /// For its USD settlement (Fedwire for US participants, ACH/Directo a México for MX ones).
    pub aba: String,
    /// For its MXN settlement (SPEI).
    pub clabe: String,
}

/// A simulated day: participants and the transfers between them, in order.
#[derive(Debug, Clone)]
pub struct SimDay {
    pub participants: Vec<SimParticipant>,
    pub transfers: Vec<Obligation>,
}

/// `count` transfers between `us` US and `mx` MX participants (each 1..=100).
pub fn corridor(seed: u64, count: usize, us: usize, mx: usize) -> Result<SimDay, SettlementError> {
    let mix = CorridorMix { us_participants: us, mx_participants: mx, ..CorridorMix::default() };
    let (transfers, countries) = corridor_day(seed, count, &mix)?;
    let participants = countries
        .iter()
        .enumerate()
        .map(|(i, (id, country))| {
            let (country, name, bic) = match country {
                puente_netting::Country::Us => {
                    (Country::Us, format!("US Bank {id}"), format!("PU{i:02}US33"))
                }
                puente_netting::Country::Mx => (Country::Mx, format!("Banco {id}"), format!("PU{i:02}MXMM")),
            };
            let aba = make_aba(&format!("0210{i:04}")).expect("8 digits");
            let clabe = make_clabe(&format!("002180{i:011}")).expect("17 digits");
            SimParticipant { id: id.to_string(), name, country, bic, aba, clabe }
        })
        .collect();
    Ok(SimDay { participants, transfers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{aba_valid, bic_valid, clabe_valid};
    use puente_money::CurrencyCode;

    #[test]
    fn a_day_is_realistic_and_seeded() {
        let day = corridor(42, 2_000, 4, 5).unwrap();
        assert_eq!(day.participants.len(), 9);
        assert!(
            day.participants.iter().all(|p| aba_valid(&p.aba) && clabe_valid(&p.clabe) && bic_valid(&p.bic))
        );
        let south = day
            .transfers
            .iter()
            .filter(|t| t.debtor.as_str().starts_with("us") && t.currency == CurrencyCode::USD)
            .count();
        assert!(south > 1_500, "mostly US → MX remittances: {south}");
        assert!(day.transfers.iter().any(|t| t.debtor.as_str().starts_with("mx")), "trade flows north too");
        // Skewed: the first participant on each side carries more than an even share.
        let from_us00 = day.transfers.iter().filter(|t| t.debtor.as_str() == "us00").count();
        assert!(from_us00 > 2_000 / 4, "{from_us00}");
        assert_eq!(corridor(42, 2_000, 4, 5).unwrap().transfers, day.transfers);
    }
}
