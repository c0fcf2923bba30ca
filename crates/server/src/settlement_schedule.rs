//! The settlement desk's background work: the cutoff scheduler (closes every open window at a
//! wall-clock time in a named time zone) and the settlement gauges it refreshes (every 10 s
//! and after each run). Kept apart from the desk so that the desk knows nothing of metrics.

use std::time::Duration;

use puente_ledger::settlement::{self as st, WindowId, WindowState};

use crate::settlement_desk::SettlementDesk;

/// How often the open-window gauges are refreshed.
const METRICS_REFRESH: Duration = Duration::from_secs(10);

/// The settlement background task: refreshes the open-window metrics every
/// [`METRICS_REFRESH`] and, when a cutoff is configured, closes every open window at each
/// cutoff. Stops when the ledger becomes unhealthy.
pub fn spawn_scheduler(settlement: SettlementDesk) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let cutoff = settlement.config().cutoff.clone();
        let mut next_cutoff = None;
        loop {
            let now = puente_ledger::now_ns();
            if let Some(cutoff) = &cutoff {
                match next_cutoff {
                    Some(at) if at <= now => {
                        match settlement.close_all_open().await {
                            Ok(closed) => {
                                tracing::info!(windows = closed.len(), "settlement cutoff: windows closed")
                            }
                            Err(error) => {
                                tracing::error!(%error, "settlement cutoff failed; retrying at the next one")
                            }
                        }
                        next_cutoff = None;
                        continue;
                    }
                    Some(_) => {}
                    None => match cutoff.next_after(now) {
                        Ok(at) => {
                            let in_s = (at - now) / 1_000_000_000;
                            tracing::info!(zone = cutoff.zone_name(), in_s, "settlement: next cutoff");
                            next_cutoff = Some(at);
                        }
                        Err(error) => tracing::error!(%error, "settlement schedule: no next cutoff"),
                    },
                }
            }
            refresh(&settlement).await;
            let wait =
                next_cutoff.map(|at| Duration::from_nanos(at.saturating_sub(now))).unwrap_or(METRICS_REFRESH);
            tokio::time::sleep(wait.min(METRICS_REFRESH)).await;
            if !settlement.ledger().is_healthy() {
                return;
            }
        }
    })
}

/// Sets the open-window gauges (`puente_settlement_open_*`) and the window and Net Debit Cap
/// gauges (`settlement_metrics`).
pub async fn refresh(desk: &SettlementDesk) {
    let call = st::ListWindows {
        currency: None,
        state: Some(WindowState::Open),
        after_id: 0,
        limit: st::WINDOW_PAGE_MAX,
    };
    crate::settlement_metrics::refresh(desk).await;
    let Ok(open) = desk.call(call).await else { return };
    crate::metrics::set_open_windows(open.len() as u64);
    for w in &open {
        crate::metrics::set_open_window_transfers(w.currency.as_str(), w.obligation_count);
        crate::metrics::set_open_window_gross_minor(w.currency.as_str(), w.gross_value_minor);
    }
}

/// Records a settlement run in the metrics (netting efficiency of the window, time).
pub async fn record_run(desk: &SettlementDesk, window_id: WindowId) {
    if let Ok(report) = desk.report(window_id, None).await {
        let bps = report.netting.currencies.first().map(|c| c.multilateral_efficiency_bps).unwrap_or(0);
        crate::metrics::set_last_netting_run(bps, puente_ledger::now_ns() / 1_000_000_000);
    }
    refresh(desk).await;
}
