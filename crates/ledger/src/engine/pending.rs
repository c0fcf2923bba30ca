//! Pending (two-phase) transfers: a reservation is made by a pending transfer and released in
//! exactly one way, through [`Engine::release`]: a post (in full or in part), a void, an
//! expiry, or an automatic post at the timeout (`post_on_expiry`). A released pending transfer
//! leaves memory: only transfers that can still change are kept.

use super::*;

impl Engine {
    /// Expires every pending transfer whose timeout has passed (at most EXPIRE_BATCH_MAX).
    /// Returns how many were expired.
    pub fn expire_due(&mut self, now_ns: u64, out: &mut Output) -> usize {
        let mut due = Vec::new();
        for (at, id) in self.expiry.iter() {
            if *at > now_ns || due.len() >= EXPIRE_BATCH_MAX {
                break;
            }
            due.push(*id);
        }
        for pending_id in &due {
            let timestamp_ns = self.next_timestamp(now_ns);
            let Some(p) = self.pendings.get(pending_id) else { continue };
            let effect = Effect {
                debit_account_id: p.debit_account_id,
                credit_account_id: p.credit_account_id,
                amount_minor: p.amount_minor,
            };
            let op = if p.post_on_expiry {
                Op::AutoPost { pending_id: *pending_id, timestamp_ns, effect }
            } else {
                Op::Expire { pending_id: *pending_id, timestamp_ns, effect }
            };
            self.apply(op, out);
        }
        due.len()
    }

    /// Makes the reservation of a new pending transfer (from `apply`).
    pub(super) fn reserve(&mut self, record: &TransferRecord) {
        let t = &record.transfer;
        let e = record.effect;
        let ts = record.timestamp_ns;
        let amount = e.amount_minor as u128;
        let kyc_counted = self.count_kyc_credit(e.credit_account_id, e.amount_minor, ts);
        self.update(e.debit_account_id, |a| a.debits_pending_minor += amount);
        self.update(e.credit_account_id, |a| a.credits_pending_minor += amount);
        self.save_pending(t.id);
        self.pendings.insert(
            t.id,
            Pending {
                debit_account_id: e.debit_account_id,
                credit_account_id: e.credit_account_id,
                amount_minor: e.amount_minor,
                currency: t.currency,
                expires_at_ns: record.expires_at_ns,
                post_on_expiry: t.flags.post_on_expiry,
                state: PendingState::Pending,
                created_at_ns: ts,
                kyc_counted,
            },
        );
        if record.expires_at_ns != 0 {
            self.expiry.insert((record.expires_at_ns, t.id));
            self.note(Undo::ExpiryInserted(record.expires_at_ns, t.id));
        }
        self.settlement_on_pending(e.debit_account_id, e.credit_account_id, t.currency, amount as i128);
    }

    /// Releases the reservation of pending transfer `pending_id`, posting `posted_minor` of it
    /// (0 for a void or an expiry), at `ts`; it ends in `state`. The one function every
    /// resolution goes through: balances, the expiry queue, the holder's KYC month (the credit
    /// that does not arrive gives its room back), settlement positions. Returns the pending
    /// transfer's accounts and amount (the reservation released).
    pub(super) fn release(
        &mut self,
        pending_id: TransferId,
        posted_minor: u64,
        ts: u64,
        state: PendingState,
    ) -> Effect {
        let p = self.pendings.get(&pending_id).cloned();
        let p = p.unwrap_or_else(|| panic!("journal: resolving unknown pending {pending_id}"));
        assert_eq!(p.state, PendingState::Pending, "journal: pending {pending_id} resolved twice");
        assert!(posted_minor <= p.amount_minor, "journal: pending {pending_id} posted beyond its amount");
        debug_assert!(state != PendingState::Pending);
        let reserved = p.amount_minor as u128;
        let posted = posted_minor as u128;
        self.save_account(p.debit_account_id);
        self.save_account(p.credit_account_id);
        self.update(p.debit_account_id, |a| {
            a.debits_pending_minor -= reserved;
            a.debits_posted_minor += posted;
        });
        self.update(p.credit_account_id, |a| {
            a.credits_pending_minor -= reserved;
            a.credits_posted_minor += posted;
        });
        if p.expires_at_ns != 0 && self.expiry.remove(&(p.expires_at_ns, pending_id)) {
            self.note(Undo::ExpiryRemoved(p.expires_at_ns, pending_id));
        }
        if p.kyc_counted {
            self.release_kyc_credit(p.credit_account_id, p.amount_minor - posted_minor, p.created_at_ns);
        }
        self.settlement_on_pending(p.debit_account_id, p.credit_account_id, p.currency, -(reserved as i128));
        self.settlement_on_posted(p.debit_account_id, p.credit_account_id, p.currency, posted_minor, ts);
        // Resolved: it leaves memory (the index keeps its final state).
        self.save_pending(pending_id);
        self.pendings.remove(&pending_id);
        self.recent_resolved.insert(pending_id, (state, p.debit_account_id));
        self.note(Undo::Resolved(pending_id));
        Effect {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount_minor: p.amount_minor,
        }
    }
}
