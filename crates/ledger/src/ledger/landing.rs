//! After the engine ran a group and its record is durable (`fdatasync`'d here, or committed
//! in the journal of record): the group *lands*. Readers see its state, its callers are
//! answered, then its record goes to the feed and the indexer. Nothing of a group is visible
//! or acknowledged before its record is durable, and groups land in journal order.
//!
//! A syncer thread that made group n durable while the writer ran group n+1 was built and
//! measured (issue 12, BENCHMARKS.md "Storage v2"): on this 2-core machine, where the writer
//! is CPU-bound and an `fdatasync` takes a fraction of a millisecond, it gained nothing and
//! cost a thread hop per group, so the writer syncs and lands each group itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Account, Credentials, IndexBatch, Output, Reply, TransferRecord, Writer};
use crate::journal::ChainHash;

/// A journal record just made durable, and what becomes visible with it.
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
    /// How long writing the record and making it durable took.
    flush: Duration,
}

impl Writer {
    /// The group's record `seq` is durable: what lands with it. The writer's own bookkeeping
    /// (sequence, recent ids, snapshot schedule) moves on here.
    pub(super) fn written(&mut self, seq: u64, out: &mut Output, flush: Duration) -> Written {
        self.seq = seq;
        let touched = &mut out.touched_accounts;
        touched.sort_unstable();
        touched.dedup();
        // Sized up front: grown from empty, ten thousand accounts were copied again and again.
        let mut accounts = Vec::with_capacity(touched.len());
        accounts.extend(touched.iter().filter_map(|id| self.engine.account(*id).cloned()));
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
            flush,
        }
    }

    /// Lands the group (its record, if it wrote one, is durable), then takes a snapshot if one
    /// is due.
    pub(super) fn land(&mut self, replies: Vec<Box<dyn Reply>>, written: Option<Written>) {
        match written {
            Some(written) => self.land_written(replies, written),
            None => replies.into_iter().for_each(|reply| reply.send()),
        }
        self.maybe_snapshot();
    }

    /// Readers see the group, its callers are answered, then the feed and the indexer get its
    /// record.
    fn land_written(&self, replies: Vec<Box<dyn Reply>>, written: Written) {
        let shared = &*self.shared;
        let flush = written.flush;
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
        if self.to_indexer.send(written.index).is_err() {
            tracing::error!("the indexer stopped; refusing further writes");
            shared.healthy.store(false, Ordering::Relaxed);
        }
    }
}
