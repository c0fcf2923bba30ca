//! Authentication, the role table, and per-participant rate and concurrency limits.
//!
//! One tower layer in front of every service: it finds the caller (an API key in
//! `authorization: Bearer <key>`, or a client certificate bound to a participant under mutual
//! TLS), checks the method against [`access`] (the one table of who may call what), applies
//! the caller's limits, and hands the [`Caller`] to the handlers in the request extensions.
//! It also puts the request body behind the wire guard (`crate::wire`), which bounds every
//! repeated field before anything decodes it and charges the caller's cost limits: bytes
//! from each message's length prefix before the message is read, events (its top-level
//! entries: transfers, accounts, rates) once it has been walked and before it is decoded.
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

pub use crate::access::{Access, access};
use crate::error::ApiError;
use crate::wire::{Charge, Guard, GuardedBody, Schema};
use crate::{MESSAGE_BYTES_MAX, ServerError};

/// Longest `authorization` header value accepted, in bytes.
pub const AUTHORIZATION_LEN_MAX: usize = 256;
/// Most participants with a concurrency gate in memory (the registry's own limit).
pub const GATES_MAX: usize = puente_ledger::identity::PARTICIPANTS_MAX;
/// When to retry after a concurrency refusal (something in flight has to end first).
pub const CONCURRENCY_RETRY_MS: u64 = 10;
/// When to retry a charge larger than its whole burst (only a misconfigured server: see
/// [`LimitsConfig::validate`]).
pub const BURST_EXCEEDED_RETRY_MS: u64 = 1_000;
/// Highest sustained rate of any limit: GCRA here works in whole nanoseconds per unit.
pub const RATE_PER_SECOND_MAX: u32 = 1_000_000_000;
/// Highest `concurrent_requests`.
pub const CONCURRENT_REQUESTS_MAX: u32 = 1_000_000;

/// Per-participant limits (operators included: a runaway script is a runaway script), by
/// request count and by cost: events (the entries of a request's top-level repeated fields,
/// at least 1 per message) and bytes (each message's wire size). Every key is optional in the
/// `[limits]` table; a missing one keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained requests per second per participant.
    pub requests_per_second: u32,
    /// Requests a participant may make at once above the sustained rate.
    pub burst: u32,
    /// Requests (streams included, for as long as they are open) in flight per participant.
    pub concurrent_requests: u32,
    /// Sustained events per second per participant.
    pub events_per_second: u32,
    /// Events a participant may send at once above the sustained rate (at least one batch).
    pub burst_events: u32,
    /// Events of requests in flight per participant (at least one batch).
    pub concurrent_events: u32,
    /// Sustained request bytes per second per participant.
    pub bytes_per_second: u32,
    /// Request bytes a participant may send at once above the sustained rate (at least the
    /// largest message).
    pub burst_bytes: u32,
    /// Request bytes in flight per participant (at least the largest message).
    pub concurrent_bytes: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        const MIB: u32 = 1024 * 1024;
        LimitsConfig {
            requests_per_second: 2_000,
            burst: 4_000,
            concurrent_requests: 256,
            // Four full batches of 8,189 a second, eight at once, four in flight.
            events_per_second: 32_768,
            burst_events: 65_536,
            concurrent_events: 32_768,
            // 32 MiB/s (a few full batches of typical transfers, one with maximal metadata);
            // two of the largest messages at once or in flight.
            bytes_per_second: 32 * MIB,
            burst_bytes: 128 * MIB,
            concurrent_bytes: 128 * MIB,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        let all = [
            c.requests_per_second,
            c.burst,
            c.concurrent_requests,
            c.events_per_second,
            c.burst_events,
            c.concurrent_events,
            c.bytes_per_second,
            c.burst_bytes,
            c.concurrent_bytes,
        ];
        if all.contains(&0) {
            return Err("limits: every limit must be at least 1".into());
        }
        if c.concurrent_requests > CONCURRENT_REQUESTS_MAX {
            return Err(format!("limits: concurrent_requests must be at most {CONCURRENT_REQUESTS_MAX}"));
        }
        if [c.requests_per_second, c.events_per_second, c.bytes_per_second]
            .iter()
            .any(|r| *r > RATE_PER_SECOND_MAX)
        {
            return Err(format!("limits: every per-second rate must be at most {RATE_PER_SECOND_MAX}"));
        }
        let batch = puente_ledger::BATCH_EVENTS_MAX as u64;
        if u64::from(c.burst_events.min(c.concurrent_events)) < batch {
            return Err(format!(
                "limits: burst_events and concurrent_events must be at least {batch} (one batch)"
            ));
        }
        let largest = MESSAGE_BYTES_MAX as u64;
        if u64::from(c.burst_bytes.min(c.concurrent_bytes)) < largest {
            return Err(format!(
                "limits: burst_bytes and concurrent_bytes must be at least {largest} (the largest message)"
            ));
        }
        Ok(())
    }
}

/// What a request is charged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    Events,
    Bytes,
}

/// One participant's concurrency gates; `participant` keys its rate limiters.
struct Gate {
    participant: String,
    requests: Arc<Semaphore>,
    events: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl Gate {
    fn idle(&self, config: &LimitsConfig) -> bool {
        self.requests.available_permits() == config.concurrent_requests as usize
            && self.events.available_permits() == config.concurrent_events as usize
            && self.bytes.available_permits() == config.concurrent_bytes as usize
    }
}

/// The caller's limits: GCRA rate limiters keyed by participant (requests, events, bytes) and
/// three semaphores each (requests, events and bytes in flight).
pub struct Limits {
    config: LimitsConfig,
    requests: DefaultKeyedRateLimiter<String>,
    events: DefaultKeyedRateLimiter<String>,
    bytes: DefaultKeyedRateLimiter<String>,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("config", &self.config).finish()
    }
}

/// The permits a request holds: its request slot, and the events and bytes of the message
/// being served. Shared by the request body (which takes them) and the response body (which
/// keeps them until the response ends).
#[derive(Default)]
pub struct Held(Mutex<HeldPermits>);

#[derive(Default)]
struct HeldPermits {
    _request: Option<OwnedSemaphorePermit>,
    events: Option<OwnedSemaphorePermit>,
    bytes: Option<OwnedSemaphorePermit>,
}

impl Held {
    fn with<T>(&self, f: impl FnOnce(&mut HeldPermits) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

fn rate_limiter(per_second: u32, burst: u32) -> DefaultKeyedRateLimiter<String> {
    let per_second = NonZeroU32::new(per_second.min(RATE_PER_SECOND_MAX)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

fn wait_ms(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    let wait =
        not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
    wait.as_millis().max(1) as u64
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            requests: rate_limiter(config.requests_per_second, config.burst),
            events: rate_limiter(config.events_per_second, config.burst_events),
            bytes: rate_limiter(config.bytes_per_second, config.burst_bytes),
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn gate(&self, participant: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(gate) = gates.get(participant) {
            return gate.clone();
        }
        if gates.len() >= GATES_MAX {
            // Only registered participants get here, so this is a full registry: drop idle gates.
            gates.retain(|_, gate| !gate.idle(&self.config));
        }
        let c = &self.config;
        let gate = Arc::new(Gate {
            participant: participant.to_owned(),
            requests: Arc::new(Semaphore::new(c.concurrent_requests as usize)),
            events: Arc::new(Semaphore::new(c.concurrent_events as usize)),
            bytes: Arc::new(Semaphore::new(c.concurrent_bytes as usize)),
        });
        gates.insert(participant.to_owned(), gate.clone());
        gate
    }

    /// Admits one request of `caller` by count, or says how long to wait.
    fn admit(&self, caller: &Caller) -> Result<(Arc<Gate>, OwnedSemaphorePermit), ApiError> {
        let participant = &caller.participant;
        if let Err(not_until) = self.requests.check_key(participant) {
            return Err(ApiError::RateLimited {
                limit: "requests_per_second",
                retry_after_ms: wait_ms(not_until),
            });
        }
        let gate = self.gate(participant);
        let permit = gate.requests.clone().try_acquire_owned().map_err(|_| ApiError::RateLimited {
            limit: "concurrent_requests",
            retry_after_ms: CONCURRENCY_RETRY_MS,
        })?;
        Ok((gate, permit))
    }

    /// Charges `n` of `cost` to the gate's participant: first in flight (a permit held until
    /// the response ends), then the rate.
    fn charge(&self, gate: &Gate, cost: Cost, n: u32) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let Some(n) = NonZeroU32::new(n) else { return Ok(None) };
        let (semaphore, limiter, in_flight, rate, burst) = match cost {
            Cost::Events => {
                (&gate.events, &self.events, "concurrent_events", "events_per_second", "burst_events")
            }
            Cost::Bytes => (&gate.bytes, &self.bytes, "concurrent_bytes", "bytes_per_second", "burst_bytes"),
        };
        let permit = semaphore
            .clone()
            .try_acquire_many_owned(n.get())
            .map_err(|_| ApiError::RateLimited { limit: in_flight, retry_after_ms: CONCURRENCY_RETRY_MS })?;
        match limiter.check_key_n(&gate.participant, n) {
            Ok(Ok(())) => Ok(Some(permit)),
            Ok(Err(not_until)) => {
                Err(ApiError::RateLimited { limit: rate, retry_after_ms: wait_ms(not_until) })
            }
            // More than the burst at once: the configuration forbids it (validate), so this is
            // only a misconfigured server.
            Err(_) => Err(ApiError::RateLimited { limit: burst, retry_after_ms: BURST_EXCEEDED_RETRY_MS }),
        }
    }
}

/// What the wire guard charges one request's messages to.
struct Charger {
    limits: Arc<Limits>,
    gate: Arc<Gate>,
    held: Arc<Held>,
}

impl Charge for Charger {
    fn bytes(&self, bytes: u32) -> Result<(), ApiError> {
        // The message before this one (a client stream) has been read: its bytes are freed.
        self.held.with(|held| held.bytes = None);
        let permit = self.limits.charge(&self.gate, Cost::Bytes, bytes)?;
        self.held.with(|held| held.bytes = permit);
        Ok(())
    }

    fn events(&self, events: u32) -> Result<(), ApiError> {
        self.held.with(|held| held.events = None);
        let permit = self.limits.charge(&self.gate, Cost::Events, events)?;
        self.held.with(|held| held.events = permit);
        Ok(())
    }
}

/// The layer: `Server::builder().layer(AuthLayer::new(ledger, limits))`.
#[derive(Clone)]
pub struct AuthLayer {
    ledger: Ledger,
    limits: Arc<Limits>,
    schema: &'static Schema,
}

impl AuthLayer {
    /// Fails only if the API has a repeated request field without a limit (`wire`).
    pub fn new(ledger: Ledger, limits: LimitsConfig) -> Result<AuthLayer, ServerError> {
        let schema = crate::wire::schema().map_err(ServerError::Wire)?;
        Ok(AuthLayer { ledger, limits: Arc::new(Limits::new(limits)), schema })
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, ledger: self.ledger.clone(), limits: self.limits.clone(), schema: self.schema }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    ledger: Ledger,
    limits: Arc<Limits>,
    schema: &'static Schema,
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

/// Finds the caller of `request` (without deciding whether it may call the method). One
/// `authorization` header at most; under mutual TLS, a key and a bound client certificate
/// must name the same participant (a certificate bound to nobody does not count).
fn authenticate<B>(ledger: &Ledger, request: &http::Request<B>) -> Result<Caller, ApiError> {
    let credentials = ledger.credentials();
    let mut headers = request.headers().get_all(http::header::AUTHORIZATION).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(ApiError::Unauthenticated("more than one authorization header: send exactly one"));
    }
    let by_certificate = peer_certificate(request).map(|cert| credentials.by_certificate(&cert));
    if let Some(value) = header {
        let key = bearer_key(value.as_bytes())?;
        let caller = credentials
            .by_key(&key_digest(key))
            .cloned()
            .ok_or(ApiError::Unauthenticated("unknown or revoked API key"))?;
        if let Some(Some(bound)) = by_certificate
            && bound.participant != caller.participant
        {
            return Err(ApiError::Unauthenticated(
                "the API key and the client certificate belong to different participants",
            ));
        }
        return Ok(caller);
    }
    if let Some(bound) = by_certificate {
        return bound
            .cloned()
            .ok_or(ApiError::Unauthenticated("the client certificate is not bound to a participant"));
    }
    Err(ApiError::Unauthenticated("no credentials: send `authorization: Bearer <api key>`"))
}

/// What the layer decided for one request: the guard of its body, and the permits it holds.
fn admit<B>(
    ledger: &Ledger,
    limits: &Arc<Limits>,
    schema: &'static Schema,
    request: &mut http::Request<B>,
) -> Result<(Guard, Option<Arc<Held>>), ApiError> {
    let path = request.uri().path();
    let open = |schema: &'static Schema, path: &str, charge: Option<Box<dyn Charge>>| {
        schema.method(path).map(|method| Guard::new(schema, method, charge)).ok_or(ApiError::UnknownMethod)
    };
    match access(path) {
        Access::Public => Ok((open(schema, path, None)?, None)),
        Access::Bootstrap => {
            if !remote_addr(request).is_some_and(|addr| addr.ip().is_loopback()) {
                return Err(ApiError::PermissionDenied("bootstrap is accepted only from a loopback address"));
            }
            if ledger.credentials().operators() > 0 {
                return Err(ApiError::PermissionDenied(
                    "bootstrap is over: an operator exists; an operator creates participants",
                ));
            }
            Ok((open(schema, path, None)?, None))
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
            let method = schema.method(path).ok_or(ApiError::UnknownMethod)?;
            let (gate, permit) = limits.admit(&caller)?;
            let held = Arc::new(Held::default());
            held.with(|h| h._request = Some(permit));
            let charger = Charger { limits: limits.clone(), gate, held: held.clone() };
            request.extensions_mut().insert(caller);
            Ok((Guard::new(schema, method, Some(Box::new(charger))), Some(held)))
        }
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Auth<S>
where
    S: tower_service::Service<http::Request<GuardedBody<ReqBody>>, Response = http::Response<ResBody>>,
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
        match admit(&self.ledger, &self.limits, self.schema, &mut request) {
            Ok((guard, held)) => {
                let request = request.map(|body| GuardedBody::new(body, guard));
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await?;
                    Ok(response.map(|inner| PermitBody { inner, _held: held }))
                })
            }
            Err(error) => {
                let status: tonic::Status = error.into();
                let response = status.into_http::<ResBody>();
                Box::pin(async move { Ok(response.map(|inner| PermitBody { inner, _held: None })) })
            }
        }
    }
}

/// A response body that holds the caller's permits until the response ends (so an open
/// stream counts against the limits for as long as it is open).
pub struct PermitBody<B> {
    inner: B,
    _held: Option<Arc<Held>>,
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

/// The caller and the body of a request: the opening of every handler that needs both.
pub fn caller_and_body<T>(request: tonic::Request<T>) -> Result<(Caller, T), ApiError> {
    let caller = caller(&request)?;
    Ok((caller, request.into_inner()))
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
        assert_eq!(access("/puente.v1.OperationsService/GetServerStatus"), Access::Operator);
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

    fn caller(p: &str) -> Caller {
        Caller { participant: p.to_owned(), role: Role::Participant, key_id: None }
    }

    #[test]
    fn limits_refuse_above_the_burst_and_above_the_concurrency() {
        let config = LimitsConfig {
            requests_per_second: 1,
            burst: 3,
            concurrent_requests: 2,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(config);
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

    #[test]
    fn cost_is_charged_in_flight_then_by_rate_and_freed_when_the_request_ends() {
        let config = LimitsConfig {
            events_per_second: 1,
            burst_events: 10_000,
            concurrent_events: 9_000,
            bytes_per_second: 1,
            burst_bytes: 1_200,
            concurrent_bytes: 600,
            ..LimitsConfig::default()
        };
        let limits = Arc::new(Limits::new(config));
        let charger = |p: &str| {
            let (gate, permit) = limits.admit(&caller(p)).unwrap();
            let held = Arc::new(Held::default());
            held.with(|h| h._request = Some(permit));
            (Charger { limits: limits.clone(), gate, held: held.clone() }, held)
        };
        let (first, first_held) = charger("a");
        first.events(8_189).unwrap();
        first.bytes(500).unwrap();
        // In flight: 8,189 of 9,000 events and 500 of 600 bytes are taken until `first` ends.
        let (second, _second_held) = charger("a");
        let refused = |r: Result<(), ApiError>| match r {
            Err(ApiError::RateLimited { limit, .. }) => limit,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(second.events(812)), "concurrent_events");
        assert_eq!(refused(second.bytes(101)), "concurrent_bytes");
        // The next message of the same stream frees the one before it.
        first.bytes(550).unwrap();
        drop(first);
        drop(first_held);
        // Freed; now the rates refuse: 10,000 - 8,189 events and 1,200 - 1,050 bytes are left.
        assert_eq!(refused(second.events(1_812)), "events_per_second");
        assert_eq!(refused(second.bytes(151)), "bytes_per_second");
        second.events(1_811).unwrap();
        second.bytes(150).unwrap();
        // Another participant has its own budget.
        let (other, _) = charger("b");
        other.events(8_189).unwrap();
        other.bytes(600).unwrap();
    }

    #[test]
    fn the_defaults_are_valid_and_a_batch_must_fit() {
        assert_eq!(LimitsConfig::default().validate(), Ok(()));
        let small = LimitsConfig { burst_events: 8_188, ..LimitsConfig::default() };
        assert!(small.validate().unwrap_err().contains("burst_events"));
        let small = LimitsConfig { concurrent_bytes: 1 << 20, ..LimitsConfig::default() };
        assert!(small.validate().unwrap_err().contains("concurrent_bytes"));
        let parsed: LimitsConfig = serde_json::from_str(r#"{"requests_per_second": 5}"#).unwrap();
        assert_eq!(parsed, LimitsConfig { requests_per_second: 5, ..LimitsConfig::default() });
    }
}
