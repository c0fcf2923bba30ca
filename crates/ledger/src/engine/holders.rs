//! Account holders (a participant's customers) with a KYC tier, and the monthly limits their
//! tier puts on the accounts they hold.
//!
//! A holder is registered by its participant with a client-chosen id; an account belongs to a
//! holder when its `holder_ref` equals that id (same participant). The engine never sees
//! personal data in clear: names, addresses, account numbers and RFCs arrive sealed
//! (AES-256-GCM, by the server) and are stored and journaled as ciphertext.
//!
//! Limits (`puente_kyc::kyc`): a tier covers one currency (Mexican levels: MXN, in UDIs at
//! the policy's UDI rate; US tiers: USD, by configuration). Every credit to a holder's account
//! counts towards the holder's calendar month (UTC) when the transfer is created (a pending
//! credit counts at once and a later post does not count again). A pending credit that does not
//! arrive gives its room back: a void, an expiry, or the unposted part of a partial post is
//! taken off the month it was counted in (if that month is still the holder's current one), so
//! another participant cannot use up a customer's limit with reservations it then releases. A
//! credit over the monthly limit, or one that would lift the account's balance over the tier's
//! balance cap, is refused with `KYC_LIMIT_EXCEEDED`; credits in another currency to an account
//! of a limited holder are refused with `KYC_CURRENCY_NOT_COVERED`. The policy (UDI rate, US
//! tiers) is journaled state, so replay makes the same decisions.
//!
//! **Probing.** Whether a credit is refused tells its sender something about the holder's
//! headroom, and a linked chain that is bound to fail lets a sender ask without moving money.
//! So a participant may collect at most [`KYC_FOREIGN_REFUSALS_MAX`] KYC refusals on another
//! participant's holder per month: after that, every credit it sends to that holder is refused
//! (`KYC_LIMIT_EXCEEDED`) until the month ends, whatever the amount, and the answers carry no
//! more information. Each refusal is a remembered failure in the sender's name (journaled, it
//! costs the sender an id), and the holder's owner sees the count (`GetHolderUsage`). What
//! remains: those first refusals narrow the headroom to about 1/2^5 of its range, and a sender
//! that really pays can always learn the limit by paying up to it.

use crate::hashing::HashMap;
use std::collections::BTreeMap;

use puente_kyc::kyc::{KycPolicy, MonthlyUsage, Tier, TierLimits, month_of};
use serde::{Deserialize, Serialize};

use super::{Engine, Op, Output, Undo};
use crate::types::{AccountId, participant_valid};

pub use crate::limits::HOLDER_ID_LEN_MAX;
pub use crate::limits::HOLDERS_MAX;
pub use crate::limits::SEALED_FIELD_LEN_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HolderKind {
    Individual,
    Business,
}

/// Personal data, each field sealed by the server (empty: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPii {
    pub full_name: Vec<u8>,
    pub address: Vec<u8>,
    pub clabe: Vec<u8>,
    pub account_number: Vec<u8>,
    pub routing_number: Vec<u8>,
    pub rfc: Vec<u8>,
}

impl SealedPii {
    fn fields(&self) -> [&Vec<u8>; 6] {
        [&self.full_name, &self.address, &self.clabe, &self.account_number, &self.routing_number, &self.rfc]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub participant: String,
    pub id: String,
    pub kind: HolderKind,
    /// ISO 3166 alpha-2: "MX" or "US".
    pub country: String,
    pub tier: Tier,
    pub pii: SealedPii,
    pub created_at_ns: u64,
}

// ----- the registry's commands and reads (run by the single writer; `engine::call`) -------

/// Registers a holder; idempotent per (participant, id): the same content again is a retry,
/// other content is refused. (Sealed fields differ on every sealing, so a retry is judged on
/// kind, country and tier; the first registration's data stands.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateHolder(pub Box<Holder>);

/// The holder as stored, and whether this call created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderCreated {
    pub holder: Holder,
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetHolder {
    pub participant: String,
    pub id: String,
}

/// A page of holders (of one participant, or all), after (participant, holder id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListHolders {
    pub participant: Option<String>,
    pub after: Option<(String, String)>,
    pub limit: usize,
}

/// A holder's KYC usage this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetUsage {
    pub participant: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderUsage {
    pub holder: Holder,
    pub limits: Option<TierLimits>,
    pub usage: MonthlyUsage,
    pub month: u32,
    /// KYC refusals other participants collected on this holder this month.
    pub foreign_refusals: u32,
}

/// Sets the KYC policy (validated first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetKycPolicy(pub KycPolicy);

macro_rules! holder_call {
    ($call:ty => $answer:ty, $method:ident) => {
        impl super::Call for $call {
            type Answer = Result<$answer, HolderRefusal>;

            fn run(
                self,
                engine: &mut Engine,
                _: &super::Prefetched,
                now_ns: u64,
                out: &mut Output,
            ) -> Self::Answer {
                let timestamp_ns = now_ns.max(engine.last_timestamp_ns + 1);
                engine.$method(self, timestamp_ns, out)
            }
        }
    };
}

holder_call!(CreateHolder => HolderCreated, create_holder);
holder_call!(GetHolder => Holder, get_holder);
holder_call!(ListHolders => Vec<Holder>, list_holders);
holder_call!(GetUsage => HolderUsage, holder_usage);
holder_call!(SetKycPolicy => KycPolicy, set_kyc_policy);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HolderRefusal {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("holder {0} not found")]
    NotFound(String),
    #[error("holder {id} exists with a different {field}")]
    ExistsWithDifferent { id: String, field: &'static str },
    #[error("no KYC policy is set: an operator sets one (UDI rate, US tiers) before holders get tiers")]
    PolicyNotSet,
    #[error("{0}")]
    Kyc(String),
    #[error("the ledger holds its most holders")]
    LimitReached,
}

pub use crate::limits::KYC_FOREIGN_REFUSALS_MAX;

/// (participant, holder id).
type HolderKey = (String, String);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HolderState {
    holders: BTreeMap<HolderKey, Holder>,
    usage: HashMap<HolderKey, MonthlyUsage>,
    policy: Option<KycPolicy>,
    /// (sender, holder) → (month, KYC refusals in it), for senders other than the holder's
    /// participant.
    foreign_refusals: HashMap<(String, HolderKey), (u32, u32)>,
}

impl HolderState {
    pub fn policy(&self) -> Option<&KycPolicy> {
        self.policy.as_ref()
    }
}

/// What one credit to a limited holder's account does to its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KycCredit {
    key: (String, String),
    usage: MonthlyUsage,
}

impl Engine {
    pub fn holders(&self) -> &HolderState {
        &self.holders
    }

    /// The holder of an account and its tier's limits, when the account has a registered holder
    /// and a policy is set.
    fn account_limits(&self, account_id: AccountId) -> Option<((String, String), TierLimits)> {
        // The transfer hot path: nothing to look up (or allocate) until holders exist.
        if self.holders.holders.is_empty() {
            return None;
        }
        let account = self.accounts.get(&account_id)?;
        if account.holder_ref.is_empty() {
            return None;
        }
        let key = (account.participant.clone(), account.holder_ref.clone());
        let holder = self.holders.holders.get(&key)?;
        let limits = self.holders.policy.as_ref()?.limits(&holder.tier).ok()?;
        Some((key, limits))
    }

    /// Checks a credit of `amount_minor` to `account_id` at `timestamp_ns` against its holder's
    /// tier. `Ok(None)`: no limit applies.
    pub(super) fn check_kyc_credit(
        &self,
        sender: &crate::Actor,
        account_id: AccountId,
        amount_minor: u64,
        timestamp_ns: u64,
    ) -> Result<Option<KycCredit>, crate::TransferResult> {
        let Some((key, limits)) = self.account_limits(account_id) else { return Ok(None) };
        if limits.monthly_credit_limit_minor.is_none() && limits.balance_limit_minor.is_none() {
            return Ok(None);
        }
        // A foreign sender that used up its refusals on this holder learns nothing more.
        if let Some(owner) = sender.owner()
            && owner != key.0
            && self.foreign_refusals_this_month(owner, &key, timestamp_ns) >= KYC_FOREIGN_REFUSALS_MAX
        {
            return Err(crate::TransferResult::KycLimitExceeded);
        }
        let Some(account) = self.accounts.get(&account_id) else { return Ok(None) };
        if account.currency.as_str() != limits.currency {
            return Err(crate::TransferResult::KycCurrencyNotCovered);
        }
        let balance_after = account.credits_posted_minor as i128 + account.credits_pending_minor as i128
            - account.debits_posted_minor as i128
            + amount_minor as i128;
        let current = self.holders.usage.get(&key).copied().unwrap_or_default();
        let usage = current
            .check_credit(month_of(timestamp_ns), amount_minor, &limits, balance_after)
            .map_err(|_| crate::TransferResult::KycLimitExceeded)?;
        Ok(Some(KycCredit { key, usage }))
    }

    fn foreign_refusals_this_month(&self, sender: &str, key: &HolderKey, timestamp_ns: u64) -> u32 {
        // Keyed by owned strings; looked up only when a limited holder is credited by another
        // participant, so the allocation stays off the common path.
        match self.holders.foreign_refusals.get(&(sender.to_owned(), key.clone())) {
            Some((month, count)) if *month == month_of(timestamp_ns) => *count,
            _ => 0,
        }
    }

    /// Counts a remembered KYC refusal of a credit from `sender` (live and replay).
    pub(super) fn count_kyc_refusal(&mut self, sender: &str, account_id: AccountId, timestamp_ns: u64) {
        let Some((key, _)) = self.account_limits(account_id) else { return };
        if sender == key.0 || sender.is_empty() {
            return;
        }
        let month = month_of(timestamp_ns);
        let entry = self.holders.foreign_refusals.entry((sender.to_owned(), key)).or_insert((month, 0));
        if entry.0 != month {
            *entry = (month, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// KYC refusals other participants collected on a holder this month (what its participant
    /// sees of probing).
    pub fn foreign_kyc_refusals(&self, participant: &str, holder: &str, timestamp_ns: u64) -> u32 {
        let month = month_of(timestamp_ns);
        self.holders
            .foreign_refusals
            .iter()
            .filter(|((_, key), (m, _))| *m == month && key.0 == participant && key.1 == holder)
            .map(|(_, (_, count))| *count)
            .sum()
    }

    /// Gives back the room of a counted pending credit that did not arrive (void, expiry, the
    /// unposted part of a partial post), if the month it was counted in is still the holder's
    /// current one.
    pub(super) fn release_kyc_credit(
        &mut self,
        account_id: AccountId,
        amount_minor: u64,
        counted_at_ns: u64,
    ) {
        if amount_minor == 0 {
            return;
        }
        let Some((key, _)) = self.account_limits(account_id) else { return };
        let Some(current) = self.holders.usage.get(&key).copied() else { return };
        if current.month != month_of(counted_at_ns) {
            return;
        }
        let usage = MonthlyUsage {
            month: current.month,
            credited_minor: current.credited_minor.saturating_sub(amount_minor),
        };
        self.holders.usage.insert(key.clone(), usage);
        self.note(Undo::KycUsage(key, Some(current)));
    }

    /// Counts a committed credit (live and replay): the same computation as the check. Returns
    /// whether it counted (the credited account has a limited holder).
    pub(super) fn count_kyc_credit(
        &mut self,
        account_id: AccountId,
        amount_minor: u64,
        timestamp_ns: u64,
    ) -> bool {
        let Some((key, _)) = self.account_limits(account_id) else { return false };
        let month = month_of(timestamp_ns);
        let previous = self.holders.usage.get(&key).copied();
        let current = previous.unwrap_or_default();
        let usage = if current.month == month {
            MonthlyUsage { month, credited_minor: current.credited_minor.saturating_add(amount_minor) }
        } else {
            MonthlyUsage { month, credited_minor: amount_minor }
        };
        self.holders.usage.insert(key.clone(), usage);
        self.note(Undo::KycUsage(key, previous));
        true
    }

    pub(super) fn undo_kyc_usage(&mut self, key: (String, String), previous: Option<MonthlyUsage>) {
        match previous {
            Some(usage) => self.holders.usage.insert(key, usage),
            None => self.holders.usage.remove(&key),
        };
    }

    fn set_kyc_policy(
        &mut self,
        call: SetKycPolicy,
        timestamp_ns: u64,
        out: &mut Output,
    ) -> Result<KycPolicy, HolderRefusal> {
        let policy = call.0;
        policy.validate().map_err(|e| HolderRefusal::Kyc(e.to_string()))?;
        if self.holders.policy.as_ref() != Some(&policy) {
            self.apply(Op::SetKycPolicy { policy: policy.clone(), timestamp_ns }, out);
        }
        Ok(policy)
    }

    fn get_holder(&mut self, call: GetHolder, _: u64, _: &mut Output) -> Result<Holder, HolderRefusal> {
        let holder = self.holders.holders.get(&(call.participant, call.id.clone()));
        holder.cloned().ok_or(HolderRefusal::NotFound(call.id))
    }

    fn holder_usage(
        &mut self,
        call: GetUsage,
        timestamp_ns: u64,
        _: &mut Output,
    ) -> Result<HolderUsage, HolderRefusal> {
        let key = (call.participant, call.id.clone());
        let holder = self.holders.holders.get(&key).ok_or(HolderRefusal::NotFound(call.id))?;
        let limits = self.holders.policy.as_ref().and_then(|p| p.limits(&holder.tier).ok());
        let month = month_of(timestamp_ns);
        let usage = self
            .holders
            .usage
            .get(&key)
            .copied()
            .filter(|u| u.month == month)
            .unwrap_or(MonthlyUsage { month, credited_minor: 0 });
        let foreign_refusals = self.foreign_kyc_refusals(&key.0, &key.1, timestamp_ns);
        Ok(HolderUsage { holder: holder.clone(), limits, usage, month, foreign_refusals })
    }

    fn list_holders(
        &mut self,
        call: ListHolders,
        _: u64,
        _: &mut Output,
    ) -> Result<Vec<Holder>, HolderRefusal> {
        let ListHolders { participant, after, limit } = call;
        let start = after.map(|(p, id)| (p, format!("{id}\0"))).unwrap_or_default();
        Ok(self
            .holders
            .holders
            .range(start..)
            .map(|(_, h)| h)
            .filter(|h| participant.as_deref().is_none_or(|p| h.participant == p))
            .take(limit)
            .cloned()
            .collect())
    }

    fn create_holder(
        &mut self,
        call: CreateHolder,
        timestamp_ns: u64,
        out: &mut Output,
    ) -> Result<HolderCreated, HolderRefusal> {
        let mut holder = call.0;
        let invalid = |field, reason: &str| Err(HolderRefusal::Invalid { field, reason: reason.to_owned() });
        if !participant_valid(&holder.participant) {
            return invalid("participant", "not a valid participant id");
        }
        if holder.id.is_empty()
            || holder.id.len() > HOLDER_ID_LEN_MAX
            || !holder.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return invalid("holder_id", "1 to 64 of [A-Za-z0-9._-]");
        }
        if !matches!(holder.country.as_str(), "MX" | "US") {
            return invalid("country", "MX or US");
        }
        if holder.pii.fields().iter().any(|f| f.len() > SEALED_FIELD_LEN_MAX) {
            return invalid("pii", "a field is too long");
        }
        let Some(policy) = &self.holders.policy else { return Err(HolderRefusal::PolicyNotSet) };
        if let Err(e) = policy.limits(&holder.tier) {
            return Err(HolderRefusal::Invalid { field: "tier", reason: e.to_string() });
        }
        let key = (holder.participant.clone(), holder.id.clone());
        if let Some(existing) = self.holders.holders.get(&key) {
            let different = if existing.kind != holder.kind {
                Some("kind")
            } else if existing.country != holder.country {
                Some("country")
            } else if existing.tier != holder.tier {
                Some("tier")
            } else {
                None
            };
            return match different {
                Some(field) => Err(HolderRefusal::ExistsWithDifferent { id: holder.id.clone(), field }),
                None => Ok(HolderCreated { holder: existing.clone(), created: false }),
            };
        }
        if self.holders.holders.len() >= HOLDERS_MAX {
            return Err(HolderRefusal::LimitReached);
        }
        holder.created_at_ns = timestamp_ns;
        self.apply(Op::RegisterHolder(holder.clone()), out);
        Ok(HolderCreated { holder: *holder, created: true })
    }

    pub(super) fn apply_holder(&mut self, op: &Op) {
        match op {
            Op::RegisterHolder(holder) => {
                let key = (holder.participant.clone(), holder.id.clone());
                assert!(
                    !self.holders.holders.contains_key(&key),
                    "journal: holder {} registered twice",
                    holder.id
                );
                self.holders.holders.insert(key, (**holder).clone());
            }
            Op::SetKycPolicy { policy, .. } => self.holders.policy = Some(policy.clone()),
            _ => unreachable!("not a holder op"),
        }
    }
}

impl HolderState {
    /// A holder's count for its latest month (tests, operations).
    pub fn usage(&self, participant: &str, id: &str) -> Option<MonthlyUsage> {
        self.usage.get(&(participant.to_owned(), id.to_owned())).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use puente_money::{CurrencyCode, CurrencyTable};
    use rust_decimal::Decimal;

    use super::*;
    use crate::engine::Prefetched;
    use crate::engine::tests::sys;
    use crate::types::*;

    /// 2026-01-01T00:00:00Z.
    const JAN_2026_NS: u64 = 1_767_225_600 * 1_000_000_000;
    const DAY_NS: u64 = 86_400 * 1_000_000_000;
    const FUNDING: AccountId = 1;
    const FUNDING_USD: AccountId = 5;
    /// (account, holder): a Nivel 1 and a Nivel 2 MXN account, and a USD account of the Nivel 1
    /// holder.
    const N1: AccountId = 2;
    const N2: AccountId = 3;
    const N1_USD: AccountId = 4;
    const MISSING: AccountId = 99;

    fn account(id: AccountId, currency: CurrencyCode, holder: &str) -> NewAccount {
        NewAccount {
            id,
            participant: "fintech".into(),
            currency,
            flags: AccountFlags::default(),
            overdraft_limit_minor: 0,
            holder_ref: holder.into(),
            metadata: Metadata::new(),
        }
    }

    fn holder(id: &str, tier: Tier) -> CreateHolder {
        CreateHolder(Box::new(Holder {
            participant: "fintech".into(),
            id: id.into(),
            kind: HolderKind::Individual,
            country: "MX".into(),
            tier,
            pii: SealedPii::default(),
            created_at_ns: 0,
        }))
    }

    fn transfer(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: u64,
        currency: CurrencyCode,
    ) -> Transfer {
        Transfer { currency, ..crate::engine::tests::transfer(id, debit, credit, amount) }
    }

    /// An engine with the policy (1 UDI = MXN 8.70), two holders and their accounts.
    fn setup(out: &mut Output) -> Engine {
        let mut e = Engine::new(CurrencyTable::default());
        let policy = KycPolicy::new(Decimal::new(870, 2)).unwrap();
        e.call(&crate::engine::Prefetched::default(), SetKycPolicy(policy), JAN_2026_NS, out).unwrap();
        e.call(&crate::engine::Prefetched::default(), holder("ana", Tier::MxNivel1), JAN_2026_NS, out)
            .unwrap();
        e.call(&crate::engine::Prefetched::default(), holder("luis", Tier::MxNivel2), JAN_2026_NS, out)
            .unwrap();
        let accounts = vec![
            account(FUNDING, CurrencyCode::MXN, ""),
            account(N1, CurrencyCode::MXN, "ana"),
            account(N2, CurrencyCode::MXN, "luis"),
            account(N1_USD, CurrencyCode::USD, "ana"),
            account(FUNDING_USD, CurrencyCode::USD, ""),
        ];
        let outcomes = e.create_accounts(&sys(), accounts, JAN_2026_NS, out);
        assert!(outcomes.iter().all(|o| o.result == AccountResult::Ok));
        e
    }

    #[test]
    fn holders_need_a_policy_and_a_known_tier_and_retries_are_idempotent() {
        let mut out = Output::default();
        let mut e = Engine::new(CurrencyTable::default());
        assert_eq!(
            e.call(&crate::engine::Prefetched::default(), holder("ana", Tier::MxNivel1), 1, &mut out),
            Err(HolderRefusal::PolicyNotSet)
        );
        let policy = KycPolicy::new(Decimal::new(870, 2)).unwrap();
        e.call(&crate::engine::Prefetched::default(), SetKycPolicy(policy), 1, &mut out).unwrap();
        let unknown = holder("ana", Tier::Us("US_GOLD".into()));
        assert!(matches!(
            e.call(&crate::engine::Prefetched::default(), unknown, 2, &mut out),
            Err(HolderRefusal::Invalid { field: "tier", .. })
        ));
        let first = e
            .call(&crate::engine::Prefetched::default(), holder("ana", Tier::MxNivel1), 3, &mut out)
            .unwrap();
        assert!(matches!(first, HolderCreated { created: true, .. }));
        let retry = e
            .call(&crate::engine::Prefetched::default(), holder("ana", Tier::MxNivel1), 4, &mut out)
            .unwrap();
        assert!(matches!(retry, HolderCreated { created: false, .. }));
        assert_eq!(
            e.call(&crate::engine::Prefetched::default(), holder("ana", Tier::MxNivel2), 5, &mut out),
            Err(HolderRefusal::ExistsWithDifferent { id: "ana".into(), field: "tier" })
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Credit an account from its funding account.
        Credit { to: AccountId, amount_minor: u64 },
        /// The same credit linked with a transfer that fails: the chain changes nothing.
        FailedChain { to: AccountId, amount_minor: u64 },
        /// Pay back to the funding account (lowers the balance, not the month's count).
        Withdraw { from: AccountId, amount_minor: u64 },
        /// Move the clock on by this many days.
        Wait { days: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        let account = prop::sample::select(vec![N1, N2, N1_USD]);
        prop_oneof![
            4 => (account.clone(), 1..300_000u64).prop_map(|(to, amount_minor)| Step::Credit { to, amount_minor }),
            1 => (account.clone(), 1..300_000u64).prop_map(|(to, amount_minor)| Step::FailedChain { to, amount_minor }),
            1 => (prop::sample::select(vec![N1, N2]), 1..300_000u64)
                .prop_map(|(from, amount_minor)| Step::Withdraw { from, amount_minor }),
            1 => (1..40u64).prop_map(|days| Step::Wait { days }),
        ]
    }

    /// What the reference model expects for a credit: the limits written out again by hand.
    fn expected(
        month_used: &HashMap<(AccountId, u32), u64>,
        balance: &HashMap<AccountId, i128>,
        to: AccountId,
        amount: u64,
        month: u32,
    ) -> TransferResult {
        if to == N1_USD {
            return TransferResult::KycCurrencyNotCovered;
        }
        // 750 UDIs (N1) and 3,000 UDIs (N2) at MXN 8.70; the N1 balance cap is 1,000 UDIs.
        let monthly: u64 = if to == N1 { 652_500 } else { 2_610_000 };
        let used = month_used.get(&(to, month)).copied().unwrap_or(0);
        let over_month = used + amount > monthly;
        let over_cap = to == N1 && balance.get(&to).copied().unwrap_or(0) + amount as i128 > 870_000;
        if over_month || over_cap { TransferResult::KycLimitExceeded } else { TransferResult::Ok }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn monthly_counts_match_a_reference_model_and_survive_replay(steps in prop::collection::vec(step(), 1..60)) {
            let mut out = Output::default();
            let mut e = setup(&mut out);
            let mut now = JAN_2026_NS + 1_000;
            let mut id: TransferId = 1_000;
            let mut month_used: HashMap<(AccountId, u32), u64> = HashMap::default();
            let mut balance: HashMap<AccountId, i128> = HashMap::default();
            for step in steps {
                id += 2;
                now += 1_000;
                let month = month_of(now);
                match step {
                    Step::Wait { days } => now += days * DAY_NS,
                    Step::Credit { to, amount_minor } => {
                        let (funding, currency) =
                            if to == N1_USD { (FUNDING_USD, CurrencyCode::USD) } else { (FUNDING, CurrencyCode::MXN) };
                        let want = expected(&month_used, &balance, to, amount_minor, month);
                        let got = e.create_transfers(&Prefetched::default(), &sys(), &[transfer(id, funding, to, amount_minor, currency)], now, &mut out);
                        prop_assert_eq!(got[0].result, want);
                        if want == TransferResult::Ok {
                            *month_used.entry((to, month)).or_default() += amount_minor;
                            *balance.entry(to).or_default() += amount_minor as i128;
                        }
                    }
                    Step::FailedChain { to, amount_minor } => {
                        let (funding, currency) =
                            if to == N1_USD { (FUNDING_USD, CurrencyCode::USD) } else { (FUNDING, CurrencyCode::MXN) };
                        let mut first = transfer(id, funding, to, amount_minor, currency);
                        first.flags.linked = true;
                        let broken = transfer(id + 1, funding, MISSING, 1, currency);
                        let got = e.create_transfers(&Prefetched::default(), &sys(), &[first, broken], now, &mut out);
                        prop_assert!(got.iter().all(|o| !o.result.is_ok()));
                    }
                    Step::Withdraw { from, amount_minor } => {
                        let available = balance.get(&from).copied().unwrap_or(0);
                        let amount = amount_minor.min(available.max(0) as u64);
                        if amount > 0 {
                            let got = e.create_transfers(&Prefetched::default(), &sys(), &[transfer(id, from, FUNDING, amount, CurrencyCode::MXN)], now, &mut out);
                            prop_assert_eq!(got[0].result, TransferResult::Ok);
                            *balance.entry(from).or_default() -= amount as i128;
                        }
                    }
                }
                // The engine's count for the current month equals the model's.
                for (account, holder) in [(N1, "ana"), (N2, "luis")] {
                    let month = month_of(now);
                    let counted = e.holders().usage("fintech", holder).filter(|u| u.month == month).map_or(0, |u| u.credited_minor);
                    let model = month_used.get(&(account, month)).copied().unwrap_or(0);
                    prop_assert_eq!(counted, model);
                }
            }
            // Replay rebuilds the same counts.
            let mut replayed = Engine::new(CurrencyTable::default());
            let mut sink = Output::default();
            for op in out.ops.clone() {
                replayed.apply(op, &mut sink);
            }
            for holder in ["ana", "luis"] {
                prop_assert_eq!(replayed.holders().usage("fintech", holder), e.holders().usage("fintech", holder));
            }
        }
    }
}
