//! The journal of record on other machines (`puente serve --journal-url`, issue 13).
//!
//! With a [`RecordStore`], the writer appends each group's journal record there (one
//! transaction, fenced by the leader's lease) *before* its own segments, and acknowledges
//! nothing before that append returned. A node that does not hold the lease is a standby: its
//! writer copies the records from the store into its own segments (byte for byte, checked by
//! `Journal::append_record`) and applies them to its engine, so its state, index and reads stay
//! current; writes sent to it are refused with [`LedgerError::NotLeader`] and the leader's
//! advertised address. The ledger knows no SQL: the store is this trait, implemented over
//! PostgreSQL by the server (`crates/journal-pg`).
//!
//! Rules the writer keeps (see ARCHITECTURE.md, "High availability"):
//! - A node leads only after it has copied every record the store holds (`try_lead` returns the
//!   store's last sequence number; the writer follows up to it before taking a write).
//! - Its local segments never run ahead of the store: a record is written locally only after
//!   the store accepted it, so a standby's segments are always a prefix of the store's journal.
//! - A lost lease (renewal refused, or an append fenced) stops acknowledgement at once; an
//!   append whose outcome is unknown (the store became unreachable) is answered UNAVAILABLE,
//!   never acknowledged, and the node steps down: the record is in the store or not, and the
//!   next leader (maybe this node again) finds out by reading it. The engine, which ran the
//!   group, is rebuilt from the local journal before the node follows again.

use std::future::Future;
use std::pin::Pin;

/// A boxed future (the store is used as a trait object).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Records by sequence number, ascending, as the store returns them.
pub type Records = Vec<(u64, Vec<u8>)>;
/// A snapshot as the store keeps it: the sequence number it was taken at, and its bytes.
pub type StoredSnapshot = (u64, Vec<u8>);

pub use crate::limits::FOLLOW_PAGE_RECORDS;
pub use crate::limits::FOLLOW_POLL_MS;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Another node leads (this node's lease was taken over, or the sequence number is not the
    /// next one): nothing was appended.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The store did not answer (connection lost, timeout): an append's outcome is unknown.
    #[error("the journal of record is unreachable: {0}")]
    Unreachable(String),
    /// The store holds something impossible (a gap in the sequence, a record too large).
    #[error("the journal of record is damaged: {0}")]
    Corrupt(String),
}

/// Where the leader can be reached, as it advertised itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub node: String,
    pub address: String,
    pub epoch: u64,
}

/// The journal of record and the lease that makes one node its only writer.
pub trait RecordStore: Send + Sync + std::fmt::Debug + 'static {
    /// This node's name (for logs).
    fn node(&self) -> &str;

    /// How long a lease lasts once granted or renewed, in milliseconds.
    fn lease_ms(&self) -> u64;

    /// Takes the lease when it has lapsed (or is already this node's). `Some(last_seq)`: this
    /// node now leads, and the store's journal ends at `last_seq`.
    fn try_lead(&self) -> StoreFuture<'_, Result<Option<u64>, StoreError>>;

    /// Extends this node's lease; `false` when it is no longer this node's.
    fn renew(&self) -> StoreFuture<'_, Result<bool, StoreError>>;

    /// Gives the lease up at once (a clean stop), so a standby takes over without waiting.
    fn step_down(&self) -> StoreFuture<'_, Result<(), StoreError>>;

    /// Appends the record `seq` (exact bytes) under this node's lease; returns once it is
    /// durable in the store.
    fn append<'a>(&'a self, seq: u64, record: &'a [u8]) -> StoreFuture<'a, Result<(), StoreError>>;

    /// Records after `after_seq`, ascending and contiguous, at most `limit`.
    fn read_after(&self, after_seq: u64, limit: usize) -> StoreFuture<'_, Result<Records, StoreError>>;

    /// The node holding the lease, if any holds a live one.
    fn leader(&self) -> StoreFuture<'_, Result<Option<LeaderInfo>, StoreError>>;

    /// Keeps a snapshot (its file's bytes) taken at `seq`, for nodes that join (the newest
    /// few are kept).
    fn put_snapshot<'a>(&'a self, seq: u64, body: &'a [u8]) -> StoreFuture<'a, Result<(), StoreError>>;

    /// The newest snapshot kept, with the sequence number it was taken at.
    fn latest_snapshot(&self) -> StoreFuture<'_, Result<Option<StoredSnapshot>, StoreError>>;
}

pub use crate::limits::STORE_SNAPSHOTS_KEPT;

/// What this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No journal of record elsewhere: the local journal is the record (the embedded default).
    Single,
    /// Holds the lease: takes writes.
    Leader,
    /// Follows the leader; refuses writes, naming the leader when it knows it.
    Standby { leader: Option<LeaderInfo> },
}

impl Role {
    /// Takes writes (the embedded default always does).
    pub fn writes(&self) -> bool {
        matches!(self, Role::Single | Role::Leader)
    }
}

/// A node with no journal of its own joins from the newest snapshot the journal of record
/// keeps: it copies the records up to the snapshot (exact bytes, each checked as a standby
/// checks them) and installs the snapshot at that point, so that `Ledger::open` loads the
/// state from it instead of replaying every record into the engine (the index is still built
/// from the copied history: reads of old transfers need it). Then the node follows the tail.
/// `None`: the node has a journal already, or the store keeps no snapshot (a plain replay).
pub async fn join_from_snapshot(
    data_dir: &std::path::Path,
    store: &dyn RecordStore,
) -> Result<Option<u64>, crate::LedgerError> {
    use crate::LedgerError;
    if !crate::journal::list_segments(data_dir)?.is_empty() {
        return Ok(None);
    }
    let unavailable = |e: StoreError| LedgerError::Unavailable(e.to_string());
    let Some((seq, body)) = store.latest_snapshot().await.map_err(unavailable)? else { return Ok(None) };
    let mut snapshot = crate::snapshot::decode(&body, seq)
        .map_err(|e| LedgerError::Corrupt(format!("the journal of record's snapshot {seq}: {e}")))?;
    std::fs::create_dir_all(data_dir)?;
    let (mut journal, _) = crate::journal::Journal::open(data_dir, None, |_| Ok(()))?;
    journal.set_sync_each_record(false);
    let mut locations = Vec::new();
    let mut after = 0;
    while after < seq {
        let page = store.read_after(after, FOLLOW_PAGE_RECORDS).await.map_err(unavailable)?;
        if page.is_empty() {
            return Err(LedgerError::Corrupt(format!(
                "the journal of record ends at {after}, before its snapshot at {seq}"
            )));
        }
        for (record_seq, record) in page {
            if record_seq > seq {
                break;
            }
            journal.append_record(record_seq, &record, &mut locations)?;
            after = record_seq;
        }
    }
    journal.sync()?;
    if journal.chain_head() != (seq, snapshot.resume.head) {
        return Err(LedgerError::Corrupt(format!(
            "the journal of record's snapshot {seq} does not match its own records"
        )));
    }
    snapshot.resume.record = journal.last_record();
    crate::snapshot::write(data_dir, &snapshot)?;
    tracing::info!(seq, "joined from the journal of record's snapshot");
    Ok(Some(seq))
}
