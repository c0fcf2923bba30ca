//! `puente benchmark` (issue 12): in process on a fresh data directory, and over gRPC against
//! the real server; its JSON is what scripts read, so every field is checked for sense.

use std::path::Path;

use serde_json::Value;

use crate::support::{Server, all_accounts, key_file_for, temp_dir};

/// Runs `puente <args>` with none of the environment that would change where it runs;
/// returns (success, stdout, stderr).
async fn puente(args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_puente"));
    command
        .args(args)
        .env_remove("PUENTE_SERVER")
        .env_remove("PUENTE_BENCH_DIR")
        .env_remove("PUENTE_API_KEY")
        .env_remove("PUENTE_API_KEY_FILE");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn number(report: &Value, field: &str) -> f64 {
    report[field].as_f64().unwrap_or_else(|| panic!("{field} is not a number in {report:#}"))
}

/// The fields both modes report, for a run of 20,000 transfers in batches of 1,000.
fn check_common(report: &Value) {
    assert_eq!(report["transfers"], 20_000, "{report:#}");
    assert_eq!(report["transfers_acknowledged"], 20_000, "every transfer counted: {report:#}");
    assert_eq!(report["batch"], 1_000);
    assert_eq!(report["batches"], 20);
    assert_eq!(report["accounts"], 100);
    assert_eq!(report["clients"], 1);
    assert!(number(report, "elapsed_ms") > 0.0);
    let per_second = number(report, "transfers_per_second");
    assert!(per_second > 0.0, "{report:#}");
    // Throughput and wall time agree (to the rounding of both).
    let implied = 20_000.0 / (number(report, "elapsed_ms") / 1_000.0);
    assert!((per_second - implied).abs() <= implied * 0.01 + 1.0, "{per_second} vs {implied}");
    let (p50, p99, max) = (
        number(report, "batch_latency_p50_ms"),
        number(report, "batch_latency_p99_ms"),
        number(report, "batch_latency_max_ms"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");
    // One client waits for each batch in turn: no batch takes longer than the whole run.
    assert!(max <= number(report, "elapsed_ms") + 1.0);
    for field in
        ["index_lag_records", "index_catch_up_ms", "transfers_per_second_indexed", "bytes_per_transfer"]
    {
        assert!(report.get(field).is_some(), "{field} missing: {report:#}");
    }
}

#[tokio::test]
async fn in_process_on_a_fresh_directory_that_is_removed_afterwards() {
    // Under the target directory: on the disk the build uses (never tmpfs here), unlike /tmp
    // on some machines.
    let parent = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = parent.path().to_str().unwrap();
    let args =
        ["benchmark", "--transfers", "20000", "--batch", "1000", "--accounts", "100", "--dir", dir, "--json"];
    let (ok, stdout, stderr) = puente(&args, &[]).await;
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    check_common(&report);
    assert_eq!(report["mode"], "in_process");
    assert_eq!(report["server"], Value::Null);
    assert_eq!(report["seed"], 42);
    // The index lag when the last batch was acknowledged, in journal records, and its catch-up.
    let committed = report["journal_records_committed"].as_u64().unwrap();
    let indexed = report["journal_records_indexed"].as_u64().unwrap();
    // One record each for the accounts and the funding, then one per batch (one client).
    assert!(committed >= 2 + 20, "{report:#}");
    assert_eq!(report["index_lag_records"].as_u64().unwrap(), committed - indexed);
    assert!(number(&report, "index_catch_up_ms") >= 0.0);
    let indexed_per_second = number(&report, "transfers_per_second_indexed");
    assert!(0.0 < indexed_per_second && indexed_per_second <= number(&report, "transfers_per_second"));
    assert!(report["group_commits"].as_u64().unwrap() >= 1);
    // The data directory's bytes over every transfer stored (the 100 funding ones included).
    assert_eq!(report["transfers_stored"], 20_100);
    let bytes = report["bytes_on_disk"].as_u64().unwrap();
    assert!(bytes > 20_100 * 32, "a transfer takes more than its two ids: {bytes}");
    let per_transfer = number(&report, "bytes_per_transfer");
    assert!((per_transfer - bytes as f64 / 20_100.0).abs() < 0.01, "{per_transfer}");
    assert!(report["filesystem"].as_str().is_some_and(|f| !f.starts_with("tmpfs")), "{report:#}");
    // The fresh data directory was under --dir, and is gone.
    let data_dir = report["data_dir"].as_str().unwrap();
    assert!(Path::new(data_dir).starts_with(parent.path()), "{data_dir}");
    assert_eq!(report["data_dir_kept"], false);
    assert!(std::fs::read_dir(parent.path()).unwrap().next().is_none(), "{data_dir} was left behind");
}

#[tokio::test]
async fn a_tmpfs_directory_is_refused_before_anything_runs() {
    let (ok, stdout, stderr) = puente(&["benchmark", "--transfers", "10", "--dir", "/dev/shm"], &[]).await;
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("tmpfs") && stderr.contains("real disk"), "{stderr}");
}

#[tokio::test]
async fn over_grpc_against_a_real_server_twice() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let key_file = key_file_for(&server.addr);
    let env = [("PUENTE_API_KEY_FILE", key_file.as_path())];
    let args = [
        "--server",
        &server.addr,
        "benchmark",
        "--transfers",
        "20000",
        "--batch",
        "1000",
        "--accounts",
        "100",
        "--json",
    ];
    let (ok, stdout, stderr) = puente(&args, &env).await;
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    check_common(&report);
    assert_eq!(report["mode"], "grpc");
    assert_eq!(report["server"], server.addr.as_str());
    // The server's index and disk cannot be seen from here: null, not a made-up number.
    for field in ["index_lag_records", "index_catch_up_ms", "bytes_per_transfer", "bytes_on_disk", "data_dir"]
    {
        assert_eq!(report[field], Value::Null, "{field}");
    }
    // A second run against the same server uses ids of its own: nothing collides.
    let args =
        ["--server", &server.addr, "benchmark", "--transfers", "10", "--batch", "4", "--accounts", "4"];
    let (ok, stdout, stderr) = puente(&args, &env).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("transfers/s") && stdout.contains("n/a over gRPC"), "{stdout}");
    // Two treasuries and the wallets of each run, under the benchmark's participants (the
    // server's own accounts besides).
    let accounts = all_accounts(&mut server.client().await).await;
    let benchmark = accounts.iter().filter(|a| a.participant.starts_with("benchmark-")).count();
    assert_eq!(benchmark, (2 + 100) + (2 + 4));
    // Without an operator's key it says what it needs.
    let (ok, _, stderr) = puente(&args, &[]).await;
    assert!(!ok && stderr.contains("operator"), "{stderr}");
}
