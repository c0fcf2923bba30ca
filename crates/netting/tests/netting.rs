//! End-to-end tests of the public API: aggregation against a naive model, settlement plans,
//! bounded memory, and the report on a simulated corridor day.

use std::collections::BTreeMap;
use std::str::FromStr;

use proptest::prelude::*;
use puente_money::CurrencyCode;
use puente_netting::sim::{CorridorMix, UniformWorkload, corridor_day};
use puente_netting::{
    FeeModel, NettingAggregator, NettingResult, Obligation, ParticipantId, ReportInput, SolverMethod,
    build_report, check_payments_reproduce, plan_payments,
};
use rust_decimal::Decimal;

const CURRENCIES: [CurrencyCode; 2] = [CurrencyCode::USD, CurrencyCode::MXN];

fn id(i: usize) -> ParticipantId {
    ParticipantId::new(&format!("P{i:02}")).unwrap()
}

/// Random obligations among up to `max_participants` parties in USD and MXN.
fn obligations(max_participants: usize, max_len: usize) -> impl Strategy<Value = Vec<Obligation>> {
    prop::collection::vec(
        (0..max_participants, 1..max_participants, 0..2usize, 1u64..1_000_000_000),
        0..max_len,
    )
    .prop_map(move |rows| {
        rows.into_iter()
            .map(|(d, offset, cur, amount)| {
                let c = (d + offset) % max_participants;
                Obligation::new(id(d), id(c), CURRENCIES[cur], amount).unwrap()
            })
            .collect()
    })
}

fn net(obligations: &[Obligation]) -> NettingResult {
    let mut aggregator = NettingAggregator::new();
    for o in obligations {
        aggregator.push(o).unwrap();
    }
    aggregator.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn positions_match_a_naive_model(obligations in obligations(30, 300)) {
        let result = net(&obligations);
        // Naive model: received − paid per (participant, currency); gross per currency;
        // directed sums per pair.
        let mut naive_net: BTreeMap<(ParticipantId, CurrencyCode), i128> = BTreeMap::new();
        let mut naive_gross: BTreeMap<CurrencyCode, (u64, u128)> = BTreeMap::new();
        let mut directed: BTreeMap<(ParticipantId, ParticipantId, CurrencyCode), u128> = BTreeMap::new();
        for o in &obligations {
            *naive_net.entry((o.creditor.clone(), o.currency)).or_default() += i128::from(o.amount_minor);
            *naive_net.entry((o.debtor.clone(), o.currency)).or_default() -= i128::from(o.amount_minor);
            let g = naive_gross.entry(o.currency).or_default();
            g.0 += 1;
            g.1 += u128::from(o.amount_minor);
            let key = (o.debtor.clone(), o.creditor.clone(), o.currency);
            *directed.entry(key).or_default() += u128::from(o.amount_minor);
        }
        for c in &result.currencies {
            // Nets sum to zero per currency.
            prop_assert_eq!(c.positions.iter().map(|p| p.net_minor).sum::<i128>(), 0);
            prop_assert_eq!((c.gross_count, c.gross_value_minor), naive_gross[&c.currency]);
            for p in &c.positions {
                // Each participant's net equals received minus paid.
                prop_assert_eq!(p.net_minor, p.received_minor as i128 - p.paid_minor as i128);
                let expected = naive_net.get(&(p.participant.clone(), c.currency)).copied().unwrap_or(0);
                prop_assert_eq!(p.net_minor, expected);
            }
            for b in &c.bilateral {
                prop_assert!(b.a < b.b);
                let ab = directed.get(&(b.a.clone(), b.b.clone(), c.currency)).copied().unwrap_or(0);
                let ba = directed.get(&(b.b.clone(), b.a.clone(), c.currency)).copied().unwrap_or(0);
                prop_assert_eq!((b.a_to_b_minor, b.b_to_a_minor), (ab, ba));
                prop_assert_eq!(b.net_a_to_b_minor, ab as i128 - ba as i128);
            }
            prop_assert!(c.multilateral_net_value_minor <= c.bilateral_net_value_minor);
            prop_assert!(c.bilateral_net_value_minor <= c.gross_value_minor);
        }
        let counted: u64 = result.currencies.iter().map(|c| c.gross_count).sum();
        prop_assert_eq!(counted, obligations.len() as u64);
    }

    #[test]
    fn plans_reproduce_nets_with_at_most_n_minus_1_payments(obligations in obligations(40, 400)) {
        let result = net(&obligations);
        for c in &result.currencies {
            let nets = c.nets_minor();
            let n = nets.iter().filter(|&&v| v != 0).count();
            let plan = plan_payments(&nets).unwrap();
            check_payments_reproduce(&nets, &plan.payments).unwrap();
            prop_assert!(plan.payments.len() <= n.saturating_sub(1));
            let expected = if n <= 12 { SolverMethod::Exact } else { SolverMethod::Greedy };
            prop_assert_eq!(plan.method, expected);
            // The participant-level plan moves exactly the multilateral net value.
            let named = c.plan_payments().unwrap();
            prop_assert_eq!(named.value_minor(), c.multilateral_net_value_minor);
            let mut balance: BTreeMap<&ParticipantId, i128> = BTreeMap::new();
            for p in &named.payments {
                *balance.entry(&p.payee).or_default() += p.amount_minor as i128;
                *balance.entry(&p.payer).or_default() -= p.amount_minor as i128;
            }
            for p in &c.positions {
                prop_assert_eq!(balance.get(&p.participant).copied().unwrap_or(0), p.net_minor);
            }
        }
    }

    #[test]
    fn push_order_does_not_matter(mut obligations in obligations(10, 60)) {
        let forward = net(&obligations);
        obligations.reverse();
        prop_assert_eq!(net(&obligations), forward);
    }
}

#[test]
fn aggregator_memory_is_independent_of_obligation_count() {
    let participants = 12;
    let mut workload = UniformWorkload::new(3, participants).unwrap();
    let mut obligation = workload.scratch();
    let mut aggregator = NettingAggregator::new();
    let pairs_max = participants * (participants - 1) / 2 * CURRENCIES.len();
    let mut sizes = Vec::new();
    for _ in 0..5 {
        for _ in 0..20_000 {
            workload.fill(&mut obligation);
            aggregator.push(&obligation).unwrap();
        }
        let size = aggregator.size();
        assert!(size.pair_cells <= pairs_max);
        assert!(size.position_cells <= participants * CURRENCIES.len());
        sizes.push((size.participants, size.currencies, size.pair_cells, size.position_cells));
    }
    assert_eq!(aggregator.obligation_count(), 100_000);
    // Saturated after the first 20,000: five times the obligations, same state.
    assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    assert_eq!(sizes[0].2, pairs_max);
}

#[test]
fn corridor_day_report_end_to_end() {
    let (day, countries) = corridor_day(11, 2_000, &CorridorMix::default()).unwrap();
    let result = net(&day);
    let fees = FeeModel::default();
    let report = build_report(&ReportInput {
        result: &result,
        fees: &fees,
        countries: &countries,
        rate_mxn_per_usd: Decimal::from_str("18.25").unwrap(),
        house: None,
    })
    .unwrap();
    let t = &report.totals;
    assert_eq!(t.gross_count, 2_000);
    assert!(t.multilateral_net_value_usd_minor <= t.bilateral_net_value_usd_minor);
    assert!(t.bilateral_net_value_usd_minor <= t.gross_value_usd_minor);
    // 2,000 international wires versus at most 19 domestic payments per currency.
    assert!(t.payments_count <= 2 * 19);
    assert!(t.bank_fee_saving_percent.unwrap() > Decimal::from(99));
    assert_eq!(report.fx_cover, None);
    let allocated: u128 = report.participants.iter().map(|p| p.actual_bank_fees.usd_minor).sum();
    assert_eq!(allocated, t.actual_bank_fees.usd_minor);
    let json = report.to_json().unwrap();
    assert_eq!(serde_json::from_str::<puente_netting::WindowReport>(&json).unwrap(), report);
    let csv = report.to_csv();
    assert_eq!(csv.lines().filter(|l| l.starts_with("payment,")).count() as u64, t.payments_count);
}

#[test]
fn netting_result_round_trips_through_json() {
    let (day, _) = corridor_day(2, 200, &CorridorMix::default()).unwrap();
    let result = net(&day);
    let json = serde_json::to_string(&result).unwrap();
    assert_eq!(serde_json::from_str::<NettingResult>(&json).unwrap(), result);
    // Obligations deserialize with validation of ids and currency codes.
    let o: Obligation =
        serde_json::from_str(r#"{"debtor":"US01","creditor":"MX01","currency":"USD","amount_minor":30000}"#)
            .unwrap();
    assert_eq!(o.amount_minor, 30_000);
    assert!(
        serde_json::from_str::<Obligation>(
            r#"{"debtor":"US 01","creditor":"MX01","currency":"USD","amount_minor":1}"#
        )
        .is_err()
    );
}
