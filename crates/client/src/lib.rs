//! A typed Rust client for Puente's ledger API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), puente_client::ClientError> {
//! use puente_client::{Client, NewAccount, NewTransfer};
//! let mut client = Client::connect("127.0.0.1:50051").await?;
//! let alice = client.create_account(NewAccount::new("fintech-a", "USD").no_overdraft()).await?;
//! let bob = client.create_account(NewAccount::new("fintech-b", "USD")).await?;
//! // Fund alice from bob's (unrestricted) account, then check the balance.
//! client.transfer(NewTransfer::new(&bob.id, &alice.id, "USD", "250.00")).await?;
//! let alice = client.get_account(&alice.id).await?;
//! assert_eq!(alice.available_balance, "250.00");
//! # Ok(()) }
//! ```

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

use std::collections::HashMap;

use pb::fx_service_client::FxServiceClient;
use pb::ledger_service_client::LedgerServiceClient;
use pb::operations_service_client::OperationsServiceClient;
use pb::participant_service_client::ParticipantServiceClient;
use pb::settlement_service_client::SettlementServiceClient;
pub use puente_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_types::StatusExt;

mod cluster;
pub use cluster::{ClusterClient, FAILOVER_WAIT_MS};

pub use puente_proto::{LEADER_ADDRESS_KEY, NOT_LEADER_REASON};

/// Largest message the client accepts (matches the server's limit).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: tonic::transport::Error },
    /// An API key that cannot be sent, or no randomness to make one.
    #[error("API key: {0}")]
    InvalidKey(&'static str),
    /// The key file named by `PUENTE_API_KEY_FILE` cannot be read, or is empty.
    #[error("API key file {path} (PUENTE_API_KEY_FILE): {reason}")]
    KeyFile { path: String, reason: String },
    /// The server answered with an error status. `reason` is the google.rpc.ErrorInfo reason
    /// (e.g. "INVALID_FIELD", "ACCOUNT_NOT_FOUND"); `violations` the BadRequest fields.
    ///
    /// `leader_address`: a standby's refusal of a write (reason NOT_LEADER) names the leader
    /// here when it knows it (see [`ClusterClient`], which follows it).
    #[error("{code:?}: {message}")]
    Status {
        code: tonic::Code,
        message: String,
        reason: Option<String>,
        violations: Vec<(String, String)>,
        leader_address: Option<String>,
    },
    /// The request was valid, but the ledger refused the event (e.g. "EXCEEDS_CREDITS").
    #[error("refused: {code}")]
    Refused { code: String },
}

impl ClientError {
    /// The machine-readable reason: the ErrorInfo reason or the per-event result code.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Status { reason, .. } => reason.as_deref(),
            ClientError::Refused { code } => Some(code),
            ClientError::Connect { .. } | ClientError::InvalidKey(_) | ClientError::KeyFile { .. } => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let details = status.get_error_details();
        ClientError::Status {
            code: status.code(),
            message: status.message().to_owned(),
            reason: details.error_info().map(|info| info.reason.clone()),
            leader_address: details
                .error_info()
                .and_then(|info| info.metadata.get(LEADER_ADDRESS_KEY).cloned()),
            violations: details
                .bad_request()
                .map(|b| {
                    b.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A new random id (UUID v4 text) for an account or a transfer.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Builder for an account.
#[derive(Debug, Clone)]
pub struct NewAccount(pub pb::Account);

impl NewAccount {
    pub fn new(participant: &str, currency_code: &str) -> NewAccount {
        NewAccount(pb::Account {
            id: new_id(),
            participant: participant.to_owned(),
            currency_code: currency_code.to_owned(),
            ..Default::default()
        })
    }
    pub fn id(mut self, id: &str) -> Self {
        self.0.id = id.to_owned();
        self
    }
    /// Debits may not exceed credits (a wallet that cannot go below zero).
    pub fn no_overdraft(mut self) -> Self {
        self.0.debits_must_not_exceed_credits = true;
        self
    }
    /// Debits may exceed credits by at most `limit` (decimal text).
    pub fn overdraft_limit(mut self, limit: &str) -> Self {
        self.0.debits_must_not_exceed_credits = true;
        self.0.overdraft_limit = limit.to_owned();
        self
    }
    /// Credits may not exceed debits.
    pub fn credit_cap(mut self) -> Self {
        self.0.credits_must_not_exceed_debits = true;
        self
    }
    pub fn holder_ref(mut self, holder_ref: &str) -> Self {
        self.0.holder_ref = holder_ref.to_owned();
        self
    }
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// Builder for a transfer.
#[derive(Debug, Clone)]
pub struct NewTransfer(pub pb::Transfer);

impl NewTransfer {
    /// A single-phase transfer of `amount` (decimal text) from `debit` to `credit`.
    pub fn new(
        debit_account_id: &str,
        credit_account_id: &str,
        currency_code: &str,
        amount: &str,
    ) -> NewTransfer {
        NewTransfer(pb::Transfer {
            id: new_id(),
            debit_account_id: debit_account_id.to_owned(),
            credit_account_id: credit_account_id.to_owned(),
            amount: Some(pb::Money { currency_code: currency_code.to_owned(), value: amount.to_owned() }),
            kind: pb::TransferKind::SinglePhase as i32,
            ..Default::default()
        })
    }
    /// Posts the pending transfer `pending_id`; `amount` None posts it in full.
    pub fn post(pending_id: &str, currency_code: &str, amount: Option<&str>) -> NewTransfer {
        NewTransfer(pb::Transfer {
            id: new_id(),
            pending_id: pending_id.to_owned(),
            amount: Some(pb::Money {
                currency_code: currency_code.to_owned(),
                value: amount.unwrap_or_default().to_owned(),
            }),
            kind: pb::TransferKind::PostPending as i32,
            ..Default::default()
        })
    }
    /// Voids the pending transfer `pending_id`.
    pub fn void(pending_id: &str, currency_code: &str) -> NewTransfer {
        NewTransfer(pb::Transfer {
            id: new_id(),
            pending_id: pending_id.to_owned(),
            amount: Some(pb::Money { currency_code: currency_code.to_owned(), value: String::new() }),
            kind: pb::TransferKind::VoidPending as i32,
            ..Default::default()
        })
    }
    pub fn id(mut self, id: &str) -> Self {
        self.0.id = id.to_owned();
        self
    }
    /// Makes it a pending (two-phase) transfer, released after `timeout_ms` if > 0.
    pub fn pending(mut self, timeout_ms: u64) -> Self {
        self.0.kind = pb::TransferKind::Pending as i32;
        self.0.timeout_ms = timeout_ms;
        self
    }
    pub fn linked(mut self) -> Self {
        self.0.linked = true;
        self
    }
    pub fn reference(mut self, reference: &str) -> Self {
        self.0.reference = reference.to_owned();
        self
    }
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.0.metadata.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// A connection to a Puente server. Cheap to clone (one HTTP/2 channel).
#[derive(Clone)]
pub struct Client {
    inner: LedgerServiceClient<AuthChannel>,
    fx: FxServiceClient<AuthChannel>,
    channel: AuthChannel,
}

/// A channel that sends the caller's API key with every request. Any generated stub takes it:
/// `SettlementServiceClient::new(channel)`.
pub type AuthChannel = InterceptedService<Channel, BearerAuth>;

/// Adds `authorization: Bearer <key>` to every request (nothing when there is no key).
#[derive(Clone, Default)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "BearerAuth([redacted])" } else { "BearerAuth(none)" })
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How to connect: the API key to send, and TLS (mutual when it carries a client identity).
#[derive(Clone, Default)]
pub struct ConnectOptions {
    pub api_key: Option<String>,
    pub tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The environment variable naming a file that holds the API key (preferred).
pub const API_KEY_FILE_ENV: &str = "PUENTE_API_KEY_FILE";
/// The environment variable holding the API key itself.
pub const API_KEY_ENV: &str = "PUENTE_API_KEY";

impl ConnectOptions {
    pub fn api_key(key: &str) -> ConnectOptions {
        ConnectOptions { api_key: Some(key.to_owned()), tls: None }
    }

    /// The API key from the environment, as the `puente` CLI and the Python client read it:
    /// the file named by `PUENTE_API_KEY_FILE` (preferred: the key stays out of the
    /// environment), else `PUENTE_API_KEY`, else none. A named file that cannot be read, or is
    /// empty, is an error (not "no key").
    pub fn from_env() -> Result<ConnectOptions, ClientError> {
        let file = std::env::var_os(API_KEY_FILE_ENV).filter(|v| !v.is_empty());
        let key = std::env::var(API_KEY_ENV).ok().filter(|v| !v.trim().is_empty());
        Ok(ConnectOptions {
            api_key: api_key_from(file.as_deref().map(std::path::Path::new), key)?,
            tls: None,
        })
    }
}

/// The key in `file` if one is named (it wins), else `key`.
fn api_key_from(file: Option<&std::path::Path>, key: Option<String>) -> Result<Option<String>, ClientError> {
    let Some(path) = file else { return Ok(key.map(|k| k.trim().to_owned())) };
    let error = |reason: String| ClientError::KeyFile { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(error("the file is empty".into()));
    }
    Ok(Some(key.to_owned()))
}

/// Opens a channel to `addr` ("127.0.0.1:50051", "http://host:port" or "https://host:port").
pub async fn channel(addr: &str, options: &ConnectOptions) -> Result<AuthChannel, ClientError> {
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|source| ClientError::Connect { addr: addr.to_owned(), source })?
        .tcp_nodelay(true);
    if let Some(tls) = &options.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|source| ClientError::Connect { addr: addr.to_owned(), source })?;
    }
    let channel =
        endpoint.connect().await.map_err(|source| ClientError::Connect { addr: addr.to_owned(), source })?;
    let auth = match &options.api_key {
        Some(key) => Some(
            MetadataValue::try_from(format!("Bearer {}", key.trim()))
                .map_err(|_| ClientError::InvalidKey("an API key is printable ASCII"))?,
        ),
        None => None,
    };
    Ok(InterceptedService::new(channel, BearerAuth(auth)))
}

/// A new API key, made on this machine: only `sha256_hex` goes to the server; show `key` once.
#[derive(Clone)]
pub struct NewApiKey {
    pub key_id: String,
    /// `puente_<key_id>_<64 hex digits>`: the secret. Never log it.
    pub key: String,
    pub sha256_hex: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey").field("key_id", &self.key_id).field("key", &"[redacted]").finish()
    }
}

impl NewApiKey {
    /// 64 bits of key id and 256 bits of secret from the system's CSPRNG.
    pub fn generate() -> Result<NewApiKey, ClientError> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rng.fill(&mut id).map_err(|_| ClientError::InvalidKey("no randomness"))?;
        rng.fill(&mut secret).map_err(|_| ClientError::InvalidKey("no randomness"))?;
        let key_id = hex::encode(id);
        let key = format!("puente_{key_id}_{}", hex::encode(secret));
        let sha256_hex = hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()));
        Ok(NewApiKey { key_id, key, sha256_hex })
    }

    pub fn proto(&self) -> pb::NewApiKey {
        pb::NewApiKey { key_id: self.key_id.clone(), key_sha256: self.sha256_hex.clone() }
    }
}

/// Verifies a quote's Ed25519 signature over its canonical bytes, offline, with one key (e.g.
/// from `Client::fx_public_key`). Returns false for a tampered quote or another key. After a
/// key rotation prefer [`verify_quote_with_keys`].
pub fn verify_quote(public_key: &[u8], quote: &pb::FxQuote) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(&quote.canonical, &quote.signature)
        .is_ok()
}

/// Verifies a quote offline with the key it names (`signing_key_id`) among `keys` (from
/// `Client::fx_public_keys`). A quote that names no key is tried with each. Returns false for
/// a tampered quote, or a key id not in `keys`.
///
/// A valid signature shows the server's key signed the quote; only the server decides whether
/// it executes (it executes only quotes it issued, byte for byte).
pub fn verify_quote_with_keys(keys: &[pb::FxPublicKey], quote: &pb::FxQuote) -> bool {
    keys.iter()
        .filter(|k| quote.signing_key_id.is_empty() || k.key_id == quote.signing_key_id)
        .any(|k| verify_quote(&k.public_key, quote))
}

/// Which amount of a quote is fixed.
#[derive(Debug, Clone, Copy)]
pub enum Fixed<'a> {
    /// The amount sent (fees are added on top), in the sell currency.
    Send(&'a str),
    /// The amount the recipient must receive, in the buy currency.
    Receive(&'a str),
}

impl Client {
    /// Connects to `addr` ("127.0.0.1:50051" or "http://host:port") without credentials
    /// (only health, reflection and bootstrap answer; see `connect_with`).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects with an API key: `Client::connect_with(addr, &ConnectOptions::api_key(&key))`.
    pub async fn connect_with(addr: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
        Ok(Client::from_channel(channel(addr, options).await?))
    }

    pub fn from_channel(channel: AuthChannel) -> Client {
        Client {
            inner: LedgerServiceClient::new(channel.clone())
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            fx: FxServiceClient::new(channel.clone()),
            channel,
        }
    }

    /// The channel (with this client's credentials), for other generated stubs.
    pub fn channel(&self) -> AuthChannel {
        self.channel.clone()
    }

    pub fn participants(&self) -> ParticipantServiceClient<AuthChannel> {
        ParticipantServiceClient::new(self.channel.clone())
    }

    pub fn settlement(&self) -> SettlementServiceClient<AuthChannel> {
        SettlementServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// Registers the first operator of a new ledger (from loopback, while there is none) and
    /// returns its new key (show it once).
    pub async fn bootstrap_operator(
        &mut self,
        participant_id: &str,
        display_name: &str,
    ) -> Result<(pb::Participant, NewApiKey), ClientError> {
        let key = NewApiKey::generate()?;
        let response = self
            .participants()
            .bootstrap_operator(pb::BootstrapOperatorRequest {
                participant_id: participant_id.to_owned(),
                display_name: display_name.to_owned(),
                key: Some(key.proto()),
            })
            .await?
            .into_inner();
        Ok((response.participant.unwrap_or_default(), key))
    }

    /// Registers a participant (operators only) and returns its first key (show it once).
    pub async fn create_participant(
        &mut self,
        participant_id: &str,
        display_name: &str,
        role: pb::Role,
    ) -> Result<(pb::Participant, NewApiKey), ClientError> {
        let key = NewApiKey::generate()?;
        let response = self
            .participants()
            .create_participant(pb::CreateParticipantRequest {
                participant_id: participant_id.to_owned(),
                display_name: display_name.to_owned(),
                role: role as i32,
                key: Some(key.proto()),
            })
            .await?
            .into_inner();
        Ok((response.participant.unwrap_or_default(), key))
    }

    /// Issues a new key; with `revoke_others`, every other key of the participant stops working.
    pub async fn rotate_key(
        &mut self,
        participant_id: &str,
        revoke_others: bool,
    ) -> Result<(pb::Participant, NewApiKey), ClientError> {
        let key = NewApiKey::generate()?;
        let response = self
            .participants()
            .issue_api_key(pb::IssueApiKeyRequest {
                participant_id: participant_id.to_owned(),
                key: Some(key.proto()),
                revoke_other_keys: revoke_others,
            })
            .await?
            .into_inner();
        Ok((response.participant.unwrap_or_default(), key))
    }

    pub async fn revoke_key(
        &mut self,
        participant_id: &str,
        key_id: &str,
    ) -> Result<pb::Participant, ClientError> {
        let response = self
            .participants()
            .revoke_api_key(pb::RevokeApiKeyRequest {
                participant_id: participant_id.to_owned(),
                key_id: key_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok(response.participant.unwrap_or_default())
    }

    /// Who this client's credentials belong to.
    pub async fn whoami(&mut self) -> Result<pb::GetCallerResponse, ClientError> {
        Ok(self.participants().get_caller(pb::GetCallerRequest {}).await?.into_inner())
    }

    pub fn operations(&self) -> OperationsServiceClient<AuthChannel> {
        OperationsServiceClient::new(self.channel.clone())
    }

    /// The server's version, store, chain head, writes and requests (operators only).
    pub async fn server_status(&mut self) -> Result<pb::GetServerStatusResponse, ClientError> {
        Ok(self.operations().get_server_status(pb::GetServerStatusRequest {}).await?.into_inner())
    }

    /// The generated stub, for anything this wrapper does not cover.
    pub fn raw(&mut self) -> &mut LedgerServiceClient<AuthChannel> {
        &mut self.inner
    }

    pub async fn create_accounts(
        &mut self,
        accounts: Vec<pb::Account>,
    ) -> Result<Vec<pb::CreateAccountResult>, ClientError> {
        Ok(self.inner.create_accounts(pb::CreateAccountsRequest { accounts }).await?.into_inner().results)
    }

    /// Opens one account; a refusal (e.g. EXISTS_WITH_DIFFERENT_CURRENCY) is an error.
    pub async fn create_account(&mut self, account: NewAccount) -> Result<pb::Account, ClientError> {
        let result = self.create_accounts(vec![account.0]).await?.into_iter().next();
        match result {
            Some(r) if r.code == "OK" => r.account.ok_or(ClientError::Refused { code: "NO_ACCOUNT".into() }),
            Some(r) => Err(ClientError::Refused { code: r.code }),
            None => Err(ClientError::Refused { code: "NO_RESULT".into() }),
        }
    }

    /// Closes an account (no new transfers); returns it and whether it was already closed.
    pub async fn close_account(&mut self, id: &str) -> Result<(pb::Account, bool), ClientError> {
        let response =
            self.inner.close_account(pb::CloseAccountRequest { id: id.to_owned() }).await?.into_inner();
        let account = response.account.ok_or(ClientError::Refused { code: "NO_ACCOUNT".into() })?;
        Ok((account, response.replayed))
    }

    pub async fn get_account(&mut self, id: &str) -> Result<pb::Account, ClientError> {
        let response =
            self.inner.get_account(pb::GetAccountRequest { id: id.to_owned() }).await?.into_inner();
        response.account.ok_or(ClientError::Refused { code: "NO_ACCOUNT".into() })
    }

    pub async fn list_accounts(
        &mut self,
        participant: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListAccountsResponse, ClientError> {
        let request = pb::ListAccountsRequest {
            participant: participant.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        Ok(self.inner.list_accounts(request).await?.into_inner())
    }

    pub async fn create_transfers(
        &mut self,
        transfers: Vec<pb::Transfer>,
    ) -> Result<Vec<pb::CreateTransferResult>, ClientError> {
        Ok(self.inner.create_transfers(pb::CreateTransfersRequest { transfers }).await?.into_inner().results)
    }

    /// Posts one transfer; a refusal (e.g. EXCEEDS_CREDITS) is an error.
    pub async fn transfer(&mut self, transfer: NewTransfer) -> Result<pb::CreateTransferResult, ClientError> {
        let result = self.create_transfers(vec![transfer.0]).await?.into_iter().next();
        match result {
            Some(r) if r.code == "OK" => Ok(r),
            Some(r) => Err(ClientError::Refused { code: r.code }),
            None => Err(ClientError::Refused { code: "NO_RESULT".into() }),
        }
    }

    pub async fn get_transfer(&mut self, id: &str) -> Result<pb::Transfer, ClientError> {
        let response =
            self.inner.get_transfer(pb::GetTransferRequest { id: id.to_owned() }).await?.into_inner();
        response.transfer.ok_or(ClientError::Refused { code: "NO_TRANSFER".into() })
    }

    pub async fn list_transfers(
        &mut self,
        request: pb::ListTransfersRequest,
    ) -> Result<pb::ListTransfersResponse, ClientError> {
        Ok(self.inner.list_transfers(request).await?.into_inner())
    }

    pub async fn statement(
        &mut self,
        request: pb::GetAccountStatementRequest,
    ) -> Result<pb::GetAccountStatementResponse, ClientError> {
        Ok(self.inner.get_account_statement(request).await?.into_inner())
    }

    /// Committed transfers after `after_position`, then live ones.
    pub async fn stream_transfers(
        &mut self,
        after_position: u64,
    ) -> Result<tonic::Streaming<pb::StreamTransfersResponse>, ClientError> {
        Ok(self.inner.stream_transfers(pb::StreamTransfersRequest { after_position }).await?.into_inner())
    }
}

impl Client {
    /// The FX stub, for anything this wrapper does not cover.
    pub fn raw_fx(&mut self) -> &mut FxServiceClient<AuthChannel> {
        &mut self.fx
    }

    /// Sets one mid rate, e.g. `set_rate("USD", "MXN", "18.91", "operator")`.
    pub async fn set_rate(
        &mut self,
        base: &str,
        quote: &str,
        mid: &str,
        source: &str,
    ) -> Result<(), ClientError> {
        let rate = pb::FxRate {
            base_currency: base.to_owned(),
            quote_currency: quote.to_owned(),
            mid_rate: mid.to_owned(),
            source: source.to_owned(),
            rate_time: None,
        };
        self.fx.set_rates(pb::SetRatesRequest { rates: vec![rate] }).await?;
        Ok(())
    }

    pub async fn set_rates(&mut self, rates: Vec<pb::FxRate>) -> Result<u32, ClientError> {
        Ok(self.fx.set_rates(pb::SetRatesRequest { rates }).await?.into_inner().rates_set)
    }

    /// Streams rate updates (a feed) and returns how many rates were set.
    pub async fn stream_rates(&mut self, updates: Vec<Vec<pb::FxRate>>) -> Result<u64, ClientError> {
        let stream = tokio_stream::iter(updates.into_iter().map(|rates| pb::StreamRatesRequest { rates }));
        Ok(self.fx.stream_rates(stream).await?.into_inner().rates_set)
    }

    pub async fn list_rates(&mut self) -> Result<Vec<pb::FxRate>, ClientError> {
        Ok(self.fx.list_rates(pb::ListRatesRequest {}).await?.into_inner().rates)
    }

    /// A new signed quote with its disclosure.
    pub async fn quote(
        &mut self,
        participant: &str,
        segment: pb::FxSegment,
        sell: &str,
        buy: &str,
        fixed: Fixed<'_>,
    ) -> Result<pb::FxQuote, ClientError> {
        let (send_amount, receive_amount) = match fixed {
            Fixed::Send(a) => (a.to_owned(), String::new()),
            Fixed::Receive(a) => (String::new(), a.to_owned()),
        };
        let request = pb::GetQuoteRequest {
            participant: participant.to_owned(),
            segment: segment as i32,
            sell_currency: sell.to_owned(),
            buy_currency: buy.to_owned(),
            send_amount,
            receive_amount,
        };
        let quote = self.fx.get_quote(request).await?.into_inner().quote;
        quote.ok_or(ClientError::Refused { code: "NO_QUOTE".into() })
    }

    pub async fn get_quote(&mut self, id: &str) -> Result<pb::FxQuote, ClientError> {
        let quote =
            self.fx.get_quote_by_id(pb::GetQuoteByIdRequest { id: id.to_owned() }).await?.into_inner().quote;
        quote.ok_or(ClientError::Refused { code: "NO_QUOTE".into() })
    }

    pub async fn list_quotes(
        &mut self,
        participant: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListQuotesResponse, ClientError> {
        let request = pb::ListQuotesRequest {
            participant: participant.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        Ok(self.fx.list_quotes(request).await?.into_inner())
    }

    /// Executes a quote from `source` (sell currency) to `destination` (buy currency).
    /// `execution_id` makes retries safe: the same id returns the first outcome.
    pub async fn execute_quote(
        &mut self,
        quote: &pb::FxQuote,
        source_account_id: &str,
        destination_account_id: &str,
        execution_id: &str,
    ) -> Result<pb::ExecuteQuoteResponse, ClientError> {
        let request = pb::ExecuteQuoteRequest {
            canonical: quote.canonical.clone(),
            signature: quote.signature.clone(),
            source_account_id: source_account_id.to_owned(),
            destination_account_id: destination_account_id.to_owned(),
            execution_id: execution_id.to_owned(),
            signing_key_id: quote.signing_key_id.clone(),
        };
        Ok(self.fx.execute_quote(request).await?.into_inner())
    }

    /// Cancels a held remittance within its window; everything is refunded.
    pub async fn cancel_transfer(
        &mut self,
        quote_id: &str,
    ) -> Result<pb::CancelTransferResponse, ClientError> {
        Ok(self
            .fx
            .cancel_transfer(pb::CancelTransferRequest { quote_id: quote_id.to_owned() })
            .await?
            .into_inner())
    }

    /// The 32-byte Ed25519 key that signs new quotes.
    pub async fn fx_public_key(&mut self) -> Result<Vec<u8>, ClientError> {
        Ok(self.fx.get_public_key(pb::GetPublicKeyRequest {}).await?.into_inner().public_key)
    }

    /// Every key that verifies quotes, with its id; the signing key first (older keys stay
    /// listed after a rotation). For [`verify_quote_with_keys`].
    pub async fn fx_public_keys(&mut self) -> Result<Vec<pb::FxPublicKey>, ClientError> {
        Ok(self.fx.get_public_key(pb::GetPublicKeyRequest {}).await?.into_inner().keys)
    }

    pub async fn exposure(&mut self) -> Result<Vec<pb::FxPosition>, ClientError> {
        Ok(self.fx.get_exposure(pb::GetExposureRequest {}).await?.into_inner().positions)
    }
}

/// Metadata helper for callers building maps.
pub fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_wins_over_the_key_and_must_hold_a_key() {
        let dir = std::env::temp_dir().join(format!("puente-client-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("operator.key");
        std::fs::write(&file, "puente_abc_123\n").unwrap();
        let from_file = api_key_from(Some(&file), Some("puente_env_456".into())).unwrap();
        assert_eq!(from_file.as_deref(), Some("puente_abc_123"));
        assert_eq!(
            api_key_from(None, Some(" puente_env_456 ".into())).unwrap().as_deref(),
            Some("puente_env_456")
        );
        assert_eq!(api_key_from(None, None).unwrap(), None);
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(api_key_from(Some(&file), None), Err(ClientError::KeyFile { .. })));
        let missing = dir.join("missing.key");
        let error = api_key_from(Some(&missing), Some("puente_env_456".into())).unwrap_err();
        assert!(error.to_string().contains("PUENTE_API_KEY_FILE"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
