//! FX over gRPC: rates, signed quotes with disclosures and receipts, atomic execution on the
//! ledger, idempotent retries, tampering, expiry, reuse, other participants' quotes,
//! remittance cancellation; the quote-signing key (kept outside the data directory, rotated,
//! ephemeral without one) and quotes re-signed with a stolen key. The automatic post when a
//! (test-only, short) cancellation window closes is tested on the desk itself
//! (crates/server/tests/fx_desk.rs): the server refuses a window under 30 minutes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use puente_client::{
    Client, ClientError, Fixed, NewAccount, NewTransfer, new_id, pb, verify_quote, verify_quote_with_keys,
};
use puente_fx::{Quote, QuoteKeyring};

use crate::support::{Server, client_with_key, eventually, minor, temp_dir};

/// Writes a quote-signing keyring file (`puente fx-key generate` lines) with `mode`.
fn write_key_file(path: &Path, specs: &[String], mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, specs.join("\n") + "\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_owned()
}

/// The keyring file of a test's server: beside the data directory, never inside it.
fn key_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("fx-signing.keys")
}

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

/// Starts a server over `dir/data` with the keyring file `dir/fx-signing.keys` (made with one
/// key, k1, if absent) and, if given, a config file.
fn start_with(dir: &tempfile::TempDir, config: Option<&str>) -> Server {
    let keys = key_file(dir);
    if !keys.exists() {
        write_key_file(&keys, &[QuoteKeyring::generate_spec("k1").unwrap()], 0o600);
    }
    let mut args = vec!["--fx-signing-key-file".to_owned(), keys.display().to_string()];
    if let Some(text) = config {
        let path = dir.path().join("puente.toml");
        std::fs::write(&path, text).unwrap();
        args.extend(["--config".to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::try_start(&dir.path().join("data"), &args).unwrap_or_else(|log| panic!("{log}"))
}

fn start(dir: &tempfile::TempDir) -> Server {
    start_with(dir, None)
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

    // Offline verification with the served public keys; the quote names its key.
    let key = client.fx_public_key().await.unwrap();
    assert_eq!(key.len(), 32);
    assert!(verify_quote(&key, &quote));
    let keys = client.fx_public_keys().await.unwrap();
    assert_eq!((keys.len(), keys[0].key_id.as_str(), quote.signing_key_id.as_str()), (1, "k1", "k1"));
    assert_eq!(keys[0].public_key, key);
    assert!(verify_quote_with_keys(&keys, &quote));
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

    // An operator executing one participant's quote from another participant's account.
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
async fn remittance_cancel_refunds_everything_and_the_receipt_dates_the_funds() {
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
    assert!(disclosure.text_en.contains("within 30 minutes of payment"), "{}", disclosure.text_en);
    assert!(disclosure.text_es.contains("dentro de los 30 minutos"), "{}", disclosure.text_es);
    // Before payment: funds available no later than the quote's expiry plus the window.
    let expire = quote.expire_time.unwrap();
    let available = disclosure.funds_available_time.unwrap();
    assert_eq!(available.seconds - expire.seconds, 30 * 60);
    assert!(disclosure.payment_time.is_none());
    assert!(disclosure.text_en.contains("Date funds available: no later than"), "{}", disclosure.text_en);
    assert!(
        disclosure.text_es.contains("Fecha de disponibilidad de los fondos: a más tardar"),
        "{}",
        disclosure.text_es
    );

    let done = client.execute_quote(&quote, &usd, &recipient, &new_id()).await.unwrap();
    assert_eq!(done.state, pb::FxExecutionState::Held as i32);
    // The receipt: paid now, funds available when the window closes, in both languages.
    let receipt = done.receipt.clone().unwrap();
    let (paid, deadline) = (receipt.payment_time.unwrap(), done.cancel_deadline.unwrap());
    assert_eq!(receipt.funds_available_time, Some(deadline));
    assert_eq!(
        (deadline.seconds * 1_000 + i64::from(deadline.nanos) / 1_000_000)
            - (paid.seconds * 1_000 + i64::from(paid.nanos) / 1_000_000),
        30 * 60 * 1000
    );
    assert_eq!(receipt.amount_received, quote.receive_amount);
    assert!(receipt.text_en.starts_with("RECEIPT"), "{}", receipt.text_en);
    assert!(receipt.text_en.contains("Date funds available: 20"), "{}", receipt.text_en);
    assert!(receipt.text_es.starts_with("RECIBO"), "{}", receipt.text_es);
    assert!(receipt.text_es.contains("Fecha de disponibilidad de los fondos: 20"), "{}", receipt.text_es);
    let held = client.get_account(&usd).await.unwrap();
    assert_eq!((held.posted_balance.as_str(), held.available_balance.as_str()), ("1000.00", "797.01"));
    let cancelled = client.cancel_transfer(&quote.id).await.unwrap();
    assert_eq!(cancelled.refunded.unwrap().value, "202.99");
    assert!(!cancelled.replayed);
    let after = client.get_account(&usd).await.unwrap();
    assert_eq!((after.posted_balance.as_str(), after.available_balance.as_str()), ("1000.00", "1000.00"));
    assert_eq!(client.get_account(&recipient).await.unwrap().credits_pending, "0.00");
    assert!(client.cancel_transfer(&quote.id).await.unwrap().replayed);

    // Not held: an SME conversion's funds are available when paid.
    let sme =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("10.00")).await.unwrap();
    let done = client.execute_quote(&sme, &usd, &recipient, &new_id()).await.unwrap();
    let receipt = done.receipt.unwrap();
    assert_eq!(receipt.funds_available_time, receipt.payment_time);
    assert_eq!(receipt.cancellation_window_ms, 0);
    assert!(!receipt.text_en.contains("cancel"), "{}", receipt.text_en);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disclosure_states_the_window_enforced_and_a_window_under_30_minutes_is_refused() {
    // 8 s (the review's example): the server refuses to start, and says why.
    let dir = temp_dir();
    let config = dir.path().join("puente.toml");
    std::fs::write(&config, "[fx]\ncancellation_window_ms = 8000\n").unwrap();
    let log = Server::try_start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .err()
        .expect("a cancellation window of 8 s must be refused");
    assert!(
        log.contains(
            "[fx]: cancellation_window_ms = 8000 is shorter than the 30 minutes (1800000 ms) Regulation E"
        ),
        "{log}"
    );

    // 45 minutes: enforced, and the disclosure and the receipt say 45 minutes.
    let dir = temp_dir();
    let server = start_with(&dir, Some("[fx]\ncancellation_window_ms = 2700000\n"));
    let Setup { mut client, usd, recipient, .. } = setup(&server).await;
    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let quote = client
        .quote("remit-app", pb::FxSegment::Remittance, "USD", "MXN", Fixed::Send("100.00"))
        .await
        .unwrap();
    let disclosure = quote.disclosure.clone().unwrap();
    assert_eq!(disclosure.cancellation_window_ms, 45 * 60 * 1000);
    assert!(disclosure.text_en.contains("within 45 minutes") && !disclosure.text_en.contains("30 minutes"));
    assert!(
        disclosure.text_es.contains("dentro de los 45 minutos") && !disclosure.text_es.contains("30 minutos")
    );
    let done = client.execute_quote(&quote, &usd, &recipient, &new_id()).await.unwrap();
    let receipt = done.receipt.unwrap();
    assert_eq!(receipt.cancellation_window_ms, 45 * 60 * 1000);
    assert!(receipt.text_en.contains("within 45 minutes of payment (until"), "{}", receipt.text_en);
    let (paid, deadline) = (receipt.payment_time.unwrap(), done.cancel_deadline.unwrap());
    assert!((deadline.seconds - paid.seconds - 45 * 60).abs() <= 1, "{paid:?} {deadline:?}");
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
    let keys = write_key_file(&key_file(&dir), &[QuoteKeyring::generate_spec("k1").unwrap()], 0o600);
    let args = ["--config", config.to_str().unwrap(), "--fx-signing-key-file", keys.to_str().unwrap()];
    let server = Server::try_start(&dir.path().join("data"), &args).unwrap_or_else(|log| panic!("{log}"));
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

/// The review's attack: with the signing key from a copy of the server's keys, take a genuine
/// quote, raise the amount received from 1.00 USD's worth to MXN 1,000,000.00, re-sign it and
/// execute it. The signature is valid; the server refuses it anyway and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_re_signed_with_the_stolen_key_is_refused_and_moves_nothing() {
    let dir = temp_dir();
    let server = start(&dir);
    let Setup { mut client, usd, recipient, .. } = setup(&server).await;
    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let genuine =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("1.00")).await.unwrap();
    assert_eq!(genuine.send_amount.as_ref().unwrap().value, "1.00");

    // The attacker holds the server's key (read from the key file the server was given).
    let stolen = QuoteKeyring::from_text(&std::fs::read_to_string(key_file(&dir)).unwrap()).unwrap();
    let forge = |quote: &pb::FxQuote, change: &dyn Fn(&mut Quote)| {
        let mut decoded = Quote::from_canonical_bytes(&quote.canonical).unwrap();
        change(&mut decoded);
        let (key_id, signature) = stolen.sign(&decoded).unwrap();
        let mut forged = quote.clone();
        forged.canonical = decoded.canonical_bytes();
        forged.signature = signature.to_vec();
        forged.signing_key_id = key_id;
        forged
    };
    let million = |q: &mut Quote| {
        q.converted_amount_minor = 100_000_000 + q.third_party_fee_minor;
        q.receive_amount_minor = 100_000_000;
    };
    let forged = forge(&genuine, &million);
    // It verifies offline: the signature is the server's.
    let keys = client.fx_public_keys().await.unwrap();
    assert!(verify_quote_with_keys(&keys, &forged));

    let house = |client: &mut Client| {
        let mut client = client.clone();
        async move { client.exposure().await.unwrap() }
    };
    let before = (
        client.get_account(&usd).await.unwrap(),
        client.get_account(&recipient).await.unwrap(),
        house(&mut client).await,
    );
    let error = client.execute_quote(&forged, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::InvalidArgument, "QUOTE_NOT_ISSUED".into()));
    // A forged quote under an id the server never issued is not found.
    let fresh = forge(&genuine, &|q: &mut Quote| {
        million(q);
        q.id = [0x42; 16];
    });
    let error = client.execute_quote(&fresh, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::NotFound, "QUOTE_NOT_FOUND".into()));
    let after = (
        client.get_account(&usd).await.unwrap(),
        client.get_account(&recipient).await.unwrap(),
        house(&mut client).await,
    );
    assert_eq!(after, before, "nothing moved");
    assert_eq!(after.1.posted_balance, "0.00");

    // The genuine quote still executes, once; the forgery cannot ride on its retry either.
    let execution_id = new_id();
    client.execute_quote(&genuine, &usd, &recipient, &execution_id).await.unwrap();
    let paid = client.get_account(&recipient).await.unwrap().posted_balance;
    assert_eq!(paid, genuine.receive_amount.as_ref().unwrap().value);
    let error = client.execute_quote(&forged, &usd, &recipient, &execution_id).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::InvalidArgument, "QUOTE_NOT_ISSUED".into()));
    assert_eq!(client.get_account(&recipient).await.unwrap().posted_balance, paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_file_inside_the_data_dir_or_readable_by_others_is_refused() {
    let spec = QuoteKeyring::generate_spec("k1").unwrap();
    // Inside the data directory (so in every copy of it).
    let dir = temp_dir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let inside = write_key_file(&data.join("fx.keys"), std::slice::from_ref(&spec), 0o600);
    let log = Server::try_start(&data, &["--fx-signing-key-file", inside.to_str().unwrap()])
        .err()
        .expect("a key file in the data directory must be refused");
    assert!(log.contains("FX signing key file") && log.contains("is inside the data directory"), "{log}");
    assert!(!log.contains(&spec[3..]), "the key leaked into the log");

    // Mode 0644, named in the config file: refused, with the fix.
    let dir = temp_dir();
    let open = write_key_file(&key_file(&dir), std::slice::from_ref(&spec), 0o644);
    let config = dir.path().join("puente.toml");
    std::fs::write(&config, format!("[fx]\nsigning_key_file = {:?}\n", open.display().to_string())).unwrap();
    let log = Server::try_start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .err()
        .expect("a key file readable by others must be refused");
    assert!(log.contains("accessible by group or others (mode 644)") && log.contains("chmod 600"), "{log}");

    // A damaged key file: refused, naming the line, never the key.
    let dir = temp_dir();
    let damaged = write_key_file(&key_file(&dir), &[format!("{}zz", &spec[..spec.len() - 2])], 0o600);
    let log =
        Server::try_start(&dir.path().join("data"), &["--fx-signing-key-file", damaged.to_str().unwrap()])
            .err()
            .expect("a damaged key file must be refused");
    assert!(log.contains("line 1: key is not valid hex"), "{log}");
    assert!(!log.contains(&spec[3..40]), "the key leaked into the log");

    // The binary PKCS#8 key earlier versions used: refused, with the way out.
    let dir = temp_dir();
    let old = key_file(&dir);
    write_key_file(&old, &[], 0o600);
    std::fs::write(&old, puente_fx::generate_pkcs8().unwrap()).unwrap(); // keeps mode 0600
    let log = Server::try_start(&dir.path().join("data"), &["--fx-signing-key-file", old.to_str().unwrap()])
        .err()
        .expect("a PKCS#8 key file must be refused");
    assert!(
        log.contains("PKCS#8 key of an earlier version") && log.contains("puente fx-key generate"),
        "{log}"
    );
}

/// Rotation: `puente fx-key generate k2 --key-file` puts a new key first; after a restart it
/// signs, and a quote signed by the old key still verifies and executes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_key_rotation_a_quote_signed_by_the_old_key_still_executes() {
    let dir = temp_dir();
    let mut server = start(&dir);
    let Setup { mut client, usd, recipient, .. } = setup(&server).await;
    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let old =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("40.00")).await.unwrap();
    assert_eq!(old.signing_key_id, "k1");
    drop(client);
    assert!(server.terminate().success());

    let keys_path = key_file(&dir);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
        .args(["fx-key", "generate", "k2", "--key-file"])
        .arg(&keys_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&keys_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("k2:") && lines[1].starts_with("k1:"),
        "key ids: {}",
        lines.len()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&keys_path).unwrap().permissions().mode() & 0o777, 0o600);

    let server = start(&dir);
    let mut client = server.client().await;
    let keys = client.fx_public_keys().await.unwrap();
    let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, ["k2", "k1"]);
    assert_eq!(client.fx_public_key().await.unwrap(), keys[0].public_key);
    let new = client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("1.00")).await.unwrap();
    assert_eq!(new.signing_key_id, "k2");
    assert!(verify_quote_with_keys(&keys, &new) && verify_quote_with_keys(&keys, &old));
    assert!(!verify_quote(&keys[0].public_key, &old), "the old quote is signed by k1, not k2");
    let done = client.execute_quote(&old, &usd, &recipient, &new_id()).await.unwrap();
    assert_eq!(done.state, pb::FxExecutionState::Posted as i32);
    assert_eq!(client.get_account(&usd).await.unwrap().posted_balance, "955.00");
}

/// No key configured: the server runs (a newcomer's `puente serve`), signing with a key that
/// lives only in memory, says so loudly, writes no key into the data directory; after a
/// restart the old quotes no longer execute (and move nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_file_quotes_are_signed_by_an_ephemeral_key() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let Setup { mut client, usd, recipient, .. } = setup(&server).await;
    client.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let keys = client.fx_public_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].key_id.starts_with("ephemeral-"), "{}", keys[0].key_id);
    let quote =
        client.quote("remit-app", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("10.00")).await.unwrap();
    assert!(verify_quote_with_keys(&keys, &quote));
    drop(client);
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("no FX quote-signing key"), "{log}");
    assert!(!data.join("fx-signing-key.p8").exists());

    let server = Server::start(&data);
    let mut client = server.client().await;
    let new_keys = client.fx_public_keys().await.unwrap();
    assert_ne!(new_keys[0].public_key, keys[0].public_key);
    let error = client.execute_quote(&quote, &usd, &recipient, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::InvalidArgument, "QUOTE_SIGNATURE_INVALID".into()));
    assert_eq!(client.get_account(&usd).await.unwrap().posted_balance, "1000.00");
}

/// Another participant's quote does not exist for you: executing it is NOT_FOUND
/// QUOTE_NOT_FOUND (as README and fx.proto say), like fetching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_participants_quote_is_not_found() {
    let dir = temp_dir();
    let server = start(&dir);
    let mut operator = server.client().await;
    let (_, a_key) = operator.create_participant("fintech-a", "A", pb::Role::Participant).await.unwrap();
    let (_, b_key) = operator.create_participant("fintech-b", "B", pb::Role::Participant).await.unwrap();
    let mut a = client_with_key(&server.addr, &a_key.key).await;
    let mut b = client_with_key(&server.addr, &b_key.key).await;
    crate::support::participant(&mut operator, "treasury").await;
    let funding = operator.create_account(NewAccount::new("treasury", "USD")).await.unwrap().id;
    let b_usd = b.create_account(NewAccount::new("fintech-b", "USD").no_overdraft()).await.unwrap().id;
    let b_mxn = b.create_account(NewAccount::new("fintech-b", "MXN")).await.unwrap().id;
    operator.transfer(NewTransfer::new(&funding, &b_usd, "USD", "100.00")).await.unwrap();
    operator.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();
    let a_quote = a.quote("", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("10.00")).await.unwrap();

    let error = b.execute_quote(&a_quote, &b_usd, &b_mxn, &new_id()).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::NotFound, "QUOTE_NOT_FOUND".into()));
    let error = b.get_quote(&a_quote.id).await.unwrap_err();
    assert_eq!(reason(error), (tonic::Code::NotFound, "QUOTE_NOT_FOUND".into()));
    assert_eq!(b.get_account(&b_usd).await.unwrap().posted_balance, "100.00");
}
