//! `puente.v1.LedgerService`.

use std::pin::Pin;

use crate::grpc::ledger_service_server::LedgerService;
use puente_ledger::{AccountResult, Ledger, PAGE_SIZE_MAX, Prior};
use puente_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth;
use crate::convert::{self, timestamp};
use crate::error::{ApiError, check};
use puente_ledger::identity::Caller;

/// Rows read from the store per step of the transfer feed.
const FEED_PAGE_ROWS: usize = PAGE_SIZE_MAX;
/// Transfers buffered per feed subscriber before it waits.
const FEED_CHANNEL_DEPTH: usize = 4_096;

pub struct LedgerApi {
    ledger: Ledger,
    /// Becomes true when the server begins a graceful shutdown: open feeds end, so that the
    /// shutdown never waits on a subscriber.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl LedgerApi {
    pub fn new(ledger: Ledger, shutdown: tokio::sync::watch::Receiver<bool>) -> LedgerApi {
        LedgerApi { ledger, shutdown }
    }
}

/// Most account owners a participant's feed remembers.
const FEED_OWNER_CACHE_MAX: usize = 100_000;

impl LedgerApi {
    /// The account, if it exists and the caller may see it; otherwise NOT_FOUND (the same
    /// answer either way, so another participant's account does not leak).
    fn visible_account(
        &self,
        caller: &Caller,
        id: puente_ledger::AccountId,
        id_text: &str,
    ) -> Result<puente_ledger::Account, ApiError> {
        match self.ledger.get_account(id)? {
            Some(account) if caller.may_see(&account.participant) => Ok(account),
            _ => Err(ApiError::NotFound { resource: "account", id: id_text.to_owned() }),
        }
    }

    /// A transfer is visible to the owner of either of its accounts.
    fn may_see_transfer(
        &self,
        caller: &Caller,
        debit: puente_ledger::AccountId,
        credit: puente_ledger::AccountId,
    ) -> bool {
        let Some(own) = caller.scope() else { return true };
        [debit, credit]
            .into_iter()
            .any(|id| self.ledger.get_account(id).ok().flatten().is_some_and(|a| a.participant == own))
    }
}

type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::StreamTransfersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn create_accounts(
        &self,
        request: Request<pb::CreateAccountsRequest>,
    ) -> Result<Response<pb::CreateAccountsResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let currencies = self.ledger.currencies();
        let mut violations = Vec::new();
        let batch: Vec<_> = request
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| convert::new_account(a, i, currencies, &mut violations))
            .collect();
        check(violations)?;
        let span = tracing::info_span!("create_accounts", count = batch.len());
        let outcomes = self
            .ledger
            .create_accounts(caller.actor(), batch)
            .instrument(span)
            .await
            .map_err(ApiError::from)?;
        let results = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, o)| pb::CreateAccountResult {
                index: index as u32,
                code: o.result.code().to_owned(),
                replayed: o.replayed,
                account: o.account.as_ref().map(|a| convert::account(a, currencies)),
            })
            .collect();
        Ok(Response::new(pb::CreateAccountsResponse { results }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let id = convert::required_id(&request.id, "id", &mut violations);
        check(violations)?;
        let account = self.visible_account(&caller, id, &request.id)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(convert::account(&account, self.ledger.currencies())),
        }))
    }

    async fn close_account(
        &self,
        request: Request<pb::CloseAccountRequest>,
    ) -> Result<Response<pb::CloseAccountResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let id = convert::required_id(&request.id, "id", &mut violations);
        check(violations)?;
        let span = tracing::info_span!("close_account", account_id = %request.id);
        let outcome =
            self.ledger.close_account(caller.actor(), id).instrument(span).await.map_err(ApiError::from)?;
        match (outcome.result, outcome.account) {
            (AccountResult::Ok, Some(account)) => Ok(Response::new(pb::CloseAccountResponse {
                account: Some(convert::account(&account, self.ledger.currencies())),
                replayed: outcome.replayed,
            })),
            (AccountResult::AccountNotFound, _) => {
                Err(ApiError::NotFound { resource: "account", id: request.id }.into())
            }
            (result, _) => Err(ApiError::Refused(result.code()).into()),
        }
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let page_size = convert::page_size(request.page_size, "page_size", &mut violations);
        let after = convert::account_page_token(&request.page_token, &mut violations);
        check(violations)?;
        // A participant lists its own accounts; naming another lists nothing (as if it had none).
        let Ok(participant) = auth::named_participant(&caller, &request.participant) else {
            return Ok(Response::new(pb::ListAccountsResponse::default()));
        };
        let participant = (!participant.is_empty()).then_some(participant.as_str());
        let accounts = self.ledger.list_accounts(participant, after, page_size).map_err(ApiError::from)?;
        let next_page_token = match accounts.last() {
            Some(last) if accounts.len() == page_size => convert::format_id(last.id),
            _ => String::new(),
        };
        let currencies = self.ledger.currencies();
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: accounts.iter().map(|a| convert::account(a, currencies)).collect(),
            next_page_token,
        }))
    }

    async fn create_transfers(
        &self,
        request: Request<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let currencies = self.ledger.currencies();
        let mut violations = Vec::new();
        let batch: Vec<_> = request
            .transfers
            .iter()
            .enumerate()
            .map(|(i, t)| convert::transfer_in(t, i, currencies, &mut violations))
            .collect();
        check(violations)?;
        let first_id = batch.first().map(|t| convert::format_id(t.id)).unwrap_or_default();
        let span = tracing::info_span!("create_transfers", count = batch.len(), transfer_id = %first_id);
        let outcomes = self
            .ledger
            .create_transfers(caller.actor(), batch)
            .instrument(span.clone())
            .await
            .map_err(ApiError::from)?;
        let _enter = span.enter();
        crate::metrics::count_transfer_results(outcomes.iter().map(|o| &o.result));
        let results = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, o)| {
                if !o.result.is_ok() {
                    // The id as the client sent it: no copy of the batch is kept for this.
                    let transfer_id = request.transfers.get(index).map_or("", |t| t.id.as_str());
                    tracing::debug!(%transfer_id, code = o.result.code(), "transfer refused");
                }
                pb::CreateTransferResult {
                    index: index as u32,
                    code: o.result.code().to_owned(),
                    replayed: o.replayed,
                    position: if o.result.is_ok() { o.timestamp_ns } else { 0 },
                    create_time: timestamp(o.timestamp_ns),
                }
            })
            .collect();
        Ok(Response::new(pb::CreateTransfersResponse { results }))
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::GetTransferResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let id = convert::required_id(&request.id, "id", &mut violations);
        check(violations)?;
        let prior = self.ledger.get_transfer(id, &caller.participant).await.map_err(ApiError::from)?;
        // A committed transfer is visible to the owners of its accounts; a failed attempt only
        // to the participant that made it (not to the owners of the accounts it named).
        let prior = prior
            .filter(|p| match p {
                Prior::Failed(refused) if !refused.scope.is_empty() => {
                    caller.is_operator() || refused.scope == caller.participant
                }
                _ => {
                    let (debit, credit) = p.accounts();
                    self.may_see_transfer(&caller, debit, credit)
                }
            })
            .ok_or(ApiError::NotFound { resource: "transfer", id: request.id })?;
        let pending_state = match &prior {
            Prior::Committed(r) if r.transfer.flags.pending => {
                self.ledger.pending_state(id).await.map_err(ApiError::from)?
            }
            _ => None,
        };
        Ok(Response::new(pb::GetTransferResponse {
            transfer: Some(convert::prior_out(&prior, pending_state, self.ledger.currencies())),
        }))
    }

    async fn list_transfers(
        &self,
        request: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let account_id = convert::required_id(&request.account_id, "account_id", &mut violations);
        let from_ns = convert::timestamp_ns(&request.start_time, "start_time", &mut violations).unwrap_or(0);
        let to_ns = convert::timestamp_ns(&request.end_time, "end_time", &mut violations).unwrap_or(u64::MAX);
        let descending = match request.order_by.trim() {
            "" | "create_time" | "create_time asc" => false,
            "create_time desc" => true,
            _ => {
                violations.push(crate::error::Violation::new(
                    "order_by",
                    "must be \"create_time\" or \"create_time desc\"",
                ));
                false
            }
        };
        let page_size = convert::page_size(request.page_size, "page_size", &mut violations);
        let cursor = convert::position_page_token(&request.page_token, &mut violations);
        check(violations)?;
        if self
            .ledger
            .get_account(account_id)
            .map_err(ApiError::from)?
            .is_none_or(|a| !caller.may_see(&a.participant))
        {
            return Err(ApiError::NotFound { resource: "account", id: request.account_id }.into());
        }
        let entries = self
            .ledger
            .account_entries(account_id, from_ns, to_ns, descending, cursor, page_size)
            .await
            .map_err(ApiError::from)?;
        let currencies = self.ledger.currencies();
        let mut transfers = Vec::with_capacity(entries.len());
        for (_, location) in &entries {
            // Every line has its transfer record, the ledger's own expiries included: the entry
            // points at it in the journal.
            if let Some(record) = self.ledger.record_at(*location).map_err(ApiError::from)? {
                let state = if record.transfer.flags.pending {
                    self.ledger.pending_state(record.transfer.id).await.map_err(ApiError::from)?
                } else {
                    None
                };
                transfers.push(convert::transfer_out(&record, state, currencies));
            }
        }
        let next_page_token = match entries.last() {
            Some((last, _)) if entries.len() == page_size => convert::position_token(last.timestamp_ns),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListTransfersResponse { transfers, next_page_token }))
    }

    async fn get_account_statement(
        &self,
        request: Request<pb::GetAccountStatementRequest>,
    ) -> Result<Response<pb::GetAccountStatementResponse>, Status> {
        let (caller, request) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let account_id = convert::required_id(&request.account_id, "account_id", &mut violations);
        let from_ns = convert::timestamp_ns(&request.start_time, "start_time", &mut violations).unwrap_or(0);
        let to_ns = convert::timestamp_ns(&request.end_time, "end_time", &mut violations).unwrap_or(u64::MAX);
        let page_size = convert::page_size(request.page_size, "page_size", &mut violations);
        let cursor = convert::position_page_token(&request.page_token, &mut violations);
        check(violations)?;
        let ledger = &self.ledger;
        let account = self.visible_account(&caller, account_id, &request.account_id)?;
        let start = cursor.map(|c| c + 1).unwrap_or(from_ns).max(from_ns);
        // The opening balance is the running balance of the last entry before the page.
        let before =
            ledger.account_entries(account_id, 0, start, true, None, 1).await.map_err(ApiError::from)?;
        let opening = convert::posted_balance(before.first().map(|(e, _)| e));
        let entries: Vec<_> = ledger
            .account_entries(account_id, start, to_ns, false, None, page_size)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|(entry, _)| entry)
            .collect();
        let closing = entries.last().map(|e| convert::posted_balance(Some(e))).unwrap_or(opening);
        let currencies = ledger.currencies();
        let next_page_token = match entries.last() {
            Some(last) if entries.len() == page_size => convert::position_token(last.timestamp_ns),
            _ => String::new(),
        };
        Ok(Response::new(pb::GetAccountStatementResponse {
            account: Some(convert::account(&account, currencies)),
            opening_posted_balance: convert::signed(currencies, account.currency, opening),
            lines: entries.iter().map(|e| convert::statement_line(e, account.currency, currencies)).collect(),
            closing_posted_balance: convert::signed(currencies, account.currency, closing),
            next_page_token,
        }))
    }

    type StreamTransfersStream = FeedStream;

    async fn stream_transfers(
        &self,
        request: Request<pb::StreamTransfersRequest>,
    ) -> Result<Response<Self::StreamTransfersStream>, Status> {
        let caller = auth::caller(&request)?;
        let after = request.into_inner().after_position;
        let ledger = self.ledger.clone();
        let mut shutdown = self.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(FEED_CHANNEL_DEPTH);
        tokio::spawn(
            async move {
                tokio::select! {
                    result = feed(ledger, caller, after, &tx) => {
                        if let Err(status) = result {
                            let _ = tx.send(Err(status)).await;
                        }
                    }
                    _ = stopping(&mut shutdown) => {
                        // End the stream cleanly; the client resumes from its last position.
                    }
                    _ = tx.closed() => {
                        // The client went away (cancelled, disconnected) while the feed had
                        // nothing to send: end now, not at the next send that would fail.
                    }
                }
            }
            .instrument(tracing::info_span!("stream_transfers", after)),
        );
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Resolves once the server begins shutting down (or the server is gone).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let stop = { *shutdown.borrow_and_update() };
        if stop || shutdown.changed().await.is_err() {
            return;
        }
    }
}

type FeedSender = tokio::sync::mpsc::Sender<Result<pb::StreamTransfersResponse, Status>>;

/// Whether a feed to `caller` carries `record`: a participant's, only if it touches one of its
/// own accounts (`owned` remembers whose each account is).
fn visible_to(
    caller: &Caller,
    ledger: &Ledger,
    owned: &mut std::collections::HashMap<puente_ledger::AccountId, bool>,
    record: &puente_ledger::TransferRecord,
) -> Result<bool, Status> {
    let Some(own) = caller.scope() else { return Ok(true) };
    for id in [record.effect.debit_account_id, record.effect.credit_account_id] {
        let mine = match owned.get(&id) {
            Some(mine) => *mine,
            None => {
                let mine =
                    ledger.get_account(id).map_err(ApiError::from)?.is_some_and(|a| a.participant == own);
                if owned.len() >= FEED_OWNER_CACHE_MAX {
                    owned.clear();
                }
                owned.insert(id, mine);
                mine
            }
        };
        if mine {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Catch up from the store, then follow live commits; on lag, catch up from the store again.
/// Ends when the client goes away.
async fn feed(ledger: Ledger, caller: Caller, mut position: u64, tx: &FeedSender) -> Result<(), Status> {
    use tokio::sync::broadcast::error::RecvError;
    let currencies = ledger.currencies().clone();
    // A participant's feed carries only transfers touching its own accounts (accounts never
    // change owner, so what was looked up once stays true).
    let mut owned: std::collections::HashMap<puente_ledger::AccountId, bool> =
        std::collections::HashMap::new();
    let mut visible =
        |record: &puente_ledger::TransferRecord| visible_to(&caller, &ledger, &mut owned, record);
    let send = |record: &puente_ledger::TransferRecord| {
        let transfer = convert::transfer_out(record, None, &currencies);
        pb::StreamTransfersResponse { transfer: Some(transfer) }
    };
    loop {
        // Subscribe before reading the store so nothing committed in between is missed.
        let mut live = ledger.subscribe();
        loop {
            // A participant reads its own index of transfers: its catch-up never scans other
            // participants' history.
            let page = match caller.scope() {
                Some(own) => ledger.participant_transfers_after(own, position, FEED_PAGE_ROWS).await,
                None => ledger.transfers_after(position, FEED_PAGE_ROWS).await,
            }
            .map_err(ApiError::from)?;
            let done = page.len() < FEED_PAGE_ROWS;
            for record in &page {
                if !visible(record)? {
                    position = record.timestamp_ns;
                    continue;
                }
                if tx.send(Ok(send(record))).await.is_err() {
                    return Ok(());
                }
                position = record.timestamp_ns;
            }
            if done {
                break;
            }
        }
        loop {
            match live.recv().await {
                Ok(group) => {
                    for record in group.iter() {
                        if record.timestamp_ns <= position {
                            continue;
                        }
                        if !visible(record)? {
                            position = record.timestamp_ns;
                            continue;
                        }
                        if tx.send(Ok(send(record))).await.is_err() {
                            return Ok(());
                        }
                        position = record.timestamp_ns;
                    }
                }
                Err(RecvError::Lagged(_)) => break, // catch up from the store
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}
