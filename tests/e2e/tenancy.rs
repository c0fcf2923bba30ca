//! The outside review's tenant-boundary findings, each performed as an attack against the real
//! server: system ids that participants squat, another participant's failed attempt binding an
//! owner's id, foreign KYC probing and reservations, streams nobody reads, duplicate
//! credentials, a feed that misses the ledger's own balance changes, participant ids.

use std::collections::HashMap;
use std::time::Duration;

use puente_client::{Client, ClientError, Fixed, NewAccount, NewTransfer, new_id, pb};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::support::{Server, client_with_key, eventually, journal_segment, minor, participant, temp_dir};

fn uuid_text(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

fn status(error: ClientError) -> (Code, String) {
    match error {
        ClientError::Status { code, reason, .. } => (code, reason.unwrap_or_default()),
        other => panic!("expected a status, got {other:?}"),
    }
}

/// A participant with its own key, and a client that uses it.
async fn fintech(operator: &mut Client, addr: &str, id: &str) -> Client {
    let (_, key) = operator.create_participant(id, id, pb::Role::Participant).await.unwrap();
    client_with_key(addr, &key.key).await
}

fn usd_profile(participant: &str, settlement_account: &str) -> pb::ParticipantProfile {
    pb::ParticipantProfile {
        participant: participant.into(),
        name: participant.into(),
        bic: String::new(),
        country: pb::Country::Us as i32,
        currencies: vec![pb::CurrencySettlement {
            currency_code: "USD".into(),
            rail: pb::SettlementRail::Fedwire as i32,
            bank_id: "021000021".into(),
            net_debit_cap: "1000000.00".into(),
            settlement_account_id: settlement_account.into(),
        }],
        update_time: None,
    }
}

/// Finding 2: a participant pre-creates the USD hub account (flagged so that it cannot be
/// credited) and the settlement transfer ids of the next run. Both are system ids now: the
/// attempts are refused and settlement goes through for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_cannot_squat_the_hub_account_or_settlement_transfer_ids() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    let mut mallory = fintech(&mut operator, &server.addr, "mallory").await;
    participant(&mut operator, "bank-a").await;
    participant(&mut operator, "bank-b").await;

    let hub = uuid_text(puente_ledger::settlement::hub_account_id(puente_money::CurrencyCode::USD));
    let squat =
        mallory.create_accounts(vec![NewAccount::new("mallory", "USD").id(&hub).credit_cap().0]).await;
    assert_eq!(squat.unwrap()[0].code, "ID_RESERVED");
    // Not even an operator may open it: only Puente makes system ids.
    let squat = operator.create_accounts(vec![NewAccount::new("bank-a", "USD").id(&hub).0]).await;
    assert_eq!(squat.unwrap()[0].code, "ID_RESERVED");

    let mut settlement = operator.settlement();
    let mut settlement_account = HashMap::new();
    let mut operating = HashMap::new();
    for bank in ["bank-a", "bank-b"] {
        let ops = operator.create_account(NewAccount::new(bank, "USD")).await.unwrap().id;
        let settle =
            operator.create_account(NewAccount::new(bank, "USD").holder_ref("settlement")).await.unwrap().id;
        settlement
            .set_participant_profile(pb::SetParticipantProfileRequest {
                profile: Some(usd_profile(bank, &settle)),
            })
            .await
            .unwrap();
        operating.insert(bank, ops);
        settlement_account.insert(bank, settle);
    }
    let obligation = NewTransfer::new(&operating["bank-a"], &operating["bank-b"], "USD", "25.00");
    operator.transfer(obligation).await.unwrap();

    // The settlement transfers of window 1, attempt 0, for both banks: the squatter sends them
    // between its own accounts before the run.
    let (own_a, own_b) = (
        mallory.create_account(NewAccount::new("mallory", "USD")).await.unwrap().id,
        mallory.create_account(NewAccount::new("mallory", "USD")).await.unwrap().id,
    );
    for bank in ["bank-a", "bank-b"] {
        let id = uuid_text(puente_ledger::settlement::settlement_transfer_id(1, 0, bank));
        let results =
            mallory.create_transfers(vec![NewTransfer::new(&own_a, &own_b, "USD", "1.00").id(&id).0]);
        assert_eq!(results.await.unwrap()[0].code, "ID_RESERVED", "settlement transfer id of {bank}");
    }

    let closed = settlement
        .close_window(pb::CloseWindowRequest { window_id: 0, currency_code: "USD".into() })
        .await
        .unwrap()
        .into_inner();
    let window = closed.window.unwrap();
    assert_eq!(window.window_id, 1);
    let run =
        settlement.run_settlement(pb::RunSettlementRequest { window_id: 1 }).await.unwrap().into_inner();
    assert_eq!(run.window.unwrap().state, pb::WindowState::Settling as i32, "settlement went through");
    assert_eq!(operator.get_account(&settlement_account["bank-a"]).await.unwrap().posted_balance, "-25.00");
    assert_eq!(operator.get_account(&settlement_account["bank-b"]).await.unwrap().posted_balance, "25.00");
    assert_eq!(operator.get_account(&hub).await.unwrap().participant, "puente-hub");
}

/// Puente's own participants cannot be registered, so nobody can become the FX house or the
/// hub and own their accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_participants_and_upper_case_ids_cannot_be_registered() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    for id in ["puente-house", "puente-hub", "puente-anything", "Bank-A", "BANK"] {
        let error = operator.create_participant(id, "x", pb::Role::Participant).await.unwrap_err();
        assert_eq!(status(error).0, Code::InvalidArgument, "{id}");
    }
    // Accounts only for registered participants, and not for Puente's own.
    let refused = operator.create_accounts(vec![NewAccount::new("nobody-yet", "USD").0]).await.unwrap();
    assert_eq!(refused[0].code, "PARTICIPANT_NOT_FOUND");
    let refused = operator.create_accounts(vec![NewAccount::new("puente-house", "USD").0]).await.unwrap();
    assert_eq!(refused[0].code, "PARTICIPANT_INVALID");
    participant(&mut operator, "nobody-yet").await;
    let opened = operator.create_accounts(vec![NewAccount::new("nobody-yet", "USD").0]).await.unwrap();
    assert_eq!(opened[0].code, "OK");
}

const FX_CONFIG: &str = r#"
[fx]
cancellation_window_ms = 1800000
"#;

/// Finding 2, the remittance case: the recipient sees the legs (and so the quote id), and
/// pre-creates the id of the cancel's void to block the sender's right to cancel. The sender
/// also tries to void its own leg alone (refund itself while the recipient still gets paid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipient_cannot_block_a_cancel_and_the_sender_cannot_void_one_leg() {
    let dir = temp_dir();
    let config = dir.path().join("puente.toml");
    std::fs::write(&config, FX_CONFIG).unwrap();
    let server = Server::try_start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("{log}"));
    let mut operator = server.client().await;
    let mut sender = fintech(&mut operator, &server.addr, "remit-app").await;
    let mut recipient = fintech(&mut operator, &server.addr, "mx-bank").await;
    participant(&mut operator, "treasury").await;
    let funding = operator.create_account(NewAccount::new("treasury", "USD")).await.unwrap().id;
    let wallet = sender.create_account(NewAccount::new("remit-app", "USD").no_overdraft()).await.unwrap().id;
    let payee = recipient.create_account(NewAccount::new("mx-bank", "MXN")).await.unwrap().id;
    let spare = recipient.create_account(NewAccount::new("mx-bank", "MXN")).await.unwrap().id;
    operator.transfer(NewTransfer::new(&funding, &wallet, "USD", "500.00")).await.unwrap();
    operator.set_rate("USD", "MXN", "18.9125", "operator").await.unwrap();

    let quote = sender
        .quote("remit-app", pb::FxSegment::Remittance, "USD", "MXN", Fixed::Send("100.00"))
        .await
        .unwrap();
    let done = sender.execute_quote(&quote, &wallet, &payee, &new_id()).await.unwrap();
    assert_eq!(done.state, pb::FxExecutionState::Held as i32);

    // The recipient sees the incoming leg and its quote id.
    let incoming = recipient
        .list_transfers(pb::ListTransfersRequest { account_id: payee.clone(), ..Default::default() });
    let incoming = incoming.await.unwrap().transfers;
    assert_eq!(incoming.len(), 1);
    assert!(incoming[0].reference.contains(&quote.id), "{:?}", incoming[0]);
    let quote_id = *uuid::Uuid::parse_str(&quote.id).unwrap().as_bytes();
    for n in 1..=4 {
        let void = uuid_text(puente_server::fx_desk::void_id(&quote_id, n));
        let squat = NewTransfer::new(&payee, &spare, "MXN", "0.01").id(&void).pending(0).0;
        let results = recipient.create_transfers(vec![squat]).await.unwrap();
        assert_eq!(results[0].code, "ID_RESERVED", "void id of leg {n}");
    }
    // The sender voids its own first leg directly: not its to resolve.
    let leg = uuid_text(puente_server::fx_desk::leg_id(&quote_id, 1));
    let results = sender.create_transfers(vec![NewTransfer::void(&leg, "USD").0]).await.unwrap();
    assert_eq!(results[0].code, "PENDING_TRANSFER_NOT_FOUND");
    assert_eq!(sender.get_account(&wallet).await.unwrap().posted_balance, "500.00");

    // The legal right to cancel holds: everything comes back, the recipient gets nothing.
    let cancelled = sender.cancel_transfer(&quote.id).await.unwrap();
    assert!(!cancelled.replayed);
    let after = sender.get_account(&wallet).await.unwrap();
    assert_eq!((after.posted_balance.as_str(), after.available_balance.as_str()), ("500.00", "500.00"));
    let payee_after = recipient.get_account(&payee).await.unwrap();
    assert_eq!((payee_after.credits_pending.as_str(), payee_after.posted_balance.as_str()), ("0.00", "0.00"));
}

/// Finding 4: B sends a transfer under id X debiting A's account; it fails and is remembered.
/// A's genuine transfer X must not replay B's failure, and A must not read B's attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_participants_failed_attempt_neither_binds_nor_reveals_the_owners_id() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    let mut a = fintech(&mut operator, &server.addr, "fintech-a").await;
    let mut b = fintech(&mut operator, &server.addr, "fintech-b").await;
    participant(&mut operator, "treasury").await;
    let funding = operator.create_account(NewAccount::new("treasury", "USD")).await.unwrap().id;
    let a_wallet = a.create_account(NewAccount::new("fintech-a", "USD").no_overdraft()).await.unwrap().id;
    let a_other = a.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let b_wallet = b.create_account(NewAccount::new("fintech-b", "USD").no_overdraft()).await.unwrap().id;
    operator.transfer(NewTransfer::new(&funding, &a_wallet, "USD", "100.00")).await.unwrap();

    let x = new_id();
    let attack = NewTransfer::new(&a_wallet, &b_wallet, "USD", "99.00")
        .id(&x)
        .reference("b-was-here")
        .metadata("b", "secret");
    let results = b.create_transfers(vec![attack.0.clone()]).await.unwrap();
    assert_eq!(results[0].code, "DEBIT_ACCOUNT_NOT_FOUND");
    // A's own transfer under X: a new transfer, not B's failure replayed.
    let genuine = NewTransfer::new(&a_wallet, &a_other, "USD", "10.00").id(&x).reference("a-rent");
    let results = a.create_transfers(vec![genuine.0.clone()]).await.unwrap();
    assert_eq!((results[0].code.as_str(), results[0].replayed), ("OK", false));
    assert_eq!(a.get_account(&a_other).await.unwrap().posted_balance, "10.00");
    // A reads its own transfer, nothing of B's attempt.
    let seen = a.get_transfer(&x).await.unwrap();
    assert_eq!((seen.reference.as_str(), seen.state), ("a-rent", pb::TransferState::Posted as i32));
    assert!(seen.metadata.is_empty());
    // B's retry gets B's first outcome; B never sees A's transfer.
    let retry = b.create_transfers(vec![attack.0]).await.unwrap();
    assert_eq!((retry[0].code.as_str(), retry[0].replayed), ("DEBIT_ACCOUNT_NOT_FOUND", true));
    let b_view = b.get_transfer(&x).await.unwrap();
    assert_eq!(b_view.state, pb::TransferState::Failed as i32);
    assert_eq!(b_view.failure_code, "DEBIT_ACCOUNT_NOT_FOUND");
    assert!(b_view.reference.is_empty() && b_view.metadata.is_empty(), "a failure keeps no free text");
    // A's retry replays A's own transfer.
    let again = a.create_transfers(vec![genuine.0]).await.unwrap();
    assert_eq!((again[0].code.as_str(), again[0].replayed), ("OK", true));

    // A failed attempt of A that names B's account as the credit is not B's to read.
    let y = new_id();
    let too_much = NewTransfer::new(&a_wallet, &b_wallet, "USD", "1000.00").id(&y).reference("a-private");
    let results = a.create_transfers(vec![too_much.0]).await.unwrap();
    assert_eq!(results[0].code, "EXCEEDS_CREDITS");
    assert_eq!(status(b.get_transfer(&y).await.unwrap_err()).0, Code::NotFound);
    // And B may use Y for itself: A's failure binds only A.
    let own = NewTransfer::new(&b_wallet, &a_wallet, "USD", "0.01").id(&y);
    let results = b.create_transfers(vec![own.0]).await.unwrap();
    assert_eq!(results[0].code, "EXCEEDS_CREDITS", "B's own, separate outcome (its wallet is empty)");
    assert!(!results[0].replayed);
}

fn pii_key_file(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pii.keys");
    std::fs::write(&path, format!("k1:{}\n", "5c".repeat(32))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Finding 5: another participant uses up a customer's KYC month with reservations it voids
/// or lets expire, and probes the customer's exact headroom with linked chains that are bound
/// to fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_reservations_give_kyc_room_back_and_probing_stops_after_five_refusals() {
    let dir = temp_dir();
    let keys = pii_key_file(dir.path());
    let server = Server::try_start(&dir.path().join("data"), &["--pii-key-file", keys.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("{log}"));
    let mut operator = server.client().await;
    let mut a = fintech(&mut operator, &server.addr, "fintech-a").await;
    let mut b = fintech(&mut operator, &server.addr, "fintech-b").await;
    let mut holders = pb::holder_service_client::HolderServiceClient::new(operator.channel());
    holders
        .set_kyc_policy(pb::SetKycPolicyRequest { udi_rate: "8.70".into(), us_tiers: vec![] })
        .await
        .unwrap();
    let mut a_holders = pb::holder_service_client::HolderServiceClient::new(a.channel());
    let ana = pb::Holder {
        holder_id: "ana".into(),
        kind: pb::HolderKind::Individual as i32,
        country: "MX".into(),
        kyc_tier: "MX_NIVEL_2".into(),
        personal_data: Some(pb::HolderPersonalData { full_name: "Ana".into(), ..Default::default() }),
        ..Default::default()
    };
    a_holders.create_holder(pb::CreateHolderRequest { holder: Some(ana) }).await.unwrap();
    let usage = |client: &Client| {
        let mut holders = pb::holder_service_client::HolderServiceClient::new(client.channel());
        async move {
            holders
                .get_holder_usage(pb::GetHolderUsageRequest {
                    participant: String::new(),
                    holder_id: "ana".into(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    // Nivel 2: 3,000 UDIs a month at 8.70 = MXN 26,100.00.
    let ana_mxn = a.create_account(NewAccount::new("fintech-a", "MXN").holder_ref("ana")).await.unwrap().id;
    let b_funds = b.create_account(NewAccount::new("fintech-b", "MXN")).await.unwrap().id;

    // Reservations to ana, voided or left to expire, leave her month as it was.
    let held = NewTransfer::new(&b_funds, &ana_mxn, "MXN", "20000.00").pending(0);
    let held_id = held.0.id.clone();
    b.transfer(held).await.unwrap();
    assert_eq!(usage(&a).await.credited, "20000.00");
    b.transfer(NewTransfer::void(&held_id, "MXN")).await.unwrap();
    assert_eq!(usage(&a).await.credited, "0.00", "a void gives the room back");
    b.transfer(NewTransfer::new(&b_funds, &ana_mxn, "MXN", "26000.00").pending(200)).await.unwrap();
    let expired = eventually(Duration::from_secs(10), || {
        let a = a.clone();
        async move { usage(&a).await.credited == "0.00" }
    })
    .await;
    assert!(expired, "an expiry gives the room back");
    // A partial post counts only what was posted.
    let held = NewTransfer::new(&b_funds, &ana_mxn, "MXN", "1000.00").pending(0);
    let held_id = held.0.id.clone();
    b.transfer(held).await.unwrap();
    b.transfer(NewTransfer::post(&held_id, "MXN", Some("100.00"))).await.unwrap();
    assert_eq!(usage(&a).await.credited, "100.00");

    // Probing: [credit M to ana, linked][post of a pending transfer that does not exist]. The
    // chain is bound to fail, so nothing moves; which event is blamed says whether M fit.
    let probe = |amount: &str| {
        vec![
            NewTransfer::new(&b_funds, &ana_mxn, "MXN", amount).linked().0,
            NewTransfer::post(&new_id(), "MXN", None).0,
        ]
    };
    let mut refusals = 0;
    let (mut low, mut high) = (0u64, 2_610_000u64); // minor units; the true headroom is 2,600,000
    for _ in 0..30 {
        let mid = (low + high).div_ceil(2);
        let amount = format!("{}.{:02}", mid / 100, mid % 100);
        let results = b.create_transfers(probe(&amount)).await.unwrap();
        if results[0].code == "KYC_LIMIT_EXCEEDED" {
            refusals += 1;
            high = mid - 1;
        } else {
            assert_eq!(results[1].code, "PENDING_TRANSFER_NOT_FOUND");
            low = mid;
        }
    }
    assert_ne!(low, 2_600_000, "the probe must not find the exact headroom");
    assert!(refusals >= 5);
    // After five refusals, even a credit that fits is refused for this sender...
    let small =
        b.create_transfers(vec![NewTransfer::new(&b_funds, &ana_mxn, "MXN", "0.01").0]).await.unwrap();
    assert_eq!(small[0].code, "KYC_LIMIT_EXCEEDED");
    // ...while her own participant credits her as before, and sees the probing.
    participant(&mut operator, "treasury").await;
    let treasury = operator.create_account(NewAccount::new("treasury", "MXN")).await.unwrap().id;
    operator.transfer(NewTransfer::new(&treasury, &ana_mxn, "MXN", "50.00")).await.unwrap();
    let seen = usage(&a).await;
    assert_eq!(seen.credited, "150.00");
    // Every refusal B collected shows: the probes and the small credit after them.
    assert_eq!(seen.refused_credits_from_others, refusals + 1);
}

/// Finding 6: streams opened and cancelled before anything was delivered end on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_streams_that_never_sent_end_on_the_server() {
    let dir = temp_dir();
    let metrics_addr = free_port();
    let server = Server::try_start(&dir.path().join("data"), &["--metrics-listen", &metrics_addr])
        .unwrap_or_else(|log| panic!("{log}"));
    let mut operator = server.client().await;
    let mut idle = fintech(&mut operator, &server.addr, "idle").await;
    for _ in 0..20 {
        let mut stream = idle.stream_transfers(0).await.unwrap();
        // Nothing to deliver: the server is waiting on live commits. Cancel.
        let next = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
        assert!(next.is_err(), "an idle participant's feed has nothing to send");
        drop(stream);
    }
    let drained = eventually(Duration::from_secs(10), || {
        let addr = metrics_addr.clone();
        async move { feed_subscribers(&addr).await == Some(0) }
    })
    .await;
    assert!(drained, "feeds still open on the server: {:?}", feed_subscribers(&metrics_addr).await);
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `puente_feed_subscribers` from the server's metrics.
async fn feed_subscribers(addr: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix("puente_feed_subscribers "))
        .and_then(|v| v.trim().parse().ok())
}

/// Finding 8: a key hash already issued (to anyone, revoked or not) cannot be registered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_hash_already_issued_is_refused() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    let operator_key = crate::support::operator_key(&server.addr);
    let operator_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, operator_key.as_bytes()));
    let mut participants = operator.participants();
    let create = |id: &str, key_id: &str, hash: &str| pb::CreateParticipantRequest {
        participant_id: id.into(),
        display_name: id.into(),
        role: pb::Role::Participant as i32,
        key: Some(pb::NewApiKey { key_id: key_id.into(), key_sha256: hash.into() }),
    };
    // The operator's own key hash, registered for a new participant.
    let error = participants.create_participant(create("mallory", "mk1", &operator_hash)).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    // A revoked key's hash.
    let (_, old) = operator.create_participant("fintech-a", "A", pb::Role::Participant).await.unwrap();
    let old_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, old.key.as_bytes()));
    operator.rotate_key("fintech-a", true).await.unwrap();
    let error = participants.create_participant(create("mallory", "mk2", &old_hash)).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    let error = participants
        .issue_api_key(pb::IssueApiKeyRequest {
            participant_id: "fintech-a".into(),
            key: Some(pb::NewApiKey { key_id: "again1".into(), key_sha256: old_hash.clone() }),
            revoke_other_keys: false,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    // The revoked key still authenticates nobody; the operator's key is still the operator's.
    let mut revoked = client_with_key(&server.addr, &old.key).await;
    assert_eq!(revoked.whoami().await.unwrap_err().reason(), Some("UNAUTHENTICATED"));
    let me = client_with_key(&server.addr, &operator_key).await.whoami().await.unwrap();
    assert_eq!(me.role, pb::Role::Operator as i32);
}

/// Finding 9: the feed carries every balance change, the ledger's own expiry voids and
/// automatic posts included, so replaying it reproduces every balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_feed_reproduces_every_balance_expiries_and_auto_posts_included() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    let (source, wallets) = crate::support::accounts(&mut operator, "fintech-a", "USD", 2).await;
    operator.transfer(NewTransfer::new(&source, &wallets[0], "USD", "5.00")).await.unwrap();
    let mut auto = NewTransfer::new(&wallets[0], &wallets[1], "USD", "4.00").pending(100);
    auto.0.post_on_expiry = true;
    let auto_id = auto.0.id.clone();
    operator.transfer(auto).await.unwrap();
    let expiring = NewTransfer::new(&wallets[0], &wallets[1], "USD", "0.99").pending(100);
    let expiring_id = expiring.0.id.clone();
    operator.transfer(expiring).await.unwrap();
    operator.transfer(NewTransfer::new(&source, &wallets[1], "USD", "0.01")).await.unwrap();
    let resolved = eventually(Duration::from_secs(10), || {
        let mut client = operator.clone();
        let (a, e) = (auto_id.clone(), expiring_id.clone());
        async move {
            let a = client.get_transfer(&a).await.unwrap().state;
            let e = client.get_transfer(&e).await.unwrap().state;
            a == pb::TransferState::PendingPosted as i32 && e == pb::TransferState::PendingExpired as i32
        }
    })
    .await;
    assert!(resolved, "the pending transfers did not reach their timeouts");

    // Replay the feed: (debits_pending, debits_posted, credits_pending, credits_posted).
    let mut stream = operator.stream_transfers(0).await.unwrap();
    let mut feed = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
        feed.push(item.unwrap().transfer.unwrap());
    }
    let mut balances: HashMap<String, [i128; 4]> = HashMap::new();
    let mut pendings: HashMap<String, (String, String, i128)> = HashMap::new();
    for t in &feed {
        let amount = minor(&t.effective_amount.as_ref().unwrap().value);
        match pb::TransferKind::try_from(t.kind).unwrap() {
            pb::TransferKind::SinglePhase => {
                balances.entry(t.debit_account_id.clone()).or_default()[1] += amount;
                balances.entry(t.credit_account_id.clone()).or_default()[3] += amount;
            }
            pb::TransferKind::Pending => {
                balances.entry(t.debit_account_id.clone()).or_default()[0] += amount;
                balances.entry(t.credit_account_id.clone()).or_default()[2] += amount;
                pendings
                    .insert(t.id.clone(), (t.debit_account_id.clone(), t.credit_account_id.clone(), amount));
            }
            kind @ (pb::TransferKind::PostPending | pb::TransferKind::VoidPending) => {
                let (debit, credit, reserved) = pendings[&t.pending_id].clone();
                let posted = if kind == pb::TransferKind::PostPending { amount } else { 0 };
                let d = balances.entry(debit).or_default();
                d[0] -= reserved;
                d[1] += posted;
                let c = balances.entry(credit).or_default();
                c[2] -= reserved;
                c[3] += posted;
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
    let system: Vec<&pb::Transfer> = feed.iter().filter(|t| t.system_generated).collect();
    assert_eq!(system.len(), 2, "the expiry void and the automatic post are in the feed: {feed:#?}");
    for account in [&source, &wallets[0], &wallets[1]] {
        let a = operator.get_account(account).await.unwrap();
        let expected = [
            minor(&a.debits_pending),
            minor(&a.debits_posted),
            minor(&a.credits_pending),
            minor(&a.credits_posted),
        ];
        assert_eq!(balances.get(account).copied().unwrap_or_default(), expected, "account {account}");
    }
    assert_eq!(operator.get_account(&wallets[1]).await.unwrap().posted_balance, "4.01");
    // The records are transfers like any other: listed, and read by id.
    let listed = operator
        .list_transfers(pb::ListTransfersRequest { account_id: wallets[1].clone(), ..Default::default() })
        .await
        .unwrap()
        .transfers;
    assert_eq!(listed.iter().filter(|t| t.system_generated).count(), 2, "{listed:#?}");
    let by_id = operator.get_transfer(&system[0].id).await.unwrap();
    assert_eq!(by_id.pending_id, system[0].pending_id);
}

/// Finding 6 (second half): a participant's feed is its own transfers, credits from others
/// included, read from its own index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_feed_is_exactly_its_own_transfers() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    let mut a = fintech(&mut operator, &server.addr, "fintech-a").await;
    let (source, others) = crate::support::accounts(&mut operator, "noise", "USD", 2).await;
    let a_wallet = a.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let mut mine = Vec::new();
    for i in 0..30 {
        let noise = NewTransfer::new(&source, &others[i % 2], "USD", "1.00");
        operator.transfer(noise).await.unwrap();
        if i % 10 == 0 {
            let credit = NewTransfer::new(&source, &a_wallet, "USD", "2.00");
            mine.push(credit.0.id.clone());
            operator.transfer(credit).await.unwrap();
        }
    }
    let mut stream = a.stream_transfers(0).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < mine.len() {
        let item =
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        seen.push(item.transfer.unwrap().id);
    }
    assert_eq!(seen, mine);
    assert!(tokio::time::timeout(Duration::from_millis(200), stream.next()).await.is_err(), "nothing else");
}

/// Finding 7 (storage): a failure is remembered compactly, whatever the request carried, so a
/// participant sending full batches of failing transfers with maximal metadata cannot grow the
/// journal by megabytes per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_cost_a_small_fixed_size_to_store_whatever_their_metadata() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let mut operator = server.client().await;
    let mut flood = fintech(&mut operator, &server.addr, "flood").await;
    let from = flood.create_account(NewAccount::new("flood", "USD").no_overdraft()).await.unwrap().id;
    let to = flood.create_account(NewAccount::new("flood", "USD")).await.unwrap().id;
    let journal = journal_segment(&data);
    let before = std::fs::metadata(&journal).unwrap().len();
    const EVENTS: usize = 2_000;
    let batch: Vec<pb::Transfer> = (0..EVENTS)
        .map(|i| {
            let mut t = NewTransfer::new(&from, &to, "USD", "1.00").reference(&"r".repeat(128));
            for k in 0..16 {
                t = t.metadata(&format!("{k:0>64}"), &format!("{i:0>256}"));
            }
            t.0
        })
        .collect();
    let wire_bytes: usize = batch.iter().map(prost::Message::encoded_len).sum();
    let results = flood.create_transfers(batch).await.unwrap();
    assert!(results.iter().all(|r| r.code == "EXCEEDS_CREDITS"), "every one fails on the state");
    let grown = std::fs::metadata(&journal).unwrap().len() - before;
    assert!(wire_bytes / EVENTS > 5_000, "a maximal request: {} bytes per transfer", wire_bytes / EVENTS);
    assert!(grown / EVENTS as u64 <= 200, "each failure cost {} journal bytes", grown / EVENTS as u64);
}
