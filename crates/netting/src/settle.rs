//! Fewest-payments settlement of multilateral net positions.
//!
//! Input is a slice of net positions in minor units (positive: receives; negative: pays) that
//! sums to zero. Output is a list of payments, each from a net debtor to a net creditor, that
//! brings every position to zero. In every plan produced here debtors only pay and creditors only
//! receive, so the value moved is exactly the multilateral net value (the sum of positive nets).
//!
//! With n non-zero positions:
//! - any plan needs at least n − k payments, where k is the largest number of disjoint groups
//!   whose nets each sum to zero (a connected group of m parties needs m − 1 payments);
//! - [`exact_min_payments`] reaches n − k by dynamic programming over subsets (n ≤
//!   [`EXACT_SOLVER_PARTICIPANTS_MAX`]);
//! - [`greedy_payments`] needs at most n − 1 (each payment zeroes at least one party, the last
//!   one zeroes two), in `O(n log n)`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use puente_money::CurrencyCode;
use serde::{Deserialize, Serialize};

use crate::{EXACT_SOLVER_PARTICIPANTS_MAX, NettingError, PARTICIPANTS_MAX, ParticipantId};

/// A payment between positions of a net-position slice, by index into that slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPayment {
    pub payer_index: usize,
    pub payee_index: usize,
    pub amount_minor: u128,
}

/// A settlement payment between participants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payer: ParticipantId,
    pub payee: ParticipantId,
    pub currency: CurrencyCode,
    pub amount_minor: u128,
}

/// Which solver produced a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolverMethod {
    /// Proven minimum (n − k payments).
    Exact,
    /// Heuristic with at most n − 1 payments.
    Greedy,
}

/// Index-based plan returned by [`plan_payments`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPlan {
    pub method: SolverMethod,
    pub payments: Vec<IndexedPayment>,
}

/// The settlement payments of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementPlan {
    pub currency: CurrencyCode,
    pub method: SolverMethod,
    pub payments: Vec<Payment>,
}

impl SettlementPlan {
    /// Total value moved by the plan.
    pub fn value_minor(&self) -> u128 {
        // Bounded by the multilateral net value of a valid run, so no overflow is possible;
        // saturate rather than panic if a caller builds an absurd plan by hand.
        self.payments.iter().fold(0u128, |sum, p| sum.saturating_add(p.amount_minor))
    }
}

/// Checks that `nets_minor` is a valid input: at most [`PARTICIPANTS_MAX`] entries, summing to
/// zero. Returns the indices of the non-zero entries.
fn validate_nets(nets_minor: &[i128]) -> Result<Vec<usize>, NettingError> {
    if nets_minor.len() > PARTICIPANTS_MAX {
        return Err(NettingError::TooManyPositions { len: nets_minor.len(), max: PARTICIPANTS_MAX });
    }
    let mut sum_minor: i128 = 0;
    for &net in nets_minor {
        sum_minor = sum_minor.checked_add(net).ok_or(NettingError::Overflow)?;
    }
    if sum_minor != 0 {
        return Err(NettingError::NetsDoNotSumToZero { sum_minor });
    }
    Ok((0..nets_minor.len()).filter(|&i| nets_minor[i] != 0).collect())
}

/// The fewest payments that settle `nets_minor` (proven minimum: n − k, see the module docs).
///
/// Errors: more than [`EXACT_SOLVER_PARTICIPANTS_MAX`] non-zero entries, more than
/// [`PARTICIPANTS_MAX`] entries, nets not summing to zero, overflow of a subset sum.
///
/// Method: `sum[mask]` is the net of each subset of the n non-zero parties and
/// `dp[mask] = max over i in mask of dp[mask − i] + [sum[mask] = 0]`, which is the largest
/// number of zero-sum prefixes over orderings of `mask`, i.e. the largest number of disjoint
/// zero-sum groups partitioning a zero-sum `mask`. Walking back from the full set recovers an
/// ordering; cutting it at zero-sum prefixes gives the k groups, and each group of m is settled
/// with m − 1 greedy payments. Time `O(n · 2^n)`, memory `O(2^n)`.
pub fn exact_min_payments(nets_minor: &[i128]) -> Result<Vec<IndexedPayment>, NettingError> {
    let nonzero = validate_nets(nets_minor)?;
    let n = nonzero.len();
    if n > EXACT_SOLVER_PARTICIPANTS_MAX {
        return Err(NettingError::TooManyForExactSolver { nonzero: n, max: EXACT_SOLVER_PARTICIPANTS_MAX });
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let values: Vec<i128> = nonzero.iter().map(|&i| nets_minor[i]).collect();
    let full: usize = (1 << n) - 1;
    let mut sum = vec![0i128; full + 1];
    for mask in 1..=full {
        let lowest = mask.trailing_zeros() as usize;
        sum[mask] = sum[mask & (mask - 1)].checked_add(values[lowest]).ok_or(NettingError::Overflow)?;
    }
    let mut dp = vec![0u8; full + 1];
    for mask in 1..=full {
        let mut best = 0u8;
        let mut rest = mask;
        while rest != 0 {
            let bit = rest & rest.wrapping_neg();
            best = best.max(dp[mask ^ bit]);
            rest ^= bit;
        }
        dp[mask] = best + u8::from(sum[mask] == 0);
    }
    assert_eq!(sum[full], 0);
    let groups_max = usize::from(dp[full]);
    assert!(groups_max >= 1);

    // Walk back from the full set; each zero-sum mask on the way closes a group.
    let mut groups: Vec<Vec<usize>> = Vec::with_capacity(groups_max);
    let mut current: Vec<usize> = Vec::new();
    let mut mask = full;
    while mask != 0 {
        let target = dp[mask] - u8::from(sum[mask] == 0);
        let mut rest = mask;
        let mut chosen = None;
        while rest != 0 {
            let bit = rest & rest.wrapping_neg();
            if dp[mask ^ bit] == target {
                chosen = Some(bit);
                break;
            }
            rest ^= bit;
        }
        let bit = match chosen {
            Some(bit) => bit,
            None => unreachable!("dp[mask] is attained by some element of mask"),
        };
        current.push(bit.trailing_zeros() as usize);
        mask ^= bit;
        if sum[mask] == 0 {
            // `current` is (mask before the walk) − mask: a zero-sum difference of zero-sum sets.
            groups.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty());
    assert_eq!(groups.len(), groups_max);

    let mut payments = Vec::with_capacity(n - groups_max);
    for group in &groups {
        let members: Vec<usize> = group.iter().map(|&g| nonzero[g]).collect();
        let before = payments.len();
        greedy_into(nets_minor, &members, &mut payments)?;
        // Maximality of k means no group splits further, so greedy uses exactly m − 1 here.
        assert_eq!(payments.len() - before, members.len() - 1);
    }
    assert_eq!(payments.len(), n - groups_max);
    Ok(payments)
}

/// A plan with at most n − 1 payments for n non-zero entries, in `O(n log n)`.
///
/// First, a debtor and a creditor with exactly opposite nets are paired off (one payment
/// settles two parties: a zero-sum group of two). Then, repeatedly, the largest remaining debtor
/// pays the largest remaining creditor the smaller of the two amounts (max-heaps; ties broken by
/// lower index, so the result is deterministic).
pub fn greedy_payments(nets_minor: &[i128]) -> Result<Vec<IndexedPayment>, NettingError> {
    let nonzero = validate_nets(nets_minor)?;
    let mut payments = Vec::with_capacity(nonzero.len().saturating_sub(1));
    greedy_into(nets_minor, &nonzero, &mut payments)?;
    assert!(payments.len() <= nonzero.len().saturating_sub(1));
    Ok(payments)
}

/// Greedy settlement of the parties `members` (indices into `nets_minor`, all non-zero, summing
/// to zero), appending to `payments`.
fn greedy_into(
    nets_minor: &[i128],
    members: &[usize],
    payments: &mut Vec<IndexedPayment>,
) -> Result<(), NettingError> {
    // Exact opposite pairs first.
    let mut debtors_by_amount: HashMap<u128, Vec<usize>> = HashMap::new();
    for &i in members.iter().rev() {
        if nets_minor[i] < 0 {
            debtors_by_amount.entry(nets_minor[i].unsigned_abs()).or_default().push(i);
        }
    }
    let mut settled = vec![false; members.len()];
    let slot: HashMap<usize, usize> = members.iter().enumerate().map(|(s, &i)| (i, s)).collect();
    for (s, &i) in members.iter().enumerate() {
        if nets_minor[i] > 0 {
            let amount_minor = nets_minor[i].unsigned_abs();
            if let Some(debtor) = debtors_by_amount.get_mut(&amount_minor).and_then(Vec::pop) {
                payments.push(IndexedPayment { payer_index: debtor, payee_index: i, amount_minor });
                settled[s] = true;
                settled[slot[&debtor]] = true;
            }
        }
    }

    let mut debtors: BinaryHeap<(u128, Reverse<usize>)> = BinaryHeap::new();
    let mut creditors: BinaryHeap<(u128, Reverse<usize>)> = BinaryHeap::new();
    for (s, &i) in members.iter().enumerate() {
        if settled[s] {
            continue;
        }
        let net = nets_minor[i];
        if net < 0 {
            debtors.push((net.unsigned_abs(), Reverse(i)));
        } else if net > 0 {
            creditors.push((net.unsigned_abs(), Reverse(i)));
        }
    }
    loop {
        match (debtors.pop(), creditors.pop()) {
            (None, None) => break,
            (Some((owed, Reverse(d))), Some((due, Reverse(c)))) => {
                let amount_minor = owed.min(due);
                payments.push(IndexedPayment { payer_index: d, payee_index: c, amount_minor });
                if owed > amount_minor {
                    debtors.push((owed - amount_minor, Reverse(d)));
                }
                if due > amount_minor {
                    creditors.push((due - amount_minor, Reverse(c)));
                }
            }
            // Debits and credits are equal in total, so both heaps empty together.
            _ => return Err(NettingError::NetsDoNotSumToZero { sum_minor: 0 }),
        }
    }
    Ok(())
}

/// Picks [`exact_min_payments`] when there are at most [`EXACT_SOLVER_PARTICIPANTS_MAX`]
/// non-zero positions, [`greedy_payments`] otherwise. The result is checked with
/// [`check_payments_reproduce`] before it is returned (a failure is a bug: it panics).
pub fn plan_payments(nets_minor: &[i128]) -> Result<IndexedPlan, NettingError> {
    let nonzero = validate_nets(nets_minor)?.len();
    let (method, payments) = if nonzero <= EXACT_SOLVER_PARTICIPANTS_MAX {
        (SolverMethod::Exact, exact_min_payments(nets_minor)?)
    } else {
        (SolverMethod::Greedy, greedy_payments(nets_minor)?)
    };
    assert!(payments.len() <= nonzero.saturating_sub(1));
    if let Err(error) = check_payments_reproduce(nets_minor, &payments) {
        panic!("settlement plan does not reproduce the net positions: {error}");
    }
    Ok(IndexedPlan { method, payments })
}

/// Checks that applying `payments` to zero balances yields exactly `nets_minor` (payee +amount,
/// payer −amount), that every amount is positive, and that indices are in range.
pub fn check_payments_reproduce(
    nets_minor: &[i128],
    payments: &[IndexedPayment],
) -> Result<(), NettingError> {
    let mismatch = |text: String| Err(NettingError::PaymentsMismatch(text));
    let mut balance = vec![0i128; nets_minor.len()];
    for (k, p) in payments.iter().enumerate() {
        if p.payer_index >= nets_minor.len() || p.payee_index >= nets_minor.len() {
            return mismatch(format!("payment {k} refers to a position out of range"));
        }
        if p.amount_minor == 0 || p.payer_index == p.payee_index {
            return mismatch(format!("payment {k} is empty or to itself"));
        }
        let amount = i128::try_from(p.amount_minor).map_err(|_| NettingError::Overflow)?;
        balance[p.payer_index] = balance[p.payer_index].checked_sub(amount).ok_or(NettingError::Overflow)?;
        balance[p.payee_index] = balance[p.payee_index].checked_add(amount).ok_or(NettingError::Overflow)?;
    }
    for (i, (&got, &want)) in balance.iter().zip(nets_minor).enumerate() {
        if got != want {
            return mismatch(format!("position {i}: payments give {got}, net is {want}"));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Brute force, for tests only: the fewest payments as n − (largest number of blocks in a
    /// partition of the non-zero positions into zero-sum blocks), trying every set partition
    /// (Bell(n) of them: 4,140 for n = 8, 115,975 for n = 10, 4,213,597 for n = 12).
    pub(crate) fn brute_force_min_payments(nets_minor: &[i128]) -> usize {
        let values: Vec<i128> = nets_minor.iter().copied().filter(|&v| v != 0).collect();
        assert!(values.len() <= 12, "brute force is limited to 12 non-zero positions");
        fn best_partition(values: &[i128], i: usize, blocks: &mut Vec<i128>) -> usize {
            if i == values.len() {
                // Every block must sum to zero.
                return if blocks.iter().all(|&b| b == 0) { blocks.len() } else { 0 };
            }
            let mut best = 0;
            for b in 0..blocks.len() {
                blocks[b] += values[i];
                best = best.max(best_partition(values, i + 1, blocks));
                blocks[b] -= values[i];
            }
            blocks.push(values[i]);
            best = best.max(best_partition(values, i + 1, blocks));
            blocks.pop();
            best
        }
        if values.is_empty() {
            return 0;
        }
        let k = best_partition(&values, 0, &mut Vec::new());
        assert!(k >= 1);
        values.len() - k
    }

    /// Random zero-sum nets with small magnitudes (so zero-sum subgroups are common).
    pub(crate) fn zero_sum_nets(max_len: usize, magnitude: i128) -> impl Strategy<Value = Vec<i128>> {
        prop::collection::vec(-magnitude..=magnitude, 1..max_len).prop_map(|mut v| {
            let sum: i128 = v.iter().sum();
            v.push(-sum);
            v
        })
    }

    proptest! {
        // Exact == brute force at the exact solver's limit: 12 non-zero positions. The brute
        // force takes ~0.3 s per case in a debug build (Bell(12) = 4,213,597 partitions), so
        // only a few cases run here.
        #![proptest_config(ProptestConfig::with_cases(4))]
        #[test]
        fn exact_equals_brute_force_at_twelve(
            magnitudes in prop::collection::vec(1i128..=6, 11),
            signs in prop::collection::vec(any::<bool>(), 11),
        ) {
            let mut nets: Vec<i128> =
                magnitudes.iter().zip(&signs).map(|(&m, &s)| if s { m } else { -m }).collect();
            let sum: i128 = nets.iter().sum();
            nets.push(-sum);
            let payments = exact_min_payments(&nets).unwrap();
            check_payments_reproduce(&nets, &payments).unwrap();
            prop_assert_eq!(payments.len(), brute_force_min_payments(&nets));
        }
    }

    #[test]
    fn exact_finds_disjoint_groups() {
        // {+5,-5}, {+3,-1,-2}, {+7,-7}: 7 parties, 3 groups, 4 payments.
        let nets = [5, 3, -1, 7, -5, -2, -7];
        let payments = exact_min_payments(&nets).unwrap();
        assert_eq!(payments.len(), 4);
        check_payments_reproduce(&nets, &payments).unwrap();
        assert_eq!(brute_force_min_payments(&nets), 4);
    }

    #[test]
    fn greedy_can_be_beaten_by_exact() {
        // Groups {+7, -4, -3} and {+6, -5, -1}: 6 − 2 = 4 payments. Largest-first greedy mixes
        // the groups (5 pays 7, 4 pays 6, ...) and needs 5.
        let nets = [7, -4, -3, 6, -5, -1];
        let greedy = greedy_payments(&nets).unwrap();
        let exact = exact_min_payments(&nets).unwrap();
        check_payments_reproduce(&nets, &greedy).unwrap();
        check_payments_reproduce(&nets, &exact).unwrap();
        assert_eq!(exact.len(), 4);
        assert_eq!(brute_force_min_payments(&nets), 4);
        assert_eq!(greedy.len(), 5);
    }

    #[test]
    fn exact_handles_twelve_and_refuses_thirteen() {
        // Six pairs of opposite values: k = 6 groups, 12 − 6 = 6 payments.
        let nets: Vec<i128> = (1..=6).flat_map(|v| [v * 1_000 + 7, -(v * 1_000 + 7)]).collect();
        let payments = exact_min_payments(&nets).unwrap();
        assert_eq!(payments.len(), 6);
        // A 12-party single group (no proper zero-sum subset): 11 payments.
        let mut nets: Vec<i128> = (0..11).map(|i| 1i128 << i).collect();
        nets.push(-((1i128 << 11) - 1));
        let payments = exact_min_payments(&nets).unwrap();
        assert_eq!(payments.len(), 11);
        check_payments_reproduce(&nets, &payments).unwrap();
        let mut nets: Vec<i128> = (0..12).map(|i| 1i128 << i).collect();
        nets.push(-((1i128 << 12) - 1));
        assert!(matches!(
            exact_min_payments(&nets),
            Err(NettingError::TooManyForExactSolver { nonzero: 13, max: 12 })
        ));
        assert_eq!(plan_payments(&nets).unwrap().method, SolverMethod::Greedy);
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert_eq!(exact_min_payments(&[1, 2]), Err(NettingError::NetsDoNotSumToZero { sum_minor: 3 }));
        assert!(greedy_payments(&[1, -2]).is_err());
        assert!(matches!(greedy_payments(&[i128::MAX, 1]), Err(NettingError::Overflow)));
        let too_many = vec![0i128; PARTICIPANTS_MAX + 1];
        assert!(matches!(plan_payments(&too_many), Err(NettingError::TooManyPositions { .. })));
        assert!(exact_min_payments(&[]).unwrap().is_empty());
        assert!(greedy_payments(&[0, 0]).unwrap().is_empty());
    }

    #[test]
    fn checker_catches_bad_plans() {
        let nets = [10, -10];
        let good = [IndexedPayment { payer_index: 1, payee_index: 0, amount_minor: 10 }];
        check_payments_reproduce(&nets, &good).unwrap();
        let short = [IndexedPayment { payer_index: 1, payee_index: 0, amount_minor: 9 }];
        assert!(check_payments_reproduce(&nets, &short).is_err());
        let out_of_range = [IndexedPayment { payer_index: 2, payee_index: 0, amount_minor: 10 }];
        assert!(check_payments_reproduce(&nets, &out_of_range).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        // Exact == brute force on up to 10 positions (Bell(10) = 115,975 partitions).
        #[test]
        fn exact_equals_brute_force(nets in zero_sum_nets(10, 6)) {
            let payments = exact_min_payments(&nets).unwrap();
            check_payments_reproduce(&nets, &payments).unwrap();
            prop_assert_eq!(payments.len(), brute_force_min_payments(&nets));
        }

        #[test]
        fn greedy_reproduces_small_cases(nets in zero_sum_nets(12, 6)) {
            let payments = greedy_payments(&nets).unwrap();
            check_payments_reproduce(&nets, &payments).unwrap();
        }

        #[test]
        fn exact_is_never_worse_than_greedy_up_to_twelve(nets in zero_sum_nets(12, 20)) {
            let exact = exact_min_payments(&nets).unwrap();
            let greedy = greedy_payments(&nets).unwrap();
            check_payments_reproduce(&nets, &exact).unwrap();
            check_payments_reproduce(&nets, &greedy).unwrap();
            prop_assert!(exact.len() <= greedy.len());
        }

        #[test]
        fn greedy_reproduces_and_needs_at_most_n_minus_1(
            nets in zero_sum_nets(200, 1_000_000_000_000)
        ) {
            let payments = greedy_payments(&nets).unwrap();
            check_payments_reproduce(&nets, &payments).unwrap();
            let n = nets.iter().filter(|&&v| v != 0).count();
            prop_assert!(payments.len() <= n.saturating_sub(1));
            // Debtors only pay, creditors only receive.
            for p in &payments {
                prop_assert!(nets[p.payer_index] < 0 && nets[p.payee_index] > 0);
            }
        }
    }
}
