//! Hardening of the server process: text a client chose cannot forge log lines or send
//! terminal escapes; the data directory and every file in it are private to the server's user,
//! whatever the umask it was started with.

use puente_client::{Fixed, pb};
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
