//! The FX desk: rates, signed quotes and their execution on the ledger. No protobuf here;
//! `fx_service` is the wire.
//!
//! Execution posts one linked chain of ledger transfers whose ids are derived from the quote
//! id: customer -> house liquidity (sell currency), house liquidity -> recipient (buy
//! currency), customer -> fee revenue, customer -> taxes payable. Because the ids are fixed by
//! the quote, the ledger's idempotency makes a retry return the first outcome and makes a
//! second, different use of the quote impossible. Remittances are held pending through the
//! cancellation window with `post_on_expiry`, so they post by themselves when it closes.
//!
//! A signature alone never moves money: execution also requires the presented canonical bytes
//! to be exactly those of a quote this desk issued and still stores (or, for a retry, those
//! whose SHA-256 the executed legs carry). A stolen signing key can sign anything, but cannot
//! make the desk execute a quote it did not issue.
//!
//! The quote store is bounded: at most [`QUOTES_PER_PARTICIPANT_MAX`] per participant and
//! [`QUOTES_STORED_MAX`] in all (expired quotes are evicted first to make room), and every
//! quote is deleted [`QUOTE_RETENTION_AFTER_EXPIRY_MS`] after it expires.
//!
//! Size: the FX desk is one state machine (rates, quotes, execution, cancellation, exposure) over
//! the ledger; its wire is `fx_service.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use puente_core::ids::system_id;
use puente_fx::quote::QUOTE_ENCODING_LEN_MAX;
use puente_fx::{
    FxError, Pair, Pricer, PricingConfig, PublicKey, Quote, QuoteKeyring, QuoteRequest, RateBook, Segment,
    check_executable, generate_quote_id,
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
/// Most quotes stored for one participant: its outstanding quotes plus expired ones not yet
/// pruned. At the limit the participant's expired quotes are evicted (earliest expiry first)
/// to make room; when all of them are still outstanding, a new quote is refused
/// (`RESOURCE_EXHAUSTED QUOTE_LIMIT_EXCEEDED`).
pub const QUOTES_PER_PARTICIPANT_MAX: usize = 200_000;
/// Most quotes stored in all (about 500 bytes each on disk). At the limit the
/// earliest-expired quote of anyone is evicted; when none has expired, a new quote is refused.
pub const QUOTES_STORED_MAX: usize = 5_000_000;
/// How long an expired quote stays readable (GetQuoteById, ListQuotes) before it is pruned.
/// Executions and their retries do not need it: a retry is checked against the SHA-256 of
/// the quote that the executed ledger legs carry.
pub const QUOTE_RETENTION_AFTER_EXPIRY_MS: u64 = 24 * 3_600 * 1_000;
/// How often the server prunes quotes past their retention.
pub const QUOTE_PRUNE_INTERVAL_MS: u64 = 60_000;
/// Most quotes deleted in one store batch while pruning.
const QUOTE_PRUNE_BATCH_MAX: usize = 10_000;
/// The file an earlier version made in the data directory for its quote-signing key. It is
/// no longer read; its presence is reported at start.
pub const LEGACY_SIGNING_KEY_FILE: &str = "fx-signing-key.p8";
/// Metadata key of the executed legs: the SHA-256 (hex) of the quote's canonical bytes.
pub const QUOTE_DIGEST_METADATA_KEY: &str = "quote_sha256";

/// The sled tree of issued quotes (key families below), and the trees of the earlier format.
const QUOTES_TREE: &str = "quotes_v2";
const LEGACY_QUOTE_TREES: [&str; 2] = ["quotes", "quotes_by_participant"];
/// `q` + id -> the issued quote.
const FAMILY_QUOTE: u8 = b'q';
/// `p` + participant + 0 + (u64::MAX - created_at) + id -> expires_at: newest first, for lists.
const FAMILY_BY_PARTICIPANT: u8 = b'p';
/// `x` + participant + 0 + expires_at + id -> created_at: a participant's, earliest expiry first.
const FAMILY_PARTICIPANT_EXPIRY: u8 = b'x';
/// `e` + expires_at + id -> created_at + participant: everyone's, earliest expiry first.
const FAMILY_EXPIRY: u8 = b'e';

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
    /// Validly signed, but not the quote this desk issued under that id.
    #[error("quote {0} is not the quote issued under its id")]
    QuoteNotIssued(String),
    #[error("too many quotes: {what} (limit {limit}); wait for outstanding quotes to expire")]
    QuoteLimit { what: &'static str, limit: usize },
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

/// Bounds of the quote store (the defaults are the constants above; tests use small ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuoteLimits {
    pub per_participant_max: usize,
    pub stored_max: usize,
    pub retention_after_expiry_ms: u64,
}

impl Default for QuoteLimits {
    fn default() -> Self {
        QuoteLimits {
            per_participant_max: QUOTES_PER_PARTICIPANT_MAX,
            stored_max: QUOTES_STORED_MAX,
            retention_after_expiry_ms: QUOTE_RETENTION_AFTER_EXPIRY_MS,
        }
    }
}

/// How the desk is configured.
#[derive(Debug, Clone)]
pub struct FxConfig {
    pub pricing: PricingConfig,
    /// The quote-signing keys, read by the binary from a key file kept outside the data
    /// directory. `None`: a fresh in-memory key for this process only (a loud warning at
    /// start; quotes stop executing at a restart).
    pub signing_keys: Option<Arc<QuoteKeyring>>,
    /// The remittance cancellation window enforced and disclosed. The desk takes any value;
    /// the binary's config refuses one shorter than Regulation E's 30 minutes.
    pub cancellation_window_ms: u64,
    pub quote_limits: QuoteLimits,
}

impl Default for FxConfig {
    fn default() -> Self {
        FxConfig {
            pricing: PricingConfig::example_usd_mxn(),
            signing_keys: None,
            cancellation_window_ms: CANCELLATION_WINDOW_DEFAULT_MS,
            quote_limits: QuoteLimits::default(),
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

/// A quote as issued: exactly the canonical bytes signed, the signature and the key's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedQuote {
    pub quote: Quote,
    pub canonical: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
}

/// What the store keeps of an issued quote (the quote is decoded from the bytes).
#[derive(serde::Serialize, serde::Deserialize)]
struct IssuedRecord {
    canonical: Vec<u8>,
    signature: Vec<u8>,
    key_id: String,
}

/// The outcome of an execution.
#[derive(Debug, Clone)]
pub struct Execution {
    pub quote: Quote,
    pub transfer_ids: Vec<TransferId>,
    pub replayed: bool,
    pub state: PendingOrPosted,
    /// When the ledger committed the chain (the payment).
    pub paid_at_ms: u64,
    /// For held remittances: the cancellation window of this execution; 0 otherwise.
    pub cancellation_window_ms: u64,
    pub cancel_deadline_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingOrPosted {
    Posted,
    Held,
    Cancelled,
}

/// A page of quotes and the key to continue after (`None` on the last page).
pub type QuotePage = (Vec<IssuedQuote>, Option<Vec<u8>>);

/// The house's position in one currency, in minor units.
#[derive(Debug, Clone)]
pub struct Position {
    pub currency: CurrencyCode,
    pub posted_minor: i128,
    pub projected_minor: i128,
    pub fee_revenue_minor: i128,
}

/// How many quotes the store holds, per participant and in all (the caps' bookkeeping).
#[derive(Debug, Default)]
struct QuoteCounts {
    per_participant: HashMap<String, usize>,
    total: usize,
}

impl QuoteCounts {
    fn add(&mut self, participant: &str) {
        *self.per_participant.entry(participant.to_owned()).or_insert(0) += 1;
        self.total += 1;
    }

    fn remove(&mut self, participant: &str) {
        if let Some(count) = self.per_participant.get_mut(participant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_participant.remove(participant);
            }
        }
        self.total = self.total.saturating_sub(1);
    }
}

/// One stored quote's index entries, enough to delete all of its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredEntry {
    participant: String,
    created_at_ms: u64,
    expires_at_ms: u64,
    id: [u8; 16],
}

impl StoredEntry {
    fn of(quote: &Quote) -> StoredEntry {
        StoredEntry {
            participant: quote.participant.clone(),
            created_at_ms: quote.created_at_ms,
            expires_at_ms: quote.expires_at_ms,
            id: quote.id,
        }
    }

    fn quote_key(&self) -> Vec<u8> {
        quote_key(&self.id)
    }

    fn participant_key(&self) -> Vec<u8> {
        let mut key = participant_prefix(FAMILY_BY_PARTICIPANT, &self.participant);
        key.extend_from_slice(&(u64::MAX - self.created_at_ms).to_be_bytes());
        key.extend_from_slice(&self.id);
        key
    }

    fn participant_expiry_key(&self) -> Vec<u8> {
        let mut key = participant_prefix(FAMILY_PARTICIPANT_EXPIRY, &self.participant);
        key.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        key.extend_from_slice(&self.id);
        key
    }

    fn expiry_key(&self) -> Vec<u8> {
        let mut key = vec![FAMILY_EXPIRY];
        key.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        key.extend_from_slice(&self.id);
        key
    }

    fn insert(&self, batch: &mut sled::Batch, record: Vec<u8>) {
        batch.insert(self.quote_key(), record);
        batch.insert(self.participant_key(), self.expires_at_ms.to_be_bytes().to_vec());
        batch.insert(self.participant_expiry_key(), self.created_at_ms.to_be_bytes().to_vec());
        let mut value = self.created_at_ms.to_be_bytes().to_vec();
        value.extend_from_slice(self.participant.as_bytes());
        batch.insert(self.expiry_key(), value);
    }

    fn remove(&self, batch: &mut sled::Batch) {
        batch.remove(self.quote_key());
        batch.remove(self.participant_key());
        batch.remove(self.participant_expiry_key());
        batch.remove(self.expiry_key());
    }

    /// From an `e` key and its value.
    fn from_expiry(key: &[u8], value: &[u8]) -> Option<StoredEntry> {
        let expires_at_ms = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
        let id: [u8; 16] = key.get(9..25)?.try_into().ok()?;
        let created_at_ms = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        let participant = std::str::from_utf8(value.get(8..)?).ok()?.to_owned();
        Some(StoredEntry { participant, created_at_ms, expires_at_ms, id })
    }

    /// From an `x` key of `participant` and its value.
    fn from_participant_expiry(participant: &str, key: &[u8], value: &[u8]) -> Option<StoredEntry> {
        let rest = key.get(participant.len() + 2..)?;
        let expires_at_ms = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let id: [u8; 16] = rest.get(8..24)?.try_into().ok()?;
        let created_at_ms = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        Some(StoredEntry { participant: participant.to_owned(), created_at_ms, expires_at_ms, id })
    }
}

fn quote_key(id: &[u8; 16]) -> Vec<u8> {
    let mut key = vec![FAMILY_QUOTE];
    key.extend_from_slice(id);
    key
}

/// `family` + participant + 0 (participant ids never contain a zero byte).
fn participant_prefix(family: u8, participant: &str) -> Vec<u8> {
    let mut key = vec![family];
    key.extend_from_slice(participant.as_bytes());
    key.push(0);
    key
}

pub struct FxDesk {
    ledger: Ledger,
    pricer: Pricer,
    max_rate_age_ms: u64,
    keyring: Arc<QuoteKeyring>,
    rates: RwLock<RateBook>,
    quotes: sled::Tree,
    counts: Mutex<QuoteCounts>,
    limits: QuoteLimits,
    rates_tree: sled::Tree,
    cancellation_window_ms: u64,
    currencies: CurrencyTable,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The kinds of house accounts opened in every currency: liquidity (the FX legs), fee revenue,
/// taxes payable, settlement (what settlement posts the house's net to, in its system-defined
/// settlement profile) and conversion (the other side of the house's one FX cover per cutoff:
/// the market it converts with).
pub const HOUSE_ACCOUNT_KINDS: [&str; 5] = ["liquidity", "fees", "taxes", "settlement", "conversion"];

/// The house account of `kind` (see [`HOUSE_ACCOUNT_KINDS`]) in `currency`: a system id
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

/// SHA-256 of a quote's canonical bytes, hex: what the executed legs carry.
pub fn quote_digest(canonical: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, canonical))
}

fn storage(error: impl std::fmt::Display) -> DeskError {
    DeskError::Storage(error.to_string())
}

fn lock_poisoned<T>(_: T) -> DeskError {
    storage("FX desk lock poisoned")
}

/// Whether a committed or failed leg 1 was made from exactly these canonical bytes: its
/// metadata carries their SHA-256. Legs executed before the digest was recorded carry none;
/// for them the amount debited must be the quote's.
fn leg_matches(leg: &Transfer, digest: &str, quote: &Quote) -> bool {
    match leg.metadata.get(QUOTE_DIGEST_METADATA_KEY) {
        Some(recorded) => recorded == digest,
        None => {
            leg.amount_minor == quote.send_amount_minor
                && leg.metadata.get("quote_id") == Some(&uuid::Uuid::from_bytes(quote.id).to_string())
        }
    }
}

impl FxDesk {
    /// Opens the desk's store under `data_dir/fx`, takes the signing keys (or makes an
    /// in-memory one), loads the rates, counts and prunes the stored quotes, and makes sure the
    /// house accounts exist on the ledger.
    pub async fn open(ledger: Ledger, data_dir: &Path, config: FxConfig) -> Result<FxDesk, DeskError> {
        let currencies = ledger.currencies().clone();
        let max_rate_age_ms = config.pricing.max_rate_age_ms;
        let pricer = Pricer::new(config.pricing, currencies.clone())?;
        let legacy_key = data_dir.join(LEGACY_SIGNING_KEY_FILE);
        if legacy_key.exists() {
            tracing::warn!(path = %legacy_key.display(),
                "an FX quote-signing key made by an earlier version lies in the data directory (and so in its backups): it is no longer used, and quotes it signed no longer execute; delete it, and its copies in old backups");
        }
        let keyring = match config.signing_keys {
            Some(keyring) => {
                let ids: Vec<String> = keyring.public_keys().into_iter().map(|k| k.key_id).collect();
                tracing::info!(active_key_id = keyring.active_key_id(), key_ids = ?ids, "FX quote-signing keyring loaded");
                keyring
            }
            None => {
                let keyring = QuoteKeyring::ephemeral()?;
                tracing::warn!(
                    key_id = keyring.active_key_id(),
                    "no FX quote-signing key (--fx-signing-key-file, PUENTE_FX_SIGNING_KEY_FILE or [fx] signing_key_file): quotes are signed with a key that lives only in this process; quotes issued now stop executing when the server restarts. Make a key file with `puente fx-key generate` for anything but a trial"
                );
                Arc::new(keyring)
            }
        };
        let db = sled::open(data_dir.join("fx")).map_err(storage)?;
        for name in LEGACY_QUOTE_TREES {
            if db.tree_names().iter().any(|t| t.as_ref() == name.as_bytes()) {
                let dropped = db.open_tree(name).map_err(storage)?.len();
                db.drop_tree(name).map_err(storage)?;
                tracing::info!(
                    tree = name,
                    entries = dropped,
                    "dropped quotes stored in the earlier format (signed with a key no longer used)"
                );
            }
        }
        let quotes = db.open_tree(QUOTES_TREE).map_err(storage)?;
        let rates_tree = db.open_tree("rates").map_err(storage)?;
        let mut book = RateBook::with_cross_currency(CurrencyCode::USD);
        for item in rates_tree.iter() {
            let (_, value) = item.map_err(storage)?;
            let rate: StoredRate = bincode::deserialize(&value).map_err(storage)?;
            book.set(rate.pair, rate.mid, rate.as_of_ms, &rate.source)?;
        }
        let mut counts = QuoteCounts::default();
        for item in quotes.scan_prefix([FAMILY_EXPIRY]) {
            let (key, value) = item.map_err(storage)?;
            let entry =
                StoredEntry::from_expiry(&key, &value).ok_or_else(|| storage("bad quote index entry"))?;
            counts.add(&entry.participant);
        }
        let desk = FxDesk {
            ledger,
            pricer,
            max_rate_age_ms,
            keyring,
            rates: RwLock::new(book),
            quotes,
            counts: Mutex::new(counts),
            limits: config.quote_limits,
            rates_tree,
            cancellation_window_ms: config.cancellation_window_ms,
            currencies,
        };
        desk.prune_expired(now_ms())?;
        // On a standby (a journal of record elsewhere), once it leads (`serve_with`).
        if desk.ledger.role().writes() {
            desk.open_house_accounts().await?;
        }
        Ok(desk)
    }

    /// Makes sure the house accounts exist on the ledger (idempotent; a write, so only where
    /// writes are taken).
    pub async fn open_house_accounts(&self) -> Result<(), DeskError> {
        let (ledger, currencies) = (&self.ledger, &self.currencies);
        // The house: liquidity, fee revenue, taxes payable, settlement and conversion in every
        // currency. No limits: a liquidity account's balance is the house's position.
        let mut house = Vec::new();
        for currency in currencies.iter() {
            for kind in HOUSE_ACCOUNT_KINDS {
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
        Ok(())
    }

    pub fn currencies(&self) -> &CurrencyTable {
        &self.currencies
    }

    /// Every public key that verifies quotes, with its id; the signing key first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keyring.public_keys()
    }

    /// The current mid rate of `base`/`quote` (direct, inverse or crossed), if the book holds
    /// one no older than quoting accepts.
    pub fn mid_rate(&self, base: CurrencyCode, quote: CurrencyCode) -> Option<Decimal> {
        let pair = Pair::new(base, quote).ok()?;
        let book = self.rates.read().ok()?;
        book.get(pair, now_ms(), self.max_rate_age_ms).ok().map(|rate| rate.mid)
    }

    /// Signs a canonical document that is not a quote (a settlement FX cover) with the
    /// quote-signing key: (key id, signature).
    pub fn sign_document(&self, canonical: &[u8]) -> Result<(String, Vec<u8>), DeskError> {
        let (key_id, signature) = self.keyring.sign_canonical(canonical)?;
        Ok((key_id, signature.to_vec()))
    }

    /// Checks a signature made by [`FxDesk::sign_document`] with the key it names.
    pub fn verify_document(&self, key_id: &str, canonical: &[u8], signature: &[u8]) -> Result<(), DeskError> {
        self.keyring.verify(key_id, canonical, signature)?;
        Ok(())
    }

    pub fn cancellation_window_ms(&self) -> u64 {
        self.cancellation_window_ms
    }

    /// How many quotes the store holds (for tests and metrics).
    pub fn stored_quotes(&self) -> Result<usize, DeskError> {
        Ok(self.counts.lock().map_err(lock_poisoned)?.total)
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
    pub fn quote(&self, request: &QuoteRequest) -> Result<IssuedQuote, DeskError> {
        self.quote_at(request, now_ms())
    }

    /// [`FxDesk::quote`] at `now_ms` (tests drive the clock).
    pub fn quote_at(&self, request: &QuoteRequest, now_ms: u64) -> Result<IssuedQuote, DeskError> {
        let id = generate_quote_id()?;
        let quote = {
            let book = self.rates.read().map_err(|_| storage("rate book lock poisoned"))?;
            self.pricer.quote(&book, request, id, now_ms)?
        };
        let (key_id, signature) = self.keyring.sign(&quote)?;
        let issued =
            IssuedQuote { canonical: quote.canonical_bytes(), signature: signature.to_vec(), key_id, quote };
        let record = bincode::serialize(&IssuedRecord {
            canonical: issued.canonical.clone(),
            signature: issued.signature.clone(),
            key_id: issued.key_id.clone(),
        })
        .map_err(storage)?;
        let entry = StoredEntry::of(&issued.quote);
        let limits = self.limits;
        // One quote at a time through the caps: count, evict, store, count again.
        let mut counts = self.counts.lock().map_err(lock_poisoned)?;
        let mut evicted = Vec::new();
        let own = counts.per_participant.get(&entry.participant).copied().unwrap_or(0);
        if own >= limits.per_participant_max {
            let need = own + 1 - limits.per_participant_max;
            evicted = self.expired_of(&entry.participant, now_ms, need)?;
            if evicted.len() < need {
                return Err(DeskError::QuoteLimit {
                    what: "outstanding quotes per participant",
                    limit: limits.per_participant_max,
                });
            }
        }
        let total = (counts.total + 1).saturating_sub(evicted.len());
        if total > limits.stored_max {
            let need = total - limits.stored_max;
            let more = self.expired_any(now_ms, need, &evicted)?;
            if more.len() < need {
                return Err(DeskError::QuoteLimit { what: "stored quotes", limit: limits.stored_max });
            }
            evicted.extend(more);
        }
        let mut batch = sled::Batch::default();
        for old in &evicted {
            old.remove(&mut batch);
        }
        entry.insert(&mut batch, record);
        self.quotes.apply_batch(batch).map_err(storage)?;
        for old in &evicted {
            counts.remove(&old.participant);
        }
        counts.add(&entry.participant);
        drop(counts);
        if !evicted.is_empty() {
            tracing::debug!(evicted = evicted.len(), "expired quotes evicted to make room");
        }
        tracing::info!(quote_id = %uuid::Uuid::from_bytes(issued.quote.id), participant = %issued.quote.participant,
            key_id = %issued.key_id, "quote issued");
        Ok(issued)
    }

    /// Up to `n` of `participant`'s quotes that have expired at `now_ms`, earliest first.
    fn expired_of(&self, participant: &str, now_ms: u64, n: usize) -> Result<Vec<StoredEntry>, DeskError> {
        let mut out = Vec::new();
        for item in self.quotes.scan_prefix(participant_prefix(FAMILY_PARTICIPANT_EXPIRY, participant)) {
            let (key, value) = item.map_err(storage)?;
            let entry = StoredEntry::from_participant_expiry(participant, &key, &value)
                .ok_or_else(|| storage("bad quote index entry"))?;
            if out.len() == n || entry.expires_at_ms > now_ms {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Up to `n` quotes of anyone that expired at or before `cutoff_ms`, earliest first,
    /// leaving out `skip`.
    fn expired_any(
        &self,
        cutoff_ms: u64,
        n: usize,
        skip: &[StoredEntry],
    ) -> Result<Vec<StoredEntry>, DeskError> {
        let mut out = Vec::new();
        for item in self.quotes.scan_prefix([FAMILY_EXPIRY]) {
            let (key, value) = item.map_err(storage)?;
            let entry =
                StoredEntry::from_expiry(&key, &value).ok_or_else(|| storage("bad quote index entry"))?;
            if out.len() == n || entry.expires_at_ms > cutoff_ms {
                break;
            }
            if !skip.iter().any(|s| s.id == entry.id) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Deletes every quote that expired more than the retention before `now_ms`; returns how
    /// many. Runs at open and every [`QUOTE_PRUNE_INTERVAL_MS`] (see [`prune_periodically`]).
    pub fn prune_expired(&self, now_ms: u64) -> Result<usize, DeskError> {
        let cutoff = now_ms.saturating_sub(self.limits.retention_after_expiry_ms);
        let mut pruned = 0;
        loop {
            let mut counts = self.counts.lock().map_err(lock_poisoned)?;
            let batch_entries = self.expired_any(cutoff, QUOTE_PRUNE_BATCH_MAX, &[])?;
            if batch_entries.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            for entry in &batch_entries {
                entry.remove(&mut batch);
            }
            self.quotes.apply_batch(batch).map_err(storage)?;
            for entry in &batch_entries {
                counts.remove(&entry.participant);
            }
            pruned += batch_entries.len();
        }
        if pruned > 0 {
            tracing::info!(pruned, "expired quotes pruned");
        }
        Ok(pruned)
    }

    /// The issued quote `id`, if the store still holds it.
    fn stored(&self, id: &[u8; 16]) -> Result<Option<IssuedQuote>, DeskError> {
        let Some(value) = self.quotes.get(quote_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        let record: IssuedRecord = bincode::deserialize(&value).map_err(storage)?;
        let quote = Quote::from_canonical_bytes(&record.canonical).map_err(storage)?;
        Ok(Some(IssuedQuote {
            quote,
            canonical: record.canonical,
            signature: record.signature,
            key_id: record.key_id,
        }))
    }

    pub fn get_quote(&self, id: &[u8; 16]) -> Result<IssuedQuote, DeskError> {
        self.stored(id)?.ok_or_else(|| DeskError::QuoteNotFound(uuid::Uuid::from_bytes(*id).to_string()))
    }

    /// A participant's quotes, newest first, after the page token (a previous key).
    pub fn list_quotes(
        &self,
        participant: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<QuotePage, DeskError> {
        let limit = limit.min(QUOTES_PAGE_MAX);
        let mut out = Vec::new();
        for item in self.quotes.scan_prefix(participant_prefix(FAMILY_BY_PARTICIPANT, participant)) {
            let (key, _) = item.map_err(storage)?;
            if after.is_some_and(|a| key.as_ref() <= a) {
                continue;
            }
            let id: [u8; 16] = key[key.len() - 16..].try_into().map_err(storage)?;
            // Pruned between the scan and the read: skip it.
            let Some(issued) = self.stored(&id)? else { continue };
            out.push(issued);
            if out.len() == limit {
                return Ok((out, Some(key.to_vec())));
            }
        }
        Ok((out, None))
    }

    /// Executes a signed quote (idempotent per execution id). `signing_key_id` is the quote's
    /// (empty: each key is tried).
    #[allow(clippy::too_many_arguments)]
    pub async fn execute(
        &self,
        caller: &Caller,
        canonical: &[u8],
        signature: &[u8],
        signing_key_id: &str,
        source: AccountId,
        destination: AccountId,
        execution_id: u128,
    ) -> Result<Execution, DeskError> {
        if canonical.len() > QUOTE_ENCODING_LEN_MAX {
            return Err(FxError::MalformedQuote("too long").into());
        }
        // Verify the bytes exactly as signed before reading anything out of them: any change
        // to a quote is a signature failure, never a parse error.
        self.keyring.verify(signing_key_id, canonical, signature)?;
        let quote = Quote::from_canonical_bytes(canonical)?;
        let quote_uuid = uuid::Uuid::from_bytes(quote.id).to_string();
        // Another participant's quote is not found, even when its holder passes it on.
        if !caller.may_see(&quote.participant) {
            return Err(DeskError::QuoteNotFound(quote_uuid));
        }
        let digest = quote_digest(canonical);
        let execution = uuid::Uuid::from_u128(execution_id).to_string();
        let metadata: Metadata = [
            ("quote_id".to_owned(), quote_uuid.clone()),
            ("execution_id".to_owned(), execution.clone()),
            ("destination".to_owned(), uuid::Uuid::from_u128(destination).to_string()),
            (QUOTE_DIGEST_METADATA_KEY.to_owned(), digest.clone()),
        ]
        .into();
        // The legs are submitted by Puente on the quote's participant's behalf: its failures are
        // remembered in that participant's scope.
        let actor = Actor::system(quote.participant.clone());
        // A retry of this execution returns the first outcome, even after the quote expired
        // or was pruned: the legs carry the digest of the bytes executed.
        if let Some((timestamp_ns, window)) =
            self.prior_execution(&quote, &actor, &metadata, &digest, source).await?
        {
            return self.describe(quote, true, timestamp_ns, window).await;
        }
        // First execution: the bytes must be exactly those of a quote this desk issued and
        // still stores. A lost or pruned quote is refused, never trusted on its signature.
        let issued = match self.stored(&quote.id)? {
            Some(issued) if caller.may_see(&issued.quote.participant) => issued,
            _ => {
                tracing::warn!(quote_id = %quote_uuid, participant = %quote.participant,
                    "a validly signed quote that this desk does not hold was presented for execution: refused (lost or pruned, or signed outside the desk)");
                return Err(DeskError::QuoteNotFound(quote_uuid));
            }
        };
        if issued.canonical != canonical {
            return Err(self.not_issued(&quote));
        }
        check_executable(&quote, now_ms())?;
        self.check_accounts(caller, &quote, source, destination)?;
        let window = if quote.segment == Segment::Remittance { self.cancellation_window_ms } else { 0 };
        let legs = execution_legs(&quote, source, destination, window, &metadata);
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
        let mut execution = self.describe(quote, replayed, timestamp_ns, window).await?;
        execution.transfer_ids = ids;
        Ok(execution)
    }

    /// How an execution that was tried before went, from its first leg: the timestamp and
    /// cancellation window of its committed legs (None: never tried). Its remembered refusal,
    /// or another use of the quote, is an error.
    async fn prior_execution(
        &self,
        quote: &Quote,
        actor: &Actor,
        metadata: &Metadata,
        digest: &str,
        source: AccountId,
    ) -> Result<Option<(u64, u64)>, DeskError> {
        let first_leg = leg_id(&quote.id, 1);
        match self.ledger.get_transfer(first_leg, actor.scope()).await? {
            Some(Prior::Committed(record)) => {
                if !leg_matches(&record.transfer, digest, quote) {
                    return Err(self.not_issued(quote));
                }
                let same =
                    record.transfer.metadata == *metadata && record.transfer.debit_account_id == source;
                if !same {
                    return Err(DeskError::AlreadyUsed);
                }
                let window = if record.transfer.flags.pending { record.transfer.timeout_ms } else { 0 };
                Ok(Some((record.timestamp_ns, window)))
            }
            Some(Prior::Failed(failed)) => {
                // A failure is remembered with a digest of its metadata (execution id, destination,
                // quote digest): the same execution gets its first outcome; anything else, with
                // other accounts, another execution id or other bytes, is a second use.
                if failed.metadata_digest == metadata_digest(metadata) && failed.debit_account_id == source {
                    return Err(DeskError::Refused(failed.result.code()));
                }
                Err(DeskError::AlreadyUsed)
            }
            None => Ok(None),
        }
    }

    /// The accounts of an execution: the source is the quote's participant's (and the caller's,
    /// for a participant) in the currency sold; the destination is in the currency bought.
    fn check_accounts(
        &self,
        caller: &Caller,
        quote: &Quote,
        source: AccountId,
        destination: AccountId,
    ) -> Result<(), DeskError> {
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
        Ok(())
    }

    /// A validly signed quote that differs from the one issued under its id: only a holder of
    /// a signing key can make one. Logged loudly; refused.
    fn not_issued(&self, quote: &Quote) -> DeskError {
        let quote_uuid = uuid::Uuid::from_bytes(quote.id).to_string();
        tracing::error!(quote_id = %quote_uuid, participant = %quote.participant,
            "a validly signed quote differs from the quote issued under its id: refused. Only a holder of an FX signing key can make one: treat the key as compromised and rotate it");
        DeskError::QuoteNotIssued(quote_uuid)
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

    /// The execution of `quote` committed at `timestamp_ns`, held for `window_ms` (0: posted).
    async fn describe(
        &self,
        quote: Quote,
        replayed: bool,
        timestamp_ns: u64,
        window_ms: u64,
    ) -> Result<Execution, DeskError> {
        let first = leg_id(&quote.id, 1);
        let held = window_ms > 0;
        let state = if held {
            match self.ledger.pending_state(first).await? {
                Some(PendingState::Pending) => PendingOrPosted::Held,
                Some(PendingState::Voided) => PendingOrPosted::Cancelled,
                _ => PendingOrPosted::Posted,
            }
        } else {
            PendingOrPosted::Posted
        };
        let paid_at_ms = timestamp_ns / 1_000_000;
        let cancel_deadline_ms = if held { paid_at_ms + window_ms } else { 0 };
        Ok(Execution {
            transfer_ids: self.legs_of(&quote),
            quote,
            replayed,
            state,
            paid_at_ms,
            cancellation_window_ms: window_ms,
            cancel_deadline_ms,
        })
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
            if let Some(record) = self.ledger.get_committed(leg_id(quote_id, n)).await? {
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
        match self.ledger.pending_state(first.transfer.id).await? {
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

impl Drop for FxDesk {
    fn drop(&mut self) {
        // sled also flushes in the background; this keeps a graceful stop from losing the
        // last quotes.
        if let Err(error) = self.quotes.flush() {
            tracing::warn!(%error, "could not flush the quote store");
        }
    }
}

/// Prunes quotes past their retention every [`QUOTE_PRUNE_INTERVAL_MS`], until aborted.
pub async fn prune_periodically(desk: Arc<FxDesk>) {
    let mut interval = tokio::time::interval(Duration::from_millis(QUOTE_PRUNE_INTERVAL_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let desk = desk.clone();
        match tokio::task::spawn_blocking(move || desk.prune_expired(now_ms())).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "pruning expired quotes failed"),
            Err(error) => tracing::error!(%error, "the quote pruning task failed"),
        }
    }
}

/// The linked ledger legs of an execution, with system ids derived from the quote's: the send
/// amount to the house's liquidity and the amount received from it, then the fee and the tax
/// when there are any. A remittance's legs are pending for its cancellation `window_ms` and post
/// at its end.
fn execution_legs(
    quote: &Quote,
    source: AccountId,
    destination: AccountId,
    window_ms: u64,
    metadata: &Metadata,
) -> Vec<Transfer> {
    let quote_uuid = uuid::Uuid::from_bytes(quote.id).to_string();
    let (sell, buy) = (quote.pair.base, quote.pair.quote);
    let held = quote.segment == Segment::Remittance;
    let leg =
        |n: u8, debit: AccountId, credit: AccountId, currency: CurrencyCode, amount_minor: u64| Transfer {
            id: leg_id(&quote.id, n),
            debit_account_id: debit,
            credit_account_id: credit,
            amount_minor,
            currency,
            flags: TransferFlags { linked: true, pending: held, post_on_expiry: held, ..Default::default() },
            pending_id: 0,
            timeout_ms: window_ms,
            reference: format!("fx {quote_uuid} leg {n}"),
            metadata: metadata.clone(),
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
    legs
}
