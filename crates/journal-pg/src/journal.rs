//! [`PgJournal`]: one connection to the database and every call the journal makes over it.

use std::fmt;
use std::time::Duration;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{PgJournalError, Result, db_error};
use crate::redact::redact_url;
use crate::schema;

/// How long one call may take, end to end (waiting for the connection, connecting, every
/// statement, `COMMIT`), unless [`PgJournalOptions::call_timeout_ms`] says otherwise. The same
/// bound is the session's `idle_in_transaction_session_timeout`, and four fifths of it its
/// `statement_timeout`, so the server gives up too (and releases the lease row's lock if this
/// process stops mid-call), and gives up first: a statement that waited on a lock is aborted
/// by the server before this side stops waiting for it, so it did not commit behind our back.
pub const CALL_TIMEOUT_MS: u64 = 10_000;
/// The largest call timeout [`PgJournal::connect_with`] accepts.
pub const CALL_TIMEOUT_MS_MAX: u64 = 10 * 60 * 1_000;
/// Records one [`PgJournal::read_after`] returns at most.
pub const READ_PAGE_RECORDS_MAX: usize = 1_000;
/// Bytes of records one [`PgJournal::read_after`] returns at most (it returns at least one
/// record when there is one, whatever its size).
pub const READ_PAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The largest record.
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Records one [`PgJournal::append_many`] writes at most.
pub const APPEND_RECORDS_MAX: usize = 1_000;
/// Bytes of records one append transaction writes at most.
pub const APPEND_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The largest snapshot body.
pub const SNAPSHOT_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The most snapshots [`PgJournal::put_snapshot`] may be asked to keep.
pub const SNAPSHOTS_KEPT_MAX: usize = 100;
/// The longest holder (node id), in bytes.
pub const HOLDER_BYTES_MAX: usize = 256;
/// The longest advertised address, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 1_024;
/// The longest lease.
pub const LEASE_TTL_MS_MAX: u64 = 60 * 60 * 1_000;
/// TCP keepalive idle time of the connection: a peer that vanished is noticed by the kernel.
const KEEPALIVE_IDLE_MS: u64 = 10_000;

// PostgreSQL's bytea and protocol messages end at 1 GiB; a page always has room for the
// largest record; one append can hold the largest record.
const _: () = assert!(SNAPSHOT_BYTES_MAX < (1 << 30) && APPEND_BYTES_MAX < (1 << 30));
const _: () = assert!(READ_PAGE_BYTES_MAX >= RECORD_BYTES_MAX && APPEND_BYTES_MAX >= RECORD_BYTES_MAX);
const _: () = assert!(READ_PAGE_RECORDS_MAX >= 1 && APPEND_RECORDS_MAX >= 1 && SNAPSHOTS_KEPT_MAX >= 1);
const _: () = assert!(CALL_TIMEOUT_MS <= CALL_TIMEOUT_MS_MAX && LEASE_TTL_MS_MAX < i64::MAX as u64);

/// Where a released (or never held) lease expires: long ago, whatever any clock says.
const LONG_AGO: &str = "TIMESTAMPTZ '1970-01-01 00:00:00+00'";

/// How a [`PgJournal`] behaves; [`Default`] is what [`PgJournal::connect`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgJournalOptions {
    /// See [`CALL_TIMEOUT_MS`]; 1 ..= [`CALL_TIMEOUT_MS_MAX`].
    pub call_timeout_ms: u64,
}

impl Default for PgJournalOptions {
    fn default() -> Self {
        PgJournalOptions { call_timeout_ms: CALL_TIMEOUT_MS }
    }
}

/// The leadership this node holds: present its epoch with every append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique to this acquisition: every acquisition adds one.
    pub epoch: u64,
    /// The sequence number of the last record when the lease was acquired: a new leader reads
    /// the journal up to here before it appends `last_seq + 1`.
    pub last_seq: u64,
    /// The node id that acquired it.
    pub holder: String,
    /// The address it advertised.
    pub address: String,
}

/// Who holds (or last held) the lease, by the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub epoch: u64,
    pub holder: String,
    pub address: String,
    /// The lease ran out (or was released): anyone may acquire it.
    pub expired: bool,
    /// Milliseconds until it runs out (0 when expired): how long a standby may wait before
    /// trying again.
    pub remaining_ms: u64,
}

/// The journal in one database, over one connection (calls on one `PgJournal` run one at a
/// time; open another for parallel reads).
///
/// **Connection failures**: every call is bounded by the call timeout. A call that finds the
/// connection broken, or times out, returns [`PgJournalError::Db`] and discards the
/// connection; the next call connects again (and checks the schema). Calls are never retried
/// here: an append whose `COMMIT` got no answer may or may not have committed, and only the
/// caller can decide (read [`PgJournal::last_seq`]). Dropping a `PgJournal` closes its
/// connection; the server rolls back whatever was in flight.
pub struct PgJournal {
    config: Config,
    url_redacted: String,
    call_timeout: Duration,
    session: Mutex<Option<Session>>,
}

impl fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgJournal")
            .field("url", &self.url_redacted)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// One open connection and the task driving it.
struct Session {
    client: Client,
    /// The append statement, prepared once per session (an append is then one round trip).
    append: Option<tokio_postgres::Statement>,
    connection: JoinHandle<()>,
    /// A call timed out on it: its state (in a transaction?) is unknown, so it is replaced.
    dead: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closes the socket; the server rolls back an open transaction.
        self.connection.abort();
    }
}

impl PgJournal {
    /// Connects with [`PgJournalOptions::default`] and makes the schema if it is missing.
    pub async fn connect(url: &str) -> Result<PgJournal> {
        Self::connect_with(url, PgJournalOptions::default()).await
    }

    /// Connects (`url`: a `postgres://` URL or libpq key/value string; TLS is not supported
    /// yet) and makes the schema if it is missing.
    pub async fn connect_with(url: &str, options: PgJournalOptions) -> Result<PgJournal> {
        if !(1..=CALL_TIMEOUT_MS_MAX).contains(&options.call_timeout_ms) {
            return Err(PgJournalError::Invalid(format!(
                "call timeout {} ms is not within 1..={CALL_TIMEOUT_MS_MAX} ms",
                options.call_timeout_ms
            )));
        }
        let url_redacted = redact_url(url);
        let mut config: Config = url
            .parse()
            .map_err(|e| PgJournalError::Invalid(format!("connection string {url_redacted}: {e}")))?;
        let call_timeout = Duration::from_millis(options.call_timeout_ms);
        config.connect_timeout(call_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_millis(KEEPALIVE_IDLE_MS));
        if config.get_application_name().is_none() {
            config.application_name("puente-journal-pg");
        }
        let journal = PgJournal { config, url_redacted, call_timeout, session: Mutex::new(None) };
        // Connect now, so a wrong URL or a missing schema permission shows at start.
        drop(journal.connected().await?);
        Ok(journal)
    }

    /// Acquires the lease for `holder` (this node's id, unique per process) advertising
    /// `address`, for `ttl_ms` by the database's clock, when it expired or `holder` already
    /// holds it. Every acquisition adds one to the epoch (in the same `UPDATE`), so a lease
    /// acquired before, even by the same holder, can no longer append. `None`: another node's
    /// lease is live.
    pub async fn try_acquire(&self, holder: &str, address: &str, ttl_ms: u64) -> Result<Option<Lease>> {
        check_holder(holder)?;
        if address.len() > ADDRESS_BYTES_MAX {
            return Err(PgJournalError::Invalid(format!(
                "address of {} bytes (at most {ADDRESS_BYTES_MAX})",
                address.len()
            )));
        }
        let ttl_ms = check_ttl(ttl_ms)?;
        let mut conn = self.connected().await?;
        let outcome = self.bounded(acquire(conn.client(), holder, address, ttl_ms)).await;
        let acquired = conn.settle(outcome)?;
        match &acquired {
            Some(lease) => tracing::info!(
                holder,
                address,
                epoch = lease.epoch,
                last_seq = lease.last_seq,
                ttl_ms,
                "acquired the journal lease"
            ),
            None => tracing::debug!(holder, "the journal lease is held by another node"),
        }
        Ok(acquired)
    }

    /// Extends `lease` to `ttl_ms` from now (database clock). `false`: the lease was lost
    /// (another acquisition changed the epoch); stop appending and step down.
    pub async fn renew(&self, lease: &Lease, ttl_ms: u64) -> Result<bool> {
        let ttl_ms = check_ttl(ttl_ms)?;
        let epoch = to_i64("epoch", lease.epoch)?;
        let mut conn = self.connected().await?;
        let statement = "UPDATE puente_lease SET expires_at = now() + $3::INT8 * INTERVAL '1 millisecond' \
                         WHERE id = 1 AND epoch = $1 AND holder = $2";
        let outcome =
            self.bounded(conn.client().execute(statement, &[&epoch, &lease.holder.as_str(), &ttl_ms])).await;
        let renewed = conn.settle(outcome.map(|r| r.map_err(|e| db_error("renewing the lease", &e))))? == 1;
        if !renewed {
            tracing::warn!(holder = %lease.holder, epoch = lease.epoch, "the journal lease was lost");
        }
        Ok(renewed)
    }

    /// Gives `lease` up at once (a clean stop): it expires now, so a standby acquires it
    /// without waiting for the TTL. `false`: it was no longer ours.
    pub async fn release(&self, lease: &Lease) -> Result<bool> {
        let epoch = to_i64("epoch", lease.epoch)?;
        let mut conn = self.connected().await?;
        let statement = format!(
            "UPDATE puente_lease SET expires_at = {LONG_AGO} WHERE id = 1 AND epoch = $1 AND holder = $2"
        );
        let outcome =
            self.bounded(conn.client().execute(&statement, &[&epoch, &lease.holder.as_str()])).await;
        let released = conn.settle(outcome.map(|r| r.map_err(|e| db_error("releasing the lease", &e))))? == 1;
        tracing::info!(holder = %lease.holder, epoch = lease.epoch, released, "released the journal lease");
        Ok(released)
    }

    /// Who holds or last held the lease; `None` before anyone acquired it.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let mut conn = self.connected().await?;
        let statement = "SELECT epoch, holder, address, expires_at <= now(), \
                         CAST(EXTRACT(EPOCH FROM (expires_at - now())) * 1000 AS INT8) \
                         FROM puente_lease WHERE id = 1";
        let outcome = self.bounded(conn.client().query_opt(statement, &[])).await;
        let row = conn.settle(outcome.map(|r| r.map_err(|e| db_error("reading the lease", &e))))?;
        let row = row.ok_or_else(|| PgJournalError::Corrupt("the lease row (id 1) is missing".into()))?;
        let epoch = from_i64("lease epoch", get(&row, 0)?)?;
        if epoch == 0 {
            return Ok(None);
        }
        let remaining_ms: i64 = get(&row, 4)?;
        Ok(Some(LeaderInfo {
            epoch,
            holder: get(&row, 1)?,
            address: get(&row, 2)?,
            expired: get(&row, 3)?,
            remaining_ms: u64::try_from(remaining_ms).unwrap_or(0),
        }))
    }

    /// Appends `record` as `seq`; see [`PgJournal::append_many`].
    pub async fn append(&self, lease: &Lease, seq: u64, record: &[u8]) -> Result<()> {
        self.append_many(lease, seq, &[record]).await
    }

    /// Appends `records` as `first_seq`, `first_seq + 1`, ... in one transaction: the lease
    /// row's `last_seq` moves from `first_seq - 1` to the last one only if its epoch is still
    /// `lease.epoch` (else [`PgJournalError::Fenced`], nothing written), then the records are
    /// inserted, then `COMMIT`. `Ok` means `COMMIT` returned. A [`PgJournalError::Db`] may
    /// hide a commit (the connection broke during `COMMIT`): read [`PgJournal::last_seq`].
    pub async fn append_many(&self, lease: &Lease, first_seq: u64, records: &[&[u8]]) -> Result<()> {
        let (first, last) = check_append(first_seq, records)?;
        let epoch = to_i64("epoch", lease.epoch)?;
        let mut conn = self.connected().await?;
        let outcome = self.bounded(append_tx(conn.session(), epoch, first, last, records)).await;
        match conn.settle(outcome) {
            Ok(()) => {
                tracing::debug!(epoch = lease.epoch, first_seq, count = records.len(), "appended");
                Ok(())
            }
            Err(error) => {
                match &error {
                    PgJournalError::Fenced { .. } => tracing::warn!(%error, "append fenced"),
                    _ => tracing::warn!(%error, epoch = lease.epoch, first_seq, "append failed"),
                }
                Err(error)
            }
        }
    }

    /// The records after `after_seq`, ascending and contiguous from `after_seq + 1`: at most
    /// `limit` (capped at [`READ_PAGE_RECORDS_MAX`]) and [`READ_PAGE_BYTES_MAX`] bytes (but at
    /// least one record when there is one). Empty: nothing after `after_seq`. A gap is
    /// [`PgJournalError::Corrupt`].
    pub async fn read_after(&self, after_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        if limit == 0 {
            return Err(PgJournalError::Invalid("read limit 0".into()));
        }
        let after = to_i64("after_seq", after_seq)?;
        let limit = limit.min(READ_PAGE_RECORDS_MAX);
        let mut conn = self.connected().await?;
        let outcome = self.bounded(read_page(conn.client(), after, limit)).await;
        conn.settle(outcome)
    }

    /// The sequence number of the last record (0: none yet).
    pub async fn last_seq(&self) -> Result<u64> {
        let mut conn = self.connected().await?;
        let outcome = self
            .bounded(conn.client().query_opt("SELECT last_seq FROM puente_lease WHERE id = 1", &[]))
            .await;
        let row = conn.settle(outcome.map(|r| r.map_err(|e| db_error("reading last_seq", &e))))?;
        let row = row.ok_or_else(|| PgJournalError::Corrupt("the lease row (id 1) is missing".into()))?;
        from_i64("last_seq", get(&row, 0)?)
    }

    /// Stores `body` as the snapshot at `seq` (replacing one at the same `seq`) and keeps only
    /// the `keep` newest, in one transaction. `seq` must not be past the last record (a
    /// snapshot of state the journal does not hold is refused).
    pub async fn put_snapshot(&self, seq: u64, body: &[u8], keep: usize) -> Result<()> {
        if !(1..=SNAPSHOTS_KEPT_MAX).contains(&keep) {
            return Err(PgJournalError::Invalid(format!("keep {keep} snapshots (1..={SNAPSHOTS_KEPT_MAX})")));
        }
        if body.len() > SNAPSHOT_BYTES_MAX {
            return Err(PgJournalError::Invalid(format!(
                "snapshot of {} bytes (at most {SNAPSHOT_BYTES_MAX})",
                body.len()
            )));
        }
        let seq_i = to_i64("snapshot seq", seq)?;
        let offset = to_i64("keep", (keep - 1) as u64)?;
        let mut conn = self.connected().await?;
        let outcome = self.bounded(snapshot_tx(conn.client(), seq_i, body, offset)).await;
        conn.settle(outcome)?;
        tracing::info!(seq, bytes = body.len(), keep, "stored a snapshot");
        Ok(())
    }

    /// The newest snapshot: its sequence number and body.
    pub async fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let mut conn = self.connected().await?;
        let statement = "SELECT seq, body FROM puente_snapshots ORDER BY seq DESC LIMIT 1";
        let outcome = self.bounded(conn.client().query_opt(statement, &[])).await;
        let row = conn.settle(outcome.map(|r| r.map_err(|e| db_error("reading the latest snapshot", &e))))?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some((from_i64("snapshot seq", get(&row, 0)?)?, get(&row, 1)?))),
        }
    }

    /// The redacted connection string (for logs).
    pub fn url_redacted(&self) -> &str {
        &self.url_redacted
    }

    async fn bounded<F: Future>(&self, work: F) -> std::result::Result<F::Output, Elapsed> {
        tokio::time::timeout(self.call_timeout, work).await
    }

    /// The connection, opened (again) when there is none, it broke, or a call timed out on it.
    async fn connected(&self) -> Result<Connected<'_>> {
        let mut slot = self.bounded(self.session.lock()).await.map_err(|_| {
            PgJournalError::Db(format!(
                "waiting for the connection to {}: timed out after {} ms",
                self.url_redacted,
                self.call_timeout.as_millis()
            ))
        })?;
        let session = match slot.take() {
            Some(session) if !session.dead && !session.client.is_closed() => session,
            stale => {
                if stale.is_some() {
                    tracing::info!(url = %self.url_redacted, "reconnecting to the journal database");
                }
                drop(stale);
                self.open_session().await?
            }
        };
        let guard = MutexGuard::map(slot, |slot| slot.insert(session));
        Ok(Connected { guard, call_timeout: self.call_timeout })
    }

    async fn open_session(&self) -> Result<Session> {
        let connecting = format!("connecting to {}", self.url_redacted);
        let (client, connection) = self
            .bounded(self.config.connect(NoTls))
            .await
            .map_err(|_| timed_out(&connecting, self.call_timeout))?
            .map_err(|e| db_error(&connecting, &e))?;
        let url = self.url_redacted.clone();
        let connection = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(url = %url, error = %error, "the journal database connection closed");
            }
        });
        let session = Session { client, append: None, connection, dead: false };
        let ms = self.call_timeout.as_millis();
        let statement_ms = (ms - ms / 5).max(1);
        let setup =
            format!("SET statement_timeout = {statement_ms}; SET idle_in_transaction_session_timeout = {ms}");
        let preparing = format!("preparing the session on {}", self.url_redacted);
        self.bounded(session.client.batch_execute(&setup))
            .await
            .map_err(|_| timed_out(&preparing, self.call_timeout))?
            .map_err(|e| db_error(&preparing, &e))?;
        self.bounded(schema::ensure(&session.client))
            .await
            .map_err(|_| timed_out(&preparing, self.call_timeout))??;
        tracing::info!(url = %self.url_redacted, "connected to the journal database");
        Ok(session)
    }
}

/// The locked, open connection of one call.
struct Connected<'a> {
    guard: MappedMutexGuard<'a, Session>,
    call_timeout: Duration,
}

impl Connected<'_> {
    fn client(&mut self) -> &mut Client {
        &mut self.guard.client
    }

    fn session(&mut self) -> &mut Session {
        &mut self.guard
    }

    /// The call's outcome; a timeout marks the connection for replacement.
    fn settle<T>(mut self, outcome: std::result::Result<Result<T>, Elapsed>) -> Result<T> {
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.guard.dead = true;
                Err(timed_out("the call", self.call_timeout))
            }
        }
    }
}

fn timed_out(what: &str, timeout: Duration) -> PgJournalError {
    PgJournalError::Db(format!("{what}: timed out after {} ms", timeout.as_millis()))
}

async fn acquire(client: &Client, holder: &str, address: &str, ttl_ms: i64) -> Result<Option<Lease>> {
    let statement = "UPDATE puente_lease SET epoch = epoch + 1, holder = $1, address = $2, \
                     expires_at = now() + $3::INT8 * INTERVAL '1 millisecond' \
                     WHERE id = 1 AND (expires_at <= now() OR holder = $1) \
                     RETURNING epoch, last_seq";
    let row = client
        .query_opt(statement, &[&holder, &address, &ttl_ms])
        .await
        .map_err(|e| db_error("acquiring the lease", &e))?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(Lease {
            epoch: from_i64("lease epoch", get(&row, 0)?)?,
            last_seq: from_i64("last_seq", get(&row, 1)?)?,
            holder: holder.to_owned(),
            address: address.to_owned(),
        })),
    }
}

/// The append, one statement and so one implicit transaction and one round trip: the lease
/// row's `last_seq` moves from `first - 1` to `last` only under `epoch` (the fence: the row lock
/// the `UPDATE` takes orders every append and acquisition, and under READ COMMITTED a waiting
/// append re-checks the row after the other commits), and the records are inserted only if it
/// moved. Data-modifying CTEs are PostgreSQL's, CockroachDB's and YugabyteDB's alike.
const APPEND_SQL: &str = "WITH moved AS (\
     UPDATE puente_lease SET last_seq = $3 WHERE id = 1 AND epoch = $1 AND last_seq = $2 RETURNING 1) \
     INSERT INTO puente_journal (seq, epoch, record) \
     SELECT s, $1, r FROM UNNEST($4::INT8[], $5::BYTEA[]) AS t(s, r) WHERE EXISTS (SELECT 1 FROM moved)";

async fn append_tx(
    session: &mut Session,
    epoch: i64,
    first: i64,
    last: i64,
    records: &[&[u8]],
) -> Result<()> {
    let statement = match &session.append {
        Some(statement) => statement.clone(),
        None => {
            let prepared =
                session.client.prepare(APPEND_SQL).await.map_err(|e| db_error("preparing the append", &e))?;
            session.append = Some(prepared.clone());
            prepared
        }
    };
    let seqs: Vec<i64> = (first..=last).collect();
    let inserted =
        session.client.execute(&statement, &[&epoch, &(first - 1), &last, &seqs, &records]).await.map_err(
            |e| match e.code() {
                Some(code) if *code == SqlState::UNIQUE_VIOLATION => PgJournalError::Corrupt(format!(
                    "a record in seq {first}..={last} is already stored although the lease's last_seq was {}",
                    first - 1
                )),
                // The statement's implicit COMMIT may have happened before the connection broke.
                _ => db_error("appending (it may or may not have committed)", &e),
            },
        )?;
    if inserted == records.len() as u64 {
        return Ok(());
    }
    if inserted != 0 {
        return Err(PgJournalError::Corrupt(format!("inserted {inserted} of {} records", records.len())));
    }
    // Fenced: nothing was written. Say why.
    let row = session
        .client
        .query_opt("SELECT epoch, last_seq FROM puente_lease WHERE id = 1", &[])
        .await
        .map_err(|e| db_error("reading the lease after a refused append", &e))?
        .ok_or_else(|| PgJournalError::Corrupt("the lease row (id 1) is missing".into()))?;
    Err(PgJournalError::Fenced {
        epoch: epoch as u64,
        seq: first as u64,
        current_epoch: from_i64("lease epoch", get(&row, 0)?)?,
        last_seq: from_i64("last_seq", get(&row, 1)?)?,
    })
}

async fn read_page(client: &Client, after: i64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
    // Sizes first, so a page of large records stops at READ_PAGE_BYTES_MAX without reading
    // them.
    let sizes = client
        .query(
            "SELECT seq, octet_length(record) FROM puente_journal WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &(limit as i64)],
        )
        .await
        .map_err(|e| db_error("reading record sizes", &e))?;
    let mut count: usize = 0;
    let mut bytes: usize = 0;
    for row in &sizes {
        let seq: i64 = get(row, 0)?;
        let expected = after + 1 + count as i64;
        if seq != expected {
            return Err(PgJournalError::Corrupt(format!(
                "gap in the journal: expected seq {expected}, found {seq}"
            )));
        }
        let size: i32 = get(row, 1)?;
        let size = usize::try_from(size)
            .map_err(|_| PgJournalError::Corrupt(format!("seq {seq} has size {size}")))?;
        if count > 0 && bytes + size > READ_PAGE_BYTES_MAX {
            break;
        }
        bytes += size;
        count += 1;
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let through = after + count as i64;
    let rows = client
        .query(
            "SELECT seq, record FROM puente_journal WHERE seq > $1 AND seq <= $2 ORDER BY seq",
            &[&after, &through],
        )
        .await
        .map_err(|e| db_error("reading records", &e))?;
    if rows.len() != count {
        return Err(PgJournalError::Corrupt(format!(
            "seq {}..={through}: {} records read back, {count} were listed",
            after + 1,
            rows.len()
        )));
    }
    let mut records = Vec::with_capacity(count);
    for (i, row) in rows.iter().enumerate() {
        let seq: i64 = get(row, 0)?;
        if seq != after + 1 + i as i64 {
            return Err(PgJournalError::Corrupt(format!("gap in the journal at seq {seq}")));
        }
        records.push((seq as u64, get(row, 1)?));
    }
    Ok(records)
}

async fn snapshot_tx(client: &mut Client, seq: i64, body: &[u8], offset: i64) -> Result<()> {
    let tx = client.transaction().await.map_err(|e| db_error("beginning a snapshot", &e))?;
    let row = tx
        .query_opt("SELECT last_seq FROM puente_lease WHERE id = 1", &[])
        .await
        .map_err(|e| db_error("reading last_seq", &e))?
        .ok_or_else(|| PgJournalError::Corrupt("the lease row (id 1) is missing".into()))?;
    let last_seq: i64 = get(&row, 0)?;
    if seq > last_seq {
        return Err(PgJournalError::Invalid(format!(
            "snapshot at seq {seq} is past the journal's last record {last_seq}"
        )));
    }
    tx.execute(
        "INSERT INTO puente_snapshots (seq, taken_at, body) VALUES ($1, now(), $2) \
         ON CONFLICT (seq) DO UPDATE SET taken_at = excluded.taken_at, body = excluded.body",
        &[&seq, &body],
    )
    .await
    .map_err(|e| db_error("storing a snapshot", &e))?;
    tx.execute(
        "DELETE FROM puente_snapshots WHERE seq < \
         (SELECT seq FROM puente_snapshots ORDER BY seq DESC LIMIT 1 OFFSET $1)",
        &[&offset],
    )
    .await
    .map_err(|e| db_error("deleting old snapshots", &e))?;
    tx.commit().await.map_err(|e| db_error("committing a snapshot", &e))
}

fn get<'r, T: tokio_postgres::types::FromSql<'r>>(row: &'r tokio_postgres::Row, column: usize) -> Result<T> {
    row.try_get(column).map_err(|e| PgJournalError::Corrupt(format!("column {column}: {e}")))
}

fn check_holder(holder: &str) -> Result<()> {
    if holder.is_empty() || holder.len() > HOLDER_BYTES_MAX {
        return Err(PgJournalError::Invalid(format!(
            "holder of {} bytes (1..={HOLDER_BYTES_MAX})",
            holder.len()
        )));
    }
    Ok(())
}

fn check_ttl(ttl_ms: u64) -> Result<i64> {
    if !(1..=LEASE_TTL_MS_MAX).contains(&ttl_ms) {
        return Err(PgJournalError::Invalid(format!("lease ttl {ttl_ms} ms (1..={LEASE_TTL_MS_MAX})")));
    }
    to_i64("ttl_ms", ttl_ms)
}

/// The checked bounds of an append: its first and last sequence numbers.
fn check_append(first_seq: u64, records: &[&[u8]]) -> Result<(i64, i64)> {
    if records.is_empty() || records.len() > APPEND_RECORDS_MAX {
        return Err(PgJournalError::Invalid(format!(
            "append of {} records (1..={APPEND_RECORDS_MAX})",
            records.len()
        )));
    }
    let mut total: usize = 0;
    for (i, record) in records.iter().enumerate() {
        if record.len() > RECORD_BYTES_MAX {
            return Err(PgJournalError::Invalid(format!(
                "record {i} of {} bytes (at most {RECORD_BYTES_MAX})",
                record.len()
            )));
        }
        total += record.len();
    }
    if total > APPEND_BYTES_MAX {
        return Err(PgJournalError::Invalid(format!("append of {total} bytes (at most {APPEND_BYTES_MAX})")));
    }
    if first_seq == 0 {
        return Err(PgJournalError::Invalid("sequence numbers start at 1".into()));
    }
    let first = to_i64("first_seq", first_seq)?;
    let last = first
        .checked_add(records.len() as i64 - 1)
        .ok_or_else(|| PgJournalError::Invalid(format!("seq {first_seq} + {} overflows", records.len())))?;
    Ok((first, last))
}

fn to_i64(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| PgJournalError::Invalid(format!("{what} {value} is over {}", i64::MAX)))
}

fn from_i64(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| PgJournalError::Corrupt(format!("{what} is {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds other code and the docs rely on (their relations are checked at compile
    /// time above).
    #[test]
    fn limits_are_the_documented_values() {
        assert_eq!(RECORD_BYTES_MAX, 64 << 20);
        assert_eq!(APPEND_BYTES_MAX, 64 << 20);
        assert_eq!(READ_PAGE_BYTES_MAX, 64 << 20);
        assert_eq!(READ_PAGE_RECORDS_MAX, 1_000);
        assert_eq!(APPEND_RECORDS_MAX, 1_000);
        assert_eq!(SNAPSHOT_BYTES_MAX, 256 << 20);
        assert_eq!(CALL_TIMEOUT_MS, 10_000);
        assert_eq!(PgJournalOptions::default().call_timeout_ms, CALL_TIMEOUT_MS);
    }

    #[test]
    fn appends_out_of_bounds_are_refused_before_the_database() {
        let big = vec![0u8; RECORD_BYTES_MAX + 1];
        let max = vec![0u8; RECORD_BYTES_MAX];
        assert!(matches!(check_append(1, &[&big]), Err(PgJournalError::Invalid(_))));
        assert_eq!(check_append(1, &[&max]), Ok((1, 1)));
        assert!(matches!(check_append(1, &[&max, b"x"]), Err(PgJournalError::Invalid(_))));
        assert!(matches!(check_append(1, &[]), Err(PgJournalError::Invalid(_))));
        let many: Vec<&[u8]> = vec![b"r"; APPEND_RECORDS_MAX + 1];
        assert!(matches!(check_append(1, &many), Err(PgJournalError::Invalid(_))));
        assert_eq!(check_append(7, &many[..APPEND_RECORDS_MAX]), Ok((7, 7 + APPEND_RECORDS_MAX as i64 - 1)));
        assert!(matches!(check_append(0, &[b"r"]), Err(PgJournalError::Invalid(_))));
        assert!(matches!(check_append(u64::MAX, &[b"r"]), Err(PgJournalError::Invalid(_))));
        assert!(matches!(check_append(i64::MAX as u64, &[b"r", b"s"]), Err(PgJournalError::Invalid(_))));
    }

    #[test]
    fn holders_and_ttls_are_bounded() {
        assert!(check_holder("").is_err());
        assert!(check_holder(&"n".repeat(HOLDER_BYTES_MAX + 1)).is_err());
        assert!(check_holder(&"n".repeat(HOLDER_BYTES_MAX)).is_ok());
        assert!(check_ttl(0).is_err());
        assert!(check_ttl(LEASE_TTL_MS_MAX + 1).is_err());
        assert_eq!(check_ttl(LEASE_TTL_MS_MAX), Ok(LEASE_TTL_MS_MAX as i64));
    }

    #[test]
    fn negative_stored_numbers_are_corrupt() {
        assert!(matches!(from_i64("seq", -1), Err(PgJournalError::Corrupt(_))));
        assert_eq!(from_i64("seq", 5), Ok(5));
        assert!(matches!(to_i64("seq", u64::MAX), Err(PgJournalError::Invalid(_))));
    }
}
