//! The journal's byte layout, pinned: a change to any of these bytes makes old journals
//! unreadable, so it must come with a new payload version and a reader for the old one.

use super::format::{decode_op_at, decode_payload, encode_op, encode_payload};
use super::*;
use crate::types::*;
use puente_money::CurrencyCode;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn transfer_record() -> Op {
    Op::Transfer(TransferRecord {
        transfer: Transfer {
            id: 0x0102,
            debit_account_id: 7,
            credit_account_id: 8,
            amount_minor: 300,
            currency: CurrencyCode::USD,
            flags: TransferFlags { pending: true, ..TransferFlags::default() },
            pending_id: 0,
            timeout_ms: 1_000,
            reference: "ab".into(),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
        },
        effect: Effect { debit_account_id: 7, credit_account_id: 8, amount_minor: 300 },
        timestamp_ns: 1_700_000_000_000_000_000,
        expires_at_ns: 1_700_000_001_000_000_000,
        released_minor: 0,
    })
}

fn expire() -> Op {
    Op::Expire {
        pending_id: 0x0102,
        timestamp_ns: 1_700_000_001_000_000_000,
        effect: Effect { debit_account_id: 7, credit_account_id: 8, amount_minor: 300 },
    }
}

fn refused() -> Op {
    let Op::Transfer(record) = transfer_record() else { unreachable!() };
    Op::Refused(RefusedTransfer::new("bank-a", &record.transfer, TransferResult::ExceedsCredits, 5))
}

/// A named op and its encoding (tag, length, body), hex.
type Golden = (&'static str, fn() -> Op, &'static str);

/// Each op's encoding as frozen in payload version 1.
const GOLDEN: &[Golden] = &[
    (
        "transfer",
        transfer_record,
        "024902010000000000000000000000000000020700000000000000000000000000000008000000000000000000000000000000ac025553448080a8b1e39fe7cb1702616201016b0176e807",
    ),
    (
        "expire",
        expire,
        "043b020100000000000000000000000000008094938ee79fe7cb170700000000000000000000000000000008000000000000000000000000000000ac02",
    ),
    (
        "refused",
        refused,
        "03710662616e6b2d6102010000000000000000000000000000020700000000000000000000000000000008000000000000000000000000000000ac0255534400000000000000000000000000000000e8079caccc24b5d7e06c21c0277b6530d6663eec20b33c2aa17e94a46d84ef09cfed2c05",
    ),
];

#[test]
fn op_encodings_are_pinned() {
    let mut mismatches = Vec::new();
    for (name, make, golden) in GOLDEN {
        let op = make();
        let mut bytes = Vec::new();
        encode_op(&op, &mut bytes);
        let (decoded, len) = decode_op_at(&bytes).unwrap();
        assert_eq!(decoded, op, "{name} round trip");
        assert_eq!(len, bytes.len(), "{name} length");
        if hex(&bytes) != *golden {
            mismatches.push(format!("{name}: {}", hex(&bytes)));
        }
    }
    assert!(mismatches.is_empty(), "encodings changed:\n{}", mismatches.join("\n"));
}

#[test]
fn a_payload_is_seq_version_count_then_ops() {
    let ops = [transfer_record(), expire()];
    let (mut payload, mut offsets, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    encode_payload(42, &ops, &mut payload, &mut offsets, &mut scratch);
    assert_eq!(&payload[..8], &42u64.to_le_bytes());
    assert_eq!(payload[8], format::PAYLOAD_VERSION);
    assert_eq!(payload[9], 2, "op count (varint)");
    assert_eq!(offsets[0], 10);
    let decoded = decode_payload(&payload).unwrap();
    assert_eq!((decoded.seq, decoded.ops.as_slice(), decoded.offsets), (42, &ops[..], offsets.clone()));
    // Each op also decodes alone from its offset (how the index reads one back).
    for (op, offset) in ops.iter().zip(&offsets) {
        assert_eq!(&decode_op_at(&payload[*offset as usize..]).unwrap().0, op);
    }
    // Another version is refused, not misread.
    let mut other = payload.clone();
    other[8] = format::PAYLOAD_VERSION + 1;
    assert!(decode_payload(&other).is_err());
}

#[test]
fn a_location_packs_segment_and_offset() {
    let location = Location::new(3, 0x0000_1234_5678);
    assert_eq!(location.0, (3u64 << 48) | 0x1234_5678);
    assert_eq!((location.segment(), location.offset()), (3, 0x1234_5678));
    // Every offset a segment can have fits beside the largest segment number.
    let last = Location::new(SEGMENTS_MAX, SEGMENT_BYTES_MAX - 1);
    assert_eq!((last.segment(), last.offset()), (SEGMENTS_MAX, SEGMENT_BYTES_MAX - 1));
}

#[test]
fn a_segment_starts_with_its_header_and_records_follow() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, stats) = Journal::open(dir.path(), None, |_| Ok(())).unwrap();
    assert_eq!(stats.entries, 0);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    journal.append(1, &[transfer_record()], &mut first).unwrap();
    journal.append(2, &[expire(), refused()], &mut second).unwrap();
    let locations: Vec<Location> = first.iter().chain(&second).copied().collect();
    let head = journal.chain_head();
    drop(journal);
    let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
    assert_eq!(&bytes[..8], b"PUENTEJ3");
    let header = SegmentHeader::read(&segment_path(dir.path(), 1)).unwrap();
    assert_eq!((header.first_seq, header.prev_head), (1, CHAIN_GENESIS));
    // Record 1 right after the header: length, CRC-32 of the payload, chain hash, payload.
    let at = SEGMENT_HEADER_BYTES;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let payload = &bytes[at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + len];
    assert_eq!(u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()), crc32fast::hash(payload));
    let first = chain_hash(&CHAIN_GENESIS, 1, payload);
    assert_eq!(bytes[at + 8..at + 40], first);
    // The ops' locations point at their tags, and the reader reads them back one by one.
    let reader = JournalReader::new(dir.path());
    assert_eq!(locations.len(), 3);
    assert_eq!(reader.read_op(locations[0]).unwrap(), transfer_record());
    assert_eq!(reader.read_op(locations[1]).unwrap(), expire());
    assert_eq!(reader.read_op(locations[2]).unwrap(), refused());
    // Reopened: the same records, the same head, and replay gives the same locations.
    let mut replayed = Vec::new();
    let (journal, stats) = Journal::open(dir.path(), None, |r| {
        replayed.push((r.seq, r.ops, r.locations));
        Ok(())
    })
    .unwrap();
    assert_eq!(journal.chain_head(), head);
    assert_eq!(stats.entries, 2);
    assert_eq!(replayed[0], (1, vec![transfer_record()], vec![locations[0]]));
    assert_eq!(replayed[1], (2, vec![expire(), refused()], locations[1..].to_vec()));
}

/// A standby copies the leader's records byte for byte (from the journal of record): same
/// chain, same ops; a record that is altered, out of order or from another chain is refused
/// and nothing is written.
#[test]
fn a_replicated_record_is_checked_then_written_byte_for_byte() {
    let leader_dir = tempfile::tempdir().unwrap();
    let standby_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = Journal::open(leader_dir.path(), None, |_| Ok(())).unwrap();
    let (mut standby, _) = Journal::open(standby_dir.path(), None, |_| Ok(())).unwrap();
    let mut locations = Vec::new();
    let mut records = Vec::new();
    for (seq, ops) in [(1, vec![transfer_record()]), (2, vec![expire(), refused()])] {
        records.push(leader.prepare(seq, &ops).unwrap().to_vec());
        leader.write_prepared(seq, &mut locations).unwrap();
    }
    // Out of order, altered, or trailing bytes: refused, nothing written.
    assert!(standby.append_record(2, &records[1], &mut locations).is_err());
    let mut altered = records[0].clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(matches!(standby.append_record(1, &altered, &mut locations), Err(LedgerError::Corrupt(_))));
    let mut longer = records[0].clone();
    longer.push(0);
    assert!(matches!(standby.append_record(1, &longer, &mut locations), Err(LedgerError::Corrupt(_))));
    assert_eq!(standby.chain_head().0, 0);
    // In order: the same ops and the same chain head as the leader's.
    assert_eq!(standby.append_record(1, &records[0], &mut locations).unwrap(), vec![transfer_record()]);
    assert_eq!(locations.len(), 1);
    assert_eq!(standby.append_record(2, &records[1], &mut locations).unwrap(), vec![expire(), refused()]);
    assert_eq!(standby.chain_head(), leader.chain_head());
    // A record of another chain (a different first record) does not chain on.
    let other_dir = tempfile::tempdir().unwrap();
    let (mut other, _) = Journal::open(other_dir.path(), None, |_| Ok(())).unwrap();
    other.append(1, &[expire()], &mut locations).unwrap();
    assert!(matches!(other.append_record(2, &records[1], &mut locations), Err(LedgerError::Corrupt(_))));
    // Both segments read back the same ops, and a reopened standby replays them.
    drop(standby);
    let mut replayed = Vec::new();
    Journal::open(standby_dir.path(), None, |r| {
        replayed.push(r.ops);
        Ok(())
    })
    .unwrap();
    assert_eq!(replayed, vec![vec![transfer_record()], vec![expire(), refused()]]);
}

/// `limits::EVENT_OP_BYTES_MAX` bounds the op of any one event with every field at its limit,
/// so a group of `GROUP_EVENTS_MAX` events can never make a record the journal refuses.
#[test]
fn no_op_of_one_event_exceeds_its_bound() {
    use crate::limits::*;
    let longest = |len: usize, c: char| std::iter::repeat_n(c, len).collect::<String>();
    let metadata: Metadata = (0..METADATA_ENTRIES_MAX)
        .map(|i| {
            (
                format!("{i:02}{}", longest(METADATA_KEY_LEN_MAX - 2, 'k')),
                longest(METADATA_VALUE_LEN_MAX, 'v'),
            )
        })
        .collect();
    let transfer = Transfer {
        id: u128::MAX,
        debit_account_id: u128::MAX - 1,
        credit_account_id: u128::MAX - 2,
        amount_minor: u64::MAX,
        currency: CurrencyCode::MXN,
        flags: TransferFlags { post_pending: true, linked: true, ..TransferFlags::default() },
        pending_id: u128::MAX - 3,
        timeout_ms: TIMEOUT_MAX_MS,
        reference: longest(REFERENCE_LEN_MAX, 'r'),
        metadata: metadata.clone(),
    };
    let record = Op::Transfer(TransferRecord {
        transfer: transfer.clone(),
        effect: Effect { debit_account_id: u128::MAX, credit_account_id: u128::MAX, amount_minor: u64::MAX },
        timestamp_ns: u64::MAX,
        expires_at_ns: u64::MAX,
        released_minor: u64::MAX,
    });
    let account = Op::CreateAccount(Account {
        id: u128::MAX,
        participant: longest(PARTICIPANT_ID_LEN_MAX, 'p'),
        currency: CurrencyCode::MXN,
        flags: AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: true },
        overdraft_limit_minor: u64::MAX,
        holder_ref: longest(REFERENCE_LEN_MAX, 'h'),
        metadata,
        debits_pending_minor: 0,
        debits_posted_minor: 0,
        credits_pending_minor: 0,
        credits_posted_minor: 0,
        created_at_ns: u64::MAX,
        closed: false,
    });
    let refused = Op::Refused(RefusedTransfer::new(
        &longest(PARTICIPANT_ID_LEN_MAX, 'p'),
        &transfer,
        TransferResult::ExceedsCredits,
        u64::MAX,
    ));
    for (name, op) in [("transfer", record), ("account", account), ("refused", refused)] {
        let mut bytes = Vec::new();
        encode_op(&op, &mut bytes);
        assert!(bytes.len() <= EVENT_OP_BYTES_MAX, "{name}: {} bytes > {EVENT_OP_BYTES_MAX}", bytes.len());
        // Not a bound so loose that it hides a codec that grew.
        assert!(bytes.len() * 2 > EVENT_OP_BYTES_MAX || name == "refused", "{name}: {} bytes", bytes.len());
    }
}
