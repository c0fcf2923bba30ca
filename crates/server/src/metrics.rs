//! Prometheus metrics, served over plain HTTP at `GET /metrics` on their own port
//! (`puente serve --metrics-listen ADDR`; off unless set; 9464 by convention).
//!
//! What is exported (all names start with `puente_`):
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `puente_build_info` | gauge (1) | `version` | the server's version |
//! | `puente_up` | gauge | | 1 while the ledger takes writes, 0 once a durable write failed |
//! | `puente_grpc_requests_total` | counter | `method`, `code` | finished RPCs by method (`puente.v1.LedgerService/CreateTransfers`) and gRPC status (`OK`, `INVALID_ARGUMENT`, ...) |
//! | `puente_grpc_request_duration_seconds` | histogram | `method` | from the request to the end of the response (for a streaming RPC: the life of the stream) |
//! | `puente_commit_group_events` | histogram | | journal ops per group commit (`_count` = group commits) |
//! | `puente_commit_flush_seconds` | histogram | | time to write and `fdatasync` one journal record |
//! | `puente_journal_bytes` | gauge | | size of `journal.log` |
//! | `puente_store_bytes` | gauge | | journal plus sled index on disk |
//! | `puente_feed_subscribers` | gauge | | open transfer feeds (`StreamTransfers`) |
//! | `puente_node_leader` | gauge | | 1 while this node takes writes (the leader of a cluster, or a single node), 0 on a standby |
//! | `puente_settlement_open_windows` | gauge | | settlement windows open now |
//! | `puente_settlement_open_window_transfers` | gauge | `currency` | transfers in the open windows |
//! | `puente_settlement_open_window_gross_minor` | gauge | `currency` | their gross amount, in minor units |
//! | `puente_settlement_last_netting_efficiency_bps` | gauge | | share of the gross that the last netting run saved, in basis points (10,000 = all) |
//! | `puente_settlement_last_run_timestamp_seconds` | gauge | | when the last netting run finished (Unix time) |
//! | `puente_transfers_total` | counter | `result` | transfers submitted through `CreateTransfers`, by per-event result code (`OK`, `EXCEEDS_CREDITS`, `NET_DEBIT_CAP_EXCEEDED`, ...; the ledger's fixed list) |
//! | `puente_rate_limited_total` | counter | `limit` | requests refused by a participant's limits (`requests_per_second`, `concurrent_requests`) |
//! | `puente_settlement_windows` | gauge | `state` | settlement windows in each state but SETTLED (whose count only grows): `OPEN`, `CLOSING`, `CLOSED`, `SETTLING`, `REJECTED`, `ABORTED`, `FAILED` |
//! | `puente_settlement_net_debit_position_minor` | gauge | `participant`, `currency` | a participant's net debit position (what it owes in unconfirmed windows plus pending debits; negative: it is owed), minor units |
//! | `puente_settlement_net_debit_cap_minor` | gauge | `participant`, `currency` | its Net Debit Cap, minor units |
//! | `puente_settlement_reconciliation_exceptions_total` | counter | `kind` | reconciliation exceptions (`MISSING`, `AMOUNT_MISMATCH`, `CURRENCY_MISMATCH`, `DUPLICATE`, `UNKNOWN_ENTRY`, `REJECTED`, `PENDING`, `NOT_HUB_ACCOUNT`) |
//! | `puente_settlement_reconciliation_confirmations_total` | counter | | participants confirmed by reconciliation |
//!
//! The settlement gauges are set by the settlement service through [`set_open_windows`],
//! [`set_open_window_transfers`], [`set_open_window_gross_minor`] and
//! [`set_last_netting_run`]; they read 0 until then. Every setter is cheap, never fails and
//! may be called from any thread.
//!
//! Label values are bounded: `method` takes only the RPCs this server serves (anything else is
//! `unknown`), `code` the 17 gRPC codes, `currency` at most [`CURRENCY_LABELS_MAX`] codes, `result` the
//! ledger's result codes, `limit` two names, `state` seven, `kind` eight, and `participant` the
//! first [`PARTICIPANT_LABELS_MAX`] participants with a settlement profile (by id).
//!
//! Size: the table above, one registration per metric and the HTTP endpoint; about 800 lines
//! with that table, then its tests.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use puente_ledger::Ledger;
use puente_ledger::ledger::CommitObserver;
use tokio::net::TcpListener;

use crate::ServerError;

/// The path metrics are served at.
pub const METRICS_PATH: &str = "/metrics";
/// The conventional metrics port (used by the deploy files and `puente status`).
pub const METRICS_PORT_DEFAULT: u16 = 9464;
/// Most distinct `currency` label values; later ones are dropped (and logged once).
pub const CURRENCY_LABELS_MAX: usize = 64;
/// Most distinct `participant` label values (participants with a settlement profile, by id);
/// later ones are left out of the Net Debit Cap gauges.
pub const PARTICIPANT_LABELS_MAX: usize = 256;
/// Most scrape connections served at once; more wait in the accept queue.
pub const SCRAPE_CONNECTIONS_MAX: usize = 16;
/// Longest a scrape connection may stay open.
pub const SCRAPE_CONNECTION_TIMEOUT_MS: u64 = 10_000;
/// Label for an RPC path this server does not serve.
const UNKNOWN_METHOD: &str = "unknown";

/// RPC latency buckets, 250 µs to 30 s.
const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Group-commit size buckets, 1 to 65,536 ops in powers of 4 (a group holds at most 32,756 events;
/// a settlement call or expiries can add ops).
const GROUP_EVENTS_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1_024.0, 4_096.0, 16_384.0, 65_536.0];
/// Journal flush buckets, 50 µs to 1 s.
const FLUSH_BUCKETS_SECONDS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// RPCs served besides those in `puente_proto`'s descriptor set.
const EXTRA_METHODS: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    group_events: Histogram,
    flush_seconds: Histogram,
    up: IntGauge,
    journal_bytes: IntGauge,
    store_bytes: IntGauge,
    feed_subscribers: IntGauge,
    open_windows: IntGauge,
    node_leader: IntGauge,
    open_window_transfers: IntGaugeVec,
    open_window_gross_minor: IntGaugeVec,
    netting_efficiency_bps: IntGauge,
    last_run_seconds: IntGauge,
    transfers: IntCounterVec,
    rate_limited: IntCounterVec,
    windows: IntGaugeVec,
    ndc_position: IntGaugeVec,
    ndc_cap: IntGaugeVec,
    reconciliation_exceptions: IntCounterVec,
    reconciliation_confirmations: prometheus::IntCounter,
    known_methods: HashSet<String>,
    currencies: Mutex<HashSet<String>>,
}

/// Registered on first use; `Err` only if a definition below is invalid (checked by tests and
/// at server start, see [`check`]).
static METRICS: LazyLock<Result<Metrics, String>> =
    LazyLock::new(|| Metrics::new().map_err(|e| e.to_string()));

impl Metrics {
    #[expect(
        clippy::too_many_lines,
        reason = "one registration per metric, in the order `/metrics` lists them"
    )]
    fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("puente_build_info", "The server's version (always 1)."),
            &["version"],
        )?;
        build_info.get_metric_with_label_values(&[env!("CARGO_PKG_VERSION")])?.set(1);
        let requests = IntCounterVec::new(
            Opts::new("puente_grpc_requests_total", "Finished gRPC requests by method and status code."),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "puente_grpc_request_duration_seconds",
                "gRPC request latency, from the request to the end of the response.",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["method"],
        )?;
        let group_events = Histogram::with_opts(
            HistogramOpts::new("puente_commit_group_events", "Journal ops per group commit.")
                .buckets(GROUP_EVENTS_BUCKETS.to_vec()),
        )?;
        let flush_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "puente_commit_flush_seconds",
                "Time to write and fdatasync one journal record.",
            )
            .buckets(FLUSH_BUCKETS_SECONDS.to_vec()),
        )?;
        let up =
            IntGauge::new("puente_up", "1 while the ledger takes writes; 0 once a durable write failed.")?;
        let journal_bytes = IntGauge::new("puente_journal_bytes", "Size of the journal (journal.log).")?;
        let store_bytes = IntGauge::new("puente_store_bytes", "Journal plus sled index on disk.")?;
        let feed_subscribers =
            IntGauge::new("puente_feed_subscribers", "Open transfer feeds (StreamTransfers).")?;
        let open_windows = IntGauge::new("puente_settlement_open_windows", "Settlement windows open now.")?;
        let node_leader = IntGauge::new(
            "puente_node_leader",
            "1 while this node takes writes (a cluster's leader, or a single node), 0 on a standby.",
        )?;
        let open_window_transfers = IntGaugeVec::new(
            Opts::new("puente_settlement_open_window_transfers", "Transfers in the open settlement windows."),
            &["currency"],
        )?;
        let open_window_gross_minor = IntGaugeVec::new(
            Opts::new(
                "puente_settlement_open_window_gross_minor",
                "Gross amount of the open settlement windows, in minor units.",
            ),
            &["currency"],
        )?;
        let netting_efficiency_bps = IntGauge::new(
            "puente_settlement_last_netting_efficiency_bps",
            "Share of the gross that the last netting run saved, in basis points.",
        )?;
        let last_run_seconds = IntGauge::new(
            "puente_settlement_last_run_timestamp_seconds",
            "When the last netting run finished (Unix time, seconds).",
        )?;
        let transfers = IntCounterVec::new(
            Opts::new(
                "puente_transfers_total",
                "Transfers submitted through CreateTransfers, by result code.",
            ),
            &["result"],
        )?;
        for result in puente_ledger::TransferResult::all() {
            transfers.get_metric_with_label_values(&[result.code()])?;
        }
        let rate_limited = IntCounterVec::new(
            Opts::new("puente_rate_limited_total", "Requests refused by a participant's limits, by limit."),
            &["limit"],
        )?;
        for limit in RATE_LIMITS {
            rate_limited.get_metric_with_label_values(&[limit])?;
        }
        let windows = IntGaugeVec::new(
            Opts::new("puente_settlement_windows", "Settlement windows in each state (SETTLED left out)."),
            &["state"],
        )?;
        for state in WINDOW_STATES {
            windows.get_metric_with_label_values(&[state])?.set(0);
        }
        let ndc_position = IntGaugeVec::new(
            Opts::new(
                "puente_settlement_net_debit_position_minor",
                "A participant's net debit position (positive: it owes), in minor units.",
            ),
            &["participant", "currency"],
        )?;
        let ndc_cap = IntGaugeVec::new(
            Opts::new(
                "puente_settlement_net_debit_cap_minor",
                "A participant's Net Debit Cap, in minor units.",
            ),
            &["participant", "currency"],
        )?;
        let reconciliation_exceptions = IntCounterVec::new(
            Opts::new(
                "puente_settlement_reconciliation_exceptions_total",
                "Reconciliation exceptions, by kind.",
            ),
            &["kind"],
        )?;
        for kind in RECONCILIATION_KINDS {
            reconciliation_exceptions.get_metric_with_label_values(&[kind])?;
        }
        let reconciliation_confirmations = prometheus::IntCounter::new(
            "puente_settlement_reconciliation_confirmations_total",
            "Participants confirmed by reconciliation.",
        )?;
        // Export the built-in currencies from the start (zero until set).
        let mut currencies = HashSet::new();
        for currency in ["USD", "MXN"] {
            open_window_transfers.get_metric_with_label_values(&[currency])?.set(0);
            open_window_gross_minor.get_metric_with_label_values(&[currency])?.set(0);
            currencies.insert(currency.to_owned());
        }
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(group_events.clone()))?;
        registry.register(Box::new(flush_seconds.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(journal_bytes.clone()))?;
        registry.register(Box::new(store_bytes.clone()))?;
        registry.register(Box::new(feed_subscribers.clone()))?;
        registry.register(Box::new(open_windows.clone()))?;
        registry.register(Box::new(node_leader.clone()))?;
        registry.register(Box::new(open_window_transfers.clone()))?;
        registry.register(Box::new(open_window_gross_minor.clone()))?;
        registry.register(Box::new(netting_efficiency_bps.clone()))?;
        registry.register(Box::new(last_run_seconds.clone()))?;
        registry.register(Box::new(transfers.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(windows.clone()))?;
        registry.register(Box::new(ndc_position.clone()))?;
        registry.register(Box::new(ndc_cap.clone()))?;
        registry.register(Box::new(reconciliation_exceptions.clone()))?;
        registry.register(Box::new(reconciliation_confirmations.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            group_events,
            flush_seconds,
            up,
            journal_bytes,
            store_bytes,
            feed_subscribers,
            open_windows,
            node_leader,
            open_window_transfers,
            open_window_gross_minor,
            netting_efficiency_bps,
            last_run_seconds,
            transfers,
            rate_limited,
            windows,
            ndc_position,
            ndc_cap,
            reconciliation_exceptions,
            reconciliation_confirmations,
            known_methods: known_methods(),
            currencies: Mutex::new(currencies),
        })
    }

    /// Whether `currency` may be a label value (a new one is admitted while there is room).
    fn admit_currency(&self, currency: &str) -> bool {
        let Ok(mut seen) = self.currencies.lock() else { return false };
        if seen.contains(currency) {
            return true;
        }
        let plausible = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
        if !plausible || seen.len() >= CURRENCY_LABELS_MAX {
            tracing::warn!(currency, "metrics: currency label refused (not a code, or too many)");
            return false;
        }
        seen.insert(currency.to_owned());
        true
    }
}

/// Every RPC path of the Puente services (from the descriptor set, so new services are
/// included), plus health and reflection, without the leading `/`.
fn known_methods() -> HashSet<String> {
    use prost::Message;
    let mut methods: HashSet<String> = EXTRA_METHODS.iter().map(|m| (*m).to_owned()).collect();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(puente_proto::v1::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    methods.insert(format!("{package}.{service_name}/{}", method.name.unwrap_or_default()));
                }
            }
        }
    }
    methods
}

fn metrics() -> Option<&'static Metrics> {
    METRICS.as_ref().ok()
}

/// Fails if the metric definitions are invalid (never, unless this file is edited wrongly).
pub fn check() -> Result<(), ServerError> {
    METRICS.as_ref().map(|_| ()).map_err(|e| ServerError::Metrics(e.clone()))
}

/// Sets how many settlement windows are open now.
/// Whether this node takes writes now (set by the health watcher on every change of role).
pub fn set_node_leader(leads: bool) {
    if let Some(m) = metrics() {
        m.node_leader.set(i64::from(leads));
    }
}

pub fn set_open_windows(windows: u64) {
    if let Some(m) = metrics() {
        m.open_windows.set(saturating_i64(windows));
    }
}

/// Sets how many transfers the open settlement windows of `currency` (an ISO 4217 code such
/// as "USD") hold.
pub fn set_open_window_transfers(currency: &str, transfers: u64) {
    if let Some(m) = metrics()
        && m.admit_currency(currency)
        && let Ok(gauge) = m.open_window_transfers.get_metric_with_label_values(&[currency])
    {
        gauge.set(saturating_i64(transfers));
    }
}

/// Sets the gross amount of the open settlement windows of `currency`, in minor units
/// (saturates at `i64::MAX`).
pub fn set_open_window_gross_minor(currency: &str, gross_minor: u128) {
    if let Some(m) = metrics()
        && m.admit_currency(currency)
        && let Ok(gauge) = m.open_window_gross_minor.get_metric_with_label_values(&[currency])
    {
        gauge.set(i64::try_from(gross_minor).unwrap_or(i64::MAX));
    }
}

/// Records the last netting run: the share of the gross it saved, in basis points (0 to
/// 10,000; larger values are clamped), and when it finished (Unix seconds).
pub fn set_last_netting_run(efficiency_bps: u32, finished_unix_seconds: u64) {
    set_last_netting_efficiency_bps(efficiency_bps);
    if let Some(m) = metrics() {
        m.last_run_seconds.set(saturating_i64(finished_unix_seconds));
    }
}

/// Sets the share of the gross that the last netting run saved, in basis points (0 to 10,000).
pub fn set_last_netting_efficiency_bps(efficiency_bps: u32) {
    if let Some(m) = metrics() {
        m.netting_efficiency_bps.set(i64::from(efficiency_bps.min(10_000)));
    }
}

/// The counters `puente status` shows (through `OperationsService.GetServerStatus`): read from
/// the same metrics `/metrics` exports, which are kept whether or not they are served.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatusCounters {
    /// Finished RPCs, and those whose status was not OK.
    pub requests: u64,
    pub requests_not_ok: u64,
    /// Journal flushes and their total time.
    pub flushes: u64,
    pub flush_seconds_sum: f64,
    /// The last netting run: basis points saved, and when (0: none since start).
    pub last_netting_efficiency_bps: u32,
    pub last_run_unix_seconds: u64,
}

/// The counters of [`StatusCounters`], now.
pub fn status_counters() -> StatusCounters {
    use prometheus::core::Collector;
    let Some(m) = metrics() else { return StatusCounters::default() };
    let mut counters = StatusCounters {
        flushes: m.flush_seconds.get_sample_count(),
        flush_seconds_sum: m.flush_seconds.get_sample_sum(),
        last_netting_efficiency_bps: u32::try_from(m.netting_efficiency_bps.get()).unwrap_or(0),
        last_run_unix_seconds: u64::try_from(m.last_run_seconds.get()).unwrap_or(0),
        ..StatusCounters::default()
    };
    for family in m.requests.collect() {
        for metric in family.get_metric() {
            let value = metric.get_counter().get_value() as u64;
            counters.requests += value;
            if !metric.get_label().iter().any(|l| l.name() == "code" && l.value() == "OK") {
                counters.requests_not_ok += value;
            }
        }
    }
    counters
}

/// The `limit` label values of `puente_rate_limited_total`.
const RATE_LIMITS: [&str; 8] = [
    "requests_per_second",
    "concurrent_requests",
    "events_per_second",
    "concurrent_events",
    "burst_events",
    "bytes_per_second",
    "concurrent_bytes",
    "burst_bytes",
];
/// The `state` label values of `puente_settlement_windows`.
pub const WINDOW_STATES: [&str; 7] =
    ["OPEN", "CLOSING", "CLOSED", "SETTLING", "REJECTED", "ABORTED", "FAILED"];
/// The `kind` label values of `puente_settlement_reconciliation_exceptions_total`.
const RECONCILIATION_KINDS: [&str; 8] = [
    "MISSING",
    "AMOUNT_MISMATCH",
    "CURRENCY_MISMATCH",
    "DUPLICATE",
    "UNKNOWN_ENTRY",
    "REJECTED",
    "PENDING",
    "NOT_HUB_ACCOUNT",
];

/// Counts the per-event results of one `CreateTransfers` batch.
pub fn count_transfer_results<'a>(results: impl IntoIterator<Item = &'a puente_ledger::TransferResult>) {
    let Some(m) = metrics() else { return };
    for result in results {
        if let Ok(counter) = m.transfers.get_metric_with_label_values(&[result.code()]) {
            counter.inc();
        }
    }
}

/// Counts a request refused by the participant limit `limit` (one of two names; others are
/// ignored).
pub fn count_rate_limited(limit: &str) {
    if let Some(m) = metrics()
        && RATE_LIMITS.contains(&limit)
        && let Ok(counter) = m.rate_limited.get_metric_with_label_values(&[limit])
    {
        counter.inc();
    }
}

/// Sets the number of windows per state (`counts` by state code; states not given read 0).
pub fn set_window_states(counts: &[(&str, u64)]) {
    let Some(m) = metrics() else { return };
    for state in WINDOW_STATES {
        let count = counts.iter().find(|(s, _)| *s == state).map(|(_, c)| *c).unwrap_or(0);
        if let Ok(gauge) = m.windows.get_metric_with_label_values(&[state]) {
            gauge.set(saturating_i64(count));
        }
    }
}

/// Sets the Net Debit Cap gauges: (participant, currency, position, cap) for the first
/// [`PARTICIPANT_LABELS_MAX`] participants by id; series of others are removed.
pub fn set_net_debit_positions(rows: &[(String, String, i128, u64)]) {
    let Some(m) = metrics() else { return };
    let mut participants: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    participants.sort_unstable();
    participants.dedup();
    participants.truncate(PARTICIPANT_LABELS_MAX);
    m.ndc_position.reset();
    m.ndc_cap.reset();
    for (participant, currency, position, cap) in rows {
        if participants.binary_search(&participant.as_str()).is_err() || !m.admit_currency(currency) {
            continue;
        }
        let labels = [participant.as_str(), currency.as_str()];
        if let Ok(gauge) = m.ndc_position.get_metric_with_label_values(&labels) {
            gauge.set(i64::try_from(*position).unwrap_or(if *position < 0 { i64::MIN } else { i64::MAX }));
        }
        if let Ok(gauge) = m.ndc_cap.get_metric_with_label_values(&labels) {
            gauge.set(i64::try_from(*cap).unwrap_or(i64::MAX));
        }
    }
}

/// Counts a reconciliation's exceptions by kind and its new confirmations.
pub fn count_reconciliation(outcome: &puente_settlement::reconcile::Reconciliation) {
    let Some(m) = metrics() else { return };
    for e in &outcome.exceptions {
        if let Ok(counter) = m.reconciliation_exceptions.get_metric_with_label_values(&[e.kind.code()]) {
            counter.inc();
        }
    }
    let confirmed: usize = outcome.windows.iter().map(|w| w.confirmed_now.len()).sum();
    m.reconciliation_confirmations.inc_by(confirmed as u64);
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Feeds commit-group sizes and flush times of `ledger` into the histograms.
pub fn observe_ledger(ledger: &Ledger) {
    struct Observer;
    impl CommitObserver for Observer {
        fn committed(&self, events: u64, flush: Duration) {
            if let Some(m) = metrics() {
                m.group_events.observe(events as f64);
                m.flush_seconds.observe(flush.as_secs_f64());
            }
        }
    }
    // A ledger served twice keeps its first observer, which feeds the same histograms.
    let _ = ledger.observe_commits(Arc::new(Observer));
}

/// The text exposition of every metric, with the ledger's gauges read now.
pub fn render(ledger: &Ledger) -> String {
    let Some(m) = metrics() else { return String::new() };
    m.up.set(i64::from(ledger.is_healthy()));
    m.journal_bytes.set(saturating_i64(ledger.stats().journal_bytes.load(Ordering::Relaxed)));
    m.store_bytes.set(saturating_i64(ledger.size_on_disk()));
    m.feed_subscribers.set(saturating_i64(ledger.feed_subscribers() as u64));
    let mut out = Vec::new();
    if let Err(error) = prometheus::TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::warn!(%error, "metrics: cannot encode");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Serves `GET /metrics` on `listener` until the task is dropped or aborted.
pub async fn serve_http(listener: TcpListener, ledger: Ledger) {
    use hyper::service::service_fn;
    let limit = Arc::new(tokio::sync::Semaphore::new(SCRAPE_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let ledger = ledger.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&request, &ledger)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let timeout = Duration::from_millis(SCRAPE_CONNECTION_TIMEOUT_MS);
            match tokio::time::timeout(timeout, connection).await {
                Ok(Err(error)) => tracing::debug!(%error, %peer, "metrics: connection error"),
                Err(_) => tracing::debug!(%peer, "metrics: connection timed out"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

fn respond<B>(request: &http::Request<B>, ledger: &Ledger) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&http::Method::GET, METRICS_PATH) | (&http::Method::HEAD, METRICS_PATH) => {
            (http::StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render(ledger))
        }
        (_, METRICS_PATH) => (http::StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_owned()),
        _ => {
            (http::StatusCode::NOT_FOUND, "text/plain", format!("not found; metrics are at {METRICS_PATH}\n"))
        }
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// Binds the metrics listener (so a bad address fails the start, not later).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

// ---- gRPC request metrics: a tower layer around every service -------------------------------

/// A `tower::Layer` counting every RPC by method and status code and timing it. Add it with
/// `Server::builder().layer(GrpcMetricsLayer)`.
///
/// The status is where gRPC puts it: in the response headers for an error answered at once
/// ("trailers-only", as tonic answers unary errors), otherwise in the trailers at the end of
/// the body. A response whose body is dropped before its trailers (the client went away) is
/// counted as `CANCELLED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Unpin,
{
    type Response = http::Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call::start(request.uri().path());
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    let mut call = Some(call);
                    if let Some(code) = response.headers().get("grpc-status")
                        && let Some(call) = call.take()
                    {
                        call.finish(code_name(code.as_bytes()));
                    }
                    Ok(response.map(|inner| MetricsBody { inner, call }))
                }
                Err(error) => {
                    call.finish("UNKNOWN");
                    Err(error)
                }
            }
        })
    }
}

/// One RPC being measured; records itself exactly once.
struct Call {
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(path: &str) -> Call {
        let name = path.strip_prefix('/').unwrap_or(path);
        let known = metrics().is_some_and(|m| m.known_methods.contains(name));
        let method = if known { name } else { UNKNOWN_METHOD };
        Call { method: method.to_owned(), started: Instant::now(), done: false }
    }

    fn finish(mut self, code: &str) {
        self.record(code);
    }

    fn record(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let Some(m) = metrics() else { return };
        if let Ok(counter) = m.requests.get_metric_with_label_values(&[self.method.as_str(), code]) {
            counter.inc();
        }
        if let Ok(histogram) = m.latency.get_metric_with_label_values(&[self.method.as_str()]) {
            histogram.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record("CANCELLED");
    }
}

/// A response body that records the RPC when its trailers (or its end) go by.
pub struct MetricsBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> MetricsBody<B> {
    fn finish(&mut self, code: &str) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code =
                        trailers.get("grpc-status").map(|c| code_name(c.as_bytes())).unwrap_or("UNKNOWN");
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish("UNKNOWN"),
            // The body ended without a status: not a valid gRPC response.
            Poll::Ready(None) => this.finish("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a `grpc-status` value.
fn code_name(value: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .and_then(|code| NAMES.get(code).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_register_and_methods_are_known() {
        check().unwrap();
        let m = metrics().unwrap();
        assert!(m.known_methods.contains("puente.v1.LedgerService/CreateTransfers"), "{:?}", m.known_methods);
        assert!(m.known_methods.contains("grpc.health.v1.Health/Check"));
    }

    #[test]
    fn status_counters_read_the_request_counters() {
        let before = status_counters();
        Call::start("/puente.v1.LedgerService/GetAccount").finish("OK");
        Call::start("/puente.v1.LedgerService/GetAccount").finish("NOT_FOUND");
        let after = status_counters();
        // Other tests may count requests meanwhile: at least these two.
        assert!(after.requests >= before.requests + 2, "{before:?} {after:?}");
        assert!(after.requests_not_ok > before.requests_not_ok, "{before:?} {after:?}");
    }

    #[test]
    fn the_node_leader_gauge_follows_the_role() {
        set_node_leader(true);
        assert!(exposition().contains("puente_node_leader 1"));
        set_node_leader(false);
        assert!(exposition().contains("puente_node_leader 0"));
    }

    #[test]
    fn status_codes_have_their_canonical_names() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"3"), "INVALID_ARGUMENT");
        assert_eq!(code_name(b"16"), "UNAUTHENTICATED");
        assert_eq!(code_name(b"17"), "UNKNOWN");
        assert_eq!(code_name(b"x"), "UNKNOWN");
    }

    fn exposition() -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&metrics().unwrap().registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn results_limits_states_and_caps_export_with_bounded_labels() {
        // Every label value exists from the start, at zero.
        let text = exposition();
        assert!(text.contains("puente_transfers_total{result=\"EXCEEDS_CREDITS\"}"), "{text}");
        assert!(text.contains("puente_rate_limited_total{limit=\"concurrent_requests\"}"));
        assert!(text.contains("puente_settlement_windows{state=\"REJECTED\"} 0"));
        assert!(text.contains("puente_settlement_reconciliation_exceptions_total{kind=\"DUPLICATE\"}"));
        count_transfer_results([puente_ledger::TransferResult::Ok, puente_ledger::TransferResult::Ok].iter());
        count_rate_limited("requests_per_second");
        count_rate_limited("made up");
        set_window_states(&[("SETTLING", 3), ("SETTLED", 9)]);
        let rows: Vec<(String, String, i128, u64)> = (0..PARTICIPANT_LABELS_MAX + 10)
            .map(|i| (format!("p{i:04}"), "USD".to_owned(), -(i as i128), 1_000))
            .collect();
        set_net_debit_positions(&rows);
        let text = exposition();
        assert!(!text.contains("made up"));
        assert!(text.contains("puente_settlement_windows{state=\"SETTLING\"} 3"), "{text}");
        assert!(!text.contains("state=\"SETTLED\""), "SETTLED is not counted");
        let caps = text.lines().filter(|l| l.starts_with("puente_settlement_net_debit_cap_minor{")).count();
        assert_eq!(caps, PARTICIPANT_LABELS_MAX, "participant labels are bounded");
        assert!(text.contains(
            "puente_settlement_net_debit_position_minor{currency=\"USD\",participant=\"p0001\"} -1"
        ));
        assert!(!text.contains("participant=\"p0256\""));
    }

    #[test]
    fn settlement_gauges_export_and_bound_their_labels() {
        set_open_window_transfers("USD", 7);
        set_open_window_gross_minor("MXN", u128::MAX);
        set_last_netting_efficiency_bps(12_345);
        set_open_window_transfers("not a code", 1);
        let m = metrics().unwrap();
        let text = {
            let mut out = Vec::new();
            prometheus::TextEncoder::new().encode(&m.registry.gather(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(text.contains("puente_settlement_open_window_transfers{currency=\"USD\"} 7"), "{text}");
        // Saturates at i64::MAX (the text format prints it as a float).
        let gross: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("puente_settlement_open_window_gross_minor{currency=\"MXN\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(gross, i64::MAX as f64);
        assert!(text.contains("puente_settlement_last_netting_efficiency_bps 10000"));
        assert!(!text.contains("not a code"));
        assert!(text.contains(&format!("puente_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
    }
}
