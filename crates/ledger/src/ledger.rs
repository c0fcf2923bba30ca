//! The durable ledger: recovery at open, one writer thread with group commit (prefetch, then
//! commit, then one `fdatasync`'d journal record), one indexer thread off the write path,
//! snapshots, and reads. See ARCHITECTURE.md ("Storage").
//!
//! Size: the ledger handle, its recovery at open, and the writer, indexer, snapshot and scrub
//! threads, which share `Shared`; the engine, journal, index and snapshots live in their own
//! modules.

use crate::hashing::HashMap;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use puente_money::{CurrencyCode, CurrencyTable};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::LedgerError;
use crate::engine::identity::Credentials;
use crate::engine::{Call, Engine, EngineState, Entry, Op, Output, Prefetched, Prior, Wanted};
use crate::index::{CutTaken, Index, IndexBatch, Owners};
use crate::journal::{self, ChainHash, Journal, JournalReader, Location, ResumePoint};
use crate::queue::FairQueue;
use crate::replica::{RecordStore, Role, StoreError};
use crate::snapshot::{self, Snapshot};
use crate::types::*;

mod follow;
mod landing;
use follow::Appended;

pub use crate::limits::FEED_BUFFER_GROUPS;
pub use crate::limits::GROUP_EVENTS_MAX;
use crate::limits::IDLE_WAKE_MAX;
pub use crate::limits::INDEX_PERSIST_INTERVAL_MS;
pub use crate::limits::INDEX_PERSIST_RETRY_MS;
pub use crate::limits::INDEX_QUEUE_GROUPS;
pub use crate::limits::READ_WAIT_MAX_MS;
pub use crate::limits::SNAPSHOT_EVENTS;
pub use crate::limits::SNAPSHOT_INTERVAL_MS;

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub data_dir: PathBuf,
    pub currencies: CurrencyTable,
    /// Delete the index and rebuild it from the journal at open.
    pub rebuild_index: bool,
    /// A snapshot is taken once this many events were committed since the last one (default
    /// [`SNAPSHOT_EVENTS`]; tests lower it).
    pub snapshot_events: u64,
    /// The journal of record on other machines, with its lease (`replica`); `None`: the local
    /// journal is the record (the embedded default).
    pub record_store: Option<Arc<dyn RecordStore>>,
    /// Tests: called by the writer before each `fdatasync` of the journal; an error counts as
    /// a failed sync.
    #[doc(hidden)]
    pub sync_hook: Option<SyncHook>,
    /// Tests: called by the index persister before it writes each cut; an error counts as a
    /// failed persist.
    #[doc(hidden)]
    pub persist_hook: Option<SyncHook>,
}

/// See [`LedgerConfig::sync_hook`].
#[doc(hidden)]
#[derive(Clone)]
pub struct SyncHook(pub Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>);

impl std::fmt::Debug for SyncHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncHook")
    }
}

impl LedgerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> LedgerConfig {
        LedgerConfig {
            data_dir: data_dir.into(),
            currencies: CurrencyTable::default(),
            rebuild_index: false,
            snapshot_events: SNAPSHOT_EVENTS,
            record_store: None,
            sync_hook: None,
            persist_hook: None,
        }
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
    /// A call of a domain of the engine (settlement, participants, holders: `engine::call`):
    /// reads are answered from the engine's state, changes are journaled like transfers.
    Call(Box<dyn Job>),
}

impl Command {
    /// The lane it waits in: the submitting participant (see `queue`). Settlement, identity
    /// and holder commands come from operators and the server itself: one lane of their own.
    fn lane(&self) -> &str {
        match self {
            Command::CreateAccounts { actor, .. }
            | Command::CreateTransfers { actor, .. }
            | Command::CloseAccount { actor, .. } => actor.scope(),
            Command::Call(_) => "",
        }
    }

    fn events(&self) -> usize {
        match self {
            Command::CreateAccounts { batch, .. } => batch.len(),
            Command::CreateTransfers { batch, .. } => batch.len(),
            Command::Call(_) | Command::CloseAccount { .. } => 1,
        }
    }

    fn fail(self, error: LedgerError) {
        match self {
            Command::CreateAccounts { reply, .. } => drop(reply.send(Err(error))),
            Command::CreateTransfers { reply, .. } => drop(reply.send(Err(error))),
            Command::Call(job) => job.fail(error),
            Command::CloseAccount { reply, .. } => drop(reply.send(Err(error))),
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
    /// Snapshots written since start.
    pub snapshots: AtomicU64,
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
    /// Records in the journal (their sequence numbers run from 1 without gaps).
    pub journal_entries: u64,
    /// Of those, records the index had not persisted (indexed again).
    pub replayed_into_index: u64,
    /// Records applied to the engine after the snapshot it started from.
    pub replayed_into_state: u64,
    /// The snapshot the state was loaded from (its sequence number), if any.
    pub snapshot_seq: Option<u64>,
    pub truncated_tail_bytes: u64,
    /// The bad tail cut at this start, if any (a torn record, or a damaged one that may have
    /// been acknowledged), and where its bytes were saved.
    pub tail: Option<journal::TailCut>,
    pub tail_evidence: Option<PathBuf>,
    /// A `PUENTEJ2` journal was migrated to `PUENTEJ3` at this start (records converted).
    pub migrated_records: Option<u64>,
    pub accounts: usize,
    pub elapsed_ms: u64,
}

/// Accounts as readers see them: published by the writer after each commit, before replies.
#[derive(Default)]
struct AccountsView {
    by_id: BTreeMap<AccountId, Account>,
    by_participant: BTreeSet<(String, AccountId)>,
}

impl AccountsView {
    /// Takes the account as it stands after a group (the writer's copy, moved in).
    fn put(&mut self, account: Account) {
        match self.by_id.get_mut(&account.id) {
            Some(view) => *view = account,
            None => {
                self.by_participant.insert((account.participant.clone(), account.id));
                self.by_id.insert(account.id, account);
            }
        }
    }
}

struct Shared {
    index: Index,
    accounts: RwLock<AccountsView>,
    feed: broadcast::Sender<Arc<Vec<TransferRecord>>>,
    healthy: AtomicBool,
    stats: WriterStats,
    currencies: CurrencyTable,
    recovery: RecoveryReport,
    data_dir: PathBuf,
    /// The journal's chain head (sequence, hash of that record), set by the writer once each
    /// record is durable.
    chain_head: Mutex<(u64, ChainHash)>,
    /// Live credentials, replaced by the writer after every commit that changes them.
    credentials: RwLock<Arc<Credentials>>,
    /// Set by the writer when it has stopped (see [`Ledger::stopped`]).
    stopped: tokio::sync::watch::Sender<bool>,
    /// The check of the journal before the point this start resumed from (see
    /// [`Ledger::history_verified`]).
    history: tokio::sync::watch::Sender<History>,
    /// Leader, standby or single node (set by the writer).
    role: tokio::sync::watch::Sender<Role>,
    /// The journal of record elsewhere, if any (snapshots are also kept there for new nodes).
    record_store: Option<Arc<dyn RecordStore>>,
}

/// Where the check of the journal's older records stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum History {
    Checking,
    Verified,
    Broken(String),
}

impl Shared {
    fn accounts(&self) -> std::sync::RwLockReadGuard<'_, AccountsView> {
        self.accounts.read().unwrap_or_else(|p| p.into_inner())
    }

    fn currency_of(&self, account: AccountId) -> Option<CurrencyCode> {
        self.accounts().by_id.get(&account).map(|a| a.currency)
    }
}

struct SharedOwners<'a>(&'a Shared);

impl Owners for SharedOwners<'_> {
    fn owner(&self, account: AccountId) -> Option<String> {
        self.0.accounts().by_id.get(&account).map(|a| a.participant.clone())
    }
}

struct EngineOwners<'a>(&'a Engine);

impl Owners for EngineOwners<'_> {
    fn owner(&self, account: AccountId) -> Option<String> {
        self.0.account(account).map(|a| a.participant.clone())
    }
}

/// A handle to the ledger. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Ledger {
    queue: Arc<FairQueue<Command>>,
    /// Held by every handle: when the last one is dropped, the writer stops.
    _alive: mpsc::Sender<()>,
    shared: Arc<Shared>,
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Converts a `PUENTEJ2` journal (`data/journal.log`) to `PUENTEJ3` segments: every record
/// replayed through the engine (which completes what the old format did not record) and
/// written again, with the same sequence numbers; then the old file is kept, read-only, as
/// `journal.j2.log`. The rename is the commit point: a crash before it leaves the old journal
/// in force and the half-written segments are discarded at the next start.
fn migrate_legacy(config: &LedgerConfig) -> Result<Option<u64>, LedgerError> {
    let legacy = journal::legacy_path(&config.data_dir);
    if !legacy.exists() {
        return Ok(None);
    }
    let started = Instant::now();
    tracing::warn!(journal = %legacy.display(), "migrating a PUENTEJ2 journal to PUENTEJ3 segments");
    let segments = journal::segments_dir(&config.data_dir);
    if segments.exists() {
        std::fs::remove_dir_all(&segments)?;
    }
    let index_dir = config.data_dir.join("index");
    if index_dir.exists() {
        std::fs::remove_dir_all(&index_dir)?;
    }
    let snapshots = snapshot::snapshots_dir(&config.data_dir);
    if snapshots.exists() {
        std::fs::remove_dir_all(&snapshots)?;
    }
    let (mut target, _) = Journal::open(&config.data_dir, None, |_| Ok(()))?;
    let mut engine = Engine::new(config.currencies.clone());
    let mut out = Output::default();
    let mut locations = Vec::new();
    let mut records = 0;
    let (_, _, _, tail) = journal::scan_legacy(&legacy, &mut |replayed| {
        out.clear();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            for op in replayed.ops {
                engine.apply(op, &mut out);
            }
        }));
        if applied.is_err() {
            return Err(LedgerError::Corrupt(format!(
                "PUENTEJ2 journal entry {} cannot be applied to the state before it",
                replayed.seq
            )));
        }
        engine.store_caught_up();
        target.append(replayed.seq, &out.ops, &mut locations)?;
        records += 1;
        Ok(())
    })?;
    if let Some(tail) = tail {
        if tail.kind == journal::TailKind::Damaged {
            return Err(LedgerError::Corrupt(format!(
                "cannot migrate: the PUENTEJ2 journal ends in {tail}. Nothing was changed; check the disk \
                 and restore from a backup, or move the damaged bytes aside to accept the loss."
            )));
        }
        tracing::warn!(%tail, "the PUENTEJ2 journal ends in a torn record: it is not migrated (it stays in the archive)");
    }
    engine.check_invariants().map_err(|e| {
        LedgerError::Corrupt(format!("invariant broken after replaying the PUENTEJ2 journal: {e}"))
    })?;
    drop(target);
    let archived = journal::archived_legacy_path(&config.data_dir);
    std::fs::rename(&legacy, &archived)?;
    journal::sync_dir(&config.data_dir)?;
    tracing::warn!(records, archived = %archived.display(), elapsed_ms = started.elapsed().as_millis() as u64,
        "migrated the PUENTEJ2 journal; the old file is kept read-only");
    Ok(Some(records))
}

/// The replay of the journal at a start: each record after the snapshot goes into the engine,
/// each record after the index's resume point into the index.
struct Replay<'a> {
    engine: &'a mut Engine,
    index: &'a Index,
    state_from: u64,
    index_from: u64,
    out: Output,
    into_state: u64,
    events_into_state: u64,
    into_index: u64,
}

impl Replay<'_> {
    fn record(&mut self, replayed: journal::Replayed) -> Result<(), LedgerError> {
        let mut ops = replayed.ops;
        if replayed.seq > self.state_from {
            self.out.clear();
            let (engine, out) = (&mut *self.engine, &mut self.out);
            let applied = catch_unwind(AssertUnwindSafe(|| {
                for op in ops.drain(..) {
                    engine.apply(op, out);
                }
            }));
            if applied.is_err() {
                return Err(LedgerError::Corrupt(format!(
                    "journal entry {} cannot be applied to the state before it",
                    replayed.seq
                )));
            }
            self.engine.store_caught_up();
            ops = std::mem::take(&mut self.out.ops);
            self.into_state += 1;
            self.events_into_state += ops.len() as u64;
        }
        if replayed.seq > self.index_from {
            let batch = IndexBatch {
                seq: replayed.seq,
                record: replayed.record,
                head: replayed.head,
                ops,
                locations: replayed.locations,
            };
            self.index.apply(&batch, &EngineOwners(self.engine))?;
            self.into_index += 1;
        }
        Ok(())
    }
}

/// What recovery hands to the threads it starts.
struct Recovered {
    engine: Engine,
    journal: Journal,
    reader: JournalReader,
    index: Index,
    /// Sequence number of the last intact journal record.
    last_seq: u64,
    /// Where the replay started (the earlier of the snapshot's and the index's resume points).
    resume: Option<ResumePoint>,
    recovery: RecoveryReport,
    replayed_events_into_state: u64,
}

impl Ledger {
    /// Opens the ledger: migrates an old journal, loads the newest usable snapshot, replays the
    /// journal after it (and the index from what it persisted), checks every invariant, and
    /// starts the writer and the indexer. Refuses (with `LedgerError::Corrupt`) a store that
    /// fails a check, without modifying the journal.
    pub fn open(config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let recovered = Ledger::recover(&config)?;
        Ledger::start(config, recovered)
    }

    /// Recovery: migrates an old journal, loads the newest usable snapshot, replays the journal
    /// after it into the engine and the index, and checks every invariant.
    fn recover(config: &LedgerConfig) -> Result<Recovered, LedgerError> {
        let started = Instant::now();
        std::fs::create_dir_all(&config.data_dir)?;
        let migrated_records = migrate_legacy(config)?;
        let reader = JournalReader::new(&config.data_dir);
        let index = Index::open(&config.data_dir.join("index"), reader.clone(), config.rebuild_index)?;
        let index_resume = index.resume_point();
        check_index_resume(&config.data_dir, index_resume)?;
        let (mut engine, snapshot_resume) = load_newest_snapshot(config)?;
        let state_from = snapshot_resume.map_or(0, |r| r.seq);
        let index_from = index_resume.map_or(0, |r| r.seq);
        // Replay from the earlier of the two resume points.
        let resume = match (snapshot_resume, index_resume) {
            (Some(s), Some(i)) => Some(if s.seq <= i.seq { s } else { i }),
            _ => None,
        };
        let mut replay = Replay {
            engine: &mut engine,
            index: &index,
            state_from,
            index_from,
            out: Output::default(),
            into_state: 0,
            events_into_state: 0,
            into_index: 0,
        };
        let (mut journal, stats) =
            Journal::open(&config.data_dir, resume, |replayed| replay.record(replayed))?;
        let (replayed_into_state, replayed_events_into_state, replayed_into_index) =
            (replay.into_state, replay.events_into_state, replay.into_index);
        if stats.last_seq < state_from.max(index_from) {
            return Err(LedgerError::Corrupt(format!(
                "the journal ends at {} but the state or the index was taken at {}; the journal lost \
                 acknowledged data or belongs to another store",
                stats.last_seq,
                state_from.max(index_from)
            )));
        }
        engine
            .check_invariants()
            .map_err(|e| LedgerError::Corrupt(format!("invariant broken after replay: {e}")))?;
        check_index_balances(&engine, &index)?;
        // Only now, with every check passed, is the bad tail (if any) cut: a refused start
        // leaves the journal exactly as it found it.
        let tail_evidence = journal.cut_tail()?;
        // The writer syncs each record itself when the journal here is the record (after the
        // test hook, `Writer::append`); with a journal of record elsewhere, the record is the
        // store's and this journal is a copy, synced before the index or a snapshot relies on
        // it (see `Journal::sync_each_record`).
        journal.set_sync_each_record(false);
        if let Some(tail) = &stats.tail {
            log_cut_tail(tail, tail_evidence.as_deref());
        }
        let recovery = RecoveryReport {
            // Sequence numbers run from 1 without gaps: the last is the count.
            journal_entries: stats.last_seq,
            replayed_into_index,
            replayed_into_state,
            snapshot_seq: snapshot_resume.map(|r| r.seq),
            truncated_tail_bytes: stats.truncated_tail_bytes,
            tail: stats.tail.clone(),
            tail_evidence,
            migrated_records,
            accounts: engine.accounts().count(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(?recovery, "ledger recovered");
        Ok(Recovered {
            engine,
            journal,
            reader,
            index,
            last_seq: stats.last_seq,
            resume,
            recovery,
            replayed_events_into_state,
        })
    }

    /// The state every thread shares, as recovery left it.
    fn shared(
        config: &LedgerConfig,
        engine: &Engine,
        journal: &Journal,
        index: Index,
        last_seq: u64,
        from_resume_point: bool,
        recovery: RecoveryReport,
    ) -> Shared {
        let mut view = AccountsView::default();
        for account in engine.accounts() {
            view.put(account.clone());
        }
        let (feed, _) = broadcast::channel(FEED_BUFFER_GROUPS);
        let writer_stats = WriterStats::default();
        writer_stats.journal_bytes.store(journal.len_bytes(), Ordering::Relaxed);
        writer_stats.committed_seq.store(last_seq, Ordering::Relaxed);
        writer_stats.indexed_seq.store(last_seq, Ordering::Relaxed);
        Shared {
            index,
            accounts: RwLock::new(view),
            feed,
            healthy: AtomicBool::new(true),
            stats: writer_stats,
            currencies: config.currencies.clone(),
            recovery,
            data_dir: config.data_dir.clone(),
            chain_head: Mutex::new(journal.chain_head()),
            credentials: RwLock::new(Arc::new(engine.identity().credentials())),
            stopped: tokio::sync::watch::Sender::new(false),
            history: tokio::sync::watch::Sender::new(if from_resume_point {
                History::Checking
            } else {
                // This start read and checked the whole journal.
                History::Verified
            }),
            role: tokio::sync::watch::Sender::new(match config.record_store {
                None => Role::Single,
                Some(_) => Role::Standby { leader: None },
            }),
            record_store: config.record_store.clone(),
        }
    }

    /// Starts the indexer, snapshot, scrub and writer threads over what recovery found.
    fn start(config: LedgerConfig, recovered: Recovered) -> Result<Ledger, LedgerError> {
        let Recovered {
            engine,
            journal,
            reader,
            index,
            last_seq,
            resume,
            recovery,
            replayed_events_into_state,
        } = recovered;
        let shared =
            Arc::new(Ledger::shared(&config, &engine, &journal, index, last_seq, resume.is_some(), recovery));
        if let Some(point) = resume {
            // A start from a snapshot (or a persisted index) reads only the records after it,
            // so that it takes the same time at 10M records as at 10k. The records before are
            // checked here, in the background: a broken chain stops all writes, as a start
            // that found it would have refused to serve.
            // Holds no strong handle: a ledger dropped meanwhile closes its index as usual.
            let (weak, data_dir) = (Arc::downgrade(&shared), config.data_dir.clone());
            std::thread::Builder::new()
                .name("puente-scrub".into())
                .spawn(move || run_history_check(weak, &data_dir, point))?;
        }
        let queue = Arc::new(FairQueue::default());
        let (alive, handles_gone) = mpsc::channel(1);
        let (to_indexer, indexer_rx) = std::sync::mpsc::sync_channel(INDEX_QUEUE_GROUPS);
        let (to_snapshots, snapshot_rx) = std::sync::mpsc::sync_channel::<Snapshot>(1);
        {
            let (shared, hook) = (shared.clone(), config.persist_hook.clone());
            std::thread::Builder::new()
                .name("puente-indexer".into())
                .spawn(move || run_indexer(shared, indexer_rx, hook))?;
        }
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("puente-snapshot".into())
                .spawn(move || run_snapshots(shared, snapshot_rx))?;
        }
        let writer = Writer {
            engine,
            journal,
            reader,
            shared: shared.clone(),
            seq: last_seq,
            overlay: Overlay::default(),
            to_indexer,
            to_snapshots,
            // What this start replayed counts toward the next snapshot.
            snapshot_due: SnapshotDue { events: replayed_events_into_state, since: Instant::now() },
            snapshot_events: config.snapshot_events.max(1),
            locations: Vec::new(),
            lease: None,
            config: config.clone(),
        };
        let writer_queue = queue.clone();
        let writer_shared = shared.clone();
        std::thread::Builder::new().name("puente-writer".into()).spawn(move || {
            let closing = writer_queue.clone();
            // A panic here is a bug; it must not leave a node that looks alive but answers
            // nothing: every write is refused from then on and health goes NOT_SERVING.
            if catch_unwind(AssertUnwindSafe(|| writer.run(writer_queue, handles_gone))).is_err() {
                tracing::error!("the writer panicked; refusing every write (restart the server)");
                writer_shared.healthy.store(false, Ordering::Relaxed);
                closing.close();
                writer_shared.stopped.send_replace(true);
            }
        })?;
        Ok(Ledger { queue, _alive: alive, shared })
    }

    /// The journal's chain head: the sequence number of the last durable record and its
    /// SHA-256 chain hash (0 and all zeros for an empty journal). It commits to every record
    /// up to it; record it outside the data directory (e.g. in a settlement report) so that a
    /// later rewrite of the journal can be detected (see `journal`).
    pub fn chain_head(&self) -> (u64, ChainHash) {
        *self.shared.chain_head.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn currencies(&self) -> &CurrencyTable {
        &self.shared.currencies
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    pub fn stats(&self) -> &WriterStats {
        &self.shared.stats
    }

    /// How far the index is behind the journal: (last durable record, last indexed record).
    pub fn index_watermarks(&self) -> (u64, u64) {
        let stats = &self.shared.stats;
        (stats.committed_seq.load(Ordering::Acquire), stats.indexed_seq.load(Ordering::Acquire))
    }

    /// The last record the index has persisted (a restart replays the index from there).
    pub fn index_persisted_seq(&self) -> u64 {
        self.shared.index.persisted_seq()
    }

    /// Registers the observer told of every group commit. Only the first one is kept;
    /// returns false if one was already set.
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) -> bool {
        self.shared.stats.commit_hook.0.set(observer).is_ok()
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// False once a durable write failed: the process must be restarted (recovery replays
    /// the journal). Health reports NOT_SERVING.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    pub fn size_on_disk(&self) -> u64 {
        self.shared.index.size_on_disk() + self.shared.stats.journal_bytes.load(Ordering::Relaxed)
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

    /// A call of a domain of the engine (settlement, participants, holders), run by the writer
    /// so that it sees, and changes, exactly the committed state. The answer comes after the ops
    /// it made are durable; its type follows the call.
    pub async fn call<C: Call>(&self, call: C) -> Result<C::Answer, LedgerError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Call(Box::new(CallJob { call, reply }))).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    /// The credentials in force (a snapshot; cheap to call on every request).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.shared.credentials.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    async fn send(&self, command: Command) -> Result<(), LedgerError> {
        if !self.is_healthy() {
            return Err(LedgerError::Unavailable("a durable write failed; restart the server".into()));
        }
        if let Role::Standby { leader } = &*self.shared.role.borrow() {
            return Err(LedgerError::NotLeader(leader.clone()));
        }
        let lane = command.lane().to_owned();
        let events = command.events();
        self.queue
            .push(&lane, events, command)
            .await
            .map_err(|_| LedgerError::Unavailable("the writer stopped".into()))
    }

    /// Leader, standby or single node, now.
    pub fn role(&self) -> Role {
        self.shared.role.borrow().clone()
    }

    /// Waits (at most `within`) until this node knows what it is: it leads, or it follows a
    /// known leader. Immediate on a single node.
    pub async fn role_settled(&self, within: Duration) -> Role {
        let mut roles = self.shared.role.subscribe();
        let settled = roles.wait_for(|role| !matches!(role, Role::Standby { leader: None }));
        let _ = tokio::time::timeout(within, settled).await;
        self.role()
    }

    /// Every change of role (for health: `puente.v1.Leader` is SERVING only on the leader).
    pub fn role_changes(&self) -> tokio::sync::watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// Closes an account (see `Engine::close_account`).
    pub async fn close_account(&self, actor: Actor, id: AccountId) -> Result<AccountOutcome, LedgerError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::CloseAccount { actor, id, reply }).await?;
        response.await.map_err(|_| LedgerError::Unavailable("the writer stopped".into()))?
    }

    /// An account as of the last commit (accounts are live state: always current).
    pub fn get_account(&self, id: AccountId) -> Result<Option<Account>, LedgerError> {
        Ok(self.shared.accounts().by_id.get(&id).cloned())
    }

    /// Accounts in id order after `after_id`, optionally of one participant.
    pub fn list_accounts(
        &self,
        participant: Option<&str>,
        after_id: AccountId,
        limit: usize,
    ) -> Result<Vec<Account>, LedgerError> {
        let limit = limit.min(crate::index::PAGE_SIZE_MAX);
        let view = self.shared.accounts();
        Ok(match participant {
            Some(p) => view
                .by_participant
                .range((p.to_owned(), after_id.saturating_add(1))..=(p.to_owned(), AccountId::MAX))
                .filter_map(|(_, id)| view.by_id.get(id).cloned())
                .take(limit)
                .collect(),
            None => view
                .by_id
                .range((std::ops::Bound::Excluded(after_id), std::ops::Bound::Unbounded))
                .map(|(_, a)| a.clone())
                .take(limit)
                .collect(),
        })
    }

    /// Resolves once the journal's records before the point this start resumed from (a
    /// snapshot or the persisted index) were read back and their checksums and hash chain
    /// recomputed: `Err(Corrupt)` when one was damaged or altered, after which every write is
    /// refused. Immediate when the start read the whole journal.
    pub async fn history_verified(&self) -> Result<(), LedgerError> {
        let mut history = self.shared.history.subscribe();
        let state = history.wait_for(|h| *h != History::Checking).await.map(|h| h.clone());
        match state {
            Ok(History::Broken(reason)) => Err(LedgerError::Corrupt(reason)),
            Ok(_) => Ok(()),
            Err(_) => {
                Err(LedgerError::Unavailable("the ledger stopped before its history was checked".into()))
            }
        }
    }

    /// Resolves once the writer has stopped (after the last handle is dropped) and written its
    /// final snapshot. Take it before dropping the last handle; a server awaits it before it
    /// exits so that the next start replays nothing.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.shared.stopped.subscribe();
        async move {
            // An error means the sender is gone with the writer: stopped too.
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// Waits until the index has applied every acknowledged write, then persists it: the next
    /// start replays nothing into the index. For a graceful shutdown (the index persists by
    /// itself about every second and when the ledger's last handle goes, but a process may
    /// exit before that thread is done).
    pub async fn flush_index(&self) -> Result<(), LedgerError> {
        self.caught_up().await?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.index.persist())
            .await
            .map_err(|e| LedgerError::Storage(format!("index flush task failed: {e}")))?
    }

    /// Waits until the index shows every write acknowledged before this call (read your
    /// writes). The wait is the indexer's lag: milliseconds.
    pub async fn caught_up(&self) -> Result<(), LedgerError> {
        let target = self.shared.stats.committed_seq.load(Ordering::Acquire);
        let mut applied = self.shared.index.watch_applied();
        let wait = async {
            while *applied.borrow_and_update() < target {
                if applied.changed().await.is_err() {
                    return Err(LedgerError::Unavailable("the indexer stopped".into()));
                }
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_millis(READ_WAIT_MAX_MS), wait).await {
            Ok(result) => result,
            Err(_) => Err(LedgerError::Unavailable(format!(
                "the index is more than {READ_WAIT_MAX_MS} ms behind the journal"
            ))),
        }
    }

    fn currency_of(&self) -> impl Fn(AccountId) -> Option<CurrencyCode> + '_ {
        |account| self.shared.currency_of(account)
    }

    /// What `scope` sees under `id`: its own remembered failure, else the committed transfer
    /// (another participant's failures under the same id are not its business).
    pub async fn get_transfer(&self, id: TransferId, scope: &str) -> Result<Option<Prior>, LedgerError> {
        self.caught_up().await?;
        self.shared.index.prior(id, scope, &self.currency_of())
    }

    /// A committed transfer.
    pub async fn get_committed(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        self.caught_up().await?;
        Ok(self.shared.index.seen(id, &self.currency_of())?.0)
    }

    /// The state of a pending (two-phase) transfer.
    pub async fn pending_state(&self, id: TransferId) -> Result<Option<PendingState>, LedgerError> {
        self.caught_up().await?;
        self.shared.index.pending_state(id)
    }

    /// The transfer record at a journal location (from an entry of a statement).
    pub fn record_at(&self, location: Location) -> Result<Option<TransferRecord>, LedgerError> {
        self.shared.index.record_at(location, &self.currency_of())
    }

    /// An account's statement entries with `from_ns <= timestamp < to_ns`, in either order,
    /// starting after `cursor_ns` (exclusive) when given, each with where its record is.
    pub async fn account_entries(
        &self,
        account_id: AccountId,
        from_ns: u64,
        to_ns: u64,
        descending: bool,
        cursor_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(Entry, Location)>, LedgerError> {
        self.caught_up().await?;
        self.shared.index.account_entries(account_id, from_ns, to_ns, descending, cursor_ns, limit)
    }

    fn records(&self, feed: Vec<(u64, Location)>) -> Result<Vec<TransferRecord>, LedgerError> {
        let mut out = Vec::with_capacity(feed.len());
        for (ts, location) in feed {
            match self.record_at(location)? {
                Some(record) if record.timestamp_ns == ts => out.push(record),
                _ => {
                    return Err(LedgerError::Corrupt(format!(
                        "index: the feed's position {ts} points at no transfer record"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Committed transfers (every balance change) after a position, in commit order.
    pub async fn transfers_after(
        &self,
        after_ns: u64,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, LedgerError> {
        self.caught_up().await?;
        self.records(self.shared.index.feed_after("", after_ns, limit)?)
    }

    /// The transfers touching `participant`'s accounts after a position (its feed).
    pub async fn participant_transfers_after(
        &self,
        participant: &str,
        after_ns: u64,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, LedgerError> {
        self.caught_up().await?;
        if participant.is_empty() {
            return Ok(Vec::new());
        }
        self.records(self.shared.index.feed_after(participant, after_ns, limit)?)
    }

    /// Live feed of committed transfers, one message per group commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<TransferRecord>>> {
        self.shared.feed.subscribe()
    }

    /// How many live feed subscriptions are open (each open StreamTransfers holds one).
    pub fn feed_subscribers(&self) -> usize {
        self.shared.feed.receiver_count()
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

/// What the journal op found for `id` tells the engine: a committed transfer (a client's, or
/// the ledger's own expiry or automatic post), or a remembered refusal.
fn prefetch_op(
    prefetched: &mut Prefetched,
    id: TransferId,
    op: Op,
    currency_of: impl Fn(AccountId) -> Option<CurrencyCode>,
) {
    match op {
        Op::Transfer(record) if record.transfer.id == id => {
            prefetched.committed.insert(id, record);
        }
        Op::Refused(r) if r.id == id => prefetched.refused.entry(id).or_default().push(r),
        Op::Fail(f) if f.transfer.id == id => {
            prefetched.refused.entry(id).or_default().push(RefusedTransfer::from_legacy(&f))
        }
        Op::Expire { pending_id, timestamp_ns, effect }
        | Op::AutoPost { pending_id, timestamp_ns, effect } => {
            let posted = crate::engine::expiry_record_id(pending_id, true) == id;
            if let Some(currency) = currency_of(effect.debit_account_id) {
                let record =
                    crate::engine::expiry_record_from(pending_id, effect, currency, posted, timestamp_ns);
                prefetched.committed.insert(id, record);
            }
        }
        _ => {}
    }
}

// ----- the indexer and snapshot threads ------------------------------------------------------

fn run_indexer(shared: Arc<Shared>, batches: std::sync::mpsc::Receiver<IndexBatch>, hook: Option<SyncHook>) {
    let interval = Duration::from_millis(INDEX_PERSIST_INTERVAL_MS);
    let mut persist_at = Instant::now() + interval;
    // Where the last record applied is: the journal is synced up to it before the last persist.
    let mut last_record: Option<Location> = None;
    let fail = |error: LedgerError| {
        tracing::error!(%error, "the indexer failed; refusing further writes (restart to rebuild from the journal)");
        shared.healthy.store(false, Ordering::Relaxed);
    };
    let (to_persister, persister) = match spawn_persister(shared.clone(), hook) {
        Ok(persister) => persister,
        Err(error) => return fail(error.into()),
    };
    loop {
        let wait = persist_at.saturating_duration_since(Instant::now());
        match batches.recv_timeout(wait) {
            Ok(batch) => {
                if let Err(error) = shared.index.apply(&batch, &SharedOwners(&shared)) {
                    return fail(error);
                }
                last_record = Some(batch.record);
                shared.stats.indexed_seq.store(batch.seq, Ordering::Release);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Memory past MEMORY_IDS_MAX waits for the cut being written; otherwise a cut due while
        // one is written is asked for again shortly.
        let full = shared.index.persist_due();
        if full || Instant::now() >= persist_at {
            persist_at = Instant::now()
                + match shared.index.cut(full) {
                    Ok(CutTaken::Cut(cut)) => {
                        if to_persister.send(cut).is_err() {
                            return fail(LedgerError::Storage("the index persister stopped".into()));
                        }
                        interval
                    }
                    Ok(CutTaken::NothingNew) => interval,
                    Ok(CutTaken::Busy) => Duration::from_millis(INDEX_PERSIST_RETRY_MS),
                    Err(error) => return fail(error),
                };
        }
    }
    // The ledger's last handle went: write what is left, after the cut in flight.
    drop(to_persister);
    if persister.join().is_err() {
        return fail(LedgerError::Storage("the index persister panicked".into()));
    }
    let synced = last_record.map_or(Ok(()), |location| journal::sync_segment(&shared.data_dir, location));
    if let Err(error) = synced.and_then(|()| shared.index.persist()) {
        fail(error);
    }
}

/// The thread that writes the index's cuts, so that applying never waits for a run file, a
/// sled batch and its flush, or a merge (up to a second each at a few million ids: the writer
/// waited for them through the index queue). It syncs the journal up to a cut's last record
/// first: the index persists only what the local journal holds durably (with a journal of
/// record elsewhere, the writer does not sync each record). One cut at a time.
fn spawn_persister(
    shared: Arc<Shared>,
    hook: Option<SyncHook>,
) -> std::io::Result<(std::sync::mpsc::SyncSender<crate::index::Cut>, std::thread::JoinHandle<()>)> {
    let (to_persister, cuts) = std::sync::mpsc::sync_channel::<crate::index::Cut>(1);
    let (to_merger, merger) = spawn_merger(shared.clone())?;
    let persister = std::thread::Builder::new().name("puente-persister".into()).spawn(move || {
        // The merger ends after the merge it is on when the last cut has been written.
        let merger = MergerHandle { to_merger: Some(to_merger), merger: Some(merger) };
        for cut in cuts {
            let durable = hook
                .as_ref()
                .map_or(Ok(()), |hook| (hook.0)())
                .map_err(LedgerError::from)
                .and_then(|()| journal::sync_segment(&shared.data_dir, cut.record()));
            let written = match durable {
                Ok(()) => shared.index.write_cut(cut),
                Err(error) => {
                    shared.index.abandon_cut(cut);
                    Err(error)
                }
            };
            if let Err(error) = written {
                tracing::error!(%error, "persisting the index failed; refusing further writes (restart to rebuild from the journal)");
                shared.healthy.store(false, Ordering::Relaxed);
                return;
            }
            if let Some(to_merger) = &merger.to_merger {
                // Full: a merge check is already due.
                let _ = to_merger.try_send(());
            }
        }
    })?;
    Ok((to_persister, persister))
}

/// The thread that merges the index's id runs after each cut written ([`Index::merge_once`]),
/// so that a merge of large runs (seconds at tens of millions of ids) never holds up a cut:
/// it held the next cut, and so the indexer and the writer behind it (a 4.9 s batch in a 30M
/// run, BENCHMARKS.md).
fn spawn_merger(
    shared: Arc<Shared>,
) -> std::io::Result<(std::sync::mpsc::SyncSender<()>, std::thread::JoinHandle<()>)> {
    let (to_merger, due) = std::sync::mpsc::sync_channel::<()>(1);
    let merger = std::thread::Builder::new().name("puente-merger".into()).spawn(move || {
        for () in due {
            loop {
                match shared.index.merge_once() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => {
                        tracing::error!(%error, "merging the index's runs failed; refusing further writes (restart to rebuild from the journal)");
                        shared.healthy.store(false, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    })?;
    Ok((to_merger, merger))
}

/// Ends the merger when the persister ends: no more merge checks, then waits for the merge it
/// is on (so that a stopped ledger leaves no thread writing its index).
struct MergerHandle {
    to_merger: Option<std::sync::mpsc::SyncSender<()>>,
    merger: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MergerHandle {
    fn drop(&mut self) {
        drop(self.to_merger.take());
        if let Some(merger) = self.merger.take() {
            let _ = merger.join();
        }
    }
}

/// Refuses an index that applied a record the journal does not hold (any more, or not intact):
/// that record WAS acknowledged (the index only applies durable records), so the journal lost
/// acknowledged writes, or the index belongs to another store. The journal is left untouched;
/// --rebuild-index accepts it as it is.
fn check_index_resume(data_dir: &Path, index_resume: Option<ResumePoint>) -> Result<(), LedgerError> {
    if let Some(point) = index_resume
        && !journal::resume_point_holds(data_dir, &point)?
    {
        return Err(LedgerError::Corrupt(format!(
            "the index applied journal record {} ({}), so it WAS acknowledged, but the journal does not \
             hold it intact: the journal lost acknowledged data (or the index belongs to another store). \
             Restore from a backup, or restart with --rebuild-index to accept the journal as it is",
            point.seq,
            journal::chain_hex(&point.head)
        )));
    }
    Ok(())
}

/// The engine from the newest snapshot that reads back and still describes this journal (and
/// the point it was taken at), or an empty engine. A readable snapshot the journal does not
/// reach means lost records, like an index that went beyond the journal.
fn load_newest_snapshot(config: &LedgerConfig) -> Result<(Engine, Option<ResumePoint>), LedgerError> {
    let mut seqs = snapshot::list(&config.data_dir)?;
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    for seq in seqs {
        match snapshot::read(&config.data_dir, seq) {
            Ok(Snapshot { resume, state }) if journal::resume_point_holds(&config.data_dir, &resume)? => {
                return Ok((Engine::from_state(config.currencies.clone(), state), Some(resume)));
            }
            Ok(Snapshot { resume, .. }) if config.rebuild_index => {
                tracing::warn!(
                    seq = resume.seq,
                    "removing a snapshot the journal does not hold (--rebuild-index)"
                );
                snapshot::remove(&config.data_dir, seq)?;
            }
            Ok(Snapshot { resume, .. }) => {
                return Err(LedgerError::Corrupt(format!(
                    "snapshot {} was taken at journal record {}, which the journal does not hold: the \
                     journal lost acknowledged data or the snapshot belongs to another store. Restore from \
                     a backup, or restart with --rebuild-index to accept the journal as it is",
                    seq, resume.seq
                )));
            }
            Err(reason) => tracing::warn!(seq, %reason, "skipping an unreadable snapshot"),
        }
    }
    Ok((Engine::new(config.currencies.clone()), None))
}

/// The index adds up to the same balances as the engine for every account the replay touched.
fn check_index_balances(engine: &Engine, index: &Index) -> Result<(), LedgerError> {
    for account in engine.accounts() {
        if let Some(balances) = index.balances_if_loaded(account.id)? {
            let expected = [
                account.debits_pending_minor,
                account.debits_posted_minor,
                account.credits_pending_minor,
                account.credits_posted_minor,
            ];
            if balances != expected {
                return Err(LedgerError::Corrupt(format!(
                    "account {} in the index differs from the journal; restart with --rebuild-index",
                    account.id
                )));
            }
        }
    }
    Ok(())
}

/// Says loudly what a start cut off the journal's end, and where the evidence was saved.
fn log_cut_tail(tail: &journal::TailCut, evidence: Option<&Path>) {
    let evidence = evidence.map(|p| p.display().to_string()).unwrap_or_default();
    match tail.kind {
        journal::TailKind::Torn => {
            tracing::warn!(%tail, %evidence, "journal: cut a torn, never-acknowledged record off the end")
        }
        journal::TailKind::Damaged => tracing::error!(
            %tail,
            %evidence,
            "journal: the LAST RECORD IS DAMAGED and was cut; it may have held acknowledged writes, \
             which are now lost: restore them from a backup or a replica, and check the disk"
        ),
    }
}

fn run_history_check(shared: std::sync::Weak<Shared>, data_dir: &Path, point: ResumePoint) {
    let started = Instant::now();
    let verified = journal::verify_prefix(data_dir, &point);
    let Some(shared) = shared.upgrade() else { return };
    match verified {
        Ok(()) => {
            tracing::info!(
                up_to_seq = point.seq,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "journal history verified"
            );
            shared.history.send_replace(History::Verified);
        }
        Err(error) => {
            shared.healthy.store(false, Ordering::Relaxed);
            tracing::error!(%error, "the journal's history is damaged or was altered: writes stopped");
            shared.history.send_replace(History::Broken(error.to_string()));
        }
    }
}

fn run_snapshots(shared: Arc<Shared>, snapshots: std::sync::mpsc::Receiver<Snapshot>) {
    for snapshot in snapshots {
        let started = Instant::now();
        // A snapshot names a record of the local journal: durable first (see `run_indexer`).
        let written = journal::sync_segment(&shared.data_dir, snapshot.resume.record)
            .and_then(|()| snapshot::write(&shared.data_dir, &snapshot));
        match written {
            Ok(path) => {
                shared.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                tracing::info!(seq = snapshot.resume.seq, path = %path.display(),
                    elapsed_ms = started.elapsed().as_millis() as u64, "snapshot written");
                if let Some(store) = &shared.record_store {
                    follow::keep_snapshot_in_store(store.as_ref(), &snapshot);
                }
            }
            // A snapshot only shortens the next start: failing one is logged, not fatal.
            Err(error) => tracing::warn!(%error, "cannot write a snapshot"),
        }
    }
}

// ----- the writer ----------------------------------------------------------------------------

/// What the writer committed that the indexer has not applied yet: ids and their locations,
/// pending transfers resolved (with their debit account), by group.
#[derive(Default)]
struct Overlay {
    ids: HashMap<TransferId, Vec<Location>>,
    resolved: HashMap<TransferId, (PendingState, AccountId)>,
    groups: VecDeque<(u64, Vec<TransferId>, Vec<TransferId>)>,
}

impl Overlay {
    fn add(
        &mut self,
        seq: u64,
        ops: &[Op],
        locations: &[Location],
        resolved: impl Iterator<Item = (TransferId, (PendingState, AccountId))>,
    ) {
        let mut ids = Vec::new();
        for (op, location) in ops.iter().zip(locations) {
            let id = match op {
                Op::Transfer(r) => r.transfer.id,
                Op::Refused(r) => r.id,
                Op::Fail(f) => f.transfer.id,
                Op::Expire { pending_id, .. } => crate::engine::expiry_record_id(*pending_id, false),
                Op::AutoPost { pending_id, .. } => crate::engine::expiry_record_id(*pending_id, true),
                _ => continue,
            };
            self.ids.entry(id).or_default().push(*location);
            ids.push(id);
        }
        let mut resolved_ids = Vec::new();
        for (id, value) in resolved {
            self.resolved.insert(id, value);
            resolved_ids.push(id);
        }
        self.groups.push_back((seq, ids, resolved_ids));
    }

    /// Forgets what the indexer has applied (it answers for it now).
    fn prune(&mut self, applied_seq: u64) {
        while self.groups.front().is_some_and(|(seq, ..)| *seq <= applied_seq) {
            let Some((_, ids, resolved)) = self.groups.pop_front() else { break };
            for id in ids {
                self.ids.remove(&id);
            }
            for id in resolved {
                self.resolved.remove(&id);
            }
        }
    }
}

struct SnapshotDue {
    events: u64,
    since: Instant,
}

struct Writer {
    engine: Engine,
    journal: Journal,
    reader: JournalReader,
    shared: Arc<Shared>,
    seq: u64,
    overlay: Overlay,
    to_indexer: std::sync::mpsc::SyncSender<IndexBatch>,
    to_snapshots: std::sync::mpsc::SyncSender<Snapshot>,
    snapshot_due: SnapshotDue,
    snapshot_events: u64,
    locations: Vec<Location>,
    /// With a journal of record elsewhere: this node's lease while it leads.
    lease: Option<Lease>,
    config: LedgerConfig,
}

/// The lease as the leading writer tracks it, by its own clock (the store fences by epoch).
struct Lease {
    /// Past this, the lease may have lapsed: nothing more is acknowledged before a renewal.
    valid_until: Instant,
    /// When to renew (a third of the lease in).
    renew_at: Instant,
}

/// A command's result, held until its group is durable: then sent (or, if the append
/// failed, replaced by the error). One generic type for every command: the reply type follows
/// the command, and nothing here grows with a new domain.
struct Answer<T> {
    reply: oneshot::Sender<Result<T, LedgerError>>,
    result: T,
}

/// What the writer does with an answer once the group's fate is known.
trait Reply: Send {
    fn send(self: Box<Self>);
    fn fail(self: Box<Self>, error: LedgerError);
}

impl<T: Send> Reply for Answer<T> {
    fn send(self: Box<Self>) {
        // A caller that went away no longer needs the answer; the write stands.
        let _ = self.reply.send(Ok(self.result));
    }

    fn fail(self: Box<Self>, error: LedgerError) {
        let _ = self.reply.send(Err(error));
    }
}

fn answer<T: Send + 'static>(reply: oneshot::Sender<Result<T, LedgerError>>, result: T) -> Box<dyn Reply> {
    Box::new(Answer { reply, result })
}

/// A call with the reply channel of its own answer type, as the writer's queue holds it (one
/// object type for every call of every domain).
trait Job: Send {
    fn wanted(&self, engine: &Engine, wanted: &mut Wanted);
    fn run(
        self: Box<Self>,
        engine: &mut Engine,
        prefetched: &Prefetched,
        now_ns: u64,
        out: &mut Output,
    ) -> Box<dyn Reply>;
    fn fail(self: Box<Self>, error: LedgerError);
}

struct CallJob<C: Call> {
    call: C,
    reply: oneshot::Sender<Result<C::Answer, LedgerError>>,
}

impl<C: Call> Job for CallJob<C> {
    fn wanted(&self, engine: &Engine, wanted: &mut Wanted) {
        engine.call_wanted(&self.call, wanted);
    }

    fn run(
        self: Box<Self>,
        engine: &mut Engine,
        prefetched: &Prefetched,
        now_ns: u64,
        out: &mut Output,
    ) -> Box<dyn Reply> {
        let CallJob { call, reply } = *self;
        answer(reply, engine.call(prefetched, call, now_ns, out))
    }

    fn fail(self: Box<Self>, error: LedgerError) {
        let _ = self.reply.send(Err(error));
    }
}

impl Writer {
    fn run(mut self, queue: Arc<FairQueue<Command>>, mut handles_gone: mpsc::Receiver<()>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start the writer");
                self.shared.healthy.store(false, Ordering::Relaxed);
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
                if self.config.record_store.is_some() && self.lease.is_none() {
                    // A standby: follow the journal of record until this node leads.
                    if self.stand_by(&queue, &mut handles_gone, &mut out).await.is_break() {
                        break;
                    }
                    continue;
                }
                if queue.is_empty() {
                    // Nothing queued: wait for a command, the next expiry, the lease's renewal,
                    // or the last handle.
                    let mut wait = self
                        .engine
                        .next_expiry_ns()
                        .map(|at| Duration::from_nanos(at.saturating_sub(now_ns())))
                        .unwrap_or(IDLE_WAKE_MAX);
                    if let Some(lease) = &self.lease {
                        wait = wait.min(lease.renew_at.saturating_duration_since(Instant::now()));
                    }
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
                if !self.keep_lease().await {
                    continue; // stepped down: follow
                }
                // One group: up to GROUP_EVENTS_MAX events, fairly across participants.
                queue.take(GROUP_EVENTS_MAX, &mut admitted);
                for item in admitted.drain(..) {
                    let (command, room) = item.into_parts();
                    group.push(command);
                    rooms.push(room);
                }
                self.commit(&mut group, &mut out).await;
                // Their room in the queue is given back once they are answered.
                rooms.clear();
            }
            if self.lease.is_some()
                && let Some(store) = self.config.record_store.clone()
                && let Err(error) = store.step_down().await
            {
                tracing::warn!(%error, "cannot give the lease up at stop; a standby takes over when it lapses");
            }
        });
        queue.close();
        self.final_snapshot();
        self.shared.stopped.send_replace(true);
        tracing::info!("writer stopped");
    }

    /// At a clean stop, a snapshot of whatever the last one does not hold, written before the
    /// writer ends: the next start then replays nothing into the engine.
    fn final_snapshot(&mut self) {
        if self.snapshot_due.events == 0 || !self.shared.healthy.load(Ordering::Relaxed) {
            return;
        }
        let (seq, head) = self.journal.chain_head();
        let snapshot = Snapshot {
            resume: ResumePoint { seq, head, record: self.journal.last_record() },
            state: self.engine.state(),
        };
        let started = Instant::now();
        match self.journal.sync().and_then(|()| snapshot::write(&self.shared.data_dir, &snapshot)) {
            Ok(path) => tracing::info!(seq, path = %path.display(),
                elapsed_ms = started.elapsed().as_millis() as u64, "snapshot written at stop"),
            Err(error) => {
                tracing::warn!(%error, "cannot write a snapshot at stop (the next start replays more)")
            }
        }
    }

    /// Looks up everything the group needs that is not in memory (see `engine::Prefetched`).
    fn prefetch(&mut self, group: &[Command]) -> Result<Prefetched, LedgerError> {
        let mut wanted = Wanted::default();
        for command in group {
            match command {
                Command::CreateTransfers { batch, .. } => self.engine.wanted(batch, &mut wanted),
                Command::Call(job) => job.wanted(&self.engine, &mut wanted),
                _ => {}
            }
        }
        let mut prefetched = Prefetched::default();
        let shared = &self.shared;
        let currency_of = |account: AccountId| self.engine.account(account).map(|a| a.currency);
        let mut locations = Vec::new();
        let mut pending_seen = crate::hashing::HashSet::default();
        for (id, is_pending) in
            wanted.ids.iter().map(|id| (*id, false)).chain(wanted.pendings.iter().map(|id| (*id, true)))
        {
            if is_pending && !pending_seen.insert(id) {
                continue;
            }
            locations.clear();
            if let Some(recent) = self.overlay.ids.get(&id) {
                locations.extend_from_slice(recent);
            }
            locations.extend(shared.index.locations(id)?);
            locations.sort_unstable();
            locations.dedup();
            for location in &locations {
                prefetch_op(&mut prefetched, id, self.reader.read_op(*location)?, currency_of);
            }
            if is_pending && !self.engine.is_live_pending(id) {
                let resolved = match self.overlay.resolved.get(&id) {
                    Some(r) => Some(*r),
                    None => match shared.index.pending_state(id)? {
                        Some(state) if state != PendingState::Pending => prefetched
                            .committed
                            .get(&id)
                            .map(|record| (state, record.effect.debit_account_id)),
                        _ => None,
                    },
                };
                if let Some(resolved) = resolved {
                    prefetched.resolved.insert(id, resolved);
                }
            }
        }
        Ok(prefetched)
    }

    async fn commit(&mut self, group: &mut Vec<Command>, out: &mut Output) {
        out.clear();
        if !self.shared.healthy.load(Ordering::Relaxed) {
            for command in group.drain(..) {
                command.fail(LedgerError::Unavailable("a durable write failed; restart the server".into()));
            }
            return;
        }
        self.overlay.prune(self.shared.index.applied_seq());
        // Prefetch first: nothing has changed yet if it fails.
        let prefetched = match self.prefetch(group) {
            Ok(prefetched) => prefetched,
            Err(error) => {
                tracing::error!(%error, "cannot read the index; the group is refused");
                for command in group.drain(..) {
                    command.fail(LedgerError::Storage(format!("reading the index: {error}")));
                }
                return;
            }
        };
        let replies = self.run_group(group, &prefetched, out);
        if out.is_empty() {
            self.engine.store_caught_up();
            self.land(replies, None);
            return;
        }
        debug_assert!(self.engine.check_invariants().is_ok());
        self.write(replies, out).await;
    }

    /// The commit phase: due expiries, then every command of the group on the engine, in order.
    fn run_group(
        &mut self,
        group: &mut Vec<Command>,
        prefetched: &Prefetched,
        out: &mut Output,
    ) -> Vec<Box<dyn Reply>> {
        let now = now_ns();
        self.engine.expire_due(now, out);
        let mut replies: Vec<Box<dyn Reply>> = Vec::with_capacity(group.len());
        for command in group.drain(..) {
            match command {
                Command::CreateAccounts { actor, batch, reply } => {
                    replies.push(answer(reply, self.engine.create_accounts(&actor, batch, now, out)));
                }
                Command::CreateTransfers { actor, batch, reply } => {
                    let outcomes = self.engine.create_transfers(prefetched, &actor, &batch, now, out);
                    replies.push(answer(reply, outcomes));
                }
                Command::CloseAccount { actor, id, reply } => {
                    replies.push(answer(reply, self.engine.close_account(&actor, id, now, out)));
                }
                Command::Call(job) => replies.push(job.run(&mut self.engine, prefetched, now, out)),
            }
        }
        replies
    }

    /// Writes the group's record (the next sequence number) and hands the group on to land.
    async fn write(&mut self, replies: Vec<Box<dyn Reply>>, out: &mut Output) {
        let seq = self.seq + 1;
        let flush_started = Instant::now();
        if let Err(error) = self.append(seq, &out.ops).await {
            return self.refuse_unwritten(seq, error, replies, out);
        }
        let written = self.written(seq, out, flush_started.elapsed());
        self.land(replies, Some(written));
    }

    /// The group's record could not be appended: nothing of it is acknowledged.
    fn refuse_unwritten(
        &mut self,
        seq: u64,
        error: Appended,
        replies: Vec<Box<dyn Reply>>,
        out: &mut Output,
    ) {
        match error {
            Appended::Local(error) => {
                // The in-memory state is ahead of what is durable: stop taking writes. Restart
                // recovers exactly what the journal holds.
                tracing::error!(%error, "durable write failed; refusing further writes");
                self.shared.healthy.store(false, Ordering::Relaxed);
                for reply in replies {
                    reply.fail(LedgerError::Unavailable(format!("durable write failed: {error}")));
                }
            }
            Appended::Store(error) => {
                // Fenced (another node leads) or unknown (the store went away): nothing of this
                // group is acknowledged, and this node steps down.
                tracing::error!(seq, %error, "the journal of record refused or lost the append; stepping down");
                let refusal = match &error {
                    StoreError::Fenced(_) => LedgerError::NotLeader(None),
                    other => LedgerError::Unavailable(format!(
                        "the outcome of this write is unknown ({other}); retry it with the same ids"
                    )),
                };
                for reply in replies {
                    reply.fail(refusal.clone());
                }
                self.step_down_dirty(out);
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        let due = self.snapshot_due.events >= self.snapshot_events
            || (self.snapshot_due.events > 0
                && self.snapshot_due.since.elapsed() >= Duration::from_millis(SNAPSHOT_INTERVAL_MS));
        if !due {
            return;
        }
        let (seq, head) = self.journal.chain_head();
        let snapshot = Snapshot {
            resume: ResumePoint { seq, head, record: self.journal.last_record() },
            state: self.engine.state(),
        };
        // A snapshot still being written: skip this one (the next is due soon).
        if self.to_snapshots.try_send(snapshot).is_ok() {
            self.snapshot_due = SnapshotDue { events: 0, since: Instant::now() };
        }
    }
}

/// Takes `items`, leaving an empty vector with room for as many.
fn take_sized<T>(items: &mut Vec<T>) -> Vec<T> {
    let capacity = items.len();
    std::mem::replace(items, Vec::with_capacity(capacity))
}

/// The engine state a snapshot would hold now (tests).
#[doc(hidden)]
pub fn engine_state_for_tests(engine: &Engine) -> EngineState {
    engine.state()
}
