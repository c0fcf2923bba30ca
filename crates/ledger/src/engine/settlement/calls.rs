//! The settlement commands and reads, one type each. The answer type follows from the command
//! (`Call::Answer`: the answer or a `SettlementRefusal`), so a caller never matches on a response it did not ask for: a
//! `Settle` answers a [`WindowChange`], a `ListWindows` a page of [`WindowView`]s.
//!
//! Each call runs on the writer thread like a transfer batch (`Ledger::settlement`): reads see
//! exactly the committed state, and the ops a command makes are journaled before it answers.

use std::collections::BTreeMap;

use puente_money::CurrencyCode;

use super::{
    Engine, Output, ParticipantProfile, Prefetched, SettlementRefusal, WINDOW_PAGE_MAX, Wanted, WindowId,
    WindowState, WindowView, settlement_transfer_id,
};
use crate::engine::Call;

/// A window after a command; `changed` is false when the command was already applied (an
/// idempotent retry) or asked for nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowChange {
    pub window: WindowView,
    pub changed: bool,
}

/// Sets (or, unchanged, confirms) a participant's settlement profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetProfile(pub ParticipantProfile);

impl Call for SetProfile {
    type Answer = Result<ParticipantProfile, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, now_ns: u64, out: &mut Output) -> Self::Answer {
        engine.set_profile(self.0, now_ns, out)
    }
}

/// One participant's settlement profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetProfile(pub String);

impl Call for GetProfile {
    type Answer = Result<ParticipantProfile, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, _: u64, _: &mut Output) -> Self::Answer {
        engine.settlement.profiles.get(&self.0).cloned().ok_or(SettlementRefusal::ProfileNotFound(self.0))
    }
}

/// Every participant's settlement profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListProfiles;

impl Call for ListProfiles {
    type Answer = Result<Vec<ParticipantProfile>, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, _: u64, _: &mut Output) -> Self::Answer {
        Ok(engine.settlement.profiles.values().cloned().collect())
    }
}

/// A participant's positions (what it owes, positive) in every currency of its profile or
/// where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions(pub String);

impl Call for Positions {
    type Answer = Result<Vec<(CurrencyCode, i128)>, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, _: u64, _: &mut Output) -> Self::Answer {
        let s = &engine.settlement;
        let mut positions: BTreeMap<CurrencyCode, i128> = BTreeMap::new();
        if let Some(profile) = s.profiles.get(&self.0) {
            positions.extend(profile.currencies.iter().map(|c| (c.currency, 0)));
        }
        if let Some(p) = s.index.get(&self.0) {
            for ((q, currency), v) in &s.exposure {
                if q == p {
                    positions.insert(*currency, *v);
                }
            }
        }
        Ok(positions.into_iter().collect())
    }
}

/// A page of windows (at most [`WINDOW_PAGE_MAX`]) after `after_id`, filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListWindows {
    pub currency: Option<CurrencyCode>,
    pub state: Option<WindowState>,
    pub after_id: WindowId,
    pub limit: usize,
}

impl Call for ListWindows {
    type Answer = Result<Vec<WindowView>, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, _: u64, _: &mut Output) -> Self::Answer {
        let s = &engine.settlement;
        Ok(s.windows
            .range(self.after_id.saturating_add(1)..)
            .map(|(_, w)| w)
            .filter(|w| self.currency.is_none_or(|c| w.currency == c))
            .filter(|w| self.state.is_none_or(|st| w.state == st))
            .take(self.limit.min(WINDOW_PAGE_MAX))
            .map(|w| s.view(w, false))
            .collect())
    }
}

/// One window, with its flows between participants when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetWindow {
    pub window_id: WindowId,
    pub with_flows: bool,
}

impl Call for GetWindow {
    type Answer = Result<WindowView, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, _: u64, _: &mut Output) -> Self::Answer {
        let s = &engine.settlement;
        let w = s.windows.get(&self.window_id).ok_or(SettlementRefusal::WindowNotFound(self.window_id))?;
        Ok(s.view(w, self.with_flows))
    }
}

/// Closes `window_id` (when given) or the open window of `currency`: OPEN → CLOSING and the
/// next window opens. A window already past OPEN is returned unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseWindow {
    pub window_id: Option<WindowId>,
    pub currency: Option<CurrencyCode>,
}

impl Call for CloseWindow {
    type Answer = Result<WindowChange, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, now_ns: u64, out: &mut Output) -> Self::Answer {
        engine.close_window(self.window_id, self.currency, now_ns, out)
    }
}

/// Ends closing: CLOSING or FAILED → CLOSED (when `failure` is None and every participant has
/// a settlement profile for the currency) or → FAILED with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishClose {
    pub window_id: WindowId,
    pub failure: Option<String>,
}

impl Call for FinishClose {
    type Answer = Result<WindowChange, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, now_ns: u64, out: &mut Output) -> Self::Answer {
        engine.finish_close(self.window_id, self.failure, now_ns, out)
    }
}

/// CLOSED or ABORTED → SETTLING (settlement transfers posted) or → ABORTED (refused). SETTLING
/// and SETTLED are returned unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    pub window_id: WindowId,
}

impl Call for Settle {
    type Answer = Result<WindowChange, SettlementRefusal>;

    /// The ids of the transfers it would post (a retry finds them committed).
    fn wanted(&self, engine: &Engine, wanted: &mut Wanted) {
        let s = &engine.settlement;
        let Some(w) = s.windows.get(&self.window_id) else { return };
        for p in w.positions.keys() {
            wanted.ids.push(settlement_transfer_id(self.window_id, w.attempts, &s.names[*p as usize]));
        }
    }

    fn run(
        self,
        engine: &mut Engine,
        prefetched: &Prefetched,
        now_ns: u64,
        out: &mut Output,
    ) -> Self::Answer {
        engine.settle(prefetched, self.window_id, now_ns, out)
    }
}

/// Records a participant's confirmation that its settlement payment completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub window_id: WindowId,
    pub participant: String,
}

impl Call for Confirm {
    type Answer = Result<WindowChange, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, now_ns: u64, out: &mut Output) -> Self::Answer {
        engine.confirm(self.window_id, self.participant, now_ns, out)
    }
}

/// SETTLING or REJECTED → REJECTED with `reason` (a settlement payment was rejected by its
/// bank). The same reason again, or a SETTLED window, is returned unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectPayments {
    pub window_id: WindowId,
    pub reason: String,
}

impl Call for RejectPayments {
    type Answer = Result<WindowChange, SettlementRefusal>;

    fn run(self, engine: &mut Engine, _: &Prefetched, now_ns: u64, out: &mut Output) -> Self::Answer {
        engine.reject_payments(self.window_id, self.reason, now_ns, out)
    }
}
