//! Authentication, roles, tenant isolation and limits, against the real server.
//!
//! Every RPC of every service (read from the API's own descriptor, so a new RPC cannot be
//! forgotten) is called with no key, a malformed header, a wrong key, a revoked key, and, for
//! operator methods, a participant's key; then every RPC that names a resource is called with
//! another participant's key. Each case checks the error and that nothing changed.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use puente_client::{Client, ConnectOptions, Fixed, NewAccount, NewTransfer, new_id, pb};
use rustls_pki_types::pem::PemObject;
use tonic::Code;

use crate::support::{Server, client_with_key, journal_bytes, operator_key, temp_dir};

/// Methods any authenticated participant may call (the handler then checks ownership).
const PARTICIPANT_METHODS: &[&str] = &[
    "ParticipantService/GetCaller",
    "LedgerService/CreateAccounts",
    "LedgerService/GetAccount",
    "LedgerService/ListAccounts",
    "LedgerService/CloseAccount",
    "LedgerService/CreateTransfers",
    "LedgerService/GetTransfer",
    "LedgerService/ListTransfers",
    "LedgerService/GetAccountStatement",
    "LedgerService/StreamTransfers",
    "FxService/ListRates",
    "FxService/GetQuote",
    "FxService/GetQuoteById",
    "FxService/ListQuotes",
    "FxService/ExecuteQuote",
    "FxService/CancelTransfer",
    "FxService/GetPublicKey",
    "SettlementService/GetParticipantProfile",
    "SettlementService/ListWindows",
    "SettlementService/GetWindow",
    "SettlementService/GetSettlementStatement",
    "SettlementService/ConfirmSettlement",
    "HolderService/CreateHolder",
    "HolderService/GetHolder",
    "HolderService/ListHolders",
    "HolderService/GetHolderUsage",
];

/// Methods only operators may call.
const OPERATOR_METHODS: &[&str] = &[
    "ParticipantService/CreateParticipant",
    "ParticipantService/GetParticipant",
    "ParticipantService/ListParticipants",
    "ParticipantService/IssueApiKey",
    "ParticipantService/RevokeApiKey",
    "ParticipantService/BindCertificate",
    "ParticipantService/UnbindCertificate",
    "FxService/SetRates",
    "FxService/StreamRates",
    "FxService/GetExposure",
    "SettlementService/SetParticipantProfile",
    "SettlementService/ListParticipantProfiles",
    "SettlementService/CloseWindow",
    "SettlementService/RunSettlement",
    "SettlementService/GetSettlementReport",
    "SettlementService/ListSettlementPayments",
    "SettlementService/ReconcileStatements",
    "HolderService/SetKycPolicy",
    "OperationsService/GetServerStatus",
];

const BOOTSTRAP: &str = "ParticipantService/BootstrapOperator";

/// Every `Service/Method` of the puente.v1 API, from its encoded descriptor set.
fn api_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "puente.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("{}/{}", service.name(), method.name()));
            }
        }
    }
    methods.sort();
    methods
}

/// Calls `/puente.v1.<method>` with an empty message and the given `authorization` header;
/// returns the status code (OK when the call passed authentication and ran).
async fn raw_call(addr: &str, method: &str, authorization: Option<&str>) -> Code {
    let channel = puente_client::channel(addr, &ConnectOptions::default()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    let path = format!("/puente.v1.{method}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// What an operator can see of the whole system, and the journal's size: equal before and
/// after means a call changed nothing.
#[derive(Debug, PartialEq)]
struct Snapshot {
    journal_bytes: u64,
    accounts: BTreeMap<String, (String, String, bool)>,
    participants: Vec<(String, Vec<(String, bool)>)>,
    quotes: usize,
    rates: usize,
}

async fn snapshot(operator: &mut Client, data_dir: &Path, participants: &[&str]) -> Snapshot {
    let journal_bytes = journal_bytes(data_dir);
    let accounts = crate::support::all_accounts(operator)
        .await
        .into_iter()
        .map(|a| (a.id, (a.posted_balance, a.available_balance, a.closed)))
        .collect();
    let listed = operator.participants().list_participants(pb::ListParticipantsRequest {}).await.unwrap();
    let participants_now = listed
        .into_inner()
        .participants
        .into_iter()
        .map(|p| (p.id, p.keys.into_iter().map(|k| (k.key_id, k.revoke_time.is_none())).collect()))
        .collect();
    let mut quotes = 0;
    for p in participants {
        quotes += operator.list_quotes(p, 100, "").await.unwrap().quotes.len();
    }
    let rates = operator.list_rates().await.unwrap().len();
    Snapshot { journal_bytes, accounts, participants: participants_now, quotes, rates }
}

fn code_of(error: &puente_client::ClientError) -> Option<Code> {
    match error {
        puente_client::ClientError::Status { code, .. } => Some(*code),
        _ => None,
    }
}

struct World {
    server: Server,
    operator: Client,
    a: Client,
    b: Client,
    a_key: String,
    revoked_key: String,
    a_usd: String,
    a_usd2: String,
    a_mxn: String,
    b_usd: String,
    a_transfer: String,
    a_pending: String,
    b_transfer: String,
    a_quote: pb::FxQuote,
    a_held_quote: pb::FxQuote,
}

async fn world(dir: &tempfile::TempDir) -> World {
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    let (_, a_key) =
        operator.create_participant("fintech-a", "Fintech A", pb::Role::Participant).await.unwrap();
    let (_, b_key) =
        operator.create_participant("fintech-b", "Fintech B", pb::Role::Participant).await.unwrap();
    let (_, revoked) = operator.create_participant("gone", "Gone Inc", pb::Role::Participant).await.unwrap();
    operator.revoke_key("gone", &revoked.key_id).await.unwrap();
    let mut a = client_with_key(&server.addr, &a_key.key).await;
    let mut b = client_with_key(&server.addr, &b_key.key).await;

    // Money comes from an operator-owned funding account.
    crate::support::participant(&mut operator, "treasury").await;
    let funding = operator.create_account(NewAccount::new("treasury", "USD")).await.unwrap().id;
    let a_usd = a.create_account(NewAccount::new("fintech-a", "USD").no_overdraft()).await.unwrap().id;
    let a_usd2 = a.create_account(NewAccount::new("fintech-a", "USD").no_overdraft()).await.unwrap().id;
    let a_mxn = a.create_account(NewAccount::new("fintech-a", "MXN").no_overdraft()).await.unwrap().id;
    let b_usd = b.create_account(NewAccount::new("fintech-b", "USD").no_overdraft()).await.unwrap().id;
    operator.transfer(NewTransfer::new(&funding, &a_usd, "USD", "1000.00")).await.unwrap();
    operator.transfer(NewTransfer::new(&funding, &b_usd, "USD", "1000.00")).await.unwrap();
    let a_transfer = new_id();
    a.transfer(NewTransfer::new(&a_usd, &a_usd2, "USD", "10.00").id(&a_transfer)).await.unwrap();
    let a_pending = new_id();
    a.transfer(NewTransfer::new(&a_usd, &a_usd2, "USD", "5.00").id(&a_pending).pending(0)).await.unwrap();
    // A pays B: a cross-participant transfer (it lands in the open USD settlement window).
    a.transfer(NewTransfer::new(&a_usd, &b_usd, "USD", "20.00")).await.unwrap();
    let b_transfer = new_id();
    b.transfer(NewTransfer::new(&b_usd, &a_usd, "USD", "1.00").id(&b_transfer)).await.unwrap();

    operator.set_rate("USD", "MXN", "18.9125", "test").await.unwrap();
    let a_quote = a.quote("", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("50.00")).await.unwrap();
    let a_held_quote =
        a.quote("fintech-a", pb::FxSegment::Remittance, "USD", "MXN", Fixed::Send("20.00")).await.unwrap();
    let executed = a.execute_quote(&a_held_quote, &a_usd, &a_mxn, &new_id()).await.unwrap();
    assert_eq!(executed.state, pb::FxExecutionState::Held as i32);
    World {
        server,
        operator,
        a,
        b,
        a_key: a_key.key,
        revoked_key: revoked.key,
        a_usd,
        a_usd2,
        a_mxn,
        b_usd,
        a_transfer,
        a_pending,
        b_transfer,
        a_quote,
        a_held_quote,
    }
}

const PARTICIPANTS: &[&str] = &["fintech-a", "fintech-b", "gone", "operator"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_missing_wrong_revoked_credentials_and_the_wrong_role() {
    let dir = temp_dir();
    let mut w = world(&dir).await;
    let data = dir.path().join("data");
    let addr = w.server.addr.clone();

    // The table above covers the whole API, each method exactly once.
    let mut table: Vec<String> = PARTICIPANT_METHODS
        .iter()
        .chain(OPERATOR_METHODS)
        .chain([&BOOTSTRAP])
        .map(|m| m.to_string())
        .collect();
    table.sort();
    assert_eq!(api_methods(), table, "a new RPC needs a row in this test's role table");

    let before = snapshot(&mut w.operator, &data, PARTICIPANTS).await;
    let wrong = format!("Bearer puente_0123456789abcdef_{}", "0".repeat(64));
    let revoked = format!("Bearer {}", w.revoked_key);
    let participant = format!("Bearer {}", w.a_key);
    for method in api_methods() {
        if method == BOOTSTRAP {
            // Over once an operator exists, whatever the caller sends.
            for auth in [None, Some(participant.as_str())] {
                assert_eq!(raw_call(&addr, &method, auth).await, Code::PermissionDenied, "{method}");
            }
            continue;
        }
        for (case, auth) in [
            ("no key", None),
            ("malformed header", Some("Basic b3BlcmF0b3I6b3BlcmF0b3I=")),
            ("wrong key", Some(wrong.as_str())),
            ("revoked key", Some(revoked.as_str())),
        ] {
            assert_eq!(raw_call(&addr, &method, auth).await, Code::Unauthenticated, "{method} with {case}");
        }
        if OPERATOR_METHODS.contains(&method.as_str()) {
            assert_eq!(
                raw_call(&addr, &method, Some(&participant)).await,
                Code::PermissionDenied,
                "{method} with a participant's key"
            );
        }
    }
    assert_eq!(
        snapshot(&mut w.operator, &data, PARTICIPANTS).await,
        before,
        "a refused call changed something"
    );
    // The log names the refused key by its id, never by its secret.
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    let (revoked_id, revoked_secret) = w.revoked_key["puente_".len()..].split_once('_').unwrap();
    assert!(log.contains(&format!("presented_key_id={revoked_id}")), "refusals are logged with the key id");
    for secret in [revoked_secret, w.a_key.rsplit('_').next().unwrap()] {
        assert!(!log.contains(secret), "a key's secret reached the log");
    }

    // The typed client gets the reason too.
    let mut anonymous = w.server.anonymous().await;
    let error = anonymous.get_account(&w.a_usd).await.unwrap_err();
    assert_eq!((code_of(&error), error.reason()), (Some(Code::Unauthenticated), Some("UNAUTHENTICATED")));
    let error = w.a.set_rate("USD", "MXN", "1", "x").await.unwrap_err();
    assert_eq!((code_of(&error), error.reason()), (Some(Code::PermissionDenied), Some("PERMISSION_DENIED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_participants_resources_do_not_exist() {
    let dir = temp_dir();
    let mut w = world(&dir).await;
    let data = dir.path().join("data");
    let before = snapshot(&mut w.operator, &data, PARTICIPANTS).await;
    let not_found = |result: Result<(), puente_client::ClientError>, what: &str| match result {
        Err(e) => assert_eq!(code_of(&e), Some(Code::NotFound), "{what}: {e}"),
        Ok(()) => panic!("{what}: B reached A's resource"),
    };
    let b = &mut w.b;

    // Ledger.
    not_found(b.get_account(&w.a_usd).await.map(drop), "GetAccount");
    not_found(b.close_account(&w.a_usd2).await.map(drop), "CloseAccount");
    not_found(b.get_transfer(&w.a_transfer).await.map(drop), "GetTransfer");
    let list = pb::ListTransfersRequest { account_id: w.a_usd.clone(), page_size: 10, ..Default::default() };
    not_found(b.list_transfers(list).await.map(drop), "ListTransfers");
    let statement =
        pb::GetAccountStatementRequest { account_id: w.a_usd.clone(), page_size: 10, ..Default::default() };
    not_found(b.statement(statement).await.map(drop), "GetAccountStatement");
    // A transfer between A and B is visible to both.
    assert!(b.get_transfer(&w.b_transfer).await.is_ok());
    // Lists: naming A lists nothing; naming nobody lists B's own.
    assert!(b.list_accounts("fintech-a", 100, "").await.unwrap().accounts.is_empty());
    let own = b.list_accounts("", 100, "").await.unwrap().accounts;
    assert_eq!(own.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), vec![w.b_usd.clone()]);
    // Writes: debiting A's account, posting A's pending transfer, opening an account for A.
    let refused = |result: pb::CreateTransferResult| result.code;
    let debit =
        b.create_transfers(vec![NewTransfer::new(&w.a_usd, &w.b_usd, "USD", "1.00").0]).await.unwrap();
    assert_eq!(refused(debit[0].clone()), "DEBIT_ACCOUNT_NOT_FOUND");
    let post = b.create_transfers(vec![NewTransfer::post(&w.a_pending, "USD", None).0]).await.unwrap();
    assert_eq!(refused(post[0].clone()), "PENDING_TRANSFER_NOT_FOUND");
    let opened = b.create_accounts(vec![NewAccount::new("fintech-a", "USD").0]).await.unwrap();
    assert_eq!(opened[0].code, "PARTICIPANT_INVALID");
    // Reusing the id of A's account or transfer says only that the id is taken, nothing of
    // what it holds (no EXISTS_WITH_DIFFERENT_<FIELD> probing).
    let reused = b.create_accounts(vec![NewAccount::new("fintech-b", "USD").id(&w.a_usd).0]).await.unwrap();
    assert_eq!(reused[0].code, "ID_ALREADY_USED");
    let probe = NewTransfer::new(&w.b_usd, &w.a_usd, "USD", "10.00").id(&w.a_transfer).0;
    assert_eq!(b.create_transfers(vec![probe]).await.unwrap()[0].code, "ID_ALREADY_USED");
    // The feed carries only B's transfers: read up to B's last one and look at what came.
    let mut feed = b.stream_transfers(0).await.unwrap();
    let mut seen = Vec::new();
    while let Some(item) = tokio_stream::StreamExt::next(&mut feed).await {
        let transfer = item.unwrap().transfer.unwrap();
        let last = transfer.id == w.b_transfer;
        seen.push(transfer);
        if last {
            break;
        }
    }
    assert!(seen.iter().all(|t| t.debit_account_id == w.b_usd || t.credit_account_id == w.b_usd), "{seen:?}");
    assert!(!seen.iter().any(|t| t.id == w.a_transfer));

    // FX.
    not_found(
        b.quote("fintech-a", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("1.00")).await.map(drop),
        "GetQuote",
    );
    not_found(b.get_quote(&w.a_quote.id).await.map(drop), "GetQuoteById");
    assert!(b.list_quotes("fintech-a", 100, "").await.unwrap().quotes.is_empty());
    not_found(b.execute_quote(&w.a_quote, &w.b_usd, &w.a_mxn, &new_id()).await.map(drop), "ExecuteQuote");
    not_found(b.cancel_transfer(&w.a_held_quote.id).await.map(drop), "CancelTransfer");
    // A quote of B's own cannot spend A's account either.
    let b_quote = b.quote("", pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("5.00")).await.unwrap();
    not_found(
        b.execute_quote(&b_quote, &w.a_usd, &w.a_mxn, &new_id()).await.map(drop),
        "ExecuteQuote source",
    );
    assert!(b.list_rates().await.is_ok() && b.fx_public_key().await.is_ok());

    // Settlement: profiles, statements and confirmations of A; A's position in a window.
    let mut settlement = b.settlement();
    let profile = settlement
        .get_participant_profile(pb::GetParticipantProfileRequest { participant: "fintech-a".into() })
        .await;
    assert_eq!(profile.unwrap_err().code(), Code::NotFound);
    let statement = settlement
        .get_settlement_statement(pb::GetSettlementStatementRequest {
            window_id: 1,
            participant: "fintech-a".into(),
        })
        .await;
    assert_eq!(statement.unwrap_err().code(), Code::NotFound);
    let confirm = settlement
        .confirm_settlement(pb::ConfirmSettlementRequest { window_id: 1, participant: "fintech-a".into() })
        .await;
    assert_eq!(confirm.unwrap_err().code(), Code::NotFound);
    let windows =
        settlement.list_windows(pb::ListWindowsRequest::default()).await.unwrap().into_inner().windows;
    let usd = windows.iter().find(|w| w.currency_code == "USD").expect("an open USD window");
    let window =
        settlement.get_window(pb::GetWindowRequest { window_id: usd.window_id }).await.unwrap().into_inner();
    let positions = window.window.unwrap().positions;
    assert!(!positions.is_empty() && positions.iter().all(|p| p.participant == "fintech-b"), "{positions:?}");
    // The network's totals are for operators.
    assert!(usd.gross_value.is_none() && usd.obligation_count == 0, "{usd:?}");
    let mut operator_view = w.operator.settlement();
    let full = operator_view
        .get_window(pb::GetWindowRequest { window_id: usd.window_id })
        .await
        .unwrap()
        .into_inner();
    let full = full.window.unwrap();
    assert!(full.positions.iter().any(|p| p.participant == "fintech-a") && full.gross_value.is_some());

    // Nothing changed but remembered failures (the journal grows by those, balances do not).
    let after = snapshot(&mut w.operator, &data, PARTICIPANTS).await;
    assert_eq!(after.accounts, before.accounts);
    assert_eq!(after.participants, before.participants);
    assert_eq!(after.quotes, before.quotes + 1, "B's own quote only");
    // A still owns and sees everything of its own.
    assert_eq!(w.a.get_account(&w.a_usd).await.unwrap().participant, "fintech-a");
    assert!(w.a.cancel_transfer(&w.a_held_quote.id).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_revoke_through_the_cli_and_bootstrap_happens_once() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
            .arg("--server")
            .arg(&server.addr)
            .env("PUENTE_API_KEY", operator_key(&server.addr))
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let key_of = |stdout: &str| -> String {
        let value: serde_json::Value = serde_json::from_str(stdout).unwrap();
        value["api_key"].as_str().unwrap().to_owned()
    };
    // A key file that cannot be written is refused before the server registers anything.
    let taken = dir.path().join("taken.key");
    std::fs::write(&taken, "keep me").unwrap();
    let (ok, _, stderr) =
        cli(&["participants", "create", "fintech-d", "--key-file", taken.to_str().unwrap()]);
    assert!(!ok && stderr.contains("must not exist yet"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "keep me");
    let (ok, _, stderr) = cli(&["participants", "get", "fintech-d"]);
    assert!(!ok && stderr.contains("PARTICIPANT_NOT_FOUND"), "{stderr}");
    let (ok, stdout, stderr) = cli(&["participants", "create", "fintech-c", "--name", "C", "--json"]);
    assert!(ok, "{stderr}");
    let first = key_of(&stdout);
    let mut c = client_with_key(&server.addr, &first).await;
    assert_eq!(c.whoami().await.unwrap().participant_id, "fintech-c");
    // The server keeps only hashes: nothing the operator can list shows the key.
    let (_, listed, _) = cli(&["participants", "list", "--json"]);
    assert!(!listed.contains(&first[20..]), "{listed}");

    // Rotation with overlap: both keys work until the old one is revoked.
    let (ok, stdout, stderr) = cli(&["participants", "rotate-key", "fintech-c", "--keep-old-keys", "--json"]);
    assert!(ok, "{stderr}");
    let second = key_of(&stdout);
    let mut c2 = client_with_key(&server.addr, &second).await;
    assert!(c.whoami().await.is_ok() && c2.whoami().await.is_ok());
    let old_key_id = first.split('_').nth(1).unwrap().to_owned();
    let (ok, _, stderr) = cli(&["participants", "revoke-key", "fintech-c", &old_key_id]);
    assert!(ok, "{stderr}");
    assert_eq!(code_of(&c.whoami().await.unwrap_err()), Some(Code::Unauthenticated));
    // Rotation without overlap: the new key replaces every other at once.
    let (ok, stdout, _) = cli(&["participants", "rotate-key", "fintech-c", "--json"]);
    assert!(ok);
    let third = key_of(&stdout);
    assert_eq!(code_of(&c2.whoami().await.unwrap_err()), Some(Code::Unauthenticated));
    assert!(client_with_key(&server.addr, &third).await.whoami().await.is_ok());
    // A participant may not administer participants, even itself.
    let mut c3 = client_with_key(&server.addr, &third).await;
    assert_eq!(code_of(&c3.rotate_key("fintech-c", true).await.unwrap_err()), Some(Code::PermissionDenied));
    // The bootstrap is over.
    let (ok, _, stderr) = cli(&["participants", "bootstrap", "intruder"]);
    assert!(!ok && stderr.contains("BOOTSTRAP_CLOSED") || stderr.contains("PERMISSION_DENIED"), "{stderr}");
    // whoami through the CLI.
    let (ok, stdout, _) = cli(&["whoami"]);
    assert!(ok && stdout.contains("operator"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_participant_rate_and_concurrency_limits() {
    let dir = temp_dir();
    let config = dir.path().join("puente.toml");
    std::fs::write(&config, "[limits]\nrequests_per_second = 1\nburst = 5\nconcurrent_requests = 64\n")
        .unwrap();
    let server = Server::try_start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("{log}"));
    let mut operator = server.client().await;
    let (_, key) = operator.create_participant("busy", "Busy", pb::Role::Participant).await.unwrap();
    let (_, other) = operator.create_participant("calm", "Calm", pb::Role::Participant).await.unwrap();
    let mut busy = client_with_key(&server.addr, &key.key).await;
    let mut refused = None;
    for _ in 0..10 {
        if let Err(e) = busy.whoami().await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("the burst of 5 is exhausted within 10 calls");
    assert_eq!((code_of(&refused), refused.reason()), (Some(Code::ResourceExhausted), Some("RATE_LIMITED")));
    // Another participant is not slowed down by the busy one.
    assert!(client_with_key(&server.addr, &other.key).await.whoami().await.is_ok());
    // The status carries google.rpc.RetryInfo.
    let status = busy.participants().get_caller(pb::GetCallerRequest {}).await.unwrap_err();
    use tonic_types::StatusExt;
    assert!(status.get_details_retry_info().is_some_and(|r| r.retry_delay.is_some()), "{status:?}");
}

/// Writes a personal-data keyring file (mode 0600) outside the data directory.
fn pii_key_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pii.keys");
    let key = format!("k1:{}\n", "3a".repeat(32));
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn holder(id: &str, tier: &str, pii: pb::HolderPersonalData) -> pb::CreateHolderRequest {
    pb::CreateHolderRequest {
        holder: Some(pb::Holder {
            holder_id: id.into(),
            kind: pb::HolderKind::Individual as i32,
            country: "MX".into(),
            kyc_tier: tier.into(),
            personal_data: Some(pii),
            ..Default::default()
        }),
    }
}

/// Every file under `dir`, concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_personal_data_is_encrypted_at_rest_and_kyc_tiers_limit_monthly_credits() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let keys = pii_key_file(dir.path());
    let start = || {
        Server::try_start(&data, &["--pii-key-file", keys.to_str().unwrap()])
            .unwrap_or_else(|log| panic!("{log}"))
    };
    let mut server = start();
    let mut operator = server.client().await;
    let (_, a_key) = operator.create_participant("fintech-a", "A", pb::Role::Participant).await.unwrap();
    let (_, b_key) = operator.create_participant("fintech-b", "B", pb::Role::Participant).await.unwrap();
    let a = client_with_key(&server.addr, &a_key.key).await;
    let b = client_with_key(&server.addr, &b_key.key).await;
    let mut a_holders = pb::holder_service_client::HolderServiceClient::new(a.channel());
    let mut b_holders = pb::holder_service_client::HolderServiceClient::new(b.channel());

    // Tiers need a policy first; only operators set it.
    let ana = pb::HolderPersonalData {
        full_name: "Ana Sofía Pérez Quintana".into(),
        address: "Calle Zaragoza 118, Monterrey".into(),
        clabe: "032180000118359719".into(),
        rfc: "GODE561231GR8".into(),
        ..Default::default()
    };
    let refused = a_holders.create_holder(holder("ana", "MX_NIVEL_1", ana.clone())).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let policy = pb::SetKycPolicyRequest {
        udi_rate: "8.70".into(),
        us_tiers: vec![pb::UsTier {
            name: "US_BASIC".into(),
            monthly_credit_limit: "100.00".into(),
            balance_limit: String::new(),
        }],
    };
    assert_eq!(a_holders.set_kyc_policy(policy.clone()).await.unwrap_err().code(), Code::PermissionDenied);
    pb::holder_service_client::HolderServiceClient::new(operator.channel())
        .set_kyc_policy(policy)
        .await
        .unwrap();

    // Validation: CLABE check digit, RFC format and kind; the value never echoes back.
    let bad = pb::HolderPersonalData { clabe: "032180000118359718".into(), ..ana.clone() };
    let error = a_holders.create_holder(holder("ana", "MX_NIVEL_1", bad)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(!error.message().contains("032180000118359718"), "{}", error.message());
    let business_rfc = pb::HolderPersonalData { rfc: "ABC010101AB1".into(), ..ana.clone() };
    let error = a_holders.create_holder(holder("ana", "MX_NIVEL_1", business_rfc)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "an individual with a business RFC");
    let bad_tier = a_holders.create_holder(holder("ana", "MX_NIVEL_9", ana.clone())).await.unwrap_err();
    assert_eq!(bad_tier.code(), Code::InvalidArgument);

    let created =
        a_holders.create_holder(holder("ana", "MX_NIVEL_1", ana.clone())).await.unwrap().into_inner();
    assert!(created.created);
    let fetched = a_holders
        .get_holder(pb::GetHolderRequest { participant: String::new(), holder_id: "ana".into() })
        .await
        .unwrap()
        .into_inner()
        .holder
        .unwrap();
    assert_eq!(fetched.personal_data.unwrap(), ana);
    // Another participant's holder does not exist.
    let other = b_holders
        .get_holder(pb::GetHolderRequest { participant: "fintech-a".into(), holder_id: "ana".into() })
        .await;
    assert_eq!(other.unwrap_err().code(), Code::NotFound);
    let other = b_holders
        .get_holder(pb::GetHolderRequest { participant: String::new(), holder_id: "ana".into() })
        .await;
    assert_eq!(other.unwrap_err().code(), Code::NotFound);
    let usage = pb::GetHolderUsageRequest { participant: "fintech-a".into(), holder_id: "ana".into() };
    assert_eq!(b_holders.get_holder_usage(usage).await.unwrap_err().code(), Code::NotFound);
    let listed = b_holders
        .list_holders(pb::ListHoldersRequest { participant: "fintech-a".into(), ..Default::default() });
    assert!(listed.await.unwrap().into_inner().holders.is_empty());
    let own = a_holders.list_holders(pb::ListHoldersRequest::default()).await.unwrap().into_inner().holders;
    assert_eq!(own.len(), 1);
    assert!(own[0].personal_data.is_none(), "lists carry no personal data");
    // A retry of the registration is idempotent; a different tier is refused.
    let retry = a_holders.create_holder(holder("ana", "MX_NIVEL_1", ana.clone())).await.unwrap().into_inner();
    assert!(!retry.created);
    let changed = a_holders.create_holder(holder("ana", "MX_NIVEL_2", ana.clone())).await.unwrap_err();
    assert_eq!(changed.code(), Code::AlreadyExists);

    // Nivel 1: 750 UDIs a month at 8.70 = MXN 6,525.00.
    let mut a = a;
    let mxn = a
        .create_account(NewAccount::new("fintech-a", "MXN").no_overdraft().holder_ref("ana"))
        .await
        .unwrap()
        .id;
    let usd = a
        .create_account(NewAccount::new("fintech-a", "USD").no_overdraft().holder_ref("ana"))
        .await
        .unwrap()
        .id;
    crate::support::participant(&mut operator, "treasury").await;
    let treasury = operator.create_account(NewAccount::new("treasury", "MXN")).await.unwrap().id;
    let treasury_usd = operator.create_account(NewAccount::new("treasury", "USD")).await.unwrap().id;
    let credit = |amount: &str| NewTransfer::new(&treasury, &mxn, "MXN", amount).0;
    let codes =
        |results: Vec<pb::CreateTransferResult>| results.into_iter().map(|r| r.code).collect::<Vec<_>>();
    assert_eq!(codes(operator.create_transfers(vec![credit("6500.00")]).await.unwrap()), ["OK"]);
    assert_eq!(
        codes(operator.create_transfers(vec![credit("25.01")]).await.unwrap()),
        ["KYC_LIMIT_EXCEEDED"]
    );
    assert_eq!(codes(operator.create_transfers(vec![credit("25.00")]).await.unwrap()), ["OK"]);
    assert_eq!(codes(operator.create_transfers(vec![credit("0.01")]).await.unwrap()), ["KYC_LIMIT_EXCEEDED"]);
    // The tier covers MXN: a USD credit to the holder's USD account is refused.
    let usd_credit = NewTransfer::new(&treasury_usd, &usd, "USD", "1.00").0;
    assert_eq!(
        codes(operator.create_transfers(vec![usd_credit]).await.unwrap()),
        ["KYC_CURRENCY_NOT_COVERED"]
    );
    let usage = a_holders
        .get_holder_usage(pb::GetHolderUsageRequest { participant: String::new(), holder_id: "ana".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((usage.credited.as_str(), usage.monthly_credit_limit.as_str()), ("6525.00", "6525.00"));
    assert_eq!(usage.balance_limit, "8700.00");

    // At rest: neither the journal nor the index holds the personal data in clear, and neither
    // does the server's log.
    assert!(server.terminate().success());
    let stored = all_bytes(&data);
    let log = std::fs::read(data.with_extension("log")).unwrap();
    for secret in [&ana.full_name, &ana.address, &ana.clabe, &ana.rfc] {
        assert!(!contains(&stored, secret), "{secret} stored in clear");
        assert!(!contains(&log, secret), "{secret} in the log");
    }
    // After a restart (replay) the counter and the data are back.
    server = start();
    let a = client_with_key(&server.addr, &a_key.key).await;
    let mut a_holders = pb::holder_service_client::HolderServiceClient::new(a.channel());
    let usage = a_holders
        .get_holder_usage(pb::GetHolderUsageRequest { participant: String::new(), holder_id: "ana".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.credited, "6525.00");
    let mut operator = server.client().await;
    let credit = NewTransfer::new(&treasury, &mxn, "MXN", "0.01").0;
    assert_eq!(codes(operator.create_transfers(vec![credit]).await.unwrap()), ["KYC_LIMIT_EXCEEDED"]);
    drop(server);

    // Without the key the data cannot be read, and holder requests say why.
    let server = Server::start(&data);
    let a = client_with_key(&server.addr, &a_key.key).await;
    let mut a_holders = pb::holder_service_client::HolderServiceClient::new(a.channel());
    let error = a_holders
        .get_holder(pb::GetHolderRequest { participant: String::new(), holder_id: "ana".into() })
        .await;
    let error = error.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    drop(server);

    // A key file inside the data directory, or readable by others, is refused at start-up.
    let inside = data.join("pii.keys");
    std::fs::copy(&keys, &inside).unwrap();
    let log = Server::try_start(&data, &["--pii-key-file", inside.to_str().unwrap()]).err().expect("refused");
    assert!(log.contains("data dir"), "{log}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = Server::try_start(&data, &["--pii-key-file", keys.to_str().unwrap()]).err().expect("refused");
    assert!(log.contains("chmod 600"), "{log}");
}

/// A test CA and certificates it signs (PEM files in `dir`).
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Puente test CA");
        Pki { ca: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    /// Writes `<name>.pem` and `<name>.key`; returns their paths.
    fn issue(&self, dir: &Path, name: &str, sans: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path.to_str().unwrap().to_owned(), key_path.to_str().unwrap().to_owned())
    }

    fn write_ca(&self, dir: &Path) -> String {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn tls_options(ca: &str, identity: Option<(&str, &str)>, api_key: Option<String>) -> ConnectOptions {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    ConnectOptions { api_key, tls: Some(tls) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_maps_a_bound_client_certificate_to_its_participant() {
    let dir = temp_dir();
    let pki = Pki::new();
    let ca = pki.write_ca(dir.path());
    let (server_cert, server_key) = pki.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let (ops_cert, ops_key) = pki.issue(dir.path(), "ops-client", &[]);
    let (a_cert, a_key) = pki.issue(dir.path(), "fintech-a", &[]);
    let (stranger_cert, stranger_key) = pki.issue(dir.path(), "stranger", &[]);
    let data = dir.path().join("data");
    let tls_client = ["--tls-ca", &ca, "--tls-cert", &ops_cert, "--tls-key", &ops_key];
    let server = Server::try_start_with(
        &data,
        &["--tls-cert", &server_cert, "--tls-key", &server_key, "--tls-client-ca", &ca],
        &tls_client,
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let addr = server.addr.clone();
    // The operator: TLS with its own client certificate (not bound) plus its API key.
    let ops = tls_options(&ca, Some((&ops_cert, &ops_key)), Some(operator_key(&addr)));
    let mut operator = Client::connect_with(&addr, &ops).await.unwrap();
    operator.create_participant("fintech-a", "A", pb::Role::Participant).await.unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
        .args(tls_client)
        .args(["--server", &addr, "participants", "bind-cert", "fintech-a", "--cert", &a_cert])
        .env("PUENTE_API_KEY", operator_key(&addr))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Fintech A authenticates with its certificate alone.
    let mut a = Client::connect_with(&addr, &tls_options(&ca, Some((&a_cert, &a_key)), None)).await.unwrap();
    let me = a.whoami().await.unwrap();
    assert_eq!((me.participant_id.as_str(), me.key_id.as_str()), ("fintech-a", ""));
    let own = a.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap();
    assert_eq!(own.participant, "fintech-a");
    // A certificate from the same CA that is bound to nobody authenticates nobody.
    let mut stranger =
        Client::connect_with(&addr, &tls_options(&ca, Some((&stranger_cert, &stranger_key)), None))
            .await
            .unwrap();
    assert_eq!(code_of(&stranger.whoami().await.unwrap_err()), Some(Code::Unauthenticated));
    // No client certificate, or no TLS at all: no connection.
    let no_cert = match Client::connect_with(&addr, &tls_options(&ca, None, Some(operator_key(&addr)))).await
    {
        Ok(mut client) => client.whoami().await.is_err(),
        Err(_) => true,
    };
    assert!(no_cert, "a client without a certificate was served");
    let plain = match Client::connect_with(&addr, &ConnectOptions::api_key(&operator_key(&addr))).await {
        Ok(mut client) => client.whoami().await.is_err(),
        Err(_) => true,
    };
    assert!(plain, "a plaintext client was served");
    // Unbinding (from the CLI) takes effect at once.
    let sha = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &rustls_pki_types::CertificateDer::from_pem_file(&a_cert).unwrap(),
    ));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
        .args(tls_client)
        .args(["--server", &addr, "participants", "unbind-cert", "fintech-a", "--cert", &a_cert])
        .env("PUENTE_API_KEY", operator_key(&addr))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("certificate {sha} no longer authenticates fintech-a\n")
    );
    assert_eq!(code_of(&a.whoami().await.unwrap_err()), Some(Code::Unauthenticated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_counts_against_the_concurrency_limit_until_it_ends() {
    let dir = temp_dir();
    let config = dir.path().join("puente.toml");
    std::fs::write(
        &config,
        "[limits]\nrequests_per_second = 10000\nburst = 10000\nconcurrent_requests = 2\n",
    )
    .unwrap();
    let server = Server::try_start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("{log}"));
    let mut operator = server.client().await;
    let (_, key) = operator.create_participant("streamer", "S", pb::Role::Participant).await.unwrap();
    let mut client = client_with_key(&server.addr, &key.key).await;
    let first = client.stream_transfers(0).await.unwrap();
    let second = client.stream_transfers(0).await.unwrap();
    // Two feeds are open: a third call of any kind waits for one to end.
    let refused = client.whoami().await.unwrap_err();
    assert_eq!((code_of(&refused), refused.reason()), (Some(Code::ResourceExhausted), Some("RATE_LIMITED")));
    drop(first);
    let freed = crate::support::eventually(std::time::Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { client.whoami().await.is_ok() }
    })
    .await;
    assert!(freed, "closing a feed frees its slot");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_and_the_kyc_policy_through_the_cli() {
    let dir = temp_dir();
    let keys = pii_key_file(dir.path());
    let server = Server::try_start(&dir.path().join("data"), &["--pii-key-file", keys.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("{log}"));
    let cli = |key_file: &Path, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
            .arg("--server")
            .arg(&server.addr)
            .env("PUENTE_API_KEY_FILE", key_file)
            .env_remove("PUENTE_API_KEY")
            .args(args)
            .output()
            .unwrap();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (output.status.success(), text(output.stdout), text(output.stderr))
    };
    let operator = crate::support::key_file_for(&server.addr);
    let fintech = dir.path().join("keys/fintech.key");
    let (ok, _, stderr) =
        cli(&operator, &["participants", "create", "fintech-a", "--key-file", fintech.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) =
        cli(&operator, &["kyc", "set-policy", "--udi-rate", "8.70", "--us-tier", "US_BASIC:2000.00:5000.00"]);
    assert!(ok && stdout.contains("1 UDI = 8.70 MXN; 1 US tier"), "{stdout}{stderr}");
    let (ok, _, stderr) = cli(&fintech, &["kyc", "set-policy", "--udi-rate", "1"]);
    assert!(!ok && stderr.contains("PERMISSION_DENIED"), "{stderr}");
    // Personal data comes from a file (JSON or TOML) or standard input, never from argv.
    let joe = dir.path().join("joe.json");
    std::fs::write(
        &joe,
        r#"{"full_name": "Joe Doe", "routing_number": "011000015", "account_number": "000123456789"}"#,
    )
    .unwrap();
    let create =
        ["holders", "create", "joe", "--kind", "individual", "--country", "US", "--tier", "US_BASIC"];
    fn with_file<'a>(args: &[&'a str], file: &'a str) -> Vec<&'a str> {
        [args, &["--pii-file", file]].concat()
    }
    let (ok, stdout, stderr) = cli(&fintech, &with_file(&create, joe.to_str().unwrap()));
    assert!(ok && stdout.contains("holder joe of fintech-a registered (US_BASIC, US)"), "{stdout}{stderr}");
    let (ok, stdout, _) = cli(&fintech, &["holders", "get", "joe", "--json"]);
    let holder: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(ok && holder["personal_data"]["routing_number"] == "011000015", "{stdout}");
    let (ok, stdout, _) = cli(&fintech, &["holders", "usage", "joe"]);
    assert!(
        ok && stdout.contains("credited 0.00 of 2000.00 USD this month; balance cap 5000.00 USD"),
        "{stdout}"
    );
    let (ok, stdout, _) = cli(&fintech, &["holders", "list"]);
    assert!(ok && stdout.contains("joe") && !stdout.contains("Joe Doe"), "{stdout}");
    // A bad routing number (TOML on standard input) is refused by check digit, naming the
    // field only.
    let mut jane = create.to_vec();
    jane[2] = "jane";
    let output = cli_stdin(
        &server.addr,
        &fintech,
        &with_file(&jane, "-"),
        "full_name = \"Jane Roe\"\nrouting_number = \"011000016\"\n",
    );
    let (ok, stderr) = (output.status.success(), String::from_utf8_lossy(&output.stderr));
    assert!(!ok && stderr.contains("routing_number") && !stderr.contains("011000016"), "{stderr}");
    // From standard input, valid: registered with its personal data.
    let output = cli_stdin(&server.addr, &fintech, &with_file(&jane, "-"), r#"{"full_name": "Jane Roe"}"#);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (_, stdout, _) = cli(&fintech, &["holders", "get", "jane", "--json"]);
    assert!(stdout.contains("Jane Roe"), "{stdout}");
    // The old argv flags for personal data are gone.
    for flag in ["--name", "--address", "--clabe", "--account-number", "--routing-number", "--rfc"] {
        let (ok, _, stderr) = cli(&fintech, &[&create[..], &[flag, "x"]].concat());
        assert!(!ok && stderr.contains("unexpected argument"), "{flag}: {stderr}");
    }
    // A file with an unknown field is refused before any call, without echoing the file.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "fullname = \"Joe Doe\"\n").unwrap();
    let mut again = create.to_vec();
    again[2] = "joan";
    let (ok, _, stderr) = cli(&fintech, &with_file(&again, typo.to_str().unwrap()));
    assert!(!ok && stderr.contains("--pii-file") && !stderr.contains("Joe Doe"), "{stderr}");
}

/// `puente --server ADDR ARGS` with `key_file`, `stdin` on standard input.
fn cli_stdin(addr: &str, key_file: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
        .arg("--server")
        .arg(addr)
        .env("PUENTE_API_KEY_FILE", key_file)
        .env_remove("PUENTE_API_KEY")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut operator = server.client().await;
    let (_, a_key) = operator.create_participant("fintech-a", "A", pb::Role::Participant).await.unwrap();
    let operator_key = operator_key(&server.addr);
    let call = |headers: Vec<String>| {
        let addr = server.addr.clone();
        async move {
            let channel = puente_client::channel(&addr, &ConnectOptions::default()).await.unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let mut request = tonic::Request::new(pb::GetCallerRequest {});
            for value in headers {
                request.metadata_mut().append("authorization", value.parse().unwrap());
            }
            let path = "/puente.v1.ParticipantService/GetCaller".parse().unwrap();
            let codec = tonic_prost::ProstCodec::<pb::GetCallerRequest, pb::GetCallerResponse>::default();
            grpc.unary(request, path, codec).await.map(|r| r.into_inner().participant_id)
        }
    };
    // One header: its participant.
    assert_eq!(call(vec![format!("Bearer {}", a_key.key)]).await.unwrap(), "fintech-a");
    // Two (an operator's and a participant's, or the same twice): refused, whichever is first.
    for headers in [
        vec![format!("Bearer {operator_key}"), format!("Bearer {}", a_key.key)],
        vec![format!("Bearer {}", a_key.key), format!("Bearer {operator_key}")],
        vec![format!("Bearer {}", a_key.key), format!("Bearer {}", a_key.key)],
    ] {
        let status = call(headers).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("more than one authorization header"), "{}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mutual_tls_a_key_of_another_participant_than_the_bound_certificate_is_refused() {
    let dir = temp_dir();
    let pki = Pki::new();
    let ca = pki.write_ca(dir.path());
    let (server_cert, server_key) = pki.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let (ops_cert, ops_key) = pki.issue(dir.path(), "ops-client", &[]);
    let (a_cert, a_cert_key) = pki.issue(dir.path(), "fintech-a", &[]);
    let server = Server::try_start_with(
        &dir.path().join("data"),
        &["--tls-cert", &server_cert, "--tls-key", &server_key, "--tls-client-ca", &ca],
        &["--tls-ca", &ca, "--tls-cert", &ops_cert, "--tls-key", &ops_key],
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let addr = server.addr.clone();
    let ops = tls_options(&ca, Some((&ops_cert, &ops_key)), Some(operator_key(&addr)));
    let mut operator = Client::connect_with(&addr, &ops).await.unwrap();
    let (_, a_key) = operator.create_participant("fintech-a", "A", pb::Role::Participant).await.unwrap();
    let (_, b_key) = operator.create_participant("fintech-b", "B", pb::Role::Participant).await.unwrap();
    let sha = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &rustls_pki_types::CertificateDer::from_pem_file(&a_cert).unwrap(),
    ));
    operator
        .participants()
        .bind_certificate(pb::BindCertificateRequest {
            participant_id: "fintech-a".into(),
            certificate_sha256: sha,
        })
        .await
        .unwrap();
    let with_key = |key: String| tls_options(&ca, Some((&a_cert, &a_cert_key)), Some(key));
    // A's certificate with B's key: refused (the key does not silently win).
    let mut mixed = Client::connect_with(&addr, &with_key(b_key.key.clone())).await.unwrap();
    let refused = mixed.whoami().await.unwrap_err();
    assert_eq!(code_of(&refused), Some(Code::Unauthenticated), "{refused}");
    assert!(refused.to_string().contains("belong to different participants"), "{refused}");
    // A's certificate with A's key: A, by its key.
    let mut same = Client::connect_with(&addr, &with_key(a_key.key.clone())).await.unwrap();
    let me = same.whoami().await.unwrap();
    assert_eq!((me.participant_id.as_str(), me.key_id.as_str()), ("fintech-a", a_key.key_id.as_str()));
    // A certificate bound to nobody with a key: the key's participant (the operator here).
    assert_eq!(operator.whoami().await.unwrap().participant_id, "operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_flooding_full_failing_batches_is_refused_by_cost_while_another_keeps_writing() {
    use tonic_types::StatusExt;
    let dir = temp_dir();
    let config = dir.path().join("puente.toml");
    // Request counts and bytes far above what this test sends: only events can refuse. A full
    // batch fits (8,189 events); two at once, and then 1,000 events a second.
    std::fs::write(
        &config,
        "[limits]\nrequests_per_second = 10000\nburst = 10000\nconcurrent_requests = 256\n\
         events_per_second = 1000\nburst_events = 16378\nconcurrent_events = 16378\n\
         bytes_per_second = 1000000000\nburst_bytes = 4000000000\nconcurrent_bytes = 4000000000\n",
    )
    .unwrap();
    let server = Server::try_start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("{log}"));
    let mut operator = server.client().await;
    let (_, flood_key) = operator.create_participant("flood", "Flood", pb::Role::Participant).await.unwrap();
    let (_, calm_key) = operator.create_participant("calm", "Calm", pb::Role::Participant).await.unwrap();
    crate::support::participant(&mut operator, "treasury").await;
    let funding = operator.create_account(NewAccount::new("treasury", "USD")).await.unwrap().id;
    let mut calm = client_with_key(&server.addr, &calm_key.key).await;
    let calm_from = calm.create_account(NewAccount::new("calm", "USD").no_overdraft()).await.unwrap().id;
    let calm_to = calm.create_account(NewAccount::new("calm", "USD")).await.unwrap().id;
    operator.transfer(NewTransfer::new(&funding, &calm_from, "USD", "1000.00")).await.unwrap();

    // Full batches that all fail (accounts that do not exist), with metadata.
    let value = "v".repeat(256);
    let batch: Vec<pb::Transfer> = (0..puente_ledger::BATCH_EVENTS_MAX)
        .map(|i| {
            let mut t = NewTransfer::new(&new_id(), &new_id(), "USD", "1.00");
            for k in 0..4 {
                t = t.metadata(&format!("key-{k}-{i}"), &value);
            }
            t.0
        })
        .collect();
    let flood = client_with_key(&server.addr, &flood_key.key).await;
    let flooding = {
        let flood = flood.channel();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _round in 0..3 {
                let calls: Vec<_> = (0..6)
                    .map(|_| {
                        let mut ledger = pb::ledger_service_client::LedgerServiceClient::new(flood.clone())
                            .max_decoding_message_size(64 << 20);
                        let request = pb::CreateTransfersRequest { transfers: batch.clone() };
                        tokio::spawn(async move { ledger.create_transfers(request).await.map(drop) })
                    })
                    .collect();
                for call in calls {
                    outcomes.push(call.await.unwrap());
                }
            }
            outcomes
        })
    };
    // Meanwhile the other participant's single transfers all go through.
    for i in 0..20 {
        let transfer = NewTransfer::new(&calm_from, &calm_to, "USD", "1.00").metadata("n", &i.to_string());
        assert_eq!(calm.transfer(transfer).await.unwrap().code, "OK", "calm transfer {i}");
    }
    let outcomes = flooding.await.unwrap();
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    let refusals: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(accepted >= 1, "a full batch fits the limits");
    assert!(refusals.len() >= 6, "{accepted} of {} full batches accepted", outcomes.len());
    for status in refusals {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let info = status.get_details_error_info().unwrap();
        let limit = info.metadata["limit"].as_str();
        assert!(["concurrent_events", "events_per_second"].contains(&limit), "refused by {limit}");
        assert!(status.get_details_retry_info().is_some_and(|r| r.retry_delay.is_some()));
    }
    // The calm participant's balance moved by exactly its 20 transfers.
    assert_eq!(calm.get_account(&calm_from).await.unwrap().posted_balance, "980.00");
}
