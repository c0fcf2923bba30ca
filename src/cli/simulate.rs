//! `puente simulate`: a seeded, realistic corridor day posted through the real API, for demos,
//! tests and benchmarks. Participants of skewed sizes on both sides (`us00..`, `mx00..`),
//! remittances mostly US → MX with log-normal-ish amounts around USD 300, SME trade payments both
//! ways (`puente_settlement::simulate`). Each participant gets an operating and a settlement
//! account per currency and a settlement profile (valid ABA, CLABE and BIC); every transfer goes
//! from the debtor's operating account to the creditor's, so it is an obligation in the open
//! window of its currency.
//!
//! Ids are derived from the seed: running the same simulation twice is an idempotent retry
//! (every transfer comes back `replayed`), not a second day. Use another --seed for another day.

use std::collections::BTreeMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use puente_client::{Client, NewAccount, NewTransfer, pb};
use puente_ledger::settlement::Country;
use serde_json::json;

use super::settlement::SettlementClient;
use super::{CliError, Output};

/// Most transfers one simulation posts.
const TRANSFERS_MAX: usize = 10_000_000;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Seed: the same seed posts the same day (and a rerun is an idempotent retry).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of transfers.
    #[arg(long, default_value_t = 10_000)]
    transfers: usize,
    /// US participants (1..=100).
    #[arg(long, default_value_t = 10)]
    us: usize,
    /// MX participants (1..=100).
    #[arg(long, default_value_t = 10)]
    mx: usize,
    /// Transfers per request (1..=8189).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Net Debit Cap of every participant in both currencies (decimal text).
    #[arg(long, default_value = "1000000000.00")]
    net_debit_cap: String,
}

/// Account ids are fixed per participant, currency and role (so that several simulated days
/// share the participants' accounts).
pub fn account_id(participant: &str, currency: &str, role: &str) -> String {
    puente_settlement::simulated_account_id(participant, currency, role)
}

fn transfer_id(seed: u64, index: usize) -> String {
    puente_settlement::simulated_transfer_id(seed, index)
}

pub async fn run(
    client: &mut Client,
    settlement: &mut SettlementClient,
    args: SimulateArgs,
    out: &Output,
) -> Result<(), CliError> {
    if args.transfers > TRANSFERS_MAX {
        return Err(CliError::Usage(format!("--transfers: at most {TRANSFERS_MAX}")));
    }
    if !(1..=puente_ledger::BATCH_EVENTS_MAX).contains(&args.batch) {
        return Err(CliError::Usage(format!("--batch: 1 to {}", puente_ledger::BATCH_EVENTS_MAX)));
    }
    let started = Instant::now();
    let day = puente_settlement::simulate::corridor(args.seed, args.transfers, args.us, args.mx)
        .map_err(|e| CliError::Usage(e.to_string()))?;

    set_up(client, settlement, &day, &args.net_debit_cap).await?;

    let posted = post_transfers(client, &day, args.seed, args.batch).await?;
    let Posted { codes, replayed, gross } = posted;

    let open = settlement
        .list_windows(pb::ListWindowsRequest {
            state: pb::WindowState::Open as i32,
            page_size: 100,
            ..Default::default()
        })
        .await
        .map_err(|s| CliError::from(puente_client::ClientError::from(s)))?
        .into_inner()
        .windows;
    let elapsed = started.elapsed();
    let value = json!({
        "seed": args.seed,
        "participants": day.participants.iter().map(|p| &p.id).collect::<Vec<_>>(),
        "transfers": day.transfers.len(),
        "results": codes,
        "replayed": replayed,
        "gross": gross.iter().map(|(c, v)| (c.clone(), puente_money::format_minor(*v, 2))).collect::<BTreeMap<_, _>>(),
        "open_windows": open.iter().map(|w| json!({"window_id": w.window_id, "currency": w.currency_code, "obligation_count": w.obligation_count})).collect::<Vec<_>>(),
        "elapsed_ms": elapsed.as_millis() as u64,
    });
    out.print(value, || {
        let mut text = format!(
            "simulated corridor day (seed {}): {} participants, {} transfers in {:.1}s\n",
            args.seed,
            day.participants.len(),
            day.transfers.len(),
            elapsed.as_secs_f64()
        );
        for (code, count) in &codes {
            text.push_str(&format!("  {code}: {count}\n"));
        }
        if replayed > 0 {
            text.push_str(&format!("  ({replayed} were retries of an earlier run with this seed)\n"));
        }
        for (currency, value) in &gross {
            text.push_str(&format!("  gross {currency}: {}\n", puente_money::format_minor(*value, 2)));
        }
        for w in &open {
            text.push_str(&format!(
                "  open window {} ({}): {} obligations\n",
                w.window_id, w.currency_code, w.obligation_count
            ));
        }
        text
    });
    Ok(())
}

/// Registers the day's participants (unless an earlier simulated day did), opens their
/// operating and settlement accounts in USD and MXN, and sets their settlement profiles.
async fn set_up(
    client: &mut Client,
    settlement: &mut SettlementClient,
    day: &puente_settlement::simulate::SimDay,
    net_debit_cap: &str,
) -> Result<(), CliError> {
    // Participants: registered (with a key nobody keeps: the operator acts for them) unless
    // an earlier simulated day registered them.
    for p in &day.participants {
        let key = puente_client::NewApiKey::generate()?;
        let request = pb::CreateParticipantRequest {
            participant_id: p.id.clone(),
            display_name: p.name.clone(),
            role: pb::Role::Participant as i32,
            key: Some(key.proto()),
        };
        match client.participants().create_participant(request).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => return Err(CliError::from(puente_client::ClientError::from(status))),
        }
    }

    // Accounts: operating and settlement, in USD and MXN, per participant.
    let mut accounts = Vec::new();
    for p in &day.participants {
        for currency in ["USD", "MXN"] {
            for role in ["operating", "settlement"] {
                let account =
                    NewAccount::new(&p.id, currency).id(&account_id(&p.id, currency, role)).holder_ref(role);
                accounts.push(account.0);
            }
        }
    }
    for result in client.create_accounts(accounts).await? {
        if result.code != "OK" {
            return Err(CliError::Client(format!("account {}: {}", result.index, result.code)));
        }
    }

    // Settlement profiles.
    for p in &day.participants {
        let (country, usd_rail) = match p.country {
            Country::Us => (pb::Country::Us, pb::SettlementRail::Fedwire),
            Country::Mx => (pb::Country::Mx, pb::SettlementRail::AchDirectoMexico),
        };
        let profile = pb::ParticipantProfile {
            participant: p.id.clone(),
            name: p.name.clone(),
            bic: p.bic.clone(),
            country: country as i32,
            currencies: vec![
                pb::CurrencySettlement {
                    currency_code: "USD".into(),
                    rail: usd_rail as i32,
                    bank_id: p.aba.clone(),
                    net_debit_cap: net_debit_cap.to_owned(),
                    settlement_account_id: account_id(&p.id, "USD", "settlement"),
                },
                pb::CurrencySettlement {
                    currency_code: "MXN".into(),
                    rail: pb::SettlementRail::Spei as i32,
                    bank_id: p.clabe.clone(),
                    net_debit_cap: net_debit_cap.to_owned(),
                    settlement_account_id: account_id(&p.id, "MXN", "settlement"),
                },
            ],
            update_time: None,
        };
        settlement
            .set_participant_profile(pb::SetParticipantProfileRequest { profile: Some(profile) })
            .await
            .map_err(|s| CliError::from(puente_client::ClientError::from(s)))?;
    }

    Ok(())
}

/// What posting the day's transfers gave: results by code, retries of an earlier run, gross
/// value per currency.
struct Posted {
    codes: BTreeMap<String, u64>,
    replayed: u64,
    gross: BTreeMap<String, u128>,
}

/// Posts the day's transfers in batches, with a progress bar.
async fn post_transfers(
    client: &mut Client,
    day: &puente_settlement::simulate::SimDay,
    seed: u64,
    batch_size: usize,
) -> Result<Posted, CliError> {
    // Transfers.
    let bar = ProgressBar::new(day.transfers.len() as u64).with_style(
        ProgressStyle::with_template("posting transfers [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut replayed = 0u64;
    let mut gross: BTreeMap<String, u128> = BTreeMap::new();
    let mut index = 0;
    for chunk in day.transfers.chunks(batch_size) {
        let batch: Vec<pb::Transfer> = chunk
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let currency = o.currency.as_str();
                NewTransfer::new(
                    &account_id(o.debtor.as_str(), currency, "operating"),
                    &account_id(o.creditor.as_str(), currency, "operating"),
                    currency,
                    &puente_money::format_minor(u128::from(o.amount_minor), 2),
                )
                .id(&transfer_id(seed, index + i))
                .reference(if o.debtor.as_str().starts_with("US") && currency == "USD" {
                    "remittance"
                } else {
                    "trade"
                })
                .0
            })
            .collect();
        let results = client.create_transfers(batch).await?;
        for (result, o) in results.iter().zip(chunk) {
            *codes.entry(result.code.clone()).or_default() += 1;
            replayed += u64::from(result.replayed);
            if result.code == "OK" {
                *gross.entry(o.currency.to_string()).or_default() += u128::from(o.amount_minor);
            }
        }
        index += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    Ok(Posted { codes, replayed, gross })
}
