//! A `PUENTEJ2` journal written by the previous storage (fixture: `tests/data/puentej2/`, made
//! by `make_fixture.rs.txt` with commit e09539f; it exercises every op kind) is migrated at the
//! first open: replayed through the engine, re-encoded into `PUENTEJ3` segments with the same
//! sequence numbers, and kept read-only as `journal.j2.log`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use puente_ledger::journal::{self, archived_chain_hash_at, chain_hash_at, chain_hex, segment_path};
use puente_ledger::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/puentej2").join(name)
}

struct Expected {
    head_seq: u64,
    head: String,
    accounts: BTreeMap<AccountId, (u128, u128, u128, u128, bool)>,
}

fn expected() -> Expected {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap();
    let accounts = json["accounts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, v)| {
            let n = |i: usize| v[i].as_u64().unwrap() as u128;
            (id.parse().unwrap(), (n(0), n(1), n(2), n(3), v[4].as_bool().unwrap()))
        })
        .collect();
    Expected {
        head_seq: json["chain_head_seq"].as_u64().unwrap(),
        head: json["chain_head"].as_str().unwrap().to_owned(),
        accounts,
    }
}

fn balances(ledger: &Ledger) -> BTreeMap<AccountId, (u128, u128, u128, u128, bool)> {
    ledger
        .list_accounts(None, 0, PAGE_SIZE_MAX)
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                a.id,
                (
                    a.debits_pending_minor,
                    a.debits_posted_minor,
                    a.credits_pending_minor,
                    a.credits_posted_minor,
                    a.closed,
                ),
            )
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    chain_hex(&ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().try_into().unwrap())
}

/// The SHA-256 of the segment the fixture migrates into. The fixture holds every op kind, so
/// this pins the `PUENTEJ3` encoding of each: a change to the format (a field, an order, a
/// code) changes it. If the change is intended, bump the payload version and add a reader for
/// the old one before changing this value.
const MIGRATED_SEGMENT_SHA256: &str = "c24bb4e83c6f4bdc48f398a728c55a7800d9b0fc3fe123c1f260d405da7ce4b2";

/// Every op kind the journal writes (see `journal::format::tag`).
const ALL_OP_KINDS: &[&str] = &[
    "AddApiKey",
    "AutoPost",
    "BindCertificate",
    "CloseAccount",
    "CloseWindow",
    "ConfirmSettlement",
    "CreateAccount",
    "Expire",
    "Refused",
    "RegisterHolder",
    "RegisterParticipant",
    "RevokeApiKey",
    "SetKycPolicy",
    "SetProfile",
    "SettleWindow",
    "Transfer",
    "UnbindCertificate",
    "WindowTransition",
];

#[tokio::test]
async fn a_puentej2_journal_is_migrated_once_and_kept() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let legacy = fixture("journal.log");
    std::fs::copy(&legacy, journal::legacy_path(dir.path())).unwrap();
    // Leftovers of a migration that crashed half-way are thrown away and it starts again.
    std::fs::create_dir_all(journal::segments_dir(dir.path())).unwrap();
    std::fs::write(segment_path(dir.path(), 1), b"half a segment").unwrap();

    let ledger = Ledger::open(LedgerConfig::new(dir.path())).unwrap();
    assert_eq!(ledger.recovery().migrated_records, Some(expected.head_seq));
    assert_eq!(balances(&ledger), expected.accounts);
    assert_eq!(ledger.chain_head().0, expected.head_seq);
    let head_after = ledger.chain_head();
    // The old file is kept, byte for byte, under its new name; heads recorded before the
    // migration still check against it, heads taken now against the segments.
    assert!(!journal::legacy_path(dir.path()).exists());
    assert_eq!(
        std::fs::read(journal::archived_legacy_path(dir.path())).unwrap(),
        std::fs::read(&legacy).unwrap()
    );
    let old_head = archived_chain_hash_at(dir.path(), expected.head_seq).unwrap().unwrap();
    assert_eq!(chain_hex(&old_head), expected.head);
    assert_eq!(chain_hash_at(dir.path(), expected.head_seq).unwrap(), Some(head_after.1));
    // The state reads the same through every path: a pending transfer, a settled window's
    // transfers, the feed.
    let feed = ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap();
    assert!(!feed.is_empty());
    for record in &feed {
        let prior = ledger.get_transfer(record.transfer.id, "").await.unwrap();
        assert!(matches!(prior, Some(Prior::Committed(ref r)) if r == record), "{prior:?}");
    }
    drop(ledger);

    // Every kind of op the journal writes is in the fixture, and so pinned by the hash below
    // (`Fail`, the old way of remembering a failure, migrates into `Refused`).
    let mut kinds = std::collections::BTreeSet::new();
    journal::Journal::open(dir.path(), None, |record| {
        for op in &record.ops {
            let text = format!("{op:?}");
            kinds.insert(text[..text.find([' ', '(', '{']).unwrap_or(text.len())].to_owned());
        }
        Ok(())
    })
    .unwrap();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert_eq!(kinds, ALL_OP_KINDS);

    let segment = std::fs::read(segment_path(dir.path(), 1)).unwrap();
    assert_eq!(sha256_hex(&segment), MIGRATED_SEGMENT_SHA256, "the PUENTEJ3 encoding changed");

    // A second open migrates nothing and finds the same.
    let ledger = loop {
        match Ledger::open(LedgerConfig::new(dir.path())) {
            Err(LedgerError::Corrupt(m)) if m.contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(ledger.recovery().migrated_records, None);
    assert_eq!(balances(&ledger), expected.accounts);
    assert_eq!(ledger.chain_head(), head_after);
    assert_eq!(ledger.transfers_after(0, PAGE_SIZE_MAX).await.unwrap(), feed);
}

#[tokio::test]
async fn a_damaged_puentej2_journal_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("journal.log")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(journal::legacy_path(dir.path()), &bytes).unwrap();
    let refused = Ledger::open(LedgerConfig::new(dir.path()));
    assert!(matches!(refused, Err(LedgerError::Corrupt(_))), "{:?}", refused.err());
    // Nothing was changed: the old journal is where it was, as it was.
    assert_eq!(std::fs::read(journal::legacy_path(dir.path())).unwrap(), bytes);
    assert!(!journal::archived_legacy_path(dir.path()).exists());
}
