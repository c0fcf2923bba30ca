//! High availability against a real PostgreSQL (`puente serve --journal-url`): two nodes, one
//! leader, a hot standby; SIGKILL and SIGSTOP of the leader; a node that joins empty. Each test
//! makes its own throwaway cluster (`puente_journal_pg::testing`, from
//! /usr/lib/postgresql/15/bin; `scripts/test-deps` installs it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use puente_client::{ClusterClient, ConnectOptions, NewAccount, NewTransfer, pb};
use puente_journal_pg::testing::Cluster;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{
    Server, eventually, minor, operator_client, operator_key, share_operator_key, temp_dir,
};

/// Short leases keep the tests quick; production defaults to 3 s.
const LEASE_MS: &str = "1000";

/// A node of the cluster behind `url`, named `node`.
fn node(dir: &std::path::Path, url: &str, node: &str) -> Server {
    let args = ["--journal-url", url, "--node-id", node, "--lease-ms", LEASE_MS];
    Server::spawn(dir, &args, &[], None).unwrap_or_else(|log| panic!("node {node} did not start:\n{log}"))
}

/// Two nodes: the first leads (and has the operator), the second follows.
fn two_nodes(dir: &std::path::Path, url: &str) -> (Server, Server) {
    let a = node(&dir.join("a"), url, "a");
    crate::support::bootstrap(&a.addr, &dir.join("a")).unwrap();
    let b = node(&dir.join("b"), url, "b");
    share_operator_key(&a.addr, &b.addr);
    (a, b)
}

/// `puente.v1.Leader` on `addr`: SERVING (true) only on the node that takes writes.
async fn leads(addr: &str) -> Option<bool> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?.connect().await.ok()?;
    let request = HealthCheckRequest { service: "puente.v1.Leader".into() };
    let status = HealthClient::new(channel).check(request).await.ok()?.into_inner().status;
    Some(status == 1)
}

fn cluster_client(addrs: &[&str], key_of: &str) -> ClusterClient {
    ClusterClient::new(addrs, ConnectOptions::api_key(&operator_key(key_of))).unwrap()
}

/// Sum of posted balances per currency: zero when every debit has its credit.
fn totals(accounts: &[pb::Account]) -> BTreeMap<String, i128> {
    let mut totals = BTreeMap::new();
    for a in accounts {
        *totals.entry(a.currency_code.clone()).or_default() += minor(&a.posted_balance);
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standby_leads_within_seconds_of_a_sigkill_and_no_acknowledged_transfer_is_lost() {
    let cluster = Cluster::start();
    let url = cluster.create_database("kill").await;
    let dir = temp_dir();
    let (mut a, b) = two_nodes(dir.path(), &url);
    assert_eq!(leads(&a.addr).await, Some(true));
    assert_eq!(leads(&b.addr).await, Some(false), "the second node is a standby");

    // Setup on the leader: one funding account, one wallet per writer.
    const WRITERS: usize = 16;
    let mut client = operator_client(&a.addr).await;
    crate::support::participant(&mut client, "fintech-a").await;
    let funding = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let mut wallets = Vec::new();
    for _ in 0..WRITERS {
        wallets.push(client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id);
    }

    // The standby serves reads of what the leader committed, and refuses writes naming it.
    let mut standby = operator_client(&b.addr).await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut standby, id) = (standby.clone(), wallets[WRITERS - 1].clone());
            async move { standby.get_account(&id).await.is_ok() }
        })
        .await
    );
    let refused = standby.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap_err();
    match &refused {
        puente_client::ClientError::Status { code, reason, leader_address, .. } => {
            assert_eq!((*code, reason.as_deref()), (tonic::Code::Unavailable, Some("NOT_LEADER")));
            assert_eq!(leader_address.as_deref(), Some(a.addr.as_str()));
        }
        other => panic!("{other}"),
    }

    // 16 clients write one transfer per request, each to its own wallet, through both nodes.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let first_ack_after_kill = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let addrs = [a.addr.clone(), b.addr.clone()];
    let mut writers = tokio::task::JoinSet::new();
    for (w, wallet) in wallets.iter().enumerate() {
        let (acknowledged, killed, first) =
            (acknowledged.clone(), killed.clone(), first_ack_after_kill.clone());
        let mut client = cluster_client(&[&addrs[0], &addrs[1]], &a.addr);
        let (funding, wallet) = (funding.clone(), wallet.clone());
        writers.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let id = format!("00000000-0000-4000-8000-{w:04x}{i:08x}");
                let transfer = NewTransfer::new(&funding, &wallet, "USD", "0.01").id(&id);
                let results =
                    client.create_transfers(vec![transfer.0]).await.unwrap_or_else(|e| panic!("{id}: {e}"));
                assert_eq!(results[0].code, "OK", "{id}");
                if killed.load(Ordering::SeqCst) {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                }
                acked.push(id);
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            (wallet, acked)
        });
    }
    assert!(
        eventually(Duration::from_secs(60), || {
            let acknowledged = acknowledged.clone();
            async move { acknowledged.load(Ordering::SeqCst) >= 200 }
        })
        .await
    );
    killed.store(true, Ordering::SeqCst);
    let killed_at = Instant::now();
    a.kill();

    let mut per_wallet = Vec::new();
    while let Some(done) = writers.join_next().await {
        per_wallet.push(done.unwrap());
    }
    let failover = first_ack_after_kill.lock().unwrap().expect("writes after the kill") - killed_at;
    assert!(failover < Duration::from_secs(5), "the standby led after {failover:?}");
    assert_eq!(leads(&b.addr).await, Some(true));

    // On the new leader: every acknowledged transfer, exactly once.
    let mut leader = operator_client(&b.addr).await;
    for (wallet, acked) in &per_wallet {
        assert_eq!(acked.len(), 60);
        for id in acked {
            leader.get_transfer(id).await.unwrap_or_else(|e| panic!("acknowledged {id} is missing: {e}"));
        }
        let balance = minor(&leader.get_account(wallet).await.unwrap().posted_balance);
        assert_eq!(balance, 60, "wallet {wallet}: each acknowledged transfer of 0.01 exactly once");
    }
    let accounts = crate::support::all_accounts(&mut leader).await;
    assert!(totals(&accounts).values().all(|t| *t == 0), "debits equal credits: {:?}", totals(&accounts));

    // A node that joins with an empty data directory catches up to the same balances.
    let c = node(&dir.path().join("c"), &url, "c");
    share_operator_key(&b.addr, &c.addr);
    let mut joined = operator_client(&c.addr).await;
    let want: BTreeMap<String, String> =
        accounts.iter().map(|a| (a.id.clone(), a.posted_balance.clone())).collect();
    assert!(
        eventually(Duration::from_secs(20), || {
            let (mut joined, want) = (joined.clone(), want.clone());
            async move {
                let got: BTreeMap<String, String> = crate::support::all_accounts(&mut joined)
                    .await
                    .into_iter()
                    .map(|a| (a.id, a.posted_balance))
                    .collect();
                got == want
            }
        })
        .await
    );
    assert_eq!(leads(&c.addr).await, Some(false));
    let refused = joined.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap_err();
    assert_eq!(refused.reason(), Some("NOT_LEADER"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_past_its_lease_cannot_append_and_steps_down_naming_the_new_leader() {
    let cluster = Cluster::start();
    let url = cluster.create_database("stop").await;
    let dir = temp_dir();
    let (a, b) = two_nodes(dir.path(), &url);
    let mut client = operator_client(&a.addr).await;
    crate::support::participant(&mut client, "fintech-a").await;
    let funding = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let wallet = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;

    // SIGSTOP the leader past its lease: the standby takes over and takes writes.
    let signal = |sig: &str, pid: u32| {
        assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    };
    signal("-STOP", a.pid());
    assert!(
        eventually(Duration::from_secs(10), || {
            let addr = b.addr.clone();
            async move { leads(&addr).await == Some(true) }
        })
        .await,
        "the standby did not take over"
    );
    let mut new_leader = operator_client(&b.addr).await;
    let t = NewTransfer::new(&funding, &wallet, "USD", "1.00");
    assert_eq!(new_leader.transfer(t).await.unwrap().code, "OK");

    // Woken up, the old leader acknowledges nothing: its write is refused (it can no longer
    // append under its epoch), and it soon names the new leader.
    signal("-CONT", a.pid());
    let mut old = operator_client(&a.addr).await;
    let stale = NewTransfer::new(&funding, &wallet, "USD", "5.00").id("00000000-0000-4000-8000-00000000dead");
    let refused = old.transfer(stale).await.unwrap_err();
    assert!(
        matches!(&refused, puente_client::ClientError::Status { code: tonic::Code::Unavailable, .. }),
        "{refused}"
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let (mut old, b_addr, funding, wallet) =
                (old.clone(), b.addr.clone(), funding.clone(), wallet.clone());
            async move {
                let t = NewTransfer::new(&funding, &wallet, "USD", "5.00")
                    .id("00000000-0000-4000-8000-00000000beef");
                match old.transfer(t).await {
                    Err(puente_client::ClientError::Status { reason, leader_address, .. }) => {
                        reason.as_deref() == Some("NOT_LEADER")
                            && leader_address.as_deref() == Some(b_addr.as_str())
                    }
                    _ => false,
                }
            }
        })
        .await,
        "the old leader never named the new one"
    );
    assert_eq!(leads(&a.addr).await, Some(false));
    // The refused write is nowhere; both nodes agree on the wallet: 1.00.
    for refused in ["00000000-0000-4000-8000-00000000dead", "00000000-0000-4000-8000-00000000beef"] {
        assert!(new_leader.get_transfer(refused).await.is_err());
    }
    for c in [new_leader, old] {
        assert!(
            eventually(Duration::from_secs(5), || {
                let (mut c, wallet) = (c.clone(), wallet.clone());
                async move { c.get_account(&wallet).await.ok().map(|a| a.posted_balance) == Some("1.00".into()) }
            })
            .await
        );
    }
}

/// The PostgreSQL primary dies under load and its synchronous standby is promoted: the node,
/// given both hosts (`target_session_attrs=read-write`), reconnects to the promoted one and
/// leads again; every transfer acknowledged before, during and after is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promoted_postgresql_standby_loses_no_acknowledged_transfer() {
    let mut primary = Cluster::start_primary();
    let mut standby = Cluster::start_standby_of(&primary);
    // Made after the standby is attached (a synchronous primary waits for one), replicated.
    primary.create_database("promote").await;
    let url = puente_journal_pg::testing::multi_host_url(&[&primary, &standby], "promote");
    let dir = temp_dir();
    let a = node(&dir.path().join("a"), &url, "a");
    crate::support::bootstrap(&a.addr, &dir.path().join("a")).unwrap();
    let mut client = operator_client(&a.addr).await;
    crate::support::participant(&mut client, "fintech-a").await;
    let funding = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 40;
    let mut wallets = Vec::new();
    for _ in 0..WRITERS {
        wallets.push(client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id);
    }

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for (w, wallet) in wallets.iter().enumerate() {
        let acknowledged = acknowledged.clone();
        let mut client = cluster_client(&[&a.addr], &a.addr);
        let (funding, wallet) = (funding.clone(), wallet.clone());
        let log = dir.path().join("a.log");
        writers.spawn(async move {
            for i in 0..PER_WRITER {
                let id = format!("00000000-0000-4000-8000-{w:04x}{i:08x}");
                let transfer = NewTransfer::new(&funding, &wallet, "USD", "0.01").id(&id);
                let results = client.create_transfers(vec![transfer.0]).await.unwrap_or_else(|e| {
                    panic!(
                        "{id}: {e}\n--- node log ---\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                });
                assert_eq!(results[0].code, "OK", "{id}");
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    assert!(
        eventually(Duration::from_secs(60), || {
            let acknowledged = acknowledged.clone();
            async move { acknowledged.load(Ordering::SeqCst) >= 60 }
        })
        .await
    );
    let before = acknowledged.load(Ordering::SeqCst);
    primary.kill();
    standby.promote();
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    assert!(acknowledged.load(Ordering::SeqCst) > before, "writes went on after the promotion");
    assert!(
        eventually(Duration::from_secs(10), || {
            let addr = a.addr.clone();
            async move { leads(&addr).await == Some(true) }
        })
        .await,
        "the node leads again, on the promoted database"
    );
    let mut client = operator_client(&a.addr).await;
    for wallet in &wallets {
        let balance = minor(&client.get_account(wallet).await.unwrap().posted_balance);
        assert_eq!(balance, PER_WRITER as i128, "wallet {wallet}: every acknowledged 0.01 exactly once");
    }
    let accounts = crate::support::all_accounts(&mut client).await;
    assert!(totals(&accounts).values().all(|t| *t == 0), "debits equal credits");
    // A node that joins now, from the promoted database alone, has the same balances.
    let b = node(&dir.path().join("b"), &url, "b");
    share_operator_key(&a.addr, &b.addr);
    let mut joined = operator_client(&b.addr).await;
    for wallet in &wallets {
        assert!(
            eventually(Duration::from_secs(10), || {
                let (mut joined, wallet) = (joined.clone(), wallet.clone());
                async move {
                    joined.get_account(&wallet).await.ok().map(|a| a.posted_balance) == Some("0.40".into())
                }
            })
            .await
        );
    }
    let _ = &mut joined;
}

/// A single node's existing ledger becomes the journal of record of a new cluster (its
/// journal is copied into the empty store), the leader keeps snapshots there, and a node with
/// an empty data directory joins from the newest one: it loads the state from the snapshot
/// instead of replaying every record, copies the history (old transfers read back), and
/// follows the tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_seeds_a_cluster_and_a_new_node_joins_from_a_snapshot() {
    let dir = temp_dir();
    let data_a = dir.path().join("a");
    // A single node with history.
    let mut single = Server::start(&data_a);
    let mut client = single.client().await;
    crate::support::participant(&mut client, "fintech-a").await;
    let funding = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let wallet = client.create_account(NewAccount::new("fintech-a", "USD")).await.unwrap().id;
    let before = "00000000-0000-4000-8000-0000000000b0";
    client.transfer(NewTransfer::new(&funding, &wallet, "USD", "1.00").id(before)).await.unwrap();
    assert!(single.terminate().success());

    // The same data directory, now the first node of a cluster; snapshots every 5 events.
    let cluster = Cluster::start();
    let url = cluster.create_database("seed").await;
    let args =
        ["--journal-url", url.as_str(), "--node-id", "a", "--lease-ms", LEASE_MS, "--snapshot-events", "5"];
    let a = Server::spawn(&data_a, &args, &[], None).unwrap_or_else(|log| panic!("{log}"));
    crate::support::bootstrap(&a.addr, &data_a).unwrap();
    assert_eq!(leads(&a.addr).await, Some(true), "it leads, with its journal copied into the store");
    let mut client = operator_client(&a.addr).await;
    for i in 0..20 {
        let id = format!("00000000-0000-4000-8000-0000000001{i:02x}");
        client.transfer(NewTransfer::new(&funding, &wallet, "USD", "1.00").id(&id)).await.unwrap();
    }
    let log_a = data_a.with_extension("log");
    assert!(
        eventually(Duration::from_secs(10), || {
            let log_a = log_a.clone();
            async move {
                std::fs::read_to_string(&log_a)
                    .unwrap_or_default()
                    .contains("snapshot kept in the journal of record")
            }
        })
        .await,
        "the leader keeps a snapshot in the store"
    );

    let data_c = dir.path().join("c");
    let c = node(&data_c, &url, "c");
    share_operator_key(&a.addr, &c.addr);
    let log_c = std::fs::read_to_string(data_c.with_extension("log")).unwrap();
    assert!(log_c.contains("joined from the journal of record's snapshot"), "{log_c}");
    assert!(log_c.contains("snapshot_seq: Some("), "the state came from the snapshot:\n{log_c}");
    let mut joined = operator_client(&c.addr).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let (mut joined, wallet) = (joined.clone(), wallet.clone());
            async move { joined.get_account(&wallet).await.ok().map(|a| a.posted_balance) == Some("21.00".into()) }
        })
        .await
    );
    // History from before the cluster existed reads back on the joined node.
    assert_eq!(joined.get_transfer(before).await.unwrap().id, before);
    let lines = crate::support::all_lines(&mut joined, &wallet).await;
    assert_eq!(lines.len(), 21);
}
