//! Integration tests of the public API, including a back-test over every ECB business day
//! since 2008.

use std::path::PathBuf;

use puente_fx::*;
use puente_money::{Currency, CurrencyCode, CurrencyTable};
use rust_decimal::Decimal;

const USD_MXN: Pair = Pair { base: CurrencyCode::USD, quote: CurrencyCode::MXN };

fn ecb_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/ecb/eurofxref-hist-usd-mxn-cad.csv")
}

fn load_ecb() -> Vec<EcbDay> {
    let path = ecb_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "the ECB history file is required for the back-test but could not be read at {}: {error}. \
             It is versioned with the code under tests/data/ecb/ (see tests/data/README.md).",
            path.display()
        )
    });
    parse_ecb_csv(&text).expect("ECB file parses")
}

fn exact_value(amount_minor: u64, scale: u32, rate: Decimal) -> Decimal {
    Decimal::from_i128_with_scale(amount_minor as i128, scale).checked_mul(rate).unwrap()
}

#[test]
fn backtest_remittance_usd_200_over_ecb_history() {
    let days = load_ecb();
    let mut config = PricingConfig::example_usd_mxn();
    config.max_rate_age_ms = 24 * 60 * 60 * 1_000;
    let (spread_min, spread_max) = {
        let tiers = &config.segments.remittance.spread_tiers;
        (tiers.iter().map(|t| t.spread_bps).min().unwrap(), tiers.iter().map(|t| t.spread_bps).max().unwrap())
    };
    let pricer = Pricer::new(config, CurrencyTable::default()).unwrap();
    let signer = QuoteSigner::from_pkcs8(&QuoteSigner::generate_pkcs8().unwrap()).unwrap();
    let public_key = signer.public_key_bytes();

    let mut count = 0u64;
    let mut margin_sum_bps = Decimal::ZERO;
    let mut all_in_sum_bps = Decimal::ZERO;
    let mut exposure = Exposure::new();
    for day in days.iter().filter(|d| d.date.as_str() >= "2008-01-01") {
        let Some(mid) = day.usd_mxn else { continue };
        let as_of_ms = day.date_ms().unwrap() + 15 * 60 * 60 * 1_000; // ECB publishes ~16:00 CET
        let now_ms = as_of_ms + 60 * 60 * 1_000;
        let mut book = RateBook::new();
        book.set(USD_MXN, mid, as_of_ms, "ecb").unwrap();
        let request = QuoteRequest {
            participant: "backtest".into(),
            segment: Segment::Remittance,
            sell: CurrencyCode::USD,
            buy: CurrencyCode::MXN,
            fixed: FixedSide::Send(20_000),
        };
        let id = [(count % 251) as u8; 16];
        let quote = pricer.quote(&book, &request, id, now_ms).unwrap();

        // Invariants, exactly.
        assert_eq!(quote.mid_rate, mid, "{}", day.date);
        assert_eq!(quote.send_amount_minor, 20_000);
        assert_eq!(quote.total_debit_minor, 20_000 + quote.fee_total_minor + quote.tax_minor);
        let value = exact_value(quote.send_amount_minor, 2, quote.customer_rate);
        let converted = Decimal::new(quote.converted_amount_minor as i64, 2);
        assert!(converted <= value && value - converted < Decimal::new(1, 2), "{}: rounding", day.date);
        assert!(quote.customer_rate < quote.mid_rate);
        check_executable(&quote, now_ms).unwrap();
        assert!(matches!(check_executable(&quote, quote.expires_at_ms), Err(FxError::QuoteExpired { .. })));

        // Signed and verifiable offline; the canonical bytes round-trip.
        let signature = signer.sign(&quote).unwrap();
        verify_quote(&public_key, &quote, &signature).unwrap();
        assert_eq!(Quote::from_canonical_bytes(&quote.canonical_bytes()).unwrap(), quote);

        // Disclosure adds up.
        let disclosure =
            Disclosure::from_quote(&quote, pricer.currencies(), puente_fx::CANCELLATION_WINDOW_MS).unwrap();
        assert_eq!(disclosure.total_minor, disclosure.transfer_amount_minor + disclosure.transfer_fees_minor);
        assert_eq!(disclosure.received_minor, quote.receive_amount_minor);

        // Receive-fixed for the same amount gives back the same send amount (USD→MXN: one
        // cent is worth more than one centavo).
        let back = pricer
            .quote(
                &book,
                &QuoteRequest { fixed: FixedSide::Receive(quote.receive_amount_minor), ..request.clone() },
                id,
                now_ms,
            )
            .unwrap();
        assert_eq!(back.send_amount_minor, quote.send_amount_minor, "{}", day.date);

        // Margin over mid, from the amounts: 1 − received / (send × mid).
        let at_mid = exact_value(quote.send_amount_minor, 2, mid);
        let margin_bps = (Decimal::ONE - converted / at_mid) * Decimal::from(10_000);
        assert!(margin_bps >= Decimal::from(quote.spread_bps), "{}: margin {margin_bps}", day.date);
        margin_sum_bps += margin_bps;
        // All-in cost: 1 − received / (total paid × mid).
        let paid_at_mid = exact_value(quote.total_debit_minor, 2, mid);
        all_in_sum_bps += (Decimal::ONE - converted / paid_at_mid) * Decimal::from(10_000);
        exposure.add_quote(&quote).unwrap();
        count += 1;
    }
    assert!(count > 4_500, "only {count} days with a USD/MXN rate since 2008");
    let average_bps = (margin_sum_bps / Decimal::from(count)).round_dp(4);
    let all_in_bps = (all_in_sum_bps / Decimal::from(count)).round_dp(2);
    println!(
        "back-test: {count} ECB business days since 2008, remittance USD 200.00 send-fixed: \
         average FX margin over mid {average_bps} bps (configured {spread_min}..={spread_max} bps), \
         all-in cost incl. fees {all_in_bps} bps; house position USD {} / MXN {}",
        Currency { code: CurrencyCode::USD, scale: 2 }.format_signed(exposure.position(CurrencyCode::USD)),
        Currency { code: CurrencyCode::MXN, scale: 2 }.format_signed(exposure.position(CurrencyCode::MXN)),
    );
    assert!(average_bps >= Decimal::from(spread_min), "average margin {average_bps} below the spread range");
    // Above the tier spread only by rounding: < 1 centavo on ~MXN 2,000+ and 10^-7 rate truncation.
    assert!(
        average_bps <= Decimal::from(spread_max) + Decimal::new(1, 1),
        "average margin {average_bps} above the range"
    );
    assert_eq!(exposure.quote_count(), count);
}

#[test]
fn ecb_file_parses_completely() {
    let days = load_ecb();
    assert!(days.len() > 7_000);
    assert!(days.windows(2).all(|w| w[0].date > w[1].date));
    let first = days.last().unwrap();
    assert_eq!(first.date, "1999-01-04");
    assert_eq!(first.per_eur(CurrencyCode::USD), Some(Decimal::new(11_789, 4)));
}

#[test]
fn cross_rate_quote_cad_to_mxn_via_usd() {
    let cad = Currency { code: CurrencyCode::CAD, scale: 2 };
    let table = CurrencyTable::default().with(cad).unwrap();
    let mut config = PricingConfig::example_usd_mxn();
    config.pairs.push(Pair { base: CurrencyCode::CAD, quote: CurrencyCode::MXN });
    for segment in
        [&mut config.segments.sme, &mut config.segments.remittance, &mut config.segments.institution]
    {
        segment.fee_fixed_minor.insert(CurrencyCode::CAD, 399);
    }
    let pricer = Pricer::new(config, table).unwrap();
    let mut book = RateBook::with_cross_currency(CurrencyCode::USD);
    book.set(Pair { base: CurrencyCode::USD, quote: CurrencyCode::CAD }, Decimal::new(136, 2), 1_000, "ecb")
        .unwrap();
    book.set(USD_MXN, Decimal::new(17, 0), 2_000, "ecb").unwrap();
    let request = QuoteRequest {
        participant: "p".into(),
        segment: Segment::Remittance,
        sell: CurrencyCode::CAD,
        buy: CurrencyCode::MXN,
        fixed: FixedSide::Send(100_000),
    };
    let quote = pricer.quote(&book, &request, [0; 16], 3_000).unwrap();
    assert_eq!(quote.mid_rate, Decimal::new(125, 1));
    assert_eq!(quote.rate_as_of_ms, 1_000);
    // CAD 1,000.00 = USD 735.29 at mid: first remittance tier (150 bps).
    assert_eq!(quote.spread_bps, 150);
    assert_eq!(quote.fee_fixed_minor, 399);
    assert_eq!(quote.customer_rate, Decimal::new(1_231_250, 5));
    assert_eq!(quote.receive_amount_minor, 1_231_250);
}

#[test]
fn full_flow_quote_sign_verify_disclose_execute() {
    let pricer = Pricer::new(PricingConfig::example_usd_mxn(), CurrencyTable::default()).unwrap();
    let mut book = RateBook::new();
    book.set(USD_MXN, Decimal::new(172_500, 4), 1_000, "banxico-fix").unwrap();
    let request = QuoteRequest {
        participant: "remesas-1".into(),
        segment: Segment::Remittance,
        sell: CurrencyCode::USD,
        buy: CurrencyCode::MXN,
        fixed: FixedSide::Send(20_000),
    };
    let id = generate_quote_id().unwrap();
    let quote = pricer.quote(&book, &request, id, 5_000).unwrap();
    let signer = QuoteSigner::from_pkcs8(&generate_pkcs8().unwrap()).unwrap();
    let signature = signer.sign(&quote).unwrap();

    // A client receives the bytes and signature and checks them offline.
    let wire = quote.canonical_bytes();
    let received = Quote::from_canonical_bytes(&wire).unwrap();
    verify_quote(&signer.public_key_bytes(), &received, &signature).unwrap();
    check_executable(&received, 6_000).unwrap();

    let disclosure =
        Disclosure::from_quote(&received, pricer.currencies(), puente_fx::CANCELLATION_WINDOW_MS).unwrap();
    let en = disclosure.render(Lang::En);
    let es = disclosure.render(Lang::Es);
    println!("{en}\n{es}");
    assert!(en.contains("Total: 202.99 USD"));
    assert!(es.contains("Total: 202.99 USD"));
    assert!(en.contains("Exchange rate: 1 USD = 16.99125 MXN"));

    // Institutions get seconds, not minutes.
    let institution = pricer
        .quote(&book, &QuoteRequest { segment: Segment::Institution, ..request.clone() }, id, 5_000)
        .unwrap();
    assert_eq!(institution.expires_at_ms - institution.created_at_ms, 30_000);
    assert!(matches!(check_executable(&institution, 35_000), Err(FxError::QuoteExpired { .. })));

    // Stale rate.
    assert!(matches!(pricer.quote(&book, &request, id, 1_000 + 60_001), Err(FxError::StaleRate { .. })));
}
