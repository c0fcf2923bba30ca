//! The LedgerService over gRPC, as a fintech integrating with Puente would use it.

use std::time::Duration;

use puente_client::{ClientError, NewAccount, NewTransfer, new_id, pb};
use tokio_stream::StreamExt;

use crate::support::{Server, accounts, all_lines, eventually, minor, temp_dir};

fn status_parts(error: ClientError) -> (tonic::Code, Option<String>, Vec<(String, String)>) {
    match error {
        ClientError::Status { code, reason, violations, .. } => (code, reason, violations),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_transfers_statement_and_pagination() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", 4).await;

    // Fund every wallet, then move money between two of them.
    for (i, wallet) in wallets.iter().enumerate() {
        let amount = format!("{}.25", 100 * (i + 1));
        client
            .transfer(NewTransfer::new(&source, wallet, "USD", &amount).reference("funding"))
            .await
            .unwrap();
    }
    client.transfer(NewTransfer::new(&wallets[1], &wallets[0], "USD", "50.50")).await.unwrap();

    let a0 = client.get_account(&wallets[0]).await.unwrap();
    assert_eq!(a0.posted_balance, "150.75");
    assert_eq!(a0.credits_posted, "150.75");
    let a1 = client.get_account(&wallets[1]).await.unwrap();
    assert_eq!(a1.available_balance, "149.75");
    let src = client.get_account(&source).await.unwrap();
    assert_eq!(src.posted_balance, "-1001.00");

    // Statement: running balance after every line, opening and closing balances.
    let statement = client
        .statement(pb::GetAccountStatementRequest { account_id: wallets[0].clone(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(statement.opening_posted_balance, "0.00");
    let balances: Vec<_> = statement.lines.iter().map(|l| l.posted_balance.as_str()).collect();
    assert_eq!(balances, ["100.25", "150.75"]);
    assert_eq!(statement.closing_posted_balance, "150.75");
    // A statement starting after the first line opens at the first line's balance.
    let later = client
        .statement(pb::GetAccountStatementRequest {
            account_id: wallets[0].clone(),
            start_time: statement.lines[1].time,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(later.opening_posted_balance, "100.25");
    assert_eq!(later.lines.len(), 1);

    // List accounts of one participant, two per page.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client.list_accounts("fintech-a", 2, &token).await.unwrap();
        assert!(page.accounts.len() <= 2);
        seen.extend(page.accounts.into_iter().map(|a| a.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert!(client.list_accounts("fintech-b", 10, "").await.unwrap().accounts.is_empty());

    // List transfers: both orders, paginated, in a time range.
    let list = |order: &str, page_token: &str| pb::ListTransfersRequest {
        account_id: source.clone(),
        order_by: order.to_owned(),
        page_size: 3,
        page_token: page_token.to_owned(),
        ..Default::default()
    };
    let first = client.list_transfers(list("create_time", "")).await.unwrap();
    assert_eq!(first.transfers.len(), 3);
    let second = client.list_transfers(list("create_time", &first.next_page_token)).await.unwrap();
    assert_eq!(second.transfers.len(), 1);
    assert!(second.next_page_token.is_empty());
    let positions: Vec<u64> = first.transfers.iter().chain(&second.transfers).map(|t| t.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let newest = client.list_transfers(list("create_time desc", "")).await.unwrap();
    assert_eq!(newest.transfers[0].position, *positions.last().unwrap());
    let ranged = client
        .list_transfers(pb::ListTransfersRequest {
            account_id: source.clone(),
            start_time: first.transfers[1].create_time,
            end_time: first.transfers[2].create_time,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ranged.transfers.len(), 1);
    assert_eq!(ranged.transfers[0].id, first.transfers[1].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_changes_nothing() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", 2).await;

    // One bad transfer in a batch: the whole request is refused, nothing moves.
    let good = NewTransfer::new(&source, &wallets[0], "USD", "10.00").0;
    let bad = NewTransfer::new(&source, &wallets[1], "USD", "10.001").0;
    let error = client.create_transfers(vec![good.clone(), bad]).await.unwrap_err();
    let (code, reason, violations) = status_parts(error);
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(reason.as_deref(), Some("INVALID_FIELD"));
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].0, "transfers[1].amount.value");
    assert!(violations[0].1.contains("USD allows at most 2"), "{}", violations[0].1);
    assert_eq!(client.get_account(&wallets[0]).await.unwrap().posted_balance, "0.00");
    assert!(matches!(
        client.get_transfer(&good.id).await,
        Err(ClientError::Status { code: tonic::Code::NotFound, .. })
    ));

    // Several violations are all reported, each with its path.
    let mut wrong = NewTransfer::new("not-a-uuid", &wallets[1], "EUR", "-5").0;
    wrong.id = "xyz".into();
    let (_, _, violations) = status_parts(client.create_transfers(vec![wrong]).await.unwrap_err());
    let fields: Vec<_> = violations.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(
        fields,
        ["transfers[0].id", "transfers[0].debit_account_id", "transfers[0].amount.currency_code"]
    );

    // Floats never appear, and exotic decimal spellings are refused.
    for value in ["1e3", "1.5.0", "", " 1", "NaN"] {
        let t = NewTransfer::new(&source, &wallets[0], "USD", value).0;
        let (code, _, _) = status_parts(client.create_transfers(vec![t]).await.unwrap_err());
        assert_eq!(code, tonic::Code::InvalidArgument, "{value:?}");
    }

    // Missing kind.
    let mut t = NewTransfer::new(&source, &wallets[0], "USD", "1.00").0;
    t.kind = 0;
    let (_, _, violations) = status_parts(client.create_transfers(vec![t]).await.unwrap_err());
    assert_eq!(violations[0].0, "transfers[0].kind");

    // Batch limits.
    let (code, reason, _) = status_parts(client.create_transfers(vec![]).await.unwrap_err());
    assert_eq!((code, reason.as_deref()), (tonic::Code::InvalidArgument, Some("INVALID_BATCH")));
    let too_many: Vec<_> =
        (0..8_190).map(|_| NewTransfer::new(&source, &wallets[0], "USD", "0.01").0).collect();
    let (code, reason, _) = status_parts(client.create_transfers(too_many).await.unwrap_err());
    assert_eq!((code, reason.as_deref()), (tonic::Code::InvalidArgument, Some("INVALID_BATCH")));
    assert_eq!(client.get_account(&wallets[0]).await.unwrap().posted_balance, "0.00");

    // Not found, with ErrorInfo; page size bounds.
    let (code, reason, _) = status_parts(client.get_account(&new_id()).await.unwrap_err());
    assert_eq!((code, reason.as_deref()), (tonic::Code::NotFound, Some("ACCOUNT_NOT_FOUND")));
    let (code, reason, _) = status_parts(client.get_transfer(&new_id()).await.unwrap_err());
    assert_eq!((code, reason.as_deref()), (tonic::Code::NotFound, Some("TRANSFER_NOT_FOUND")));
    let (code, _, violations) = status_parts(client.list_accounts("", 5_000, "").await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(violations[0].0, "page_size");

    // Per-event refusals are results, not errors, and are typed codes.
    let results = client
        .create_transfers(vec![
            NewTransfer::new(&wallets[0], &wallets[1], "USD", "1.00").0,
            NewTransfer::new(&source, &source, "USD", "1.00").0,
            NewTransfer::new(&source, &new_id(), "USD", "1.00").0,
        ])
        .await
        .unwrap();
    let codes: Vec<_> = results.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["EXCEEDS_CREDITS", "ACCOUNTS_MUST_BE_DIFFERENT", "CREDIT_ACCOUNT_NOT_FOUND"]);

    // Currency must match the accounts.
    let mxn = client.create_account(NewAccount::new("fintech-a", "MXN")).await.unwrap();
    let result =
        client.create_transfers(vec![NewTransfer::new(&source, &mxn.id, "USD", "1.00").0]).await.unwrap();
    assert_eq!(result[0].code, "ACCOUNTS_MUST_HAVE_SAME_CURRENCY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_over_the_wire() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "MXN", 2).await;

    let transfer = NewTransfer::new(&source, &wallets[0], "MXN", "5000.00");
    let first = client.transfer(transfer.clone()).await.unwrap();
    let retry = client.transfer(transfer.clone()).await.unwrap();
    assert!(!first.replayed);
    assert!(retry.replayed);
    assert_eq!(first.position, retry.position);
    assert_eq!(client.get_account(&wallets[0]).await.unwrap().posted_balance, "5000.00");

    let mut changed = transfer.clone();
    changed.0.amount = Some(pb::Money { currency_code: "MXN".into(), value: "5000.01".into() });
    let error = client.transfer(changed).await.unwrap_err();
    assert_eq!(error.reason(), Some("EXISTS_WITH_DIFFERENT_AMOUNT"));
    let mut changed = transfer.clone();
    changed.0.reference = "other".into();
    assert_eq!(client.transfer(changed).await.unwrap_err().reason(), Some("EXISTS_WITH_DIFFERENT_REFERENCE"));

    // A transfer that failed on funds stays failed, even once funds arrive.
    let overdraw = NewTransfer::new(&wallets[1], &wallets[0], "MXN", "10.00");
    assert_eq!(client.transfer(overdraw.clone()).await.unwrap_err().reason(), Some("EXCEEDS_CREDITS"));
    client.transfer(NewTransfer::new(&source, &wallets[1], "MXN", "100.00")).await.unwrap();
    let results = client.create_transfers(vec![overdraw.0.clone()]).await.unwrap();
    assert_eq!(results[0].code, "EXCEEDS_CREDITS");
    assert!(results[0].replayed);
    let failed = client.get_transfer(&overdraw.0.id).await.unwrap();
    assert_eq!(failed.state, pb::TransferState::Failed as i32);
    assert_eq!(failed.failure_code, "EXCEEDS_CREDITS");

    // Accounts are idempotent too.
    let account = NewAccount::new("fintech-a", "USD").holder_ref("h1");
    let created = client.create_accounts(vec![account.0.clone()]).await.unwrap();
    let again = client.create_accounts(vec![account.0.clone()]).await.unwrap();
    assert_eq!((created[0].code.as_str(), created[0].replayed), ("OK", false));
    assert_eq!((again[0].code.as_str(), again[0].replayed), ("OK", true));
    let mut other = account.0.clone();
    other.currency_code = "MXN".into();
    assert_eq!(client.create_accounts(vec![other]).await.unwrap()[0].code, "EXISTS_WITH_DIFFERENT_CURRENCY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_linked_chains_and_expiry() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "remit-app", "USD", 2).await;
    client.transfer(NewTransfer::new(&source, &wallets[0], "USD", "300.00")).await.unwrap();

    // Reserve, post part of it: the rest returns to available.
    let hold = NewTransfer::new(&wallets[0], &wallets[1], "USD", "200.00").pending(0);
    client.transfer(hold.clone()).await.unwrap();
    let a0 = client.get_account(&wallets[0]).await.unwrap();
    assert_eq!((a0.posted_balance.as_str(), a0.available_balance.as_str()), ("300.00", "100.00"));
    client.transfer(NewTransfer::post(&hold.0.id, "USD", Some("150.00"))).await.unwrap();
    let a0 = client.get_account(&wallets[0]).await.unwrap();
    assert_eq!((a0.posted_balance.as_str(), a0.available_balance.as_str()), ("150.00", "150.00"));
    assert_eq!(
        client.transfer(NewTransfer::void(&hold.0.id, "USD")).await.unwrap_err().reason(),
        Some("PENDING_TRANSFER_ALREADY_POSTED")
    );
    assert_eq!(client.get_transfer(&hold.0.id).await.unwrap().state, pb::TransferState::PendingPosted as i32);

    // A linked chain whose second leg fails leaves everything as it was.
    let before = client.get_account(&wallets[1]).await.unwrap();
    let results = client
        .create_transfers(vec![
            NewTransfer::new(&wallets[0], &wallets[1], "USD", "100.00").linked().0,
            NewTransfer::new(&wallets[1], &source, "USD", "99999.00").0,
        ])
        .await
        .unwrap();
    let codes: Vec<_> = results.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["LINKED_EVENT_FAILED", "EXCEEDS_CREDITS"]);
    assert_eq!(client.get_account(&wallets[1]).await.unwrap(), before);
    // An open chain at the end of a batch fails.
    let results = client
        .create_transfers(vec![NewTransfer::new(&wallets[0], &wallets[1], "USD", "1.00").linked().0])
        .await
        .unwrap();
    assert_eq!(results[0].code, "LINKED_EVENT_CHAIN_OPEN");

    // A pending transfer with a timeout releases its funds by itself.
    let expiring = NewTransfer::new(&wallets[0], &wallets[1], "USD", "150.00").pending(300);
    client.transfer(expiring.clone()).await.unwrap();
    assert_eq!(client.get_account(&wallets[0]).await.unwrap().available_balance, "0.00");
    let released = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let id = wallets[0].clone();
        async move { client.get_account(&id).await.unwrap().available_balance == "150.00" }
    })
    .await;
    assert!(released, "the expired reservation was not released");
    assert_eq!(
        client.transfer(NewTransfer::post(&expiring.0.id, "USD", None)).await.unwrap_err().reason(),
        Some("PENDING_TRANSFER_EXPIRED")
    );
    assert_eq!(
        client.get_transfer(&expiring.0.id).await.unwrap().state,
        pb::TransferState::PendingExpired as i32
    );
    let lines = all_lines(&mut client, &wallets[0]).await;
    assert_eq!(lines.last().unwrap().kind, pb::EntryKind::Expired as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_feed_catches_up_then_follows() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "bank-b", "MXN", 1).await;
    for _ in 0..5 {
        client.transfer(NewTransfer::new(&source, &wallets[0], "MXN", "1.00")).await.unwrap();
    }
    let mut feed = client.stream_transfers(0).await.unwrap();
    let mut positions = Vec::new();
    for _ in 0..5 {
        positions.push(feed.next().await.unwrap().unwrap().transfer.unwrap().position);
    }
    // Live: committed after the subscription.
    let live = NewTransfer::new(&source, &wallets[0], "MXN", "2.00");
    client.transfer(live.clone()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), feed.next()).await.unwrap().unwrap().unwrap();
    let next = next.transfer.unwrap();
    assert_eq!(next.id, live.0.id);
    positions.push(next.position);
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    // Resume after a position.
    let mut resumed = client.stream_transfers(positions[3]).await.unwrap();
    assert_eq!(resumed.next().await.unwrap().unwrap().transfer.unwrap().position, positions[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_need_no_local_proto() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::{v1, v1alpha};

    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "puente.v1.LedgerService"] {
        let response =
            health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(response.status, 1, "SERVING for {service:?}");
    }

    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"puente.v1.LedgerService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "puente.v1.LedgerService".into(),
        )),
    };
    let mut stream = alpha.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.next().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_and_restart_keep_everything() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", 1).await;
    let t = NewTransfer::new(&source, &wallets[0], "USD", "42.00");
    let first = client.transfer(t.clone()).await.unwrap();
    // An open feed subscriber must not hold the shutdown up: its stream ends cleanly.
    let mut feed = client.stream_transfers(0).await.unwrap();
    assert!(feed.next().await.unwrap().is_ok());
    assert!(server.terminate().success(), "SIGTERM must exit 0");
    assert!(feed.next().await.is_none_or(|item| item.is_err()), "the feed ends at shutdown");
    drop(client);

    let server = Server::start(&data);
    let mut client = server.client().await;
    assert_eq!(client.get_account(&wallets[0]).await.unwrap().posted_balance, "42.00");
    let retry = client.transfer(t).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.position, first.position);
    // New transfers get later positions than everything before the restart.
    let next = client.transfer(NewTransfer::new(&source, &wallets[0], "USD", "1.00")).await.unwrap();
    assert!(next.position > first.position);
    assert_eq!(minor(&client.get_account(&source).await.unwrap().posted_balance), -4300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_accounts_take_no_new_transfers() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", 2).await;
    client.transfer(NewTransfer::new(&source, &wallets[0], "USD", "10.00")).await.unwrap();

    // Refused while money is reserved.
    let hold = NewTransfer::new(&wallets[0], &wallets[1], "USD", "4.00").pending(0);
    client.transfer(hold.clone()).await.unwrap();
    let (code, reason, _) = status_parts(client.close_account(&wallets[0]).await.unwrap_err());
    assert_eq!(
        (code, reason.as_deref()),
        (tonic::Code::FailedPrecondition, Some("ACCOUNT_HAS_PENDING_TRANSFERS"))
    );
    client.transfer(NewTransfer::void(&hold.0.id, "USD")).await.unwrap();

    let (closed, replayed) = client.close_account(&wallets[0]).await.unwrap();
    assert!(closed.closed && !replayed);
    assert!(client.close_account(&wallets[0]).await.unwrap().1, "closing twice is idempotent");
    assert_eq!(
        client.transfer(NewTransfer::new(&source, &wallets[0], "USD", "1.00")).await.unwrap_err().reason(),
        Some("CREDIT_ACCOUNT_CLOSED")
    );
    assert_eq!(
        client.transfer(NewTransfer::new(&wallets[0], &source, "USD", "1.00")).await.unwrap_err().reason(),
        Some("DEBIT_ACCOUNT_CLOSED")
    );
    // Its history and balances stay readable.
    assert_eq!(client.get_account(&wallets[0]).await.unwrap().posted_balance, "10.00");
    let (code, reason, _) = status_parts(client.close_account(&new_id()).await.unwrap_err());
    assert_eq!((code, reason.as_deref()), (tonic::Code::NotFound, Some("ACCOUNT_NOT_FOUND")));
}
