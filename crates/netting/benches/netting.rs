//! Criterion benchmarks: netting 1M obligations among 20 and 200 participants (push + finish +
//! plan), and the fewest-payments solvers. Sample counts are kept small: the machine is shared.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use puente_netting::sim::{SplitMix64, UniformWorkload};
use puente_netting::{NettingAggregator, exact_min_payments, greedy_payments};

const OBLIGATIONS: u64 = 1_000_000;

fn net(participants: usize) -> usize {
    let mut workload = UniformWorkload::new(42, participants).expect("valid participant count");
    let mut obligation = workload.scratch();
    let mut aggregator = NettingAggregator::new();
    for _ in 0..OBLIGATIONS {
        workload.fill(&mut obligation);
        aggregator.push(&obligation).expect("generated obligations are valid");
    }
    let result = aggregator.finish().expect("bounded run");
    let plans = result.plan_payments().expect("nets sum to zero");
    plans.iter().map(|p| p.payments.len()).sum()
}

fn netting(c: &mut Criterion) {
    let mut group = c.benchmark_group("net_1m_obligations");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(OBLIGATIONS));
    for participants in [20usize, 200] {
        group.bench_with_input(
            BenchmarkId::from_parameter(participants),
            &participants,
            |b, &participants| b.iter(|| black_box(net(participants))),
        );
    }
    group.finish();
}

fn zero_sum(seed: u64, n: usize) -> Vec<i128> {
    let mut rng = SplitMix64::new(seed);
    let mut nets: Vec<i128> = (0..n - 1).map(|_| rng.below(2_000_001) as i128 - 1_000_000).collect();
    let sum: i128 = nets.iter().sum();
    nets.push(-sum);
    nets
}

fn solvers(c: &mut Criterion) {
    let mut group = c.benchmark_group("solvers");
    group.sample_size(20);
    let twelve = zero_sum(1, 12);
    group.bench_function("exact_12", |b| b.iter(|| exact_min_payments(black_box(&twelve))));
    let thousand = zero_sum(2, 1_000);
    group.bench_function("greedy_1000", |b| b.iter(|| greedy_payments(black_box(&thousand))));
    group.finish();
}

criterion_group!(benches, netting, solvers);
criterion_main!(benches);
