//! The index: everything the ledger reads that is not live state, derived from the journal and
//! maintained off the write path by one indexer thread (see ARCHITECTURE.md, "Storage").
//!
//! - **Ids**: transfer id → the journal locations of the ops under it (a committed transfer,
//!   remembered failures, the ledger's own expiry records). Recent ones in memory; older ones in
//!   id runs ([`runs`]).
//! - **Account history**: each account's statement entries, in chunks ([`chunks`]).
//! - **Feeds**: the ledger's feed and each participant's, in chunks of (position, location).
//! - **Pending states**: the state of every pending transfer.
//!
//! The indexer applies committed groups in order ([`Index::apply`]) to memory that readers
//! share, publishes `applied_seq`, and about once a second persists: it takes what memory holds
//! out into a frozen layer that readers still see ([`Index::cut`], a short step between two
//! batches), and a persister thread writes it ([`Index::write_cut`]: a new id run, and the
//! touched chunks and pending states in one sled batch with `persisted_seq`) while the indexer
//! goes on applying. One cut is written at a time. After a crash it replays the journal from
//! `persisted_seq`. Every write is idempotent.
//!
//! Size: the index's one sled tree layout, its batch apply and every read over it; the chunk and
//! run encodings are split out (`chunks.rs`, `runs.rs`).

pub mod chunks;
pub mod runs;

use crate::hashing::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chunks::{AccountChunk, Balances, ChunkEntry, FeedChunk};
use runs::{Run, RunSet};
use smallvec::SmallVec;

use crate::LedgerError;
use crate::engine::{Entry, Op, Prior};
use crate::journal::{JournalReader, Location};
use crate::types::*;

/// The layout of the index directory. An index of another version is rebuilt from the journal
/// at open (it is derived state). 3: id runs, chunks, journal locations.
pub const INDEX_VERSION: u64 = 3;
pub use crate::limits::MEMORY_IDS_MAX;
pub use crate::limits::PAGE_SIZE_MAX;
pub use crate::limits::RUN_ENTRIES_MERGE_MAX;
pub use crate::limits::RUN_MERGE_FAN_IN;

const KEY_ACCOUNT: u8 = b'a';
const KEY_FEED: u8 = b'f';
const KEY_PENDING: u8 = b'p';
const META_PERSISTED_SEQ: &[u8] = b"m/persisted_seq";
const META_RUNS: &[u8] = b"m/runs";
const META_NEXT_RUN: &[u8] = b"m/next_run";
const META_VERSION: &[u8] = b"m/version";
const META_RESUME: &[u8] = b"m/resume";

/// The manifest of a run list: the runs' numbers, in order.
fn manifest_of(runs: &[Arc<Run>]) -> Vec<u8> {
    let mut manifest = Vec::with_capacity(runs.len() * 8);
    for run in runs {
        manifest.extend_from_slice(&run.number.to_be_bytes());
    }
    manifest
}

fn persist_failed() -> LedgerError {
    LedgerError::Storage(
        "an earlier persist of the index failed (restart to rebuild it from the journal)".into(),
    )
}

fn sled_err(e: sled::Error) -> LedgerError {
    LedgerError::Storage(format!("sled: {e}"))
}

fn account_key(account: AccountId, first_ts: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[0] = KEY_ACCOUNT;
    key[1..17].copy_from_slice(&account.to_be_bytes());
    key[17..].copy_from_slice(&first_ts.to_be_bytes());
    key
}

/// The feed of `owner` ("" for the ledger's own feed, every record).
fn feed_key(owner: &str, first_ts: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(owner.len() + 10);
    key.push(KEY_FEED);
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    key.extend_from_slice(&first_ts.to_be_bytes());
    key
}

fn pending_key(id: TransferId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = KEY_PENDING;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn state_code(state: PendingState) -> u8 {
    match state {
        PendingState::Pending => 1,
        PendingState::Posted => 2,
        PendingState::Voided => 3,
        PendingState::Expired => 4,
    }
}

fn state_of(code: u8) -> Option<PendingState> {
    Some(match code {
        1 => PendingState::Pending,
        2 => PendingState::Posted,
        3 => PendingState::Voided,
        4 => PendingState::Expired,
        _ => return None,
    })
}

fn ts_of(key: &[u8]) -> Result<u64, LedgerError> {
    let bytes = key.get(key.len().saturating_sub(8)..).filter(|b| b.len() == 8);
    let bytes = bytes.ok_or_else(|| LedgerError::Corrupt("index: a chunk key without a timestamp".into()))?;
    Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
}

/// One committed group, as the indexer receives it: its ops and where each is in the journal.
/// The index is made from the ops alone (every balance-changing op is self-describing), so it
/// can be rebuilt from the journal without the engine.
pub struct IndexBatch {
    pub seq: u64,
    /// Where the record starts, and its chain hash: where a replay of the index resumes.
    pub record: Location,
    pub head: crate::journal::ChainHash,
    pub ops: Vec<Op>,
    /// The location of each op.
    pub locations: Vec<Location>,
}

/// Who owns an account (a participant's feed holds the records touching its accounts), and in
/// which currency it is.
pub trait Owners {
    fn owner(&self, account: AccountId) -> Option<String>;
}

/// The statement entries an op makes: the transfer id they name, its two sides (account,
/// is_debit), the kind, the amount and the reservation released.
type OpEntries = (TransferId, [(AccountId, bool); 2], crate::engine::EntryKind, u64, u64);

fn entries_of(op: &Op) -> Option<OpEntries> {
    use crate::engine::EntryKind;
    let sides = |e: &Effect| [(e.debit_account_id, true), (e.credit_account_id, false)];
    match op {
        Op::Transfer(r) => {
            let t = &r.transfer;
            let e = &r.effect;
            let (kind, released) = if t.flags.post_pending {
                (EntryKind::PostPending, r.released_minor)
            } else if t.flags.void_pending {
                (EntryKind::VoidPending, r.released_minor)
            } else if t.flags.pending {
                (EntryKind::Pending, 0)
            } else {
                (EntryKind::Posted, 0)
            };
            Some((t.id, sides(e), kind, e.amount_minor, released))
        }
        Op::Expire { pending_id, effect, .. } => {
            Some((*pending_id, sides(effect), EntryKind::Expired, effect.amount_minor, effect.amount_minor))
        }
        Op::AutoPost { pending_id, effect, .. } => Some((
            *pending_id,
            sides(effect),
            EntryKind::PostPending,
            effect.amount_minor,
            effect.amount_minor,
        )),
        _ => None,
    }
}

fn op_timestamp(op: &Op) -> u64 {
    crate::journal::format::op_timestamp(op)
}

/// What readers and the indexer share.
#[derive(Default)]
struct Memory {
    runs: Arc<RunSet>,
    /// Each touched account's current chunk (also in sled as of the last persist).
    accounts: HashMap<AccountId, AccountChunk>,
    /// Each touched feed's current chunk ("" is the ledger's feed).
    feeds: HashMap<String, FeedChunk>,
    /// What was applied since the last cut.
    recent: Layer,
    /// What the persist being written took out of memory (the `recent` of its cut), readable
    /// until its run and sled batch are in (then gone, in the same step that lists the run).
    frozen: Option<Arc<Layer>>,
}

/// The part of memory a persist writes away: ids, pending states and sealed chunks.
#[derive(Default)]
struct Layer {
    /// Ids applied (almost always one location each: no allocation per id).
    ids: HashMap<TransferId, SmallVec<[Location; 1]>>,
    /// Pending states changed.
    pendings: HashMap<TransferId, PendingState>,
    /// Chunks that filled up, readable until a persist writes them to sled.
    sealed_accounts: HashMap<AccountId, Vec<AccountChunk>>,
    sealed_feeds: HashMap<String, Vec<FeedChunk>>,
}

impl Memory {
    /// `account`'s sealed chunks not yet in sled: the frozen layer's, then memory's.
    fn sealed_accounts_of(&self, account: AccountId) -> Vec<AccountChunk> {
        let frozen = self.frozen.as_ref().and_then(|f| f.sealed_accounts.get(&account));
        frozen.into_iter().chain(self.recent.sealed_accounts.get(&account)).flatten().cloned().collect()
    }

    /// `owner`'s sealed feed chunks not yet in sled: the frozen layer's, then memory's.
    fn sealed_feeds_of(&self, owner: &str) -> Vec<FeedChunk> {
        let frozen = self.frozen.as_ref().and_then(|f| f.sealed_feeds.get(owner));
        frozen.into_iter().chain(self.recent.sealed_feeds.get(owner)).flatten().cloned().collect()
    }
}

/// What one persist writes, taken out of memory at one applied sequence ([`Index::cut`]).
pub struct Cut {
    seq: u64,
    resume: crate::journal::ResumePoint,
    /// The touched chunks and pending states, encoded at the cut.
    entries: Vec<SledEntry>,
    frozen: Arc<Layer>,
}

impl Cut {
    /// Where the last record the cut holds is (the journal must be durable up to it before the
    /// cut is written).
    pub fn record(&self) -> Location {
        self.resume.record
    }
}

/// What [`Index::cut`] did.
pub enum CutTaken {
    /// A cut, to write.
    Cut(Cut),
    /// Nothing was applied since the last persist.
    NothingNew,
    /// A cut is still being written.
    Busy,
}

/// Whether a cut is being written. A failed write leaves the index unable to persist: the
/// ledger then refuses writes, and a restart replays the journal into the index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PersistState {
    Idle,
    Writing,
    Failed,
}

/// What only the indexer thread touches.
#[derive(Default)]
struct Dirty {
    accounts: HashSet<AccountId>,
    feeds: HashSet<String>,
    /// Chunks that filled up since the last persist (written at the next one).
    sealed: Vec<(Vec<u8>, Vec<u8>)>,
    /// Who owns each account seen (ownership never changes): asked once, shared cheaply.
    /// Bounded by the ledger's accounts.
    owners: HashMap<AccountId, Arc<str>>,
    /// One shared name per owner, so that a batch can group its feeds by the name's address
    /// ([`FeedRuns`]). Bounded by the ledger's participants.
    names: HashMap<String, Arc<str>>,
}

impl Memory {
    /// Where each transfer id's records are, and what became of each pending transfer.
    fn index_ids(&mut self, op: &Op, location: Location) {
        match op {
            Op::Transfer(record) => {
                let t = &record.transfer;
                self.recent.ids.entry(t.id).or_default().push(location);
                if t.flags.pending {
                    self.recent.pendings.insert(t.id, PendingState::Pending);
                } else if t.flags.post_pending {
                    self.recent.pendings.insert(t.pending_id, PendingState::Posted);
                } else if t.flags.void_pending {
                    self.recent.pendings.insert(t.pending_id, PendingState::Voided);
                }
            }
            Op::Refused(refused) => self.recent.ids.entry(refused.id).or_default().push(location),
            Op::Fail(failed) => self.recent.ids.entry(failed.transfer.id).or_default().push(location),
            Op::Expire { pending_id, .. } | Op::AutoPost { pending_id, .. } => {
                let posted = matches!(op, Op::AutoPost { .. });
                self.recent
                    .pendings
                    .insert(*pending_id, if posted { PendingState::Posted } else { PendingState::Expired });
                let id = crate::engine::expiry_record_id(*pending_id, posted);
                self.recent.ids.entry(id).or_default().push(location);
            }
            _ => {}
        }
    }

    /// Appends a batch's balance changes to `owner`'s feed ("" is the ledger's), in order,
    /// sealing each full chunk for the next persist. A change at or before the chunk's last is
    /// one applied before (a replay over what was persisted) and is skipped. One lookup of the
    /// feed per batch, not per change.
    fn append_feed_run(&mut self, dirty: &mut Dirty, owner: &str, run: &[(u64, Location)]) {
        let Some(&(first_ts, _)) = run.first() else { return };
        let chunk = match self.feeds.get_mut(owner) {
            Some(chunk) => chunk,
            None => self.feeds.entry(owner.to_owned()).or_insert(FeedChunk { first_ts, entries: Vec::new() }),
        };
        for &(ts, location) in run {
            if chunk.entries.last().is_some_and(|(last, _)| *last >= ts) {
                continue;
            }
            if chunk.is_full() {
                let mut bytes = Vec::new();
                chunk.encode(&mut bytes);
                dirty.sealed.push((feed_key(owner, chunk.first_ts), bytes));
                let full = std::mem::replace(chunk, FeedChunk { first_ts: ts, entries: Vec::new() });
                chunk.entries.push((ts, location));
                self.recent.sealed_feeds.entry(owner.to_owned()).or_default().push(full);
            } else {
                chunk.entries.push((ts, location));
            }
        }
        if !dirty.feeds.contains(owner) {
            dirty.feeds.insert(owner.to_owned());
        }
    }

    /// Appends an entry to `account`'s history, sealing a full chunk (with its end balances as
    /// the next one's start) for the next persist. An entry at or before the chunk's last is
    /// one applied before and is skipped.
    fn append_account(
        &mut self,
        dirty: &mut Dirty,
        account: AccountId,
        entry: ChunkEntry,
    ) -> Result<(), LedgerError> {
        let ts = entry.timestamp_ns;
        let chunk = match self.accounts.get_mut(&account) {
            Some(chunk) => chunk,
            None => self.accounts.entry(account).or_insert(AccountChunk {
                first_ts: ts,
                start: [0; 4],
                entries: Vec::new(),
            }),
        };
        if chunk.entries.last().is_some_and(|last| last.timestamp_ns >= ts) {
            return Ok(());
        }
        if chunk.is_full() {
            let end = chunk.end_balances()?;
            let mut bytes = Vec::new();
            chunk.encode(&mut bytes);
            dirty.sealed.push((account_key(account, chunk.first_ts).to_vec(), bytes));
            let full =
                std::mem::replace(chunk, AccountChunk { first_ts: ts, start: end, entries: vec![entry] });
            self.recent.sealed_accounts.entry(account).or_default().push(full);
            dirty.accounts.insert(account);
            return Ok(());
        }
        chunk.entries.push(entry);
        dirty.accounts.insert(account);
        Ok(())
    }
}

impl Dirty {
    fn owner(&mut self, account: AccountId, owners: &dyn Owners) -> Option<Arc<str>> {
        if let Some(owner) = self.owners.get(&account) {
            return Some(owner.clone());
        }
        let name = owners.owner(account)?;
        let owner = match self.names.get(&name) {
            Some(owner) => owner.clone(),
            None => {
                let owner: Arc<str> = name.as_str().into();
                self.names.insert(name, owner.clone());
                owner
            }
        };
        self.owners.insert(account, owner.clone());
        Some(owner)
    }
}

/// An owner's feed positions of one batch: (timestamp, location) in order.
type FeedRun = (Arc<str>, Vec<(u64, Location)>);

/// A batch's feed positions grouped by owner, keyed by the address of the owner's shared name
/// (`Dirty::owner` gives one per owner), so that a batch looks each feed up once rather than
/// hashing an owner's name for every record. Runs that share a name all the same (two shared
/// names for one owner) are merged, in order, before they are appended.
#[derive(Default)]
struct FeedRuns {
    by_address: BTreeMap<usize, usize>,
    runs: Vec<FeedRun>,
}

impl FeedRuns {
    fn push(&mut self, owner: &Arc<str>, ts: u64, location: Location) {
        let runs = &mut self.runs;
        let slot = *self.by_address.entry(Arc::as_ptr(owner).cast::<u8>() as usize).or_insert_with(|| {
            runs.push((owner.clone(), Vec::new()));
            runs.len() - 1
        });
        self.runs[slot].1.push((ts, location));
    }

    /// The runs, one per owner name, each in timestamp order.
    fn into_runs(mut self) -> Vec<FeedRun> {
        self.runs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: Vec<FeedRun> = Vec::with_capacity(self.runs.len());
        for (owner, run) in self.runs {
            match merged.last_mut() {
                Some((last, entries)) if *last == owner => {
                    entries.extend(run);
                    entries.sort_by_key(|(ts, _)| *ts);
                }
                _ => merged.push((owner, run)),
            }
        }
        merged
    }
}

/// The owners of an op's debit and credit sides (the credit's only if another than the debit's).
type OpOwners = [Option<Arc<str>>; 2];

/// A key and its value, to write to sled.
type SledEntry = (Vec<u8>, Vec<u8>);

/// Wipes the index at `dir` if `rebuild` asks it, it has no sled database, or its layout version
/// is not this one's (it is rebuilt by replaying the journal).
fn wipe_stale_index(dir: &Path, rebuild: bool) -> Result<(), LedgerError> {
    if dir.exists() {
        let sled_dir = dir.join("sled");
        let stale = rebuild || !sled_dir.exists() || {
            let db = open_db(&sled_dir)?;
            let tree = db.open_tree("index").map_err(sled_err)?;
            let version = tree.get(META_VERSION).map_err(sled_err)?;
            let version = version.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])));
            version != Some(INDEX_VERSION)
        };
        if stale {
            tracing::warn!(dir = %dir.display(), "rebuilding the index from the journal");
            std::fs::remove_dir_all(dir)?;
        }
    }
    Ok(())
}

/// Opens the runs the manifest in `tree` lists, and removes the run files it does not list
/// (written by a flush or merge that did not commit).
fn open_listed_runs(tree: &sled::Tree, runs_dir: &Path) -> Result<Vec<Arc<Run>>, LedgerError> {
    let mut runs = Vec::new();
    if let Some(list) = tree.get(META_RUNS).map_err(sled_err)? {
        for number in list.chunks_exact(8) {
            let number = u64::from_be_bytes(number.try_into().expect("8 bytes"));
            runs.push(Arc::new(Run::open(runs_dir, number)?));
        }
    }
    // Run files not in the manifest were written by a flush or merge that did not commit.
    let listed: HashSet<u64> = runs.iter().map(|r| r.number).collect();
    for entry in std::fs::read_dir(runs_dir)? {
        let path = entry?.path();
        let number = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        if number.is_none_or(|n| !listed.contains(&n)) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(runs)
}

/// The index's persisted resume point (`None`: none persisted yet).
fn read_resume_point(tree: &sled::Tree) -> Result<Option<crate::journal::ResumePoint>, LedgerError> {
    Ok(match tree.get(META_RESUME).map_err(sled_err)? {
        Some(v) if v.len() == 8 + 8 + 32 => {
            let mut head = crate::journal::CHAIN_GENESIS;
            head.copy_from_slice(&v[16..48]);
            Some(crate::journal::ResumePoint {
                seq: u64::from_be_bytes(v[0..8].try_into().expect("8 bytes")),
                record: Location(u64::from_be_bytes(v[8..16].try_into().expect("8 bytes"))),
                head,
            })
        }
        Some(_) => return Err(LedgerError::Corrupt("index: bad resume point".into())),
        None => None,
    })
}

pub struct Index {
    dir: PathBuf,
    runs_dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    journal: JournalReader,
    memory: RwLock<Memory>,
    dirty: std::sync::Mutex<Dirty>,
    next_run: AtomicU64,
    persisted_seq: AtomicU64,
    /// Where the last applied record starts, and its chain hash (persisted with it).
    last_record: AtomicU64,
    last_head: std::sync::Mutex<crate::journal::ChainHash>,
    /// Where the last persisted record is: the index's replay resumes after it.
    persisted_resume: std::sync::Mutex<Option<crate::journal::ResumePoint>>,
    applied: tokio::sync::watch::Sender<u64>,
    /// One cut written at a time; `persisted` tells when a write ends.
    persist_state: std::sync::Mutex<PersistState>,
    persisted: std::sync::Condvar,
    /// Held while the run list is edited (a cut adds a run, a merge replaces runs).
    runs_edit: std::sync::Mutex<()>,
}

impl Index {
    /// Opens (or creates) the index at `dir`. An index of another layout version is wiped (it
    /// is rebuilt by replaying the journal). `rebuild` wipes it in any case.
    pub fn open(dir: &Path, journal: JournalReader, rebuild: bool) -> Result<Index, LedgerError> {
        wipe_stale_index(dir, rebuild)?;
        std::fs::create_dir_all(dir)?;
        let runs_dir = dir.join("ids");
        std::fs::create_dir_all(&runs_dir)?;
        let db = open_db(&dir.join("sled"))?;
        let tree = db.open_tree("index").map_err(sled_err)?;
        tree.insert(META_VERSION, &INDEX_VERSION.to_be_bytes()).map_err(sled_err)?;
        let get_u64 = |key: &[u8]| -> Result<u64, LedgerError> {
            match tree.get(key).map_err(sled_err)? {
                Some(v) => Ok(u64::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| LedgerError::Corrupt("index: bad meta value".into()))?,
                )),
                None => Ok(0),
            }
        };
        let persisted_seq = get_u64(META_PERSISTED_SEQ)?;
        let next_run = get_u64(META_NEXT_RUN)?.max(1);
        let runs = open_listed_runs(&tree, &runs_dir)?;
        let persisted_resume = read_resume_point(&tree)?;
        if persisted_resume.map_or(0, |r| r.seq) != persisted_seq {
            return Err(LedgerError::Corrupt(
                "index: its resume point and persisted sequence disagree".into(),
            ));
        }
        let (applied, _) = tokio::sync::watch::channel(persisted_seq);
        Ok(Index {
            dir: dir.to_owned(),
            runs_dir,
            db,
            tree,
            journal,
            memory: RwLock::new(Memory { runs: Arc::new(RunSet { runs }), ..Memory::default() }),
            dirty: std::sync::Mutex::new(Dirty::default()),
            next_run: AtomicU64::new(next_run),
            persisted_seq: AtomicU64::new(persisted_seq),
            last_record: AtomicU64::new(persisted_resume.map_or(0, |r| r.record.0)),
            last_head: std::sync::Mutex::new(
                persisted_resume.map_or(crate::journal::CHAIN_GENESIS, |r| r.head),
            ),
            persisted_resume: std::sync::Mutex::new(persisted_resume),
            applied,
            persist_state: std::sync::Mutex::new(PersistState::Idle),
            persisted: std::sync::Condvar::new(),
            runs_edit: std::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Memory> {
        self.memory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Memory> {
        self.memory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The last journal record whose effects are in this index as persisted.
    pub fn persisted_seq(&self) -> u64 {
        self.persisted_seq.load(Ordering::Acquire)
    }

    /// The last journal record applied (visible to readers).
    pub fn applied_seq(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A receiver that tells when `applied_seq` moves.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Where the index's replay resumes: after the last record it persisted (`None`: from the
    /// beginning).
    pub fn resume_point(&self) -> Option<crate::journal::ResumePoint> {
        *self.persisted_resume.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- the indexer ----------------------------------------------------------------------

    /// Applies one committed group (the indexer thread only, in sequence order).
    pub fn apply(&self, batch: &IndexBatch, owners: &dyn Owners) -> Result<(), LedgerError> {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        // What is not in memory yet is read from sled first, without the write lock.
        let (accounts_needed, feeds_needed, op_owners) = self.missing_chunks(batch, &mut dirty, owners);
        let mut loaded = Vec::new();
        for account in accounts_needed {
            if let Some(chunk) = self.last_account_chunk(account)? {
                loaded.push((account, chunk));
            }
        }
        let mut loaded_feeds = Vec::new();
        for owner in feeds_needed {
            if let Some(chunk) = self.last_feed_chunk(&owner)? {
                loaded_feeds.push((owner, chunk));
            }
        }
        let mut memory = self.write();
        for (account, chunk) in loaded {
            memory.accounts.entry(account).or_insert(chunk);
        }
        for (owner, chunk) in loaded_feeds {
            memory.feeds.entry(owner).or_insert(chunk);
        }
        // The feeds: the ledger's, and each party's, appended after the loop, one run each.
        let mut ledger_feed = Vec::with_capacity(batch.ops.len());
        let mut feeds = FeedRuns::default();
        for ((op, location), owners) in batch.ops.iter().zip(&batch.locations).zip(&op_owners) {
            let location = *location;
            let ts = op_timestamp(op);
            memory.index_ids(op, location);
            let Some((transfer_id, sides, kind, amount_minor, released_minor)) = entries_of(op) else {
                continue;
            };
            ledger_feed.push((ts, location));
            for owner in owners.iter().flatten() {
                feeds.push(owner, ts, location);
            }
            // The two accounts' histories.
            for (account, is_debit) in sides {
                let entry = ChunkEntry {
                    timestamp_ns: ts,
                    transfer_id,
                    kind,
                    is_debit,
                    amount_minor,
                    released_minor: if kind == crate::engine::EntryKind::PostPending {
                        released_minor
                    } else {
                        amount_minor
                    },
                    location,
                };
                memory.append_account(&mut dirty, account, entry)?;
            }
        }
        memory.append_feed_run(&mut dirty, "", &ledger_feed);
        for (owner, run) in feeds.into_runs() {
            memory.append_feed_run(&mut dirty, &owner, &run);
        }
        drop(memory);
        self.last_record.store(batch.record.0, Ordering::Release);
        *self.last_head.lock().unwrap_or_else(|p| p.into_inner()) = batch.head;
        self.applied.send_replace(batch.seq);
        Ok(())
    }

    /// The current balances of an account as its history in the index adds up to them (for the
    /// check at start: the index must agree with the journal's replay).
    pub fn balances(&self, account: AccountId) -> Result<Option<Balances>, LedgerError> {
        if let Some(chunk) = self.read().accounts.get(&account) {
            return chunk.end_balances().map(Some);
        }
        self.last_account_chunk(account)?.map(|c| c.end_balances()).transpose()
    }

    /// The same, for an account whose chunk is in memory (touched since the index opened).
    pub fn balances_if_loaded(&self, account: AccountId) -> Result<Option<Balances>, LedgerError> {
        self.read().accounts.get(&account).map(|c| c.end_balances()).transpose()
    }

    /// Whether enough is in memory that a persist is due whatever the time.
    pub fn persist_due(&self) -> bool {
        self.read().recent.ids.len() >= MEMORY_IDS_MAX
    }

    /// Persists everything applied so far and waits for it (from any thread): the cut being
    /// written first, if any, then a new cut, written here.
    pub fn persist(&self) -> Result<(), LedgerError> {
        match self.cut(true)? {
            CutTaken::Cut(cut) => self.write_cut(cut),
            CutTaken::NothingNew | CutTaken::Busy => Ok(()),
        }
    }

    /// Takes what a persist writes out of memory into the frozen layer (the indexer thread,
    /// between two batches; short: the chunks touched are encoded, the rest is moved). While a
    /// cut is still being written this answers `Busy`, or with `wait` waits for it (the bound
    /// on memory). The caller must hand a cut taken to [`Index::write_cut`]: until then no
    /// other cut is taken.
    pub fn cut(&self, wait: bool) -> Result<CutTaken, LedgerError> {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = if wait {
            self.wait_idle()?
        } else {
            let state = self.persist_state.lock().unwrap_or_else(|p| p.into_inner());
            match *state {
                PersistState::Idle => state,
                PersistState::Writing => return Ok(CutTaken::Busy),
                PersistState::Failed => return Err(persist_failed()),
            }
        };
        Ok(match self.cut_locked(&mut dirty) {
            Some(cut) => {
                *state = PersistState::Writing;
                CutTaken::Cut(cut)
            }
            None => CutTaken::NothingNew,
        })
    }

    /// Waits until no cut is being written (and none failed); holds the state locked.
    fn wait_idle(&self) -> Result<std::sync::MutexGuard<'_, PersistState>, LedgerError> {
        let state = self.persist_state.lock().unwrap_or_else(|p| p.into_inner());
        let state = self
            .persisted
            .wait_while(state, |s| *s == PersistState::Writing)
            .unwrap_or_else(|p| p.into_inner());
        if *state == PersistState::Failed {
            return Err(persist_failed());
        }
        Ok(state)
    }

    fn cut_locked(&self, dirty: &mut Dirty) -> Option<Cut> {
        let seq = self.applied_seq();
        if seq == self.persisted_seq() {
            return None;
        }
        let entries = self.persist_entries(dirty);
        let resume = crate::journal::ResumePoint {
            seq,
            record: Location(self.last_record.load(Ordering::Acquire)),
            head: *self.last_head.lock().unwrap_or_else(|p| p.into_inner()),
        };
        let mut memory = self.write();
        debug_assert!(memory.frozen.is_none(), "one cut at a time");
        let frozen = Arc::new(std::mem::take(&mut memory.recent));
        memory.frozen = Some(frozen.clone());
        Some(Cut { seq, resume, entries, frozen })
    }

    /// Writes a cut (any thread, while the indexer goes on applying): a run of its ids, and its
    /// chunks and pending states in one sled batch with `persisted_seq`; then, in one step,
    /// lists the run and drops the frozen layer. Runs are merged apart ([`Index::merge_once`]).
    pub fn write_cut(&self, cut: Cut) -> Result<(), LedgerError> {
        let result = self.write_cut_inner(cut);
        let mut state = self.persist_state.lock().unwrap_or_else(|p| p.into_inner());
        *state = if result.is_ok() { PersistState::Idle } else { PersistState::Failed };
        self.persisted.notify_all();
        result
    }

    /// Gives up a cut that cannot be written (its journal could not be made durable): no
    /// persist follows; the frozen layer stays readable.
    pub fn abandon_cut(&self, cut: Cut) {
        drop(cut);
        *self.persist_state.lock().unwrap_or_else(|p| p.into_inner()) = PersistState::Failed;
        self.persisted.notify_all();
    }

    fn write_cut_inner(&self, cut: Cut) -> Result<(), LedgerError> {
        let Cut { seq, resume, entries: mut batch_entries, frozen } = cut;
        let mut ids: Vec<(TransferId, Location)> =
            frozen.ids.iter().flat_map(|(id, locations)| locations.iter().map(move |l| (*id, *l))).collect();
        ids.sort_unstable();
        let new_run = if ids.is_empty() {
            None
        } else {
            let number = self.next_run.fetch_add(1, Ordering::AcqRel);
            Some(Arc::new(Run::write(&self.runs_dir, number, &ids)?))
        };
        drop(ids);
        // The run list is edited by cuts and merges, each under this lock.
        let _editing = self.runs_edit.lock().unwrap_or_else(|p| p.into_inner());
        let mut runs = self.read().runs.runs.clone();
        runs.extend(new_run);
        batch_entries.push((META_RUNS.to_vec(), manifest_of(&runs)));
        batch_entries
            .push((META_NEXT_RUN.to_vec(), self.next_run.load(Ordering::Acquire).to_be_bytes().to_vec()));
        batch_entries.push((META_PERSISTED_SEQ.to_vec(), seq.to_be_bytes().to_vec()));
        let mut resume_bytes = Vec::with_capacity(48);
        resume_bytes.extend_from_slice(&resume.seq.to_be_bytes());
        resume_bytes.extend_from_slice(&resume.record.0.to_be_bytes());
        resume_bytes.extend_from_slice(&resume.head);
        batch_entries.push((META_RESUME.to_vec(), resume_bytes));
        let mut batch = sled::Batch::default();
        for (key, value) in batch_entries {
            batch.insert(key, value);
        }
        self.tree.apply_batch(batch).map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        {
            // Readers find each id and chunk in the frozen layer before this, in the run and
            // sled after it.
            let mut memory = self.write();
            memory.runs = Arc::new(RunSet { runs });
            memory.frozen = None;
        }
        drop(frozen);
        self.persisted_seq.store(seq, Ordering::Release);
        *self.persisted_resume.lock().unwrap_or_else(|p| p.into_inner()) = Some(resume);
        Ok(())
    }

    /// The accounts and feeds of `batch` whose last chunk is not in memory, and the owners of
    /// each op's two sides (the credit's only if another than the debit's).
    fn missing_chunks(
        &self,
        batch: &IndexBatch,
        dirty: &mut Dirty,
        owners: &dyn Owners,
    ) -> (HashSet<AccountId>, HashSet<String>, Vec<OpOwners>) {
        let mut accounts_needed = HashSet::default();
        let mut feeds_needed: HashSet<String> = HashSet::default();
        let mut op_owners: Vec<OpOwners> = Vec::with_capacity(batch.ops.len());
        let mut seen: BTreeMap<usize, Arc<str>> = BTreeMap::new();
        {
            let memory = self.read();
            if !memory.feeds.contains_key("") {
                feeds_needed.insert(String::new());
            }
            for op in &batch.ops {
                let Some((_, sides, ..)) = entries_of(op) else {
                    op_owners.push([None, None]);
                    continue;
                };
                for (account, _) in sides {
                    if !memory.accounts.contains_key(&account) {
                        accounts_needed.insert(account);
                    }
                }
                let debit = dirty.owner(sides[0].0, owners);
                let credit = dirty.owner(sides[1].0, owners).filter(|c| Some(c) != debit.as_ref());
                for owner in debit.iter().chain(credit.iter()) {
                    seen.entry(Arc::as_ptr(owner).cast::<u8>() as usize).or_insert_with(|| owner.clone());
                }
                op_owners.push([debit, credit]);
            }
            // Each owner of the batch once (by the address of its shared name).
            for owner in seen.values() {
                if !memory.feeds.contains_key(&**owner) {
                    feeds_needed.insert(owner.to_string());
                }
            }
        }
        (accounts_needed, feeds_needed, op_owners)
    }

    /// The sled entries a persist writes: the sealed and touched chunks and the pending states
    /// (taking the dirty sets).
    fn persist_entries(&self, dirty: &mut Dirty) -> Vec<SledEntry> {
        let memory = self.read();
        let mut entries: Vec<SledEntry> = std::mem::take(&mut dirty.sealed);
        for account in dirty.accounts.drain() {
            if let Some(chunk) = memory.accounts.get(&account) {
                let mut bytes = Vec::new();
                chunk.encode(&mut bytes);
                entries.push((account_key(account, chunk.first_ts).to_vec(), bytes));
            }
        }
        for owner in dirty.feeds.drain() {
            if let Some(chunk) = memory.feeds.get(&owner) {
                let mut bytes = Vec::new();
                chunk.encode(&mut bytes);
                entries.push((feed_key(&owner, chunk.first_ts), bytes));
            }
        }
        for (id, state) in &memory.recent.pendings {
            entries.push((pending_key(*id).to_vec(), vec![state_code(*state)]));
        }
        entries
    }

    /// Merges the newest `RUN_MERGE_FAN_IN` runs into one if they are of about the same size
    /// (size-tiered), so that lookups ask few filters; `false`: no merge is due. For one merger
    /// thread: cuts go on being written meanwhile, and the merged run takes its parts' place in
    /// the list as it is then (runs a cut added after them stay after it).
    pub fn merge_once(&self) -> Result<bool, LedgerError> {
        let runs = self.read().runs.runs.clone();
        if runs.len() < RUN_MERGE_FAN_IN {
            return Ok(false);
        }
        let tail = &runs[runs.len() - RUN_MERGE_FAN_IN..];
        let biggest = tail.iter().map(|r| r.entries).max().unwrap_or(0);
        let smallest = tail.iter().map(|r| r.entries).min().unwrap_or(0);
        let total: u64 = tail.iter().map(|r| r.entries).sum();
        if biggest > smallest.saturating_mul(4).max(1) || total > RUN_ENTRIES_MERGE_MAX {
            return Ok(false);
        }
        // The long part, with no lock held.
        let merged = runs::merge(tail)?;
        let number = self.next_run.fetch_add(1, Ordering::AcqRel);
        let run = Arc::new(Run::write(&self.runs_dir, number, &merged)?);
        drop(merged);
        let _editing = self.runs_edit.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.read().runs.runs.clone();
        let at = current.iter().position(|r| r.number == tail[0].number);
        let Some(at) = at.filter(|&at| {
            current
                .get(at..at + RUN_MERGE_FAN_IN)
                .is_some_and(|parts| parts.iter().zip(tail).all(|(now, then)| now.number == then.number))
        }) else {
            let _ = std::fs::remove_file(&run.path);
            return Err(LedgerError::Corrupt("index: the runs being merged left the run list".into()));
        };
        let mut next: Vec<Arc<Run>> = Vec::with_capacity(current.len() + 1 - RUN_MERGE_FAN_IN);
        next.extend_from_slice(&current[..at]);
        next.push(run);
        next.extend_from_slice(&current[at + RUN_MERGE_FAN_IN..]);
        let mut batch = sled::Batch::default();
        batch.insert(META_RUNS, manifest_of(&next));
        batch.insert(META_NEXT_RUN, &self.next_run.load(Ordering::Acquire).to_be_bytes());
        self.tree.apply_batch(batch).map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        self.write().runs = Arc::new(RunSet { runs: next });
        for old in tail {
            // Readers holding the old set keep their open handles; the names go now.
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(true)
    }

    // ----- reads ----------------------------------------------------------------------------

    /// Every journal location stored under `id`.
    pub fn locations(&self, id: TransferId) -> Result<Vec<Location>, LedgerError> {
        let (mut out, runs) = {
            let memory = self.read();
            let mut out: Vec<Location> = memory.recent.ids.get(&id).map(|l| l.to_vec()).unwrap_or_default();
            if let Some(frozen) = memory.frozen.as_ref().and_then(|f| f.ids.get(&id)) {
                out.extend_from_slice(frozen);
            }
            (out, memory.runs.clone())
        };
        runs.find(id, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The op at `location`.
    pub fn op_at(&self, location: Location) -> Result<Op, LedgerError> {
        self.journal.read_op(location)
    }

    /// The transfer record at `location` (a transfer, or the ledger's own expiry record).
    pub fn record_at(
        &self,
        location: Location,
        currency_of: &dyn Fn(AccountId) -> Option<puente_money::CurrencyCode>,
    ) -> Result<Option<TransferRecord>, LedgerError> {
        self.record_at_op(self.op_at(location)?, currency_of)
    }

    /// What the ledger holds under `id`: the committed transfer and every remembered failure.
    pub fn seen(
        &self,
        id: TransferId,
        currency_of: &dyn Fn(AccountId) -> Option<puente_money::CurrencyCode>,
    ) -> Result<(Option<TransferRecord>, Vec<RefusedTransfer>), LedgerError> {
        let mut committed = None;
        let mut refused = Vec::new();
        for location in self.locations(id)? {
            match self.op_at(location)? {
                Op::Refused(r) if r.id == id => refused.push(r),
                Op::Fail(f) if f.transfer.id == id => refused.push(RefusedTransfer::from_legacy(&f)),
                Op::Transfer(record) if record.transfer.id == id => committed = Some(record),
                op @ (Op::Expire { .. } | Op::AutoPost { .. }) => {
                    if let Some(record) = self.record_at_op(op, currency_of)?
                        && record.transfer.id == id
                    {
                        committed = Some(record);
                    }
                }
                _ => {
                    return Err(LedgerError::Corrupt(format!(
                        "index: id {id} points at journal location {location:?} holding another op"
                    )));
                }
            }
        }
        Ok((committed, refused))
    }

    fn record_at_op(
        &self,
        op: Op,
        currency_of: &dyn Fn(AccountId) -> Option<puente_money::CurrencyCode>,
    ) -> Result<Option<TransferRecord>, LedgerError> {
        match op {
            Op::Transfer(record) => Ok(Some(record)),
            Op::Expire { pending_id, timestamp_ns, effect }
            | Op::AutoPost { pending_id, timestamp_ns, effect } => {
                let posted = matches!(op, Op::AutoPost { .. });
                let currency = currency_of(effect.debit_account_id).ok_or_else(|| {
                    LedgerError::Corrupt(format!(
                        "index: the expiry of {pending_id} names an unknown account"
                    ))
                })?;
                Ok(Some(crate::engine::expiry_record_from(
                    pending_id,
                    effect,
                    currency,
                    posted,
                    timestamp_ns,
                )))
            }
            _ => Ok(None),
        }
    }

    /// The state of a pending transfer, if `id` is one.
    pub fn pending_state(&self, id: TransferId) -> Result<Option<PendingState>, LedgerError> {
        {
            let memory = self.read();
            let frozen = memory.frozen.as_ref().and_then(|f| f.pendings.get(&id));
            if let Some(state) = memory.recent.pendings.get(&id).or(frozen) {
                return Ok(Some(*state));
            }
        }
        match self.tree.get(pending_key(id)).map_err(sled_err)? {
            Some(v) => Ok(Some(
                v.first()
                    .copied()
                    .and_then(state_of)
                    .ok_or_else(|| LedgerError::Corrupt("index: bad pending state".into()))?,
            )),
            None => Ok(None),
        }
    }

    fn last_account_chunk(&self, account: AccountId) -> Result<Option<AccountChunk>, LedgerError> {
        let low = account_key(account, 0);
        let high = account_key(account, u64::MAX);
        match self.tree.range(low..=high).next_back() {
            Some(item) => {
                let (key, value) = item.map_err(sled_err)?;
                Ok(Some(AccountChunk::decode(ts_of(&key)?, &value)?))
            }
            None => Ok(None),
        }
    }

    fn last_feed_chunk(&self, owner: &str) -> Result<Option<FeedChunk>, LedgerError> {
        let low = feed_key(owner, 0);
        let high = feed_key(owner, u64::MAX);
        match self.tree.range(low..=high).next_back() {
            Some(item) => {
                let (key, value) = item.map_err(sled_err)?;
                Ok(Some(FeedChunk::decode(ts_of(&key)?, &value)?))
            }
            None => Ok(None),
        }
    }

    /// An account's statement entries with `from_ns <= timestamp < to_ns`, in either order,
    /// starting after `cursor_ns` (exclusive) when given, with the location of each.
    pub fn account_entries(
        &self,
        account_id: AccountId,
        from_ns: u64,
        to_ns: u64,
        descending: bool,
        cursor_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(Entry, Location)>, LedgerError> {
        let limit = limit.min(PAGE_SIZE_MAX);
        let Some((lo, hi)) = crate::types::time_window(from_ns, to_ns, descending, cursor_ns) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (current, sealed) = {
            let memory = self.read();
            (memory.accounts.get(&account_id).cloned(), memory.sealed_accounts_of(account_id))
        };
        let mut out = Vec::new();
        // Chunks overlapping [lo, hi): from the last chunk starting at or before lo.
        let keep = |entry: &Entry| entry.timestamp_ns >= lo && entry.timestamp_ns < hi;
        let start_key = account_key(account_id, lo);
        let begin = match self.tree.range(account_key(account_id, 0)..=start_key).next_back() {
            Some(item) => item.map_err(sled_err)?.0.to_vec(),
            None => account_key(account_id, 0).to_vec(),
        };
        let end = account_key(account_id, hi);
        let mut chunks: Vec<AccountChunk> = Vec::new();
        for item in self.tree.range::<&[u8], _>((Bound::Included(&begin[..]), Bound::Excluded(&end[..]))) {
            let (key, value) = item.map_err(sled_err)?;
            let first_ts = ts_of(&key)?;
            if current.as_ref().is_some_and(|c| c.first_ts == first_ts)
                || sealed.iter().any(|c| c.first_ts == first_ts)
            {
                continue; // the in-memory copy is newer
            }
            chunks.push(AccountChunk::decode(first_ts, &value)?);
        }
        chunks.extend(sealed.into_iter().filter(|c| c.first_ts < hi));
        if let Some(current) = current
            && current.first_ts < hi
        {
            chunks.push(current);
        }
        chunks.sort_by_key(|c| c.first_ts);
        let mut all = Vec::new();
        for chunk in &chunks {
            chunk.statement(account_id, &mut all)?;
        }
        all.retain(|(e, _)| keep(e));
        if descending {
            out.extend(all.into_iter().rev().take(limit));
        } else {
            out.extend(all.into_iter().take(limit));
        }
        Ok(out)
    }

    /// The feed of `owner` ("" for the ledger's own) after `after_ns`: (position, location) in
    /// commit order, at most `limit`.
    pub fn feed_after(
        &self,
        owner: &str,
        after_ns: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Location)>, LedgerError> {
        let limit = limit.min(PAGE_SIZE_MAX);
        let (current, sealed) = {
            let memory = self.read();
            (memory.feeds.get(owner).cloned(), memory.sealed_feeds_of(owner))
        };
        let begin = match self.tree.range(feed_key(owner, 0)..=feed_key(owner, after_ns)).next_back() {
            Some(item) => item.map_err(sled_err)?.0.to_vec(),
            None => feed_key(owner, 0),
        };
        let mut out = Vec::new();
        let end = feed_key(owner, u64::MAX);
        for item in self.tree.range::<&[u8], _>((Bound::Included(&begin[..]), Bound::Included(&end[..]))) {
            let (key, value) = item.map_err(sled_err)?;
            let first_ts = ts_of(&key)?;
            if current.as_ref().is_some_and(|c| c.first_ts == first_ts)
                || sealed.iter().any(|c| c.first_ts == first_ts)
            {
                continue;
            }
            let chunk = FeedChunk::decode(first_ts, &value)?;
            out.extend(chunk.entries.into_iter().filter(|(ts, _)| *ts > after_ns));
            if out.len() >= limit {
                break;
            }
        }
        for chunk in sealed.into_iter().chain(current) {
            out.extend(chunk.entries.into_iter().filter(|(ts, _)| *ts > after_ns));
        }
        out.sort_by_key(|(ts, _)| *ts);
        out.dedup_by_key(|(ts, _)| *ts);
        out.truncate(limit);
        Ok(out)
    }

    /// Bytes on disk (sled and runs).
    pub fn size_on_disk(&self) -> u64 {
        let runs: u64 = self.read().runs.runs.iter().map(|r| r.size_bytes()).sum();
        self.db.size_on_disk().unwrap_or(0) + runs
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Prior of `id` as `scope` sees it (its own failure first, then the committed transfer).
    pub fn prior(
        &self,
        id: TransferId,
        scope: &str,
        currency_of: &dyn Fn(AccountId) -> Option<puente_money::CurrencyCode>,
    ) -> Result<Option<Prior>, LedgerError> {
        let (committed, refused) = self.seen(id, currency_of)?;
        let own =
            refused.iter().find(|r| r.scope == scope).or_else(|| refused.iter().find(|r| r.scope.is_empty()));
        if let Some(refused) = own {
            return Ok(Some(Prior::Failed(refused.clone())));
        }
        Ok(committed.map(Prior::Committed))
    }
}

use crate::limits::INDEX_LOCK_RETRY_MS;
use crate::limits::INDEX_LOCK_WAIT_MS;

fn open_db(dir: &Path) -> Result<sled::Db, LedgerError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(INDEX_LOCK_WAIT_MS);
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            // The index is derived: the journal gives durability; flush only bounds replay.
            .flush_every_ms(Some(1_000))
            .open();
        match opened {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` I/O error with this text.
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(INDEX_LOCK_RETRY_MS));
            }
            Err(error) => {
                return Err(LedgerError::Corrupt(format!(
                    "cannot open the index at {}: {error}",
                    dir.display()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs are grouped by the address of the owner's shared name, but two shared names for
    /// one owner still make one run, in timestamp order (none dropped as "applied before").
    #[test]
    fn feed_runs_are_one_per_owner_name_in_order() {
        let a1: Arc<str> = "fintech-a".into();
        let a2: Arc<str> = "fintech-a".into();
        let b: Arc<str> = "fintech-b".into();
        let mut runs = FeedRuns::default();
        runs.push(&a1, 1, Location::new(1, 10));
        runs.push(&b, 2, Location::new(1, 20));
        runs.push(&a2, 3, Location::new(1, 30));
        runs.push(&a1, 4, Location::new(1, 40));
        let runs = runs.into_runs();
        let names: Vec<&str> = runs.iter().map(|(name, _)| &**name).collect();
        assert_eq!(names, ["fintech-a", "fintech-b"]);
        let a_ts: Vec<u64> = runs[0].1.iter().map(|(ts, _)| *ts).collect();
        assert_eq!(a_ts, [1, 3, 4]);
        assert_eq!(runs[1].1, [(2, Location::new(1, 20))]);
    }

    /// One shared name per owner, however many accounts it has.
    #[test]
    fn owners_share_one_name() {
        struct Two;
        impl Owners for Two {
            fn owner(&self, account: AccountId) -> Option<String> {
                (account < 10).then(|| "fintech-a".to_owned())
            }
        }
        let mut dirty = Dirty::default();
        let first = dirty.owner(1, &Two).unwrap();
        let second = dirty.owner(2, &Two).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(dirty.owner(11, &Two).is_none());
    }
}
