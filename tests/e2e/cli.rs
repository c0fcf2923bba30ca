//! The `puente` CLI as an operator uses it: what it prints for refused input and for closed
//! accounts.

use puente_client::{NewAccount, NewTransfer};

use crate::support::{Server, key_file_for, temp_dir};

/// Runs `puente --server ADDR ARGS` with the operator's key; returns (success, stdout, stderr).
fn cli(addr: &str, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
        .arg("--server")
        .arg(addr)
        .env("PUENTE_API_KEY_FILE", key_file_for(addr))
        .env_remove("PUENTE_API_KEY")
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_message_is_printed_once() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    crate::support::participant(&mut client, "fintech-a").await;
    let from = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let to = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;

    let (ok, stdout, stderr) = cli(
        &server.addr,
        &["transfers", "create", "--from", &from, "--to", &to, "--amount", "1.001", "--currency", "USD"],
    );
    assert!(!ok, "{stdout}");
    let description = "has 3 decimal places; USD allows at most 2";
    assert_eq!(stderr.matches(description).count(), 1, "printed more than once:\n{stderr}");
    assert_eq!(stderr.matches("transfers[0].amount.value").count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: InvalidArgument INVALID_FIELD: invalid request\n"), "{stderr}");

    // Several bad fields: each once, on its own line.
    let (ok, _, stderr) = cli(
        &server.addr,
        &["transfers", "create", "--from", "nope", "--to", &to, "--amount=-1", "--currency", "USD"],
    );
    assert!(!ok);
    for field in ["transfers[0].debit_account_id", "transfers[0].amount.value"] {
        assert_eq!(stderr.matches(field).count(), 1, "{field} in\n{stderr}");
        assert!(stderr.lines().any(|l| l.starts_with(&format!("  {field}: "))), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_get_marks_a_closed_account() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    crate::support::participant(&mut client, "fintech-a").await;
    let id = client.create_account(NewAccount::new("fintech-a", "USD").holder_ref("bob")).await.unwrap().id;
    let row = |table: &str| table.lines().find(|l| l.starts_with(&id)).unwrap_or_default().to_owned();
    let state_column = |table: &str| {
        let header = table.lines().next().unwrap_or_default();
        let at = header.find("STATE").unwrap_or_else(|| panic!("no STATE column:\n{table}"));
        row(table)[at..].split_whitespace().next().unwrap_or_default().to_owned()
    };

    let (ok, table, stderr) = cli(&server.addr, &["accounts", "get", &id]);
    assert!(ok, "{stderr}");
    assert_eq!(state_column(&table), "open", "{table}");

    let (ok, _, stderr) = cli(&server.addr, &["accounts", "close", &id]);
    assert!(ok, "{stderr}");
    let (ok, table, stderr) = cli(&server.addr, &["accounts", "get", &id]);
    assert!(ok, "{stderr}");
    assert_eq!(state_column(&table), "closed", "{table}");
    let (ok, json, _) = cli(&server.addr, &["accounts", "get", &id, "--json"]);
    assert!(ok);
    let account: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (account["closed"].as_bool(), account["state"].as_str()),
        (Some(true), Some("closed")),
        "{json}"
    );
    let (ok, table, _) = cli(&server.addr, &["accounts", "list", "--participant", "fintech-a"]);
    assert!(ok);
    assert_eq!(state_column(&table), "closed", "{table}");
    let (ok, statement, _) = cli(&server.addr, &["statement", &id]);
    assert!(ok && statement.lines().next().unwrap().contains("CLOSED"), "{statement}");
    // And it is closed: a transfer into it is refused.
    let source = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let refused = client.transfer(NewTransfer::new(&source, &id, "USD", "1.00")).await.unwrap_err();
    assert_eq!(refused.reason(), Some("CREDIT_ACCOUNT_CLOSED"));
}

/// `puente whoami` with exactly these key sources; returns (success, stdout + stderr).
fn whoami(addr: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_puente"))
        .args(["--server", addr, "whoami"])
        .args(args)
        .env_remove("PUENTE_API_KEY")
        .env_remove("PUENTE_API_KEY_FILE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_flag_beats_the_environment_and_the_key_file_beats_the_key() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let file = key_file_for(&server.addr);
    let file = file.to_str().unwrap();
    let wrong = format!("puente_0123456789abcdef_{}", "0".repeat(64));

    // Both variables: the file wins (as in the Rust and Python clients).
    let (ok, text) = whoami(&server.addr, &[("PUENTE_API_KEY_FILE", file), ("PUENTE_API_KEY", &wrong)], &[]);
    assert!(ok && text.contains("operator"), "{text}");
    // A flag beats either variable.
    let (ok, text) = whoami(&server.addr, &[("PUENTE_API_KEY_FILE", file)], &["--api-key", &wrong]);
    assert!(!ok && text.contains("Unauthenticated"), "{text}");
    let (ok, text) = whoami(&server.addr, &[("PUENTE_API_KEY", &wrong)], &["--api-key-file", file]);
    assert!(ok && text.contains("operator"), "{text}");
    // Both flags: refused, before any call.
    let (ok, text) = whoami(&server.addr, &[], &["--api-key", &wrong, "--api-key-file", file]);
    assert!(!ok && text.contains("not both"), "{text}");
    // An empty key file is an error, not "no key".
    let empty = dir.path().join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let (ok, text) = whoami(&server.addr, &[("PUENTE_API_KEY_FILE", empty.to_str().unwrap())], &[]);
    assert!(!ok && text.contains("the file is empty"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_of_31_digits_exceeds_the_maximum_on_the_wire() {
    let dir = temp_dir();
    let server = Server::start(&dir.path().join("data"));
    let mut client = server.client().await;
    crate::support::participant(&mut client, "fintech-a").await;
    let from = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let to = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let thirty_one = format!("1{}", "0".repeat(30));
    for amount in ["1000000000000000.01", thirty_one.as_str()] {
        let error =
            client.create_transfers(vec![NewTransfer::new(&from, &to, "USD", amount).0]).await.unwrap_err();
        let puente_client::ClientError::Status { code, violations, .. } = error else { panic!("{error:?}") };
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].0, "transfers[0].amount.value");
        assert_eq!(
            violations[0].1, "amount exceeds the maximum of 100000000000000000 minor units",
            "{amount}: {violations:?}"
        );
        let (ok, _, stderr) = cli(
            &server.addr,
            &["transfers", "create", "--from", &from, "--to", &to, "--amount", amount, "--currency", "USD"],
        );
        assert!(
            !ok && stderr.contains("exceeds the maximum") && !stderr.contains("not a decimal number"),
            "{stderr}"
        );
    }
    // Nothing moved.
    assert_eq!(client.get_account(&to).await.unwrap().posted_balance, "0.00");
}
