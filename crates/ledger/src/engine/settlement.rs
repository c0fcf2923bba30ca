//! Settlement state inside the engine: participant settlement profiles (with a Net Debit Cap
//! per currency), settlement windows, and each participant's net position in unsettled
//! windows.
//!
//! It lives in the engine so that the Net Debit Cap check is atomic with the transfer it
//! guards, and so that every window transition is a journaled op: replay rebuilds windows
//! exactly, and a transition that was already applied is answered as "unchanged", never
//! applied twice (see ARCHITECTURE.md, "Settlement").
//!
//! Rules:
//! - An *obligation* is a committed transfer (single-phase, a post of a pending transfer, or an
//!   automatic post at expiry) whose two accounts belong to different participants, neither of
//!   them the settlement hub ([`HUB_PARTICIPANT`]). It lands in the open window of its currency
//!   (opened on first use; closing a window opens the next one in the same op).
//! - A participant's *position* in a currency (what it owes, positive) is the sum over its
//!   unconfirmed windows of paid − received, plus its pending (reserved) cross-participant
//!   debits. A transfer that would raise the debtor's position above its Net Debit Cap is
//!   refused with `NET_DEBIT_CAP_EXCEEDED`. A participant without a profile for the currency
//!   has no cap.
//! - Window states follow Mojaloop: OPEN → CLOSING → CLOSED → SETTLING → SETTLED, with FAILED
//!   (closing failed: e.g. a participant without a settlement profile) and ABORTED (the
//!   settlement transfers were refused; the window can be settled again later), and REJECTED
//!   (SETTLING, but a settlement payment was reported rejected by its bank: confirmations go on,
//!   and the last one still makes the window SETTLED).
//! - Settling a window is one group of ops in one journal record: per participant with a
//!   non-zero net, one linked transfer between its settlement account and the hub account of
//!   the currency, with ids derived from (window, attempt, participant), then `SettleWindow`.
//!   A confirmation per participant releases its position; the last one makes the window
//!   SETTLED.
//!
//! Size: the settlement window state machine (open, close, settle, confirm, reject) with its
//! commands and their validation, one module as in TigerBeetle's state machine; tests at the end.
//!
//! Size: one state (`SettlementState`) and every op that changes it (profiles, windows,
//! positions and the Net Debit Cap check, settle and confirm), which share its invariants;
//! about 1,150 lines of code, then its tests.

use crate::hashing::HashMap;
use std::collections::BTreeMap;

use puente_money::CurrencyCode;
use serde::{Deserialize, Serialize};

use super::{Engine, Op, Output, Prefetched, Undo, Wanted};
use crate::types::*;

/// The participant that owns the settlement hub accounts (one per currency). Reserved: no
/// client may open an account for it.
pub const HUB_PARTICIPANT: &str = "puente-hub";
pub use crate::limits::BANK_ID_LEN_MAX;
pub use crate::limits::PROFILE_CURRENCIES_MAX;
pub use crate::limits::PROFILE_NAME_LEN_MAX;
pub use crate::limits::WINDOW_PAGE_MAX;
pub use crate::limits::WINDOW_REASON_LEN_MAX;

pub type WindowId = u64;

/// Where a participant is domiciled.
pub use puente_core::Country;

/// How a participant settles one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SettlementRail {
    /// Fedwire Funds (USD); bank id: ABA routing number.
    Fedwire,
    /// FedACH / Directo a México (USD); bank id: ABA routing number.
    AchDirectoMexico,
    /// SPEI (MXN); bank id: CLABE.
    Spei,
}

/// A participant's settlement arrangements for one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyProfile {
    pub currency: CurrencyCode,
    pub rail: SettlementRail,
    /// ABA routing number (Fedwire, ACH) or CLABE (SPEI); check digits are validated by the
    /// settlement crate before the profile reaches the engine.
    pub bank_id: String,
    /// The most the participant's position in this currency may reach, in minor units.
    pub net_debit_cap_minor: u64,
    /// The participant's ledger account that settlement posts its net position to.
    pub settlement_account_id: AccountId,
}

/// A participant's settlement profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantProfile {
    pub participant: String,
    /// Legal name for payment messages (may be empty: the id is used).
    pub name: String,
    /// BIC of the participant's settlement bank (may be empty).
    pub bic: String,
    pub country: Country,
    /// Sorted by currency, at most one per currency.
    pub currencies: Vec<CurrencyProfile>,
    /// When the profile was last set (server-assigned).
    pub updated_at_ns: u64,
}

impl ParticipantProfile {
    pub fn currency(&self, currency: CurrencyCode) -> Option<&CurrencyProfile> {
        self.currencies.iter().find(|c| c.currency == currency)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WindowState {
    Open,
    Closing,
    Closed,
    Settling,
    Settled,
    Aborted,
    Failed,
    /// Settling, but a settlement payment was rejected by its bank (reconciliation of a
    /// pacs.002 RJCT; see the reason). Confirmations go on as in SETTLING.
    Rejected,
}

impl WindowState {
    pub fn code(&self) -> &'static str {
        match self {
            WindowState::Open => "OPEN",
            WindowState::Closing => "CLOSING",
            WindowState::Closed => "CLOSED",
            WindowState::Settling => "SETTLING",
            WindowState::Settled => "SETTLED",
            WindowState::Aborted => "ABORTED",
            WindowState::Failed => "FAILED",
            WindowState::Rejected => "REJECTED",
        }
    }
}

/// Obligations from one participant to another in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub count: u64,
    pub value_minor: u128,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Position {
    paid_minor: u128,
    received_minor: u128,
    paid_count: u64,
    received_count: u64,
    confirmed: bool,
}

impl Position {
    /// What the participant owes (positive) or is owed (negative) for this window.
    fn debit_minor(&self) -> i128 {
        self.paid_minor as i128 - self.received_minor as i128
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    id: WindowId,
    currency: CurrencyCode,
    state: WindowState,
    opened_at_ns: u64,
    closed_at_ns: u64,
    settled_at_ns: u64,
    completed_at_ns: u64,
    first_transfer_ns: u64,
    last_transfer_ns: u64,
    obligation_count: u64,
    gross_value_minor: u128,
    /// Settlement attempts that were refused (each ABORTED adds one); part of the settlement
    /// transfer ids, so a new attempt never collides with a remembered failure.
    attempts: u32,
    reason: String,
    positions: HashMap<u32, Position>,
    /// (debtor, creditor) → flow.
    flows: HashMap<(u32, u32), Flow>,
}

/// One participant's figures in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowPosition {
    pub participant: String,
    pub paid_minor: u128,
    pub received_minor: u128,
    pub paid_count: u64,
    pub received_count: u64,
    /// received − paid: positive means it receives at settlement.
    pub net_minor: i128,
    pub confirmed: bool,
}

/// Obligations from `debtor` to `creditor` in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowFlow {
    pub debtor: String,
    pub creditor: String,
    pub count: u64,
    pub value_minor: u128,
}

/// A window as readers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowView {
    pub id: WindowId,
    pub currency: CurrencyCode,
    pub state: WindowState,
    pub opened_at_ns: u64,
    /// When closing started (0 while open).
    pub closed_at_ns: u64,
    /// When the settlement transfers were posted (0 before).
    pub settled_at_ns: u64,
    /// When the last confirmation arrived (0 before).
    pub completed_at_ns: u64,
    /// Ledger positions (timestamps) of the first and last obligation (0 when none).
    pub first_transfer_ns: u64,
    pub last_transfer_ns: u64,
    pub obligation_count: u64,
    pub gross_value_minor: u128,
    pub attempts: u32,
    /// Why the window FAILED or was ABORTED (empty otherwise).
    pub reason: String,
    /// Sorted by participant.
    pub positions: Vec<WindowPosition>,
    /// Sorted by (debtor, creditor); empty unless asked for.
    pub flows: Vec<WindowFlow>,
}

impl WindowView {
    /// The settlement transfers this window posts (or posted) at its current attempt.
    pub fn settlement_transfer_id(&self, participant: &str) -> TransferId {
        settlement_transfer_id(self.id, self.attempts, participant)
    }
}

/// Why a settlement command was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementRefusal {
    #[error("invalid profile: {field}: {reason}")]
    ProfileInvalid { field: String, reason: String },
    #[error("no settlement profile for participant {0}")]
    ProfileNotFound(String),
    #[error("settlement window {0} not found")]
    WindowNotFound(WindowId),
    #[error("no open settlement window for {0}")]
    NoOpenWindow(CurrencyCode),
    #[error("settlement window {window_id} is {}, expected {expected}", state.code())]
    WrongState { window_id: WindowId, state: WindowState, expected: &'static str },
    #[error("participant {participant} has no position in settlement window {window_id}")]
    ParticipantNotInWindow { window_id: WindowId, participant: String },
    #[error("settlement window {window_id}: no {currency} settlement profile for {}", participants.join(", "))]
    MissingProfiles { window_id: WindowId, currency: CurrencyCode, participants: Vec<String> },
}

mod calls;

pub use calls::{
    CloseWindow, Confirm, FinishClose, GetProfile, GetWindow, ListProfiles, ListWindows, Positions,
    RejectPayments, SetProfile, Settle, WindowChange,
};

/// What a rolled-back linked chain must restore in the settlement state.
pub(super) enum SettlementUndo {
    Exposure((u32, CurrencyCode), i128),
    /// The window as it was (the whole window's bookkeeping cells that a transfer touches).
    Cells {
        window_id: WindowId,
        counters: Box<WindowCounters>,
        positions: Vec<(u32, Option<Position>)>,
        flow: ((u32, u32), Option<Flow>),
    },
    WindowOpened(CurrencyCode, WindowId),
}

pub(super) struct WindowCounters {
    first_transfer_ns: u64,
    last_transfer_ns: u64,
    obligation_count: u64,
    gross_value_minor: u128,
}

/// The engine's settlement state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct SettlementState {
    /// Participant id → dense index (never exposed; replay may number differently).
    index: HashMap<String, u32>,
    names: Vec<String>,
    profiles: BTreeMap<String, ParticipantProfile>,
    windows: BTreeMap<WindowId, Window>,
    open: HashMap<CurrencyCode, WindowId>,
    next_window_id: WindowId,
    /// (participant, currency) → position (what it owes, positive).
    exposure: HashMap<(u32, CurrencyCode), i128>,
    /// True while `settle` runs its chain: only then may transfers touch the hub accounts.
    settling: bool,
}

/// The hub account of a currency (owned by [`HUB_PARTICIPANT`]): a system id, so no
/// participant can open it first.
pub fn hub_account_id(currency: CurrencyCode) -> AccountId {
    puente_core::ids::system_id("settlement/hub-account", &[currency.as_str().as_bytes()])
}

/// The id of the settlement transfer of `participant` in `window_id` at `attempt`: a system
/// id, so no participant can use it first.
pub fn settlement_transfer_id(window_id: WindowId, attempt: u32, participant: &str) -> TransferId {
    puente_core::ids::system_id(
        "settlement/transfer",
        &[&window_id.to_be_bytes(), &attempt.to_be_bytes(), participant.as_bytes()],
    )
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl SettlementState {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }

    fn view(&self, w: &Window, with_flows: bool) -> WindowView {
        let mut positions: Vec<WindowPosition> = w
            .positions
            .iter()
            .map(|(p, pos)| WindowPosition {
                participant: self.names[*p as usize].clone(),
                paid_minor: pos.paid_minor,
                received_minor: pos.received_minor,
                paid_count: pos.paid_count,
                received_count: pos.received_count,
                net_minor: -pos.debit_minor(),
                confirmed: pos.confirmed,
            })
            .collect();
        positions.sort_by(|a, b| a.participant.cmp(&b.participant));
        let mut flows: Vec<WindowFlow> = if with_flows {
            w.flows
                .iter()
                .map(|((d, c), f)| WindowFlow {
                    debtor: self.names[*d as usize].clone(),
                    creditor: self.names[*c as usize].clone(),
                    count: f.count,
                    value_minor: f.value_minor,
                })
                .collect()
        } else {
            Vec::new()
        };
        flows.sort_by(|a, b| (&a.debtor, &a.creditor).cmp(&(&b.debtor, &b.creditor)));
        WindowView {
            id: w.id,
            currency: w.currency,
            state: w.state,
            opened_at_ns: w.opened_at_ns,
            closed_at_ns: w.closed_at_ns,
            settled_at_ns: w.settled_at_ns,
            completed_at_ns: w.completed_at_ns,
            first_transfer_ns: w.first_transfer_ns,
            last_transfer_ns: w.last_transfer_ns,
            obligation_count: w.obligation_count,
            gross_value_minor: w.gross_value_minor,
            attempts: w.attempts,
            reason: w.reason.clone(),
            positions,
            flows,
        }
    }
}

/// A comparable snapshot of the settlement state (for tests: replay must reproduce it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementSnapshot {
    pub profiles: Vec<ParticipantProfile>,
    pub windows: Vec<WindowView>,
    pub open: BTreeMap<CurrencyCode, WindowId>,
    /// (participant, currency) → position, zero entries left out.
    pub positions: BTreeMap<(String, CurrencyCode), i128>,
}

impl Engine {
    // ----- reads --------------------------------------------------------------------------

    /// A participant's position in a currency: what it owes in unconfirmed windows plus its
    /// pending cross-participant debits (positive: it owes).
    pub fn settlement_position(&self, participant: &str, currency: CurrencyCode) -> i128 {
        let s = &self.settlement;
        s.index.get(participant).and_then(|p| s.exposure.get(&(*p, currency))).copied().unwrap_or(0)
    }

    pub fn settlement_snapshot(&self) -> SettlementSnapshot {
        let s = &self.settlement;
        SettlementSnapshot {
            profiles: s.profiles.values().cloned().collect(),
            windows: s.windows.values().map(|w| s.view(w, true)).collect(),
            open: s.open.iter().map(|(c, w)| (*c, *w)).collect(),
            positions: s
                .exposure
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|((p, c), v)| ((s.names[*p as usize].clone(), *c), *v))
                .collect(),
        }
    }

    /// The participant of an account, when the transfer between `debit` and `credit` is an
    /// obligation (different participants, neither the hub): (debtor, creditor).
    fn obligation_parties(&self, debit: AccountId, credit: AccountId) -> Option<(&str, &str)> {
        let d = self.accounts.get(&debit)?;
        let c = self.accounts.get(&credit)?;
        if d.participant == c.participant
            || d.participant == HUB_PARTICIPANT
            || c.participant == HUB_PARTICIPANT
        {
            return None;
        }
        Some((d.participant.as_str(), c.participant.as_str()))
    }

    /// The Net Debit Cap check for a new (single-phase or pending) transfer; also keeps
    /// clients off the hub accounts, which only settlement moves.
    pub(super) fn check_net_debit_cap(&self, t: &Transfer) -> Result<(), TransferResult> {
        if !self.settlement.settling {
            let hub =
                |id: &AccountId| self.accounts.get(id).is_some_and(|a| a.participant == HUB_PARTICIPANT);
            if hub(&t.debit_account_id) || hub(&t.credit_account_id) {
                return Err(TransferResult::HubAccountReserved);
            }
        }
        let Some((debtor, _)) = self.obligation_parties(t.debit_account_id, t.credit_account_id) else {
            return Ok(());
        };
        let Some(cap) = self.settlement.profiles.get(debtor).and_then(|p| p.currency(t.currency)) else {
            return Ok(());
        };
        let position = self.settlement_position(debtor, t.currency);
        if position + i128::from(t.amount_minor) > i128::from(cap.net_debit_cap_minor) {
            return Err(TransferResult::NetDebitCapExceeded);
        }
        Ok(())
    }

    // ----- hooks called by apply ----------------------------------------------------------

    fn add_exposure(&mut self, participant: u32, currency: CurrencyCode, delta: i128) {
        if delta == 0 {
            return;
        }
        let key = (participant, currency);
        let old = self.settlement.exposure.get(&key).copied().unwrap_or(0);
        self.note(Undo::Settlement(SettlementUndo::Exposure(key, old)));
        let new = old + delta;
        if new == 0 {
            self.settlement.exposure.remove(&key);
        } else {
            self.settlement.exposure.insert(key, new);
        }
    }

    /// A pending transfer reserved (`delta` > 0) or released (`delta` < 0) funds.
    pub(super) fn settlement_on_pending(
        &mut self,
        debit: AccountId,
        credit: AccountId,
        currency: CurrencyCode,
        delta: i128,
    ) {
        let Some((debtor, _)) = self.obligation_parties(debit, credit) else { return };
        let debtor = debtor.to_owned();
        let d = self.settlement.intern(&debtor);
        self.add_exposure(d, currency, delta);
    }

    /// A transfer posted `amount` from `debit` to `credit` at `ts`.
    pub(super) fn settlement_on_posted(
        &mut self,
        debit: AccountId,
        credit: AccountId,
        currency: CurrencyCode,
        amount: u64,
        ts: u64,
    ) {
        if amount == 0 {
            return;
        }
        let Some((debtor, creditor)) = self.obligation_parties(debit, credit) else { return };
        let (debtor, creditor) = (debtor.to_owned(), creditor.to_owned());
        let d = self.settlement.intern(&debtor);
        let c = self.settlement.intern(&creditor);
        let window_id = match self.settlement.open.get(&currency) {
            Some(id) => *id,
            None => {
                let id = self.settlement.next_window_id.max(1);
                self.settlement.next_window_id = id + 1;
                self.settlement.open.insert(currency, id);
                self.settlement.windows.insert(id, new_window(id, currency, ts));
                self.note(Undo::Settlement(SettlementUndo::WindowOpened(currency, id)));
                id
            }
        };
        let amount = u128::from(amount);
        if self.undo.is_some() {
            let w = &self.settlement.windows[&window_id];
            let undo = SettlementUndo::Cells {
                window_id,
                counters: Box::new(WindowCounters {
                    first_transfer_ns: w.first_transfer_ns,
                    last_transfer_ns: w.last_transfer_ns,
                    obligation_count: w.obligation_count,
                    gross_value_minor: w.gross_value_minor,
                }),
                positions: vec![(d, w.positions.get(&d).copied()), (c, w.positions.get(&c).copied())],
                flow: ((d, c), w.flows.get(&(d, c)).copied()),
            };
            self.note(Undo::Settlement(undo));
        }
        let w = self.settlement.windows.get_mut(&window_id).expect("open window exists");
        if w.first_transfer_ns == 0 {
            w.first_transfer_ns = ts;
        }
        w.last_transfer_ns = ts;
        w.obligation_count += 1;
        w.gross_value_minor += amount;
        let dp = w.positions.entry(d).or_default();
        dp.paid_minor += amount;
        dp.paid_count += 1;
        let cp = w.positions.entry(c).or_default();
        cp.received_minor += amount;
        cp.received_count += 1;
        let flow = w.flows.entry((d, c)).or_default();
        flow.count += 1;
        flow.value_minor += amount;
        self.add_exposure(d, currency, amount as i128);
        self.add_exposure(c, currency, -(amount as i128));
    }

    pub(super) fn settlement_rollback(&mut self, undo: SettlementUndo) {
        let s = &mut self.settlement;
        match undo {
            SettlementUndo::Exposure(key, old) => {
                if old == 0 {
                    s.exposure.remove(&key);
                } else {
                    s.exposure.insert(key, old);
                }
            }
            SettlementUndo::Cells { window_id, counters, positions, flow } => {
                if let Some(w) = s.windows.get_mut(&window_id) {
                    w.first_transfer_ns = counters.first_transfer_ns;
                    w.last_transfer_ns = counters.last_transfer_ns;
                    w.obligation_count = counters.obligation_count;
                    w.gross_value_minor = counters.gross_value_minor;
                    // Restore in reverse so that a debtor equal to a creditor would be right too.
                    for (p, old) in positions.into_iter().rev() {
                        match old {
                            Some(pos) => w.positions.insert(p, pos),
                            None => w.positions.remove(&p),
                        };
                    }
                    match flow.1 {
                        Some(f) => w.flows.insert(flow.0, f),
                        None => w.flows.remove(&flow.0),
                    };
                }
            }
            SettlementUndo::WindowOpened(currency, id) => {
                s.windows.remove(&id);
                s.open.remove(&currency);
                s.next_window_id = id;
            }
        }
    }

    /// Applies a settlement op (called by `apply`).
    pub(super) fn apply_settlement(&mut self, op: &Op) {
        match op {
            Op::SetProfile(profile) => {
                self.bump_timestamp(profile.updated_at_ns);
                self.settlement.intern(&profile.participant);
                self.settlement.profiles.insert(profile.participant.clone(), profile.clone());
            }
            Op::CloseWindow { window_id, next_window_id, timestamp_ns } => {
                self.apply_close_window(*window_id, *next_window_id, *timestamp_ns);
            }
            Op::WindowTransition { window_id, to, reason, timestamp_ns } => {
                self.bump_timestamp(*timestamp_ns);
                let w = self.settlement.windows.get_mut(window_id);
                let w = w.unwrap_or_else(|| panic!("journal: transition of unknown window {window_id}"));
                let allowed = matches!(
                    (w.state, to),
                    (WindowState::Closing | WindowState::Failed, WindowState::Closed | WindowState::Failed)
                        | (WindowState::Closed | WindowState::Aborted, WindowState::Aborted)
                        | (WindowState::Settling | WindowState::Rejected, WindowState::Rejected)
                );
                assert!(allowed, "journal: window {window_id} cannot go from {:?} to {to:?}", w.state);
                if *to == WindowState::Aborted {
                    w.attempts += 1;
                }
                w.state = *to;
                w.reason = reason.clone();
            }
            Op::SettleWindow { window_id, attempt, timestamp_ns } => {
                self.apply_settle_window(*window_id, *attempt, *timestamp_ns);
            }
            Op::ConfirmSettlement { window_id, participant, timestamp_ns } => {
                self.apply_confirm_settlement(*window_id, participant, *timestamp_ns);
            }
            _ => unreachable!("not a settlement op"),
        }
    }

    /// CLOSE_WINDOW: the window goes OPEN → CLOSING and the next window of its currency opens.
    fn apply_close_window(&mut self, window_id: WindowId, next_window_id: WindowId, timestamp_ns: u64) {
        self.bump_timestamp(timestamp_ns);
        let s = &mut self.settlement;
        let w = s
            .windows
            .get_mut(&window_id)
            .unwrap_or_else(|| panic!("journal: close of unknown window {window_id}"));
        assert_eq!(w.state, WindowState::Open, "journal: window {window_id} closed twice");
        assert_eq!(next_window_id, s.next_window_id.max(1), "journal: next window id out of sequence");
        w.state = WindowState::Closing;
        w.closed_at_ns = timestamp_ns;
        let currency = w.currency;
        s.next_window_id = next_window_id + 1;
        s.open.insert(currency, next_window_id);
        s.windows.insert(next_window_id, new_window(next_window_id, currency, timestamp_ns));
    }

    /// SETTLE_WINDOW: CLOSED/ABORTED → SETTLING; participants with nothing to settle are
    /// confirmed at once.
    fn apply_settle_window(&mut self, window_id: WindowId, attempt: u32, timestamp_ns: u64) {
        self.bump_timestamp(timestamp_ns);
        let w = self.settlement.windows.get_mut(&window_id);
        let w = w.unwrap_or_else(|| panic!("journal: settlement of unknown window {window_id}"));
        assert!(
            matches!(w.state, WindowState::Closed | WindowState::Aborted),
            "journal: window {window_id} settled from {:?}",
            w.state
        );
        assert_eq!(attempt, w.attempts, "journal: settlement attempt of window {window_id}");
        w.state = WindowState::Settling;
        w.settled_at_ns = timestamp_ns;
        w.reason.clear();
        // Participants with nothing to settle need no confirmation (and hold no exposure in
        // this window to release).
        for pos in w.positions.values_mut() {
            if pos.debit_minor() == 0 && !pos.confirmed {
                pos.confirmed = true;
            }
        }
        self.finish_if_confirmed(window_id, timestamp_ns);
    }

    /// CONFIRM_SETTLEMENT: one participant's confirmation; the last one makes the window SETTLED.
    fn apply_confirm_settlement(&mut self, window_id: WindowId, participant: &str, timestamp_ns: u64) {
        self.bump_timestamp(timestamp_ns);
        let p = *self
            .settlement
            .index
            .get(participant)
            .unwrap_or_else(|| panic!("journal: unknown participant {participant}"));
        let w = self.settlement.windows.get_mut(&window_id);
        let w = w.unwrap_or_else(|| panic!("journal: confirmation for unknown window {window_id}"));
        assert!(
            matches!(w.state, WindowState::Settling | WindowState::Rejected),
            "journal: confirmation of window {window_id} in {:?}",
            w.state
        );
        let currency = w.currency;
        let pos = w
            .positions
            .get_mut(&p)
            .unwrap_or_else(|| panic!("journal: {participant} not in window {window_id}"));
        assert!(!pos.confirmed, "journal: {participant} confirmed window {window_id} twice");
        pos.confirmed = true;
        let debit = pos.debit_minor();
        self.add_exposure(p, currency, -debit);
        self.finish_if_confirmed(window_id, timestamp_ns);
    }

    fn finish_if_confirmed(&mut self, window_id: WindowId, ts: u64) {
        if let Some(w) = self.settlement.windows.get_mut(&window_id)
            && matches!(w.state, WindowState::Settling | WindowState::Rejected)
            && w.positions.values().all(|p| p.confirmed)
        {
            w.state = WindowState::Settled;
            w.completed_at_ns = ts;
            w.reason.clear();
        }
    }

    // ----- commands -----------------------------------------------------------------------

    fn window_response(&self, window_id: WindowId, changed: bool) -> Result<WindowChange, SettlementRefusal> {
        let w =
            self.settlement.windows.get(&window_id).ok_or(SettlementRefusal::WindowNotFound(window_id))?;
        Ok(WindowChange { window: self.settlement.view(w, false), changed })
    }

    fn set_profile(
        &mut self,
        mut profile: ParticipantProfile,
        now_ns: u64,
        out: &mut Output,
    ) -> Result<ParticipantProfile, SettlementRefusal> {
        let invalid = |field: &str, reason: &str| {
            Err(SettlementRefusal::ProfileInvalid { field: field.to_owned(), reason: reason.to_owned() })
        };
        if !participant_valid(&profile.participant) || profile.participant == HUB_PARTICIPANT {
            return invalid("participant", "not a valid participant id (the hub is reserved)");
        }
        if profile.name.len() > PROFILE_NAME_LEN_MAX {
            return invalid("name", "too long");
        }
        if profile.bic.len() > BANK_ID_LEN_MAX {
            return invalid("bic", "too long");
        }
        if profile.currencies.is_empty() || profile.currencies.len() > PROFILE_CURRENCIES_MAX {
            return invalid("currencies", "one to 8 currencies");
        }
        profile.currencies.sort_by_key(|c| c.currency);
        for (i, c) in profile.currencies.iter().enumerate() {
            let field = |name: &str| format!("currencies[{i}].{name}");
            if i > 0 && profile.currencies[i - 1].currency == c.currency {
                return invalid(&field("currency"), "listed twice");
            }
            if self.currencies.get(c.currency).is_err() {
                return invalid(&field("currency"), "currency not configured");
            }
            if c.bank_id.is_empty() || c.bank_id.len() > BANK_ID_LEN_MAX {
                return invalid(&field("bank_id"), "required, at most 35 bytes");
            }
            if c.net_debit_cap_minor > puente_money::AMOUNT_MAX_MINOR {
                return invalid(&field("net_debit_cap"), "too large");
            }
            let Some(account) = self.accounts.get(&c.settlement_account_id) else {
                return invalid(&field("settlement_account_id"), "account not found");
            };
            if account.participant != profile.participant {
                return invalid(&field("settlement_account_id"), "account belongs to another participant");
            }
            if account.currency != c.currency {
                return invalid(&field("settlement_account_id"), "account is in another currency");
            }
        }
        if let Some(existing) = self.settlement.profiles.get(&profile.participant) {
            let mut same = existing.clone();
            same.updated_at_ns = 0;
            profile.updated_at_ns = 0;
            if same == profile {
                return Ok(existing.clone());
            }
        }
        profile.updated_at_ns = self.next_timestamp(now_ns);
        self.apply(Op::SetProfile(profile.clone()), out);
        Ok(profile)
    }

    fn close_window(
        &mut self,
        window_id: Option<WindowId>,
        currency: Option<CurrencyCode>,
        now_ns: u64,
        out: &mut Output,
    ) -> Result<WindowChange, SettlementRefusal> {
        let window_id = match (window_id, currency) {
            (Some(id), _) => id,
            (None, Some(currency)) => {
                *self.settlement.open.get(&currency).ok_or(SettlementRefusal::NoOpenWindow(currency))?
            }
            (None, None) => {
                return Err(SettlementRefusal::ProfileInvalid {
                    field: "window_id".into(),
                    reason: "a window id or a currency is required".into(),
                });
            }
        };
        let w =
            self.settlement.windows.get(&window_id).ok_or(SettlementRefusal::WindowNotFound(window_id))?;
        if currency.is_some_and(|c| c != w.currency) {
            return Err(SettlementRefusal::WindowNotFound(window_id));
        }
        if w.state != WindowState::Open {
            return self.window_response(window_id, false);
        }
        let timestamp_ns = self.next_timestamp(now_ns);
        let next_window_id = self.settlement.next_window_id.max(1);
        self.apply(Op::CloseWindow { window_id, next_window_id, timestamp_ns }, out);
        self.window_response(window_id, true)
    }

    fn finish_close(
        &mut self,
        window_id: WindowId,
        failure: Option<String>,
        now_ns: u64,
        out: &mut Output,
    ) -> Result<WindowChange, SettlementRefusal> {
        let w =
            self.settlement.windows.get(&window_id).ok_or(SettlementRefusal::WindowNotFound(window_id))?;
        match w.state {
            WindowState::Closing | WindowState::Failed => {}
            WindowState::Open => {
                return Err(SettlementRefusal::WrongState { window_id, state: w.state, expected: "CLOSING" });
            }
            _ => return self.window_response(window_id, false),
        }
        let missing = self.missing_profiles(w);
        let failure = failure.or_else(|| {
            (!missing.is_empty())
                .then(|| format!("no {} settlement profile for {}", w.currency, missing.join(", ")))
        });
        let (to, reason) = match failure {
            None => (WindowState::Closed, String::new()),
            Some(reason) => (WindowState::Failed, clip(&reason, WINDOW_REASON_LEN_MAX)),
        };
        if w.state == to && w.reason == reason {
            return self.window_response(window_id, false);
        }
        let timestamp_ns = self.next_timestamp(now_ns);
        self.apply(Op::WindowTransition { window_id, to, reason, timestamp_ns }, out);
        self.window_response(window_id, true)
    }

    fn missing_profiles(&self, w: &Window) -> Vec<String> {
        let s = &self.settlement;
        let mut missing: Vec<String> = w
            .positions
            .keys()
            .map(|p| &s.names[*p as usize])
            .filter(|name| s.profiles.get(*name).and_then(|pr| pr.currency(w.currency)).is_none())
            .cloned()
            .collect();
        missing.sort();
        missing
    }

    fn settle(
        &mut self,
        prefetched: &Prefetched,
        window_id: WindowId,
        now_ns: u64,
        out: &mut Output,
    ) -> Result<WindowChange, SettlementRefusal> {
        let Some(w) = self.settlement.windows.get(&window_id) else {
            return Err(SettlementRefusal::WindowNotFound(window_id));
        };
        match w.state {
            WindowState::Closed | WindowState::Aborted => {}
            WindowState::Settling | WindowState::Rejected | WindowState::Settled => {
                return self.window_response(window_id, false);
            }
            state => {
                return Err(SettlementRefusal::WrongState {
                    window_id,
                    state,
                    expected: "CLOSED or ABORTED",
                });
            }
        }
        let missing = self.missing_profiles(w);
        if !missing.is_empty() {
            return Err(SettlementRefusal::MissingProfiles {
                window_id,
                currency: w.currency,
                participants: missing,
            });
        }
        let (currency, attempt) = (w.currency, w.attempts);
        let hub = hub_account_id(currency);
        let chain = self.settlement_chain(w, window_id);
        if chain.len() > BATCH_EVENTS_MAX {
            let reason =
                format!("{} settlement transfers exceed one batch ({BATCH_EVENTS_MAX})", chain.len());
            let timestamp_ns = self.next_timestamp(now_ns);
            self.apply(
                Op::WindowTransition { window_id, to: WindowState::Aborted, reason, timestamp_ns },
                out,
            );
            return self.window_response(window_id, true);
        }
        if !chain.is_empty() && !self.accounts.contains_key(&hub) {
            self.open_hub_account(currency, now_ns, out);
        }
        let outcomes = if chain.is_empty() {
            Vec::new()
        } else {
            self.settlement.settling = true;
            let outcomes = self.create_transfers(
                prefetched,
                &crate::Actor::system(HUB_PARTICIPANT),
                &chain,
                now_ns,
                out,
            );
            self.settlement.settling = false;
            outcomes
        };
        self.record_settlement_outcome(window_id, attempt, &chain, &outcomes, now_ns, out);
        self.window_response(window_id, true)
    }

    /// Records how a settlement attempt went: SETTLING if every transfer of the chain posted
    /// (and none had been used before), otherwise ABORTED with the first refusal as the reason.
    fn record_settlement_outcome(
        &mut self,
        window_id: WindowId,
        attempt: u32,
        chain: &[Transfer],
        outcomes: &[TransferOutcome],
        now_ns: u64,
        out: &mut Output,
    ) {
        let refused = outcomes
            .iter()
            .zip(chain)
            .find(|(o, _)| !o.result.is_ok() && o.result != TransferResult::LinkedEventFailed);
        let refused = refused.or_else(|| outcomes.iter().zip(chain).find(|(o, _)| !o.result.is_ok()));
        let timestamp_ns = self.next_timestamp(now_ns);
        match refused {
            None => {
                if outcomes.iter().any(|o| o.replayed) {
                    // Ids of this attempt were already used: the ledger was changed behind the
                    // window's back. Refuse rather than settle twice.
                    let reason = "settlement transfer ids already used".to_owned();
                    self.apply(
                        Op::WindowTransition { window_id, to: WindowState::Aborted, reason, timestamp_ns },
                        out,
                    );
                } else {
                    self.apply(Op::SettleWindow { window_id, attempt, timestamp_ns }, out);
                }
            }
            Some((outcome, transfer)) => {
                let participant = transfer.metadata.get("participant").cloned().unwrap_or_default();
                let reason = clip(
                    &format!("settlement transfer for {participant} refused: {}", outcome.result.code()),
                    WINDOW_REASON_LEN_MAX,
                );
                self.apply(
                    Op::WindowTransition { window_id, to: WindowState::Aborted, reason, timestamp_ns },
                    out,
                );
            }
        }
    }

    /// The settlement transfers of a window's current attempt, one linked chain: per
    /// participant with a non-zero net, in name order, between its settlement account and the
    /// hub, with ids derived from (window, attempt, participant).
    fn settlement_chain(&self, w: &Window, window_id: WindowId) -> Vec<Transfer> {
        let (currency, attempt) = (w.currency, w.attempts);
        let hub = hub_account_id(currency);
        let mut nets: Vec<(String, i128)> = w
            .positions
            .iter()
            .map(|(p, pos)| (self.settlement.names[*p as usize].clone(), -pos.debit_minor()))
            .filter(|(_, net)| *net != 0)
            .collect();
        nets.sort();
        let mut chain = Vec::with_capacity(nets.len());
        for (participant, net) in &nets {
            let profile = &self.settlement.profiles[participant];
            let account = profile.currency(currency).map(|c| c.settlement_account_id).unwrap_or(0);
            let (debit, credit) = if *net < 0 { (account, hub) } else { (hub, account) };
            let amount = u64::try_from(net.unsigned_abs()).unwrap_or(u64::MAX);
            let mut metadata = Metadata::new();
            metadata.insert("settlement_window_id".into(), window_id.to_string());
            metadata.insert("participant".into(), participant.clone());
            chain.push(Transfer {
                id: settlement_transfer_id(window_id, attempt, participant),
                debit_account_id: debit,
                credit_account_id: credit,
                amount_minor: amount,
                currency,
                flags: TransferFlags { linked: true, ..Default::default() },
                pending_id: 0,
                timeout_ms: 0,
                reference: format!("settlement window {window_id}"),
                metadata,
            });
        }
        if let Some(last) = chain.last_mut() {
            last.flags.linked = false;
        }
        chain
    }

    /// Opens the hub account of `currency` (the first settlement in it).
    fn open_hub_account(&mut self, currency: CurrencyCode, now_ns: u64, out: &mut Output) {
        let ts = self.next_timestamp(now_ns);
        let account = Account::from_new(
            NewAccount {
                id: hub_account_id(currency),
                participant: HUB_PARTICIPANT.into(),
                currency,
                flags: AccountFlags::default(),
                overdraft_limit_minor: 0,
                holder_ref: "settlement-hub".into(),
                metadata: Metadata::new(),
            },
            ts,
        );
        self.apply(Op::CreateAccount(account), out);
    }

    fn confirm(
        &mut self,
        window_id: WindowId,
        participant: String,
        now_ns: u64,
        out: &mut Output,
    ) -> Result<WindowChange, SettlementRefusal> {
        let w =
            self.settlement.windows.get(&window_id).ok_or(SettlementRefusal::WindowNotFound(window_id))?;
        let position = self.settlement.index.get(&participant).and_then(|p| w.positions.get(p));
        let Some(position) = position else {
            return Err(SettlementRefusal::ParticipantNotInWindow { window_id, participant });
        };
        match w.state {
            WindowState::Settling | WindowState::Rejected if !position.confirmed => {}
            WindowState::Settling | WindowState::Rejected | WindowState::Settled => {
                return self.window_response(window_id, false);
            }
            state => return Err(SettlementRefusal::WrongState { window_id, state, expected: "SETTLING" }),
        }
        let timestamp_ns = self.next_timestamp(now_ns);
        self.apply(Op::ConfirmSettlement { window_id, participant, timestamp_ns }, out);
        self.window_response(window_id, true)
    }

    fn reject_payments(
        &mut self,
        window_id: WindowId,
        reason: String,
        now_ns: u64,
        out: &mut Output,
    ) -> Result<WindowChange, SettlementRefusal> {
        let w =
            self.settlement.windows.get(&window_id).ok_or(SettlementRefusal::WindowNotFound(window_id))?;
        let reason = clip(&reason, WINDOW_REASON_LEN_MAX);
        match w.state {
            WindowState::Settling => {}
            WindowState::Rejected if w.reason != reason => {}
            WindowState::Rejected | WindowState::Settled => return self.window_response(window_id, false),
            state => {
                return Err(SettlementRefusal::WrongState {
                    window_id,
                    state,
                    expected: "SETTLING or REJECTED",
                });
            }
        }
        let timestamp_ns = self.next_timestamp(now_ns);
        self.apply(Op::WindowTransition { window_id, to: WindowState::Rejected, reason, timestamp_ns }, out);
        self.window_response(window_id, true)
    }

    // ----- invariants ---------------------------------------------------------------------

    /// Every window's nets sum to zero and match its flows; positions equal what windows and
    /// pending transfers imply.
    pub(super) fn check_settlement_invariants(&self) -> Result<(), String> {
        let s = &self.settlement;
        let mut expected: HashMap<(u32, CurrencyCode), i128> = HashMap::default();
        for w in s.windows.values() {
            let net: i128 = w.positions.values().map(|p| p.debit_minor()).sum();
            if net != 0 {
                return Err(format!("window {}: nets sum to {net}", w.id));
            }
            let mut from_flows: HashMap<u32, (u128, u128)> = HashMap::default();
            let mut count = 0;
            for ((d, c), f) in &w.flows {
                from_flows.entry(*d).or_default().0 += f.value_minor;
                from_flows.entry(*c).or_default().1 += f.value_minor;
                count += f.count;
            }
            if count != w.obligation_count {
                return Err(format!("window {}: flows count {count}, window {}", w.id, w.obligation_count));
            }
            for (p, pos) in &w.positions {
                if from_flows.get(p).copied().unwrap_or_default() != (pos.paid_minor, pos.received_minor) {
                    return Err(format!(
                        "window {}: position of {} disagrees with flows",
                        w.id, s.names[*p as usize]
                    ));
                }
                if !pos.confirmed {
                    *expected.entry((*p, w.currency)).or_default() += pos.debit_minor();
                }
            }
        }
        for pending in self.pendings.values().filter(|p| p.state == PendingState::Pending) {
            if let Some((debtor, _)) =
                self.obligation_parties(pending.debit_account_id, pending.credit_account_id)
            {
                let p = s.index.get(debtor).copied().ok_or("pending debtor not interned")?;
                *expected.entry((p, pending.currency)).or_default() += i128::from(pending.amount_minor);
            }
        }
        expected.retain(|_, v| *v != 0);
        if expected != s.exposure {
            return Err("settlement positions disagree with windows and pending transfers".into());
        }
        Ok(())
    }
}

fn new_window(id: WindowId, currency: CurrencyCode, ts: u64) -> Window {
    Window {
        id,
        currency,
        state: WindowState::Open,
        opened_at_ns: ts,
        closed_at_ns: 0,
        settled_at_ns: 0,
        completed_at_ns: 0,
        first_transfer_ns: 0,
        last_transfer_ns: 0,
        obligation_count: 0,
        gross_value_minor: 0,
        attempts: 0,
        reason: String::new(),
        positions: HashMap::default(),
        flows: HashMap::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{sys, transfer};
    use crate::store::MemoryStore;
    use puente_money::CurrencyTable;

    const NOW: u64 = 1_000_000_000_000;
    const USD: CurrencyCode = CurrencyCode::USD;

    struct Harness {
        engine: Engine,
        store: MemoryStore,
        journal: Vec<Op>,
        seq: u64,
    }

    impl Harness {
        /// Participants a, b, c with a customer account (10, 20, 30) and a settlement account
        /// (11, 21, 31) each, in USD.
        fn new() -> Harness {
            let mut h = Harness {
                engine: Engine::new(CurrencyTable::default()),
                store: MemoryStore::new(),
                journal: Vec::new(),
                seq: 0,
            };
            let mut out = Output::default();
            let accounts = ["a", "b", "c"]
                .iter()
                .enumerate()
                .flat_map(|(i, p)| {
                    let base = (i as u128 + 1) * 10;
                    [account(base, p, AccountFlags::default()), account(base + 1, p, AccountFlags::default())]
                })
                .collect();
            h.engine.create_accounts(&sys(), accounts, NOW, &mut out);
            h.persist(&mut out);
            h
        }

        fn persist(&mut self, out: &mut Output) {
            if out.is_empty() {
                return;
            }
            self.seq += 1;
            out.touched_accounts.sort_unstable();
            out.touched_accounts.dedup();
            let accounts: Vec<Account> =
                out.touched_accounts.iter().filter_map(|id| self.engine.account(*id).cloned()).collect();
            self.store.apply(self.seq, out, &accounts);
            self.engine.store_caught_up();
            self.journal.extend(out.ops.iter().cloned());
            out.clear();
            self.engine.check_invariants().unwrap();
        }

        fn transfers(&mut self, batch: &[Transfer]) -> Vec<TransferResult> {
            let mut out = Output::default();
            let outcomes =
                self.engine.create_transfers(&self.store.everything(), &sys(), batch, NOW, &mut out);
            self.persist(&mut out);
            outcomes.iter().map(|o| o.result).collect()
        }

        fn command<T, C: crate::engine::Call<Answer = Result<T, SettlementRefusal>>>(
            &mut self,
            call: C,
        ) -> Result<T, SettlementRefusal> {
            let mut out = Output::default();
            let result = self.engine.call(&self.store.everything(), call, NOW, &mut out);
            self.persist(&mut out);
            result
        }

        fn window<C: crate::engine::Call<Answer = Result<WindowChange, SettlementRefusal>>>(
            &mut self,
            call: C,
        ) -> (WindowView, bool) {
            match self.command(call) {
                Ok(WindowChange { window, changed }) => (window, changed),
                other => panic!("{other:?}"),
            }
        }

        fn profile(&mut self, participant: &str, settlement_account: AccountId, cap: u64) {
            let profile = ParticipantProfile {
                participant: participant.into(),
                name: String::new(),
                bic: String::new(),
                country: Country::Us,
                currencies: vec![CurrencyProfile {
                    currency: USD,
                    rail: SettlementRail::Fedwire,
                    bank_id: "021000021".into(),
                    net_debit_cap_minor: cap,
                    settlement_account_id: settlement_account,
                }],
                updated_at_ns: 0,
            };
            assert!(self.command(SetProfile(profile)).is_ok());
        }

        fn replay_matches(&self) {
            let mut replica = Engine::new(CurrencyTable::default());
            let mut out = Output::default();
            for op in &self.journal {
                replica.apply(op.clone(), &mut out);
            }
            replica.check_invariants().unwrap();
            assert_eq!(replica.settlement_snapshot(), self.engine.settlement_snapshot());
            for id in [10, 11, 20, 21, 30, 31, hub_account_id(USD)] {
                assert_eq!(replica.account(id), self.engine.account(id));
            }
        }
    }

    fn account(id: AccountId, participant: &str, flags: AccountFlags) -> NewAccount {
        NewAccount {
            id,
            participant: participant.into(),
            currency: USD,
            flags,
            overdraft_limit_minor: 0,
            holder_ref: String::new(),
            metadata: Metadata::new(),
        }
    }

    use TransferResult as R;

    #[test]
    fn net_debit_cap_counts_pending_and_credits() {
        let mut h = Harness::new();
        h.profile("a", 11, 100);
        // Within one participant: no obligation, no cap.
        assert_eq!(h.transfers(&[transfer(1, 10, 11, 1_000)]), [R::Ok]);
        assert_eq!(h.transfers(&[transfer(2, 10, 20, 60)]), [R::Ok]);
        assert_eq!(h.engine.settlement_position("a", USD), 60);
        assert_eq!(h.transfers(&[transfer(3, 10, 20, 41)]), [R::NetDebitCapExceeded]);
        // A pending transfer counts while pending; a void releases it.
        let mut hold = transfer(4, 10, 30, 40);
        hold.flags.pending = true;
        assert_eq!(h.transfers(&[hold]), [R::Ok]);
        assert_eq!(h.engine.settlement_position("a", USD), 100);
        assert_eq!(h.transfers(&[transfer(5, 10, 20, 1)]), [R::NetDebitCapExceeded]);
        let mut void = transfer(6, 0, 0, 0);
        void.flags.void_pending = true;
        void.pending_id = 4;
        assert_eq!(h.transfers(&[void]), [R::Ok]);
        assert_eq!(h.engine.settlement_position("a", USD), 60);
        // Money received makes room; the hub and b (no profile) are not capped.
        assert_eq!(h.transfers(&[transfer(7, 20, 10, 50)]), [R::Ok]);
        assert_eq!(h.engine.settlement_position("a", USD), 10);
        assert_eq!(h.engine.settlement_position("b", USD), -10);
        assert_eq!(h.transfers(&[transfer(8, 10, 20, 90)]), [R::Ok]);
        // The refusal is remembered like any state failure.
        assert_eq!(h.transfers(&[transfer(3, 10, 20, 41)]), [R::NetDebitCapExceeded]);
        h.replay_matches();
    }

    #[test]
    fn rolled_back_chain_leaves_no_obligation() {
        let mut h = Harness::new();
        h.profile("a", 11, 100);
        let mut first = transfer(1, 20, 30, 5);
        first.flags.linked = true;
        let mut second = transfer(2, 10, 20, 500);
        second.flags.linked = false;
        assert_eq!(h.transfers(&[first, second]), [R::LinkedEventFailed, R::NetDebitCapExceeded]);
        let snapshot = h.engine.settlement_snapshot();
        assert!(snapshot.windows.is_empty() && snapshot.positions.is_empty(), "{snapshot:?}");
        assert_eq!(h.transfers(&[transfer(3, 20, 30, 5)]), [R::Ok]);
        assert_eq!(h.engine.settlement_snapshot().windows[0].id, 1);
        h.replay_matches();
    }

    #[test]
    fn window_lifecycle_is_idempotent_and_replays() {
        let mut h = Harness::new();
        h.profile("a", 11, 10_000);
        h.profile("b", 21, 10_000);
        assert_eq!(
            h.transfers(&[transfer(1, 10, 20, 300), transfer(2, 20, 30, 100), transfer(3, 30, 10, 50)]),
            [R::Ok; 3]
        );
        let open = h.command(GetWindow { window_id: 1, with_flows: true }).unwrap();
        assert_eq!((open.state, open.obligation_count, open.gross_value_minor), (WindowState::Open, 3, 450));
        assert_eq!(open.flows.len(), 3);
        let (w, changed) = h.window(CloseWindow { window_id: None, currency: Some(USD) });
        assert_eq!((w.id, w.state, changed), (1, WindowState::Closing, true));
        let (again, changed) = h.window(CloseWindow { window_id: Some(1), currency: None });
        assert_eq!((again.state, changed), (WindowState::Closing, false));
        // The next window is open; new obligations go there.
        assert_eq!(h.transfers(&[transfer(4, 10, 20, 7)]), [R::Ok]);
        let next = h.command(GetWindow { window_id: 2, with_flows: false }).unwrap();
        assert_eq!((next.state, next.obligation_count), (WindowState::Open, 1));
        // c has no profile: closing fails, and succeeds once it has one.
        let (w, _) = h.window(FinishClose { window_id: 1, failure: None });
        assert_eq!(w.state, WindowState::Failed);
        assert!(w.reason.contains('c'), "{}", w.reason);
        assert!(matches!(h.command(Settle { window_id: 1 }), Err(SettlementRefusal::WrongState { .. })));
        h.profile("c", 31, 10_000);
        let (w, _) = h.window(FinishClose { window_id: 1, failure: None });
        assert_eq!(w.state, WindowState::Closed);
        // Settle: a −250 (paid 300, received 50), b +200, c +50.
        let (w, changed) = h.window(Settle { window_id: 1 });
        assert_eq!((w.state, changed), (WindowState::Settling, true));
        let balance = |h: &Harness, id| h.engine.account(id).unwrap().posted_balance_minor();
        assert_eq!((balance(&h, 11), balance(&h, 21), balance(&h, 31)), (-250, 200, 50));
        assert_eq!(balance(&h, hub_account_id(USD)), 0);
        // Only settlement moves the hub.
        let hub = hub_account_id(USD);
        assert_eq!(h.transfers(&[transfer(90, hub, 10, 1)]), [R::HubAccountReserved]);
        assert_eq!(h.transfers(&[transfer(91, 10, hub, 1)]), [R::HubAccountReserved]);
        let (w, changed) = h.window(Settle { window_id: 1 });
        assert_eq!((w.state, changed), (WindowState::Settling, false));
        assert_eq!(balance(&h, 11), -250, "settled exactly once");
        // Positions stay until confirmed: a owes 250 in window 1 and 7 in window 2.
        assert_eq!(h.engine.settlement_position("a", USD), 257);
        h.window(Confirm { window_id: 1, participant: "a".into() });
        assert_eq!(h.engine.settlement_position("a", USD), 7);
        let (_, changed) = h.window(Confirm { window_id: 1, participant: "a".into() });
        assert!(!changed);
        h.window(Confirm { window_id: 1, participant: "b".into() });
        let (w, _) = h.window(Confirm { window_id: 1, participant: "c".into() });
        assert_eq!(w.state, WindowState::Settled);
        assert!(matches!(
            h.command(Confirm { window_id: 1, participant: "zz".into() }),
            Err(SettlementRefusal::ParticipantNotInWindow { .. })
        ));
        h.replay_matches();
    }

    #[test]
    fn refused_settlement_aborts_and_retries_with_new_ids() {
        let mut h = Harness::new();
        let mut out = Output::default();
        // d's settlement account may not go below zero.
        let limited =
            AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: false };
        h.engine.create_accounts(
            &sys(),
            vec![account(40, "d", AccountFlags::default()), account(41, "d", limited)],
            NOW,
            &mut out,
        );
        h.persist(&mut out);
        h.profile("d", 41, 1_000);
        h.profile("a", 11, 1_000);
        assert_eq!(h.transfers(&[transfer(1, 40, 10, 80)]), [R::Ok]);
        h.window(CloseWindow { window_id: None, currency: Some(USD) });
        h.window(FinishClose { window_id: 1, failure: None });
        let (w, _) = h.window(Settle { window_id: 1 });
        assert_eq!((w.state, w.attempts), (WindowState::Aborted, 1));
        assert!(w.reason.contains("EXCEEDS_CREDITS"), "{}", w.reason);
        assert_eq!(h.engine.account(41).unwrap().debits_posted_minor, 0);
        // Fund d's settlement account, settle again.
        assert_eq!(h.transfers(&[transfer(2, 40, 41, 80)]), [R::Ok]);
        let (w, _) = h.window(Settle { window_id: 1 });
        assert_eq!(w.state, WindowState::Settling);
        assert_eq!(h.engine.account(41).unwrap().posted_balance_minor(), 0);
        assert_eq!(h.engine.account(11).unwrap().posted_balance_minor(), 80);
        h.replay_matches();
    }

    #[test]
    fn a_rejected_payment_marks_the_window_and_confirmations_still_settle_it() {
        let mut h = Harness::new();
        for (p, account) in [("a", 11), ("b", 21)] {
            h.profile(p, account, 10_000);
        }
        assert_eq!(h.transfers(&[transfer(1, 10, 20, 300)]), [R::Ok]);
        h.window(CloseWindow { window_id: None, currency: Some(USD) });
        h.window(FinishClose { window_id: 1, failure: None });
        let reject = |reason: &str| RejectPayments { window_id: 1, reason: reason.into() };
        // Only a settling window can be rejected.
        assert!(matches!(h.command(reject("early")), Err(SettlementRefusal::WrongState { .. })));
        h.window(Settle { window_id: 1 });
        let (w, changed) = h.window(reject("PUENTE-W1-1 rejected: AC04"));
        assert_eq!(
            (w.state, changed, w.reason.as_str()),
            (WindowState::Rejected, true, "PUENTE-W1-1 rejected: AC04")
        );
        // The same reason again changes nothing; a new one replaces it.
        assert!(!h.window(reject("PUENTE-W1-1 rejected: AC04")).1);
        assert!(h.window(reject("PUENTE-W1-1 rejected: AC01")).1);
        // A rerun of the settlement changes nothing: the ledger side is done.
        let (w, changed) = h.window(Settle { window_id: 1 });
        assert_eq!((w.state, changed), (WindowState::Rejected, false));
        // Confirmations go on; the last one settles the window and clears the reason.
        h.window(Confirm { window_id: 1, participant: "a".into() });
        let (w, _) = h.window(Confirm { window_id: 1, participant: "b".into() });
        assert_eq!((w.state, w.reason.as_str()), (WindowState::Settled, ""));
        assert_eq!(h.engine.settlement_position("a", USD), 0);
        assert!(!h.window(reject("late")).1, "a settled window stays settled");
        h.replay_matches();
    }

    #[test]
    fn hub_is_reserved() {
        let mut h = Harness::new();
        let mut out = Output::default();
        let outcomes = h.engine.create_accounts(
            &crate::Actor::Operator("op".into()),
            vec![account(99, HUB_PARTICIPANT, AccountFlags::default())],
            NOW,
            &mut out,
        );
        assert_eq!(outcomes[0].result, AccountResult::ParticipantInvalid);
        let mut bad = ParticipantProfile {
            participant: "a".into(),
            name: String::new(),
            bic: String::new(),
            country: Country::Mx,
            currencies: vec![],
            updated_at_ns: 0,
        };
        assert!(matches!(h.command(SetProfile(bad.clone())), Err(SettlementRefusal::ProfileInvalid { .. })));
        bad.currencies.push(CurrencyProfile {
            currency: USD,
            rail: SettlementRail::Spei,
            bank_id: "x".into(),
            net_debit_cap_minor: 1,
            settlement_account_id: 21,
        });
        let Err(SettlementRefusal::ProfileInvalid { field, .. }) = h.command(SetProfile(bad)) else {
            panic!()
        };
        assert_eq!(field, "currencies[0].settlement_account_id");
    }
}
