//! FX over gRPC: rates, signed quotes with disclosures, atomic execution on the ledger,
//! idempotent retries, tampering, expiry, reuse, other participants' quotes, remittance
//! cancellation and the automatic post when the cancellation window closes.

use std::time::Duration;

use puente_client::{Client, ClientError, Fixed, NewAccount, NewTransfer, new_id, pb, verify_quote};

use crate::support::{Server, eventually, minor, temp_dir};

/// A config with short lifetimes so expiry and the cancellation window can be tested quickly.
const CONFIG: &str = r#"
[fx]
cancellation_window_ms = 1500
"#;

fn reason(error: ClientError) -> (tonic::Code, String) {
    match error {
        ClientError::Status { code, reason, .. } => (code, reason.unwrap_or_default()),
        other => panic!("expected a status, got {other:?}"),
    }
}

struct Setup {
    client: Client,
    usd: String,
    mxn: String,
    recipient: String,
}

async fn setup(server: &Server) -> Setup {
    let mut client = server.client().await;
    crate::support::participant(&mut client, "remit-app").await;
    crate::support::participant(&mut client, "mx-bank").await;
    let funding =
        client.create_account(NewAccount::new("remit-app", "USD").holder_ref("funding")).await.unwrap();
    let usd = client
        .create_account(NewAccount::new("remit-app", "USD").no_overdraft().holder_ref("ana"))
        .await
        .unwrap();
    let mxn = client
        .create_account(NewAccount::new("remit-app", "MXN").no_overdraft().holder_ref("ana-mx"))
        .await
        .unwrap();
    let recipient =
        client.create_account(NewAccount::new("mx-bank", "MXN").holder_ref("luis")).await.unwrap();
    client.transfer(NewTransfer::new(&funding.id, &usd.id, "USD", "1000.00")).await.unwrap();
    Setup { client, usd: usd.id, mxn: mxn.id, recipient: recipient.id }
}

fn start(dir: &tempfile::TempDir) -> Server {
    let config = dir.path().join("puente.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    Server::try_start(&data, &["--config", config.to_str().unwrap()]).unwrap_or_else(|log| panic!("{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_execute_and_balances() {
    let dir = temp_dir();
    let server = start(&dir);
    let Setup { mut client, usd, mxn, recipient } = setup(&server).await;

    // No rate yet: no quote.
    let error =
        client.quote("remit-app", pb::FxSegment::Remittance, "USD", "MXN", Fixed::Send("200.00")).await;
    assert_eq!(reason(error.unwrap_err()), (tonic::Code::FailedPrecondition, "RATE_MISSING".into()));
    // A stale rate: no quote either.
    let stale = pb::FxRate {
        base_currency: "USD".into(),
        quote_currency: "MXN".into(),
        mid_rate: "18.9".into(),
        rate_time: Some(prost_types_now_minus(600)),
        source: "test".into(),
    };
    client.set_rates(vec![stale]).await.unwrap();
    let error = client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("200.00")).await;
    assert_eq!(reason(error.unwrap_err()), (tonic::Code::FailedPrecondition, "RATE_STALE".into()));
    // Bad rates are refused with the field.
    let (code, _) = reason(client.set_rate("USD", "MXN", "-1", "x").await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);

    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let rates = client.list_rates().await.unwrap();
    assert_eq!(rates.len(), 1);
    assert_eq!(rates[0].mid_rate, "18.9125");

    // SME: send exactly USD 200; fee USD 5.00; 100 bps.
    let quote =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("200.00")).await.unwrap();
    assert_eq!(quote.send_amount.as_ref().unwrap().value, "200.00");
    assert_eq!(quote.fee_total.as_ref().unwrap().value, "5.00");
    assert_eq!(quote.total_debit.as_ref().unwrap().value, "205.00");
    assert_eq!(quote.spread_bps, 100);
    let disclosure = quote.disclosure.clone().unwrap();
    assert_eq!(disclosure.total.as_ref().unwrap().value, "205.00");
    assert_eq!(disclosure.amount_received, quote.receive_amount);
    assert!(disclosure.text_en.contains("Total"), "{}", disclosure.text_en);
    assert!(disclosure.text_es.contains("Total"), "{}", disclosure.text_es);
    // received = floor(200.00 × customer rate), and the customer rate is below mid.
    let received = minor(&quote.receive_amount.as_ref().unwrap().value);
    assert!(received < 20_000 * 18_9125 / 10_000 && received > 370_000, "{received}");

    // Offline verification with the served public key.
    let key = client.fx_public_key().await.unwrap();
    assert_eq!(key.len(), 32);
    assert!(verify_quote(&key, &quote));
    let mut tampered = quote.clone();
    let last = tampered.canonical.len() - 20;
    tampered.canonical[last] ^= 1;
    assert!(!verify_quote(&key, &tampered));

    // Tampered quotes are refused and change nothing.
    let error = client.execute_quote(&tampered, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::InvalidArgument, "QUOTE_SIGNATURE_INVALID".into()));
    assert_eq!(client.get_account(&usd).await.unwrap().posted_balance, "1000.00");

    // Execute: customer pays 205.00, recipient gets the quoted MXN, the house holds the legs.
    let execution_id = new_id();
    let done = client.execute_quote(&quote, &usd, &recipient, &execution_id).await.unwrap();
    assert_eq!(done.state, pb::FxExecutionState::Posted as i32);
    assert_eq!(done.transfer_ids.len(), 3);
    assert!(!done.replayed);
    assert_eq!(client.get_account(&usd).await.unwrap().posted_balance, "795.00");
    assert_eq!(minor(&client.get_account(&recipient).await.unwrap().posted_balance), received);
    let exposure = client.exposure().await.unwrap();
    let usd_position = exposure.iter().find(|p| p.currency_code == "USD").unwrap();
    let mxn_position = exposure.iter().find(|p| p.currency_code == "MXN").unwrap();
    assert_eq!(usd_position.posted_position, "200.00");
    assert_eq!(usd_position.fee_revenue, "5.00");
    assert_eq!(minor(&mxn_position.posted_position), -received);

    // A retry returns the first outcome; another use of the quote is refused.
    let again = client.execute_quote(&quote, &usd, &recipient, &execution_id).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer_ids, done.transfer_ids);
    let error = client.execute_quote(&quote, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::FailedPrecondition, "QUOTE_ALREADY_USED".into()));
    assert_eq!(client.get_account(&usd).await.unwrap().posted_balance, "795.00");

    // Receive-fixed: MXN 5,000.00 arrives exactly.
    let quote =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Receive("5000.00")).await.unwrap();
    assert_eq!(quote.receive_amount.as_ref().unwrap().value, "5000.00");
    client.execute_quote(&quote, &usd, &mxn, &new_id()).await.unwrap();
    assert_eq!(client.get_account(&mxn).await.unwrap().posted_balance, "5000.00");

    // MXN -> USD works too (the inverse rate).
    let back =
        client.quote("remit-app", pb::FxSegment::Sme, "MXN", "USD", Fixed::Send("1000.00")).await.unwrap();
    assert!(minor(&back.receive_amount.as_ref().unwrap().value) < 1000 * 100 * 100 / 1891);

    // Another participant's quote cannot move this participant's money.
    let theirs =
        client.quote("other-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("10.00")).await.unwrap();
    let error = client.execute_quote(&theirs, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::PermissionDenied, "QUOTE_PARTICIPANT_MISMATCH".into()));

    // Not enough money: refused with the ledger's reason, nothing moves; the quote is spent.
    let big =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("5000.00")).await.unwrap();
    let before = client.get_account(&usd).await.unwrap();
    let error = client.execute_quote(&big, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::FailedPrecondition, "EXCEEDS_CREDITS".into()));
    assert_eq!(client.get_account(&usd).await.unwrap(), before);

    // Quotes are listed newest first and can be fetched by id.
    let listed = client.list_quotes("remit-app", 2, "").await.unwrap();
    assert_eq!(listed.quotes.len(), 2);
    assert_eq!(listed.quotes[0].id, big.id);
    assert!(!listed.next_page_token.is_empty());
    assert_eq!(client.get_quote(&big.id).await.unwrap().canonical, big.canonical);
}

fn prost_types_now_minus(seconds: u64) -> puente_proto::Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    puente_proto::Timestamp { seconds: (now.as_secs() - seconds) as i64, nanos: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remittance_cancel_refunds_everything_and_the_window_posts_by_itself() {
    let dir = temp_dir();
    let server = start(&dir);
    let Setup { mut client, usd, recipient, .. } = setup(&server).await;
    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();

    // Held, then cancelled within the window: the full total comes back, fees included.
    let quote = client
        .quote("remit-app", pb::FxSegment::Remittance, "USD", "MXN", Fixed::Send("200.00"))
        .await
        .unwrap();
    let disclosure = quote.disclosure.clone().unwrap();
    assert_eq!(disclosure.cancellation_window_ms, 30 * 60 * 1000, "Regulation E notice");
    assert!(disclosure.text_es.contains("cancel"), "{}", disclosure.text_es);
    let done = client.execute_quote(&quote, &usd, &recipient, &new_id()).await.unwrap();
    assert_eq!(done.state, pb::FxExecutionState::Held as i32);
    assert!(done.cancel_deadline.is_some());
    let held = client.get_account(&usd).await.unwrap();
    assert_eq!((held.posted_balance.as_str(), held.available_balance.as_str()), ("1000.00", "797.01"));
    let cancelled = client.cancel_transfer(&quote.id).await.unwrap();
    assert_eq!(cancelled.refunded.unwrap().value, "202.99");
    assert!(!cancelled.replayed);
    let after = client.get_account(&usd).await.unwrap();
    assert_eq!((after.posted_balance.as_str(), after.available_balance.as_str()), ("1000.00", "1000.00"));
    assert_eq!(client.get_account(&recipient).await.unwrap().credits_pending, "0.00");
    assert!(client.cancel_transfer(&quote.id).await.unwrap().replayed);

    // Not cancelled: when the window closes the chain posts by itself, with no client call.
    let quote = client
        .quote("remit-app", pb::FxSegment::Remittance, "USD", "MXN", Fixed::Send("100.00"))
        .await
        .unwrap();
    client.execute_quote(&quote, &usd, &recipient, &new_id()).await.unwrap();
    let posted = eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        let usd = usd.clone();
        async move { client.get_account(&usd).await.unwrap().posted_balance == "897.01" }
    })
    .await;
    assert!(posted, "the remittance did not post when its window closed");
    let received = minor(&quote.receive_amount.unwrap().value);
    assert_eq!(minor(&client.get_account(&recipient).await.unwrap().posted_balance), received);
    let error = client.cancel_transfer(&quote.id).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::FailedPrecondition, "CANCELLATION_WINDOW_CLOSED".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_quotes_are_refused() {
    let dir = temp_dir();
    let config = dir.path().join("puente.toml");
    // Institution quotes live 1 s here.
    let mut pricing = puente_fx::PricingConfig::example_usd_mxn();
    pricing.segments.institution.ttl_ms = 1_000;
    let toml = toml::to_string(&toml::Table::from_iter([(
        "fx".to_owned(),
        toml::Value::Table(toml::Table::from_iter([(
            "pricing".to_owned(),
            toml::Value::try_from(&pricing).unwrap(),
        )])),
    )]))
    .unwrap();
    std::fs::write(&config, toml).unwrap();
    let server = Server::try_start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("{log}"));
    let Setup { mut client, usd, recipient, .. } = setup(&server).await;
    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let quote = client
        .quote("remit-app", pb::FxSegment::Institution, "USD", "MXN", Fixed::Send("10.00"))
        .await
        .unwrap();
    // Wait for the quote's expiry time to pass (a clock condition, polled).
    let expire = quote.expire_time.unwrap();
    let expired = eventually(Duration::from_secs(10), || async move {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        (now.as_secs() as i64, now.subsec_nanos() as i32) > (expire.seconds, expire.nanos)
    })
    .await;
    assert!(expired);
    let error = client.execute_quote(&quote, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::FailedPrecondition, "QUOTE_EXPIRED".into()));
    assert_eq!(client.get_account(&usd).await.unwrap().posted_balance, "1000.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_and_executions_survive_a_crash() {
    let dir = temp_dir();
    let mut server = start(&dir);
    let Setup { mut client, usd, recipient, .. } = setup(&server).await;
    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let quote =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("50.00")).await.unwrap();
    let execution_id = new_id();
    let first = client.execute_quote(&quote, &usd, &recipient, &execution_id).await.unwrap();
    server.kill();

    let server = start(&dir);
    let mut client = server.client().await;
    assert_eq!(client.list_rates().await.unwrap()[0].mid_rate, "18.9125");
    let again = client.execute_quote(&quote, &usd, &recipient, &execution_id).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer_ids, first.transfer_ids);
    assert_eq!(client.get_account(&usd).await.unwrap().posted_balance, "945.00");
    // The same signing key after a restart: old quotes still verify.
    assert!(verify_quote(&client.fx_public_key().await.unwrap(), &quote));
}
