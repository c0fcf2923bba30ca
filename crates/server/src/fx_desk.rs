//! The FX desk: rates, signed quotes and their execution on the ledger. No protobuf here;
//! `fx_service` is the wire.
//!
//! Execution posts one linked chain of ledger transfers whose ids are derived from the quote
//! id: customer -> house liquidity (sell currency), house liquidity -> recipient (buy
//! currency), customer -> fee revenue, customer -> taxes payable. Because the ids are fixed by
//! the quote, the ledger's idempotency makes a retry return the first outcome and makes a
//! second, different use of the quote impossible. Remittances are held pending through the
//! cancellation window with `post_on_expiry`, so they post by themselves when it closes.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use puente_core::ids::system_id;
use puente_fx::{
    FxError, Pair, Pricer, PricingConfig, Quote, QuoteRequest, QuoteSigner, RateBook, Segment,
    check_executable, generate_quote_id, verify_quote,
};
use puente_ledger::identity::Caller;
use puente_ledger::{
    Account, AccountFlags, AccountId, Actor, Ledger, LedgerError, Metadata, NewAccount, PendingState, Prior,
    Transfer, TransferFlags, TransferId, TransferResult, metadata_digest,
};
use puente_money::{CurrencyCode, CurrencyTable};
use rust_decimal::Decimal;
use tracing::Instrument;

/// The participant that owns the house's accounts.
pub const HOUSE_PARTICIPANT: &str = "puente-house";
/// Most rates in one SetRates call.
pub const RATES_PER_CALL_MAX: usize = 64;
/// Most quotes one ListQuotes page returns.
pub const QUOTES_PAGE_MAX: usize = 1_000;
/// Regulation E: a sender may cancel within 30 minutes of paying.
pub const CANCELLATION_WINDOW_DEFAULT_MS: u64 = 30 * 60 * 1_000;

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error(transparent)]
    Fx(#[from] FxError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("FX store: {0}")]
    Storage(String),
    #[error("quote {0} not found")]
    QuoteNotFound(String),
    #[error("no executed quote {0}")]
    ExecutionNotFound(String),
    #[error(
        "the quote belongs to participant {quote_participant}, the source account to {account_participant}"
    )]
    ParticipantMismatch { quote_participant: String, account_participant: String },
    #[error("the quote was already used (by another execution or with other accounts)")]
    AlreadyUsed,
    #[error("{which} account {id} not found")]
    AccountNotFound { which: &'static str, id: String },
    #[error("{which} account is in {actual}, the quote needs {expected}")]
    AccountCurrency { which: &'static str, expected: CurrencyCode, actual: CurrencyCode },
    #[error("the ledger refused the execution: {0}")]
    Refused(&'static str),
    #[error("only held remittances can be cancelled; this execution is not held")]
    NotCancellable,
    #[error("the cancellation window has closed: the transfer was posted")]
    CancellationWindowClosed,
}

/// How the desk is configured.
#[derive(Debug, Clone)]
pub struct FxConfig {
    pub pricing: PricingConfig,
    /// PKCS#8 Ed25519 key file; when absent, `<data_dir>/fx-signing-key.p8`, made at first
    /// start (production should supply its own key, kept outside the data directory).
    pub signing_key_file: Option<PathBuf>,
    pub cancellation_window_ms: u64,
}

impl Default for FxConfig {
    fn default() -> Self {
        FxConfig {
            pricing: PricingConfig::example_usd_mxn(),
            signing_key_file: None,
            cancellation_window_ms: CANCELLATION_WINDOW_DEFAULT_MS,
        }
    }
}

/// A stored rate (what SetRates received).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredRate {
    pub pair: Pair,
    pub mid: Decimal,
    pub as_of_ms: u64,
    pub source: String,
}

/// The outcome of an execution.
#[derive(Debug, Clone)]
pub struct Execution {
    pub quote: Quote,
    pub transfer_ids: Vec<TransferId>,
    pub replayed: bool,
    pub state: PendingOrPosted,
    pub cancel_deadline_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingOrPosted {
    Posted,
    Held,
    Cancelled,
}

/// A quote with its signature.
pub type SignedQuote = (Quote, Vec<u8>);
/// A page of quotes and the key to continue after (`None` on the last page).
pub type QuotePage = (Vec<SignedQuote>, Option<Vec<u8>>);

/// The house's position in one currency, in minor units.
#[derive(Debug, Clone)]
pub struct Position {
    pub currency: CurrencyCode,
    pub posted_minor: i128,
    pub projected_minor: i128,
    pub fee_revenue_minor: i128,
}

pub struct FxDesk {
    ledger: Ledger,
    pricer: Pricer,
    signer: QuoteSigner,
    rates: RwLock<RateBook>,
    quotes: sled::Tree,
    quotes_by_participant: sled::Tree,
    rates_tree: sled::Tree,
    cancellation_window_ms: u64,
    currencies: CurrencyTable,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The house account of `kind` ("liquidity", "fees", "taxes") in `currency`: a system id
/// (`puente_core::ids`), so no participant can open it first.
pub fn house_account_id(kind: &str, currency: CurrencyCode) -> AccountId {
    system_id("fx/house-account", &[kind.as_bytes(), currency.as_str().as_bytes()])
}

/// The id of leg `n` of the execution of `quote_id`: a system id, so no participant (the
/// recipient, who sees the legs, included) can use it first.
pub fn leg_id(quote_id: &[u8; 16], n: u8) -> TransferId {
    system_id("fx/leg", &[quote_id.as_slice(), &[n]])
}

/// The id of the void of leg `n` when a remittance is cancelled: a system id, so the recipient
/// cannot pre-create it and block the sender's right to cancel.
pub fn void_id(quote_id: &[u8; 16], n: u8) -> TransferId {
    system_id("fx/void", &[quote_id.as_slice(), &[n]])
}

fn storage(error: impl std::fmt::Display) -> DeskError {
    DeskError::Storage(error.to_string())
}

fn load_or_create_key(path: &Path) -> Result<Vec<u8>, DeskError> {
    if path.exists() {
        return std::fs::read(path).map_err(|e| DeskError::Storage(format!("{}: {e}", path.display())));
    }
    let pkcs8 = QuoteSigner::generate_pkcs8()?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(storage)?;
        file.write_all(&pkcs8).map_err(storage)?;
        file.sync_all().map_err(storage)?;
    }
    std::fs::rename(&tmp, path).map_err(storage)?;
    tracing::warn!(path = %path.display(), "generated a new FX quote-signing key; supply fx.signing_key_file in production");
    Ok(pkcs8)
}

impl FxDesk {
    /// Opens the desk's store under `data_dir/fx`, loads the signing key and the rates, and
    /// makes sure the house accounts exist on the ledger.
    pub async fn open(ledger: Ledger, data_dir: &Path, config: FxConfig) -> Result<FxDesk, DeskError> {
        let currencies = ledger.currencies().clone();
        let pricer = Pricer::new(config.pricing, currencies.clone())?;
        let key_path = config.signing_key_file.unwrap_or_else(|| data_dir.join("fx-signing-key.p8"));
        let signer = QuoteSigner::from_pkcs8(&load_or_create_key(&key_path)?)?;
        let db = sled::open(data_dir.join("fx")).map_err(storage)?;
        let quotes = db.open_tree("quotes").map_err(storage)?;
        let quotes_by_participant = db.open_tree("quotes_by_participant").map_err(storage)?;
        let rates_tree = db.open_tree("rates").map_err(storage)?;
        let mut book = RateBook::with_cross_currency(CurrencyCode::USD);
        for item in rates_tree.iter() {
            let (_, value) = item.map_err(storage)?;
            let rate: StoredRate = bincode::deserialize(&value).map_err(storage)?;
            book.set(rate.pair, rate.mid, rate.as_of_ms, &rate.source)?;
        }
        // The house: liquidity, fee revenue and taxes payable in every currency. No limits:
        // a liquidity account's balance is the house's position.
        let mut house = Vec::new();
        for currency in currencies.iter() {
            for kind in ["liquidity", "fees", "taxes"] {
                house.push(NewAccount {
                    id: house_account_id(kind, currency.code),
                    participant: HOUSE_PARTICIPANT.to_owned(),
                    currency: currency.code,
                    flags: AccountFlags::default(),
                    overdraft_limit_minor: 0,
                    holder_ref: format!("house {kind} {}", currency.code),
                    metadata: Metadata::new(),
                });
            }
        }
        for outcome in ledger.create_accounts(Actor::system(HOUSE_PARTICIPANT), house).await? {
            if !outcome.result.is_ok() {
                return Err(DeskError::Storage(format!(
                    "cannot open house accounts: {}",
                    outcome.result.code()
                )));
            }
        }
        Ok(FxDesk {
            ledger,
            pricer,
            signer,
            rates: RwLock::new(book),
            quotes,
            quotes_by_participant,
            rates_tree,
            cancellation_window_ms: config.cancellation_window_ms,
            currencies,
        })
    }

    pub fn currencies(&self) -> &CurrencyTable {
        &self.currencies
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key_bytes()
    }

    pub fn cancellation_window_ms(&self) -> u64 {
        self.cancellation_window_ms
    }

    /// Sets rates (all or nothing: every rate is checked first).
    pub fn set_rates(&self, rates: &[StoredRate]) -> Result<usize, DeskError> {
        if rates.len() > RATES_PER_CALL_MAX {
            return Err(
                FxError::LimitExceeded { what: "rates per call", limit: RATES_PER_CALL_MAX as u64 }.into()
            );
        }
        let mut book = self.rates.write().map_err(|_| storage("rate book lock poisoned"))?;
        let mut trial = book.clone();
        for rate in rates {
            trial.set(rate.pair, rate.mid, rate.as_of_ms, &rate.source)?;
        }
        let mut batch = sled::Batch::default();
        for rate in rates {
            // Setting a pair replaces its inverse: keep one stored direction per pair.
            batch.remove(rate.pair.inverse().to_string().as_bytes());
            batch.insert(rate.pair.to_string().as_bytes(), bincode::serialize(rate).map_err(storage)?);
        }
        self.rates_tree.apply_batch(batch).map_err(storage)?;
        // Acknowledged rates survive a process crash. (sled's flush is not a power-loss
        // guarantee; a lost rate fails safe: no quote is made without a fresh rate.)
        self.rates_tree.flush().map_err(storage)?;
        *book = trial;
        tracing::info!(count = rates.len(), "rates set");
        Ok(rates.len())
    }

    pub fn list_rates(&self) -> Result<Vec<StoredRate>, DeskError> {
        self.rates_tree
            .iter()
            .map(|item| {
                let (_, value) = item.map_err(storage)?;
                bincode::deserialize(&value).map_err(storage)
            })
            .collect()
    }

    /// Prices, signs and stores a new quote.
    pub fn quote(&self, request: &QuoteRequest) -> Result<(Quote, Vec<u8>), DeskError> {
        let now = now_ms();
        let id = generate_quote_id()?;
        let quote = {
            let book = self.rates.read().map_err(|_| storage("rate book lock poisoned"))?;
            self.pricer.quote(&book, request, id, now)?
        };
        let signature = self.signer.sign(&quote)?.to_vec();
        let value = bincode::serialize(&(&quote, &signature)).map_err(storage)?;
        self.quotes.insert(quote.id, value).map_err(storage)?;
        self.quotes_by_participant
            .insert(participant_key(&quote.participant, quote.created_at_ms, &quote.id), &[])
            .map_err(storage)?;
        tracing::info!(quote_id = %uuid::Uuid::from_bytes(quote.id), participant = %quote.participant, "quote issued");
        Ok((quote, signature))
    }

    pub fn get_quote(&self, id: &[u8; 16]) -> Result<(Quote, Vec<u8>), DeskError> {
        let value = self.quotes.get(id).map_err(storage)?;
        let value = value.ok_or_else(|| DeskError::QuoteNotFound(uuid::Uuid::from_bytes(*id).to_string()))?;
        bincode::deserialize(&value).map_err(storage)
    }

    /// A participant's quotes, newest first, after the page token (a previous key).
    pub fn list_quotes(
        &self,
        participant: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<QuotePage, DeskError> {
        let limit = limit.min(QUOTES_PAGE_MAX);
        let mut prefix = participant.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.quotes_by_participant.scan_prefix(&prefix) {
            let (key, _) = item.map_err(storage)?;
            if after.is_some_and(|a| key.as_ref() <= a) {
                continue;
            }
            let id: [u8; 16] = key[key.len() - 16..].try_into().map_err(storage)?;
            out.push(self.get_quote(&id)?);
            if out.len() == limit {
                return Ok((out, Some(key.to_vec())));
            }
        }
        Ok((out, None))
    }

    /// Executes a signed quote (idempotent per execution id).
    pub async fn execute(
        &self,
        caller: &Caller,
        canonical: &[u8],
        signature: &[u8],
        source: AccountId,
        destination: AccountId,
        execution_id: u128,
    ) -> Result<Execution, DeskError> {
        // Verify the bytes exactly as signed before reading anything out of them: any change
        // to a quote is a signature failure, never a parse error.
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, self.public_key())
            .verify(canonical, signature)
            .map_err(|_| FxError::InvalidSignature)?;
        let quote = Quote::from_canonical_bytes(canonical)?;
        verify_quote(&self.public_key(), &quote, signature)?;
        // Another participant's quote is not found, even when its holder passes it on.
        if !caller.may_see(&quote.participant) {
            return Err(DeskError::QuoteNotFound(uuid::Uuid::from_bytes(quote.id).to_string()));
        }
        let execution = uuid::Uuid::from_u128(execution_id).to_string();
        let quote_uuid = uuid::Uuid::from_bytes(quote.id).to_string();
        let metadata: Metadata = [
            ("quote_id".to_owned(), quote_uuid.clone()),
            ("execution_id".to_owned(), execution.clone()),
            ("destination".to_owned(), uuid::Uuid::from_u128(destination).to_string()),
        ]
        .into();
        let first_leg = leg_id(&quote.id, 1);
        // The legs are submitted by Puente on the quote's participant's behalf: its failures are
        // remembered in that participant's scope.
        let actor = Actor::system(quote.participant.clone());
        // A retry of this execution returns the first outcome, even after the quote expired.
        match self.ledger.get_transfer(first_leg, actor.scope())? {
            Some(Prior::Committed(record)) => {
                let same = record.transfer.metadata == metadata && record.transfer.debit_account_id == source;
                if !same {
                    return Err(DeskError::AlreadyUsed);
                }
                return self.describe(quote, true, record.timestamp_ns);
            }
            Some(Prior::Failed(failed)) => {
                if failed.metadata_digest == metadata_digest(&metadata) && failed.debit_account_id == source {
                    return Err(DeskError::Refused(failed.result.code()));
                }
                return Err(DeskError::AlreadyUsed);
            }
            None => {}
        }
        check_executable(&quote, now_ms())?;
        let source_account = self.account(source, "source")?;
        if caller.scope().is_some_and(|own| source_account.participant != own) {
            return Err(DeskError::AccountNotFound {
                which: "source",
                id: uuid::Uuid::from_u128(source).to_string(),
            });
        }
        if source_account.participant != quote.participant {
            return Err(DeskError::ParticipantMismatch {
                quote_participant: quote.participant.clone(),
                account_participant: source_account.participant,
            });
        }
        let (sell, buy) = (quote.pair.base, quote.pair.quote);
        if source_account.currency != sell {
            return Err(DeskError::AccountCurrency {
                which: "source",
                expected: sell,
                actual: source_account.currency,
            });
        }
        let destination_account = self.account(destination, "destination")?;
        if destination_account.currency != buy {
            return Err(DeskError::AccountCurrency {
                which: "destination",
                expected: buy,
                actual: destination_account.currency,
            });
        }
        let held = quote.segment == Segment::Remittance;
        let leg = |n: u8, debit: AccountId, credit: AccountId, currency: CurrencyCode, amount_minor: u64| {
            Transfer {
                id: leg_id(&quote.id, n),
                debit_account_id: debit,
                credit_account_id: credit,
                amount_minor,
                currency,
                flags: TransferFlags {
                    linked: true,
                    pending: held,
                    post_on_expiry: held,
                    ..Default::default()
                },
                pending_id: 0,
                timeout_ms: if held { self.cancellation_window_ms } else { 0 },
                reference: format!("fx {quote_uuid} leg {n}"),
                metadata: metadata.clone(),
            }
        };
        let mut legs = vec![
            leg(1, source, house_account_id("liquidity", sell), sell, quote.send_amount_minor),
            leg(2, house_account_id("liquidity", buy), destination, buy, quote.receive_amount_minor),
        ];
        if quote.fee_total_minor > 0 {
            legs.push(leg(3, source, house_account_id("fees", sell), sell, quote.fee_total_minor));
        }
        if quote.tax_minor > 0 {
            legs.push(leg(4, source, house_account_id("taxes", sell), sell, quote.tax_minor));
        }
        if let Some(last) = legs.last_mut() {
            last.flags.linked = false;
        }
        let ids: Vec<TransferId> = legs.iter().map(|t| t.id).collect();
        let span = tracing::info_span!("fx_execute", quote_id = %quote_uuid, execution_id = %execution);
        let outcomes = self.ledger.create_transfers(actor, legs).instrument(span).await?;
        if let Some(failure) =
            outcomes.iter().find(|o| !o.result.is_ok() && o.result != TransferResult::LinkedEventFailed)
        {
            return Err(match failure.result {
                r if r.code().starts_with("EXISTS_WITH_DIFFERENT") => DeskError::AlreadyUsed,
                r => DeskError::Refused(r.code()),
            });
        }
        let replayed = outcomes.iter().all(|o| o.replayed);
        let timestamp_ns = outcomes.first().map(|o| o.timestamp_ns).unwrap_or(0);
        let mut execution = self.describe(quote, replayed, timestamp_ns)?;
        execution.transfer_ids = ids;
        Ok(execution)
    }

    fn account(&self, id: AccountId, which: &'static str) -> Result<Account, DeskError> {
        self.ledger
            .get_account(id)?
            .ok_or_else(|| DeskError::AccountNotFound { which, id: uuid::Uuid::from_u128(id).to_string() })
    }

    fn legs_of(&self, quote: &Quote) -> Vec<TransferId> {
        let mut ids = vec![leg_id(&quote.id, 1), leg_id(&quote.id, 2)];
        if quote.fee_total_minor > 0 {
            ids.push(leg_id(&quote.id, 3));
        }
        if quote.tax_minor > 0 {
            ids.push(leg_id(&quote.id, 4));
        }
        ids
    }

    fn describe(&self, quote: Quote, replayed: bool, timestamp_ns: u64) -> Result<Execution, DeskError> {
        let first = leg_id(&quote.id, 1);
        let held = quote.segment == Segment::Remittance;
        let state = if held {
            match self.ledger.pending_state(first)? {
                Some(PendingState::Pending) => PendingOrPosted::Held,
                Some(PendingState::Voided) => PendingOrPosted::Cancelled,
                _ => PendingOrPosted::Posted,
            }
        } else {
            PendingOrPosted::Posted
        };
        let cancel_deadline_ms =
            if held { timestamp_ns / 1_000_000 + self.cancellation_window_ms } else { 0 };
        Ok(Execution { transfer_ids: self.legs_of(&quote), quote, replayed, state, cancel_deadline_ms })
    }

    /// Cancels a held remittance: voids every leg (one linked chain). Returns the refunded
    /// total (in the sell currency, as (currency, minor units)) and whether it was already
    /// cancelled. Works from the ledger alone (the durable record), not the quote store.
    pub async fn cancel(
        &self,
        caller: &Caller,
        quote_id: &[u8; 16],
    ) -> Result<(CurrencyCode, u64, bool), DeskError> {
        let quote_uuid = uuid::Uuid::from_bytes(*quote_id).to_string();
        let mut legs = Vec::new();
        for n in 1..=4u8 {
            if let Some(record) = self.ledger.get_committed(leg_id(quote_id, n))? {
                legs.push(record);
            }
        }
        let Some(first) = legs.first().cloned() else {
            return Err(DeskError::ExecutionNotFound(quote_uuid));
        };
        // Only the paying participant (or an operator) may cancel; to anyone else it does not exist.
        if let Some(own) = caller.scope() {
            let payer = self.ledger.get_account(first.effect.debit_account_id)?;
            if payer.is_none_or(|a| a.participant != own) {
                return Err(DeskError::ExecutionNotFound(quote_uuid));
            }
        }
        if !first.transfer.flags.pending {
            return Err(DeskError::NotCancellable);
        }
        // Everything the customer paid: the legs debiting the source account.
        let source = first.effect.debit_account_id;
        let refund: u64 =
            legs.iter().filter(|l| l.effect.debit_account_id == source).map(|l| l.effect.amount_minor).sum();
        let currency = first.transfer.currency;
        match self.ledger.pending_state(first.transfer.id)? {
            Some(PendingState::Voided) => return Ok((currency, refund, true)),
            Some(PendingState::Pending) => {}
            _ => return Err(DeskError::CancellationWindowClosed),
        }
        let count = legs.len();
        let voids: Vec<Transfer> = legs
            .iter()
            .enumerate()
            .map(|(i, leg)| Transfer {
                id: void_id(quote_id, (i + 1) as u8),
                debit_account_id: 0,
                credit_account_id: 0,
                amount_minor: 0,
                currency: leg.transfer.currency,
                flags: TransferFlags { linked: i + 1 < count, void_pending: true, ..Default::default() },
                pending_id: leg.transfer.id,
                timeout_ms: 0,
                reference: format!("fx {quote_uuid} cancel"),
                metadata: Metadata::new(),
            })
            .collect();
        let span = tracing::info_span!("fx_cancel", quote_id = %quote_uuid);
        // Voided on behalf of the participant that paid (the legs' submitter).
        let payer = self.ledger.get_account(source)?.map(|a| a.participant).unwrap_or_default();
        let outcomes = self.ledger.create_transfers(Actor::system(payer), voids).instrument(span).await?;
        if let Some(failure) =
            outcomes.iter().find(|o| !o.result.is_ok() && o.result != TransferResult::LinkedEventFailed)
        {
            return Err(match failure.result {
                TransferResult::PendingTransferAlreadyPosted | TransferResult::PendingTransferExpired => {
                    DeskError::CancellationWindowClosed
                }
                r => DeskError::Refused(r.code()),
            });
        }
        tracing::info!(quote_id = %quote_uuid, "remittance cancelled; refunded in full");
        Ok((currency, refund, outcomes.iter().all(|o| o.replayed)))
    }

    /// The house's position per currency.
    pub fn exposure(&self) -> Result<Vec<Position>, DeskError> {
        let mut positions = Vec::new();
        for currency in self.currencies.iter() {
            let liquidity = self.account(house_account_id("liquidity", currency.code), "house")?;
            let fees = self.account(house_account_id("fees", currency.code), "house")?;
            let posted = liquidity.posted_balance_minor();
            let projected =
                posted + liquidity.credits_pending_minor as i128 - liquidity.debits_pending_minor as i128;
            positions.push(Position {
                currency: currency.code,
                posted_minor: posted,
                projected_minor: projected,
                fee_revenue_minor: fees.posted_balance_minor(),
            });
        }
        Ok(positions)
    }
}

fn participant_key(participant: &str, created_at_ms: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut key = participant.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&(u64::MAX - created_at_ms).to_be_bytes());
    key.extend_from_slice(id);
    key
}
