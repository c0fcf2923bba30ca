//! The Grafana dashboard (`deploy/grafana/puente.json`) against a live server: it imports
//! cleanly (schema version, the Prometheus datasource as the `DS_PROMETHEUS` variable on every
//! panel and query, unique ids, a grid position), and every metric any of its PromQL
//! expressions names is one the server exports, scraped from `--metrics-listen` after a
//! settlement night (so the per-participant and per-state series exist).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Server, eventually, temp_dir};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_with_metrics(data: &Path) -> (Server, String) {
    for _ in 0..5 {
        let metrics = format!("127.0.0.1:{}", free_port());
        if let Ok(server) = Server::try_start(data, &["--metrics-listen", &metrics]) {
            return (server, metrics);
        }
    }
    panic!("could not start a server with metrics");
}

async fn scrape(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// Names of the series in a scrape (`name{…} value` and `name value` lines).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// Every `puente_…` metric name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("puente_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

fn panels(value: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in value["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/puente.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36, "a current schema version");
    assert_eq!(dashboard["uid"], "puente-overview");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "the datasource is a variable: {variables:?}"
    );
    let mut ids = BTreeSet::new();
    let mut expressions = Vec::new();
    for panel in panels(&dashboard) {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel ids are unique");
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "{} has a grid position", panel["title"]);
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} queries something", panel["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}");
            expressions
                .push((panel["title"].as_str().unwrap().to_owned(), t["expr"].as_str().unwrap().to_owned()));
        }
    }
    // The dashboard covers what operators asked for.
    let all: String = expressions.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join("\n");
    for needed in [
        "puente_transfers_total",
        "puente_grpc_request_duration_seconds_bucket",
        "puente_commit_group_events_bucket",
        "puente_commit_flush_seconds_bucket",
        "puente_settlement_windows",
        "puente_settlement_net_debit_position_minor",
        "puente_settlement_net_debit_cap_minor",
        "puente_rate_limited_total",
    ] {
        assert!(metric_names(&all).iter().any(|n| n == needed), "the dashboard shows {needed}");
    }

    // A live server after a settlement night: profiles, positions, windows in several states.
    let dir = temp_dir();
    let (server, metrics) = start_with_metrics(&dir.path().join("data"));
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_puente"))
            .arg("--server")
            .arg(&server.addr)
            .env("PUENTE_API_KEY_FILE", crate::support::key_file_for(&server.addr))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    cli(&["simulate", "--seed", "5", "--transfers", "200", "--us", "2", "--mx", "2"]);
    cli(&["settlement", "run"]);
    // The settlement gauges are refreshed right after a run (and every 10 s).
    let ready = eventually(Duration::from_secs(30), || async {
        let text = scrape(&metrics).await;
        text.contains("puente_settlement_net_debit_cap_minor{")
            && text.contains("puente_commit_flush_seconds_bucket")
    })
    .await;
    assert!(ready, "settlement gauges were never exported:\n{}", scrape(&metrics).await);
    let names = exported(&scrape(&metrics).await);
    for (title, expr) in &expressions {
        let referenced = metric_names(expr);
        assert!(!referenced.is_empty(), "{title}: {expr} names no puente metric");
        for name in referenced {
            assert!(
                names.contains(&name),
                "{title}: {expr} queries {name}, which the server does not export"
            );
        }
    }
}
