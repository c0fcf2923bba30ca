//! `puente.v1.OperationsService`: the server's own state for operators (`puente status`):
//! version, store size, chain head, recovery, writes and requests since start, the last
//! netting run. Operators only (`access::access`).

use std::sync::atomic::Ordering;

use crate::grpc::operations_service_server::OperationsService;
use puente_ledger::Ledger;
use puente_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert::timestamp;

pub struct OperationsApi {
    ledger: Ledger,
    started_at_ns: u64,
}

impl OperationsApi {
    /// `started_at_ns`: when the server process started serving (Unix nanoseconds).
    pub fn new(ledger: Ledger, started_at_ns: u64) -> OperationsApi {
        OperationsApi { ledger, started_at_ns }
    }

    /// The status now (what `GetServerStatus` answers).
    pub fn status(&self) -> pb::GetServerStatusResponse {
        let stats = self.ledger.stats();
        let recovery = self.ledger.recovery();
        let (chain_head_seq, chain_head) = self.ledger.chain_head();
        let counters = crate::metrics::status_counters();
        let flush_mean_us = if counters.flushes == 0 {
            0
        } else {
            (counters.flush_seconds_sum * 1_000_000.0 / counters.flushes as f64).round() as u64
        };
        pb::GetServerStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            start_time: timestamp(self.started_at_ns),
            healthy: self.ledger.is_healthy(),
            journal_bytes: stats.journal_bytes.load(Ordering::Relaxed),
            store_bytes: self.ledger.size_on_disk(),
            chain_head_seq,
            chain_head_sha256: puente_ledger::journal::chain_hex(&chain_head),
            recovered_journal_entries: recovery.journal_entries,
            recovery_ms: recovery.elapsed_ms,
            group_commits: stats.commits.load(Ordering::Relaxed),
            committed_events: stats.events.load(Ordering::Relaxed),
            flush_mean_us,
            requests: counters.requests,
            requests_not_ok: counters.requests_not_ok,
            last_netting_efficiency_bps: counters.last_netting_efficiency_bps,
            last_netting_run_time: timestamp(counters.last_run_unix_seconds.saturating_mul(1_000_000_000)),
        }
    }
}

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    async fn get_server_status(
        &self,
        request: Request<pb::GetServerStatusRequest>,
    ) -> Result<Response<pb::GetServerStatusResponse>, Status> {
        // The auth layer lets only operators through; the caller is checked again here.
        crate::auth::caller(&request)?;
        let ledger = self.ledger.clone();
        let this = OperationsApi { ledger, started_at_ns: self.started_at_ns };
        // size_on_disk walks the data directory: off the async threads.
        let status = tokio::task::spawn_blocking(move || this.status())
            .await
            .map_err(|e| Status::internal(format!("status task failed: {e}")))?;
        Ok(Response::new(status))
    }
}
