//! Operations against the real server: Prometheus metrics, `puente status`, and backup while
//! writing, restore, verify, and a damaged backup.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use puente_client::{NewTransfer, new_id, pb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    SEGMENT_HEADER_BYTES, Server, accounts, all_accounts, eventually, journal_segment, minor, temp_dir,
};

/// A loopback port free right now (the server binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts a server that serves metrics; returns it and the metrics address.
fn start_with_metrics(data: &Path) -> (Server, String) {
    for _ in 0..5 {
        let metrics = format!("127.0.0.1:{}", free_port());
        if let Ok(server) = Server::try_start(data, &["--metrics-listen", &metrics]) {
            return (server, metrics);
        }
    }
    panic!("could not start a server with metrics");
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The value of the sample `name` whose labels include every pair in `labels`, if any.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let matches = series_name == name
            && labels
                .iter()
                .all(|(k, v)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if matches { value.parse().ok() } else { None }
    })
}

/// Runs the `puente` binary; returns (success, stdout, stderr).
async fn puente(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_puente"))
        .args(args)
        .env_remove("PUENTE_METRICS_LISTEN")
        .env_remove("PUENTE_DATA_DIR")
        .env_remove("PUENTE_CONFIG")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn text(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_method_and_code() {
    let dir = temp_dir();
    let (server, metrics) = start_with_metrics(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", 2).await;
    for wallet in &wallets {
        client.transfer(NewTransfer::new(&source, wallet, "USD", "10.00")).await.unwrap();
    }
    // An error answered in the headers (trailers-only) and a refused batch.
    assert!(client.get_account(&new_id()).await.is_err());
    assert!(
        client
            .create_transfers(vec![NewTransfer::new(&source, &wallets[0], "USD", "1.001").0])
            .await
            .is_err()
    );
    // A streaming RPC cut off by the client.
    drop(client.stream_transfers(0).await.unwrap());

    let (code, body) = http_get(&metrics, "/metrics").await;
    assert_eq!(code, 200);
    let ledger = |method: &str| format!("puente.v1.LedgerService/{method}");
    let count = |method: &str, code: &str| {
        sample(&body, "puente_grpc_requests_total", &[("method", &ledger(method)), ("code", code)])
    };
    assert_eq!(count("CreateAccounts", "OK"), Some(3.0), "{body}");
    assert_eq!(count("CreateTransfers", "OK"), Some(2.0), "{body}");
    assert_eq!(count("CreateTransfers", "INVALID_ARGUMENT"), Some(1.0), "{body}");
    assert_eq!(count("GetAccount", "NOT_FOUND"), Some(1.0), "{body}");
    let latency = |method: &str| {
        sample(&body, "puente_grpc_request_duration_seconds_count", &[("method", &ledger(method))])
            .unwrap_or(0.0)
    };
    assert_eq!(latency("CreateTransfers"), 3.0, "{body}");
    assert!(sample(&body, "puente_grpc_request_duration_seconds_bucket", &[("le", "+Inf")]).is_some());
    // Group commits: the operator's bootstrap, the participant, 3 account creations and 2
    // transfers, and the FX house's system-defined settlement profile set at start.
    let commits = sample(&body, "puente_commit_group_events_count", &[]).unwrap();
    assert!((1.0..=8.0).contains(&commits), "{body}");
    assert!(sample(&body, "puente_commit_group_events_sum", &[]).unwrap() >= 5.0);
    assert_eq!(sample(&body, "puente_commit_flush_seconds_count", &[]), Some(commits));
    let journal_bytes = sample(&body, "puente_journal_bytes", &[]).unwrap();
    assert!(journal_bytes > 8.0);
    assert!(sample(&body, "puente_store_bytes", &[]).unwrap() >= journal_bytes);
    assert_eq!(sample(&body, "puente_up", &[]), Some(1.0));
    assert_eq!(sample(&body, "puente_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    // Settlement gauges are exported (zero) before the settlement service sets them.
    assert_eq!(sample(&body, "puente_settlement_open_window_transfers", &[("currency", "USD")]), Some(0.0));
    assert_eq!(sample(&body, "puente_settlement_last_netting_efficiency_bps", &[]), Some(0.0));
    // The cancelled stream is counted once the server notices; label values stay bounded.
    assert!(!body.contains("method=\"/"), "{body}");
    let (code, _) = http_get(&metrics, "/other").await;
    assert_eq!(code, 404);
}

/// Runs `puente --server ADDR ARGS` with the given key file (or none); returns (success,
/// stdout, stderr).
async fn puente_as(addr: &str, key_file: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_puente"));
    command
        .arg("--server")
        .arg(addr)
        .args(args)
        .env_remove("PUENTE_API_KEY")
        .env_remove("PUENTE_API_KEY_FILE");
    if let Some(key_file) = key_file {
        command.env("PUENTE_API_KEY_FILE", key_file);
    }
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_everything_over_grpc_without_a_metrics_endpoint() {
    let dir = temp_dir();
    // No --metrics-listen: status needs none.
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    let (source, _) = accounts(&mut client, "fintech-a", "USD", 0).await;
    let (_, wallets) = accounts(&mut client, "fintech-b", "USD", 1).await;
    // A cross-participant transfer: an obligation in the open USD settlement window.
    client.transfer(NewTransfer::new(&source, &wallets[0], "USD", "12.50")).await.unwrap();
    assert!(client.get_account(&new_id()).await.is_err());
    let operator = crate::support::key_file_for(&server.addr);

    let (ok, stdout, stderr) = puente_as(&server.addr, Some(&operator), &["status", "--json"]).await;
    assert!(ok, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["health"]["overall"], "SERVING", "{stdout}");
    assert_eq!(status["health"]["ledger"], "SERVING");
    assert_eq!(status["details"]["error"], serde_json::Value::Null, "{stdout}");
    assert_eq!(status["versions"]["server"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["takes_writes"], true);
    let journal_bytes = status["store"]["journal_bytes"].as_u64().unwrap();
    assert!(journal_bytes > 8 && status["store"]["store_bytes"].as_u64().unwrap() >= journal_bytes);
    assert_eq!(status["store"]["chain_head"]["sha256"].as_str().unwrap().len(), 64, "{stdout}");
    assert!(status["writes"]["group_commits"].as_u64().unwrap() >= 4, "{stdout}");
    assert!(status["requests"]["not_ok"].as_u64().unwrap() >= 1, "{stdout}");
    assert_eq!(status["settlement"]["open_windows"], 1, "{stdout}");
    assert_eq!(status["settlement"]["open_window_transfers"]["USD"], 1, "{stdout}");
    assert_eq!(status["settlement"]["open_window_gross"]["USD"], "12.50", "{stdout}");
    assert!(status["store"]["chain_head"]["seq"].as_u64().unwrap() >= 4, "{stdout}");

    let (ok, screen, stderr) = puente_as(&server.addr, Some(&operator), &["status"]).await;
    assert!(ok, "{stderr}");
    for needle in [
        "health      SERVING",
        &format!("versions    server {}", env!("CARGO_PKG_VERSION")),
        "store       journal",
        "writes      ",
        "settlement  1 open windows (USD 1 transfers, 12.50); last netting none since start",
    ] {
        assert!(screen.contains(needle), "{needle:?} not in\n{screen}");
    }
    assert!(!screen.contains("metrics"), "{screen}");
    assert!(screen.lines().count() <= 24, "more than one screen:\n{screen}");

    // Without a key (a load balancer's health check): health only, exit 0, and why no more.
    let (ok, screen, stderr) = puente_as(&server.addr, None, &["status"]).await;
    assert!(ok, "{stderr}");
    assert!(screen.contains("health      SERVING"), "{screen}");
    assert!(screen.contains("need an operator's key"), "{screen}");
    // Older health checks pass --metrics off: still accepted. Probes: --health-only.
    let (ok, _, stderr) = puente_as(&server.addr, None, &["status", "--metrics", "off"]).await;
    assert!(ok, "{stderr}");
    let (ok, screen, stderr) = puente_as(&server.addr, Some(&operator), &["status", "--health-only"]).await;
    assert!(ok && screen.contains("health      SERVING") && !screen.contains("store"), "{screen}{stderr}");
    // A participant's key reads health, not the server's details.
    let fintech = dir.path().join("fintech.key");
    let (ok, _, stderr) = puente_as(
        &server.addr,
        Some(&operator),
        &["participants", "create", "fintech-z", "--key-file", fintech.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = puente_as(&server.addr, Some(&fintech), &["status", "--json"]).await;
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["health"]["overall"], "SERVING");
    assert!(status["details"]["error"].as_str().unwrap().contains("PermissionDenied"), "{stdout}");
    assert!(status.get("store").is_none(), "{stdout}");

    // No server: non-zero exit with the reason.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let (ok, _, stderr) = puente_as(&nowhere, Some(&operator), &["status"]).await;
    assert!(!ok);
    assert!(stderr.contains("not serving") && stderr.contains("UNREACHABLE"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writing_restores_every_acknowledged_transfer() {
    /// Writers and how many transfers each makes at most.
    const WRITERS: usize = 4;
    const TRANSFERS_PER_WRITER: usize = 300;

    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", WRITERS).await;

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for wallet in wallets.clone() {
        let (mut client, source) = (client.clone(), source.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..TRANSFERS_PER_WRITER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let transfer = NewTransfer::new(&source, &wallet, "USD", "1.00");
                let id = transfer.0.id.clone();
                client.transfer(transfer).await.unwrap();
                acknowledged.lock().unwrap().push(id);
            }
        }));
    }
    let progressed = eventually(Duration::from_secs(60), || {
        let acknowledged = acknowledged.clone();
        async move { acknowledged.lock().unwrap().len() >= 100 }
    })
    .await;
    assert!(progressed, "the writers made no progress");

    // Everything acknowledged before the backup starts must be in it; writes go on meanwhile.
    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    let backup = dir.path().join("backup");
    let (ok, stdout, stderr) =
        puente(&["backup", "--data-dir", &text(&data), "--out", &text(&backup), "--json"]).await;
    assert!(ok, "backup failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["journal_entries"].as_u64().unwrap() > 0);
    let chain_head = report["journal_chain_head"].as_str().unwrap().to_owned();
    assert!(chain_head.len() == 64 && chain_head.bytes().all(|b| b.is_ascii_hexdigit()), "{chain_head}");
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let total = acknowledged.lock().unwrap().len();
    assert!(total > before.len(), "no write overlapped the backup");
    let (ok, _, stderr) = puente(&["backup", "--data-dir", &text(&data), "--out", &text(&backup)]).await;
    assert!(!ok && stderr.contains("already exists"), "{stderr}");

    let (ok, stdout, stderr) = puente(&["verify", "--backup", &text(&backup)]).await;
    assert!(ok, "verify --backup failed: {stderr}");
    assert!(stdout.contains("is whole"), "{stdout}");
    let seq = report["journal_last_seq"].as_u64().unwrap();
    assert!(stdout.contains(&format!("chain head: seq {seq} {chain_head}")), "{stdout}");

    let restored = dir.path().join("restored");
    let (ok, stdout, stderr) =
        puente(&["restore", "--from", &text(&backup), "--data-dir", &text(&restored)]).await;
    assert!(ok, "restore failed: {stderr}");
    assert!(stdout.contains("restored into"), "{stdout}");
    // No key travels with the data: the server wrote none into its data directory, and the
    // backup holds the journal and its manifest only.
    assert!(!data.join("fx-signing-key.p8").exists());
    let mut names: Vec<String> =
        std::fs::read_dir(&backup).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["MANIFEST.json", "journal"]);
    let (ok, _, stderr) =
        puente(&["restore", "--from", &text(&backup), "--data-dir", &text(&restored)]).await;
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    let (ok, stdout, stderr) = puente(&["verify", "--data-dir", &text(&restored), "--json"]).await;
    assert!(ok, "verify --data-dir failed: {stderr}");
    let verified: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verified["whole"], true);
    assert_eq!(verified["chain_head"]["sha256"], chain_head.as_str());
    assert_eq!(verified["chain_head"]["seq"], seq);
    // The server may open house accounts of its own (FX, settlement): compare with its count.
    let accounts_served = all_accounts(&mut client).await.len();
    assert_eq!(verified["accounts"], accounts_served as u64);

    // Serve the restored store: every transfer acknowledged before the backup is there, once.
    drop(client);
    assert!(server.terminate().success());
    // The operator (and its key's hash) came back with the journal: the old key still works.
    std::fs::copy(crate::support::operator_key_file(&data), crate::support::operator_key_file(&restored))
        .unwrap();
    let restored_server = Server::start(&restored);
    let mut client = restored_server.client().await;
    for id in &before {
        let transfer = client.get_transfer(id).await.unwrap();
        assert_eq!(transfer.state, pb::TransferState::Posted as i32, "{id}");
    }
    let present = verified["transfers"].as_u64().unwrap() as usize;
    assert!(present >= before.len() && present <= total, "{} <= {present} <= {total}", before.len());
    // Balances add up: the source paid 1.00 per transfer present, the wallets got it all.
    let source_balance = minor(&client.get_account(&source).await.unwrap().posted_balance);
    assert_eq!(source_balance, -100 * present as i128);
    let mut wallets_total = 0;
    for wallet in &wallets {
        wallets_total += minor(&client.get_account(wallet).await.unwrap().posted_balance);
    }
    assert_eq!(wallets_total, 100 * present as i128);
    let all: i128 = all_accounts(&mut client).await.iter().map(|a| minor(&a.posted_balance)).sum();
    assert_eq!(all, 0);
    // The restored server takes new writes after the restored ones.
    client.transfer(NewTransfer::new(&source, &wallets[0], "USD", "1.00")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_fails_verify_and_restore_with_the_reason() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "bank-b", "MXN", 2).await;
    for i in 0..20 {
        let wallet = &wallets[i % 2];
        client.transfer(NewTransfer::new(&source, wallet, "MXN", "5.00")).await.unwrap();
    }
    drop(client);
    assert!(server.terminate().success());

    // Verifying a store reads it and changes nothing.
    let listing = |dir: &Path| -> HashSet<(String, u64)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
            .collect()
    };
    let journal_before = std::fs::read(journal_segment(&data)).unwrap();
    let files_before = listing(&data);
    let (ok, stdout, stderr) = puente(&["verify", "--data-dir", &text(&data)]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(" accounts, 20 transfers;"), "{stdout}");
    assert_eq!(std::fs::read(journal_segment(&data)).unwrap(), journal_before);
    assert_eq!(listing(&data), files_before);

    // A head recorded outside the store: it matches now; a rewritten journal does not.
    let (ok, stdout, stderr) = puente(&["verify", "--data-dir", &text(&data), "--json"]).await;
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let head =
        format!("{}:{}", report["chain_head"]["seq"], report["chain_head"]["sha256"].as_str().unwrap());
    let (ok, stdout, stderr) = puente(&["verify", "--data-dir", &text(&data), "--expect-head", &head]).await;
    assert!(ok && stdout.contains("still has the recorded chain hash"), "{stdout}{stderr}");
    let forged_hash = format!("{}:{}", report["chain_head"]["seq"], "ab".repeat(32));
    let (ok, _, stderr) =
        puente(&["verify", "--data-dir", &text(&data), "--expect-head", &forged_hash]).await;
    assert!(!ok && stderr.contains("does NOT match the recorded head"), "{stderr}");
    // A journal cut back to an earlier record (a whole, self-consistent prefix) is caught.
    let ahead = format!("{}:{}", report["chain_head"]["seq"].as_u64().unwrap() + 1, "00".repeat(32));
    let (ok, _, stderr) = puente(&["verify", "--data-dir", &text(&data), "--expect-head", &ahead]).await;
    assert!(!ok && stderr.contains("records were removed"), "{stderr}");

    let backup = dir.path().join("backup");
    let (ok, _, stderr) = puente(&["backup", "--data-dir", &text(&data), "--out", &text(&backup)]).await;
    assert!(ok, "{stderr}");
    let journal = journal_segment(&backup);
    let mut bytes = std::fs::read(&journal).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&journal, &bytes).unwrap();

    let (ok, _, stderr) = puente(&["verify", "--backup", &text(&backup)]).await;
    assert!(!ok);
    assert!(stderr.contains("is damaged") && stderr.contains("checksum mismatch"), "{stderr}");
    let target = dir.path().join("restored");
    let (ok, _, stderr) = puente(&["restore", "--from", &text(&backup), "--data-dir", &text(&target)]).await;
    assert!(!ok && stderr.contains("is damaged"), "{stderr}");
    assert!(!target.exists());

    // The same damage in a store's journal: recovery's own check names it.
    let store = dir.path().join("damaged-store");
    std::fs::create_dir_all(store.join("journal")).unwrap();
    std::fs::copy(&journal, journal_segment(&store)).unwrap();
    let (ok, _, stderr) = puente(&["verify", "--data-dir", &text(&store)]).await;
    assert!(!ok);
    assert!(stderr.contains("is NOT whole") && stderr.contains("corrupt"), "{stderr}");
}

/// The offset where a journal segment's last record starts (records: length u32 LE, CRC,
/// 32-byte chain hash, payload; after the segment's header).
fn last_record_offset(journal: &[u8]) -> usize {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut last = offset;
    while offset + 40 <= journal.len() {
        let len = u32::from_le_bytes(journal[offset..offset + 4].try_into().unwrap()) as usize;
        last = offset;
        offset += 40 + len;
    }
    assert_eq!(offset, journal.len(), "a whole journal");
    last
}

/// Review finding 10: a damaged *last* record (complete in length, checksum not recomputed)
/// is not a torn write. `verify` says so and fails; a start that must be refused (the index
/// shows the record was applied, so it was acknowledged) leaves the journal byte for byte as it
/// was; a start that goes on saves the cut bytes and says loudly what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_last_record_is_reported_loudly_and_never_cut_by_a_refused_start() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "bank-b", "MXN", 1).await;
    for _ in 0..3 {
        client.transfer(NewTransfer::new(&source, &wallets[0], "MXN", "5.00")).await.unwrap();
    }
    drop(client);
    assert!(server.terminate().success());
    drop(server);
    let journal_path = journal_segment(&data);
    let mut journal = std::fs::read(&journal_path).unwrap();
    let last = last_record_offset(&journal);
    // One flipped bit in the payload of the last record: its length is whole, its CRC fails.
    journal[last + 40 + 3] ^= 0x10;
    std::fs::write(&journal_path, &journal).unwrap();

    let (ok, stdout, stderr) = puente(&["verify", "--data-dir", &text(&data)]).await;
    assert!(!ok, "verify passed a damaged last record:\n{stdout}");
    assert!(stderr.contains("NOT whole") && stderr.contains("DAMAGED"), "{stderr}");
    assert!(stderr.contains("ACKNOWLEDGED"), "{stderr}");

    // The index applied that record: it was acknowledged. The start is refused...
    let refused = Server::try_start(&data, &[]).err().expect("the start must be refused");
    assert!(refused.contains("WAS acknowledged"), "{refused}");
    // ...and changed nothing.
    assert_eq!(std::fs::read(&journal_path).unwrap(), journal, "a refused start modified the journal");

    // Rebuilding the index: the operator chose to go on without that record. It is cut, its
    // bytes are kept beside the journal, and the log says what may have been lost.
    let server = Server::try_start(&data, &["--rebuild-index"]).unwrap_or_else(|log| panic!("{log}"));
    drop(server);
    let evidence = data.join("journal").join(format!("00000001.log.cut-{last}"));
    assert_eq!(std::fs::read(&evidence).unwrap(), journal[last..], "the cut bytes are kept");
    assert_eq!(std::fs::read(&journal_path).unwrap(), journal[..last], "cut at the damaged record");
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("LAST RECORD IS DAMAGED"), "{log}");

    // A torn tail (a write cut short) is what it says: verify passes with a note.
    let mut torn = std::fs::read(&journal_path).unwrap();
    torn.extend_from_slice(&[200, 0, 0, 0, 9, 9]);
    std::fs::write(&journal_path, &torn).unwrap();
    let (ok, stdout, stderr) = puente(&["verify", "--data-dir", &text(&data)]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("torn record"), "{stdout}");
}

/// A backup of a store that has a snapshot carries the newest one its journal reaches, checked
/// by `verify` (checksum, position in the journal) and installed by `restore`, so the restored
/// store starts from it; a damaged snapshot in a backup is refused like a damaged segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_carries_the_newest_snapshot_and_a_restore_starts_from_it() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let mut client = server.client().await;
    let (source, wallets) = accounts(&mut client, "fintech-a", "USD", 2).await;
    for wallet in &wallets {
        client.transfer(NewTransfer::new(&source, wallet, "USD", "2.50")).await.unwrap();
    }
    let balances: Vec<String> =
        all_accounts(&mut client).await.iter().map(|a| a.posted_balance.clone()).collect();
    drop(client);
    // A clean stop writes a snapshot of everything.
    assert!(server.terminate().success());
    let snapshots: Vec<String> = std::fs::read_dir(data.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");

    let backup = dir.path().join("backup");
    let (ok, _, stderr) = puente(&["backup", "--data-dir", &text(&data), "--out", &text(&backup)]).await;
    assert!(ok, "backup failed: {stderr}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backup.join("MANIFEST.json")).unwrap()).unwrap();
    let seq = manifest["snapshot"]["seq"].as_u64().expect("the manifest lists the snapshot");
    assert_eq!(seq, manifest["journal_last_seq"].as_u64().unwrap());
    let name = format!("snapshots/{}", snapshots[0]);
    assert_eq!(manifest["snapshot"]["file"]["name"], name.as_str());
    assert_eq!(std::fs::read(backup.join(&name)).unwrap(), std::fs::read(data.join(&name)).unwrap());

    let (ok, stdout, stderr) = puente(&["verify", "--backup", &text(&backup), "--json"]).await;
    assert!(ok, "verify failed: {stderr}");
    let verified: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verified["snapshot_seq"], seq);

    let restored = dir.path().join("restored");
    let (ok, stdout, stderr) =
        puente(&["restore", "--from", &text(&backup), "--data-dir", &text(&restored), "--json"]).await;
    assert!(ok, "restore failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["snapshot_seq"], seq);
    assert_eq!(report["not_restored"], serde_json::json!([]));
    assert_eq!(std::fs::read(restored.join(&name)).unwrap(), std::fs::read(data.join(&name)).unwrap());
    std::fs::copy(crate::support::operator_key_file(&data), crate::support::operator_key_file(&restored))
        .unwrap();
    let server = Server::start(&restored);
    let mut client = server.client().await;
    let restored_balances: Vec<String> =
        all_accounts(&mut client).await.iter().map(|a| a.posted_balance.clone()).collect();
    assert_eq!(restored_balances, balances);
    drop(client);
    drop(server);

    // One flipped byte in the backup's snapshot: verify and restore refuse the backup.
    let path = backup.join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let (ok, _, stderr) = puente(&["verify", "--backup", &text(&backup)]).await;
    assert!(!ok && stderr.contains(&name), "{stderr}");
    let again = dir.path().join("again");
    let (ok, _, stderr) = puente(&["restore", "--from", &text(&backup), "--data-dir", &text(&again)]).await;
    assert!(!ok && stderr.contains(&name), "{stderr}");
    assert!(!again.exists());
}
