//! The journal of record in PostgreSQL (`puente serve --journal-url`): the ledger's
//! [`RecordStore`] over `puente-journal-pg`, holding this node's lease.

use std::sync::{Arc, Mutex};

use puente_journal_pg::{Lease, PgJournal, PgJournalError, PgJournalOptions};
use puente_ledger::replica::{
    LeaderInfo, RecordStore, Records, STORE_SNAPSHOTS_KEPT, StoreError, StoreFuture, StoredSnapshot,
};

/// Default lease: a standby takes over at most this long after the leader stopped renewing.
pub const LEASE_MS_DEFAULT: u64 = 3_000;
/// Shortest bound on one call to the store (see `PgRecordStore::connect`).
pub const CALL_TIMEOUT_MS_MIN: u64 = 5_000;
/// How long a start keeps trying to reach the store before it gives up.
pub const CONNECT_WAIT_MS: u64 = 30_000;
/// Shortest and longest lease accepted.
pub const LEASE_MS_MIN: u64 = 300;
pub const LEASE_MS_MAX: u64 = 60_000;

/// How a node joins the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `postgres://…` (never logged with its password).
    pub url: String,
    /// This node's name in the lease (unique per node) [default: the advertised address].
    pub node: Option<String>,
    /// The address clients reach this node at (given to clients that wrote to a standby)
    /// [default: the address the server bound].
    pub advertise: Option<String>,
    pub lease_ms: u64,
}

/// The store. Its calls run on the runtime that connected it (the server's), whatever thread
/// awaits them: the ledger's writer has a runtime of its own without I/O, and the
/// connection must make progress, and reconnect, apart from it.
#[derive(Debug)]
pub struct PgRecordStore {
    journal: Arc<PgJournal>,
    runtime: tokio::runtime::Handle,
    node: String,
    advertise: String,
    lease_ms: u64,
    lease: Mutex<Option<Lease>>,
}

impl PgRecordStore {
    /// Connects (and makes the schema when missing); `bound` is the address the server listens
    /// on (the default advertised address).
    pub async fn connect(config: &ReplicationConfig, bound: &str) -> Result<PgRecordStore, String> {
        let advertise = config.advertise.clone().unwrap_or_else(|| bound.to_owned());
        let node = config.node.clone().unwrap_or_else(|| advertise.clone());
        if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&config.lease_ms) {
            return Err(format!(
                "lease of {} ms: between {LEASE_MS_MIN} and {LEASE_MS_MAX}",
                config.lease_ms
            ));
        }
        // A call is bounded by twice the lease (at least CALL_TIMEOUT_MS_MIN): an append is one
        // statement (no transaction left open between round trips), and a call that outlives
        // the lease only finds itself fenced.
        let call_timeout_ms = config.lease_ms.saturating_mul(2).max(CALL_TIMEOUT_MS_MIN);
        let options = PgJournalOptions { call_timeout_ms };
        // At start the database may be busy or still starting: try again, within a bound.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(CONNECT_WAIT_MS);
        let mut pause = std::time::Duration::from_millis(100);
        let journal = loop {
            match PgJournal::connect_with(&config.url, options.clone()).await {
                Ok(journal) => break journal,
                Err(error) if std::time::Instant::now() + pause < deadline => {
                    tracing::warn!(%error, "cannot reach the journal of record yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(error) => return Err(error.to_string()),
            }
        };
        tracing::info!(url = journal.url_redacted(), %node, %advertise, "journal of record: PostgreSQL");
        Ok(PgRecordStore {
            journal: Arc::new(journal),
            runtime: tokio::runtime::Handle::current(),
            node,
            advertise,
            lease_ms: config.lease_ms,
            lease: Mutex::new(None),
        })
    }

    /// Runs `call` on the store's runtime.
    async fn on_runtime<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<PgJournal>) -> Fut,
        Fut: std::future::Future<Output = Result<T, PgJournalError>> + Send + 'static,
    {
        self.runtime
            .spawn(call(self.journal.clone()))
            .await
            .map_err(|e| StoreError::Unreachable(format!("the journal call did not finish: {e}")))?
            .map_err(store_error)
    }

    fn lease(&self) -> Option<Lease> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_lease(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }
}

fn store_error(error: PgJournalError) -> StoreError {
    match error {
        PgJournalError::Fenced { .. } => StoreError::Fenced(error.to_string()),
        PgJournalError::Db(_) => StoreError::Unreachable(error.to_string()),
        PgJournalError::Corrupt(_) | PgJournalError::Invalid(_) | PgJournalError::SchemaTooNew { .. } => {
            StoreError::Corrupt(error.to_string())
        }
    }
}

impl RecordStore for PgRecordStore {
    fn node(&self) -> &str {
        &self.node
    }

    fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    fn try_lead(&self) -> StoreFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move {
            let lease = self
                .journal
                .try_acquire(&self.node, &self.advertise, self.lease_ms)
                .await
                .map_err(store_error)?;
            let last_seq = lease.as_ref().map(|l| l.last_seq);
            if lease.is_some() {
                self.set_lease(lease);
            }
            Ok(last_seq)
        })
    }

    fn renew(&self) -> StoreFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let Some(lease) = self.lease() else { return Ok(false) };
            let lease_ms = self.lease_ms;
            let renewed = self.on_runtime(move |j| async move { j.renew(&lease, lease_ms).await }).await?;
            if !renewed {
                self.set_lease(None);
            }
            Ok(renewed)
        })
    }

    fn step_down(&self) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let Some(lease) = self.lease() else { return Ok(()) };
            self.set_lease(None);
            self.on_runtime(move |j| async move { j.release(&lease).await }).await?;
            Ok(())
        })
    }

    fn append<'a>(&'a self, seq: u64, record: &'a [u8]) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let Some(lease) = self.lease() else {
                return Err(StoreError::Fenced("this node holds no lease".into()));
            };
            let record = record.to_vec();
            let appended =
                self.on_runtime(move |j| async move { j.append(&lease, seq, &record).await }).await;
            if matches!(appended, Err(StoreError::Fenced(_))) {
                self.set_lease(None);
            }
            appended
        })
    }

    fn read_after(&self, after_seq: u64, limit: usize) -> StoreFuture<'_, Result<Records, StoreError>> {
        Box::pin(self.on_runtime(move |j| async move { j.read_after(after_seq, limit).await }))
    }

    fn put_snapshot<'a>(&'a self, seq: u64, body: &'a [u8]) -> StoreFuture<'a, Result<(), StoreError>> {
        let body = body.to_vec();
        Box::pin(
            self.on_runtime(move |j| async move { j.put_snapshot(seq, &body, STORE_SNAPSHOTS_KEPT).await }),
        )
    }

    fn latest_snapshot(&self) -> StoreFuture<'_, Result<Option<StoredSnapshot>, StoreError>> {
        Box::pin(self.on_runtime(|j| async move { j.latest_snapshot().await }))
    }

    fn leader(&self) -> StoreFuture<'_, Result<Option<LeaderInfo>, StoreError>> {
        Box::pin(async move {
            let leader = self.on_runtime(|j| async move { j.leader().await }).await?;
            Ok(leader.filter(|l| !l.expired).map(|l| LeaderInfo {
                node: l.holder,
                address: l.address,
                epoch: l.epoch,
            }))
        })
    }
}
