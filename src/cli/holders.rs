//! `puente holders ...`, `puente kyc ...` and `puente pii-key generate`.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use puente_client::{Client, pb};
use serde_json::{Value, json};

use super::{CliError, Output, time_text};

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum HoldersCommand {
    /// Register an account holder (a customer) with a KYC tier and personal data.
    Create {
        /// Holder id (UUID) [default: a new random id].
        id: String,
        /// individual or business.
        #[arg(long)]
        kind: String,
        /// MX or US.
        #[arg(long)]
        country: String,
        /// MX_NIVEL_1 .. MX_NIVEL_4, or US_<NAME> of a configured US tier.
        #[arg(long)]
        tier: String,
        /// Operators name the participant; participants register their own holders.
        #[arg(long, default_value = "", hide_default_value = true)]
        participant: String,
        /// The holder's personal data, from a file or `-` (standard input), never from the
        /// command line (any local user can read a process's arguments): a JSON object or a
        /// TOML table with any of full_name, address, clabe, account_number, routing_number,
        /// rfc (text; other keys are refused). Without it the holder has no personal data.
        #[arg(long, value_name = "FILE|-")]
        pii_file: Option<PathBuf>,
    },
    /// Show a holder with its personal data.
    Get {
        /// Holder id (UUID).
        id: String,
        /// Participant that owns the holder (operators must name it).
        #[arg(long, default_value = "", hide_default_value = true)]
        participant: String,
    },
    /// List holders (without personal data).
    List {
        /// Only this participant's holders (operators must name it).
        #[arg(long, default_value = "", hide_default_value = true)]
        participant: String,
        /// Rows per page (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Token from the previous page (`next page:` line) to continue from.
        #[arg(long, default_value = "", hide_default_value = true)]
        page_token: String,
    },
    /// This month's credits against the holder's tier limits.
    Usage {
        /// Holder id (UUID).
        id: String,
        /// Participant that owns the holder (operators must name it).
        #[arg(long, default_value = "", hide_default_value = true)]
        participant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KycCommand {
    /// Set the KYC policy (operators): the UDI rate and the US tiers.
    SetPolicy {
        /// MXN per UDI, e.g. 8.70 (Banxico publishes it daily).
        #[arg(long)]
        udi_rate: String,
        /// A US tier as NAME:MONTHLY_LIMIT:BALANCE_LIMIT in USD (empty limit: none), e.g.
        /// US_BASIC:2000.00:5000.00 (repeatable).
        #[arg(long = "us-tier")]
        us_tiers: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PiiKeyCommand {
    /// Print a new personal-data key spec (`<key_id>:<64 hex>`) for the keyring file.
    Generate {
        /// Key id written before the key (letters, digits, "-" or "_"), e.g. 2026-12.
        #[arg(default_value = "k1")]
        key_id: String,
    },
}

/// Largest personal-data file read.
const PII_FILE_BYTES_MAX: u64 = 64 * 1024;
const PII_FIELDS: &str = "full_name, address, clabe, account_number, routing_number, rfc";

/// A holder's personal data as `--pii-file` holds it (JSON or TOML).
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PiiFile {
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    clabe: String,
    #[serde(default)]
    account_number: String,
    #[serde(default)]
    routing_number: String,
    #[serde(default)]
    rfc: String,
}

/// Reads `--pii-file` (`-`: standard input). Errors name the file and where it is wrong, never
/// a value from it.
fn read_pii(path: &Path) -> Result<PiiFile, CliError> {
    let name = if path == Path::new("-") { "standard input".to_owned() } else { path.display().to_string() };
    let usage = |reason: String| CliError::Usage(format!("--pii-file {name}: {reason}"));
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().take(PII_FILE_BYTES_MAX + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(PII_FILE_BYTES_MAX + 1).read_to_string(&mut text))
    };
    read.map_err(|e| usage(e.to_string()))?;
    if text.len() as u64 > PII_FILE_BYTES_MAX {
        return Err(usage(format!("larger than {PII_FILE_BYTES_MAX} bytes")));
    }
    parse_pii(&text).map_err(usage)
}

/// A JSON object (text starting with `{`) or a TOML table of the fields in [`PII_FIELDS`].
fn parse_pii(text: &str) -> Result<PiiFile, String> {
    let expected = format!("expected a JSON object or a TOML table of text fields ({PII_FIELDS})");
    if text.trim_start().starts_with('{') {
        // serde's messages may quote a value: only the position is reported.
        serde_json::from_str(text)
            .map_err(|e| format!("not valid at line {}, column {}: {expected}", e.line(), e.column()))
    } else {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| before.bytes().filter(|b| *b == b'\n').count() + 1);
            match line {
                Some(line) => format!("not valid at line {line}: {expected}"),
                None => format!("not valid: {expected}"),
            }
        })
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::HolderKind::try_from(kind) {
        Ok(pb::HolderKind::Individual) => "individual",
        Ok(pb::HolderKind::Business) => "business",
        _ => "unspecified",
    }
}

fn holder_json(h: &pb::Holder) -> Value {
    let mut value = json!({
        "participant": h.participant, "holder_id": h.holder_id, "kind": kind_name(h.kind),
        "country": h.country, "kyc_tier": h.kyc_tier, "create_time": time_text(&h.create_time),
    });
    if let Some(p) = &h.personal_data {
        value["personal_data"] = json!({
            "full_name": p.full_name, "address": p.address, "clabe": p.clabe,
            "account_number": p.account_number, "routing_number": p.routing_number, "rfc": p.rfc,
        });
    }
    value
}

fn status(error: tonic::Status) -> CliError {
    CliError::from(puente_client::ClientError::from(error))
}

#[expect(clippy::too_many_lines, reason = "one arm per `puente holders` subcommand")]
pub async fn holders(client: &mut Client, command: HoldersCommand, out: &Output) -> Result<(), CliError> {
    let mut stub = pb::holder_service_client::HolderServiceClient::new(client.channel());
    match command {
        HoldersCommand::Create { id, kind, country, tier, participant, pii_file } => {
            let pii = match &pii_file {
                Some(path) => read_pii(path)?,
                None => PiiFile::default(),
            };
            let kind = match kind.as_str() {
                "individual" => pb::HolderKind::Individual,
                "business" => pb::HolderKind::Business,
                other => {
                    return Err(CliError::Usage(format!(
                        "--kind must be individual or business, not {other:?}"
                    )));
                }
            };
            let holder = pb::Holder {
                participant,
                holder_id: id,
                kind: kind as i32,
                country,
                kyc_tier: tier,
                personal_data: Some(pb::HolderPersonalData {
                    full_name: pii.full_name,
                    address: pii.address,
                    clabe: pii.clabe,
                    account_number: pii.account_number,
                    routing_number: pii.routing_number,
                    rfc: pii.rfc,
                }),
                create_time: None,
            };
            let response = stub
                .create_holder(pb::CreateHolderRequest { holder: Some(holder) })
                .await
                .map_err(status)?
                .into_inner();
            let h = response.holder.unwrap_or_default();
            let mut value = holder_json(&h);
            value["created"] = json!(response.created);
            out.print(value, || {
                let verb = if response.created { "registered" } else { "already registered" };
                format!(
                    "holder {} of {} {verb} ({}, {})\n",
                    h.holder_id, h.participant, h.kyc_tier, h.country
                )
            });
        }
        HoldersCommand::Get { id, participant } => {
            let response = stub
                .get_holder(pb::GetHolderRequest { participant, holder_id: id })
                .await
                .map_err(status)?
                .into_inner();
            let h = response.holder.unwrap_or_default();
            out.print(holder_json(&h), || {
                serde_json::to_string_pretty(&holder_json(&h)).unwrap_or_default() + "\n"
            });
        }
        HoldersCommand::List { participant, page_size, page_token } => {
            let response = stub
                .list_holders(pb::ListHoldersRequest { participant, page_size, page_token })
                .await
                .map_err(status)?
                .into_inner();
            out.print_page(
                "holders",
                &response.holders,
                holder_json,
                |all| {
                    let mut text = format!(
                        "{:<20} {:<36} {:<11} {:<8} {}\n",
                        "PARTICIPANT", "HOLDER", "KIND", "COUNTRY", "TIER"
                    );
                    for h in all {
                        text.push_str(&format!(
                            "{:<20} {:<36} {:<11} {:<8} {}\n",
                            h.participant,
                            h.holder_id,
                            kind_name(h.kind),
                            h.country,
                            h.kyc_tier
                        ));
                    }
                    text
                },
                &response.next_page_token,
            );
        }
        HoldersCommand::Usage { id, participant } => {
            let u = stub
                .get_holder_usage(pb::GetHolderUsageRequest { participant, holder_id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            let value = json!({
                "holder_id": id, "kyc_tier": u.kyc_tier, "currency": u.currency_code, "month": u.month,
                "credited": u.credited, "monthly_credit_limit": u.monthly_credit_limit,
                "balance_limit": u.balance_limit,
            });
            out.print(value, || {
                let limit = |t: &str| {
                    if t.is_empty() { "none".to_owned() } else { format!("{t} {}", u.currency_code) }
                };
                format!(
                    "{id} ({}) in {}: credited {} of {} this month; balance cap {}\n",
                    u.kyc_tier,
                    u.month,
                    u.credited,
                    limit(&u.monthly_credit_limit),
                    limit(&u.balance_limit)
                )
            });
        }
    }
    Ok(())
}

pub async fn kyc(client: &mut Client, command: KycCommand, out: &Output) -> Result<(), CliError> {
    let mut stub = pb::holder_service_client::HolderServiceClient::new(client.channel());
    match command {
        KycCommand::SetPolicy { udi_rate, us_tiers } => {
            let mut tiers = Vec::new();
            for text in us_tiers {
                let parts: Vec<&str> = text.split(':').collect();
                let [name, monthly, balance] = parts.as_slice() else {
                    return Err(CliError::Usage(format!(
                        "--us-tier {text:?}: expected NAME:MONTHLY_LIMIT:BALANCE_LIMIT"
                    )));
                };
                tiers.push(pb::UsTier {
                    name: (*name).to_owned(),
                    monthly_credit_limit: (*monthly).to_owned(),
                    balance_limit: (*balance).to_owned(),
                });
            }
            let policy = stub
                .set_kyc_policy(pb::SetKycPolicyRequest { udi_rate, us_tiers: tiers })
                .await
                .map_err(status)?
                .into_inner();
            let value = json!({
                "udi_rate": policy.udi_rate,
                "us_tiers": policy.us_tiers.iter().map(|t| json!({
                    "name": t.name, "monthly_credit_limit": t.monthly_credit_limit, "balance_limit": t.balance_limit,
                })).collect::<Vec<_>>(),
            });
            out.print(value, || {
                format!("KYC policy: 1 UDI = {} MXN; {} US tier(s)\n", policy.udi_rate, policy.us_tiers.len())
            });
        }
    }
    Ok(())
}

pub fn pii_key(command: PiiKeyCommand) -> Result<(), CliError> {
    match command {
        PiiKeyCommand::Generate { key_id } => {
            let spec = puente_kyc::pii::Keyring::generate_spec(&key_id)
                .map_err(|e| CliError::Usage(format!("pii-key generate: {e}")))?;
            println!("{spec}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_files_are_json_or_toml_and_errors_never_quote_them() {
        let json = r#"{"full_name": "Ana López", "clabe": "032180000118359719"}"#;
        let toml = "full_name = \"Ana López\"\nclabe = \"032180000118359719\"\n";
        for text in [json, toml] {
            let pii = parse_pii(text).unwrap();
            assert_eq!((pii.full_name.as_str(), pii.clabe.as_str()), ("Ana López", "032180000118359719"));
            assert!(pii.rfc.is_empty());
        }
        assert_eq!(parse_pii("").unwrap(), PiiFile::default());
        for bad in [
            r#"{"full_name": "Ana López", "name": "Ana López"}"#,
            r#"{"full_name": 12345678}"#,
            "full_name = \"Ana López\"\nssn = \"078-05-1120\"\n",
            "full_name = [\"Ana López\"]",
        ] {
            let error = parse_pii(bad).unwrap_err();
            assert!(error.contains(PII_FIELDS), "{error}");
            for secret in ["Ana", "12345678", "078-05-1120"] {
                assert!(!error.contains(secret), "{error} quotes {secret}");
            }
        }
    }
}
