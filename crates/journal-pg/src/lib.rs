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
//! setting. CockroachDB and YugabyteDB commit through Raft (a majority of replicas) by
//! default. The test clusters ([`testing`]) run with `fsync = on` and
//! `synchronous_commit = on`.
//!
//! **A single PostgreSQL server**: with `fsync = on` and `synchronous_commit = on` (both the
//! defaults) a commit is flushed to that server's disk before `COMMIT` returns; the journal is
//! exactly as durable as that one disk (and as available as that one server).
//!
//! **A primary with a streaming standby, losing no acknowledged append on failover**: the
//! primary needs
//!
//! - `synchronous_commit = on` (or `remote_apply`, which also makes the commit readable on the
//!   standby at once): `COMMIT` returns only once a synchronous standby has flushed the
//!   commit to its disk. Never `off` or `local` (the standby may not have it at all) nor
//!   `remote_write` (it is in the standby's memory, not on its disk);
//! - `synchronous_standby_names` naming the standby (its `application_name` from
//!   `primary_conninfo`), or `'*'` for any one standby, so that a synchronous standby exists at
//!   all (empty, the default, is asynchronous replication: a failover can lose acknowledged
//!   appends);
//! - `wal_level = replica` or `logical` and `max_wal_senders` above 0 (the defaults), and a
//!   `replication` entry in `pg_hba.conf` for the standby; the standby is made with
//!   `pg_basebackup -R` (better with a replication slot, `-C -S name`).
//!
//! Give the journal every server in one URL with `target_session_attrs=read-write`
//! (`postgres://user@host1:5432,host2:5432/db?target_session_attrs=read-write`): connecting
//! tries the hosts in order and keeps the first that accepts writes, so a standby is never
//! written to and, after `pg_ctl promote` (or a failover manager) made it the primary, the
//! next call reconnects to it. The lease and the journal are replicated like every other row.
//! After a failover the leader learns where the journal ends from [`PgJournal::last_seq`] (the
//! append in flight at the crash may or may not be there) and goes on from `last_seq + 1`;
//! taking its lease again ([`PgJournal::try_acquire`], same holder) gives it a new epoch.
//!
//! The costs: every commit waits for the standby's flush (a round trip and its disk), and
//! while no synchronous standby is connected, commits on the primary wait; appends then fail
//! with [`PgJournalError::Db`] after the call timeout (outcome unknown, see below) rather than
//! commit without a copy. A standby promoted alone has no synchronous standby of its own:
//! until one is attached (and named in its `synchronous_standby_names`) the journal is only as
//! durable as its disk. And a commit is visible on the primary a moment before the standby has
//! it: an append that returned `Db` may show in `last_seq` on the old primary yet be missing
//! after a failover; only `Ok` means the standby has it.
//!
//! # Failure modes
//!
//! Every call is bounded ([`CALL_TIMEOUT_MS`], also the session's
//! `idle_in_transaction_session_timeout`, and four fifths of it its `statement_timeout`, so a
//! stopped process cannot hold the lease row's lock, and a statement waiting on a lock is
//! aborted by the server before the call gives up on it). A broken connection makes the call that finds it return [`PgJournalError::Db`]; the
//! next call connects again. Nothing is retried inside: an append whose `COMMIT` got no answer
//! may have committed ([`PgJournal::last_seq`] tells). Connection strings are logged and put in
//! errors only through [`redact_url`]. TLS is not supported yet (`NoTls`).

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

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
