//! `Journal::open` on arbitrary file contents: it never panics. It opens (reporting a bad tail,
//! which `cut_tail` then cuts) or refuses with `LedgerError::Corrupt`, and whatever it opens is
//! a prefix of what was written. Each case touches the filesystem, so cases are few.

use std::sync::OnceLock;

use proptest::prelude::*;
use puente_ledger::journal::{ChainHash, Journal, SEGMENT_HEADER_BYTES, chain_hash, segment_path};
use puente_ledger::{Effect, LedgerError, Op};

const CASES: u32 = 64;
const RECORDS: u64 = 3;

/// A record as read back: its sequence number and ops.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    seq: u64,
    ops: Vec<Op>,
}

fn entry(seq: u64) -> Entry {
    let ops = (0..seq)
        .map(|i| Op::Expire {
            pending_id: u128::from(seq * 10 + i),
            timestamp_ns: seq,
            effect: Effect { debit_account_id: 1, credit_account_id: 2, amount_minor: seq + i },
        })
        .collect();
    Entry { seq, ops }
}

/// A valid journal of [`RECORDS`] records, with the offsets where each record ends and the
/// chain head after each.
struct Valid {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    heads: Vec<ChainHash>,
}

fn valid() -> &'static Valid {
    static VALID: OnceLock<Valid> = OnceLock::new();
    VALID.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), None, |_| Ok(())).unwrap();
        let (mut ends, mut heads) = (Vec::new(), Vec::new());
        let mut locations = Vec::new();
        for seq in 1..=RECORDS {
            journal.append(seq, &entry(seq).ops, &mut locations).unwrap();
            ends.push(journal.len_bytes() as usize);
            heads.push(journal.chain_head().1);
        }
        drop(journal);
        let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
        assert_eq!(bytes.len(), *ends.last().unwrap(), "one segment");
        Valid { bytes, ends, heads }
    })
}

/// Writes `contents` as a data directory's (one) journal segment and opens it. Returns the
/// entries read.
fn open(contents: &[u8]) -> Result<Vec<Entry>, LedgerError> {
    let dir = tempfile::tempdir().unwrap();
    let segment = segment_path(dir.path(), 1);
    std::fs::create_dir_all(segment.parent().unwrap()).unwrap();
    std::fs::write(&segment, contents).unwrap();
    let mut entries = Vec::new();
    let opened = Journal::open(dir.path(), None, |e| {
        entries.push(Entry { seq: e.seq, ops: e.ops });
        Ok(())
    });
    match opened {
        Ok((mut journal, stats)) => {
            assert_eq!(stats.entries as usize, entries.len());
            assert_eq!(stats.tail.as_ref().map_or(0, |t| t.bytes), stats.truncated_tail_bytes);
            // Open reports a bad tail and leaves it; cutting it is the caller's decision.
            let file_len = std::fs::metadata(&segment).unwrap().len();
            assert_eq!(journal.len_bytes() + stats.truncated_tail_bytes, file_len);
            let evidence = journal.cut_tail().unwrap();
            assert_eq!(evidence.is_some(), stats.tail.is_some());
            if let Some(evidence) = evidence {
                assert_eq!(std::fs::metadata(evidence).unwrap().len(), stats.truncated_tail_bytes);
            }
            let len = journal.len_bytes();
            drop(journal);
            // A second open finds exactly what the first one kept: nothing more to cut.
            let (again, stats) = Journal::open(dir.path(), None, |_| Ok(())).unwrap();
            assert_eq!(stats.truncated_tail_bytes, 0);
            assert_eq!(stats.entries as usize, entries.len());
            assert_eq!(again.len_bytes(), len);
            Ok(entries)
        }
        Err(LedgerError::Corrupt(message)) => Err(LedgerError::Corrupt(message)),
        Err(other) => panic!("neither opened nor refused as corrupt: {other}"),
    }
}

/// What opened is a prefix of the valid records (the CRC and the hash chain let nothing
/// altered through).
fn assert_prefix(entries: &[Entry]) {
    assert!(entries.len() as u64 <= RECORDS);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(*e, entry(i as u64 + 1));
    }
}

/// A framed record: right length, CRC and chain hash, arbitrary payload.
fn framed(prev: &ChainHash, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(&chain_hash(prev, seq, payload));
    record.extend_from_slice(payload);
    record
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn arbitrary_bytes_never_panic(tail in bytes(2_048), with_header in any::<bool>()) {
        let mut contents =
            if with_header { valid().bytes[..SEGMENT_HEADER_BYTES].to_vec() } else { Vec::new() };
        contents.extend_from_slice(&tail);
        if let Ok(entries) = open(&contents) {
            prop_assert!(entries.is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_record_never_panic(tail in bytes(2_048)) {
        let valid = valid();
        let mut contents = valid.bytes[..valid.ends[0]].to_vec();
        contents.extend_from_slice(&tail);
        if let Ok(entries) = open(&contents) {
            prop_assert_eq!(entries.len(), 1);
            assert_prefix(&entries);
        }
    }

    #[test]
    fn intact_records_with_arbitrary_payloads_never_panic(
        payload in bytes(512),
        seq_prefix in any::<bool>(),
        tail in bytes(128),
    ) {
        // Right length, CRC and chain hash, so the payload reaches the decoder.
        let valid = valid();
        let mut contents = valid.bytes[..valid.ends[0]].to_vec();
        let payload = if seq_prefix { [2u64.to_le_bytes().to_vec(), payload].concat() } else { payload };
        contents.extend_from_slice(&framed(&valid.heads[0], 2, &payload));
        contents.extend_from_slice(&tail);
        if let Ok(entries) = open(&contents) {
            prop_assert!(!entries.is_empty() && entries.len() <= 2);
            prop_assert_eq!(&entries[0], &entry(1));
        }
    }

    #[test]
    fn damaged_valid_journal_opens_a_prefix_or_is_refused(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut contents = valid().bytes.clone();
        for (at, mask) in flips {
            let at = at.index(contents.len());
            contents[at] ^= mask;
        }
        if let Some(cut) = cut {
            contents.truncate(cut.index(contents.len() + 1));
        }
        if let Ok(entries) = open(&contents) {
            assert_prefix(&entries);
        }
    }
}
