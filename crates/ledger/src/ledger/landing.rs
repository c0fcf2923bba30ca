//! After the engine ran a group: how its record becomes durable, visible and answered.
//!
//! With the journal on this node (no journal of record elsewhere), the writer does not wait
//! for the `fdatasync`: it writes the group's record, hands the group to the **syncer** thread
//! and runs the next group's engine work while the disk syncs (a pipeline of at most
//! [`PIPELINE_GROUPS_MAX`] groups written ahead of durability). The syncer makes them durable
//! (one `fdatasync` for every group waiting), then, in journal order, publishes each group's
//! state to readers, answers its callers, and hands its record to the feed and the indexer.
//! Nothing is visible to a reader or acknowledged before its record is durable, and groups
//! land in the order they were written: a group's answers wait for every earlier group, even
//! when it wrote nothing itself (a retry answered from memory may rest on an earlier group).
//!
//! With a journal of record elsewhere, the record is durable once the store took it: the
//! writer lands the group itself, right away ([`Writer::land_now`]).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use super::{
    Account, Credentials, IndexBatch, LedgerError, Output, Reply, Shared, SyncHook, TransferRecord, Writer,
};
use crate::journal::ChainHash;

/// Most groups written to the journal and not yet durable: the writer runs ahead of the disk
/// by at most this many groups, then waits for the syncer.
pub const PIPELINE_GROUPS_MAX: usize = 2;
/// Most groups one `fdatasync` covers: those waiting, plus the one the syncer took.
const SYNC_GROUPS_MAX: usize = PIPELINE_GROUPS_MAX + 1;

/// A group whose fate is the journal's: its answers, and its record when it wrote one.
pub(super) struct Landing {
    replies: Vec<Box<dyn Reply>>,
    written: Option<Written>,
}

/// A journal record written by the writer, and what becomes visible once it is durable.
pub(super) struct Written {
    seq: u64,
    head: ChainHash,
    journal_bytes: u64,
    /// The accounts the group touched, as they stand after it.
    accounts: Vec<Account>,
    /// The credentials in force after it, when the group changed them.
    credentials: Option<Arc<Credentials>>,
    /// Every balance change of the group, for the feed.
    records: Vec<TransferRecord>,
    index: IndexBatch,
    /// The segment to `fdatasync`; `None` when the record is durable already.
    file: Option<Arc<File>>,
    /// When the writer started writing the record (the flush time runs until it is durable).
    started: Instant,
}

/// The syncer thread's end of the pipeline.
pub(super) struct Syncer {
    to_syncer: SyncSender<Landing>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    pub(super) fn start(
        shared: Arc<Shared>,
        to_indexer: SyncSender<IndexBatch>,
        hook: Option<SyncHook>,
    ) -> std::io::Result<Syncer> {
        let (to_syncer, landings) = std::sync::mpsc::sync_channel(PIPELINE_GROUPS_MAX);
        let thread = std::thread::Builder::new()
            .name("puente-syncer".into())
            .spawn(move || run_syncer(&shared, &to_indexer, &landings, hook.as_ref()))?;
        Ok(Syncer { to_syncer, thread })
    }

    /// Waits until every group handed over has landed (at a stop).
    pub(super) fn finish(self) {
        drop(self.to_syncer);
        if self.thread.join().is_err() {
            tracing::error!("the syncer panicked");
        }
    }
}

impl Writer {
    /// The group's record was written as `seq` (durable or not): what must land with it. The
    /// writer's own bookkeeping (sequence, recent ids, snapshot schedule) moves on now; what
    /// readers and callers see waits for the landing.
    pub(super) fn written(&mut self, seq: u64, out: &mut Output, started: Instant) -> Written {
        self.seq = seq;
        let touched = &mut out.touched_accounts;
        touched.sort_unstable();
        touched.dedup();
        let accounts = touched.iter().filter_map(|id| self.engine.account(*id).cloned()).collect();
        touched.clear();
        let credentials = out.credentials_changed.then(|| Arc::new(self.engine.identity().credentials()));
        self.overlay.add(seq, &out.ops, &self.locations, self.engine.recent_resolved());
        self.engine.store_caught_up();
        self.snapshot_due.events += out.ops.len() as u64;
        let (head_seq, head) = self.journal.chain_head();
        assert_eq!(head_seq, seq, "the journal's head is the record just written");
        Written {
            seq,
            head,
            journal_bytes: self.journal.len_bytes(),
            accounts,
            credentials,
            // Replaced by vectors of the same capacity: the next group is about as large, and
            // growing them again from empty copied megabytes per group.
            records: super::take_sized(&mut out.records),
            index: IndexBatch {
                seq,
                record: self.journal.last_record(),
                head,
                ops: super::take_sized(&mut out.ops),
                locations: super::take_sized(&mut self.locations),
            },
            file: None,
            started,
        }
    }

    /// Lands the group: through the syncer when there is one, else here and now (its record,
    /// if any, is durable already). Then a snapshot, if one is due.
    pub(super) fn land(&mut self, replies: Vec<Box<dyn Reply>>, written: Option<Written>) {
        let landing = Landing { replies, written };
        match &self.syncer {
            Some(syncer) => {
                if let Err(std::sync::mpsc::SendError(landing)) = syncer.to_syncer.send(landing) {
                    tracing::error!("the syncer stopped; refusing further writes");
                    self.shared.healthy.store(false, Ordering::Relaxed);
                    landing.fail(&LedgerError::Unavailable("the durable write path stopped".into()));
                }
            }
            None => landing.land(&self.shared, &self.to_indexer, Duration::ZERO),
        }
        // A snapshot may hold a group not durable yet: the snapshot thread syncs the journal
        // up to the snapshot's record before it writes the snapshot.
        self.maybe_snapshot();
    }

    /// A record already durable (in the journal of record): lands at once.
    pub(super) fn land_now(
        &mut self,
        seq: u64,
        out: &mut Output,
        replies: Vec<Box<dyn Reply>>,
        started: Instant,
    ) {
        let written = self.written(seq, out, started);
        let landing = Landing { replies, written: Some(written) };
        landing.land(&self.shared, &self.to_indexer, Duration::ZERO);
        self.maybe_snapshot();
    }

    /// The writer writes the group's record, and the syncer makes it durable.
    pub(super) fn pipelined(&self) -> bool {
        self.syncer.is_some()
    }

    /// The open segment, to be synced by the syncer (one handle per segment, shared).
    pub(super) fn segment_file(&mut self) -> Result<Arc<File>, LedgerError> {
        let segment = self.journal.segment();
        if let Some((open, file)) = &self.segment_file
            && *open == segment
        {
            return Ok(file.clone());
        }
        let file = Arc::new(self.journal.try_clone_file()?);
        self.segment_file = Some((segment, file.clone()));
        Ok(file)
    }
}

impl Written {
    pub(super) fn with_file(mut self, file: Arc<File>) -> Written {
        self.file = Some(file);
        self
    }
}

impl Landing {
    /// The record is durable: readers see the group, its callers are answered, then the feed
    /// and the indexer get its record.
    fn land(self, shared: &Shared, to_indexer: &SyncSender<IndexBatch>, synced: Duration) {
        let Landing { replies, written } = self;
        let Some(written) = written else {
            replies.into_iter().for_each(|reply| reply.send());
            return;
        };
        let flush = written.started.elapsed().max(synced);
        let stats = &shared.stats;
        stats.committed_seq.store(written.seq, Ordering::Release);
        *shared.chain_head.lock().unwrap_or_else(|p| p.into_inner()) = (written.seq, written.head);
        stats.last_flush_us.store(flush.as_micros() as u64, Ordering::Relaxed);
        if !written.accounts.is_empty() {
            let mut view = shared.accounts.write().unwrap_or_else(|p| p.into_inner());
            for account in written.accounts {
                view.put(account);
            }
        }
        if let Some(credentials) = written.credentials {
            *shared.credentials.write().unwrap_or_else(|p| p.into_inner()) = credentials;
        }
        let events = written.index.ops.len() as u64;
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.events.fetch_add(events, Ordering::Relaxed);
        stats.last_group_events.store(events, Ordering::Relaxed);
        stats.journal_bytes.store(written.journal_bytes, Ordering::Relaxed);
        if let Some(observer) = stats.commit_hook.0.get() {
            observer.committed(events, flush);
        }
        tracing::debug!(seq = written.seq, ops = events, flush_us = flush.as_micros() as u64, "committed");
        replies.into_iter().for_each(|reply| reply.send());
        // Every balance change, the ledger's own expiries and automatic posts included.
        if !written.records.is_empty() {
            // No subscribers is fine.
            let _ = shared.feed.send(Arc::new(written.records));
        }
        // Backpressure: this waits while the indexer is INDEX_QUEUE_GROUPS groups behind.
        if to_indexer.send(written.index).is_err() {
            tracing::error!("the indexer stopped; refusing further writes");
            shared.healthy.store(false, Ordering::Relaxed);
        }
    }

    fn fail(self, error: &LedgerError) {
        for reply in self.replies {
            reply.fail(error.clone());
        }
    }
}

/// The syncer thread: takes the groups the writer wrote, makes them durable with one
/// `fdatasync` per segment they are in, and lands them in order. After a failed sync nothing
/// more is acknowledged: every group then waiting, and every later one, is refused (the
/// writer stops taking writes; a restart recovers exactly what the journal holds).
fn run_syncer(
    shared: &Shared,
    to_indexer: &SyncSender<IndexBatch>,
    landings: &Receiver<Landing>,
    hook: Option<&SyncHook>,
) {
    let mut batch: Vec<Landing> = Vec::with_capacity(SYNC_GROUPS_MAX);
    let mut failed: Option<LedgerError> = None;
    while let Ok(first) = landings.recv() {
        batch.push(first);
        while batch.len() < SYNC_GROUPS_MAX {
            match landings.try_recv() {
                Ok(landing) => batch.push(landing),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let started = Instant::now();
        if failed.is_none()
            && let Err(error) = sync_files(&batch, hook)
        {
            tracing::error!(%error, "durable write failed; refusing further writes");
            shared.healthy.store(false, Ordering::Relaxed);
            failed = Some(LedgerError::Unavailable(format!("durable write failed: {error}")));
        }
        let synced = started.elapsed();
        for landing in batch.drain(..) {
            match &failed {
                None => landing.land(shared, to_indexer, synced),
                Some(error) => landing.fail(error),
            }
        }
    }
}

/// One `fdatasync` per distinct segment file of the batch (a group commit of groups).
fn sync_files(batch: &[Landing], hook: Option<&SyncHook>) -> std::io::Result<()> {
    let mut synced: Vec<&Arc<File>> = Vec::with_capacity(SYNC_GROUPS_MAX);
    for file in batch.iter().filter_map(|landing| landing.written.as_ref()?.file.as_ref()) {
        if synced.iter().any(|done| Arc::ptr_eq(done, file)) {
            continue;
        }
        if let Some(hook) = hook {
            (hook.0)()?;
        }
        file.sync_data()?;
        synced.push(file);
    }
    Ok(())
}
