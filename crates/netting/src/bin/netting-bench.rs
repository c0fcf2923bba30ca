//! Throughput, memory and efficiency numbers for the netting core.
//!
//! Usage: `netting-bench [N ...]` (default: 1000000 10000000). For each N, nets N obligations
//! among 200 participants in USD and MXN (SplitMix64, seed 42, log-normal-ish amounts), plans
//! the settlement payments and prints elapsed milliseconds and peak RSS (VmHWM from
//! /proc/self/status; this I/O lives here, not in the library). Then simulates a corridor day of
//! 10,000 transfers among 20 participants and prints the netting efficiency and fee savings.

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use puente_netting::sim::{CorridorMix, UniformWorkload, corridor_day};
use puente_netting::{FeeModel, Rail};
use puente_netting::{NettingAggregator, NettingError, ReportInput, WindowReport, build_report};
use rust_decimal::Decimal;

const PARTICIPANTS: usize = 200;
const SEED: u64 = 42;

fn main() -> ExitCode {
    let mut counts: Vec<u64> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.replace('_', "").parse::<u64>() {
            Ok(n) if n > 0 => counts.push(n),
            _ => {
                eprintln!("usage: netting-bench [N ...]  (N: number of obligations, > 0)");
                return ExitCode::from(2);
            }
        }
    }
    if counts.is_empty() {
        counts = vec![1_000_000, 10_000_000];
    }
    match run(&counts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("netting-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(counts: &[u64]) -> Result<(), NettingError> {
    println!("peak RSS before netting: {}", peak_rss());
    for &count in counts {
        throughput(count)?;
    }
    println!();
    let rate = Decimal::from_str("18.50").map_err(|e| NettingError::InvalidRate(e.to_string()))?;
    println!("simulated corridor day (10,000 transfers, 20 participants, rate {rate} MXN/USD):");
    let realistic = CorridorMix::default();
    corridor("realistic mix (85% remittances, trade 60% south / 40% north)", &realistic, rate)?;
    println!("  sensitivity: share of SME trade payments flowing south (the rest flows north)");
    for south_permille in [600, 500, 450, 400, 375, 350, 300] {
        let mix = CorridorMix { trade_southbound_permille: south_permille, ..realistic };
        let report = window_report(&mix, rate, &FeeModel::default())?;
        let t = &report.totals;
        println!(
            "    trade {:>5}% south: multilateral net = {:>4} bps of gross (USD {:>5} bps, MXN {:>5} bps){}",
            // Display only: permille as a percentage with one decimal (integer arithmetic).
            DisplayPermille(south_permille),
            t.multilateral_net_to_gross_bps,
            bps_of(&report, "USD"),
            bps_of(&report, "MXN"),
            if t.multilateral_net_to_gross_bps <= 500 { "  <= 5% target met" } else { "" },
        );
    }
    Ok(())
}

fn throughput(count: u64) -> Result<(), NettingError> {
    let mut workload = UniformWorkload::new(SEED, PARTICIPANTS)?;
    let mut obligation = workload.scratch();
    let mut aggregator = NettingAggregator::new();
    let start = Instant::now();
    for _ in 0..count {
        workload.fill(&mut obligation);
        aggregator.push(&obligation)?;
    }
    let pushed = start.elapsed();
    let result = aggregator.finish()?;
    let plans = result.plan_payments()?;
    let total = start.elapsed();
    let size = aggregator.size();
    let payments: usize = plans.iter().map(|p| p.payments.len()).sum();
    println!(
        "N = {count:>11}: {:>7} ms total ({:>7} ms push, {:>4} ms finish + plan), {:>4} ns/obligation; \
         {} participants, {} pair cells, {} payments; peak RSS {}",
        total.as_millis(),
        pushed.as_millis(),
        (total - pushed).as_millis(),
        // Display only: integer nanoseconds per obligation.
        total.as_nanos() / u128::from(count),
        size.participants,
        size.pair_cells,
        payments,
        peak_rss(),
    );
    Ok(())
}

fn window_report(mix: &CorridorMix, rate: Decimal, fees: &FeeModel) -> Result<WindowReport, NettingError> {
    let (day, countries) = corridor_day(SEED, 10_000, mix)?;
    let mut aggregator = NettingAggregator::new();
    for obligation in &day {
        aggregator.push(obligation)?;
    }
    let result = aggregator.finish()?;
    build_report(&ReportInput {
        result: &result,
        fees,
        countries: &countries,
        rate_mxn_per_usd: rate,
        house: None,
    })
}

fn corridor(label: &str, mix: &CorridorMix, rate: Decimal) -> Result<(), NettingError> {
    let fees = FeeModel::default();
    let report = window_report(mix, rate, &fees)?;
    print_summary(label, &report);
    let ach = FeeModel { usd_settlement_rail: Rail::AchDirectoMexico, ..fees };
    let report = window_report(mix, rate, &ach)?;
    println!(
        "    with USD on ACH/Directo a México instead of Fedwire: actual bank fees {}",
        usd(report.totals.actual_bank_fees_usd_minor as i128),
    );
    Ok(())
}

fn bps_of(report: &WindowReport, code: &str) -> String {
    report
        .currencies
        .iter()
        .find(|c| c.currency.as_str() == code)
        .map_or_else(|| "-".to_owned(), |c| c.multilateral_net_to_gross_bps.to_string())
}

struct DisplayPermille(u64);

impl std::fmt::Display for DisplayPermille {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = format!("{}.{}", self.0 / 10, self.0 % 10);
        f.pad(&text)
    }
}

fn print_summary(label: &str, report: &WindowReport) {
    println!("  {label}");
    for c in &report.currencies {
        println!(
            "    {}: {} obligations, gross {} minor; bilateral net {} ({} bps of gross); \
             multilateral net {} ({} bps of gross, efficiency {} bps); {} payments ({:?})",
            c.currency,
            c.gross_count,
            c.gross_value_minor,
            c.bilateral_net_value_minor,
            10_000 - c.bilateral_efficiency_bps,
            c.multilateral_net_value_minor,
            c.multilateral_net_to_gross_bps,
            c.multilateral_efficiency_bps,
            c.payments_count,
            c.solver,
        );
    }
    let t = &report.totals;
    println!(
        "    total (USD equivalent): gross {}, multilateral net {} = {} bps of gross \
         (target <= 500 bps: {}); efficiency {} bps",
        usd(t.gross_value_usd_minor as i128),
        usd(t.multilateral_net_value_usd_minor as i128),
        t.multilateral_net_to_gross_bps,
        if t.multilateral_net_to_gross_bps <= 500 { "met" } else { "NOT met" },
        t.multilateral_efficiency_bps,
    );
    println!(
        "    bank fees: gross {} vs actual {} -> saving {} ({}%); FX margin gross {} vs actual {}; \
         total cost saving {} ({}%)",
        usd(t.gross_bank_fees_usd_minor as i128),
        usd(t.actual_bank_fees_usd_minor as i128),
        usd(t.bank_fee_saving_usd_minor),
        opt(t.bank_fee_saving_percent),
        usd(t.gross_fx_margin_usd_minor as i128),
        usd(t.actual_fx_margin_usd_minor as i128),
        usd(t.total_saving_usd_minor),
        opt(t.total_saving_percent),
    );
}

fn usd(minor: i128) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}USD {}.{:02}", abs / 100, abs % 100)
}

fn opt(value: Option<Decimal>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

/// Peak resident set size (VmHWM) of this process, as reported by Linux.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .map(|line| line.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unavailable".to_owned())
}
