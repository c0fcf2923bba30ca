//! Puente's gRPC server: the ledger, participant, holder, FX, settlement and operations
//! services, the standard health service, server reflection (v1 and v1alpha), the wire guard
//! and request limits, and tracing spans with request ids. Each domain has a desk (no
//! protobuf: `fx_desk`, `settlement_desk`) and a wire module beside it (`*_service`); every
//! gRPC status is decided in `error`.

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod access;
pub mod auth;
pub mod codec;
pub mod convert;
pub mod error;
pub mod fx_desk;
pub mod fx_service;
pub mod holder_desk;
pub mod holder_service;
pub mod ledger_service;
pub mod metrics;
pub mod operations_service;
pub mod participant_service;
pub mod reconcile;
pub mod replication;
pub mod settlement_desk;
pub mod settlement_metrics;
pub mod settlement_schedule;
pub mod settlement_service;
pub mod wire;

/// The server side of the puente.v1 services, generated here (build.rs) with this crate's
/// codec; the messages are `puente_proto::v1`'s.
pub mod grpc {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("puente.v1");
}

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use puente_ledger::{Ledger, LedgerConfig};
use puente_proto::v1 as pb;
use tokio::net::TcpListener;

pub use error::{ApiError, ERROR_DOMAIN, Violation};

/// Largest request or response message: 64 MiB (a full batch of 8,189 transfers with maximal
/// metadata is ~40 MiB).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest request message of every other service (participants, holders, settlement):
/// tonic's default, 4 MiB.
pub const CONTROL_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Methods whose requests may exceed their service's limit, with their own: a reconciliation
/// carries up to `RECONCILIATION_BYTES_MAX` of bank documents (plus 1 MiB of framing). The
/// wire guard enforces it per method before anything is decoded.
pub const METHOD_MESSAGE_BYTES_MAX: &[(&str, usize)] = &[(
    "/puente.v1.SettlementService/ReconcileStatements",
    puente_settlement::reconcile::RECONCILIATION_BYTES_MAX + 1024 * 1024,
)];
/// Largest request message of the settlement service as tonic sees it: the largest of its
/// methods (the wire guard holds every other method to [`CONTROL_MESSAGE_BYTES_MAX`]).
const SETTLEMENT_MESSAGE_BYTES_MAX: usize =
    puente_settlement::reconcile::RECONCILIATION_BYTES_MAX + 1024 * 1024;
/// Largest request message of what may be called without credentials (health, reflection,
/// the operator's bootstrap): all tiny.
pub const UNAUTHENTICATED_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// The services whose requests may be up to [`MESSAGE_BYTES_MAX`].
pub const BULK_SERVICES: &[&str] = &["puente.v1.LedgerService", "puente.v1.FxService"];
/// Most requests in flight per connection.
pub const CONCURRENCY_PER_CONNECTION_MAX: usize = 256;
/// Most concurrent HTTP/2 streams per connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1_024;
/// Longest a stopping server waits for the ledger's final snapshot.
const STOP_SNAPSHOT_WAIT_MS: u64 = 30_000;
/// Slowest unary request before it is cut off.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Ledger(#[from] puente_ledger::LedgerError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("FX desk: {0}")]
    Fx(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("limits: {0}")]
    Limits(String),
    #[error("recovery: {0}")]
    Recovery(String),
    #[error("wire guard: {0}")]
    Wire(String),
}

/// Where the server's TLS material is (PEM files). With `client_ca_path`, clients must present
/// a certificate signed by that CA (mutual TLS); a certificate bound to a participant
/// (`puente participants bind-cert`) then authenticates without an API key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
    #[serde(default)]
    pub client_ca_path: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// Reads the PEM files into tonic's TLS configuration.
    pub fn load(&self) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", path.display())))
        };
        let identity = tonic::transport::Identity::from_pem(read(&self.cert_path)?, read(&self.key_path)?);
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_path {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(config)
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub ledger: LedgerConfig,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    pub fx: fx_desk::FxConfig,
    /// Settlement windows: fees for the savings report, the cutoff schedule.
    pub settlement: settlement_desk::SettlementConfig,
    /// Per-participant rate and concurrency limits.
    pub limits: auth::LimitsConfig,
    /// TLS (and mutual TLS); `None`: plaintext (loopback or behind a TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
    /// The personal-data keyring (AES-256-GCM); `None`: holder requests are refused.
    pub pii_keyring: Option<std::sync::Arc<puente_kyc::pii::Keyring>>,
    /// The journal of record in PostgreSQL (several nodes, one leader); `None`: the local
    /// journal is the record.
    pub replication: Option<replication::ReplicationConfig>,
}

/// Services beyond the ledger, each optional (tests and benchmarks may serve the ledger alone).
#[derive(Default, Clone)]
pub struct Extras {
    pub fx: Option<std::sync::Arc<fx_desk::FxDesk>>,
    /// The settlement service is always served; this configures it.
    pub settlement: settlement_desk::SettlementConfig,
    pub limits: auth::LimitsConfig,
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    pub pii_keyring: Option<std::sync::Arc<puente_kyc::pii::Keyring>>,
}

/// Opens the ledger (recovery), binds, prints `listening on ADDR` on stdout, and serves until
/// `shutdown` resolves; then stops accepting, finishes in-flight requests and returns.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
    let tls = config.tls.as_ref().map(TlsFiles::load).transpose()?;
    config.limits.validate().map_err(ServerError::Limits)?;
    let mut ledger_config = config.ledger.clone();
    // Bound first: a node of a cluster advertises the address it actually listens on.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    if let Some(replication) = &config.replication {
        let store = replication::PgRecordStore::connect(replication, &addr.to_string())
            .await
            .map_err(ServerError::Recovery)?;
        // A node with an empty data directory starts from the store's newest snapshot.
        puente_ledger::replica::join_from_snapshot(&ledger_config.data_dir, &store).await?;
        ledger_config.record_store = Some(std::sync::Arc::new(store));
    }
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(ledger_config))
        .await
        .map_err(|e| ServerError::Recovery(format!("recovery task failed: {e}")))??;
    let metrics_task = match config.metrics_listen {
        Some(metrics_addr) => {
            let metrics_listener = metrics::bind(metrics_addr).await?;
            let bound = metrics_listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr: metrics_addr, source })?;
            tracing::info!(addr = %bound, "metrics at http://{bound}{}", metrics::METRICS_PATH);
            println!("metrics on {bound}");
            Some(tokio::spawn(metrics::serve_http(metrics_listener, ledger.clone())))
        }
        None => None,
    };
    if let Some(replication) = &config.replication {
        // Listening is announced once the node knows whether it leads (within two leases).
        let role = ledger.role_settled(Duration::from_millis(replication.lease_ms.saturating_mul(2))).await;
        tracing::info!(?role, "node role");
    }
    let recovery = ledger.recovery();
    tracing::info!(%addr, data_dir = %config.ledger.data_dir.display(), journal_entries = recovery.journal_entries,
        accounts = recovery.accounts, recovery_ms = recovery.elapsed_ms, "puente serving");
    println!("listening on {addr}");
    let desk = fx_desk::FxDesk::open(ledger.clone(), &config.ledger.data_dir, config.fx.clone())
        .await
        .map_err(|e| ServerError::Fx(e.to_string()))?;
    let desk = std::sync::Arc::new(desk);
    let prune_task = tokio::spawn(fx_desk::prune_periodically(desk.clone()));
    let extras = Extras {
        fx: Some(desk),
        settlement: config.settlement.clone(),
        limits: config.limits,
        tls,
        pii_keyring: config.pii_keyring.clone(),
    };
    let result = serve_with(ledger.clone(), extras, listener, shutdown).await;
    // Every request has been answered: the index catches up and persists, so the next start
    // replays nothing into it.
    if let Err(error) = ledger.flush_index().await {
        tracing::warn!(%error, "could not persist the index at shutdown (the next start replays into it)");
    }
    if let Some(task) = metrics_task {
        task.abort();
        let _ = task.await;
    }
    prune_task.abort();
    // The task holds the desk: let it go, so the desk's store is flushed as it closes.
    let _ = prune_task.await;
    // The last handle goes: the writer writes its final snapshot and stops. Bounded: a stop
    // is never held up for long by it (a start replays whatever it did not write).
    let stopped = ledger.stopped();
    drop(ledger);
    if tokio::time::timeout(std::time::Duration::from_millis(STOP_SNAPSHOT_WAIT_MS), stopped).await.is_err() {
        tracing::warn!("the ledger writer did not stop in time; the next start replays the journal's tail");
    }
    result
}

/// Serves an opened ledger on a bound listener.
pub async fn serve(
    ledger: Ledger,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    serve_with(ledger, Extras::default(), listener, shutdown).await
}

/// Serves an opened ledger and the given extra services on a bound listener.
/// How often the health watcher looks at the ledger.
const HEALTH_POLL_MS: u64 = 500;

/// The health service's name for "this node takes writes": SERVING only on the leader (and on
/// a single node), for load balancers and Kubernetes readiness.
pub const LEADER_HEALTH_SERVICE: &str = "puente.v1.Leader";

/// Health follows the ledger: NOT_SERVING (the ledger service and the whole server) once a
/// durable write has failed or the journal's history was found altered; `puente.v1.Leader`
/// follows the node's role.
fn spawn_health_watcher(
    ledger: Ledger,
    reporter: tonic_health::server::HealthReporter,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut roles = ledger.role_changes();
        loop {
            let leads = roles.borrow_and_update().writes() && ledger.is_healthy();
            metrics::set_node_leader(leads);
            let status = if leads {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status(LEADER_HEALTH_SERVICE, status).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(HEALTH_POLL_MS)) => {}
                _ = roles.changed() => continue,
            }
            if !ledger.is_healthy() {
                reporter
                    .set_service_status(LEADER_HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
                    .await;
                reporter
                    .set_not_serving::<grpc::ledger_service_server::LedgerServiceServer<ledger_service::LedgerApi>>()
                    .await;
                reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                break;
            }
        }
    })
}

/// The span every request runs in: its method and the client's `x-request-id` (at most 64
/// characters); the auth layer fills in the participant and the key id.
fn request_span(request: &http::Request<()>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect::<String>())
        .unwrap_or_default();
    tracing::info_span!(
        "grpc",
        method = %request.uri().path(),
        request_id = %request_id,
        participant = tracing::field::Empty,
        key_id = tracing::field::Empty,
    )
}

/// The FX house settles like any participant, on its system-defined profile: set now, or, on a
/// standby, once it leads (with the FX desk's house accounts).
async fn set_up_fx_house(
    ledger: &Ledger,
    settlement: &settlement_desk::SettlementDesk,
    fx: &Option<std::sync::Arc<fx_desk::FxDesk>>,
) -> Result<(), ServerError> {
    if ledger.role().writes() {
        settlement.ensure_house_profile().await.map_err(|e| ServerError::Fx(e.to_string()))?;
    } else {
        let (settlement, fx, mut roles) = (settlement.clone(), fx.clone(), ledger.role_changes());
        tokio::spawn(async move {
            while roles.wait_for(|role| role.writes()).await.is_ok() {
                let house_accounts = match &fx {
                    Some(fx) => fx.open_house_accounts().await.map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                match house_accounts.and(settlement.ensure_house_profile().await.map_err(|e| e.to_string())) {
                    Ok(()) => return,
                    Err(error) => tracing::warn!(%error, "cannot set up the FX house; retrying when leading"),
                }
                if roles.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// Reports `puente.v1.Leader` before the first request is served, so that a health check never
/// finds it unknown, and starts the watcher that keeps it current.
async fn report_leader_health(
    ledger: &Ledger,
    health_reporter: &tonic_health::server::HealthReporter,
) -> tokio::task::JoinHandle<()> {
    let leads = ledger.role().writes() && ledger.is_healthy();
    let status =
        if leads { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
    health_reporter.set_service_status(LEADER_HEALTH_SERVICE, status).await;
    spawn_health_watcher(ledger.clone(), health_reporter.clone())
}

/// Adds the holder, participant, settlement and operations services, and the FX service if
/// there is an FX desk.
fn add_api_services<L>(
    router: tonic::transport::server::Router<L>,
    ledger: &Ledger,
    pii_keyring: Option<std::sync::Arc<puente_kyc::pii::Keyring>>,
    settlement: settlement_desk::SettlementDesk,
    started_at_ns: u64,
    fx: Option<std::sync::Arc<fx_desk::FxDesk>>,
) -> tonic::transport::server::Router<L> {
    router
        .add_service(
            grpc::holder_service_server::HolderServiceServer::new(holder_service::HolderApi::new(
                ledger.clone(),
                pii_keyring,
            ))
            .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX),
        )
        .add_service(
            grpc::participant_service_server::ParticipantServiceServer::new(
                participant_service::ParticipantApi::new(ledger.clone()),
            )
            .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX),
        )
        .add_service(
            grpc::settlement_service_server::SettlementServiceServer::new(
                settlement_service::SettlementApi::new(settlement),
            )
            .max_decoding_message_size(SETTLEMENT_MESSAGE_BYTES_MAX),
        )
        .add_service(
            grpc::operations_service_server::OperationsServiceServer::new(
                operations_service::OperationsApi::new(ledger.clone(), started_at_ns),
            )
            .max_decoding_message_size(CONTROL_MESSAGE_BYTES_MAX),
        )
        .add_optional_service(fx.map(|desk| {
            grpc::fx_service_server::FxServiceServer::new(fx_service::FxApi::new(desk))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX)
        }))
}

/// gRPC reflection (v1 and v1alpha) over Puente's API and the health service.
fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServerError,
> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    Ok((reflection_v1, reflection_v1alpha))
}

pub async fn serve_with(
    ledger: Ledger,
    extras: Extras,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let started_at_ns = puente_ledger::now_ns();
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    metrics::check()?;
    let auth_layer = auth::AuthLayer::new(ledger.clone(), extras.limits)?;
    metrics::observe_ledger(&ledger);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<grpc::ledger_service_server::LedgerServiceServer<ledger_service::LedgerApi>>()
        .await;
    if extras.fx.is_some() {
        health_reporter.set_serving::<grpc::fx_service_server::FxServiceServer<fx_service::FxApi>>().await;
    }
    let settlement = settlement_desk::SettlementDesk::new(ledger.clone(), extras.settlement.clone())
        .with_fx(extras.fx.clone());
    set_up_fx_house(&ledger, &settlement, &extras.fx).await?;
    let scheduler = settlement_schedule::spawn_scheduler(settlement.clone());
    health_reporter
        .set_serving::<grpc::settlement_service_server::SettlementServiceServer<settlement_service::SettlementApi>>()
        .await;
    let (reflection_v1, reflection_v1alpha) = reflection_services()?;
    let ledger_service = grpc::ledger_service_server::LedgerServiceServer::new(
        ledger_service::LedgerApi::new(ledger.clone(), stopping.clone()),
    )
    .max_decoding_message_size(MESSAGE_BYTES_MAX)
    .max_encoding_message_size(MESSAGE_BYTES_MAX);

    let watcher = report_leader_health(&ledger, &health_reporter).await;

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = extras.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION_MAX)
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .tcp_nodelay(true)
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .trace_fn(request_span)
        .layer(metrics::GrpcMetricsLayer)
        .layer(auth_layer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ledger_service);
    let result =
        add_api_services(router, &ledger, extras.pii_keyring.clone(), settlement, started_at_ns, extras.fx)
            .serve_with_incoming_shutdown(
                // Small responses must not wait for delayed ACKs (Nagle): no-delay on every
                // accepted connection, not only on listeners tonic binds itself.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await;
    // Aborted and awaited: the tasks (and the ledger handles they hold) are gone on return.
    watcher.abort();
    let _ = watcher.await;
    scheduler.abort();
    let _ = scheduler.await;
    result?;
    tracing::info!("server stopped; every acknowledged write is in the journal");
    Ok(())
}
