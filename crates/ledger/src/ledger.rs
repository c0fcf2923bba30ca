//! The durable ledger: recovery at open, one writer thread with group commit, reads from the
//! store. See ARCHITECTURE.md ("Durability", "Write path").

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use puente_money::CurrencyTable;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::LedgerError;
use crate::engine::holders::{HolderRequest, HolderResult};
use crate::engine::identity::{Credentials, IdentityRequest, IdentityResult};
use crate::engine::settlement::{SettlementRequest, SettlementResult};
use crate::engine::{Engine, Entry, Output, Prior, TransferLookup};
use crate::journal::{ChainHash, Journal, JournalEntry};
use crate::queue::FairQueue;
use crate::store::{SledStore, Store};
use crate::types::*;

/// Most events (accounts + transfers) in one group commit.
pub const GROUP_EVENTS_MAX: usize = 65_536;
/// Longest the idle writer sleeps before looking at the clock again (expiry is exact anyway:
/// it wakes at the next expiry).
const IDLE_WAKE_MAX: Duration = Duration::from_secs(3_600);
/// How many committed groups the live feed buffers for slow subscribers.
pub const FEED_BUFFER_GROUPS: usize = 1_024;

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub data_dir: PathBuf,
    pub currencies: CurrencyTable,
    /// Delete the sled index and rebuild it from the journal at open.
    pub rebuild_index: bool,
}

impl LedgerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> LedgerConfig {
        LedgerConfig { data_dir: data_dir.into(), currencies: CurrencyTable::default(), rebuild_index: false }
    }
}

enum Command {
    CreateAccounts {
        actor: Actor,
        batch: Vec<NewAccount>,
        reply: oneshot::Sender<Result<Vec<AccountOutcome>, LedgerError>>,
    },
    CreateTransfers {
        actor: Actor,
        batch: Vec<Transfer>,
        reply: oneshot::Sender<Result<Vec<TransferOutcome>, LedgerError>>,
    },
    CloseAccount {
        actor: Actor,
        id: AccountId,
        reply: oneshot::Sender<Result<AccountOutcome, LedgerError>>,
    },
    /// Settlement profiles and windows (see `engine::settlement`): reads are answered from the
    /// engine's state, changes are journaled like transfers.
    Settlement {
        request: Box<SettlementRequest>,
        reply: oneshot::Sender<Result<SettlementResult, LedgerError>>,
    },
    /// Participants, keys and certificates (see `engine::identity`).
    Identity {
        request: Box<IdentityRequest>,
        reply: oneshot::Sender<Result<IdentityResult, LedgerError>>,
    },
    /// Account holders and the KYC policy (see `engine::holders`).
    Holder {
        request: Box<HolderRequest>,
        reply: oneshot::Sender<Result<HolderResult, LedgerError>>,
    },
}

impl Command {
    /// The lane it waits in: the submitting participant (see `queue`). Settlement, identity
    /// and holder commands come from operators and the server itself: one lane of their own.
    fn lane(&self) -> &str {
        match self {
            Command::CreateAccounts { actor, .. }
            | Command::CreateTransfers { actor, .. }
            | Command::CloseAccount { actor, .. } => actor.scope(),
            Command::Settlement { .. } | Command::Identity { .. } | Command::Holder { .. } => "",
        }
    }

    fn events(&self) -> usize {
        match self {
            Command::CreateAccounts { batch, .. } => batch.len(),
            Command::CreateTransfers { batch, .. } => batch.len(),
            Command::Settlement { .. }
            | Command::CloseAccount { .. }
            | Command::Identity { .. }
            | Command::Holder { .. } => 1,
        }
    }
}

/// Counters the writer keeps (exposed for status and benchmarks).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Sequence number of the last journal record made durable (acknowledged).
    pub committed_seq: AtomicU64,
    /// Sequence number of the last journal record the index has applied (reads see it).
    pub indexed_seq: AtomicU64,
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub last_group_events: AtomicU64,
    pub last_flush_us: AtomicU64,
    pub journal_bytes: AtomicU64,
    /// Told of every group commit (metrics); see [`Ledger::observe_commits`].
    pub commit_hook: CommitHook,
}

/// Told of every group commit by the writer thread, after the journal record is durable.
/// It runs on the writer thread: it must be cheap and must not block (a metrics histogram).
pub trait CommitObserver: Send + Sync {
    /// `events` journal ops in the group; `flush` the time to write and `fdatasync` it.
    fn committed(&self, events: u64, flush: Duration);
}

/// Holds at most one [`CommitObserver`].
#[derive(Default)]
pub struct CommitHook(std::sync::OnceLock<Arc<dyn CommitObserver>>);

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "CommitHook(set)" } else { "CommitHook(unset)" })
    }
}

/// What recovery found at open.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub journal_entries: u64,
    pub replayed_into_index: u64,
    pub truncated_tail_bytes: u64,
    /// The bad tail cut at this start, if any (a torn record, or a damaged one that may have
    /// been acknowledged), and where its bytes were saved.
    pub tail: Option<crate::journal::TailCut>,
    pub tail_evidence: Option<PathBuf>,
    pub accounts: usize,
    pub elapsed_ms: u64,
}

/// A handle to the ledger. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Ledger {
    queue: Arc<FairQueue<Command>>,
    /// Held by every handle: when the last one is dropped, the writer stops.
    _alive: mpsc::Sender<()>,
    store: Arc<SledStore>,
    feed: broadcast::Sender<Arc<Vec<TransferRecord>>>,
    healthy: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
    currencies: CurrencyTable,
    recovery: RecoveryReport,
    data_dir: PathBuf,
    /// The journal's chain head (sequence, hash of that record), set by the writer once each
    /// record is durable.
    chain_head: Arc<Mutex<(u64, ChainHash)>>,
    /// Live credentials, replaced by the writer after every commit that changes them.
    credentials: Arc<RwLock<Arc<Credentials>>>,
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Ledger {
    /// Opens the ledger: replays the journal, repairs the index, checks every invariant, and
    /// starts the writer. Refuses (with `LedgerError::Corrupt`) a store that fails a check.
    pub fn open(config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let started = Instant::now();
        std::fs::create_dir_all(&config.data_dir)?;
        let index_dir = config.data_dir.join("index");
        if config.rebuild_index && index_dir.exists() {
            tracing::warn!(dir = %index_dir.display(), "rebuilding the sled index from the journal");
            std::fs::remove_dir_all(&index_dir)?;
        }
        let mut store = SledStore::open(&index_dir)?;
        if !store.is_empty()? && store.index_version()? != crate::store::INDEX_VERSION {
            // The index is derived state: an older layout is rebuilt from the journal.
            tracing::warn!(
                dir = %index_dir.display(),
                found = store.index_version()?,
                current = crate::store::INDEX_VERSION,
                "the sled index has an older layout; rebuilding it from the journal"
            );
            drop(store);
            std::fs::remove_dir_all(&index_dir)?;
            store = SledStore::open(&index_dir)?;
        }
        store.mark_current_version()?;
        let applied_seq = store.applied_seq()?;
        let mut engine = Engine::new(config.currencies.clone());
        let mut out = Output::default();
        let mut replayed_into_index = 0;
        let (mut journal, stats) = Journal::open(&config.data_dir, |entry| {
            out.clear();
            let replay = catch_unwind(AssertUnwindSafe(|| {
                for op in entry.ops {
                    engine.apply(op, &mut out);
                }
            }));
            if replay.is_err() {
                return Err(LedgerError::Corrupt(format!(
                    "journal entry {} cannot be applied to the state before it",
                    entry.seq
                )));
            }
            if entry.seq > applied_seq {
                let accounts = touched(&engine, &mut out.touched_accounts);
                store.apply(entry.seq, &out, &accounts)?;
                replayed_into_index += 1;
            }
            engine.store_caught_up();
            Ok(())
        })?;
        if applied_seq > stats.last_seq
            && let Some(tail) = stats.tail.as_ref().filter(|t| t.kind == crate::journal::TailKind::Damaged)
        {
            return Err(LedgerError::Corrupt(format!(
                "the journal ends in {tail}, and the index shows entry {applied_seq} was applied, so it WAS \
                 acknowledged: starting would lose acknowledged writes. Restore the journal from a backup \
                 or replica. Nothing was changed."
            )));
        }
        if applied_seq > stats.last_seq {
            return Err(LedgerError::Corrupt(format!(
                "the index has applied journal entry {applied_seq} but the journal ends at {}; \
                 the journal lost acknowledged data or belongs to another store",
                stats.last_seq
            )));
        }
        engine
            .check_invariants()
            .map_err(|e| LedgerError::Corrupt(format!("invariant broken after replay: {e}")))?;
        verify_index(&engine, &store)?;
        // Only now, with every check passed, is the bad tail (if any) cut: a refused start
        // leaves the journal exactly as it found it.
        let tail_evidence = journal.cut_tail()?;
        if let Some(tail) = &stats.tail {
            let evidence = tail_evidence.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            match tail.kind {
                crate::journal::TailKind::Torn => {
                    tracing::warn!(%tail, %evidence, "journal: cut a torn, never-acknowledged record off the end")
                }
                crate::journal::TailKind::Damaged => tracing::error!(
                    %tail,
                    %evidence,
                    "journal: the LAST RECORD IS DAMAGED and was cut; it may have held acknowledged writes, \
                     which are now lost: restore them from a backup or a replica, and check the disk"
                ),
            }
        }
        let recovery = RecoveryReport {
            journal_entries: stats.entries,
            replayed_into_index,
            truncated_tail_bytes: stats.truncated_tail_bytes,
            tail: stats.tail.clone(),
            tail_evidence,
            accounts: engine.accounts().count(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(?recovery, "ledger recovered");

        let queue = Arc::new(FairQueue::default());
        let (alive, handles_gone) = mpsc::channel(1);
        let (feed, _) = broadcast::channel(FEED_BUFFER_GROUPS);
        let store = Arc::new(store);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer_stats = Arc::new(WriterStats::default());
        writer_stats.journal_bytes.store(journal.len_bytes(), Ordering::Relaxed);
        writer_stats.committed_seq.store(stats.last_seq, Ordering::Relaxed);
        writer_stats.indexed_seq.store(stats.last_seq, Ordering::Relaxed);
        let chain_head = Arc::new(Mutex::new(journal.chain_head()));
        let credentials = Arc::new(RwLock::new(Arc::new(engine.identity().credentials())));
        let writer = Writer {
            credentials: credentials.clone(),
            engine,
            journal,
            store: store.clone(),
            seq: stats.last_seq,
            feed: feed.clone(),
            healthy: healthy.clone(),
            stats: writer_stats.clone(),
            chain_head: chain_head.clone(),
        };
        let writer_queue = queue.clone();
        std::thread::Builder::new()
            .name("puente-writer".into())
            .spawn(move || writer.run(writer_queue, handles_gone))?;
        Ok(Ledger {
            queue,
            _alive: alive,
            store,
            feed,
            healthy,
            stats: writer_stats,
            currencies: config.currencies,
            recovery,
            data_dir: config.data_dir,
            chain_head,
            credentials,
        })
    }

    /// The journal's chain head: the sequence number of the last durable record and its
    /// SHA-256 chain hash (0 and all zeros for an empty journal). It commits to every record
    /// up to it; record it outside the data directory (e.g. in a settlement report) so that a
    /// later rewrite of the journal can be detected (see `journal`).
    pub fn chain_head(&self) -> (u64, ChainHash) {
        *self.chain_head.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn currencies(&self) -> &CurrencyTable {
        &self.currencies
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// How far the index is behind the journal: (last durable record, last indexed record).
    pub fn index_watermarks(&self) -> (u64, u64) {
        (self.stats.committed_seq.load(Ordering::Acquire), self.stats.indexed_seq.load(Ordering::Acquire))
    }

    /// Registers the observer told of every group commit. Only the first one is kept;
    /// returns false if one was already set.
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) -> bool {
        self.stats.commit_hook.0.set(observer).is_ok()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// False once a durable write failed: the process must be restarted (recovery replays
    /// the journal). Health reports NOT_SERVING.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn size_on_disk(&self) -> u64 {
        self.store.size_on_disk() + self.stats.journal_bytes.load(Ordering::Relaxed)
    }

    pub async fn create_accounts(
        &self,
        actor: Actor,
        batch: Vec<NewAccount>,
    ) -> Result<Vec<AccountOutcome>, LedgerError> {
        check_batch(batch.len())?;
        let (reply, response) = oneshot::channel();
        self.send(Command::CreateAccounts { actor, batch, reply }).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    pub async fn create_transfers(
        &self,
        actor: Actor,
        batch: Vec<Transfer>,
    ) -> Result<Vec<TransferOutcome>, LedgerError> {
        check_batch(batch.len())?;
        let (reply, response) = oneshot::channel();
        self.send(Command::CreateTransfers { actor, batch, reply }).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    /// A settlement command or read, run by the writer (so that it sees, and changes, exactly
    /// the committed state). The answer comes after the ops it made are durable.
    pub async fn settlement(&self, request: SettlementRequest) -> Result<SettlementResult, LedgerError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Settlement { request: Box::new(request), reply }).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    /// A participant-registry command or read, run by the writer like `settlement`.
    pub async fn identity(&self, request: IdentityRequest) -> Result<IdentityResult, LedgerError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Identity { request: Box::new(request), reply }).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    /// An account-holder command or read, run by the writer like `settlement`.
    pub async fn holders(&self, request: HolderRequest) -> Result<HolderResult, LedgerError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Holder { request: Box::new(request), reply }).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    /// The credentials in force (a snapshot; cheap to call on every request).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    async fn send(&self, command: Command) -> Result<(), LedgerError> {
        if !self.is_healthy() {
            return Err(LedgerError::Unavailable("a durable write failed; restart the server".into()));
        }
        let lane = command.lane().to_owned();
        let events = command.events();
        self.queue
            .push(&lane, events, command)
            .await
            .map_err(|_| LedgerError::Unavailable("the writer stopped".into()))
    }

    /// Closes an account (see `Engine::close_account`).
    pub async fn close_account(&self, actor: Actor, id: AccountId) -> Result<AccountOutcome, LedgerError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::CloseAccount { actor, id, reply }).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    pub fn get_account(&self, id: AccountId) -> Result<Option<Account>, LedgerError> {
        self.store.get_account(id)
    }

    pub fn list_accounts(
        &self,
        participant: Option<&str>,
        after_id: AccountId,
        limit: usize,
    ) -> Result<Vec<Account>, LedgerError> {
        self.store.list_accounts(participant, after_id, limit)
    }

    /// What `scope` sees under `id`: its own remembered failure, else the committed transfer
    /// (another participant's failures under the same id are not its business).
    pub fn get_transfer(&self, id: TransferId, scope: &str) -> Result<Option<Prior>, LedgerError> {
        self.store.get_prior(id, scope)
    }

    /// A committed transfer.
    pub fn get_committed(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        self.store.get_committed(id)
    }

    pub fn pending_state(&self, id: TransferId) -> Result<Option<PendingState>, LedgerError> {
        self.store.pending_state(id)
    }

    pub fn get_transfer_at(&self, timestamp_ns: u64) -> Result<Option<TransferRecord>, LedgerError> {
        self.store.get_transfer_at(timestamp_ns)
    }

    pub fn account_entries(
        &self,
        account_id: AccountId,
        from_ns: u64,
        to_ns: u64,
        descending: bool,
        cursor_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError> {
        self.store.account_entries(account_id, from_ns, to_ns, descending, cursor_ns, limit)
    }

    pub fn transfers_after(&self, after_ns: u64, limit: usize) -> Result<Vec<TransferRecord>, LedgerError> {
        self.store.transfers_after(after_ns, limit)
    }

    /// The transfers touching `participant`'s accounts after a position (its feed).
    pub fn participant_transfers_after(
        &self,
        participant: &str,
        after_ns: u64,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, LedgerError> {
        self.store.participant_transfers_after(participant, after_ns, limit)
    }

    /// Live feed of committed transfers, one message per group commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<TransferRecord>>> {
        self.feed.subscribe()
    }

    /// How many live feed subscriptions are open (each open StreamTransfers holds one).
    pub fn feed_subscribers(&self) -> usize {
        self.feed.receiver_count()
    }
}

fn check_batch(len: usize) -> Result<(), LedgerError> {
    if len == 0 {
        return Err(LedgerError::InvalidBatch("a batch needs at least one event".into()));
    }
    if len > BATCH_EVENTS_MAX {
        return Err(LedgerError::InvalidBatch(format!(
            "a batch holds at most {BATCH_EVENTS_MAX} events, got {len}"
        )));
    }
    Ok(())
}

fn touched(engine: &Engine, ids: &mut Vec<AccountId>) -> Vec<Account> {
    ids.sort_unstable();
    ids.dedup();
    ids.iter().filter_map(|id| engine.account(*id).cloned()).collect()
}

/// Every account in the index equals the account the journal produces.
fn verify_index(engine: &Engine, store: &SledStore) -> Result<(), LedgerError> {
    let stored = store.all_accounts()?;
    let expected = engine.accounts().count();
    if stored.len() != expected {
        return Err(LedgerError::Corrupt(format!(
            "the index holds {} accounts but the journal has {expected}; \
             restart with --rebuild-index to rebuild it from the journal",
            stored.len()
        )));
    }
    for account in stored {
        if engine.account(account.id) != Some(&account) {
            return Err(LedgerError::Corrupt(format!(
                "account {} in the index differs from the journal (balances do not equal the sum of \
                 its entries); restart with --rebuild-index to rebuild it from the journal",
                account.id
            )));
        }
    }
    Ok(())
}

/// From this many transfers in one group, the writer looks their ids up in the store on two
/// threads before the engine runs (the idempotency check is two sled reads per new id).
const PREFETCH_TRANSFERS_MIN: usize = 1_024;

/// The store as the engine sees it during one commit, with the group's transfer ids looked up
/// in advance. Only the writer writes the store, and it does so after the engine ran, so these
/// answers are exactly what the engine would read; anything else (pending ids of post/void)
/// is read from the store as before. The engine consults its own overlay of transfers decided
/// since the store last caught up before asking this.
struct Prefetched<'a> {
    store: &'a SledStore,
    /// id → (the committed transfer, the failure of the submitter's scope), as the store had
    /// them before the group ran.
    found: HashMap<TransferId, Looked>,
}

/// What the store held for an id: the committed transfer, and the failure that binds the scope
/// it was looked up for (with that scope).
struct Looked {
    committed: Option<TransferRecord>,
    scope: String,
    refused: Option<RefusedTransfer>,
}

impl<'a> Prefetched<'a> {
    fn new(store: &'a SledStore, group: &[Command]) -> Prefetched<'a> {
        let ids: Vec<(TransferId, &str)> = group
            .iter()
            .filter_map(|command| match command {
                Command::CreateTransfers { batch, actor, .. } => {
                    Some(batch.iter().map(move |t| (t.id, actor.scope())))
                }
                _ => None,
            })
            .flatten()
            .collect();
        let mut found = HashMap::new();
        if ids.len() >= PREFETCH_TRANSFERS_MIN {
            let lookup = |ids: &[(TransferId, &str)]| -> Result<Vec<(TransferId, Looked)>, LedgerError> {
                ids.iter()
                    .map(|(id, scope)| {
                        let looked = Looked {
                            committed: store.get_committed(*id)?,
                            scope: (*scope).to_owned(),
                            refused: store.get_refused(*id, scope)?,
                        };
                        Ok((*id, looked))
                    })
                    .collect()
            };
            let (left, right) = ids.split_at(ids.len() / 2);
            let looked_up = std::thread::scope(|scope| {
                let right = std::thread::Builder::new()
                    .name("puente-prefetch".into())
                    .spawn_scoped(scope, || lookup(right))
                    .ok();
                let left = lookup(left);
                let right = right.and_then(|handle| handle.join().ok());
                (left, right)
            });
            // On any failure nothing is prefetched: the engine reads the store itself and
            // meets the same error where it did before.
            if let (Ok(left), Some(Ok(right))) = looked_up {
                found.reserve(ids.len());
                found.extend(left);
                found.extend(right);
            }
        }
        Prefetched { store, found }
    }
}

impl TransferLookup for Prefetched<'_> {
    fn committed(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        match self.found.get(&id) {
            Some(looked) => Ok(looked.committed.clone()),
            None => self.store.get_committed(id),
        }
    }

    fn refused(&self, id: TransferId, scope: &str) -> Result<Option<RefusedTransfer>, LedgerError> {
        // Prefetched for the scope that submitted this id in the group; another scope (the same
        // id sent by two participants in one group) reads the store.
        match self.found.get(&id) {
            Some(looked) if looked.scope == scope => Ok(looked.refused.clone()),
            _ => self.store.get_refused(id, scope),
        }
    }
}

struct Writer {
    engine: Engine,
    journal: Journal,
    store: Arc<SledStore>,
    seq: u64,
    feed: broadcast::Sender<Arc<Vec<TransferRecord>>>,
    healthy: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
    chain_head: Arc<Mutex<(u64, ChainHash)>>,
    credentials: Arc<RwLock<Arc<Credentials>>>,
}

enum Reply {
    Close(oneshot::Sender<Result<AccountOutcome, LedgerError>>, Result<AccountOutcome, LedgerError>),
    Accounts(
        oneshot::Sender<Result<Vec<AccountOutcome>, LedgerError>>,
        Result<Vec<AccountOutcome>, LedgerError>,
    ),
    Transfers(
        oneshot::Sender<Result<Vec<TransferOutcome>, LedgerError>>,
        Result<Vec<TransferOutcome>, LedgerError>,
    ),
    Settlement(oneshot::Sender<Result<SettlementResult, LedgerError>>, Result<SettlementResult, LedgerError>),
    Identity(oneshot::Sender<Result<IdentityResult, LedgerError>>, IdentityResult),
    Holder(oneshot::Sender<Result<HolderResult, LedgerError>>, HolderResult),
}

impl Writer {
    fn run(mut self, queue: Arc<FairQueue<Command>>, mut handles_gone: mpsc::Receiver<()>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start the writer");
                self.healthy.store(false, Ordering::Relaxed);
                queue.close();
                return;
            }
        };
        let mut out = Output::default();
        let mut admitted = Vec::new();
        let mut group = Vec::new();
        let mut rooms = Vec::new();
        runtime.block_on(async {
            loop {
                if queue.is_empty() {
                    // Nothing queued: wait for a command, the next expiry, or the last handle.
                    let wait = self
                        .engine
                        .next_expiry_ns()
                        .map(|at| Duration::from_nanos(at.saturating_sub(now_ns())))
                        .unwrap_or(IDLE_WAKE_MAX);
                    tokio::select! {
                        _ = queue.ready() => {}
                        _ = tokio::time::sleep(wait) => {}
                        gone = handles_gone.recv() => {
                            if gone.is_none() && queue.is_empty() {
                                break; // every handle dropped
                            }
                        }
                    }
                }
                // One group: up to GROUP_EVENTS_MAX events, fairly across participants.
                queue.take(GROUP_EVENTS_MAX, &mut admitted);
                for item in admitted.drain(..) {
                    let (command, room) = item.into_parts();
                    group.push(command);
                    rooms.push(room);
                }
                self.commit(&mut group, &mut out);
                // Their room in the queue is given back once they are answered.
                rooms.clear();
            }
        });
        queue.close();
        tracing::info!("writer stopped");
    }

    fn commit(&mut self, group: &mut Vec<Command>, out: &mut Output) {
        let now = now_ns();
        out.clear();
        if !self.healthy.load(Ordering::Relaxed) {
            for command in group.drain(..) {
                fail_command(
                    command,
                    LedgerError::Unavailable("a durable write failed; restart the server".into()),
                );
            }
            return;
        }
        self.engine.expire_due(now, out);
        let lookup = Prefetched::new(self.store.as_ref(), group);
        let mut replies = Vec::with_capacity(group.len());
        for command in group.drain(..) {
            match command {
                Command::CreateAccounts { actor, batch, reply } => {
                    let outcomes = self.engine.create_accounts(&actor, batch, now, out);
                    replies.push(Reply::Accounts(reply, Ok(outcomes)));
                }
                Command::CreateTransfers { actor, batch, reply } => {
                    let outcomes = self.engine.create_transfers(&lookup, &actor, &batch, now, out);
                    replies.push(Reply::Transfers(reply, outcomes));
                }
                Command::CloseAccount { actor, id, reply } => {
                    let outcome = self.engine.close_account(&actor, id, now, out);
                    replies.push(Reply::Close(reply, Ok(outcome)));
                }
                Command::Settlement { request, reply } => {
                    let result = self.engine.settlement_command(self.store.as_ref(), *request, now, out);
                    replies.push(Reply::Settlement(reply, result));
                }
                Command::Identity { request, reply } => {
                    let result = self.engine.identity_command(*request, now, out);
                    replies.push(Reply::Identity(reply, result));
                }
                Command::Holder { request, reply } => {
                    let result = self.engine.holder_command(*request, now, out);
                    replies.push(Reply::Holder(reply, result));
                }
            }
        }
        if !out.is_empty() {
            debug_assert!(self.engine.check_invariants().is_ok());
            if let Err(error) = self.persist(out) {
                // The in-memory state is ahead of what is durable: stop taking writes. Restart
                // recovers exactly what the journal holds.
                tracing::error!(%error, "durable write failed; refusing further writes");
                self.healthy.store(false, Ordering::Relaxed);
                for reply in replies {
                    let error = LedgerError::Unavailable(format!("durable write failed: {error}"));
                    match reply {
                        Reply::Accounts(tx, _) => drop(tx.send(Err(error))),
                        Reply::Transfers(tx, _) => drop(tx.send(Err(error))),
                        Reply::Settlement(tx, _) => drop(tx.send(Err(error))),
                        Reply::Close(tx, _) => drop(tx.send(Err(error))),
                        Reply::Identity(tx, _) => drop(tx.send(Err(error))),
                        Reply::Holder(tx, _) => drop(tx.send(Err(error))),
                    }
                }
                return;
            }
        }
        for reply in replies {
            match reply {
                Reply::Accounts(tx, result) => drop(tx.send(result)),
                Reply::Transfers(tx, result) => drop(tx.send(result)),
                Reply::Settlement(tx, result) => drop(tx.send(result)),
                Reply::Close(tx, result) => drop(tx.send(result)),
                Reply::Identity(tx, result) => drop(tx.send(Ok(result))),
                Reply::Holder(tx, result) => drop(tx.send(Ok(result))),
            }
        }
    }

    fn persist(&mut self, out: &mut Output) -> Result<(), LedgerError> {
        let seq = self.seq + 1;
        let entry = JournalEntry { seq, ops: std::mem::take(&mut out.ops) };
        let flush_started = Instant::now();
        self.journal.append(&entry)?;
        let flush_elapsed = flush_started.elapsed();
        self.seq = seq;
        self.stats.committed_seq.store(seq, Ordering::Release);
        *self.chain_head.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = self.journal.chain_head();
        self.stats.last_flush_us.store(flush_started.elapsed().as_micros() as u64, Ordering::Relaxed);
        out.ops = entry.ops;
        let accounts = touched(&self.engine, &mut out.touched_accounts);
        self.store.apply(seq, out, &accounts)?;
        self.stats.indexed_seq.store(seq, Ordering::Release);
        self.engine.store_caught_up();
        if out.credentials_changed {
            let credentials = Arc::new(self.engine.identity().credentials());
            *self.credentials.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = credentials;
        }
        // Every balance change, the ledger's own expiries and automatic posts included.
        let committed: Vec<TransferRecord> = std::mem::take(&mut out.records);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.events.fetch_add(out.ops.len() as u64, Ordering::Relaxed);
        self.stats.last_group_events.store(out.ops.len() as u64, Ordering::Relaxed);
        self.stats.journal_bytes.store(self.journal.len_bytes(), Ordering::Relaxed);
        if let Some(observer) = self.stats.commit_hook.0.get() {
            observer.committed(out.ops.len() as u64, flush_elapsed);
        }
        tracing::debug!(
            seq,
            ops = out.ops.len(),
            flush_us = flush_started.elapsed().as_micros() as u64,
            "committed"
        );
        if !committed.is_empty() {
            // No subscribers is fine.
            let _ = self.feed.send(Arc::new(committed));
        }
        Ok(())
    }
}

fn fail_command(command: Command, error: LedgerError) {
    match command {
        Command::CreateAccounts { reply, .. } => drop(reply.send(Err(error))),
        Command::CreateTransfers { reply, .. } => drop(reply.send(Err(error))),
        Command::Settlement { reply, .. } => drop(reply.send(Err(error))),
        Command::CloseAccount { reply, .. } => drop(reply.send(Err(error))),
        Command::Identity { reply, .. } => drop(reply.send(Err(error))),
        Command::Holder { reply, .. } => drop(reply.send(Err(error))),
    }
}
