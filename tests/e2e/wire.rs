//! Request amplification and malformed requests, against the real server.
//!
//! Every repeated or map field of every request (found in the API's own descriptor, so a new
//! one cannot be forgotten) is sent with 4,000,000 empty entries, built as raw protobuf bytes:
//! the server refuses it with one INVALID_ARGUMENT naming the field and its limit, its peak
//! memory grows by no more than a small multiple of the request's size, and it answers
//! afterwards (crates/server/src/wire.rs).

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use puente_client::pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::support::{Server, temp_dir};

/// Entries in each oversized field: 7.6 MiB on the wire, as in the review's finding.
const ENTRIES: usize = 4_000_000;
/// Peak memory a request may add, as a multiple of its wire size.
const RSS_PER_WIRE_BYTE_MAX: u64 = 8;
/// ... plus this: HTTP/2 and socket buffers, the first call's lazily built state (tracing
/// spans, per-method metrics, a participant's limiter entries), allocator bookkeeping. None of
/// it grows with the request (the old server grew by ~11.6 GiB here).
const RSS_SLACK_BYTES: u64 = 16 * 1024 * 1024;
/// ... and for a request within every limit, what its entries become once decoded and
/// validated, which the limits bound whatever the wire size: at most 8,189 transfers of 16
/// metadata entries, ~100 bytes each in a HashMap however short on the wire, and a few field
/// violations each (measured: ~42 MiB for the most compact such request, 0.9 MB on the wire).
const DECODED_SLACK_BYTES: u64 = 64 * 1024 * 1024;

/// Message bytes in, message bytes out.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; bytes::Buf::remaining(buf)];
        bytes::Buf::copy_to_slice(buf, &mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Calls `/puente.v1.<method>` (or a full `/<service>/<method>` path) with `message` as its raw
/// bytes (a client stream of one message when `streaming`).
pub async fn raw(
    channel: puente_client::AuthChannel,
    method: &str,
    message: Vec<u8>,
    streaming: bool,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = if method.starts_with('/') { method.to_owned() } else { format!("/puente.v1.{method}") };
    let path = path.parse().unwrap();
    let response = if streaming {
        let stream = tokio_stream::iter(vec![message]);
        grpc.client_streaming(tonic::Request::new(stream), path, RawCodec).await
    } else {
        grpc.unary(tonic::Request::new(message), path, RawCodec).await
    };
    response.map(tonic::Response::into_inner)
}

pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field `number` as a length-delimited record holding `payload`.
pub fn record(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    varint(u64::from(number) << 3 | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// One repeated field reachable from an RPC's request.
#[derive(Debug)]
struct Target {
    /// `LedgerService/CreateTransfers`.
    method: String,
    client_streaming: bool,
    /// The messages to go through: field number, and whether it is repeated (its first entry).
    steps: Vec<(u32, bool)>,
    /// The field as a violation names it: `transfers[0].metadata`.
    path: String,
    /// The field's full name, as the server's table keys it: `puente.v1.Transfer.metadata`.
    full_name: String,
    number: u32,
    kind: Type,
}

impl Target {
    /// The request: `n` empty (zero) entries of the field, inside its enclosing messages.
    fn message(&self, n: usize) -> Vec<u8> {
        let entry: Vec<u8> = match self.kind {
            Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                [vec![(self.number << 3 | 1) as u8], vec![0; 8]].concat()
            }
            Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                [vec![(self.number << 3 | 5) as u8], vec![0; 4]].concat()
            }
            Type::Message | Type::String | Type::Bytes => record(self.number, &[]),
            _ => vec![(self.number << 3) as u8, 0],
        };
        let mut message = entry.repeat(n);
        for (number, _) in self.steps.iter().rev() {
            message = record(*number, &message);
        }
        message
    }
}

/// Every repeated field of every request message of every puente.v1 RPC.
fn targets() -> Vec<Target> {
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut messages = std::collections::HashMap::new();
    fn index<'a>(
        out: &mut std::collections::HashMap<String, &'a prost_types::DescriptorProto>,
        scope: &str,
        m: &'a prost_types::DescriptorProto,
    ) {
        let name = format!("{scope}.{}", m.name());
        for nested in &m.nested_type {
            index(out, &name, nested);
        }
        out.insert(name, m);
    }
    for file in &set.file {
        for m in &file.message_type {
            index(&mut messages, &format!(".{}", file.package()), m);
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn visit(
        messages: &std::collections::HashMap<String, &prost_types::DescriptorProto>,
        type_name: &str,
        method: &str,
        client_streaming: bool,
        steps: &mut Vec<(u32, bool)>,
        path: &str,
        out: &mut Vec<Target>,
        depth: usize,
    ) {
        assert!(depth < 16, "{type_name}: nesting too deep for this test");
        let Some(message) = messages.get(type_name) else { return };
        for field in &message.field {
            let number = field.number() as u32;
            let name = field.name();
            let repeated = field.label() == Label::Repeated;
            if repeated {
                out.push(Target {
                    method: method.to_owned(),
                    client_streaming,
                    steps: steps.clone(),
                    path: format!("{path}{name}"),
                    full_name: format!("{}.{name}", type_name.trim_start_matches('.')),
                    number,
                    kind: field.r#type(),
                });
            }
            if field.r#type() == Type::Message {
                steps.push((number, repeated));
                let at = if repeated { format!("{path}{name}[0].") } else { format!("{path}{name}.") };
                visit(messages, field.type_name(), method, client_streaming, steps, &at, out, depth + 1);
                steps.pop();
            }
        }
    }
    let mut out = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "puente.v1") {
        for service in &file.service {
            for m in &service.method {
                let method = format!("{}/{}", service.name(), m.name());
                visit(
                    &messages,
                    m.input_type(),
                    &method,
                    m.client_streaming(),
                    &mut Vec::new(),
                    "",
                    &mut out,
                    0,
                );
            }
        }
    }
    out
}

fn limit_of(full_name: &str) -> usize {
    puente_server::wire::REPEATED_FIELD_LIMITS
        .iter()
        .find(|(name, _)| *name == full_name)
        .map(|(_, limit)| *limit)
        .unwrap_or_else(|| {
            panic!("{full_name} is repeated in a request and has no limit in the server's table")
        })
}

/// A `/proc/<pid>/status` value in bytes (`VmRSS`, `VmHWM`).
fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Resets the process's peak RSS to its current RSS (Linux `clear_refs` 5); returns the RSS.
fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS (Linux >= 4.0)");
    proc_status(pid, "VmRSS:")
}

fn violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| (v.field, v.description)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_repeated_request_field_is_bounded_before_decoding_in_flat_memory() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let pid = server.pid();
    let operator = server.client().await;
    let targets = targets();
    // The API's repeated request fields: each service that has one is covered, nested maps too.
    let paths: Vec<String> = targets.iter().map(|t| format!("{} {}", t.method, t.path)).collect();
    for expected in [
        "LedgerService/CreateTransfers transfers",
        "LedgerService/CreateTransfers transfers[0].metadata",
        "LedgerService/CreateAccounts accounts",
        "LedgerService/CreateAccounts accounts[0].metadata",
        "FxService/SetRates rates",
        "FxService/StreamRates rates",
        "HolderService/SetKycPolicy us_tiers",
        "SettlementService/SetParticipantProfile profile.currencies",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not in {paths:?}");
    }
    let mut report = Vec::new();

    // First, on a fresh server: the most compact request within every limit (8,189 transfers,
    // 16 one-byte metadata keys each, nothing else: it passes the walk, fails validation).
    let transfer: Vec<u8> = (0..16u8)
        .flat_map(|k| {
            let mut entry = record(1, &[b'a' + k]);
            entry.extend(record(2, &[]));
            record(10, &entry)
        })
        .collect();
    let message = record(1, &transfer).repeat(puente_ledger::BATCH_EVENTS_MAX);
    let wire = message.len() as u64;
    let before = reset_peak(pid);
    let status = raw(operator.channel(), "LedgerService/CreateTransfers", message, false).await.unwrap_err();
    let growth = proc_status(pid, "VmHWM:").saturating_sub(before);
    report.push(format!("maximal compact CreateTransfers: {wire} bytes, peak RSS +{} KiB", growth / 1024));
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(violations(&status).len() <= 101);
    assert!(growth <= RSS_PER_WIRE_BYTE_MAX * wire + DECODED_SLACK_BYTES, "{growth} bytes for {wire}");

    for target in &targets {
        let limit = limit_of(&target.full_name);
        let mut entries = ENTRIES;
        let (status, wire, growth) = loop {
            let message = target.message(entries);
            let wire = message.len() as u64;
            let before = reset_peak(pid);
            let status = raw(operator.channel(), &target.method, message, target.client_streaming)
                .await
                .expect_err("refused");
            let growth = proc_status(pid, "VmHWM:").saturating_sub(before);
            report.push(format!(
                "{} {}: {entries} entries, {wire} bytes on the wire, peak RSS +{} KiB ({:?})",
                target.method,
                target.path,
                growth / 1024,
                status.code()
            ));
            // Services of small requests refuse this size from its length prefix alone (and
            // say their limit): then the most entries that fit.
            let info = status.get_details_error_info();
            if let Some(max) =
                info.as_ref().filter(|i| i.reason == "MESSAGE_TOO_LARGE").map(|i| &i.metadata["max_bytes"])
            {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(growth <= RSS_SLACK_BYTES, "{growth} bytes for a refused length prefix");
                let max: usize = max.parse().unwrap();
                let fitting = entries * max / (wire as usize) - 16;
                assert!(fitting < entries && fitting > limit, "{} {}", target.method, target.path);
                entries = fitting;
                continue;
            }
            break (status, wire, growth);
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{} {}: {status:?}", target.method, target.path);
        let description = format!("at most {limit} entries, got {entries}");
        assert_eq!(violations(&status), [(target.path.clone(), description.clone())], "{}", target.method);
        assert!(status.message().contains(&description), "{}", status.message());
        assert!(
            growth <= RSS_PER_WIRE_BYTE_MAX * wire + RSS_SLACK_BYTES,
            "{} {}: peak RSS grew by {growth} bytes for a {wire}-byte request",
            target.method,
            target.path
        );
        // The server still answers.
        assert!(operator.clone().whoami().await.is_ok());
    }
    eprintln!("{}", report.join("\n"));
}

/// `n` empty transfers.
fn empty_transfers(n: usize) -> Vec<u8> {
    record(1, &[]).repeat(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entry_over_a_limit_is_one_violation_and_a_full_bad_batch_lists_at_most_101() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let operator = server.client().await;
    let over = raw(operator.channel(), "LedgerService/CreateTransfers", empty_transfers(8_190), false)
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument);
    assert_eq!(violations(&over), [("transfers".to_owned(), "at most 8189 entries, got 8190".to_owned())]);
    // The reason of a batch that is too large (or empty), as before.
    let info = over.get_details_error_info().unwrap();
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_BATCH", "puente.v1"));

    // 8,189 transfers with every field missing pass the count and fail validation, several
    // violations each: the status lists the first 100 and says how many more there were.
    let bad = raw(operator.channel(), "LedgerService/CreateTransfers", empty_transfers(8_189), false)
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let listed = violations(&bad);
    assert_eq!(listed.len(), 101, "{:?}", &listed[..3]);
    assert!(listed[0].0.starts_with("transfers[0]."), "{:?}", listed[0]);
    let (field, more) = &listed[100];
    assert!(field.is_empty() && more.ends_with("more violations not listed"), "{more}");
    assert!(bad.message().len() < 4_096, "{} bytes of message", bad.message().len());
    // The same for accounts.
    let accounts = raw(operator.channel(), "LedgerService/CreateAccounts", empty_transfers(8_189), false)
        .await
        .unwrap_err();
    assert!(violations(&accounts).len() <= 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument_with_error_info_not_internal() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let operator = server.client().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // transfers[0].id is not UTF-8: the walk passes it, prost refuses it.
        ("invalid UTF-8", record(1, &record(1, &[0xff, 0xfe]))),
        // A length past the end of the message.
        ("truncated", vec![0x0a, 0x05, 0x00]),
        // A wire type that does not match the field.
        ("wrong wire type", vec![0x08, 0x01]),
    ];
    for (case, message) in cases {
        let status =
            raw(operator.channel(), "LedgerService/CreateTransfers", message, false).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        let info = status.get_details_error_info().unwrap_or_else(|| panic!("{case}: no ErrorInfo"));
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("MALFORMED_MESSAGE", "puente.v1"),
            "{case}"
        );
        assert_eq!(violations(&status).len(), 1, "{case}");
    }
    // Still serving.
    assert!(operator.clone().whoami().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_needs_no_credentials_takes_only_small_messages() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let anonymous = server.anonymous().await;
    // A health check padded with an unknown field: 64 KiB is the most without credentials.
    let check = |padding: usize| [record(1, b""), record(15, &vec![b'x'; padding])].concat();
    let small = raw(anonymous.channel(), "/grpc.health.v1.Health/Check", check(60_000), false).await;
    assert!(small.is_ok(), "{small:?}");
    let large = raw(anonymous.channel(), "/grpc.health.v1.Health/Check", check(1 << 20), false).await;
    let status = large.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status.get_details_error_info().unwrap();
    assert_eq!((info.reason.as_str(), info.metadata["max_bytes"].as_str()), ("MESSAGE_TOO_LARGE", "65536"));
}
