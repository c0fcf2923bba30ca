//! Every bound of the ledger in one place (TigerBeetle's style: put a limit on everything),
//! with the relations between them checked at compile time. The modules that enforce a bound
//! re-export it where it was first defined (`types::BATCH_EVENTS_MAX`, ...).
//!
//! What a hostile participant controls is bounded before any work: a request's events and
//! bytes (`types`, the server's message limits), its share of the writer (`queue`), and so the
//! size of the journal record a group commit writes (`GROUP_OP_BYTES_MAX` below: a group can
//! never make a record the journal refuses, which would stop every participant's writes).

use std::time::Duration;

use puente_core::PARTICIPANT_ID_LEN_MAX;

// ----- Requests: what one request may carry ------------------------------------------------------

/// Most transfers (or accounts) in one request. At least 8,000 (the floor), below
/// TigerBeetle's 8,189.
pub const BATCH_EVENTS_MAX: usize = 8_189;
/// Longest holder reference or transfer reference, in bytes.
pub const REFERENCE_LEN_MAX: usize = 128;
/// Most metadata entries on one account or transfer.
pub const METADATA_ENTRIES_MAX: usize = 16;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_LEN_MAX: usize = 64;
/// Longest metadata value, in bytes.
pub const METADATA_VALUE_LEN_MAX: usize = 256;
/// Longest pending timeout: 30 days.
pub const TIMEOUT_MAX_MS: u64 = 30 * 24 * 3_600 * 1_000;

// ----- State: what the ledger holds in memory ----------------------------------------------------

/// Most accounts one ledger holds (accounts live in memory: ~300 B each).
pub const ACCOUNTS_MAX: usize = 10_000_000;
/// Most pending transfers expired in one step.
pub const EXPIRE_BATCH_MAX: usize = BATCH_EVENTS_MAX;

// ----- Participants ------------------------------------------------------------------------------

/// Most participants on one ledger.
pub const PARTICIPANTS_MAX: usize = 10_000;
/// Most API keys (live or revoked) one participant holds; revoked keys stay for the record.
pub const KEYS_PER_PARTICIPANT_MAX: usize = 64;
/// Most client certificates bound to one participant.
pub const CERTIFICATES_PER_PARTICIPANT_MAX: usize = 16;
/// Longest participant display name, in bytes.
pub const PARTICIPANT_NAME_LEN_MAX: usize = 128;

// ----- Settlement --------------------------------------------------------------------------------

/// Most currencies in one settlement profile.
pub const PROFILE_CURRENCIES_MAX: usize = 8;
/// Longest bank identifier (ABA routing number, CLABE, BIC or name), in bytes.
pub const BANK_ID_LEN_MAX: usize = 35;
/// Longest participant legal name kept in a profile, in bytes (ISO 20022 Max140Text).
pub const PROFILE_NAME_LEN_MAX: usize = 140;
/// Longest reason recorded on a FAILED or ABORTED window, in bytes.
pub const WINDOW_REASON_LEN_MAX: usize = 512;
/// Most windows one list returns.
pub const WINDOW_PAGE_MAX: usize = 1_000;

// ----- Holders and KYC ---------------------------------------------------------------------------

/// Most holders on one ledger (they live in memory, with their sealed fields: ~1 KiB each).
pub const HOLDERS_MAX: usize = 1_000_000;
/// Longest holder id, in bytes.
pub const HOLDER_ID_LEN_MAX: usize = 64;
/// Largest sealed personal-data field, in bytes.
pub const SEALED_FIELD_LEN_MAX: usize = puente_kyc::pii::SEALED_LEN_MAX;
/// Most KYC refusals a participant may collect on one holder of another participant in one
/// calendar month before every further credit it sends to that holder is refused.
pub const KYC_FOREIGN_REFUSALS_MAX: u32 = 5;

// ----- The fair queue into the writer ------------------------------------------------------------

/// Most events one lane (participant) may have queued or in the group being committed.
pub const LANE_EVENTS_MAX: usize = 4 * BATCH_EVENTS_MAX;
/// Most events queued in all lanes together.
pub const QUEUE_EVENTS_MAX: usize = 64 * BATCH_EVENTS_MAX;
/// Credit a lane earns per turn: one full batch.
pub const QUANTUM_EVENTS: usize = BATCH_EVENTS_MAX;
/// Most lanes with a semaphore kept (one per participant; idle ones are dropped beyond this).
pub const LANES_MAX: usize = PARTICIPANTS_MAX;

// ----- The writer --------------------------------------------------------------------------------

/// Most events (accounts + transfers) in one group commit: four full requests (a group with 16
/// clients sending full batches averaged ~17k events). Bounded so that a group's record stays
/// under `RECORD_BYTES_MAX` however large each event is (65,536 before: eight requests of
/// transfers with every field at its limit made a record the journal refused).
pub const GROUP_EVENTS_MAX: usize = 4 * BATCH_EVENTS_MAX;
/// Longest the idle writer sleeps before looking at the clock again (expiry is exact anyway:
/// it wakes at the next expiry).
pub const IDLE_WAKE_MAX: Duration = Duration::from_secs(3_600);
/// How many committed groups the live feed buffers for slow subscribers.
pub const FEED_BUFFER_GROUPS: usize = 1_024;
/// Committed groups waiting for the indexer before the writer waits (backpressure: the writer
/// never runs more than this many groups ahead of the index).
pub const INDEX_QUEUE_GROUPS: usize = 8;
/// The indexer persists at least this often while it has something to persist.
pub const INDEX_PERSIST_INTERVAL_MS: u64 = 1_000;
/// How soon the indexer asks again for a persist that was due while the last was being written.
pub const INDEX_PERSIST_RETRY_MS: u64 = 10;
/// A snapshot is taken once this many events were committed since the last one...
pub const SNAPSHOT_EVENTS: u64 = 1_000_000;
/// ...or this long after the last one, if anything was committed.
pub const SNAPSHOT_INTERVAL_MS: u64 = 5 * 60 * 1_000;
/// Longest a read waits for the index to reach the writes acknowledged before it.
pub const READ_WAIT_MAX_MS: u64 = 30_000;

// ----- The journal -------------------------------------------------------------------------------

/// Largest journal record (one group commit). A group of plain transfers is ~100 B per event;
/// `GROUP_OP_BYTES_MAX` bounds a group whose every field is at its limit.
pub const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A segment is closed and a new one started once it would grow past this.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Most segments (a location keeps 16 bits for the segment number).
pub const SEGMENTS_MAX: u32 = u16::MAX as u32;

// ----- The index ---------------------------------------------------------------------------------

/// Runs of about the same size merged at once.
pub const RUN_MERGE_FAN_IN: usize = 4;
/// Runs bigger than this are never merged (a merge reads and writes them whole).
pub const RUN_ENTRIES_MERGE_MAX: u64 = 64 * 1024 * 1024;
/// Ids held in memory before a flush is due whatever the time.
pub const MEMORY_IDS_MAX: usize = 1 << 20;
/// Rows one read returns (page size cap).
pub const PAGE_SIZE_MAX: usize = 1_000;
/// How long an open waits for sled's lock on the index to be released (a process that was
/// just killed, or a ledger of this process just dropped whose sled threads are finishing)
/// before it reports the index as in use.
pub const INDEX_LOCK_WAIT_MS: u64 = 5_000;
/// Pause between two attempts at the lock.
pub const INDEX_LOCK_RETRY_MS: u64 = 20;
/// Entries per account chunk before a new chunk starts.
pub const ACCOUNT_CHUNK_ENTRIES_MAX: usize = 32;
/// Entries per feed chunk before a new chunk starts.
pub const FEED_CHUNK_ENTRIES_MAX: usize = 512;

// ----- Snapshots, backups and replication --------------------------------------------------------

/// Snapshots kept (the newest ones); older ones are deleted after a new one is written.
pub const SNAPSHOTS_KEPT: usize = 3;
/// Largest manifest read.
pub const MANIFEST_BYTES_MAX: u64 = 64 * 1024;
/// How many records a standby copies per read.
pub const FOLLOW_PAGE_RECORDS: usize = 256;
/// How often a standby that is caught up looks for new records and for a lapsed lease.
pub const FOLLOW_POLL_MS: u64 = 50;
/// Snapshots the store keeps (the newest).
pub const STORE_SNAPSHOTS_KEPT: usize = 2;
// ----- Encoded sizes -----------------------------------------------------------------------------

/// Most bytes one event's op takes in a journal record: the largest of a transfer (every field
/// at its limit: reference, 16 metadata entries of the longest key and value) and an account
/// (participant id, holder reference, metadata). A failure is stored at a fixed size, smaller.
/// Pinned against the codec by `journal::tests::no_op_of_one_event_exceeds_its_bound`.
pub const EVENT_OP_BYTES_MAX: usize = 256
    + PARTICIPANT_ID_LEN_MAX
    + REFERENCE_LEN_MAX
    + METADATA_ENTRIES_MAX * (METADATA_KEY_LEN_MAX + METADATA_VALUE_LEN_MAX + 8);
/// Most bytes the ops of one group's events take: the rest of a record is left for what the
/// writer adds to a group itself (up to `EXPIRE_BATCH_MAX` expiries) and for the ops of a
/// settlement or identity call (one event, bounded by `PARTICIPANTS_MAX` and the profile limits).
pub const GROUP_OP_BYTES_MAX: usize = GROUP_EVENTS_MAX * EVENT_OP_BYTES_MAX;

// ----- Relations ---------------------------------------------------------------------------------

// A group holds at least one full request, and expiries fit in a group.
const _: () = assert!(GROUP_EVENTS_MAX >= BATCH_EVENTS_MAX);
const _: () = assert!(EXPIRE_BATCH_MAX <= GROUP_EVENTS_MAX);
// A group's events never make a journal record the journal refuses: three quarters of the
// record at most, the last quarter (64 MiB) for expiries and a call's ops.
const _: () = assert!(GROUP_OP_BYTES_MAX <= RECORD_BYTES_MAX / 4 * 3);
// A record fits in a segment; the record length fits its u32 header field.
const _: () = assert!(RECORD_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);
// The fair queue: a lane holds a full request, the queue a full lane, a turn a full request.
const _: () = assert!(LANE_EVENTS_MAX >= BATCH_EVENTS_MAX);
const _: () = assert!(QUEUE_EVENTS_MAX >= LANE_EVENTS_MAX);
const _: () = assert!(QUANTUM_EVENTS >= BATCH_EVENTS_MAX);
// The index: a persist is due at most once per group; a retry comes before the next interval.
const _: () = assert!(MEMORY_IDS_MAX >= GROUP_EVENTS_MAX);
const _: () = assert!(INDEX_PERSIST_RETRY_MS < INDEX_PERSIST_INTERVAL_MS);
const _: () = assert!(INDEX_QUEUE_GROUPS >= 1);
const _: () = assert!(RUN_MERGE_FAN_IN >= 2);
// Reads: a page of a statement or a feed is at most one request's worth.
const _: () = assert!(PAGE_SIZE_MAX <= BATCH_EVENTS_MAX);
const _: () = assert!(WINDOW_PAGE_MAX <= BATCH_EVENTS_MAX);
// A damaged snapshot falls back to an older one.
const _: () = assert!(SNAPSHOTS_KEPT >= 2);
const _: () = assert!(SNAPSHOT_EVENTS >= GROUP_EVENTS_MAX as u64);
// Every participant can have a lane of its own.
const _: () = assert!(LANES_MAX >= PARTICIPANTS_MAX);
