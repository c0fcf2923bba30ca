//! The settlement gauges that need a look at the engine's state, refreshed with the open-window
//! gauges (every 10 s and after each run): windows per state (SETTLED left out: its count only
//! grows) and every profiled participant's net debit position against its Net Debit Cap.

use puente_ledger::settlement::{ListWindows, Positions, WINDOW_PAGE_MAX, WindowState};

use crate::metrics::PARTICIPANT_LABELS_MAX;
use crate::settlement_desk::SettlementDesk;

/// The states counted by `puente_settlement_windows`.
const COUNTED_STATES: [WindowState; 7] = [
    WindowState::Open,
    WindowState::Closing,
    WindowState::Closed,
    WindowState::Settling,
    WindowState::Rejected,
    WindowState::Aborted,
    WindowState::Failed,
];

/// Refreshes `puente_settlement_windows` and the Net Debit Cap gauges; on an error the gauges
/// keep their last values.
pub async fn refresh(settlement: &SettlementDesk) {
    let mut counts = Vec::with_capacity(COUNTED_STATES.len());
    for state in COUNTED_STATES {
        let mut count = 0u64;
        let mut after_id = 0;
        loop {
            let call = ListWindows { currency: None, state: Some(state), after_id, limit: WINDOW_PAGE_MAX };
            let Ok(page) = settlement.call(call).await else { return };
            count += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == WINDOW_PAGE_MAX => after_id = last.id,
                _ => break,
            }
        }
        counts.push((state.code(), count));
    }
    crate::metrics::set_window_states(&counts);

    let Ok(profiles) = settlement.profiles().await else { return };
    // Positions of every profiled participant at once: the requests join the same writer group.
    let mut tasks = tokio::task::JoinSet::new();
    for profile in profiles.values().take(PARTICIPANT_LABELS_MAX) {
        let settlement = settlement.clone();
        let participant = profile.participant.clone();
        tasks.spawn(async move {
            let positions = settlement.call(Positions(participant.clone())).await;
            (participant, positions)
        });
    }
    let mut rows = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((participant, Ok(positions))) = joined else { continue };
        let Some(profile) = profiles.get(&participant) else { continue };
        for c in &profile.currencies {
            let position =
                positions.iter().find(|(code, _)| *code == c.currency).map(|(_, v)| *v).unwrap_or(0);
            rows.push((participant.clone(), c.currency.to_string(), position, c.net_debit_cap_minor));
        }
    }
    crate::metrics::set_net_debit_positions(&rows);
}
