//! Streaming aggregation of obligations into gross, bilateral and multilateral figures.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use puente_money::CurrencyCode;
use serde::{Deserialize, Serialize};

use crate::settle::{self, SettlementPlan};
use crate::{CURRENCIES_MAX, NettingError, OBLIGATIONS_MAX, Obligation, PARTICIPANTS_MAX, ParticipantId};

/// Folds obligations one at a time into bounded state.
///
/// Memory is `O(participants² × currencies)` (one cell per unordered pair and currency that has
/// seen an obligation, one position per participant and currency), independent of how many
/// obligations are pushed. Limits: [`PARTICIPANTS_MAX`], [`CURRENCIES_MAX`], [`OBLIGATIONS_MAX`].
///
/// `push` is atomic: when it returns an error, the aggregator is unchanged.
#[derive(Debug, Clone, Default)]
pub struct NettingAggregator {
    /// Participant id → dense index (first-seen order).
    index: HashMap<ParticipantId, u32>,
    /// Dense index → participant id.
    ids: Vec<ParticipantId>,
    currencies: Vec<CurrencyAcc>,
    obligation_count: u64,
}

#[derive(Debug, Clone)]
struct CurrencyAcc {
    currency: CurrencyCode,
    gross_count: u64,
    gross_value_minor: u128,
    /// Indexed by participant index; grown on demand.
    positions: Vec<PositionAcc>,
    /// Key: `(low index << 32) | high index` of the unordered pair.
    pairs: HashMap<u64, PairAcc, BuildHasherDefault<PairKeyHasher>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct PositionAcc {
    paid_minor: u128,
    received_minor: u128,
    paid_count: u64,
    received_count: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct PairAcc {
    low_to_high_minor: u128,
    high_to_low_minor: u128,
    low_to_high_count: u64,
    high_to_low_count: u64,
}

impl PositionAcc {
    /// This position after paying `amount_minor` in `count` obligations.
    fn paid(self, amount_minor: u128, count: u64) -> Result<PositionAcc, NettingError> {
        Ok(PositionAcc {
            paid_minor: self.paid_minor.checked_add(amount_minor).ok_or(NettingError::Overflow)?,
            paid_count: self.paid_count.checked_add(count).ok_or(NettingError::Overflow)?,
            ..self
        })
    }

    /// This position after receiving `amount_minor` in `count` obligations.
    fn received(self, amount_minor: u128, count: u64) -> Result<PositionAcc, NettingError> {
        Ok(PositionAcc {
            received_minor: self.received_minor.checked_add(amount_minor).ok_or(NettingError::Overflow)?,
            received_count: self.received_count.checked_add(count).ok_or(NettingError::Overflow)?,
            ..self
        })
    }
}

impl PairAcc {
    /// This pair after `amount_minor` in `count` obligations from the lower index to the
    /// higher (`low_to_high`) or back.
    fn with(self, low_to_high: bool, amount_minor: u128, count: u64) -> Result<PairAcc, NettingError> {
        Ok(if low_to_high {
            PairAcc {
                low_to_high_minor: self
                    .low_to_high_minor
                    .checked_add(amount_minor)
                    .ok_or(NettingError::Overflow)?,
                low_to_high_count: self.low_to_high_count.checked_add(count).ok_or(NettingError::Overflow)?,
                ..self
            }
        } else {
            PairAcc {
                high_to_low_minor: self
                    .high_to_low_minor
                    .checked_add(amount_minor)
                    .ok_or(NettingError::Overflow)?,
                high_to_low_count: self.high_to_low_count.checked_add(count).ok_or(NettingError::Overflow)?,
                ..self
            }
        })
    }
}

/// Hasher for the aggregator's internal pair keys (two dense indices below
/// [`PARTICIPANTS_MAX`], never raw input), so a fast multiplicative hash is safe here.
#[derive(Debug, Clone, Copy, Default)]
struct PairKeyHasher(u64);

impl Hasher for PairKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Sizes of the aggregator's internal state, to show that memory is bounded by participants
/// and currencies, not by obligations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatorSize {
    pub participants: usize,
    pub currencies: usize,
    /// Pair cells summed over currencies; at most
    /// `participants · (participants − 1) / 2 · currencies`.
    pub pair_cells: usize,
    /// Position cells summed over currencies; at most `participants · currencies`.
    pub position_cells: usize,
    pub obligations: u64,
}

impl NettingAggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one obligation. Validates it (see [`Obligation::validate`]) and the run's limits.
    pub fn push(&mut self, obligation: &Obligation) -> Result<(), NettingError> {
        obligation.validate()?;
        self.add(
            &obligation.debtor,
            &obligation.creditor,
            obligation.currency,
            1,
            u128::from(obligation.amount_minor),
        )
    }

    /// Adds `count` obligations from `debtor` to `creditor` worth `value_minor` in total, as if
    /// pushed one by one (for callers that already keep per-pair totals, such as the ledger's
    /// settlement windows). Each obligation is at least one minor unit and at most
    /// [`puente_money::AMOUNT_MAX_MINOR`], so `count ≤ value_minor ≤ count · AMOUNT_MAX_MINOR`.
    /// Atomic like [`Self::push`].
    pub fn push_aggregate(
        &mut self,
        debtor: &ParticipantId,
        creditor: &ParticipantId,
        currency: CurrencyCode,
        count: u64,
        value_minor: u128,
    ) -> Result<(), NettingError> {
        if count == 0 || value_minor == 0 {
            return Err(NettingError::ZeroAmount);
        }
        let max_minor = u128::from(count) * u128::from(puente_money::AMOUNT_MAX_MINOR);
        if value_minor < u128::from(count) || value_minor > max_minor {
            return Err(NettingError::AmountTooLarge {
                amount_minor: u64::try_from(value_minor).unwrap_or(u64::MAX),
                max_minor: puente_money::AMOUNT_MAX_MINOR,
            });
        }
        if debtor == creditor {
            return Err(NettingError::SelfObligation(debtor.clone()));
        }
        self.add(debtor, creditor, currency, count, value_minor)
    }

    fn add(
        &mut self,
        debtor_id: &ParticipantId,
        creditor_id: &ParticipantId,
        currency_code: CurrencyCode,
        count: u64,
        amount_minor: u128,
    ) -> Result<(), NettingError> {
        if self.obligation_count.checked_add(count).is_none_or(|total| total > OBLIGATIONS_MAX) {
            return Err(NettingError::TooManyObligations { max: OBLIGATIONS_MAX });
        }
        let debtor = self.index.get(debtor_id).copied();
        let creditor = self.index.get(creditor_id).copied();
        let new_participants = usize::from(debtor.is_none()) + usize::from(creditor.is_none());
        if self.ids.len() + new_participants > PARTICIPANTS_MAX {
            return Err(NettingError::TooManyParticipants { max: PARTICIPANTS_MAX });
        }
        let currency = self.currencies.iter().position(|c| c.currency == currency_code);
        if currency.is_none() && self.currencies.len() >= CURRENCIES_MAX {
            return Err(NettingError::TooManyCurrencies { max: CURRENCIES_MAX });
        }

        // Compute every new value before writing anything, so a failure leaves no trace.
        // (With the limits above none of these can overflow; they are checked anyway.)
        let obligation_count = self.obligation_count.checked_add(count).ok_or(NettingError::Overflow)?;
        let (gross_count, gross_value_minor, debtor_pos, creditor_pos, pair) = match currency {
            Some(ci) => {
                let acc = &self.currencies[ci];
                let position = |index: Option<u32>| {
                    index.and_then(|i| acc.positions.get(i as usize).copied()).unwrap_or_default()
                };
                let pair = match (debtor, creditor) {
                    (Some(d), Some(c)) => acc.pairs.get(&pair_key(d, c)).copied().unwrap_or_default(),
                    _ => PairAcc::default(),
                };
                (acc.gross_count, acc.gross_value_minor, position(debtor), position(creditor), pair)
            }
            None => (0, 0, PositionAcc::default(), PositionAcc::default(), PairAcc::default()),
        };
        let gross_count = gross_count.checked_add(count).ok_or(NettingError::Overflow)?;
        let gross_value_minor = gross_value_minor.checked_add(amount_minor).ok_or(NettingError::Overflow)?;
        let debtor_pos = debtor_pos.paid(amount_minor, count)?;
        let creditor_pos = creditor_pos.received(amount_minor, count)?;

        // Commit.
        let debtor = debtor.unwrap_or_else(|| self.register(debtor_id));
        let creditor = creditor.unwrap_or_else(|| self.register(creditor_id));
        let ci = match currency {
            Some(ci) => ci,
            None => {
                self.currencies.push(CurrencyAcc {
                    currency: currency_code,
                    gross_count: 0,
                    gross_value_minor: 0,
                    positions: Vec::new(),
                    pairs: HashMap::default(),
                });
                self.currencies.len() - 1
            }
        };
        let pair = pair.with(debtor < creditor, amount_minor, count)?;
        let acc = &mut self.currencies[ci];
        let needed = (debtor.max(creditor) as usize) + 1;
        if acc.positions.len() < needed {
            acc.positions.resize(needed, PositionAcc::default());
        }
        acc.positions[debtor as usize] = debtor_pos;
        acc.positions[creditor as usize] = creditor_pos;
        acc.pairs.insert(pair_key(debtor, creditor), pair);
        acc.gross_count = gross_count;
        acc.gross_value_minor = gross_value_minor;
        self.obligation_count = obligation_count;
        debug_assert!(acc.pairs.len() <= self.ids.len() * (self.ids.len() - 1) / 2);
        Ok(())
    }

    fn register(&mut self, id: &ParticipantId) -> u32 {
        assert!(self.ids.len() < PARTICIPANTS_MAX, "participant limit checked before register");
        // PARTICIPANTS_MAX < u32::MAX, so the index always fits.
        let index = self.ids.len() as u32;
        self.ids.push(id.clone());
        self.index.insert(id.clone(), index);
        index
    }

    /// Number of obligations pushed so far.
    pub fn obligation_count(&self) -> u64 {
        self.obligation_count
    }

    /// Sizes of the internal state.
    pub fn size(&self) -> AggregatorSize {
        AggregatorSize {
            participants: self.ids.len(),
            currencies: self.currencies.len(),
            pair_cells: self.currencies.iter().map(|c| c.pairs.len()).sum(),
            position_cells: self.currencies.iter().map(|c| c.positions.len()).sum(),
            obligations: self.obligation_count,
        }
    }

    /// Computes the netting result of everything pushed so far (the aggregator is left as is,
    /// so a window can be inspected before cutoff).
    ///
    /// Output is deterministic regardless of push order: participants sorted by id, currencies
    /// by code, bilateral positions by `(a, b)` with `a < b`.
    pub fn finish(&self) -> Result<NettingResult, NettingError> {
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_by(|&x, &y| self.ids[x].cmp(&self.ids[y]));
        let mut rank = vec![0usize; self.ids.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old] = new;
        }
        let participants: Vec<ParticipantId> = order.iter().map(|&i| self.ids[i].clone()).collect();

        let mut currencies: Vec<&CurrencyAcc> = self.currencies.iter().collect();
        currencies.sort_by_key(|c| c.currency);
        let mut out = Vec::with_capacity(currencies.len());
        for acc in currencies {
            out.push(self.finish_currency(acc, &order, &rank, &participants)?);
        }
        Ok(NettingResult { participants, currencies: out })
    }

    fn finish_currency(
        &self,
        acc: &CurrencyAcc,
        order: &[usize],
        rank: &[usize],
        participants: &[ParticipantId],
    ) -> Result<CurrencyNetting, NettingError> {
        let (positions, multilateral_net_value_minor) =
            Self::multilateral_positions(acc, order, participants)?;
        let (bilateral, bilateral_net_value_minor) = Self::bilateral_positions(acc, rank, participants)?;
        // Netting never increases what must move: multilateral ≤ bilateral ≤ gross.
        assert!(multilateral_net_value_minor <= bilateral_net_value_minor);
        assert!(bilateral_net_value_minor <= acc.gross_value_minor);

        Ok(CurrencyNetting {
            currency: acc.currency,
            gross_count: acc.gross_count,
            gross_value_minor: acc.gross_value_minor,
            bilateral_net_value_minor,
            multilateral_net_value_minor,
            positions,
            bilateral,
        })
    }

    /// Each participant's position in `acc` (in sorted id order) and the multilateral net value
    /// (what the net receivers receive); checks that the nets sum to zero.
    fn multilateral_positions(
        acc: &CurrencyAcc,
        order: &[usize],
        participants: &[ParticipantId],
    ) -> Result<(Vec<ParticipantPosition>, u128), NettingError> {
        let mut positions = Vec::with_capacity(participants.len());
        let mut net_sum_minor: i128 = 0;
        let mut paid_sum_minor: u128 = 0;
        let mut received_sum_minor: u128 = 0;
        let mut multilateral_net_value_minor: u128 = 0;
        for (new, &old) in order.iter().enumerate() {
            let p = acc.positions.get(old).copied().unwrap_or_default();
            let net_minor = to_i128(p.received_minor)?
                .checked_sub(to_i128(p.paid_minor)?)
                .ok_or(NettingError::Overflow)?;
            net_sum_minor = net_sum_minor.checked_add(net_minor).ok_or(NettingError::Overflow)?;
            paid_sum_minor = paid_sum_minor.checked_add(p.paid_minor).ok_or(NettingError::Overflow)?;
            received_sum_minor =
                received_sum_minor.checked_add(p.received_minor).ok_or(NettingError::Overflow)?;
            if net_minor > 0 {
                multilateral_net_value_minor = multilateral_net_value_minor
                    .checked_add(net_minor.unsigned_abs())
                    .ok_or(NettingError::Overflow)?;
            }
            positions.push(ParticipantPosition {
                participant: participants[new].clone(),
                paid_minor: p.paid_minor,
                received_minor: p.received_minor,
                paid_count: p.paid_count,
                received_count: p.received_count,
                net_minor,
            });
        }
        // Every obligation is paid once and received once: multilateral nets sum to zero.
        assert_eq!(net_sum_minor, 0, "multilateral nets of {} must sum to zero", acc.currency);
        assert_eq!(paid_sum_minor, acc.gross_value_minor);
        assert_eq!(received_sum_minor, acc.gross_value_minor);
        Ok((positions, multilateral_net_value_minor))
    }

    /// Each pair's bilateral position in `acc` (oriented and sorted by id) and the bilateral net
    /// value; checks that the pairs add up to the gross.
    fn bilateral_positions(
        acc: &CurrencyAcc,
        rank: &[usize],
        participants: &[ParticipantId],
    ) -> Result<(Vec<BilateralPosition>, u128), NettingError> {
        let mut bilateral = Vec::with_capacity(acc.pairs.len());
        let mut bilateral_net_value_minor: u128 = 0;
        let mut pair_gross_minor: u128 = 0;
        let mut pair_count: u64 = 0;
        for (&key, cell) in &acc.pairs {
            let (low, high) = ((key >> 32) as usize, (key & 0xFFFF_FFFF) as usize);
            let (low_rank, high_rank) = (rank[low], rank[high]);
            // Orient the pair by sorted id: `a` is the participant whose id sorts first.
            let (a, b, a_to_b_minor, b_to_a_minor, a_to_b_count, b_to_a_count) = if low_rank < high_rank {
                (
                    low_rank,
                    high_rank,
                    cell.low_to_high_minor,
                    cell.high_to_low_minor,
                    cell.low_to_high_count,
                    cell.high_to_low_count,
                )
            } else {
                (
                    high_rank,
                    low_rank,
                    cell.high_to_low_minor,
                    cell.low_to_high_minor,
                    cell.high_to_low_count,
                    cell.low_to_high_count,
                )
            };
            let net_a_to_b_minor =
                to_i128(a_to_b_minor)?.checked_sub(to_i128(b_to_a_minor)?).ok_or(NettingError::Overflow)?;
            bilateral_net_value_minor = bilateral_net_value_minor
                .checked_add(net_a_to_b_minor.unsigned_abs())
                .ok_or(NettingError::Overflow)?;
            pair_gross_minor = pair_gross_minor
                .checked_add(a_to_b_minor)
                .and_then(|v| v.checked_add(b_to_a_minor))
                .ok_or(NettingError::Overflow)?;
            pair_count = pair_count
                .checked_add(a_to_b_count)
                .and_then(|v| v.checked_add(b_to_a_count))
                .ok_or(NettingError::Overflow)?;
            bilateral.push(BilateralPosition {
                a: participants[a].clone(),
                b: participants[b].clone(),
                a_to_b_minor,
                b_to_a_minor,
                a_to_b_count,
                b_to_a_count,
                net_a_to_b_minor,
            });
        }
        bilateral.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
        assert_eq!(pair_gross_minor, acc.gross_value_minor);
        assert_eq!(pair_count, acc.gross_count);
        Ok((bilateral, bilateral_net_value_minor))
    }
}

fn pair_key(x: u32, y: u32) -> u64 {
    let (low, high) = if x < y { (x, y) } else { (y, x) };
    (u64::from(low) << 32) | u64::from(high)
}

fn to_i128(value: u128) -> Result<i128, NettingError> {
    i128::try_from(value).map_err(|_| NettingError::Overflow)
}

/// The netting of one window: per currency, gross, bilateral and multilateral figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NettingResult {
    /// Every participant seen, sorted by id.
    pub participants: Vec<ParticipantId>,
    /// One entry per currency seen, sorted by code.
    pub currencies: Vec<CurrencyNetting>,
}

impl NettingResult {
    pub fn currency(&self, currency: CurrencyCode) -> Option<&CurrencyNetting> {
        self.currencies.iter().find(|c| c.currency == currency)
    }

    /// A participant's multilateral net in a currency (positive: it receives at settlement).
    /// Zero for a participant or currency not in the window.
    pub fn net_minor(&self, participant: &ParticipantId, currency: CurrencyCode) -> i128 {
        self.currency(currency).and_then(|c| c.position(participant)).map_or(0, |p| p.net_minor)
    }

    /// Fewest-payment settlement plans, one per currency (see [`settle::plan_payments`]).
    pub fn plan_payments(&self) -> Result<Vec<SettlementPlan>, NettingError> {
        self.currencies.iter().map(CurrencyNetting::plan_payments).collect()
    }
}

/// Netting figures for one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyNetting {
    pub currency: CurrencyCode,
    /// Number of obligations.
    pub gross_count: u64,
    /// Sum of all obligations.
    pub gross_value_minor: u128,
    /// Sum over pairs of |bilateral net|: what would move under bilateral netting.
    pub bilateral_net_value_minor: u128,
    /// Sum of positive multilateral nets (= sum of |negative| nets): what must move under
    /// multilateral netting.
    pub multilateral_net_value_minor: u128,
    /// One per participant of the run, in [`NettingResult::participants`] order (zero rows
    /// included).
    pub positions: Vec<ParticipantPosition>,
    /// One per unordered pair that has at least one obligation in this currency, sorted.
    pub bilateral: Vec<BilateralPosition>,
}

impl CurrencyNetting {
    pub fn position(&self, participant: &ParticipantId) -> Option<&ParticipantPosition> {
        self.positions.binary_search_by(|p| p.participant.cmp(participant)).ok().map(|i| &self.positions[i])
    }

    /// Multilateral nets in [`Self::positions`] order.
    pub fn nets_minor(&self) -> Vec<i128> {
        self.positions.iter().map(|p| p.net_minor).collect()
    }

    /// Fewest-payment settlement plan for this currency (exact for up to
    /// [`crate::EXACT_SOLVER_PARTICIPANTS_MAX`] non-zero positions, greedy above).
    pub fn plan_payments(&self) -> Result<SettlementPlan, NettingError> {
        let plan = settle::plan_payments(&self.nets_minor())?;
        let payments = plan
            .payments
            .iter()
            .map(|p| settle::Payment {
                payer: self.positions[p.payer_index].participant.clone(),
                payee: self.positions[p.payee_index].participant.clone(),
                currency: self.currency,
                amount_minor: p.amount_minor,
            })
            .collect();
        Ok(SettlementPlan { currency: self.currency, method: plan.method, payments })
    }
}

/// One participant's figures in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantPosition {
    pub participant: ParticipantId,
    /// Sum of obligations where it is the debtor.
    pub paid_minor: u128,
    /// Sum of obligations where it is the creditor.
    pub received_minor: u128,
    pub paid_count: u64,
    pub received_count: u64,
    /// `received_minor − paid_minor`: positive means it receives at settlement.
    pub net_minor: i128,
}

/// Gross flows and bilateral net between two participants (`a` sorts before `b`) in one
/// currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BilateralPosition {
    pub a: ParticipantId,
    pub b: ParticipantId,
    pub a_to_b_minor: u128,
    pub b_to_a_minor: u128,
    pub a_to_b_count: u64,
    pub b_to_a_count: u64,
    /// `a_to_b_minor − b_to_a_minor`: positive means `a` pays `b` under bilateral netting.
    pub net_a_to_b_minor: i128,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> ParticipantId {
        ParticipantId::new(text).unwrap()
    }

    fn ob(debtor: &str, creditor: &str, currency: CurrencyCode, amount_minor: u64) -> Obligation {
        Obligation::new(id(debtor), id(creditor), currency, amount_minor).unwrap()
    }

    #[test]
    fn triangle_nets_to_nothing_multilaterally() {
        let mut agg = NettingAggregator::new();
        for o in [
            ob("A", "B", CurrencyCode::USD, 100),
            ob("B", "C", CurrencyCode::USD, 100),
            ob("C", "A", CurrencyCode::USD, 100),
        ] {
            agg.push(&o).unwrap();
        }
        let result = agg.finish().unwrap();
        let usd = result.currency(CurrencyCode::USD).unwrap();
        assert_eq!(usd.gross_count, 3);
        assert_eq!(usd.gross_value_minor, 300);
        assert_eq!(usd.bilateral_net_value_minor, 300);
        assert_eq!(usd.multilateral_net_value_minor, 0);
        assert!(usd.positions.iter().all(|p| p.net_minor == 0));
        assert!(usd.plan_payments().unwrap().payments.is_empty());
    }

    #[test]
    fn bilateral_and_multilateral_per_currency() {
        let mut agg = NettingAggregator::new();
        for o in [
            ob("B", "A", CurrencyCode::USD, 700),
            ob("A", "B", CurrencyCode::USD, 500),
            ob("A", "C", CurrencyCode::USD, 50),
            ob("C", "A", CurrencyCode::MXN, 9_000),
        ] {
            agg.push(&o).unwrap();
        }
        let result = agg.finish().unwrap();
        assert_eq!(result.participants, vec![id("A"), id("B"), id("C")]);
        let usd = result.currency(CurrencyCode::USD).unwrap();
        let ab = &usd.bilateral[0];
        assert_eq!((ab.a.as_str(), ab.b.as_str()), ("A", "B"));
        assert_eq!((ab.a_to_b_minor, ab.b_to_a_minor, ab.net_a_to_b_minor), (500, 700, -200));
        assert_eq!((ab.a_to_b_count, ab.b_to_a_count), (1, 1));
        assert_eq!(usd.bilateral_net_value_minor, 250);
        assert_eq!(result.net_minor(&id("A"), CurrencyCode::USD), 150);
        assert_eq!(result.net_minor(&id("B"), CurrencyCode::USD), -200);
        assert_eq!(result.net_minor(&id("C"), CurrencyCode::USD), 50);
        assert_eq!(usd.multilateral_net_value_minor, 200);
        assert_eq!(result.net_minor(&id("A"), CurrencyCode::MXN), 9_000);
        assert_eq!(result.net_minor(&id("B"), CurrencyCode::MXN), 0);
        assert_eq!(result.net_minor(&id("Z"), CurrencyCode::CAD), 0);
        let mxn = result.currency(CurrencyCode::MXN).unwrap();
        assert_eq!(mxn.positions.len(), 3, "zero rows are included");
    }

    #[test]
    fn output_is_independent_of_push_order() {
        let obligations = [
            ob("Z", "A", CurrencyCode::USD, 1),
            ob("M", "Z", CurrencyCode::MXN, 2),
            ob("A", "M", CurrencyCode::USD, 3),
            ob("A", "Z", CurrencyCode::USD, 4),
        ];
        let mut forward = NettingAggregator::new();
        let mut backward = NettingAggregator::new();
        for o in &obligations {
            forward.push(o).unwrap();
        }
        for o in obligations.iter().rev() {
            backward.push(o).unwrap();
        }
        assert_eq!(forward.finish().unwrap(), backward.finish().unwrap());
    }

    #[test]
    fn limits_are_enforced_atomically() {
        let mut agg = NettingAggregator::new();
        for i in 0..PARTICIPANTS_MAX - 1 {
            agg.push(&ob(&format!("P{i}"), "HUB", CurrencyCode::USD, 1)).unwrap();
        }
        assert_eq!(agg.size().participants, PARTICIPANTS_MAX);
        let before = agg.finish().unwrap();
        assert_eq!(
            agg.push(&ob("NEW", "HUB", CurrencyCode::USD, 1)),
            Err(NettingError::TooManyParticipants { max: PARTICIPANTS_MAX })
        );
        assert_eq!(agg.finish().unwrap(), before);

        let mut agg = NettingAggregator::new();
        let codes = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III"];
        for code in &codes[..CURRENCIES_MAX] {
            agg.push(&ob("A", "B", CurrencyCode::parse(code).unwrap(), 1)).unwrap();
        }
        assert_eq!(
            agg.push(&ob("A", "B", CurrencyCode::parse(codes[CURRENCIES_MAX]).unwrap(), 1)),
            Err(NettingError::TooManyCurrencies { max: CURRENCIES_MAX })
        );
        assert_eq!(agg.size().currencies, CURRENCIES_MAX);
    }

    #[test]
    fn invalid_obligations_are_rejected_by_push() {
        let mut agg = NettingAggregator::new();
        let mut bad = ob("A", "B", CurrencyCode::USD, 1);
        bad.amount_minor = 0;
        assert_eq!(agg.push(&bad), Err(NettingError::ZeroAmount));
        bad.amount_minor = u64::MAX;
        assert!(matches!(agg.push(&bad), Err(NettingError::AmountTooLarge { .. })));
        bad.amount_minor = 1;
        bad.creditor = id("A");
        assert!(matches!(agg.push(&bad), Err(NettingError::SelfObligation(_))));
        assert_eq!(agg.size().participants, 0);
        assert_eq!(agg.obligation_count(), 0);
    }

    #[test]
    fn aggregated_pushes_equal_single_pushes() {
        let mut single = NettingAggregator::new();
        let mut aggregated = NettingAggregator::new();
        for amount in [5, 7, 11] {
            single.push(&ob("A", "B", CurrencyCode::USD, amount)).unwrap();
        }
        single.push(&ob("B", "A", CurrencyCode::USD, 4)).unwrap();
        aggregated.push_aggregate(&id("A"), &id("B"), CurrencyCode::USD, 3, 23).unwrap();
        aggregated.push_aggregate(&id("B"), &id("A"), CurrencyCode::USD, 1, 4).unwrap();
        assert_eq!(single.finish().unwrap(), aggregated.finish().unwrap());
        assert_eq!(aggregated.obligation_count(), 4);
        assert_eq!(
            aggregated.push_aggregate(&id("A"), &id("B"), CurrencyCode::USD, 0, 1),
            Err(NettingError::ZeroAmount)
        );
        assert!(aggregated.push_aggregate(&id("A"), &id("B"), CurrencyCode::USD, 3, 2).is_err());
        assert!(aggregated.push_aggregate(&id("A"), &id("A"), CurrencyCode::USD, 1, 2).is_err());
        assert_eq!(aggregated.obligation_count(), 4);
    }

    #[test]
    fn largest_amounts_do_not_overflow() {
        let mut agg = NettingAggregator::new();
        let o = ob("A", "B", CurrencyCode::USD, puente_money::AMOUNT_MAX_MINOR);
        for _ in 0..1_000 {
            agg.push(&o).unwrap();
        }
        let result = agg.finish().unwrap();
        let usd = result.currency(CurrencyCode::USD).unwrap();
        assert_eq!(usd.gross_value_minor, 1_000 * u128::from(puente_money::AMOUNT_MAX_MINOR));
        assert_eq!(result.net_minor(&id("A"), CurrencyCode::USD), -(usd.gross_value_minor as i128));
    }
}
