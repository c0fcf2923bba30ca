//! Property tests across modules: inverse quotes, rounding never favours the customer beyond
//! one minor unit nor costs the house, disclosures add up, signed encodings resist tampering.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use puente_money::{Currency, CurrencyCode, CurrencyTable};
use rust_decimal::Decimal;

use crate::*;

fn jpy() -> CurrencyCode {
    CurrencyCode::parse("JPY").unwrap()
}

fn table() -> CurrencyTable {
    CurrencyTable::default().with(Currency { code: jpy(), scale: 0 }).unwrap()
}

fn pricer(spreads: &[u32], fee_usd: u64, pct_bps: u32, tax_bps: u32, third_party: u64) -> Pricer {
    let mut config = PricingConfig::example_usd_mxn();
    config.pairs.push(Pair { base: CurrencyCode::USD, quote: jpy() });
    let tiers: Vec<SpreadTier> = spreads
        .iter()
        .enumerate()
        .map(|(i, &spread_bps)| SpreadTier { from_minor: i as u64 * 50_000, spread_bps })
        .collect();
    for segment in
        [&mut config.segments.sme, &mut config.segments.remittance, &mut config.segments.institution]
    {
        segment.spread_tiers = tiers.clone();
        segment.fee_fixed_minor = BTreeMap::from([
            (CurrencyCode::USD, fee_usd),
            (CurrencyCode::MXN, fee_usd * 17),
            (jpy(), fee_usd),
        ]);
        segment.fee_pct_bps = pct_bps;
    }
    config.taxes.insert(CurrencyCode::USD, TaxRule { fixed_minor: 0, pct_bps: tax_bps });
    config.third_party_fees_minor.insert(CurrencyCode::MXN, third_party);
    Pricer::new(config, table()).unwrap()
}

fn book(usd_mxn: Decimal, usd_jpy: Decimal) -> RateBook {
    let mut book = RateBook::new();
    book.set(Pair { base: CurrencyCode::USD, quote: CurrencyCode::MXN }, usd_mxn, 0, "prop").unwrap();
    book.set(Pair { base: CurrencyCode::USD, quote: jpy() }, usd_jpy, 0, "prop").unwrap();
    book
}

fn major(amount_minor: u64, scale: u32) -> Decimal {
    Decimal::from_i128_with_scale(amount_minor as i128, scale)
}

fn one_minor(scale: u32) -> Decimal {
    Decimal::from_i128_with_scale(1, scale)
}

fn scale(code: CurrencyCode) -> u32 {
    table().get(code).unwrap().scale
}

/// Checks the invariants every quote must meet, exactly in `Decimal`.
fn check_quote(quote: &Quote) -> Result<(), TestCaseError> {
    let (s_from, s_to) = (scale(quote.pair.base), scale(quote.pair.quote));
    let value = major(quote.send_amount_minor, s_from).checked_mul(quote.customer_rate).unwrap();
    let converted = major(quote.converted_amount_minor, s_to);
    // The house never loses: what it pays out is covered by what it converts.
    prop_assert!(converted <= value, "converted {converted} > value {value}");
    // Never against the customer by a whole minor unit of the rounded side (unless a tier gap,
    // where converted = floor(send × rate)).
    let floor_rounded = value - converted < one_minor(s_to);
    let ceil_rounded =
        (major(quote.send_amount_minor, s_from) - one_minor(s_from)) * quote.customer_rate < converted;
    prop_assert!(floor_rounded || ceil_rounded);
    if quote.fixed_side == FixedKind::Send {
        prop_assert!(floor_rounded);
    }
    // The customer rate carries at least the spread, plus at most 10^-7 relative truncation.
    let keep = Decimal::from(10_000 - quote.spread_bps) / Decimal::from(10_000);
    let target = quote.mid_rate * keep;
    prop_assert!(quote.customer_rate <= target);
    prop_assert!(target - quote.customer_rate <= target / Decimal::from(10_000_000));
    // Totals.
    prop_assert_eq!(
        quote.total_debit_minor,
        quote.send_amount_minor + quote.fee_total_minor + quote.tax_minor
    );
    prop_assert_eq!(quote.receive_amount_minor, quote.converted_amount_minor - quote.third_party_fee_minor);
    // Disclosure adds up exactly.
    let disclosure = Disclosure::from_quote(quote, &table(), crate::CANCELLATION_WINDOW_MS)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        disclosure.total_minor,
        disclosure.transfer_amount_minor + disclosure.transfer_fees_minor + disclosure.transfer_taxes_minor
    );
    prop_assert_eq!(
        disclosure.received_minor + disclosure.third_party_fees_minor,
        disclosure.converted_amount_minor
    );
    prop_assert_eq!(disclosure.exchange_rate, quote.customer_rate);
    let text = disclosure.render(Lang::En);
    let total_line =
        format!("Total: {}", disclosure.send_currency.format_amount(disclosure.total_minor as u128));
    prop_assert!(text.contains(&total_line));
    Ok(())
}

fn rate_strategy(lo: i64, hi: i64) -> impl Strategy<Value = Decimal> {
    (lo..hi).prop_map(|mantissa| Decimal::new(mantissa, 4))
}

fn spreads_strategy() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(0u32..=400, 1..4).prop_map(|mut v| {
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    })
}

fn signer() -> &'static QuoteSigner {
    static SIGNER: OnceLock<QuoteSigner> = OnceLock::new();
    SIGNER.get_or_init(|| QuoteSigner::from_pkcs8(&generate_pkcs8().unwrap()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn send_and_receive_fixed_are_inverses(
        usd_mxn in rate_strategy(100_000, 250_000),
        usd_jpy in rate_strategy(800_000, 2_000_000),
        spreads in spreads_strategy(),
        fee in 0u64..1_000, pct in 0u32..=100, tax in 0u32..=300, third_party in 0u64..2_000,
        direction in 0usize..4,
        send in 1u64..10_000_000_000,
        segment in prop::sample::select(Segment::ALL.to_vec()),
    ) {
        let pricer = pricer(&spreads, fee, pct, tax, third_party);
        let book = book(usd_mxn, usd_jpy);
        let (sell, buy) = [
            (CurrencyCode::USD, CurrencyCode::MXN),
            (CurrencyCode::MXN, CurrencyCode::USD),
            (CurrencyCode::USD, jpy()),
            (jpy(), CurrencyCode::USD),
        ][direction];
        let request = |fixed| QuoteRequest { participant: "p".into(), segment, sell, buy, fixed };
        let Ok(a) = pricer.quote(&book, &request(FixedSide::Send(send)), [1; 16], 10) else {
            // Only too-small amounts may fail here.
            prop_assert!(send < 10_000);
            return Ok(());
        };
        check_quote(&a)?;
        let b = pricer.quote(&book, &request(FixedSide::Receive(a.receive_amount_minor)), [2; 16], 10).unwrap();
        check_quote(&b)?;
        // Receiving exactly what the send-fixed quote delivers never costs more.
        prop_assert_eq!(b.receive_amount_minor, a.receive_amount_minor);
        prop_assert!(b.send_amount_minor <= a.send_amount_minor);
        prop_assert!(b.total_debit_minor <= a.total_debit_minor);
        let (s_from, s_to) = (scale(sell), scale(buy));
        if b.spread_bps == a.spread_bps {
            // Same tier: the two send amounts differ by less than one receive minor unit of value,
            // and are equal whenever one send minor unit is worth at least one receive minor unit.
            let diff = major(a.send_amount_minor - b.send_amount_minor, s_from) * a.customer_rate;
            prop_assert!(diff < one_minor(s_to));
            if one_minor(s_from) * a.customer_rate >= one_minor(s_to) {
                prop_assert_eq!(a.send_amount_minor, b.send_amount_minor);
            }
        }
        // And the other way round: the send-fixed quote of the receive-fixed send amount.
        let c = pricer.quote(&book, &request(FixedSide::Send(b.send_amount_minor)), [3; 16], 10).unwrap();
        prop_assert_eq!(c.spread_bps, b.spread_bps);
        prop_assert!(c.converted_amount_minor >= b.converted_amount_minor);
        let surplus = major(c.converted_amount_minor - b.converted_amount_minor, s_to);
        prop_assert!(surplus < one_minor(s_from) * c.customer_rate);
    }

    #[test]
    fn receive_fixed_delivers_at_least_the_amount(
        usd_mxn in rate_strategy(100_000, 250_000),
        spreads in spreads_strategy(),
        third_party in 0u64..2_000,
        receive in 1u64..100_000_000_000,
        to_mxn in any::<bool>(),
    ) {
        let pricer = pricer(&spreads, 299, 0, 0, third_party);
        let book = book(usd_mxn, Decimal::from(150));
        let (sell, buy) = if to_mxn { (CurrencyCode::USD, CurrencyCode::MXN) } else { (CurrencyCode::MXN, CurrencyCode::USD) };
        let request = QuoteRequest { participant: "p".into(), segment: Segment::Remittance, sell, buy, fixed: FixedSide::Receive(receive) };
        let q = pricer.quote(&book, &request, [0; 16], 0).unwrap();
        check_quote(&q)?;
        prop_assert!(q.receive_amount_minor >= receive);
        if q.receive_amount_minor > receive {
            // Only in a tier gap: priced exactly at a tier's first amount.
            prop_assert!(q.spread_bps < spreads[0]);
        }
    }

    #[test]
    fn signed_encoding_round_trips_and_detects_tampering(
        usd_mxn in rate_strategy(100_000, 250_000),
        send in 1_000u64..100_000_000,
        field in 0usize..21,
        byte in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let pricer = pricer(&[150, 100], 299, 10, 0, 0);
        let book = book(usd_mxn, Decimal::from(150));
        let request = QuoteRequest { participant: "bank-1".into(), segment: Segment::Sme, sell: CurrencyCode::USD, buy: CurrencyCode::MXN, fixed: FixedSide::Send(send) };
        let quote = pricer.quote(&book, &request, [9; 16], 1_000).unwrap();
        let bytes = quote.canonical_bytes();
        prop_assert_eq!(&Quote::from_canonical_bytes(&bytes).unwrap(), &quote);
        let signature = signer().sign(&quote).unwrap();
        let key = signer().public_key_bytes();
        prop_assert!(verify_quote(&key, &quote, &signature).is_ok());
        // Re-scaling a decimal changes nothing.
        let mut rescaled = quote.clone();
        rescaled.mid_rate.rescale(rescaled.mid_rate.scale() + 3);
        prop_assert!(verify_quote(&key, &rescaled, &signature).is_ok());

        // Tamper with one field.
        let mut t = quote.clone();
        match field {
            0 => t.id[0] ^= 1,
            1 => t.participant.push('x'),
            2 => t.segment = Segment::Institution,
            3 => t.pair = t.pair.inverse(),
            4 => t.fixed_side = FixedKind::Receive,
            5 => t.mid_rate += Decimal::new(1, 6),
            6 => t.customer_rate += Decimal::new(1, 6),
            7 => t.spread_bps += 1,
            8 => t.rate_as_of_ms += 1,
            9 => t.send_amount_minor += 1,
            10 => t.fee_fixed_minor += 1,
            11 => t.fee_pct_minor += 1,
            12 => t.fee_total_minor += 1,
            13 => t.tax_minor += 1,
            14 => t.total_debit_minor += 1,
            15 => t.converted_amount_minor += 1,
            16 => t.third_party_fee_minor += 1,
            17 => t.receive_amount_minor += 1,
            18 => t.created_at_ms -= 1,
            19 => t.expires_at_ms += 1,
            _ => t.participant = "bank-2".into(),
        }
        prop_assert_eq!(verify_quote(&key, &t, &signature), Err(FxError::InvalidSignature));

        // Flip one bit of the encoding: it no longer decodes, or no longer verifies.
        let mut flipped = bytes.clone();
        let at = byte.index(flipped.len());
        flipped[at] ^= 1 << bit;
        if let Ok(decoded) = Quote::from_canonical_bytes(&flipped) {
            prop_assert_eq!(verify_quote(&key, &decoded, &signature), Err(FxError::InvalidSignature));
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Quote::from_canonical_bytes(&bytes);
    }

    #[test]
    fn exposure_is_the_sum_of_legs(sends in proptest::collection::vec(1_000u64..10_000_000, 1..20)) {
        let pricer = pricer(&[150], 299, 0, 0, 0);
        let book = book(Decimal::new(172_500, 4), Decimal::from(150));
        let mut exposure = Exposure::new();
        let (mut usd, mut mxn) = (0i128, 0i128);
        for (i, send) in sends.iter().enumerate() {
            let (sell, buy) = if i % 2 == 0 { (CurrencyCode::USD, CurrencyCode::MXN) } else { (CurrencyCode::MXN, CurrencyCode::USD) };
            let request = QuoteRequest { participant: "p".into(), segment: Segment::Remittance, sell, buy, fixed: FixedSide::Send(*send) };
            let Ok(q) = pricer.quote(&book, &request, [0; 16], 0) else { continue };
            exposure.add_quote(&q).unwrap();
            let (collected, paid) = ((q.send_amount_minor + q.fee_total_minor) as i128, q.converted_amount_minor as i128);
            if i % 2 == 0 { usd += collected; mxn -= paid } else { mxn += collected; usd -= paid }
        }
        prop_assert_eq!(exposure.position(CurrencyCode::USD), usd);
        prop_assert_eq!(exposure.position(CurrencyCode::MXN), mxn);
    }
}
