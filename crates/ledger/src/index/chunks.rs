//! History chunks: an account's statement entries, and a participant's (or the ledger's) feed,
//! stored as sled values of up to [`ACCOUNT_CHUNK_ENTRIES_MAX`] / [`FEED_CHUNK_ENTRIES_MAX`]
//! entries under (owner, first timestamp) keys. An account chunk holds the balances before its
//! first entry and, per entry, what changed (not the balances after it: they are recomputed
//! while reading), so an entry takes ~25 bytes instead of a row with four 128-bit balances.

use crate::LedgerError;
use crate::engine::{Entry, EntryKind};
use crate::journal::Location;
use crate::types::{AccountId, TransferId};

pub use crate::limits::ACCOUNT_CHUNK_ENTRIES_MAX;
pub use crate::limits::FEED_CHUNK_ENTRIES_MAX;
const CHUNK_VERSION: u8 = 1;

/// (debits pending, debits posted, credits pending, credits posted).
pub type Balances = [u128; 4];

/// One statement entry as a chunk keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub timestamp_ns: u64,
    pub transfer_id: TransferId,
    pub kind: EntryKind,
    pub is_debit: bool,
    pub amount_minor: u64,
    /// The reservation a post released (differs from `amount_minor` for a partial post).
    pub released_minor: u64,
    /// The op that made it.
    pub location: Location,
}

impl ChunkEntry {
    pub fn of(entry: &Entry, released_minor: u64, location: Location) -> ChunkEntry {
        // Only a post can release other than what it moved (a partial post).
        let released_minor =
            if entry.kind == EntryKind::PostPending { released_minor } else { entry.amount_minor };
        ChunkEntry {
            timestamp_ns: entry.timestamp_ns,
            transfer_id: entry.transfer_id,
            kind: entry.kind,
            is_debit: entry.is_debit,
            amount_minor: entry.amount_minor,
            released_minor,
            location,
        }
    }

    /// The balances after this entry, from the balances before it.
    pub fn apply(&self, b: Balances) -> Option<Balances> {
        let [mut dp, mut dpo, mut cp, mut cpo] = b;
        let a = u128::from(self.amount_minor);
        let released = u128::from(self.released_minor);
        let (pending, posted) = if self.is_debit { (&mut dp, &mut dpo) } else { (&mut cp, &mut cpo) };
        match self.kind {
            EntryKind::Posted => *posted = posted.checked_add(a)?,
            EntryKind::Pending => *pending = pending.checked_add(a)?,
            EntryKind::PostPending => {
                *pending = pending.checked_sub(released)?;
                *posted = posted.checked_add(a)?;
            }
            EntryKind::VoidPending | EntryKind::Expired => *pending = pending.checked_sub(released)?,
        }
        Some([dp, dpo, cp, cpo])
    }
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Posted => 0,
        EntryKind::Pending => 1,
        EntryKind::PostPending => 2,
        EntryKind::VoidPending => 3,
        EntryKind::Expired => 4,
    }
}

fn kind_of(code: u8) -> Option<EntryKind> {
    Some(match code {
        0 => EntryKind::Posted,
        1 => EntryKind::Pending,
        2 => EntryKind::PostPending,
        3 => EntryKind::VoidPending,
        4 => EntryKind::Expired,
        _ => return None,
    })
}

fn varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Bytes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }
    fn varint(&mut self) -> Option<u128> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.u8()?;
            value |= u128::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    fn id(&mut self) -> Option<u128> {
        let bytes = self.bytes.get(self.at..self.at + 16)?;
        self.at += 16;
        Some(u128::from_le_bytes(bytes.try_into().ok()?))
    }
}

fn corrupt(what: &str) -> LedgerError {
    LedgerError::Corrupt(format!("index chunk: {what}"))
}

/// An account's entries from `first_ts` on, with its balances before them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChunk {
    pub first_ts: u64,
    pub start: Balances,
    pub entries: Vec<ChunkEntry>,
}

impl AccountChunk {
    pub fn is_full(&self) -> bool {
        self.entries.len() >= ACCOUNT_CHUNK_ENTRIES_MAX
    }

    /// The balances after the last entry.
    pub fn end_balances(&self) -> Result<Balances, LedgerError> {
        let mut b = self.start;
        for e in &self.entries {
            b = e.apply(b).ok_or_else(|| corrupt("balances underflow"))?;
        }
        Ok(b)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(CHUNK_VERSION);
        for b in self.start {
            varint(out, b);
        }
        varint(out, self.entries.len() as u128);
        let (mut ts, mut location) = (self.first_ts, 0u64);
        for e in &self.entries {
            varint(out, u128::from(e.timestamp_ns - ts));
            ts = e.timestamp_ns;
            out.extend_from_slice(&e.transfer_id.to_le_bytes());
            let differs = e.released_minor != e.amount_minor;
            out.push(kind_code(e.kind) | u8::from(e.is_debit) << 3 | u8::from(differs) << 4);
            varint(out, u128::from(e.amount_minor));
            if differs {
                varint(out, u128::from(e.released_minor));
            }
            // Locations grow with timestamps: a delta from the previous one.
            varint(out, u128::from(e.location.0.wrapping_sub(location)));
            location = e.location.0;
        }
    }

    pub fn decode(first_ts: u64, bytes: &[u8]) -> Result<AccountChunk, LedgerError> {
        let mut r = Bytes { bytes, at: 0 };
        let bad = || corrupt("undecodable account chunk");
        if r.u8().ok_or_else(bad)? != CHUNK_VERSION {
            return Err(corrupt("account chunk version"));
        }
        let mut start = [0u128; 4];
        for b in &mut start {
            *b = r.varint().ok_or_else(bad)?;
        }
        let n = r.varint().ok_or_else(bad)? as usize;
        if n > ACCOUNT_CHUNK_ENTRIES_MAX * 2 {
            return Err(bad());
        }
        let mut entries = Vec::with_capacity(n);
        let (mut ts, mut location) = (first_ts, 0u64);
        for _ in 0..n {
            ts = ts
                .checked_add(u64::try_from(r.varint().ok_or_else(bad)?).map_err(|_| bad())?)
                .ok_or_else(bad)?;
            let transfer_id = r.id().ok_or_else(bad)?;
            let flags = r.u8().ok_or_else(bad)?;
            let kind = kind_of(flags & 7).ok_or_else(bad)?;
            let amount_minor = u64::try_from(r.varint().ok_or_else(bad)?).map_err(|_| bad())?;
            let released_minor = if flags & 16 != 0 {
                u64::try_from(r.varint().ok_or_else(bad)?).map_err(|_| bad())?
            } else {
                amount_minor
            };
            location = location.wrapping_add(u64::try_from(r.varint().ok_or_else(bad)?).map_err(|_| bad())?);
            entries.push(ChunkEntry {
                timestamp_ns: ts,
                transfer_id,
                kind,
                is_debit: flags & 8 != 0,
                amount_minor,
                released_minor,
                location: Location(location),
            });
        }
        if r.at != bytes.len() {
            return Err(bad());
        }
        Ok(AccountChunk { first_ts, start, entries })
    }

    /// Its entries as statement entries, with the balances after each.
    pub fn statement(
        &self,
        account_id: AccountId,
        out: &mut Vec<(Entry, Location)>,
    ) -> Result<(), LedgerError> {
        let mut b = self.start;
        for e in &self.entries {
            b = e.apply(b).ok_or_else(|| corrupt("balances underflow"))?;
            out.push((
                Entry {
                    account_id,
                    timestamp_ns: e.timestamp_ns,
                    transfer_id: e.transfer_id,
                    kind: e.kind,
                    is_debit: e.is_debit,
                    amount_minor: e.amount_minor,
                    debits_pending_minor: b[0],
                    debits_posted_minor: b[1],
                    credits_pending_minor: b[2],
                    credits_posted_minor: b[3],
                },
                e.location,
            ));
        }
        Ok(())
    }
}

/// A feed's positions (timestamps) from `first_ts` on, with the location of each record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedChunk {
    pub first_ts: u64,
    pub entries: Vec<(u64, Location)>,
}

impl FeedChunk {
    pub fn is_full(&self) -> bool {
        self.entries.len() >= FEED_CHUNK_ENTRIES_MAX
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(CHUNK_VERSION);
        varint(out, self.entries.len() as u128);
        let (mut ts, mut location) = (self.first_ts, 0u64);
        for (t, l) in &self.entries {
            varint(out, u128::from(t - ts));
            ts = *t;
            varint(out, u128::from(l.0.wrapping_sub(location)));
            location = l.0;
        }
    }

    pub fn decode(first_ts: u64, bytes: &[u8]) -> Result<FeedChunk, LedgerError> {
        let mut r = Bytes { bytes, at: 0 };
        let bad = || corrupt("undecodable feed chunk");
        if r.u8().ok_or_else(bad)? != CHUNK_VERSION {
            return Err(corrupt("feed chunk version"));
        }
        let n = r.varint().ok_or_else(bad)? as usize;
        if n > FEED_CHUNK_ENTRIES_MAX * 2 {
            return Err(bad());
        }
        let mut entries = Vec::with_capacity(n);
        let (mut ts, mut location) = (first_ts, 0u64);
        for _ in 0..n {
            ts = ts
                .checked_add(u64::try_from(r.varint().ok_or_else(bad)?).map_err(|_| bad())?)
                .ok_or_else(bad)?;
            location = location.wrapping_add(u64::try_from(r.varint().ok_or_else(bad)?).map_err(|_| bad())?);
            entries.push((ts, Location(location)));
        }
        if r.at != bytes.len() {
            return Err(bad());
        }
        Ok(FeedChunk { first_ts, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry_strategy() -> impl Strategy<Value = (u64, u128, u8, bool, u64, u64, u64)> {
        (
            1..1_000_000u64,
            any::<u128>(),
            0..5u8,
            any::<bool>(),
            0..1_000_000u64,
            0..1_000_000u64,
            1..1_000_000u64,
        )
    }

    proptest! {
        #[test]
        fn account_chunks_round_trip(
            first_ts in 0..u64::MAX / 4,
            start in prop::array::uniform4(any::<u64>()),
            raw in prop::collection::vec(entry_strategy(), 0..ACCOUNT_CHUNK_ENTRIES_MAX),
        ) {
            let mut ts = first_ts;
            let mut location = 0u64;
            let entries: Vec<ChunkEntry> = raw
                .into_iter()
                .map(|(dt, id, kind, debit, amount, released, dl)| {
                    ts += dt;
                    location += dl;
                    let kind = kind_of(kind).unwrap();
                    let released = if kind == EntryKind::PostPending { released } else { amount };
                    ChunkEntry {
                        timestamp_ns: ts,
                        transfer_id: id,
                        kind,
                        is_debit: debit,
                        amount_minor: amount,
                        released_minor: released,
                        location: Location(location),
                    }
                })
                .collect();
            let chunk = AccountChunk { first_ts, start: start.map(u128::from), entries };
            let mut bytes = Vec::new();
            chunk.encode(&mut bytes);
            prop_assert_eq!(AccountChunk::decode(first_ts, &bytes).unwrap(), chunk);
        }

        #[test]
        fn feed_chunks_round_trip(first_ts in 0..u64::MAX / 4, raw in prop::collection::vec((1..1_000_000u64, 1..1_000_000u64), 0..FEED_CHUNK_ENTRIES_MAX)) {
            let (mut ts, mut location) = (first_ts, 0u64);
            let entries = raw.into_iter().map(|(dt, dl)| { ts += dt; location += dl; (ts, Location(location)) }).collect();
            let chunk = FeedChunk { first_ts, entries };
            let mut bytes = Vec::new();
            chunk.encode(&mut bytes);
            prop_assert_eq!(FeedChunk::decode(first_ts, &bytes).unwrap(), chunk);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = AccountChunk::decode(1, &bytes);
            let _ = FeedChunk::decode(1, &bytes);
        }
    }
}
