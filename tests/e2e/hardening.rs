//! Hardening of the server process: text a client chose cannot forge log lines or send
//! terminal escapes; the data directory and every file in it are private to the server's user,
//! whatever the umask it was started with.

use std::path::Path;
use std::process::Command;

use puente_client::{Fixed, NewTransfer, pb};
use tonic::Code;

use crate::support::{Server, client_with_key, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_in_the_log_cannot_forge_lines_or_send_escapes() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // Debug for the server crate: refused requests are logged with their error, which quotes
    // what the client named.
    let server = Server::try_start_in(&data, &[], &[], &[("RUST_LOG", "info,puente_server=debug")], None)
        .unwrap_or_else(|log| panic!("{log}"));
    let mut operator = server.client().await;
    let (_, key) = operator.create_participant("fintech-a", "A", pb::Role::Participant).await.unwrap();
    let mut fintech = client_with_key(&server.addr, &key.key).await;

    // A participant names another participant: NOT_FOUND, and the name goes to the log.
    let forged = "x\n2026-01-01T00:00:00.000000Z  INFO puente_server: forged line\x1b[2K\x1b[31m";
    let error =
        fintech.quote(forged, pb::FxSegment::Sme, "USD", "MXN", Fixed::Send("1.00")).await.unwrap_err();
    assert!(matches!(error, puente_client::ClientError::Status { code: Code::NotFound, .. }), "{error:?}");

    // A presented key whose key id holds a line separator and a C1 CSI (both pass HTTP header
    // validation as UTF-8): refused, and its key id is logged at info.
    let header = format!("Bearer puente_ab\u{2028}cd\u{9b}31m_{}", "0".repeat(64));
    let channel = puente_client::channel(&server.addr, &Default::default()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    let value = tonic::metadata::MetadataValue::try_from(header.as_bytes()).expect("a header value");
    request.metadata_mut().insert("authorization", value);
    let path = "/puente.v1.ParticipantService/GetCaller".parse().unwrap();
    let refused = grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Both events were written before their answers went out.
    let log = std::fs::read(data.with_extension("log")).unwrap();
    let log = String::from_utf8(log).expect("the log is UTF-8");
    for (what, raw) in [("ESC", '\x1b'), ("CSI", '\u{9b}'), ("line separator", '\u{2028}')] {
        assert!(!log.contains(raw), "a raw {what} reached the log:\n{log}");
    }
    assert!(!log.lines().any(|line| line.starts_with("2026-01-01T00:00:00")), "a forged line:\n{log}");
    // Escaped, not dropped: an operator can still read what was sent.
    assert!(
        log.contains(
            "participant x\\n2026-01-01T00:00:00.000000Z  INFO puente_server: forged line\\u{1b}[2K"
        ),
        "{log}"
    );
    assert!(log.contains("presented_key_id=ab\\u{2028}cd\\u{9b}31m"), "{log}");
}

/// Every path under `dir` (itself included) that is open to group or others, with its mode,
/// and the number of paths seen. Links are not followed.
fn open_paths(dir: &Path) -> (Vec<String>, usize) {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut seen = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        seen += 1;
        let mode = metadata.permissions().mode() & 0o7777;
        let expected = if metadata.is_dir() { 0o700 } else { 0o600 };
        if mode != expected {
            open.push(format!("{} {mode:o}", path.display()));
        }
        if metadata.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    (open, seen)
}

/// Sets every path under `dir` to 0755 (directories) or 0644 (files), as an old server or a
/// careless copy left them.
fn loosen(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let is_dir = path.is_dir();
        let mode = if is_dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if is_dir {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_whatever_the_umask() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // umask 000: without the server's own care, everything would be world-readable.
    let mut server =
        Server::try_start_in(&data, &[], &[], &[], Some(0o000)).unwrap_or_else(|log| panic!("{log}"));
    let mut client = server.client().await;
    let (source, wallets) = crate::support::accounts(&mut client, "fintech-a", "USD", 1).await;
    let (_, other) = crate::support::accounts(&mut client, "fintech-b", "USD", 1).await;
    for _ in 0..20 {
        client.transfer(NewTransfer::new(&source, &wallets[0], "USD", "1.00")).await.unwrap();
    }
    client.transfer(NewTransfer::new(&source, &other[0], "USD", "5.00").pending(0)).await.unwrap();
    client.set_rate("USD", "MXN", "18.9125", "test").await.unwrap(); // the FX store
    let (open, seen) = open_paths(&data);
    assert!(open.is_empty(), "open to group or others while serving: {open:?}");
    assert!(seen >= 8, "journal, index, FX store: {seen} paths");
    drop(client);
    assert!(server.terminate().success());
    let (open, _) = open_paths(&data);
    assert!(open.is_empty(), "open to group or others after a clean stop: {open:?}");

    // A backup, and a store restored from it, under umask 000 too.
    let backup = dir.path().join("backup");
    let restored = dir.path().join("restored");
    for args in [
        vec!["backup", "--data-dir", data.to_str().unwrap(), "--out", backup.to_str().unwrap()],
        vec!["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()],
    ] {
        let output = Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_puente"))
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    for dir in [&backup, &restored] {
        let (open, _) = open_paths(dir);
        assert!(open.is_empty(), "{}: {open:?}", dir.display());
    }

    // A data directory left open by an older server is tightened at start, with a warning.
    loosen(&data);
    assert!(!open_paths(&data).0.is_empty());
    let server =
        Server::try_start_in(&data, &[], &[], &[], Some(0o022)).unwrap_or_else(|log| panic!("{log}"));
    let (open, _) = open_paths(&data);
    assert!(open.is_empty(), "not tightened at start: {open:?}");
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("the data directory was readable by group or others"), "{log}");
    // And it still serves what it held.
    let mut client = server.client().await;
    assert_eq!(client.get_account(&wallets[0]).await.unwrap().posted_balance, "20.00");
}
