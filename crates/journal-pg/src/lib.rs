//! Puente's journal of record in PostgreSQL (and CockroachDB, YugabyteDB): opaque records by
//! sequence number, one leader's lease with fencing, and snapshots. This crate knows SQL and
//! nothing of the ledger: a record is bytes.
//!
//! # Tables
//!
//! Made at connect if missing (`CREATE TABLE IF NOT EXISTS`, rows `ON CONFLICT DO NOTHING`):
//!
//! - `puente_schema (id, version)`: one row, the schema version ([`SCHEMA_VERSION`]); a later
//!   version migrates from it, this one refuses a newer one.
//! - `puente_lease (id = 1, epoch, holder, address, expires_at, last_seq)`: one row. `epoch`
//!   counts acquisitions (0: never held), `holder` is the node id of the leader and `address`
//!   its advertised gRPC address, `expires_at` is on the database's clock, and `last_seq` is
//!   the sequence number of the last record appended (0: none).
//! - `puente_journal (seq PRIMARY KEY, epoch, record)`: the records, numbered 1, 2, 3, ...
//!   with no gap, each with the epoch that wrote it.
//! - `puente_snapshots (seq PRIMARY KEY, taken_at, body)`: the newest few snapshots; a body is
//!   opaque bytes describing the state after record `seq`.
//!
//! Only plain tables, single statements and transactions: no advisory locks, no
//! `LISTEN/NOTIFY`, no PL/pgSQL, no sequences. Lease times come from `now()` on the database,
//! so the nodes' clocks do not matter.
//!
//! # The lease and the fencing rule
//!
//! [`PgJournal::try_acquire`] is one `UPDATE ... WHERE expires_at <= now() OR holder = $me
//! RETURNING epoch, last_seq` that also adds one to `epoch`: at most one node wins each
//! expiry, and every acquisition has an epoch of its own. [`PgJournal::renew`] extends the
//! lease while the epoch is still ours; [`PgJournal::release`] expires it at once (a clean
//! stop), so a standby takes over without waiting for the TTL.
//!
//! Every append is **one transaction**:
//!
//! ```sql
//! BEGIN;
//! UPDATE puente_lease SET last_seq = $last WHERE id = 1 AND epoch = $epoch AND last_seq = $first - 1;
//! -- exactly one row, or ROLLBACK and Fenced
//! INSERT INTO puente_journal (seq, epoch, record) ...;   -- $first ..= $last
//! COMMIT;                                                -- Ok only once this returned
//! ```
//!
//! **Why a paused old leader cannot append after a new one took over**: the new leader's
//! acquisition changed the lease row's epoch. The old leader's append checks the epoch in the
//! same transaction as its insert, through the `UPDATE` of that row, which takes the row's
//! lock: either its transaction committed before the acquisition (then the acquisition,
//! which waits for that lock, returns the new `last_seq`, so the new leader sees the record
//! and appends after it), or the `UPDATE` sees the new epoch and touches no row, and the
//! append is refused ([`PgJournalError::Fenced`]) with nothing written. No pause, clock skew
//! or lost network message between the two nodes changes this, because nothing is decided
//! outside the database transaction. The same `UPDATE` enforces the next-sequence rule:
//! `seq` must be `last_seq + 1` (no gap, no repeat), so two appends of the same `seq`, even
//! under the same lease, commit at most once (the second waits for the row lock, then sees
//! the moved `last_seq`). Under READ COMMITTED (PostgreSQL's default) the loser is `Fenced`;
//! under SERIALIZABLE (CockroachDB) it may instead fail with a serialization error
//! ([`PgJournalError::Db`], SQLSTATE 40001), with nothing written either way.
//!
//! An expired lease whose epoch nobody changed still appends: nobody else can have appended
//! in between, and the next acquisition returns the `last_seq` it left. A leader should still
//! stop serving writes when it cannot renew in time.
//!
//! # Zero-loss commits
//!
//! `Ok` from an append means `COMMIT` returned; how durable that is, is the database's
//! setting. PostgreSQL: `synchronous_commit = on` (the default, WAL flushed locally), and for
//! a replicated cluster `synchronous_standby_names` naming the standbys with
//! `synchronous_commit = on` or `remote_apply` (a failover to a synchronous standby then loses
//! no acknowledged commit; `remote_apply` also makes it readable there at once). Never
//! `synchronous_commit = off` or `local` with replication for the journal. CockroachDB and
//! YugabyteDB commit through Raft (a majority of replicas) by default. The test clusters
//! ([`testing`]) run with `fsync = on` and `synchronous_commit = on`.
//!
//! # Failure modes
//!
//! Every call is bounded ([`CALL_TIMEOUT_MS`], also the session's `statement_timeout` and
//! `idle_in_transaction_session_timeout`, so a stopped process cannot hold the lease row's
//! lock). A broken connection makes the call that finds it return [`PgJournalError::Db`]; the
//! next call connects again. Nothing is retried inside: an append whose `COMMIT` got no answer
//! may have committed ([`PgJournal::last_seq`] tells). Connection strings are logged and put in
//! errors only through [`redact_url`]. TLS is not supported yet (`NoTls`).

mod error;
mod journal;
mod redact;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{PgJournalError, Result};
pub use journal::{
    ADDRESS_BYTES_MAX, APPEND_BYTES_MAX, APPEND_RECORDS_MAX, CALL_TIMEOUT_MS, CALL_TIMEOUT_MS_MAX,
    HOLDER_BYTES_MAX, LEASE_TTL_MS_MAX, LeaderInfo, Lease, PgJournal, PgJournalOptions, READ_PAGE_BYTES_MAX,
    READ_PAGE_RECORDS_MAX, RECORD_BYTES_MAX, SNAPSHOT_BYTES_MAX, SNAPSHOTS_KEPT_MAX,
};
pub use redact::{REDACTED, redact_url};
pub use schema::SCHEMA_VERSION;
