//! Quotes per second in-process, on one thread: pricing only, pricing + Ed25519 signing,
//! and verification alone. Criterion reports throughput in elements (quotes) per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use puente_fx::*;
use puente_money::{CurrencyCode, CurrencyTable};
use rust_decimal::Decimal;

fn setup() -> (Pricer, RateBook, QuoteRequest) {
    let pricer = Pricer::new(PricingConfig::example_usd_mxn(), CurrencyTable::default()).unwrap();
    let mut book = RateBook::new();
    book.set(
        Pair { base: CurrencyCode::USD, quote: CurrencyCode::MXN },
        Decimal::new(172_534, 4),
        1_000,
        "bench",
    )
    .unwrap();
    let request = QuoteRequest {
        participant: "bench".into(),
        segment: Segment::Remittance,
        sell: CurrencyCode::USD,
        buy: CurrencyCode::MXN,
        fixed: FixedSide::Send(20_000),
    };
    (pricer, book, request)
}

fn quotes(c: &mut Criterion) {
    let (pricer, book, request) = setup();
    let signer = QuoteSigner::from_pkcs8(&generate_pkcs8().unwrap()).unwrap();
    let mut group = c.benchmark_group("quote");
    group.throughput(Throughput::Elements(1));

    group.bench_function("pricing_only_send_fixed", |b| {
        b.iter(|| pricer.quote(black_box(&book), black_box(&request), [0; 16], black_box(2_000)).unwrap())
    });
    let receive = QuoteRequest { fixed: FixedSide::Receive(340_000), ..request.clone() };
    group.bench_function("pricing_only_receive_fixed", |b| {
        b.iter(|| pricer.quote(black_box(&book), black_box(&receive), [0; 16], black_box(2_000)).unwrap())
    });
    let mxn_usd = QuoteRequest {
        sell: CurrencyCode::MXN,
        buy: CurrencyCode::USD,
        fixed: FixedSide::Send(400_000),
        ..request.clone()
    };
    group.bench_function("pricing_only_mxn_usd_inverse_rate", |b| {
        b.iter(|| pricer.quote(black_box(&book), black_box(&mxn_usd), [0; 16], black_box(2_000)).unwrap())
    });
    group.bench_function("pricing_and_signing", |b| {
        b.iter(|| {
            let quote =
                pricer.quote(black_box(&book), black_box(&request), [0; 16], black_box(2_000)).unwrap();
            let signature = signer.sign(&quote).unwrap();
            (quote, signature)
        })
    });
    let quote = pricer.quote(&book, &request, [0; 16], 2_000).unwrap();
    let signature = signer.sign(&quote).unwrap();
    let public_key = signer.public_key_bytes();
    group.bench_function("canonical_encoding", |b| b.iter(|| black_box(&quote).canonical_bytes()));
    group.bench_function("verify_only", |b| {
        b.iter(|| verify_quote(black_box(&public_key), black_box(&quote), black_box(&signature)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, quotes);
criterion_main!(benches);
