//! Puente's double-entry ledger.
//!
//! - [`types`]: accounts, transfers, flags, per-event results, limits.
//! - [`engine`]: the pure state machine (validation, two-phase, linked chains, expiry,
//!   invariants). No I/O.
//! - [`journal`]: the fsync'd, checksummed journal: the source of truth.
//! - [`store`]: indexed state behind the [`store::Store`] trait (sled by default).
//! - [`ledger`]: recovery, the single writer with group commit, reads.

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod backup;
pub mod engine;
pub mod hashing;
pub mod index;
pub mod journal;
pub mod ledger;
pub mod limits;
pub mod queue;
pub mod replica;
pub mod snapshot;
pub mod store;
pub mod types;

pub use engine::holders;
pub use engine::identity;
pub use engine::settlement;
pub use engine::{Call, Engine, Entry, EntryKind, Op, Output, Prefetched, Prior, Wanted};
pub use journal::Location;
pub use ledger::{Ledger, LedgerConfig, RecoveryReport, SyncHook, now_ns};
pub use store::{MemoryStore, PAGE_SIZE_MAX};
pub use types::*;

/// Errors of the ledger as a service (per-event outcomes are [`TransferResult`] and
/// [`AccountResult`], not errors).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This node is a standby (`puente serve --journal-url`): writes go to the leader, named
    /// here when known.
    #[error("this node is a standby; the leader is {}", .0.as_ref().map_or("not known yet", |l| l.address.as_str()))]
    NotLeader(Option<replica::LeaderInfo>),
}

impl From<std::io::Error> for LedgerError {
    fn from(error: std::io::Error) -> Self {
        LedgerError::Storage(format!("I/O: {error}"))
    }
}
