//! The FX desk on a real ledger, below the wire: the quote store's bounds, execution against
//! the stored quote (a lost store refuses, a pruned one still answers retries), and a held
//! remittance posting by itself when a (short, test-only) cancellation window closes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use puente_fx::{FixedSide, Pair, QuoteKeyring, QuoteRequest, Segment};
use puente_ledger::identity::{Caller, Role};
use puente_ledger::{
    AccountFlags, AccountId, Ledger, LedgerConfig, Metadata, NewAccount, PendingState, Transfer,
    TransferFlags,
};
use puente_money::CurrencyCode;
use puente_server::fx_desk::{
    DeskError, Execution, FxConfig, FxDesk, IssuedQuote, PendingOrPosted, QuoteLimits, StoredRate, leg_id,
    now_ms,
};
use rust_decimal::Decimal;

const KEYS: &str = "k1:0101010101010101010101010101010101010101010101010101010101010101";
const SME_TTL_MS: u64 = 300_000;

fn new_id() -> u128 {
    u128::from_be_bytes(puente_fx::generate_quote_id().unwrap())
}

fn operator() -> Caller {
    Caller { participant: "operator".into(), role: Role::Operator, key_id: None }
}

fn request(participant: &str, segment: Segment, send_minor: u64) -> QuoteRequest {
    QuoteRequest {
        participant: participant.into(),
        segment,
        sell: CurrencyCode::USD,
        buy: CurrencyCode::MXN,
        fixed: FixedSide::Send(send_minor),
    }
}

fn set_rate(desk: &FxDesk, as_of_ms: u64) {
    let pair = Pair::new(CurrencyCode::USD, CurrencyCode::MXN).unwrap();
    let rate = StoredRate { pair, mid: Decimal::new(189_125, 4), as_of_ms, source: "test".into() };
    desk.set_rates(&[rate]).unwrap();
}

fn config(limits: QuoteLimits, window_ms: u64) -> FxConfig {
    FxConfig {
        signing_keys: Some(Arc::new(QuoteKeyring::from_text(KEYS).unwrap())),
        cancellation_window_ms: window_ms,
        quote_limits: limits,
        ..FxConfig::default()
    }
}

async fn open(dir: &Path, config: FxConfig) -> (Ledger, FxDesk) {
    let ledger = Ledger::open(LedgerConfig::new(dir)).unwrap();
    let desk = FxDesk::open(ledger.clone(), dir, config).await.unwrap();
    (ledger, desk)
}

/// A funded USD wallet of `participant` and an MXN recipient account: (usd, mxn).
async fn accounts(ledger: &Ledger, participant: &str) -> (AccountId, AccountId) {
    let account = |id: AccountId, owner: &str, currency| NewAccount {
        id,
        participant: owner.into(),
        currency,
        flags: AccountFlags::default(),
        overdraft_limit_minor: 0,
        holder_ref: String::new(),
        metadata: Metadata::new(),
    };
    let (funding, usd, mxn) = (new_id(), new_id(), new_id());
    let mut wallet = account(usd, participant, CurrencyCode::USD);
    wallet.flags.debits_must_not_exceed_credits = true;
    let opened = ledger
        .create_accounts(
            puente_ledger::Actor::system("tests"),
            vec![
                account(funding, "treasury", CurrencyCode::USD),
                wallet,
                account(mxn, "mx-bank", CurrencyCode::MXN),
            ],
        )
        .await
        .unwrap();
    assert!(opened.iter().all(|o| o.result.is_ok()));
    let fund = Transfer {
        id: new_id(),
        debit_account_id: funding,
        credit_account_id: usd,
        amount_minor: 100_000,
        currency: CurrencyCode::USD,
        flags: TransferFlags::default(),
        pending_id: 0,
        timeout_ms: 0,
        reference: "fund".into(),
        metadata: Metadata::new(),
    };
    assert!(
        ledger.create_transfers(puente_ledger::Actor::system("tests"), vec![fund]).await.unwrap()[0]
            .result
            .is_ok()
    );
    (usd, mxn)
}

fn balance(ledger: &Ledger, id: AccountId) -> (i128, u128, u128) {
    let account = ledger.get_account(id).unwrap().unwrap();
    (account.posted_balance_minor(), account.debits_pending_minor, account.credits_pending_minor)
}

/// Executes `issued` as the operator, from `usd` to `mxn`.
async fn run(
    desk: &FxDesk,
    issued: &IssuedQuote,
    usd: AccountId,
    mxn: AccountId,
    execution: u128,
) -> Result<Execution, DeskError> {
    desk.execute(&operator(), &issued.canonical, &issued.signature, &issued.key_id, usd, mxn, execution).await
}

/// How many quotes `participant` has in the store (every page).
fn listed(desk: &FxDesk, participant: &str) -> usize {
    desk.list_quotes(participant, None, 1_000).unwrap().0.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quote_store_stays_within_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let limits = QuoteLimits { per_participant_max: 3, stored_max: 5, retention_after_expiry_ms: 60_000 };
    let (ledger, desk) = open(dir.path(), config(limits, 1_800_000)).await;
    let t0 = now_ms();
    set_rate(&desk, t0);
    let quote = |who: &str, at: u64| desk.quote_at(&request(who, Segment::Sme, 1_000), at);
    let limit = |result: Result<_, DeskError>| match result {
        Err(DeskError::QuoteLimit { what, .. }) => what,
        other => panic!("expected the quote limit, got {other:?}"),
    };

    // Per participant: three outstanding quotes, then refused.
    for _ in 0..3 {
        quote("a", t0).unwrap();
    }
    assert_eq!(limit(quote("a", t0)), "outstanding quotes per participant");
    // In all: five, then refused while none has expired.
    quote("b", t0).unwrap();
    quote("b", t0).unwrap();
    assert_eq!(limit(quote("c", t0)), "stored quotes");
    assert_eq!((desk.stored_quotes().unwrap(), listed(&desk, "a"), listed(&desk, "c")), (5, 3, 0));

    // Once they have expired, new quotes evict expired ones (the participant's own first).
    let t1 = t0 + SME_TTL_MS;
    set_rate(&desk, t1);
    let fresh_a = quote("a", t1).unwrap();
    assert_eq!((desk.stored_quotes().unwrap(), listed(&desk, "a")), (5, 3));
    let fresh_c = quote("c", t1).unwrap();
    assert_eq!((desk.stored_quotes().unwrap(), listed(&desk, "c")), (5, 1));
    assert_eq!(desk.get_quote(&fresh_a.quote.id).unwrap(), fresh_a);

    // A mixed run: after every step the bounds hold, and pruning leaves nothing past retention.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut now = t1;
    for step in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        now += seed % 20_000;
        set_rate(&desk, now);
        let who = ["a", "b", "c", "d"][(seed >> 32) as usize % 4];
        let _ = quote(who, now);
        if step % 50 == 0 {
            desk.prune_expired(now).unwrap();
        }
        let per: Vec<usize> = ["a", "b", "c", "d"].iter().map(|p| listed(&desk, p)).collect();
        assert!(per.iter().all(|&n| n <= 3), "step {step}: {per:?}");
        assert_eq!(per.iter().sum::<usize>(), desk.stored_quotes().unwrap());
        assert!(desk.stored_quotes().unwrap() <= 5);
    }
    let last = now + SME_TTL_MS + limits.retention_after_expiry_ms;
    assert!(desk.prune_expired(last).unwrap() > 0);
    assert_eq!(desk.stored_quotes().unwrap(), 0);
    assert!(matches!(desk.get_quote(&fresh_c.quote.id), Err(DeskError::QuoteNotFound(_))));

    // The counts are rebuilt from the store at open.
    set_rate(&desk, last);
    quote("a", last).unwrap();
    quote("b", last).unwrap();
    drop(desk);
    let desk = FxDesk::open(ledger, dir.path(), config(limits, 1_800_000)).await.unwrap();
    // Opening prunes with the real clock: these quotes are dated in its future and stay.
    assert_eq!((desk.stored_quotes().unwrap(), listed(&desk, "a"), listed(&desk, "b")), (2, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quote_store_refuses_execution_and_a_pruned_quote_still_answers_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, desk) = open(dir.path(), config(QuoteLimits::default(), 1_800_000)).await;
    set_rate(&desk, now_ms());
    let (usd, mxn) = accounts(&ledger, "remit-app").await;
    let lost = desk.quote(&request("remit-app", Segment::Sme, 1_000)).unwrap();
    let before = (balance(&ledger, usd), balance(&ledger, mxn));

    // The store is lost (say, a restore: backups do not carry it). The same keys come back.
    drop(desk);
    std::fs::remove_dir_all(dir.path().join("fx")).unwrap();
    let desk =
        FxDesk::open(ledger.clone(), dir.path(), config(QuoteLimits::default(), 1_800_000)).await.unwrap();
    // Validly signed by the desk's own key, but not in its store: refused, nothing moves.
    assert!(matches!(run(&desk, &lost, usd, mxn, 1).await, Err(DeskError::QuoteNotFound(_))));
    assert_eq!((balance(&ledger, usd), balance(&ledger, mxn)), before);

    // A quote made now executes; once pruned, a retry still returns the first outcome (the
    // legs carry its digest), and a different quote re-signed under its id is refused.
    set_rate(&desk, now_ms());
    let issued = desk.quote(&request("remit-app", Segment::Sme, 3_000)).unwrap();
    let first = run(&desk, &issued, usd, mxn, 7).await.unwrap();
    assert!(!first.replayed);
    let paid = (balance(&ledger, usd), balance(&ledger, mxn));
    let past_retention = now_ms() + SME_TTL_MS + QuoteLimits::default().retention_after_expiry_ms;
    assert_eq!(desk.prune_expired(past_retention).unwrap(), 1);
    assert!(matches!(desk.get_quote(&issued.quote.id), Err(DeskError::QuoteNotFound(_))));
    let again = run(&desk, &issued, usd, mxn, 7).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer_ids, first.transfer_ids);
    assert!(matches!(run(&desk, &issued, usd, mxn, 8).await, Err(DeskError::AlreadyUsed)));
    let keyring = QuoteKeyring::from_text(KEYS).unwrap();
    let mut forged = issued.quote.clone();
    forged.converted_amount_minor += 10_000_000;
    forged.receive_amount_minor += 10_000_000;
    let (key_id, signature) = keyring.sign(&forged).unwrap();
    let result = desk.execute(&operator(), &forged.canonical_bytes(), &signature, &key_id, usd, mxn, 7).await;
    assert!(matches!(result, Err(DeskError::QuoteNotIssued(_))), "{result:?}");
    assert_eq!((balance(&ledger, usd), balance(&ledger, mxn)), paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_remittance_posts_by_itself_when_its_window_closes() {
    let dir = tempfile::tempdir().unwrap();
    // Shorter than Regulation E allows: only the desk takes it (the server's config refuses it).
    let window_ms = 1_500;
    let (ledger, desk) = open(dir.path(), config(QuoteLimits::default(), window_ms)).await;
    set_rate(&desk, now_ms());
    let (usd, mxn) = accounts(&ledger, "remit-app").await;
    let issued = desk.quote(&request("remit-app", Segment::Remittance, 10_000)).unwrap();
    let done =
        desk.execute(&operator(), &issued.canonical, &issued.signature, "", usd, mxn, 1).await.unwrap();
    assert_eq!(done.state, PendingOrPosted::Held);
    assert_eq!(
        (done.cancellation_window_ms, done.cancel_deadline_ms),
        (window_ms, done.paid_at_ms + window_ms)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while ledger.pending_state(leg_id(&issued.quote.id, 1)).await.unwrap() != Some(PendingState::Posted) {
        assert!(Instant::now() < deadline, "the remittance did not post when its window closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (posted, debits_pending, _) = balance(&ledger, usd);
    assert_eq!((posted, debits_pending), (100_000 - issued.quote.total_debit_minor as i128, 0));
    assert_eq!(balance(&ledger, mxn).0, issued.quote.receive_amount_minor as i128);
    assert!(matches!(
        desk.cancel(&operator(), &issued.quote.id).await,
        Err(DeskError::CancellationWindowClosed)
    ));
}
