//! Opening and closing accounts.

use super::*;

impl Engine {
    // ----- accounts -----------------------------------------------------------------------

    pub fn create_accounts(
        &mut self,
        actor: &Actor,
        batch: Vec<NewAccount>,
        now_ns: u64,
        out: &mut Output,
    ) -> Vec<AccountOutcome> {
        assert!(batch.len() <= BATCH_EVENTS_MAX);
        let mut outcomes = Vec::with_capacity(batch.len());
        for new in batch {
            let result = self.validate_account(actor, &new);
            if result != AccountResult::Ok {
                outcomes.push(AccountOutcome { result, replayed: false, account: None });
                continue;
            }
            if let Some(existing) = self.accounts.get(&new.id) {
                // Another participant's account: the id is taken, and nothing more is said.
                if actor.owner().is_some_and(|a| a != existing.participant) {
                    outcomes.push(AccountOutcome {
                        result: AccountResult::IdAlreadyUsed,
                        replayed: false,
                        account: None,
                    });
                    continue;
                }
                let result = compare_account(existing, &new);
                let account = (result == AccountResult::Ok).then(|| existing.clone());
                outcomes.push(AccountOutcome { result, replayed: result == AccountResult::Ok, account });
                continue;
            }
            if self.accounts.len() >= ACCOUNTS_MAX {
                outcomes.push(AccountOutcome {
                    result: AccountResult::AccountsLimitReached,
                    replayed: false,
                    account: None,
                });
                continue;
            }
            let ts = self.next_timestamp(now_ns);
            let account = Account::from_new(new, ts);
            self.apply(Op::CreateAccount(account.clone()), out);
            outcomes.push(AccountOutcome {
                result: AccountResult::Ok,
                replayed: false,
                account: Some(account),
            });
        }
        outcomes
    }

    /// Closes an account: no new transfers may touch it. Refused while it has pending
    /// (reserved) amounts; closing a closed account is an idempotent success. Another
    /// participant's account is reported as not found.
    pub fn close_account(
        &mut self,
        actor: &Actor,
        id: AccountId,
        now_ns: u64,
        out: &mut Output,
    ) -> AccountOutcome {
        let refused = |result| AccountOutcome { result, replayed: false, account: None };
        let Some(account) = self.accounts.get(&id) else {
            return refused(AccountResult::AccountNotFound);
        };
        if actor.owner().is_some_and(|a| a != account.participant) {
            return refused(AccountResult::AccountNotFound);
        }
        if is_system_participant(&account.participant) && !actor.is_system() {
            return refused(AccountResult::AccountReserved);
        }
        if account.closed {
            return AccountOutcome {
                result: AccountResult::Ok,
                replayed: true,
                account: Some(account.clone()),
            };
        }
        if account.debits_pending_minor != 0 || account.credits_pending_minor != 0 {
            return refused(AccountResult::AccountHasPendingTransfers);
        }
        let timestamp_ns = self.next_timestamp(now_ns);
        self.apply(Op::CloseAccount { account_id: id, timestamp_ns }, out);
        AccountOutcome {
            result: AccountResult::Ok,
            replayed: false,
            account: self.accounts.get(&id).cloned(),
        }
    }

    fn validate_account(&self, actor: &Actor, new: &NewAccount) -> AccountResult {
        use AccountResult::*;
        if new.id == 0 {
            return IdMustNotBeZero;
        }
        if puente_core::ids::is_system_id(new.id) && !actor.is_system() {
            return IdReserved;
        }
        if !participant_valid(&new.participant)
            || actor.owner().is_some_and(|a| a != new.participant)
            || (is_system_participant(&new.participant) && !actor.is_system())
        {
            return ParticipantInvalid;
        }
        // An operator opens accounts only for registered participants (a participant's own
        // request names itself, and Puente's own participants are not in the registry).
        if matches!(actor, Actor::Operator(_)) && self.identity.participant(&new.participant).is_none() {
            return ParticipantNotFound;
        }
        if self.currencies.get(new.currency).is_err() {
            return CurrencyNotConfigured;
        }
        if new.flags.debits_must_not_exceed_credits && new.flags.credits_must_not_exceed_debits {
            return FlagsAreMutuallyExclusive;
        }
        if new.overdraft_limit_minor > 0 && !new.flags.debits_must_not_exceed_credits {
            return OverdraftRequiresDebitLimit;
        }
        if new.overdraft_limit_minor > AMOUNT_MAX_MINOR {
            return OverdraftTooLarge;
        }
        if new.holder_ref.len() > REFERENCE_LEN_MAX {
            return HolderRefTooLong;
        }
        if !metadata_fits(&new.metadata) {
            return MetadataTooLarge;
        }
        Ok
    }
}

fn compare_account(existing: &Account, new: &NewAccount) -> AccountResult {
    use AccountResult::*;
    if existing.participant != new.participant {
        ExistsWithDifferentParticipant
    } else if existing.currency != new.currency {
        ExistsWithDifferentCurrency
    } else if existing.flags != new.flags {
        ExistsWithDifferentFlags
    } else if existing.overdraft_limit_minor != new.overdraft_limit_minor {
        ExistsWithDifferentOverdraftLimit
    } else if existing.holder_ref != new.holder_ref {
        ExistsWithDifferentHolderRef
    } else if existing.metadata != new.metadata {
        ExistsWithDifferentMetadata
    } else {
        Ok
    }
}
