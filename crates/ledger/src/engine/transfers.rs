//! Transfers: validation, idempotency, the state checks, linked chains.

use super::*;

impl Engine {
    // ----- transfers ----------------------------------------------------------------------

    /// Processes one batch of transfers in order. Linked chains succeed or fail as one.
    pub fn create_transfers(
        &mut self,
        prefetched: &Prefetched,
        actor: &Actor,
        batch: &[Transfer],
        now_ns: u64,
        out: &mut Output,
    ) -> Vec<TransferOutcome> {
        assert!(batch.len() <= BATCH_EVENTS_MAX);
        let mut outcomes: Vec<TransferOutcome> = Vec::with_capacity(batch.len());
        let mut index = 0;
        while index < batch.len() {
            // A chain runs from `index` to the first event without `linked`.
            let mut end = index;
            while end < batch.len() && batch[end].flags.linked {
                end += 1;
            }
            if end == batch.len() {
                // The last event is linked: the chain is open, all of it fails.
                for i in index..batch.len() {
                    let result = if i + 1 == batch.len() {
                        TransferResult::LinkedEventChainOpen
                    } else {
                        TransferResult::LinkedEventFailed
                    };
                    outcomes.push(TransferOutcome { result, replayed: false, timestamp_ns: 0 });
                }
                break;
            }
            let chain = &batch[index..=end];
            if chain.len() == 1 {
                let outcome = self.create_transfer(prefetched, actor, &chain[0], now_ns, out);
                outcomes.push(outcome);
            } else {
                self.run_chain(prefetched, actor, chain, now_ns, out, &mut outcomes);
            }
            index = end + 1;
        }
        debug_assert_eq!(outcomes.len(), batch.len());
        outcomes
    }

    fn run_chain(
        &mut self,
        prefetched: &Prefetched,
        actor: &Actor,
        chain: &[Transfer],
        now_ns: u64,
        out: &mut Output,
        outcomes: &mut Vec<TransferOutcome>,
    ) {
        let marks = (out.ops.len(), out.entries.len(), out.records.len());
        self.undo = Some(Vec::new());
        let mut chain_outcomes = Vec::with_capacity(chain.len());
        let mut failed: Option<(usize, TransferOutcome)> = None;
        for (i, transfer) in chain.iter().enumerate() {
            // Inside a chain, a failure is not remembered until the chain is rolled back.
            let outcome = self.create_transfer_inner(prefetched, actor, transfer, now_ns, out, false);
            if outcome.result != TransferResult::Ok {
                failed = Some((i, outcome));
                break;
            }
            chain_outcomes.push(outcome);
        }
        match failed {
            None => {
                self.undo = None;
                outcomes.extend(chain_outcomes);
            }
            Some((culprit, outcome)) => {
                self.rollback(marks, out);
                let mut outcome = outcome;
                if outcome.result.is_remembered_failure() && !outcome.replayed {
                    outcome.timestamp_ns =
                        self.remember_failure(actor, &chain[culprit], outcome.result, now_ns, out);
                }
                for i in 0..chain.len() {
                    if i == culprit {
                        outcomes.push(outcome.clone());
                    } else {
                        outcomes.push(TransferOutcome {
                            result: TransferResult::LinkedEventFailed,
                            replayed: false,
                            timestamp_ns: 0,
                        });
                    }
                }
            }
        }
    }

    /// Undoes a failed chain: state from the undo log, output back to `marks` (ops, entries,
    /// records).
    pub fn create_transfer(
        &mut self,
        prefetched: &Prefetched,
        actor: &Actor,
        transfer: &Transfer,
        now_ns: u64,
        out: &mut Output,
    ) -> TransferOutcome {
        self.create_transfer_inner(prefetched, actor, transfer, now_ns, out, true)
    }

    fn create_transfer_inner(
        &mut self,
        prefetched: &Prefetched,
        actor: &Actor,
        transfer: &Transfer,
        now_ns: u64,
        out: &mut Output,
        remember: bool,
    ) -> TransferOutcome {
        let fail = |result| TransferOutcome { result, replayed: false, timestamp_ns: 0 };
        let result = self.validate_transfer(actor, transfer);
        if result != TransferResult::Ok {
            return fail(result);
        }
        if let Some(prior) = self.seen(prefetched, transfer.id, actor.scope()) {
            // A committed transfer that touches none of the caller's accounts was never the
            // caller's: its id is taken, and nothing of it (fields, outcome) is said.
            if let (Some(owner), Prior::Committed(record)) = (actor.owner(), &prior) {
                let owns = |id: &AccountId| self.accounts.get(id).is_some_and(|a| a.participant == owner);
                if !owns(&record.effect.debit_account_id) && !owns(&record.effect.credit_account_id) {
                    return fail(TransferResult::IdAlreadyUsed);
                }
            }
            let result = match &prior {
                Prior::Committed(record) => compare_transfer(&record.transfer, transfer),
                Prior::Failed(refused) => compare_refused(refused, transfer),
            };
            if result != TransferResult::Ok {
                return fail(result);
            }
            return match prior {
                Prior::Committed(record) => TransferOutcome {
                    result: TransferResult::Ok,
                    replayed: true,
                    timestamp_ns: record.timestamp_ns,
                },
                Prior::Failed(refused) => TransferOutcome {
                    result: refused.result,
                    replayed: true,
                    timestamp_ns: refused.timestamp_ns,
                },
            };
        }
        let effect = match self.check_state(prefetched, actor, transfer, now_ns) {
            Ok(effect) => effect,
            Err(result) => {
                let mut outcome = fail(result);
                if remember && result.is_remembered_failure() {
                    outcome.timestamp_ns = self.remember_failure(actor, transfer, result, now_ns, out);
                }
                return outcome;
            }
        };
        let timestamp_ns = self.next_timestamp(now_ns);
        let expires_at_ns = if transfer.flags.pending {
            crate::types::expires_at(timestamp_ns, transfer.timeout_ms)
        } else {
            0
        };
        let released_minor = if transfer.flags.post_pending || transfer.flags.void_pending {
            self.pendings.get(&transfer.pending_id).map_or(0, |p| p.amount_minor)
        } else {
            0
        };
        let record = TransferRecord {
            transfer: transfer.clone(),
            effect,
            timestamp_ns,
            expires_at_ns,
            released_minor,
        };
        self.apply(Op::Transfer(record), out);
        TransferOutcome { result: TransferResult::Ok, replayed: false, timestamp_ns }
    }

    fn remember_failure(
        &mut self,
        actor: &Actor,
        transfer: &Transfer,
        result: TransferResult,
        now_ns: u64,
        out: &mut Output,
    ) -> u64 {
        let timestamp_ns = self.next_timestamp(now_ns);
        self.apply(Op::Refused(RefusedTransfer::new(actor.scope(), transfer, result, timestamp_ns)), out);
        timestamp_ns
    }

    fn validate_transfer(&self, actor: &Actor, t: &Transfer) -> TransferResult {
        use TransferResult::*;
        if t.id == 0 {
            return IdMustNotBeZero;
        }
        // System ids (settlement, FX legs and cancels, expiry records) are Puente's alone.
        if puente_core::ids::is_system_id(t.id) && !actor.is_system() {
            return IdReserved;
        }
        let kinds = [t.flags.pending, t.flags.post_pending, t.flags.void_pending];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return FlagsAreMutuallyExclusive;
        }
        if t.flags.post_on_expiry && (!t.flags.pending || t.timeout_ms == 0) {
            return PostOnExpiryRequiresPendingTimeout;
        }
        let resolving = t.flags.post_pending || t.flags.void_pending;
        if resolving {
            if t.pending_id == 0 {
                return PendingIdMustNotBeZero;
            }
            if t.pending_id == t.id {
                return PendingIdMustBeDifferent;
            }
            if t.timeout_ms != 0 {
                return TimeoutReservedForPendingTransfer;
            }
            if t.debit_account_id != 0 && t.debit_account_id == t.credit_account_id {
                return AccountsMustBeDifferent;
            }
        } else {
            if t.debit_account_id == 0 {
                return DebitAccountIdMustNotBeZero;
            }
            if t.credit_account_id == 0 {
                return CreditAccountIdMustNotBeZero;
            }
            if t.debit_account_id == t.credit_account_id {
                return AccountsMustBeDifferent;
            }
            if t.pending_id != 0 {
                return PendingIdMustBeZero;
            }
            if t.timeout_ms != 0 && !t.flags.pending {
                return TimeoutReservedForPendingTransfer;
            }
            if t.amount_minor == 0 {
                return AmountMustNotBeZero;
            }
        }
        if t.timeout_ms > TIMEOUT_MAX_MS {
            return TimeoutTooLarge;
        }
        if t.amount_minor > AMOUNT_MAX_MINOR {
            return AmountTooLarge;
        }
        if self.currencies.get(t.currency).is_err() {
            return CurrencyNotConfigured;
        }
        if t.reference.len() > REFERENCE_LEN_MAX {
            return ReferenceTooLong;
        }
        if !metadata_fits(&t.metadata) {
            return MetadataTooLarge;
        }
        Ok
    }

    /// Checks a transfer against the ledger's state; returns what it would do.
    fn check_state(
        &self,
        prefetched: &Prefetched,
        actor: &Actor,
        t: &Transfer,
        now_ns: u64,
    ) -> Result<Effect, TransferResult> {
        if t.flags.post_pending || t.flags.void_pending {
            self.check_post_or_void(prefetched, actor, t, now_ns)
        } else {
            self.check_single_phase(actor, t, now_ns)
        }
    }

    /// A post or void: the pending transfer it names must be live, the caller's, and match.
    fn check_post_or_void(
        &self,
        prefetched: &Prefetched,
        actor: &Actor,
        t: &Transfer,
        now_ns: u64,
    ) -> Result<Effect, TransferResult> {
        // A pending transfer Puente made (an FX leg held for a cancellation window) is
        // resolved only by Puente: a sender voiding one leg alone would be refunded while
        // the other legs still pay the recipient.
        if puente_core::ids::is_system_id(t.pending_id) && !actor.is_system() {
            return Err(TransferResult::PendingTransferNotFound);
        }
        let Some(p) = self.pendings.get(&t.pending_id) else {
            // Not in memory: resolved already, or never a pending transfer.
            if let Some((state, debit_account_id)) = self.resolved(prefetched, t.pending_id) {
                if let Some(owner) = actor.owner()
                    && self.accounts.get(&debit_account_id).is_none_or(|a| a.participant != owner)
                {
                    return Err(TransferResult::PendingTransferNotFound);
                }
                return Err(match state {
                    PendingState::Posted => TransferResult::PendingTransferAlreadyPosted,
                    PendingState::Voided => TransferResult::PendingTransferAlreadyVoided,
                    PendingState::Expired => TransferResult::PendingTransferExpired,
                    PendingState::Pending => unreachable!("a resolved pending transfer is not pending"),
                });
            }
            let known = self.committed(prefetched, t.pending_id);
            return Err(if known {
                TransferResult::PendingTransferNotPending
            } else {
                TransferResult::PendingTransferNotFound
            });
        };
        // Another participant's pending transfer does not exist for this caller.
        if let Some(owner) = actor.owner() {
            let owned = self.accounts.get(&p.debit_account_id).is_some_and(|a| a.participant == owner);
            if !owned {
                return Err(TransferResult::PendingTransferNotFound);
            }
        }
        debug_assert_eq!(p.state, PendingState::Pending, "only live pending transfers are in memory");
        if p.expires_at_ns != 0 && p.expires_at_ns <= now_ns {
            return Err(TransferResult::PendingTransferExpired);
        }
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return Err(TransferResult::PendingTransferHasDifferentDebitAccountId);
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return Err(TransferResult::PendingTransferHasDifferentCreditAccountId);
        }
        if t.currency != p.currency {
            return Err(TransferResult::PendingTransferHasDifferentCurrency);
        }
        let amount_minor = if t.flags.void_pending {
            if t.amount_minor != 0 && t.amount_minor != p.amount_minor {
                return Err(TransferResult::ExceedsPendingTransferAmount);
            }
            p.amount_minor
        } else if t.amount_minor == 0 {
            p.amount_minor
        } else if t.amount_minor > p.amount_minor {
            return Err(TransferResult::ExceedsPendingTransferAmount);
        } else {
            t.amount_minor
        };
        Ok(Effect {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount_minor,
        })
    }

    /// A single-phase or pending transfer: both accounts open, the caller's debit, one
    /// currency, and every limit (balance flags, Net Debit Cap, the credited holder's KYC).
    fn check_single_phase(&self, actor: &Actor, t: &Transfer, now_ns: u64) -> Result<Effect, TransferResult> {
        let Some(debit) = self.accounts.get(&t.debit_account_id) else {
            return Err(TransferResult::DebitAccountNotFound);
        };
        let Some(credit) = self.accounts.get(&t.credit_account_id) else {
            return Err(TransferResult::CreditAccountNotFound);
        };
        // Another participant's account does not exist for this caller (existence must not leak).
        if actor.owner().is_some_and(|a| a != debit.participant) {
            return Err(TransferResult::DebitAccountNotFound);
        }
        if debit.currency != credit.currency {
            return Err(TransferResult::AccountsMustHaveSameCurrency);
        }
        if t.currency != debit.currency {
            return Err(TransferResult::TransferCurrencyMismatch);
        }
        if debit.closed {
            return Err(TransferResult::DebitAccountClosed);
        }
        if credit.closed {
            return Err(TransferResult::CreditAccountClosed);
        }
        let amount = t.amount_minor as u128;
        // Balances are u128 and amounts at most 10^17: overflow needs > 10^21 transfers.
        let debits = debit.debits_pending_minor + debit.debits_posted_minor;
        let credits = credit.credits_pending_minor + credit.credits_posted_minor;
        if debits.checked_add(amount).is_none() || credits.checked_add(amount).is_none() {
            return Err(TransferResult::OverflowsBalance);
        }
        if debit.flags.debits_must_not_exceed_credits
            && debits + amount > debit.credits_posted_minor + debit.overdraft_limit_minor as u128
        {
            return Err(TransferResult::ExceedsCredits);
        }
        if credit.flags.credits_must_not_exceed_debits && credits + amount > credit.debits_posted_minor {
            return Err(TransferResult::ExceedsDebits);
        }
        self.check_net_debit_cap(t)?;
        // The credited account's holder: its KYC tier's monthly and balance limits.
        self.check_kyc_credit(
            actor,
            t.credit_account_id,
            t.amount_minor,
            now_ns.max(self.last_timestamp_ns + 1),
        )?;
        Ok(Effect {
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount_minor: t.amount_minor,
        })
    }
}

/// What a retry must repeat exactly, in the order differences are reported; the free text
/// (reference, metadata) is compared after it, as text or through digests.
struct Fixed<'a> {
    flags: &'a TransferFlags,
    debit_account_id: AccountId,
    credit_account_id: AccountId,
    amount_minor: u64,
    currency: CurrencyCode,
    pending_id: TransferId,
    timeout_ms: u64,
}

impl Fixed<'_> {
    fn compare(&self, t: &Transfer) -> TransferResult {
        use TransferResult::*;
        if *self.flags != t.flags {
            ExistsWithDifferentFlags
        } else if self.debit_account_id != t.debit_account_id {
            ExistsWithDifferentDebitAccountId
        } else if self.credit_account_id != t.credit_account_id {
            ExistsWithDifferentCreditAccountId
        } else if self.amount_minor != t.amount_minor {
            ExistsWithDifferentAmount
        } else if self.currency != t.currency {
            ExistsWithDifferentCurrency
        } else if self.pending_id != t.pending_id {
            ExistsWithDifferentPendingId
        } else if self.timeout_ms != t.timeout_ms {
            ExistsWithDifferentTimeout
        } else {
            Ok
        }
    }
}

/// A retry against a remembered failure: the same checks as [`compare_transfer`], the free text
/// through its digests.
fn compare_refused(prior: &RefusedTransfer, t: &Transfer) -> TransferResult {
    use TransferResult::*;
    let fixed = Fixed {
        flags: &prior.flags,
        debit_account_id: prior.debit_account_id,
        credit_account_id: prior.credit_account_id,
        amount_minor: prior.amount_minor,
        currency: prior.currency,
        pending_id: prior.pending_id,
        timeout_ms: prior.timeout_ms,
    };
    match fixed.compare(t) {
        Ok if prior.reference_digest != reference_digest(&t.reference) => ExistsWithDifferentReference,
        Ok if prior.metadata_digest != metadata_digest(&t.metadata) => ExistsWithDifferentMetadata,
        result => result,
    }
}

fn compare_transfer(prior: &Transfer, t: &Transfer) -> TransferResult {
    use TransferResult::*;
    let fixed = Fixed {
        flags: &prior.flags,
        debit_account_id: prior.debit_account_id,
        credit_account_id: prior.credit_account_id,
        amount_minor: prior.amount_minor,
        currency: prior.currency,
        pending_id: prior.pending_id,
        timeout_ms: prior.timeout_ms,
    };
    match fixed.compare(t) {
        Ok if prior.reference != t.reference => ExistsWithDifferentReference,
        Ok if prior.metadata != t.metadata => ExistsWithDifferentMetadata,
        result => result,
    }
}
