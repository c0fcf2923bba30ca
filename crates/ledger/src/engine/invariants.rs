//! The invariants checked after replay and (in debug builds) after every group.

use super::*;

impl Engine {
    // ----- invariants ---------------------------------------------------------------------

    /// Per currency, total debits equal total credits (posted and pending), and no account
    /// breaks its limits. Returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut totals: HashMap<CurrencyCode, [u128; 4]> = HashMap::default();
        for a in self.accounts.values() {
            let t = totals.entry(a.currency).or_default();
            t[0] += a.debits_pending_minor;
            t[1] += a.debits_posted_minor;
            t[2] += a.credits_pending_minor;
            t[3] += a.credits_posted_minor;
            if !a.within_limits() {
                return Err(format!("account {} breaks its balance limits", a.id));
            }
        }
        for (currency, [dp, dpo, cp, cpo]) in totals {
            if dp != cp {
                return Err(format!("{currency}: pending debits {dp} != pending credits {cp}"));
            }
            if dpo != cpo {
                return Err(format!("{currency}: posted debits {dpo} != posted credits {cpo}"));
            }
        }
        let reserved: u128 = self
            .pendings
            .values()
            .filter(|p| p.state == PendingState::Pending)
            .map(|p| p.amount_minor as u128)
            .sum();
        let pending_total: u128 = self.accounts.values().map(|a| a.debits_pending_minor).sum();
        if reserved != pending_total {
            return Err(format!("open pending transfers hold {reserved} but accounts show {pending_total}"));
        }
        self.check_settlement_invariants()
    }
}
