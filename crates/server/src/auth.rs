//! Authentication, the role table, and per-participant rate and concurrency limits.
//!
//! One tower layer in front of every service: it finds the caller (an API key in
//! `authorization: Bearer <key>`, or a client certificate bound to a participant under mutual
//! TLS), checks the method against [`access`] (the one table of who may call what), applies
//! the caller's limits, and hands the [`Caller`] to the handlers in the request extensions.
//! Handlers then check ownership of what a request names (another participant's resource is
//! NOT_FOUND). Keys never reach a log: only their `key_id` does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use puente_ledger::Ledger;
use puente_ledger::identity::{Caller, Digest, Role};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Longest `authorization` header value accepted, in bytes.
pub const AUTHORIZATION_LEN_MAX: usize = 256;
/// Most participants with a concurrency gate in memory (the registry's own limit).
pub const GATES_MAX: usize = puente_ledger::identity::PARTICIPANTS_MAX;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials: health checks and reflection (the schema is public).
    Public,
    /// No credentials, from loopback, while the ledger has no operator.
    Bootstrap,
    /// Any participant or operator; the handler checks ownership.
    Authenticated,
    /// Operators only.
    Operator,
}

/// The one table of who may call what. Anything not listed is operator-only (deny by default).
pub fn access(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return Access::Public;
    }
    match path {
        "/puente.v1.ParticipantService/BootstrapOperator" => Access::Bootstrap,
        "/puente.v1.ParticipantService/GetCaller"
        | "/puente.v1.LedgerService/CreateAccounts"
        | "/puente.v1.LedgerService/GetAccount"
        | "/puente.v1.LedgerService/ListAccounts"
        | "/puente.v1.LedgerService/CloseAccount"
        | "/puente.v1.LedgerService/CreateTransfers"
        | "/puente.v1.LedgerService/GetTransfer"
        | "/puente.v1.LedgerService/ListTransfers"
        | "/puente.v1.LedgerService/GetAccountStatement"
        | "/puente.v1.LedgerService/StreamTransfers"
        | "/puente.v1.FxService/ListRates"
        | "/puente.v1.FxService/GetQuote"
        | "/puente.v1.FxService/GetQuoteById"
        | "/puente.v1.FxService/ListQuotes"
        | "/puente.v1.FxService/ExecuteQuote"
        | "/puente.v1.FxService/CancelTransfer"
        | "/puente.v1.FxService/GetPublicKey"
        | "/puente.v1.SettlementService/GetParticipantProfile"
        | "/puente.v1.SettlementService/ListWindows"
        | "/puente.v1.SettlementService/GetWindow"
        | "/puente.v1.SettlementService/GetSettlementStatement"
        | "/puente.v1.SettlementService/ConfirmSettlement"
        | "/puente.v1.HolderService/CreateHolder"
        | "/puente.v1.HolderService/GetHolder"
        | "/puente.v1.HolderService/ListHolders"
        | "/puente.v1.HolderService/GetHolderUsage" => Access::Authenticated,
        // Confirms participants' settlements from the banks' documents: operators only.
        "/puente.v1.SettlementService/ReconcileStatements" => Access::Operator,
        _ => Access::Operator,
    }
}

/// Per-participant request limits (operators included: a runaway script is a runaway script).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained requests per second per participant.
    pub requests_per_second: u32,
    /// Requests a participant may make at once above the sustained rate.
    pub burst: u32,
    /// Requests (streams included, for as long as they are open) in flight per participant.
    pub concurrent_requests: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { requests_per_second: 2_000, burst: 4_000, concurrent_requests: 256 }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.requests_per_second == 0 || self.burst == 0 || self.concurrent_requests == 0 {
            return Err(
                "limits: requests_per_second, burst and concurrent_requests must be at least 1".into()
            );
        }
        if self.concurrent_requests > 1_000_000 {
            return Err("limits: concurrent_requests must be at most 1000000".into());
        }
        Ok(())
    }
}

/// The caller's limits: a GCRA rate limiter keyed by participant and a semaphore each.
pub struct Limits {
    config: LimitsConfig,
    rate: DefaultKeyedRateLimiter<String>,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("config", &self.config).finish()
    }
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Limits {
        let per_second = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        Limits {
            config,
            rate: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `caller`, or says how long to wait.
    fn admit(&self, caller: &Caller) -> Result<OwnedSemaphorePermit, ApiError> {
        let participant = &caller.participant;
        if let Err(not_until) = self.rate.check_key(participant) {
            let wait = not_until
                .wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(ApiError::RateLimited {
                limit: "requests_per_second",
                retry_after_ms: wait.as_millis().max(1) as u64,
            });
        }
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match gates.get(participant) {
                Some(gate) => gate.clone(),
                None => {
                    if gates.len() >= GATES_MAX {
                        // Only registered participants get here, so this is a full registry:
                        // drop idle gates.
                        gates.retain(|_, gate| {
                            gate.available_permits() < self.config.concurrent_requests as usize
                        });
                    }
                    let gate = Arc::new(Semaphore::new(self.config.concurrent_requests as usize));
                    gates.insert(participant.clone(), gate.clone());
                    gate
                }
            }
        };
        gate.try_acquire_owned()
            .map_err(|_| ApiError::RateLimited { limit: "concurrent_requests", retry_after_ms: 10 })
    }
}

/// The layer: `Server::builder().layer(AuthLayer::new(ledger, limits))`.
#[derive(Clone)]
pub struct AuthLayer {
    ledger: Ledger,
    limits: Arc<Limits>,
}

impl AuthLayer {
    pub fn new(ledger: Ledger, limits: LimitsConfig) -> AuthLayer {
        AuthLayer { ledger, limits: Arc::new(Limits::new(limits)) }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, ledger: self.ledger.clone(), limits: self.limits.clone() }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    ledger: Ledger,
    limits: Arc<Limits>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The SHA-256 of an API key's text, as stored.
pub fn key_digest(key: &str) -> Digest {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The client's address, when the transport told us.
fn remote_addr<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions.get::<TcpConnectInfo>().and_then(|info| info.remote_addr()).or_else(|| {
        extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.get_ref().remote_addr())
    })
}

/// The SHA-256 of the client certificate, under mutual TLS.
fn peer_certificate<B>(request: &http::Request<B>) -> Option<Digest> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    let leaf = certs.first()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Some(out)
}

/// The API key in an `authorization` header value (`Bearer <key>`), trimmed. Outside input:
/// any bytes give a key or an error, never a panic (property-tested below).
pub fn bearer_key(value: &[u8]) -> Result<&str, ApiError> {
    if value.len() > AUTHORIZATION_LEN_MAX {
        return Err(ApiError::Unauthenticated("the authorization header is too long"));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| ApiError::Unauthenticated("the authorization header is not text"))?;
    let Some(key) = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")) else {
        return Err(ApiError::Unauthenticated("use `authorization: Bearer <api key>`"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(ApiError::Unauthenticated("an empty API key"));
    }
    Ok(key)
}

/// Finds the caller of `request` (without deciding whether it may call the method).
fn authenticate<B>(ledger: &Ledger, request: &http::Request<B>) -> Result<Caller, ApiError> {
    let credentials = ledger.credentials();
    if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
        let key = bearer_key(value.as_bytes())?;
        return credentials
            .by_key(&key_digest(key))
            .cloned()
            .ok_or(ApiError::Unauthenticated("unknown or revoked API key"));
    }
    if let Some(cert) = peer_certificate(request) {
        return credentials
            .by_certificate(&cert)
            .cloned()
            .ok_or(ApiError::Unauthenticated("the client certificate is not bound to a participant"));
    }
    Err(ApiError::Unauthenticated("no credentials: send `authorization: Bearer <api key>`"))
}

/// What the layer decided for one request.
fn admit<B>(
    ledger: &Ledger,
    limits: &Limits,
    request: &mut http::Request<B>,
) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    let path = request.uri().path();
    match access(path) {
        Access::Public => Ok(None),
        Access::Bootstrap => {
            if !remote_addr(request).is_some_and(|addr| addr.ip().is_loopback()) {
                return Err(ApiError::PermissionDenied("bootstrap is accepted only from a loopback address"));
            }
            if ledger.credentials().operators() > 0 {
                return Err(ApiError::PermissionDenied(
                    "bootstrap is over: an operator exists; an operator creates participants",
                ));
            }
            Ok(None)
        }
        access => {
            let caller = authenticate(ledger, request).inspect_err(|error| {
                // Who knocked, never with what: the key id part of a presented key (not secret)
                // tells an operator which revoked or mistyped key a client still sends.
                let key_id = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| bearer_key(v.as_bytes()).ok())
                    .and_then(|key| key.strip_prefix("puente_"))
                    .and_then(|rest| rest.split_once('_'))
                    .map(|(id, _)| id.chars().take(32).collect::<String>())
                    .unwrap_or_default();
                let peer = remote_addr(request).map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(%peer, presented_key_id = %key_id, %error, "request refused");
            })?;
            let span = tracing::Span::current();
            span.record("participant", caller.participant.as_str());
            if let Some(key_id) = &caller.key_id {
                span.record("key_id", key_id.as_str());
            }
            if access == Access::Operator && caller.role != Role::Operator {
                return Err(ApiError::PermissionDenied("this method needs the operator role"));
            }
            let permit = limits.admit(&caller).inspect_err(|e| {
                if let ApiError::RateLimited { limit, .. } = e {
                    crate::metrics::count_rate_limited(limit);
                }
            })?;
            request.extensions_mut().insert(caller);
            Ok(Some(permit))
        }
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Auth<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Default + Unpin + Send + 'static,
{
    type Response = http::Response<PermitBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match admit(&self.ledger, &self.limits, &mut request) {
            Ok(permit) => {
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await?;
                    Ok(response.map(|inner| PermitBody { inner, _permit: permit }))
                })
            }
            Err(error) => {
                let status: tonic::Status = error.into();
                let response = status.into_http::<ResBody>();
                Box::pin(async move { Ok(response.map(|inner| PermitBody { inner, _permit: None })) })
            }
        }
    }
}

/// A response body that holds the caller's concurrency permit until the response ends (so an
/// open stream counts against the limit for as long as it is open).
pub struct PermitBody<B> {
    inner: B,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<B: http_body::Body + Unpin> http_body::Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The caller the layer put on the request (every authenticated method has one).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(ApiError::Unauthenticated("no credentials: send `authorization: Bearer <api key>`"))
}

/// The participant a request names, as the caller may name it: an operator names anyone (empty
/// stays empty: "all" or "required", the handler decides); a participant names itself (empty
/// means itself), and naming another is NOT_FOUND, as if it did not exist.
pub fn named_participant(caller: &Caller, named: &str) -> Result<String, ApiError> {
    match caller.scope() {
        None => Ok(named.to_owned()),
        Some(own) if named.is_empty() || named == own => Ok(own.to_owned()),
        Some(_) => Err(ApiError::NotFound { resource: "participant", id: named.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_every_service_has_an_entry_and_unknown_ones_are_operator_only() {
        assert_eq!(access("/puente.v1.Nope/Nothing"), Access::Operator);
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Public);
        assert_eq!(access("/puente.v1.FxService/SetRates"), Access::Operator);
        assert_eq!(access("/puente.v1.LedgerService/GetAccount"), Access::Authenticated);
    }

    proptest::proptest! {
        #[test]
        fn any_authorization_header_gives_a_key_or_an_error(value in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(key) = bearer_key(&value) {
                proptest::prop_assert!(!key.is_empty() && value.len() <= AUTHORIZATION_LEN_MAX);
                proptest::prop_assert!(value.starts_with(b"Bearer ") || value.starts_with(b"bearer "));
            }
        }

        #[test]
        fn a_well_formed_header_gives_its_key(key in "[a-z0-9_]{1,200}") {
            let header = format!("Bearer {key}");
            proptest::prop_assert_eq!(bearer_key(header.as_bytes()).ok(), Some(key.as_str()));
        }
    }

    #[test]
    fn limits_refuse_above_the_burst_and_above_the_concurrency() {
        let limits = Limits::new(LimitsConfig { requests_per_second: 1, burst: 3, concurrent_requests: 2 });
        let caller = |p: &str| Caller { participant: p.to_owned(), role: Role::Participant, key_id: None };
        let a_caller = caller("a");
        let a = limits.admit(&a_caller).unwrap();
        let _b = limits.admit(&a_caller).unwrap();
        // Two in flight: the third waits for one to finish.
        assert!(matches!(
            limits.admit(&a_caller),
            Err(ApiError::RateLimited { limit: "concurrent_requests", .. })
        ));
        drop(a);
        // The burst of 3 is spent (the refused one counted): now the rate refuses.
        assert!(matches!(
            limits.admit(&a_caller),
            Err(ApiError::RateLimited { limit: "requests_per_second", .. })
        ));
        // Another participant is not affected.
        assert!(limits.admit(&caller("b")).is_ok());
    }
}
