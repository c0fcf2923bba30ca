//! `puente status`: health, then (with an operator's key) the server's details over gRPC, in one screen.

use super::*;

pub(super) async fn status(
    server: &str,
    options: &puente_client::ConnectOptions,
    credentials: bool,
    health_only: bool,
    out: &Output,
) -> Result<(), CliError> {
    let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
    let (overall, ledger) = match tokio::time::timeout(timeout, health(server, options))
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
    {
        Ok(statuses) => statuses,
        Err(error) => (format!("UNREACHABLE ({error})"), String::new()),
    };
    // Health needs no key (load balancers and orchestrators call `puente status` without one);
    // the rest is an operator's business.
    let details = if overall.starts_with("UNREACHABLE") {
        Err("not read: the server is unreachable".to_owned())
    } else if health_only {
        Err("not read (--health-only)".to_owned())
    } else if !credentials {
        Err("not read: they need an operator's key (PUENTE_API_KEY_FILE or --api-key-file)".to_owned())
    } else {
        tokio::time::timeout(timeout, details(server, options))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    };
    let value = status_json(server, &overall, &ledger, &details);
    out.print(value.clone(), || status_screen(&value));
    if overall == "SERVING" {
        Ok(())
    } else {
        Err(CliError::Ops(format!("the server at {server} is not serving: {overall}")))
    }
}

/// What an operator's key reads beyond health.
pub(super) struct Details {
    pub(super) status: pb::GetServerStatusResponse,
    pub(super) open_windows: Vec<pb::SettlementWindow>,
}

/// `OperationsService.GetServerStatus` and the open settlement windows (`ListWindows`).
pub(super) async fn details(
    server: &str,
    options: &puente_client::ConnectOptions,
) -> Result<Details, String> {
    let describe = |error: ClientError| match &error {
        ClientError::Status {
            code: tonic::Code::PermissionDenied | tonic::Code::Unauthenticated, ..
        } => {
            format!("not read: they need an operator's key ({error})")
        }
        _ => error.to_string(),
    };
    let mut client = Client::connect_with(server, options).await.map_err(describe)?;
    let status = client.server_status().await.map_err(describe)?;
    let mut settlement = client.settlement();
    let mut open_windows = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListWindowsRequest {
            state: pb::WindowState::Open as i32,
            page_size: STATUS_WINDOW_PAGE,
            page_token,
            ..Default::default()
        };
        let page = settlement
            .list_windows(request)
            .await
            .map_err(|status| describe(ClientError::from(status)))?
            .into_inner();
        open_windows.extend(page.windows);
        if page.next_page_token.is_empty() || open_windows.len() >= STATUS_WINDOWS_MAX {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(Details { status, open_windows })
}

pub(super) fn status_json(
    server: &str,
    overall: &str,
    ledger: &str,
    details: &Result<Details, String>,
) -> Value {
    let client_version = env!("CARGO_PKG_VERSION");
    let Details { status: s, open_windows } = match details {
        Ok(details) => details,
        Err(error) => {
            return json!({
                "server": server,
                "health": {"overall": overall, "ledger": ledger},
                "versions": {"server": null, "client": client_version},
                "details": {"error": error},
            });
        }
    };
    let seconds = |ts: &Option<puente_proto::Timestamp>| ts.as_ref().map(|t| t.seconds.max(0) as u64);
    let started = seconds(&s.start_time).unwrap_or(0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut transfers = BTreeMap::new();
    let mut gross = BTreeMap::new();
    for w in open_windows {
        *transfers.entry(w.currency_code.clone()).or_insert(0u64) += w.obligation_count;
        if let Some(money) = &w.gross_value {
            gross.insert(w.currency_code.clone(), money.value.clone());
        }
    }
    json!({
        "server": server,
        "health": {"overall": overall, "ledger": ledger},
        "versions": {"server": s.version, "client": client_version},
        "details": {"error": null},
        "started": super::super::time_text(&s.start_time),
        "uptime_seconds": now.saturating_sub(started),
        "takes_writes": s.healthy,
        "store": {
            "journal_bytes": s.journal_bytes,
            "store_bytes": s.store_bytes,
            "chain_head": {"seq": s.chain_head_seq, "sha256": s.chain_head_sha256},
        },
        "recovery": {"journal_entries": s.recovered_journal_entries, "ms": s.recovery_ms},
        "writes": {
            "group_commits": s.group_commits,
            "events": s.committed_events,
            "flush_mean_ms": s.flush_mean_us as f64 / 1_000.0,
        },
        "requests": {"total": s.requests, "not_ok": s.requests_not_ok},
        "settlement": {
            "open_windows": open_windows.len(),
            "open_window_transfers": transfers,
            "open_window_gross": gross,
            "last_netting_efficiency_bps": s.last_netting_efficiency_bps,
            "last_run_unix_seconds": seconds(&s.last_netting_run_time).unwrap_or(0),
        },
    })
}

/// A value of the status as text: a string as it is, nothing as `?`.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_owned(),
        other => other.to_string(),
    }
}

/// The settlement line: the open windows (each currency's transfers and gross) and the last
/// netting run.
fn settlement_line(v: &Value) -> String {
    let text = value_text;
    let windows: Vec<String> = v["settlement"]["open_window_transfers"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(currency, n)| {
                    let gross = text(&v["settlement"]["open_window_gross"][currency]);
                    format!("{currency} {n} transfers, {gross}")
                })
                .collect()
        })
        .unwrap_or_default();
    let last_run = v["settlement"]["last_run_unix_seconds"].as_u64().unwrap_or(0);
    let efficiency = v["settlement"]["last_netting_efficiency_bps"].as_u64().unwrap_or(0);
    format!(
        "  settlement  {} open windows{}; last netting {}",
        text(&v["settlement"]["open_windows"]),
        if windows.is_empty() { String::new() } else { format!(" ({})", windows.join("; ")) },
        if last_run == 0 {
            "none since start".to_owned()
        } else {
            format!(
                "saved {}.{:02}% at {}",
                efficiency / 100,
                efficiency % 100,
                humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(last_run))
            )
        }
    )
}

pub(super) fn status_screen(v: &Value) -> String {
    let text = value_text;
    let mut lines = vec![format!("Puente at {}", text(&v["server"]))];
    let ledger = text(&v["health"]["ledger"]);
    lines.push(format!(
        "  health      {}{}",
        text(&v["health"]["overall"]),
        if ledger.is_empty() { String::new() } else { format!(" (LedgerService {ledger})") }
    ));
    lines.push(format!(
        "  versions    server {}, this client {}",
        text(&v["versions"]["server"]),
        text(&v["versions"]["client"])
    ));
    if !v["details"]["error"].is_null() {
        lines.push(format!("  details     {}", text(&v["details"]["error"])));
        return lines.join("\n") + "\n";
    }
    let uptime = Duration::from_secs(v["uptime_seconds"].as_u64().unwrap_or(0));
    lines.push(format!(
        "  started     {} (up {}); recovery replayed {} journal records in {} ms{}",
        text(&v["started"]),
        humantime::format_duration(uptime),
        text(&v["recovery"]["journal_entries"]),
        text(&v["recovery"]["ms"]),
        if v["takes_writes"] == false { "; REFUSING WRITES since a durable write failed" } else { "" }
    ));
    let bytes = |value: &Value| human_bytes(value.as_u64().unwrap_or(0));
    lines.push(format!(
        "  store       journal {}, journal + index {}; chain head seq {} {}",
        bytes(&v["store"]["journal_bytes"]),
        bytes(&v["store"]["store_bytes"]),
        text(&v["store"]["chain_head"]["seq"]),
        text(&v["store"]["chain_head"]["sha256"])
    ));
    lines.push(format!(
        "  writes      {} group commits, {} events since start; mean flush {} ms",
        text(&v["writes"]["group_commits"]),
        text(&v["writes"]["events"]),
        text(&v["writes"]["flush_mean_ms"])
    ));
    lines.push(format!(
        "  requests    {} RPCs since start, {} not OK",
        text(&v["requests"]["total"]),
        text(&v["requests"]["not_ok"])
    ));
    lines.push(settlement_line(v));
    lines.join("\n") + "\n"
}

pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The health of the whole server ("") and of the LedgerService.
pub(super) async fn health(
    server: &str,
    options: &puente_client::ConnectOptions,
) -> Result<(String, String), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel =
        puente_client::channel(server, options).await.map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = HealthClient::new(channel);
    let mut statuses = Vec::new();
    for service in ["", "puente.v1.LedgerService"] {
        let name = match client.check(HealthCheckRequest { service: service.into() }).await {
            Ok(response) => match response.into_inner().status {
                1 => "SERVING".to_owned(),
                2 => "NOT_SERVING".to_owned(),
                3 => "SERVICE_UNKNOWN".to_owned(),
                _ => "UNKNOWN".to_owned(),
            },
            Err(status) => format!("ERROR ({:?}: {})", status.code(), status.message()),
        };
        statuses.push(name);
    }
    let ledger = statuses.pop().unwrap_or_default();
    let overall = statuses.pop().unwrap_or_default();
    Ok((overall, ledger))
}
