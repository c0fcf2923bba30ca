//! Deterministic workload generators for benchmarks, simulations and tests.
//!
//! Pure (no I/O, no clock, no floating point): a seeded SplitMix64 generator and integer-only
//! amount distributions. The same seed always yields the same obligations.

use std::collections::BTreeMap;

use puente_money::{AMOUNT_MAX_MINOR, CurrencyCode};

use crate::{Country, NettingError, Obligation, PARTICIPANTS_MAX, ParticipantId};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, statistically fine for workloads.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; bias below 2^-32 for the small `n` used here).
    /// Returns 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `permille / 1000`.
    pub fn chance_permille(&mut self, permille: u64) -> bool {
        self.below(1_000) < permille
    }
}

/// `2^(k/8)` for `k = −8..=8`, in thousandths.
const POW2_EIGHTHS_PERMILLE: [u128; 17] =
    [500, 545, 595, 648, 707, 771, 841, 917, 1_000, 1_091, 1_189, 1_297, 1_414, 1_542, 1_682, 1_834, 2_000];

/// A log-normal-ish amount around `median_minor`: the median times three independent factors
/// `2^(k/8)`, `k` uniform in −8..=8. log2 of the result is a sum of three uniforms (standard
/// deviation ≈ 1.06, i.e. σ ≈ 0.73 in natural log), symmetric around the median, within
/// `median / 8 ..= median · 8`. Integer arithmetic only; at least 1, at most
/// [`AMOUNT_MAX_MINOR`].
pub fn lognormal_ish_minor(rng: &mut SplitMix64, median_minor: u64) -> u64 {
    let mut value = u128::from(median_minor);
    for _ in 0..3 {
        value = value * POW2_EIGHTHS_PERMILLE[rng.below(17) as usize] / 1_000;
    }
    u64::try_from(value).unwrap_or(AMOUNT_MAX_MINOR).clamp(1, AMOUNT_MAX_MINOR)
}

/// Obligations between `participants` random parties in USD and MXN (half each), amounts
/// log-normal-ish around USD 300 / MXN 5,400. Used by the throughput benchmarks.
#[derive(Debug, Clone)]
pub struct UniformWorkload {
    rng: SplitMix64,
    ids: Vec<ParticipantId>,
}

impl UniformWorkload {
    /// `participants` in `2..=PARTICIPANTS_MAX`, named `P0000`, `P0001`, ...
    pub fn new(seed: u64, participants: usize) -> Result<Self, NettingError> {
        if !(2..=PARTICIPANTS_MAX).contains(&participants) {
            return Err(NettingError::TooManyParticipants { max: PARTICIPANTS_MAX });
        }
        let ids = (0..participants)
            .map(|i| ParticipantId::new(&format!("P{i:04}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UniformWorkload { rng: SplitMix64::new(seed), ids })
    }

    /// A scratch obligation to pass to [`Self::fill`].
    pub fn scratch(&self) -> Obligation {
        Obligation {
            debtor: self.ids[0].clone(),
            creditor: self.ids[1].clone(),
            currency: CurrencyCode::USD,
            amount_minor: 1,
        }
    }

    /// Overwrites `obligation` with the next one (reusing its string buffers: no allocation
    /// once the buffers are as long as the longest id).
    pub fn fill(&mut self, obligation: &mut Obligation) {
        let n = self.ids.len() as u64;
        let debtor = self.rng.below(n);
        let mut creditor = self.rng.below(n - 1);
        if creditor >= debtor {
            creditor += 1;
        }
        obligation.debtor.clone_from(&self.ids[debtor as usize]);
        obligation.creditor.clone_from(&self.ids[creditor as usize]);
        if self.rng.next_u64() & 1 == 0 {
            obligation.currency = CurrencyCode::USD;
            obligation.amount_minor = lognormal_ish_minor(&mut self.rng, 30_000);
        } else {
            obligation.currency = CurrencyCode::MXN;
            obligation.amount_minor = lognormal_ish_minor(&mut self.rng, 540_000);
        }
    }
}

/// The shape of a simulated day in the US–Mexico corridor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorridorMix {
    pub us_participants: usize,
    pub mx_participants: usize,
    /// Share of transfers that are remittances (US → MX, USD), in thousandths.
    pub remittance_permille: u64,
    pub remittance_median_usd_minor: u64,
    /// The rest is SME trade. Share of trade payments flowing south (US buyer pays MX seller),
    /// in thousandths; the others flow north.
    pub trade_southbound_permille: u64,
    pub trade_median_usd_minor: u64,
    /// Share of trade payments invoiced in MXN, in thousandths (the others in USD).
    pub trade_mxn_permille: u64,
    /// Whole MXN per USD used to size MXN-invoiced trade (generation only).
    pub mxn_per_usd: u64,
}

impl Default for CorridorMix {
    /// 10 + 10 participants; 85% remittances around USD 300; SME trade around USD 8,000 with
    /// 60% of payments southbound and 40% northbound (≈ the 2024 goods trade: about
    /// USD 506 bn Mexico → US and 334 bn US → Mexico; payments flow opposite to goods); 20% of trade invoiced in MXN.
    fn default() -> Self {
        CorridorMix {
            us_participants: 10,
            mx_participants: 10,
            remittance_permille: 850,
            remittance_median_usd_minor: 30_000,
            trade_southbound_permille: 600,
            trade_median_usd_minor: 800_000,
            trade_mxn_permille: 200,
            mxn_per_usd: 18,
        }
    }
}

/// A simulated day: `count` obligations following `mix`, with each participant's country.
/// Participants are `us00..` and `mx00..`; senders and receivers are skewed toward low
/// numbers (a few large MTOs and banks carry most flow).
pub fn corridor_day(
    seed: u64,
    count: usize,
    mix: &CorridorMix,
) -> Result<(Vec<Obligation>, BTreeMap<ParticipantId, Country>), NettingError> {
    let (us_n, mx_n) = (mix.us_participants, mix.mx_participants);
    if us_n == 0 || mx_n == 0 || us_n > 100 || mx_n > 100 {
        return Err(NettingError::TooManyParticipants { max: 100 });
    }
    let us: Vec<ParticipantId> =
        (0..us_n).map(|i| ParticipantId::new(&format!("us{i:02}"))).collect::<Result<_, _>>()?;
    let mx: Vec<ParticipantId> =
        (0..mx_n).map(|i| ParticipantId::new(&format!("mx{i:02}"))).collect::<Result<_, _>>()?;
    let mut countries = BTreeMap::new();
    countries.extend(us.iter().map(|p| (p.clone(), Country::Us)));
    countries.extend(mx.iter().map(|p| (p.clone(), Country::Mx)));

    let mut rng = SplitMix64::new(seed);
    // Skewed pick: the smaller of two uniform draws.
    let pick = |rng: &mut SplitMix64, n: usize| -> usize {
        let (a, b) = (rng.below(n as u64), rng.below(n as u64));
        a.min(b) as usize
    };
    let mut obligations = Vec::with_capacity(count);
    for _ in 0..count {
        let (u, m) = (pick(&mut rng, us_n), pick(&mut rng, mx_n));
        let obligation = if rng.chance_permille(mix.remittance_permille) {
            let amount = lognormal_ish_minor(&mut rng, mix.remittance_median_usd_minor);
            Obligation::new(us[u].clone(), mx[m].clone(), CurrencyCode::USD, amount)?
        } else {
            let southbound = rng.chance_permille(mix.trade_southbound_permille);
            let (debtor, creditor) = if southbound { (&us[u], &mx[m]) } else { (&mx[m], &us[u]) };
            let usd_amount = lognormal_ish_minor(&mut rng, mix.trade_median_usd_minor);
            let (currency, amount) = if rng.chance_permille(mix.trade_mxn_permille) {
                (CurrencyCode::MXN, usd_amount.saturating_mul(mix.mxn_per_usd))
            } else {
                (CurrencyCode::USD, usd_amount)
            };
            Obligation::new(debtor.clone(), creditor.clone(), currency, amount)?
        };
        obligations.push(obligation);
    }
    Ok((obligations, countries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic_and_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let amount = lognormal_ish_minor(&mut rng, 30_000);
            assert!((30_000 / 8..=30_000 * 8).contains(&amount));
            assert!(rng.below(5) < 5);
        }
        assert_eq!(SplitMix64::new(3).below(0), 0);
        assert_eq!(lognormal_ish_minor(&mut rng, u64::MAX), AMOUNT_MAX_MINOR);
    }

    #[test]
    fn workloads_produce_valid_obligations() {
        let mut workload = UniformWorkload::new(9, 3).unwrap();
        let mut scratch = workload.scratch();
        for _ in 0..1_000 {
            workload.fill(&mut scratch);
            scratch.validate().unwrap();
        }
        assert!(UniformWorkload::new(9, 1).is_err());
        let (day, countries) = corridor_day(5, 500, &CorridorMix::default()).unwrap();
        assert_eq!(day.len(), 500);
        assert_eq!(countries.len(), 20);
        assert!(day.iter().all(|o| countries[&o.debtor] != countries[&o.creditor]));
        assert_eq!(day, corridor_day(5, 500, &CorridorMix::default()).unwrap().0);
    }
}
