//! Puente's gRPC server: the LedgerService, the standard health service, server reflection
//! (v1 and v1alpha), request limits and tracing spans with request ids.

pub mod convert;
pub mod error;
pub mod ledger_service;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use puente_ledger::{Ledger, LedgerConfig};
use puente_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use error::{ApiError, ERROR_DOMAIN, Violation};

/// Largest request or response message: 64 MiB (a full batch of 8,189 transfers with maximal
/// metadata is ~40 MiB).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most requests in flight per connection.
pub const CONCURRENCY_PER_CONNECTION_MAX: usize = 256;
/// Most concurrent HTTP/2 streams per connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1_024;
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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub ledger: LedgerConfig,
}

/// Opens the ledger (recovery), binds, prints `listening on ADDR` on stdout, and serves until
/// `shutdown` resolves; then stops accepting, finishes in-flight requests and returns.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
    let ledger_config = config.ledger.clone();
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(ledger_config))
        .await
        .map_err(|e| ServerError::Reflection(format!("recovery task failed: {e}")))??;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let recovery = ledger.recovery();
    tracing::info!(%addr, data_dir = %config.ledger.data_dir.display(), journal_entries = recovery.journal_entries,
        accounts = recovery.accounts, recovery_ms = recovery.elapsed_ms, "puente serving");
    println!("listening on {addr}");
    serve(ledger, listener, shutdown).await
}

/// Serves an opened ledger on a bound listener.
pub async fn serve(
    ledger: Ledger,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::ledger_service_server::LedgerServiceServer<ledger_service::LedgerApi>>()
        .await;
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
    let ledger_service = pb::ledger_service_server::LedgerServiceServer::new(ledger_service::LedgerApi::new(
        ledger.clone(),
        stopping.clone(),
    ))
    .max_decoding_message_size(MESSAGE_BYTES_MAX)
    .max_encoding_message_size(MESSAGE_BYTES_MAX);

    // Health follows the ledger: NOT_SERVING once a durable write has failed.
    let watcher = {
        let ledger = ledger.clone();
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !ledger.is_healthy() {
                    reporter
                        .set_not_serving::<pb::ledger_service_server::LedgerServiceServer<ledger_service::LedgerApi>>()
                        .await;
                    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                    break;
                }
            }
        })
    };

    let result = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION_MAX)
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .tcp_nodelay(true)
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .trace_fn(|request| {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(64).collect::<String>())
                .unwrap_or_default();
            tracing::info_span!("grpc", method = %request.uri().path(), request_id = %request_id)
        })
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ledger_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    watcher.abort();
    result?;
    tracing::info!("server stopped; every acknowledged write is in the journal");
    Ok(())
}
