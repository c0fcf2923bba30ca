//! The journal against real PostgreSQL clusters (`puente_journal_pg::testing`): no mocks.
//!
//! Tests share one cluster while they overlap (each in a database of its own); the restart
//! test has its own, and the failover test a primary with a synchronous standby.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use puente_journal_pg::testing::{Cluster, multi_host_url};
use puente_journal_pg::{
    Lease, PgJournal, PgJournalError, PgJournalOptions, READ_PAGE_BYTES_MAX, READ_PAGE_RECORDS_MAX,
    SCHEMA_VERSION, redact_url,
};

/// The cluster the overlapping tests share; it stops when the last of them ends.
fn shared_cluster() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cluster) = slot.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(Cluster::start());
    *slot = Arc::downgrade(&cluster);
    cluster
}

/// A fresh database on the shared cluster.
async fn database(name: &str) -> (Arc<Cluster>, String) {
    let cluster = shared_cluster();
    let url = cluster.create_database(name).await;
    (cluster, url)
}

/// A plain connection for looking behind the API.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn stored_epochs(url: &str) -> Vec<(i64, i64)> {
    let client = raw(url).await;
    let rows = client.query("SELECT seq, epoch FROM puente_journal ORDER BY seq", &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// Polls `condition` until it holds, failing the test after `within_ms`.
async fn wait_until<F: AsyncFnMut() -> bool>(within_ms: u64, what: &str, mut condition: F) {
    let deadline = Instant::now() + Duration::from_millis(within_ms);
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {within_ms} ms");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_all(journal: &PgJournal, page: usize) -> Vec<(u64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = journal.read_after(after, page).await.unwrap();
        let Some(last) = batch.last() else { break };
        assert!(batch.len() <= page);
        after = last.0;
        all.extend(batch);
    }
    all
}

fn record(seq: u64) -> Vec<u8> {
    format!("record {seq}").into_bytes()
}

/// Many records of every size (an empty one, several MiB ones) go in and come back in order,
/// whole and in pages; `last_seq` follows; pages are capped by records and by bytes.
#[tokio::test]
async fn records_round_trip_in_order_and_in_pages() {
    let (_cluster, url) = database("round_trip").await;
    let journal = PgJournal::connect(&url).await.unwrap();
    assert_eq!(journal.last_seq().await.unwrap(), 0);
    assert!(journal.read_after(0, 10).await.unwrap().is_empty());
    let lease = journal.try_acquire("node-a", "10.0.0.1:7000", 60_000).await.unwrap().unwrap();
    assert_eq!((lease.epoch, lease.last_seq), (1, 0));

    let large: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut expected: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut seq = 0;
    for value in [record(1), Vec::new(), large.clone(), vec![0u8; 3], b"\x00\xff\\x'".to_vec()] {
        seq += 1;
        journal.append(&lease, seq, &value).await.unwrap();
        expected.push((seq, value));
    }
    // Batches, one of them past the page's record cap.
    let batch: Vec<Vec<u8>> = (seq + 1..=seq + 1_100).map(record).collect();
    for chunk in batch.chunks(550) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        journal.append_many(&lease, seq + 1, &refs).await.unwrap();
        for value in chunk {
            seq += 1;
            expected.push((seq, value.clone()));
        }
    }
    assert_eq!(journal.last_seq().await.unwrap(), seq);

    let first_page = journal.read_after(0, usize::MAX).await.unwrap();
    assert_eq!(first_page.len(), READ_PAGE_RECORDS_MAX, "a page holds at most READ_PAGE_RECORDS_MAX records");
    assert_eq!(first_page[..], expected[..READ_PAGE_RECORDS_MAX]);
    assert_eq!(read_all(&journal, 7).await, expected);
    assert_eq!(read_all(&journal, 1_000).await, expected);
    assert_eq!(journal.read_after(2, 2).await.unwrap(), expected[2..4]);
    assert!(journal.read_after(seq, 10).await.unwrap().is_empty());
    assert!(matches!(journal.read_after(0, 0).await, Err(PgJournalError::Invalid(_))));

    // Pages stop at READ_PAGE_BYTES_MAX: three records of 30 MiB come back two, then one.
    let big = 30 * 1024 * 1024;
    assert!(2 * big <= READ_PAGE_BYTES_MAX && 3 * big > READ_PAGE_BYTES_MAX);
    let bigs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; big]).collect();
    let before_bigs = seq;
    for value in &bigs {
        seq += 1;
        journal.append(&lease, seq, value).await.unwrap();
    }
    let page = journal.read_after(before_bigs, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!((page[0].0, page[1].0), (before_bigs + 1, before_bigs + 2));
    assert!(page[0].1 == bigs[0] && page[1].1 == bigs[1]);
    let page = journal.read_after(before_bigs + 2, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(page[0].1 == bigs[2]);
    assert_eq!(journal.last_seq().await.unwrap(), seq);
}

/// A gap in the stored sequence numbers is reported as corruption, never skipped.
#[tokio::test]
async fn a_gap_in_the_journal_is_corrupt() {
    let (_cluster, url) = database("gap").await;
    let journal = PgJournal::connect(&url).await.unwrap();
    let lease = journal.try_acquire("node-a", "a:1", 60_000).await.unwrap().unwrap();
    for seq in 1..=4 {
        journal.append(&lease, seq, &record(seq)).await.unwrap();
    }
    raw(&url).await.execute("DELETE FROM puente_journal WHERE seq = 3", &[]).await.unwrap();
    assert_eq!(journal.read_after(0, 2).await.unwrap().len(), 2);
    assert!(matches!(journal.read_after(0, 10).await, Err(PgJournalError::Corrupt(_))));
    assert!(matches!(journal.read_after(2, 10).await, Err(PgJournalError::Corrupt(_))));
}

/// Node A leads (epoch 1) and appends 1..=3; its lease runs out; node B acquires (epoch 2) and
/// appends 4. A's appends with its old lease are fenced and store nothing; A's renew says
/// it lost the lease.
#[tokio::test]
async fn a_new_leader_fences_the_old_one() {
    let (_cluster, url) = database("fencing").await;
    let node_a = PgJournal::connect(&url).await.unwrap();
    let node_b = PgJournal::connect(&url).await.unwrap();
    let lease_a = node_a.try_acquire("node-a", "10.0.0.1:7000", 1_500).await.unwrap().unwrap();
    assert_eq!(lease_a.epoch, 1);
    for seq in 1..=3 {
        node_a.append(&lease_a, seq, &record(seq)).await.unwrap();
    }
    assert_eq!(node_b.try_acquire("node-b", "10.0.0.2:7000", 300).await.unwrap(), None, "A's lease is live");

    wait_until(10_000, "A's lease expires", async || node_b.leader().await.unwrap().unwrap().expired).await;
    let lease_b = node_b.try_acquire("node-b", "10.0.0.2:7000", 60_000).await.unwrap().unwrap();
    assert_eq!((lease_b.epoch, lease_b.last_seq), (2, 3), "B starts after A's last record");
    node_b.append(&lease_b, 4, b"from B").await.unwrap();

    for seq in [4, 5] {
        let refused = node_a.append(&lease_a, seq, b"late from A").await;
        assert_eq!(
            refused,
            Err(PgJournalError::Fenced { epoch: 1, seq, current_epoch: 2, last_seq: 4 }),
            "A's append of {seq}"
        );
    }
    assert!(matches!(
        node_a.append_many(&lease_a, 5, &[b"x", b"y"]).await,
        Err(PgJournalError::Fenced { .. })
    ));
    assert!(!node_a.renew(&lease_a, 60_000).await.unwrap(), "A lost the lease");
    assert!(!node_a.release(&lease_a).await.unwrap(), "A cannot release B's lease");

    let stored = read_all(&node_b, 100).await;
    let expected: Vec<(u64, Vec<u8>)> =
        vec![(1, record(1)), (2, record(2)), (3, record(3)), (4, b"from B".to_vec())];
    assert_eq!(stored, expected);
    assert_eq!(stored_epochs(&url).await, vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
    assert_eq!(node_a.last_seq().await.unwrap(), 4);
    let leader = node_a.leader().await.unwrap().unwrap();
    assert_eq!((leader.epoch, leader.holder.as_str(), leader.expired), (2, "node-b", false));
    assert!(node_b.renew(&lease_b, 60_000).await.unwrap());
}

/// Only `last_seq + 1` appends: a skipped or repeated sequence number is refused and changes
/// nothing.
#[tokio::test]
async fn only_the_next_sequence_number_appends() {
    let (_cluster, url) = database("next_seq").await;
    let journal = PgJournal::connect(&url).await.unwrap();
    let lease = journal.try_acquire("node-a", "a:1", 60_000).await.unwrap().unwrap();
    journal.append(&lease, 1, &record(1)).await.unwrap();
    journal.append(&lease, 2, &record(2)).await.unwrap();

    let fenced = |seq| Err(PgJournalError::Fenced { epoch: 1, seq, current_epoch: 1, last_seq: 2 });
    assert_eq!(journal.append(&lease, 4, b"skipped 3").await, fenced(4));
    assert_eq!(journal.append(&lease, 2, b"again 2").await, fenced(2));
    assert_eq!(journal.append(&lease, 1, b"again 1").await, fenced(1));
    assert_eq!(journal.append_many(&lease, 2, &[b"overlap 2", b"3"]).await, fenced(2));
    assert_eq!(journal.append_many(&lease, 4, &[b"4", b"5"]).await, fenced(4));
    assert_eq!(journal.last_seq().await.unwrap(), 2);
    assert_eq!(read_all(&journal, 10).await, vec![(1, record(1)), (2, record(2))]);

    journal.append(&lease, 3, &record(3)).await.unwrap();
    assert_eq!(journal.last_seq().await.unwrap(), 3);
}

/// Two connections append the same sequence number under the same lease at the same moment,
/// many times over: exactly one commits each time, and the stored record is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_of_one_seq_commit_once() {
    let (_cluster, url) = database("concurrent").await;
    let first = Arc::new(PgJournal::connect(&url).await.unwrap());
    let second = Arc::new(PgJournal::connect(&url).await.unwrap());
    let lease: Lease = first.try_acquire("node-a", "a:1", 60_000).await.unwrap().unwrap();
    const ROUNDS: u64 = 30;
    let mut winners = Vec::new();
    for seq in 1..=ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = [(first.clone(), b'1'), (second.clone(), b'2')]
            .into_iter()
            .map(|(journal, who)| {
                let (barrier, lease) = (barrier.clone(), lease.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    journal.append(&lease, seq, &[who]).await.map(|()| who)
                })
            })
            .collect();
        let mut committed = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(who) => committed.push(who),
                Err(PgJournalError::Fenced { seq: refused, current_epoch: 1, last_seq, .. }) => {
                    assert_eq!((refused, last_seq), (seq, seq));
                }
                Err(other) => panic!("round {seq}: {other}"),
            }
        }
        assert_eq!(committed.len(), 1, "round {seq}: exactly one append commits");
        winners.push((seq, vec![committed[0]]));
    }
    assert_eq!(read_all(&first, 1_000).await, winners);
    assert_eq!(first.last_seq().await.unwrap(), ROUNDS);
}

/// A live lease is not taken; `release` hands it over at once; every acquisition has a higher
/// epoch; the holder may take its own lease again (which fences its earlier one).
#[tokio::test]
async fn a_live_lease_is_kept_and_release_hands_it_over_at_once() {
    let (_cluster, url) = database("handover").await;
    let node_a = PgJournal::connect(&url).await.unwrap();
    let node_b = PgJournal::connect(&url).await.unwrap();
    assert_eq!(node_a.leader().await.unwrap(), None, "never held");

    let mut epochs = Vec::new();
    let mut lease = node_a.try_acquire("node-a", "10.0.0.1:7000", 60_000).await.unwrap().unwrap();
    epochs.push(lease.epoch);
    for round in 0..4 {
        let (holder, other, other_name) =
            if round % 2 == 0 { (&node_a, &node_b, "node-b") } else { (&node_b, &node_a, "node-a") };
        let info = other.leader().await.unwrap().unwrap();
        assert_eq!(
            (info.epoch, info.holder.as_str(), info.expired),
            (lease.epoch, lease.holder.as_str(), false)
        );
        assert_eq!(info.address, lease.address);
        assert!(info.remaining_ms > 50_000 && info.remaining_ms <= 60_000, "{}", info.remaining_ms);
        assert_eq!(other.try_acquire(other_name, "other:1", 60_000).await.unwrap(), None, "round {round}");

        let started = Instant::now();
        assert!(holder.release(&lease).await.unwrap());
        let info = other.leader().await.unwrap().unwrap();
        assert!(info.expired && info.remaining_ms == 0);
        let next = other.try_acquire(other_name, &format!("{other_name}:7000"), 60_000).await.unwrap();
        let next = next.expect("a released lease is free at once");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(next.epoch > lease.epoch);
        epochs.push(next.epoch);
        lease = next;
    }
    // Taking one's own live lease again bumps the epoch and fences the earlier one.
    let again = node_a.try_acquire("node-a", "10.0.0.1:7001", 60_000).await.unwrap().unwrap();
    assert!(again.epoch > lease.epoch);
    epochs.push(again.epoch);
    assert!(matches!(node_a.append(&lease, 1, b"old").await, Err(PgJournalError::Fenced { .. })));
    assert!(!node_a.renew(&lease, 60_000).await.unwrap(), "the earlier lease of the same holder is lost");
    assert!(!node_a.release(&lease).await.unwrap());
    assert!(node_a.renew(&again, 60_000).await.unwrap());
    node_a.append(&again, 1, b"new").await.unwrap();
    assert!(epochs.windows(2).all(|pair| pair[0] < pair[1]), "{epochs:?}");
    assert_eq!(epochs, vec![1, 2, 3, 4, 5, 6]);

    // Bounds are checked before the database.
    assert!(matches!(node_b.try_acquire("", "b:1", 1_000).await, Err(PgJournalError::Invalid(_))));
    assert!(matches!(node_b.try_acquire("node-b", "b:1", 0).await, Err(PgJournalError::Invalid(_))));
}

/// `put_snapshot` stores, `latest_snapshot` returns the newest, only `keep` newest remain,
/// and a snapshot past the journal's end is refused.
#[tokio::test]
async fn snapshots_keep_only_the_newest() {
    let (_cluster, url) = database("snapshots").await;
    let journal = PgJournal::connect(&url).await.unwrap();
    assert_eq!(journal.latest_snapshot().await.unwrap(), None);
    let lease = journal.try_acquire("node-a", "a:1", 60_000).await.unwrap().unwrap();
    for seq in 1..=10 {
        journal.append(&lease, seq, &record(seq)).await.unwrap();
    }
    let kept = async || -> Vec<i64> {
        let rows = raw(&url).await.query("SELECT seq FROM puente_snapshots ORDER BY seq", &[]).await.unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    };
    for seq in [2, 4, 6, 8] {
        journal.put_snapshot(seq, format!("state at {seq}").as_bytes(), 3).await.unwrap();
        assert_eq!(
            journal.latest_snapshot().await.unwrap(),
            Some((seq, format!("state at {seq}").into_bytes()))
        );
    }
    assert_eq!(kept().await, vec![4, 6, 8]);
    journal.put_snapshot(8, b"state at 8, again", 3).await.unwrap();
    assert_eq!(journal.latest_snapshot().await.unwrap(), Some((8, b"state at 8, again".to_vec())));
    journal.put_snapshot(10, &[], 1).await.unwrap();
    assert_eq!(kept().await, vec![10]);
    assert_eq!(journal.latest_snapshot().await.unwrap(), Some((10, Vec::new())));

    assert!(matches!(journal.put_snapshot(11, b"future", 3).await, Err(PgJournalError::Invalid(_))));
    assert!(matches!(journal.put_snapshot(9, b"x", 0).await, Err(PgJournalError::Invalid(_))));
    assert_eq!(kept().await, vec![10]);
}

/// The schema is made once whoever connects first (concurrent connects included) and a
/// newer schema version is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_made_once_and_versioned() {
    let (_cluster, url) = database("schema").await;
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgJournal::connect(&url).await })
        })
        .collect();
    for connect in connects {
        connect.await.unwrap().unwrap();
    }
    let client = raw(&url).await;
    let version: i64 = client.query_one("SELECT version FROM puente_schema", &[]).await.unwrap().get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let leases: i64 = client.query_one("SELECT count(*) FROM puente_lease", &[]).await.unwrap().get(0);
    assert_eq!(leases, 1);
    client.execute("UPDATE puente_schema SET version = version + 1", &[]).await.unwrap();
    assert_eq!(
        PgJournal::connect(&url).await.unwrap_err(),
        PgJournalError::SchemaTooNew { found: SCHEMA_VERSION + 1, supported: SCHEMA_VERSION }
    );
}

/// A call that waits on a lock held elsewhere returns a Db error within the call timeout (it
/// never hangs; the server aborts the statement at four fifths of it, so the append did not
/// commit when the lock is released afterwards), and the next call works.
#[tokio::test]
async fn a_blocked_call_times_out_and_the_next_one_reconnects() {
    let (_cluster, url) = database("timeout").await;
    let options = PgJournalOptions { call_timeout_ms: 500 };
    let journal = PgJournal::connect_with(&url, options).await.unwrap();
    let lease = journal.try_acquire("node-a", "a:1", 60_000).await.unwrap().unwrap();
    journal.append(&lease, 1, b"one").await.unwrap();

    let mut blocker = raw(&url).await;
    let transaction = blocker.transaction().await.unwrap();
    transaction.query("SELECT * FROM puente_lease WHERE id = 1 FOR UPDATE", &[]).await.unwrap();
    let started = Instant::now();
    let outcome = journal.append(&lease, 2, b"two").await;
    let waited = started.elapsed();
    assert!(matches!(outcome, Err(PgJournalError::Db(_))), "{outcome:?}");
    assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(5), "{waited:?}");
    transaction.rollback().await.unwrap();

    assert_eq!(journal.last_seq().await.unwrap(), 1, "the timed-out append left nothing");
    journal.append(&lease, 2, b"two").await.unwrap();
    assert_eq!(journal.last_seq().await.unwrap(), 2);
}

/// Decided behaviour across a database restart: calls while the server is down return Db
/// errors promptly; the call that meets the broken connection returns a Db error or, if the
/// break was already noticed, reconnects and succeeds; the call after that reconnects. The
/// lease and every committed record survive (a crash-like stop included).
#[tokio::test]
async fn a_database_restart_gives_db_errors_then_reconnects() {
    let mut cluster = Cluster::start();
    let url = cluster.url();
    let options = PgJournalOptions { call_timeout_ms: 2_000 };
    let journal = PgJournal::connect_with(&url, options).await.unwrap();
    let lease = journal.try_acquire("node-a", "a:1", 600_000).await.unwrap().unwrap();
    journal.append(&lease, 1, b"one").await.unwrap();
    journal.append(&lease, 2, b"two").await.unwrap();

    for (round, immediate) in [(0u64, false), (1, true)] {
        cluster.stop(immediate);
        let started = Instant::now();
        let down = journal.append(&lease, 3 + round, b"while down").await;
        assert!(matches!(down, Err(PgJournalError::Db(_))), "{down:?}");
        assert!(matches!(journal.last_seq().await, Err(PgJournalError::Db(_))));
        assert!(started.elapsed() < Duration::from_secs(5), "calls while down took {:?}", started.elapsed());
        cluster.start_again();

        let started = Instant::now();
        match journal.last_seq().await {
            Ok(last) => assert_eq!(last, 2 + round),
            Err(PgJournalError::Db(_)) => {}
            Err(other) => panic!("after the restart: {other}"),
        }
        assert_eq!(journal.last_seq().await.unwrap(), 2 + round, "committed records survive");
        assert!(started.elapsed() < Duration::from_secs(5));
        journal.append(&lease, 3 + round, b"after").await.unwrap();
        assert!(journal.renew(&lease, 600_000).await.unwrap(), "the lease survives a restart");
    }
    assert_eq!(read_all(&journal, 10).await.len(), 4);

    // The restart breaks a connection held across it: a plain restart while connected.
    cluster.restart(false);
    let outcome = journal.append(&lease, 5, b"five").await;
    match outcome {
        Ok(()) => assert_eq!(journal.last_seq().await.unwrap(), 5),
        Err(PgJournalError::Db(_)) => {
            assert_eq!(journal.last_seq().await.unwrap(), 4);
            journal.append(&lease, 5, b"five").await.unwrap();
        }
        Err(other) => panic!("{other}"),
    }
}

/// Connection errors name the server without the password.
#[tokio::test]
async fn connection_errors_never_show_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://puente:Sup3rS3cret@127.0.0.1:{port}/ledger");
    let options = PgJournalOptions { call_timeout_ms: 2_000 };
    let error = PgJournal::connect_with(&url, options).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, PgJournalError::Db(_)), "{text}");
    assert!(!text.contains("Sup3rS3cret"), "{text}");
    assert!(text.contains(&redact_url(&url)), "{text}");
    let bad = PgJournal::connect("postgres://u:Sup3rS3cret@127.0.0.1:notaport/d").await.unwrap_err();
    assert!(!bad.to_string().contains("Sup3rS3cret"), "{bad}");
}

/// Issue 13's failover: a primary with a synchronous streaming standby; the journal, given
/// both in one URL with `target_session_attrs=read-write`, appends in a loop; the primary is
/// killed under that load (immediate stop, like a crash). While only the read-only standby is
/// up, every call fails with a Db error (the client refuses the standby: it does not allow
/// writes). Then the standby is promoted: through the same URL the journal reconnects to it,
/// the same holder takes its lease again (epoch + 1, which fences the old one) and appends on
/// from `last_seq() + 1`. Every append acknowledged before the kill is on the promoted standby
/// with its bytes, the journal is contiguous (the one append in flight at the kill may or may
/// not be there), and appends continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_synchronous_standby_has_every_acknowledged_append() {
    let (mut primary, mut standby) = tokio::task::block_in_place(|| {
        let primary = Cluster::start_primary();
        let standby = Cluster::start_standby_of(&primary);
        (primary, standby)
    });
    let row = raw(&primary.url())
        .await
        .query_one(
            "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names'), \
             (SELECT string_agg(sync_state, ',') FROM pg_stat_replication)",
            &[],
        )
        .await
        .unwrap();
    let settings: (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(settings, ("on".into(), "*".into(), "sync".into()), "a zero-loss pair");
    assert!(standby.is_in_recovery());
    primary.create_database("failover").await;

    let url = multi_host_url(&[&primary, &standby], "failover");
    let options = PgJournalOptions { call_timeout_ms: 2_000 };
    let journal = Arc::new(PgJournal::connect_with(&url, options.clone()).await.unwrap());
    let lease = journal.try_acquire("node-a", "10.0.0.1:7000", 600_000).await.unwrap().unwrap();
    assert_eq!((lease.epoch, lease.last_seq), (1, 0));
    // A read-only node listed first is passed over: this journal renews the lease (a write),
    // so it is on the primary.
    let standby_first =
        PgJournal::connect_with(&multi_host_url(&[&standby, &primary], "failover"), options.clone())
            .await
            .unwrap();
    assert!(standby_first.renew(&lease, 600_000).await.unwrap());
    drop(standby_first);

    // The writer appends seq 1, 2, ... until a call fails, and records what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let writer = {
        let (journal, lease, acked) = (journal.clone(), lease.clone(), acked.clone());
        tokio::spawn(async move {
            let mut seq = 1;
            loop {
                match journal.append(&lease, seq, &record(seq)).await {
                    Ok(()) => acked.lock().unwrap().push(seq),
                    Err(error) => return (seq, error, Instant::now()),
                }
                seq += 1;
            }
        })
    };
    const BEFORE_KILL: usize = 100;
    wait_until(30_000, "appends acknowledged before the kill", async || {
        acked.lock().unwrap().len() >= BEFORE_KILL
    })
    .await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| primary.kill());
    let (in_flight, error, failed_at) = match tokio::time::timeout(Duration::from_secs(10), writer).await {
        Ok(joined) => joined.unwrap(),
        Err(_) => panic!("the writer did not notice the kill within 10 s"),
    };
    assert!(failed_at >= killed_at, "the writer failed before the kill: {error}");
    assert!(matches!(error, PgJournalError::Db(_)), "{error}");
    let acked: Vec<u64> = acked.lock().unwrap().clone();
    assert!(acked.len() >= BEFORE_KILL);
    assert_eq!(acked, (1..in_flight).collect::<Vec<u64>>(), "acknowledged in order until the kill");

    // Only the standby is up, read-only: nothing connects for writing, every call fails.
    let started = Instant::now();
    for _ in 0..3 {
        let refused = journal.append(&lease, in_flight, &record(in_flight)).await;
        assert!(matches!(refused, Err(PgJournalError::Db(_))), "{refused:?}");
        let refused = journal.last_seq().await;
        assert!(matches!(refused, Err(PgJournalError::Db(_))), "{refused:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "calls while down took {:?}", started.elapsed());
    assert!(matches!(
        journal.try_acquire("node-a", "10.0.0.1:7000", 600_000).await,
        Err(PgJournalError::Db(_))
    ));
    // Why: the client reaches the standby and turns it down (with a call timeout that a busy
    // machine does not reach, so the standby's answer is the last error).
    let patient = PgJournalOptions { call_timeout_ms: 10_000 };
    let refused = PgJournal::connect_with(&url, patient).await.unwrap_err();
    assert!(
        refused.to_string().contains("does not allow writes"),
        "the standby is reached and refused: {refused}"
    );
    assert!(standby.is_in_recovery(), "still a standby");

    tokio::task::block_in_place(|| standby.promote());
    assert!(!standby.is_in_recovery(), "promoted");
    // The same URL now finds the promoted standby (bounded: a reconnect may take a moment).
    let mut last_seq = None;
    wait_until(10_000, "the journal reconnects to the promoted standby", async || {
        last_seq = journal.last_seq().await.ok();
        last_seq.is_some()
    })
    .await;
    let last_seq = last_seq.unwrap();
    assert!(
        last_seq == in_flight - 1 || last_seq == in_flight,
        "last_seq {last_seq}: the last acknowledged append was {}, the one in flight {in_flight}",
        in_flight - 1
    );
    let again = journal.try_acquire("node-a", "10.0.0.1:7000", 600_000).await.unwrap();
    let again = again.expect("the same holder takes its lease again");
    assert_eq!((again.epoch, again.last_seq), (lease.epoch + 1, last_seq));
    assert!(matches!(
        journal.append(&lease, last_seq + 1, b"under the old lease").await,
        Err(PgJournalError::Fenced { epoch: 1, current_epoch: 2, .. })
    ));
    const AFTER: u64 = 20;
    for seq in last_seq + 1..=last_seq + AFTER {
        journal.append(&again, seq, &record(seq)).await.unwrap();
    }

    // Read on the promoted standby itself: every acknowledged seq with its bytes, no gap.
    let on_standby = PgJournal::connect(&standby.url_for("failover")).await.unwrap();
    let stored = read_all(&on_standby, 1_000).await;
    let expected: Vec<(u64, Vec<u8>)> = (1..=last_seq + AFTER).map(|seq| (seq, record(seq))).collect();
    assert_eq!(stored, expected);
    for seq in &acked {
        assert_eq!(stored[*seq as usize - 1], (*seq, record(*seq)), "acknowledged seq {seq}");
    }
    let epochs = stored_epochs(&standby.url_for("failover")).await;
    let expected_epochs: Vec<(i64, i64)> = (1..=(last_seq + AFTER) as i64)
        .map(|seq| (seq, if seq as u64 <= last_seq { 1 } else { 2 }))
        .collect();
    assert_eq!(epochs, expected_epochs);
    assert_eq!(on_standby.last_seq().await.unwrap(), last_seq + AFTER);
}
