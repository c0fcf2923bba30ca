//! The writer with a journal of record elsewhere (`replica`): appending under the lease,
//! keeping the lease, stepping down, and following the leader as a standby.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Command, Journal, Lease, Writer, load_newest_snapshot};
use crate::LedgerError;
use crate::engine::{Op, Output};
use crate::queue::FairQueue;
use crate::replica::{FOLLOW_PAGE_RECORDS, FOLLOW_POLL_MS, LeaderInfo, RecordStore, Role, StoreError};

/// Why an append failed.
pub(super) enum Appended {
    /// The local journal (disk full, I/O error): the node stops taking writes.
    Local(LedgerError),
    /// The journal of record (fenced, or unreachable: the outcome is unknown).
    Store(StoreError),
}

impl Writer {
    fn store(&self) -> Option<Arc<dyn RecordStore>> {
        self.config.record_store.clone()
    }

    /// Appends the record `seq` holding `ops`: to the journal of record first (when there is
    /// one), then to the local journal, both durable before this returns.
    pub(super) async fn append(&mut self, seq: u64, ops: &[Op]) -> Result<(), Appended> {
        let Some(store) = self.store() else {
            // The journal here is the record: written, then `fdatasync`'d before anything else.
            self.journal.append(seq, ops, &mut self.locations).map_err(Appended::Local)?;
            if let Some(hook) = &self.config.sync_hook {
                (hook.0)().map_err(|error| Appended::Local(error.into()))?;
            }
            return self.journal.sync().map_err(Appended::Local);
        };
        let record = self.journal.prepare(seq, ops).map_err(Appended::Local)?;
        store.append(seq, record).await.map_err(Appended::Store)?;
        self.journal.write_prepared(seq, &mut self.locations).map_err(Appended::Local)
    }

    /// Before a group: while leading, the lease must be valid by this node's clock (renewed
    /// when due). `false`: this node no longer leads (it stepped down cleanly: its state is
    /// exactly its journal's).
    pub(super) async fn keep_lease(&mut self) -> bool {
        let (Some(store), Some(lease)) = (self.store(), &self.lease) else { return true };
        let now = Instant::now();
        if now < lease.renew_at {
            return true;
        }
        let asked = Instant::now();
        match store.renew().await {
            Ok(true) => {
                self.lease = Some(lease_from(asked, store.lease_ms()));
                true
            }
            Ok(false) => {
                tracing::warn!(node = store.node(), "the lease was taken over; stepping down");
                self.become_standby(None);
                false
            }
            Err(error) if asked < lease.valid_until => {
                // Still ours by our own clock: try again at the next group.
                tracing::warn!(%error, "cannot renew the lease; retrying");
                true
            }
            Err(error) => {
                tracing::error!(%error, "the lease lapsed without a renewal; stepping down");
                self.become_standby(None);
                false
            }
        }
    }

    /// The engine ran a group that was not appended: rebuild it from the local journal (which
    /// holds exactly what the journal of record accepted from this node) and follow.
    pub(super) fn step_down_dirty(&mut self, out: &mut Output) {
        out.clear();
        self.become_standby(None);
        if let Err(error) = self.reload() {
            tracing::error!(%error, "cannot rebuild the state from the local journal; refusing everything");
            self.shared.healthy.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn become_standby(&mut self, leader: Option<LeaderInfo>) {
        self.lease = None;
        self.shared.role.send_replace(Role::Standby { leader });
    }

    /// Loads the newest snapshot and replays the local journal after it, as a start would (the
    /// index and the readers' views only ever saw durable records and stay as they are).
    fn reload(&mut self) -> Result<(), LedgerError> {
        let (mut engine, resume) = load_newest_snapshot(&self.config)?;
        let from = resume.map_or(0, |r| r.seq);
        let mut out = Output::default();
        let (mut journal, stats) = Journal::open(&self.config.data_dir, resume, |replayed| {
            if replayed.seq > from {
                out.clear();
                for op in replayed.ops {
                    engine.apply(op, &mut out);
                }
                engine.store_caught_up();
            }
            Ok(())
        })?;
        journal.cut_tail()?;
        journal.set_sync_each_record(false);
        if stats.last_seq != self.seq {
            return Err(LedgerError::Corrupt(format!(
                "the local journal ends at {} but {} records were committed",
                stats.last_seq, self.seq
            )));
        }
        self.engine = engine;
        self.journal = journal;
        tracing::info!(seq = self.seq, "state rebuilt from the local journal after stepping down");
        Ok(())
    }

    /// One round as a standby: refuse queued writes, copy new records from the journal of
    /// record, and take the lease if it lapsed. Breaks when every handle is gone.
    pub(super) async fn stand_by(
        &mut self,
        queue: &FairQueue<Command>,
        handles_gone: &mut mpsc::Receiver<()>,
        out: &mut Output,
    ) -> ControlFlow<()> {
        let Some(store) = self.store() else { return ControlFlow::Continue(()) };
        self.refuse_queued(queue);
        if !self.shared.healthy.load(std::sync::atomic::Ordering::Relaxed) {
            return wait(queue, handles_gone, Duration::from_millis(FOLLOW_POLL_MS)).await;
        }
        match self.follow(store.as_ref(), u64::MAX, out).await {
            Ok(true) => return ControlFlow::Continue(()), // more to copy
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot follow the journal of record");
                return wait(queue, handles_gone, Duration::from_millis(FOLLOW_POLL_MS)).await;
            }
        }
        // One read per poll while another node's lease is live; the lease row is written only
        // when it lapsed (or is this node's).
        match store.leader().await {
            Ok(Some(leader)) if leader.node != store.node() => {
                if self.shared.role.borrow().clone() != (Role::Standby { leader: Some(leader.clone()) }) {
                    self.shared.role.send_replace(Role::Standby { leader: Some(leader) });
                }
                return wait(queue, handles_gone, Duration::from_millis(FOLLOW_POLL_MS)).await;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the lease of the journal of record");
                return wait(queue, handles_gone, Duration::from_millis(FOLLOW_POLL_MS)).await;
            }
        }
        match store.try_lead().await {
            Ok(Some(last_seq)) => {
                if self.lead(store.as_ref(), last_seq, out).await {
                    ControlFlow::Continue(())
                } else {
                    wait(queue, handles_gone, Duration::from_millis(FOLLOW_POLL_MS)).await
                }
            }
            // Taken between the read and the attempt: known at the next poll.
            Ok(None) => wait(queue, handles_gone, Duration::from_millis(FOLLOW_POLL_MS)).await,
            Err(error) => {
                tracing::warn!(%error, "cannot reach the journal of record to take the lease");
                wait(queue, handles_gone, Duration::from_millis(FOLLOW_POLL_MS)).await
            }
        }
    }

    /// The lease was just taken, the store holding `last_seq` records: lead with every one of
    /// them (copied first), or seed an empty store with this node's journal. `false`: this
    /// node stepped down again and tries later.
    async fn lead(&mut self, store: &dyn RecordStore, last_seq: u64, out: &mut Output) -> bool {
        let asked = Instant::now();
        self.lease = Some(lease_from(asked, store.lease_ms()));
        // Lead only with every record the store holds.
        while self.seq < last_seq {
            if let Err(error) = self.follow(store, last_seq, out).await {
                tracing::error!(%error, "cannot catch up before leading; stepping down");
                let _ = store.step_down().await;
                self.become_standby(None);
                return false;
            }
        }
        if self.seq > last_seq && last_seq == 0 {
            // An empty journal of record and a node with history: a single node turned into
            // the first of a cluster. Its journal becomes the record.
            if let Err(error) = self.seed(store).await {
                tracing::error!(%error, "cannot copy this node's journal into the journal of record");
                let _ = store.step_down().await;
                self.become_standby(None);
                return false;
            }
        } else if self.seq > last_seq {
            tracing::error!(
                local = self.seq,
                store = last_seq,
                "the local journal is ahead of the journal of record: refusing to lead"
            );
            let _ = store.step_down().await;
            self.become_standby(None);
            self.shared.healthy.store(false, std::sync::atomic::Ordering::Relaxed);
            return true;
        }
        tracing::info!(node = store.node(), seq = self.seq, "leading");
        self.shared.role.send_replace(Role::Leader);
        true
    }

    /// Copies this node's whole journal, record by record (exact bytes), into an empty journal
    /// of record, under the lease just taken.
    async fn seed(&mut self, store: &dyn RecordStore) -> Result<(), LedgerError> {
        self.journal.sync()?;
        let mut records = crate::journal::RecordBytes::new(&self.config.data_dir)?;
        let mut copied = 0u64;
        while let Some((seq, record)) = records.next_record()? {
            if seq > self.seq {
                break;
            }
            store.append(seq, &record).await.map_err(|e| LedgerError::Unavailable(e.to_string()))?;
            copied = seq;
        }
        if copied != self.seq {
            return Err(LedgerError::Corrupt(format!(
                "copied {copied} records into the journal of record, but this node holds {}",
                self.seq
            )));
        }
        tracing::info!(records = copied, "this node's journal is now the journal of record");
        Ok(())
    }

    /// Writes that reached the queue before this node stood by: refused, naming the leader.
    fn refuse_queued(&self, queue: &FairQueue<Command>) {
        if queue.is_empty() {
            return;
        }
        let leader = match &*self.shared.role.borrow() {
            Role::Standby { leader } => leader.clone(),
            _ => None,
        };
        let mut admitted = Vec::new();
        while queue.take(usize::MAX, &mut admitted) > 0 {
            for item in admitted.drain(..) {
                let (command, _room) = item.into_parts();
                command.fail(LedgerError::NotLeader(leader.clone()));
            }
        }
    }

    /// Copies one page of records after this node's last (up to `until`) into the local
    /// journal and applies them. `true` when a full page came (there may be more).
    async fn follow(
        &mut self,
        store: &dyn RecordStore,
        until: u64,
        out: &mut Output,
    ) -> Result<bool, LedgerError> {
        let records = store
            .read_after(self.seq, FOLLOW_PAGE_RECORDS)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        let full = records.len() == FOLLOW_PAGE_RECORDS;
        for (seq, record) in records {
            if seq > until {
                break;
            }
            self.apply_replicated(seq, &record, out)?;
        }
        Ok(full)
    }

    /// One record from the journal of record: checked and written locally, then applied and
    /// published exactly as the leader did when it committed it.
    fn apply_replicated(&mut self, seq: u64, record: &[u8], out: &mut Output) -> Result<(), LedgerError> {
        let started = Instant::now();
        let ops = match self.journal.append_record(seq, record, &mut self.locations) {
            Ok(ops) => ops,
            Err(error) => {
                // A record that does not chain onto ours: this node's journal and the store's
                // disagree. Serving on would mean serving another history.
                tracing::error!(seq, %error, "a record from the journal of record was refused");
                self.shared.healthy.store(false, std::sync::atomic::Ordering::Relaxed);
                return Err(error);
            }
        };
        out.clear();
        let engine = &mut self.engine;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            for op in ops {
                engine.apply(op, out);
            }
        }));
        if applied.is_err() {
            self.shared.healthy.store(false, std::sync::atomic::Ordering::Relaxed);
            return Err(LedgerError::Corrupt(format!(
                "journal entry {seq} cannot be applied to the state before it"
            )));
        }
        let written = self.written(seq, out, started.elapsed());
        self.land(Vec::new(), Some(written));
        Ok(())
    }
}

/// Keeps a snapshot in the journal of record too, for nodes that join (`replica::join`). From
/// the snapshot thread: a failure only means a joining node replays more.
pub(super) fn keep_snapshot_in_store(store: &dyn RecordStore, snapshot: &crate::snapshot::Snapshot) {
    let seq = snapshot.resume.seq;
    let kept = crate::snapshot::encode(snapshot).map_err(|e| e.to_string()).and_then(|body| {
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
        runtime.block_on(store.put_snapshot(seq, &body)).map_err(|e| e.to_string())
    });
    match kept {
        Ok(()) => tracing::info!(seq, "snapshot kept in the journal of record"),
        Err(error) => tracing::warn!(seq, %error, "cannot keep the snapshot in the journal of record"),
    }
}

fn lease_from(asked: Instant, lease_ms: u64) -> Lease {
    let lease = Duration::from_millis(lease_ms);
    // Counted from when the request was sent: the store's clock started it later, never earlier.
    Lease { valid_until: asked + lease * 2 / 3, renew_at: asked + lease / 3 }
}

/// Waits `for_duration`, or until a command arrives (to refuse it) or every handle is gone.
async fn wait(
    queue: &FairQueue<Command>,
    handles_gone: &mut mpsc::Receiver<()>,
    for_duration: Duration,
) -> ControlFlow<()> {
    tokio::select! {
        _ = queue.ready() => ControlFlow::Continue(()),
        _ = tokio::time::sleep(for_duration) => ControlFlow::Continue(()),
        gone = handles_gone.recv() => {
            if gone.is_none() && queue.is_empty() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        }
    }
}
