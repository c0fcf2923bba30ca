//! `puente rates ...` and `puente fx ...`: rates, quotes, execution, cancellation, exposure.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use puente_client::{Client, Fixed, pb, verify_quote_with_keys};
use serde_json::{Value, json};

use super::{CliError, Output, time_text};

/// Most lines read from standard input by `rates stream`.
const RATE_LINES_MAX: usize = 1_000_000;
/// Largest ECB file read.
const ECB_FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Largest keyring file `fx-key generate --key-file` reads (the server's limit).
const KEY_FILE_BYTES_MAX: u64 = puente_kyc::pii::KEY_FILE_LEN_MAX as u64;

#[derive(Subcommand, Debug)]
pub enum RatesCommand {
    /// Set a mid rate: `puente rates set USD/MXN 18.91`.
    Set {
        /// Currency pair BASE/QUOTE, e.g. USD/MXN.
        pair: String,
        /// Mid rate: QUOTE per one BASE, e.g. 17.25 (a decimal, never rounded).
        rate: String,
        /// Where the rate comes from (recorded with it), e.g. "ecb" or a feed name.
        #[arg(long, default_value = "operator")]
        source: String,
    },
    /// Show the current mid rates.
    List,
    /// Import a day of the ECB reference-rate file (USD/MXN is the cross MXN ÷ USD). The
    /// rates take effect now.
    ImportEcb {
        /// The ECB's eurofxref-hist.csv (or eurofxref.csv): the newest USD/MXN cross rate is set.
        file: PathBuf,
        /// The day to import (YYYY-MM-DD) [default: the newest].
        #[arg(long)]
        date: Option<String>,
        /// Pairs to import, e.g. USD/MXN,USD/CAD.
        #[arg(long, default_value = "USD/MXN", value_delimiter = ',')]
        pairs: Vec<String>,
    },
    /// A rate feed: read lines "USD/MXN 18.91" from standard input and stream them.
    Stream {
        /// Source name recorded with every rate read from standard input.
        #[arg(long, default_value = "feed")]
        source: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FxKeyCommand {
    /// Make a new quote-signing key `<key_id>:<64 hex>`: printed, or with --key-file put
    /// first in that keyring file (created with mode 0600; older keys stay below it and still
    /// verify). Restart the server to sign with it.
    Generate {
        /// Key id written before the key (letters, digits, "-" or "_"), e.g. 2026-12.
        #[arg(default_value = "k1")]
        key_id: String,
        /// The keyring file to create or to add the key to (keep it outside the data directory).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FxCommand {
    /// Price a conversion: a signed quote with its full disclosure.
    Quote {
        /// Participant the quote is for (operators; a participant quotes for itself).
        #[arg(long)]
        participant: String,
        /// sme, remittance or institution.
        #[arg(long, default_value = "remittance")]
        segment: String,
        /// Currency the customer pays in, e.g. USD.
        #[arg(long)]
        sell: String,
        /// Currency the recipient receives, e.g. MXN.
        #[arg(long)]
        buy: String,
        /// Send exactly this much (fees on top).
        #[arg(long, conflicts_with = "receive")]
        send: Option<String>,
        /// The recipient must receive exactly this much.
        #[arg(long)]
        receive: Option<String>,
        /// Disclosure language: en or es.
        #[arg(long, default_value = "en")]
        lang: String,
    },
    /// Show a quote.
    Get {
        /// Quote id (UUID).
        id: String,
    },
    /// List a participant's quotes, newest first.
    List {
        /// Only this participant's quotes (operators).
        #[arg(long)]
        participant: String,
        /// Rows per page (1 to 1,000).
        #[arg(long, default_value_t = 20)]
        page_size: i32,
        /// Token from the previous page (`next page:` line) to continue from.
        #[arg(long, default_value = "", hide_default_value = true)]
        page_token: String,
    },
    /// Execute a quote (verifies its signature first) and print the receipt.
    Execute {
        /// Quote id (UUID) to execute before it expires.
        quote_id: String,
        /// The customer's account in the sell currency.
        #[arg(long)]
        from: String,
        /// The recipient's account in the buy currency.
        #[arg(long)]
        to: String,
        /// Idempotency key; a random one by default.
        #[arg(long)]
        execution_id: Option<String>,
    },
    /// Cancel a held remittance within its cancellation window (full refund).
    Cancel {
        /// Quote id (UUID) of the executed remittance to cancel (within its cancellation window).
        quote_id: String,
    },
    /// The Ed25519 public keys that verify quotes (hex, by key id; the signing key first).
    PublicKey,
    /// The house's net position per currency.
    Exposure,
}

fn pair(text: &str) -> Result<(String, String), CliError> {
    text.split_once('/')
        .map(|(b, q)| (b.to_owned(), q.to_owned()))
        .ok_or_else(|| CliError::Usage(format!("pair {text:?}: expected BASE/QUOTE, e.g. USD/MXN")))
}

fn rate(base: String, quote: String, mid: String, source: &str) -> pb::FxRate {
    pb::FxRate {
        base_currency: base,
        quote_currency: quote,
        mid_rate: mid,
        rate_time: None,
        source: source.to_owned(),
    }
}

fn rate_json(r: &pb::FxRate) -> Value {
    json!({"pair": format!("{}/{}", r.base_currency, r.quote_currency), "mid_rate": r.mid_rate,
        "rate_time": time_text(&r.rate_time), "source": r.source})
}

fn money(m: &Option<pb::Money>) -> String {
    m.as_ref().map(|m| format!("{} {}", m.value, m.currency_code)).unwrap_or_default()
}

fn disclosure_json(d: &pb::FxDisclosure) -> Value {
    json!({
        "transfer_amount": money(&d.transfer_amount), "transfer_fees": money(&d.transfer_fees),
        "transfer_taxes": money(&d.transfer_taxes), "total": money(&d.total),
        "exchange_rate": d.exchange_rate, "converted_amount": money(&d.converted_amount),
        "third_party_fees": money(&d.third_party_fees), "amount_received": money(&d.amount_received),
        "cancellation_window_ms": d.cancellation_window_ms,
        "funds_available_time": time_text(&d.funds_available_time),
        "payment_time": time_text(&d.payment_time), "text_en": d.text_en, "text_es": d.text_es,
    })
}

fn quote_json(q: &pb::FxQuote) -> Value {
    let d = q.disclosure.clone().unwrap_or_default();
    json!({
        "id": q.id, "participant": q.participant, "segment": segment_name(q.segment),
        "sell_currency": q.sell_currency, "buy_currency": q.buy_currency,
        "mid_rate": q.mid_rate, "customer_rate": q.customer_rate, "spread_bps": q.spread_bps,
        "send_amount": money(&q.send_amount), "fee_fixed": money(&q.fee_fixed),
        "fee_percentage": money(&q.fee_percentage), "fee_total": money(&q.fee_total), "tax": money(&q.tax),
        "total_debit": money(&q.total_debit), "receive_amount": money(&q.receive_amount),
        "create_time": time_text(&q.create_time), "expire_time": time_text(&q.expire_time),
        "signature": hex(&q.signature), "signing_key_id": q.signing_key_id, "canonical": hex(&q.canonical),
        "disclosure": disclosure_json(&d),
    })
}

fn segment_name(segment: i32) -> &'static str {
    match pb::FxSegment::try_from(segment) {
        Ok(pb::FxSegment::Sme) => "sme",
        Ok(pb::FxSegment::Remittance) => "remittance",
        Ok(pb::FxSegment::Institution) => "institution",
        _ => "unspecified",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn quote_rows(quotes: &[pb::FxQuote]) -> String {
    let mut text = format!(
        "{:<36}  {:<11}  {:<7}  {:>18}  {:>18}  {}\n",
        "ID", "SEGMENT", "PAIR", "TOTAL DEBIT", "RECEIVE", "EXPIRES"
    );
    for q in quotes {
        text.push_str(&format!(
            "{:<36}  {:<11}  {:<7}  {:>18}  {:>18}  {}\n",
            q.id,
            segment_name(q.segment),
            format!("{}/{}", q.sell_currency, q.buy_currency),
            money(&q.total_debit),
            money(&q.receive_amount),
            time_text(&q.expire_time)
        ));
    }
    text
}

fn quote_table(q: &pb::FxQuote, lang: &str) -> String {
    let d = q.disclosure.clone().unwrap_or_default();
    let text = if lang == "es" { d.text_es } else { d.text_en };
    format!(
        "quote {}  ({} {}, {} -> {})\nmid {}  customer rate {}  spread {} bps  expires {}\n\n{}\n",
        q.id,
        q.participant,
        segment_name(q.segment),
        q.sell_currency,
        q.buy_currency,
        q.mid_rate,
        q.customer_rate,
        q.spread_bps,
        time_text(&q.expire_time),
        text
    )
}

/// The table of `puente fx rates list`.
fn rates_table(rates: &[pb::FxRate]) -> String {
    let mut text = format!("{:<9}  {:>14}  {:<27}  {}\n", "PAIR", "MID", "AS OF", "SOURCE");
    for r in rates {
        text.push_str(&format!(
            "{:<9}  {:>14}  {:<27}  {}\n",
            format!("{}/{}", r.base_currency, r.quote_currency),
            r.mid_rate,
            time_text(&r.rate_time),
            r.source
        ));
    }
    text
}

/// `puente fx rates import-ecb`: sets the cross rates `pairs` of one day of the ECB's file.
async fn import_ecb(
    client: &mut Client,
    file: &Path,
    date: Option<String>,
    pairs: &[String],
    out: &Output,
) -> Result<(), CliError> {
    let size =
        std::fs::metadata(file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?.len();
    if size > ECB_FILE_BYTES_MAX {
        return Err(CliError::Usage(format!("{}: larger than {ECB_FILE_BYTES_MAX} bytes", file.display())));
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let days = puente_fx::parse_ecb_csv(&text).map_err(|e| CliError::Usage(e.to_string()))?;
    let day = match &date {
        Some(date) => days.iter().find(|d| &d.date == date),
        None => days.first(),
    };
    let day =
        day.ok_or_else(|| CliError::Usage(format!("no ECB day {}", date.as_deref().unwrap_or("at all"))))?;
    let mut rates = Vec::new();
    for text in pairs {
        let (base, quote) = pair(text)?;
        let (b, q) = (
            puente_money::CurrencyCode::parse(&base).map_err(|e| CliError::Usage(e.to_string()))?,
            puente_money::CurrencyCode::parse(&quote).map_err(|e| CliError::Usage(e.to_string()))?,
        );
        let mid = day
            .cross(b, q)
            .ok_or_else(|| CliError::Usage(format!("the ECB file has no {text} on {}", day.date)))?;
        rates.push(rate(base, quote, mid.normalize().to_string(), &format!("ECB {}", day.date)));
    }
    let count = client.set_rates(rates.clone()).await?;
    out.print(json!({"date": day.date, "rates": rates.iter().map(rate_json).collect::<Vec<_>>()}), || {
        let mut text = format!("imported {count} rate(s) from the ECB file, day {}\n", day.date);
        for r in &rates {
            text.push_str(&format!("  {}/{} = {}\n", r.base_currency, r.quote_currency, r.mid_rate));
        }
        text
    });
    Ok(())
}

pub async fn rates(client: &mut Client, command: RatesCommand, out: &Output) -> Result<(), CliError> {
    match command {
        RatesCommand::Set { pair: text, rate: mid, source } => {
            let (base, quote) = pair(&text)?;
            client.set_rate(&base, &quote, &mid, &source).await?;
            out.print(json!({"pair": text, "mid_rate": mid, "source": source}), || {
                format!("{text} = {mid}\n")
            });
        }
        RatesCommand::List => {
            let rates = client.list_rates().await?;
            out.print(json!(rates.iter().map(rate_json).collect::<Vec<_>>()), || rates_table(&rates));
        }
        RatesCommand::ImportEcb { file, date, pairs } => import_ecb(client, &file, date, &pairs, out).await?,
        RatesCommand::Stream { source } => {
            let mut updates = Vec::new();
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                if n >= RATE_LINES_MAX {
                    return Err(CliError::Usage(format!("at most {RATE_LINES_MAX} lines")));
                }
                let line = line.map_err(|e| CliError::Usage(e.to_string()))?;
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (text, mid) = line
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| CliError::Usage(format!("line {}: expected \"USD/MXN 18.91\"", n + 1)))?;
                let (base, quote) = pair(text)?;
                updates.push(vec![rate(base, quote, mid.trim().to_owned(), &source)]);
            }
            let count = client.stream_rates(updates).await?;
            out.print(json!({"rates_set": count}), || format!("streamed {count} rate update(s)\n"));
        }
    }
    Ok(())
}

#[expect(clippy::too_many_lines, reason = "one arm per `puente fx` subcommand")]
pub async fn fx(client: &mut Client, command: FxCommand, out: &Output) -> Result<(), CliError> {
    match command {
        FxCommand::Quote { participant, segment, sell, buy, send, receive, lang } => {
            let segment = match segment.as_str() {
                "sme" => pb::FxSegment::Sme,
                "remittance" => pb::FxSegment::Remittance,
                "institution" => pb::FxSegment::Institution,
                other => {
                    return Err(CliError::Usage(format!(
                        "--segment {other:?}: sme, remittance or institution"
                    )));
                }
            };
            let fixed = match (&send, &receive) {
                (Some(a), None) => Fixed::Send(a),
                (None, Some(a)) => Fixed::Receive(a),
                _ => return Err(CliError::Usage("give exactly one of --send and --receive".into())),
            };
            let quote = client.quote(&participant, segment, &sell, &buy, fixed).await?;
            out.print(quote_json(&quote), || quote_table(&quote, &lang));
        }
        FxCommand::Get { id } => {
            let quote = client.get_quote(&id).await?;
            out.print(quote_json(&quote), || quote_table(&quote, "en"));
        }
        FxCommand::List { participant, page_size, page_token } => {
            let page = client.list_quotes(&participant, page_size, &page_token).await?;
            out.print_page("quotes", &page.quotes, quote_json, quote_rows, &page.next_page_token);
        }
        FxCommand::Execute { quote_id, from, to, execution_id } => {
            let quote = client.get_quote(&quote_id).await?;
            let keys = client.fx_public_keys().await?;
            if !verify_quote_with_keys(&keys, &quote) {
                return Err(CliError::Client(
                    "the quote's signature does not verify; refusing to execute".into(),
                ));
            }
            let execution_id = execution_id.unwrap_or_else(puente_client::new_id);
            let result = client.execute_quote(&quote, &from, &to, &execution_id).await?;
            let state = match pb::FxExecutionState::try_from(result.state) {
                Ok(pb::FxExecutionState::Held) => {
                    "held (cancellable until the deadline, then posts by itself)"
                }
                Ok(pb::FxExecutionState::Cancelled) => "cancelled",
                _ => "posted",
            };
            let receipt = result.receipt.clone().unwrap_or_default();
            let value = json!({"quote_id": result.quote_id, "execution_id": execution_id,
                "transfer_ids": result.transfer_ids, "replayed": result.replayed, "state": state,
                "cancel_deadline": time_text(&result.cancel_deadline), "receipt": disclosure_json(&receipt)});
            out.print(value, || {
                format!(
                    "executed quote {} ({}){}: {} -> receives {}\n{}\n{}",
                    result.quote_id,
                    state,
                    if result.replayed { ", retry: first outcome returned" } else { "" },
                    money(&quote.total_debit),
                    money(&quote.receive_amount),
                    if result.cancel_deadline.is_some() {
                        format!("cancel until {}\n", time_text(&result.cancel_deadline))
                    } else {
                        String::new()
                    },
                    receipt.text_en
                )
            });
        }
        FxCommand::Cancel { quote_id } => {
            let result = client.cancel_transfer(&quote_id).await?;
            out.print(json!({"quote_id": quote_id, "refunded": money(&result.refunded), "replayed": result.replayed}), || {
                format!("cancelled {quote_id}: refunded {}{}\n", money(&result.refunded),
                    if result.replayed { " (already cancelled)" } else { "" })
            });
        }
        FxCommand::PublicKey => {
            let keys = client.fx_public_keys().await?;
            let value = json!({"algorithm": "ED25519", "keys": keys.iter()
                .map(|k| json!({"key_id": k.key_id, "public_key": hex(&k.public_key)})).collect::<Vec<_>>()});
            out.print(value, || {
                let mut text = String::new();
                for (i, k) in keys.iter().enumerate() {
                    let role = if i == 0 { "signs and verifies" } else { "verifies" };
                    text.push_str(&format!("{:<16}  ED25519 {}  ({role})\n", k.key_id, hex(&k.public_key)));
                }
                text
            });
        }
        FxCommand::Exposure => {
            let positions = client.exposure().await?;
            let value = json!(
                positions
                    .iter()
                    .map(|p| json!({"currency": p.currency_code,
                "posted_position": p.posted_position, "projected_position": p.projected_position,
                "fee_revenue": p.fee_revenue}))
                    .collect::<Vec<_>>()
            );
            out.print(value, || {
                let mut text = format!(
                    "{:<8}  {:>18}  {:>18}  {:>14}\n",
                    "CURRENCY", "POSTED", "WITH HELD", "FEE REVENUE"
                );
                for p in &positions {
                    text.push_str(&format!(
                        "{:<8}  {:>18}  {:>18}  {:>14}\n",
                        p.currency_code, p.posted_position, p.projected_position, p.fee_revenue
                    ));
                }
                text.push_str(
                    "positive: the house is long (holds more than it owes); negative: short, to hedge\n",
                );
                text
            });
        }
    }
    Ok(())
}

/// `puente fx-key generate`: a new key spec, printed or put first in a keyring file.
pub fn fx_key(command: FxKeyCommand, out: &Output) -> Result<(), CliError> {
    let FxKeyCommand::Generate { key_id, key_file } = command;
    let usage = |e: puente_fx::FxError| CliError::Usage(format!("fx-key generate: {e}"));
    let spec = puente_fx::QuoteKeyring::generate_spec(&key_id).map_err(usage)?;
    let Some(path) = key_file else {
        println!("{spec}");
        return Ok(());
    };
    let public = puente_fx::QuoteKeyring::from_text(&spec).map_err(usage)?.public_keys();
    let public = public.first().map(|k| hex(&k.public_key)).unwrap_or_default();
    let io = |e: std::io::Error| CliError::Usage(format!("{}: {e}", path.display()));
    let existing = match std::fs::metadata(&path) {
        Ok(metadata) if metadata.len() > KEY_FILE_BYTES_MAX => {
            return Err(CliError::Usage(format!(
                "{}: larger than {KEY_FILE_BYTES_MAX} bytes",
                path.display()
            )));
        }
        Ok(_) => std::fs::read_to_string(&path).map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    // The new key goes first (it signs); the old ones stay below it (they still verify). The
    // result must be a valid keyring, so a duplicate id or a damaged file is refused here.
    let text = format!("{spec}\n{existing}");
    puente_fx::QuoteKeyring::from_text(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    write_secret_file(&path, text.as_bytes()).map_err(io)?;
    let new_file = existing.is_empty();
    out.print(
        json!({"key_id": key_id, "public_key": public, "key_file": path.display().to_string()}),
        || {
            format!(
                "{} key {key_id} (ED25519 {public}) {} {}: restart the server to sign with it\n",
                if new_file { "wrote" } else { "added" },
                if new_file { "to" } else { "first in" },
                path.display()
            )
        },
    );
    Ok(())
}

/// Writes `bytes` to `path` through a new file of mode 0600 beside it, synced and renamed
/// into place, so the key file is never readable by others nor half written.
fn write_secret_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
