//! Server configuration: defaults < config file < environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use puente_money::{Currency, CurrencyCode, CurrencyTable};
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATA_DIR: &str = "./puente-data";
/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 1024 * 1024;

/// The config file (TOML). Every field is optional. See deploy/puente.example.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on, e.g. "127.0.0.1:50051".
    pub listen: Option<String>,
    /// Where the journal and the index live.
    pub data_dir: Option<PathBuf>,
    /// "text" or "json".
    pub log_format: Option<String>,
    /// Where to serve Prometheus metrics, e.g. "127.0.0.1:9464"; "off" or absent: not served.
    pub metrics_listen: Option<String>,
    /// Extra currencies beyond USD and MXN, e.g. [{ code = "CAD", scale = 2 }].
    #[serde(default)]
    pub currencies: Vec<CurrencyConfig>,
    /// FX quoting: pricing, signing key, cancellation window.
    pub fx: Option<FxFileConfig>,
    /// Settlement windows: cutoff schedule, report fees and rate.
    pub settlement: Option<SettlementFileConfig>,
    /// Per-participant limits by requests, events and bytes (`puente_server::auth::LimitsConfig`;
    /// each key optional) [default: 2,000 requests/s, burst 4,000, 256 in flight; 32,768
    /// events/s, burst 65,536, 32,768 in flight; 32 MiB/s, burst 128 MiB, 128 MiB in flight].
    pub limits: Option<puente_server::auth::LimitsConfig>,
    /// TLS: `cert_path`, `key_path` (PEM), and `client_ca_path` for mutual TLS [default: none].
    pub tls: Option<puente_server::TlsFiles>,
    /// Personal-data keyring file (mode 0600, outside the data directory) [default: none].
    pub pii_key_file: Option<PathBuf>,
    /// The journal of record in PostgreSQL, for several nodes with one leader [default: none,
    /// the local journal is the record].
    pub journal: Option<JournalFileConfig>,
}

/// The `[journal]` table (see README, "Running two nodes").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalFileConfig {
    /// `postgres://user:password@host:port/db` (several hosts with `target_session_attrs=read-write`).
    pub url: Option<String>,
    /// The address clients reach this node at, e.g. "10.0.0.5:50051" [default: the listen address].
    pub advertise: Option<String>,
    /// This node's name in the lease, unique per node [default: the advertised address].
    pub node_id: Option<String>,
    /// Lease length in milliseconds [default: 3000].
    pub lease_ms: Option<u64>,
}

/// The `[settlement]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementFileConfig {
    /// Daily cutoff "HH:MM" at which every open window closes [default: none, operator only].
    pub cutoff: Option<String>,
    /// IANA time zone of the cutoff [default: "America/Mexico_City"].
    pub time_zone: Option<String>,
    /// MXN per USD for USD figures in reports [default: "18"].
    pub rate_mxn_per_usd: Option<String>,
    /// Bank fees for the savings report [defaults: see puente_netting::FeeModel].
    pub fees: Option<puente_netting::FeeModel>,
    /// The hub's accounts at its settlement banks, per currency, as their statements name them
    /// (`Acct/Id`), e.g. `{ USD = ["000123456789"], MXN = ["012180001234567897"] }`:
    /// reconciliation matches statements of these accounts [default: only the hub's ledger id].
    pub hub_accounts: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Where the FX house settles its one conversion per cutoff: `{ name = "...", bic = "...",
    /// usd_aba = "<9-digit ABA>", mxn_clabe = "<18-digit CLABE>" }`, check digits verified
    /// [default: placeholders with valid check digits; set the house's real accounts].
    pub house: Option<HouseFileConfig>,
}

/// The `[settlement.house]` table: the FX house's settlement banks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseFileConfig {
    pub name: Option<String>,
    pub bic: Option<String>,
    /// "US" or "MX" [default: "US"].
    pub country: Option<String>,
    pub usd_aba: Option<String>,
    pub mxn_clabe: Option<String>,
}

/// Resolves the `[settlement]` table.
fn settlement_config(
    file: Option<SettlementFileConfig>,
) -> Result<puente_server::settlement_desk::SettlementConfig, ConfigError> {
    let mut config = puente_server::settlement_desk::SettlementConfig::default();
    let Some(file) = file else { return Ok(config) };
    let err = |e: String| ConfigError::Settlement(e);
    if let Some(fees) = file.fees {
        fees.validate().map_err(|e| err(e.to_string()))?;
        config.fees = fees;
    }
    if let Some(rate) = file.rate_mxn_per_usd {
        config.rate_mxn_per_usd = rate
            .parse::<rust_decimal::Decimal>()
            .ok()
            .filter(|r| *r > rust_decimal::Decimal::ZERO)
            .ok_or_else(|| err(format!("rate_mxn_per_usd {rate:?} is not a positive decimal")))?;
    }
    for (code, ids) in file.hub_accounts.unwrap_or_default() {
        let currency =
            puente_money::CurrencyCode::parse(&code).map_err(|e| err(format!("hub_accounts: {e}")))?;
        if ids.iter().any(|id| id.is_empty() || id.len() > 34) {
            return Err(err(format!("hub_accounts.{code}: account ids are 1 to 34 characters")));
        }
        config.hub_accounts.insert(currency, ids);
    }
    if let Some(house) = file.house {
        if let Some(name) = house.name {
            if name.is_empty() || name.len() > 140 || name.chars().any(char::is_control) {
                return Err(err("house.name: 1 to 140 characters, no control characters".into()));
            }
            config.house.name = name;
        }
        if let Some(bic) = house.bic {
            if !puente_settlement::ids::bic_valid(&bic) {
                return Err(err(format!("house.bic {bic:?} is not a BIC (8 or 11 characters)")));
            }
            config.house.bic = bic;
        }
        if let Some(country) = house.country {
            config.house.country = match country.to_ascii_uppercase().as_str() {
                "US" => puente_core::Country::Us,
                "MX" => puente_core::Country::Mx,
                _ => return Err(err(format!("house.country {country:?}: US or MX"))),
            };
        }
        if let Some(aba) = house.usd_aba {
            if !puente_settlement::ids::aba_valid(&aba) {
                return Err(err(format!("house.usd_aba {aba:?}: 9 digits with a valid ABA check digit")));
            }
            config.house.usd_aba = aba;
        }
        if let Some(clabe) = house.mxn_clabe {
            if !puente_settlement::ids::clabe_valid(&clabe) {
                return Err(err(format!(
                    "house.mxn_clabe {clabe:?}: 18 digits with a valid CLABE check digit"
                )));
            }
            config.house.mxn_clabe = clabe;
        }
    }
    if let Some(cutoff) = file.cutoff {
        let zone = file.time_zone.unwrap_or_else(|| "America/Mexico_City".to_owned());
        let cutoff =
            puente_settlement::schedule::Cutoff::parse(&cutoff, &zone).map_err(|e| err(e.to_string()))?;
        config.cutoff = Some(cutoff);
    }
    Ok(config)
}

/// The `[fx]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxFileConfig {
    /// Quote-signing keyring: `<key_id>:<64 hex>` lines, the first signs; mode 0600, outside
    /// the data directory [default: an in-memory key for this process only].
    pub signing_key_file: Option<PathBuf>,
    /// How long a remittance may be cancelled after it is paid [default: 1,800,000 = 30 min,
    /// also the least accepted].
    pub cancellation_window_ms: Option<u64>,
    /// Spreads, fees, TTLs per segment [default: built-in USD/MXN pricing].
    pub pricing: Option<puente_fx::PricingConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyConfig {
    pub code: String,
    pub scale: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("invalid listen address {0:?} (expected HOST:PORT, e.g. 127.0.0.1:50051)")]
    Listen(String),
    #[error("currency {code}: {reason}")]
    Currency { code: String, reason: String },
    #[error("[fx]: {0}")]
    Fx(String),
    #[error("[settlement]: {0}")]
    Settlement(String),
}

pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_err = |reason: String| ConfigError::Read { path: path.to_owned(), reason };
    let size = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?.len();
    if size > CONFIG_BYTES_MAX {
        return Err(read_err(format!("larger than {CONFIG_BYTES_MAX} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), reason: e.to_string() })
}

pub struct Resolved {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log_format: String,
    pub currencies: CurrencyTable,
    pub fx: puente_server::fx_desk::FxConfig,
    /// `[fx] signing_key_file` (the flag and PUENTE_FX_SIGNING_KEY_FILE beat it).
    pub fx_signing_key_file: Option<PathBuf>,
    pub settlement: puente_server::settlement_desk::SettlementConfig,
}

/// Longest cancellation window accepted.
const CANCELLATION_WINDOW_MAX_MS: u64 = 24 * 3_600 * 1_000;
/// Shortest cancellation window accepted: the 30 minutes Regulation E grants a remittance
/// sender (12 CFR 1005.34). The disclosures state the window configured.
const CANCELLATION_WINDOW_MIN_MS: u64 = puente_fx::CANCELLATION_WINDOW_MS;

/// The metrics address: `flag` (which includes PUENTE_METRICS_LISTEN) beats the file; "off" (or
/// nothing) means metrics are not served.
pub fn metrics_listen(flag: Option<String>, file: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    match flag.or(file) {
        None => Ok(None),
        Some(text) if text == "off" => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| ConfigError::Listen(text)),
    }
}

/// `flag` values already include the environment (clap reads PUENTE_* variables).
pub fn resolve(
    file: FileConfig,
    listen_flag: Option<String>,
    data_dir_flag: Option<PathBuf>,
    log_format_flag: Option<String>,
) -> Result<Resolved, ConfigError> {
    let listen_text = listen_flag.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = listen_text.parse().map_err(|_| ConfigError::Listen(listen_text.clone()))?;
    let data_dir = data_dir_flag.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let log_format = log_format_flag.or(file.log_format).unwrap_or_else(|| "text".to_owned());
    let mut currencies = CurrencyTable::default();
    for c in file.currencies {
        let err = |reason: String| ConfigError::Currency { code: c.code.clone(), reason };
        let code = CurrencyCode::parse(&c.code).map_err(|e| err(e.to_string()))?;
        let currency = Currency::new(code, c.scale).map_err(|e| err(e.to_string()))?;
        currencies = currencies.with(currency).map_err(|e| err(e.to_string()))?;
    }
    let mut fx = puente_server::fx_desk::FxConfig::default();
    let mut fx_signing_key_file = None;
    if let Some(file_fx) = file.fx {
        if let Some(pricing) = file_fx.pricing {
            pricing.validate(&currencies).map_err(|e| ConfigError::Fx(e.to_string()))?;
            fx.pricing = pricing;
        }
        if let Some(window_ms) = file_fx.cancellation_window_ms {
            if window_ms < CANCELLATION_WINDOW_MIN_MS {
                return Err(ConfigError::Fx(format!(
                    "cancellation_window_ms = {window_ms} is shorter than the 30 minutes \
                     ({CANCELLATION_WINDOW_MIN_MS} ms) Regulation E gives a remittance sender to cancel \
                     (12 CFR 1005.34); set at least {CANCELLATION_WINDOW_MIN_MS}"
                )));
            }
            if window_ms > CANCELLATION_WINDOW_MAX_MS {
                return Err(ConfigError::Fx(format!(
                    "cancellation_window_ms = {window_ms} is longer than {CANCELLATION_WINDOW_MAX_MS} (24 hours)"
                )));
            }
            fx.cancellation_window_ms = window_ms;
        }
        fx_signing_key_file = file_fx.signing_key_file;
    }
    let settlement = settlement_config(file.settlement)?;
    Ok(Resolved { listen, data_dir, log_format, currencies, fx, fx_signing_key_file, settlement })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fx_house_banks_are_configured_and_checked() {
        let file: SettlementFileConfig = toml::from_str(
            "[house]\nname = \"House\"\ncountry = \"MX\"\nusd_aba = \"011000015\"\nmxn_clabe = \"032180000118359719\"\n",
        )
        .unwrap();
        let config = settlement_config(Some(file)).unwrap();
        assert_eq!(
            (config.house.name.as_str(), config.house.usd_aba.as_str(), config.house.mxn_clabe.as_str()),
            ("House", "011000015", "032180000118359719")
        );
        assert_eq!(config.house.country, puente_core::Country::Mx);
        for bad in [
            "country = \"CA\"",
            "usd_aba = \"011000016\"",
            "mxn_clabe = \"032180000118359718\"",
            "bic = \"NOPE\"",
        ] {
            let file: SettlementFileConfig = toml::from_str(&format!("[house]\n{bad}\n")).unwrap();
            let error = settlement_config(Some(file)).unwrap_err().to_string();
            assert!(error.contains("house."), "{bad}: {error}");
        }
    }

    #[test]
    fn precedence_is_flag_then_file_then_default() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:6000\"\ndata_dir = \"/tmp/x\"\ncurrencies = [{ code = \"CAD\", scale = 2 }]",
        )
        .unwrap();
        let resolved = resolve(file, Some("127.0.0.1:7000".into()), None, None).unwrap();
        assert_eq!(resolved.listen.port(), 7000);
        assert_eq!(resolved.data_dir, PathBuf::from("/tmp/x"));
        assert!(resolved.currencies.lookup("CAD").is_ok());
        let resolved = resolve(FileConfig::default(), None, None, None).unwrap();
        assert_eq!(resolved.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(resolved.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn metrics_listen_is_off_unless_set_and_the_flag_wins() {
        assert_eq!(metrics_listen(None, None).unwrap(), None);
        let file = Some("127.0.0.1:9464".to_owned());
        assert_eq!(metrics_listen(None, file.clone()).unwrap().map(|a| a.port()), Some(9464));
        assert_eq!(
            metrics_listen(Some("127.0.0.1:9999".into()), file.clone()).unwrap().map(|a| a.port()),
            Some(9999)
        );
        assert_eq!(metrics_listen(Some("off".into()), file).unwrap(), None);
        assert!(metrics_listen(Some("9464".into()), None).is_err());
    }

    #[test]
    fn rejects_bad_config() {
        assert!(toml::from_str::<FileConfig>("listen_addr = \"x\"").is_err());
        assert!(resolve(FileConfig::default(), Some("nowhere".into()), None, None).is_err());
        let file: FileConfig = toml::from_str("currencies = [{ code = \"cad\", scale = 2 }]").unwrap();
        assert!(resolve(file, None, None, None).is_err());
    }

    #[test]
    fn a_cancellation_window_under_regulation_e_is_refused() {
        for (window_ms, expected) in [
            (8_000, "cancellation_window_ms = 8000 is shorter than the 30 minutes (1800000 ms) Regulation E"),
            (1_799_999, "is shorter than the 30 minutes"),
            (24 * 3_600 * 1_000 + 1, "is longer than"),
        ] {
            let file: FileConfig =
                toml::from_str(&format!("[fx]\ncancellation_window_ms = {window_ms}")).unwrap();
            let error = resolve(file, None, None, None).err().expect("refused").to_string();
            assert!(error.starts_with("[fx]: ") && error.contains(expected), "{error}");
        }
        for window_ms in [1_800_000, 45 * 60_000] {
            let file: FileConfig =
                toml::from_str(&format!("[fx]\ncancellation_window_ms = {window_ms}")).unwrap();
            assert_eq!(resolve(file, None, None, None).unwrap().fx.cancellation_window_ms, window_ms);
        }
    }

    #[test]
    fn example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/puente.example.toml");
        let file = load_file(&path).unwrap();
        // The example shows the default limits.
        assert_eq!(file.limits, Some(puente_server::auth::LimitsConfig::default()));
        resolve(file, None, None, None).unwrap();
    }
}

/// Property targets for the config file parser: whatever the file holds, parsing and
/// resolving it return a value or an error, never panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn parse_and_resolve(text: &str) {
        if let Ok(file) = toml::from_str::<FileConfig>(text) {
            let _ = resolve(file, None, None, None);
        }
    }

    /// The example config's meaningful lines.
    fn example_lines() -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/puente.example.toml");
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A TOML value, valid or odd, of any type.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u32>().prop_map(|n| n.to_string()),
            Just(u64::MAX.to_string()),
            prop::sample::select(vec![
                "0",
                "-1",
                "1e400",
                "nan",
                "-inf",
                "true",
                "[]",
                "{}",
                "[{}]",
                "\"\"",
                "\"-1\"",
                "\"0\"",
                "\"1e30\"",
                "\"79228162514264337593543950336\"",
                "\"0.0000000000000000000000000001\"",
                "\"24:00\"",
                "\"-1:-1\"",
                "\"23:59\"",
                "\"17:\"",
                "\"../../../etc/passwd\"",
                "\"UTC\"",
                "\"Etc/GMT+14\"",
                "\"America/Mexico_City\"",
                "\"USD\"",
                "\"MXN\"",
                "\"CAD\"",
                "\"usd\"",
                "\"Fedwire\"",
                "\"Spei\"",
                "\"AchDirectoMexico\"",
                "\"[::1]:0\"",
                "\"off\"",
                "{ USD = 18446744073709551615 }",
                "[{ from_minor = 0, spread_bps = 4294967295 }]",
                "[{ base = \"USD\", quote = \"USD\" }]",
                "[{ code = \"CAD\", scale = 4294967295 }]",
            ])
            .prop_map(str::to_owned),
            "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
            "[0-9:.\\-]{0,8}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    fn header() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["[fx]", "[settlement]", "[settlement.fees]", "[fx.pricing.segments.x]"])
            .prop_map(str::to_owned)
    }

    /// The example with one to three lines dropped, given another value, or preceded by a
    /// table header: mostly still TOML of the right shape, so `resolve` sees odd values.
    fn mutated_example() -> impl Strategy<Value = String> {
        let mutation = (any::<prop::sample::Index>(), 0u8..4, value(), header());
        prop::collection::vec(mutation, 1..4).prop_map(|mutations| {
            let mut lines = example_lines();
            for (at, kind, value, header) in mutations {
                let at = at.index(lines.len());
                match kind {
                    0 => lines[at].clear(),
                    3 => lines.insert(at, header),
                    _ => {
                        let key = lines[at].split_once(" = ").map(|(key, _)| key.to_owned());
                        lines[at] = match key {
                            Some(key) => format!("{key} = {value}"),
                            None => value,
                        };
                    }
                }
            }
            lines.join("\n")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in prop_oneof![any::<String>(), "[a-z_\\[\\]{}=\"., 0-9\n]{0,200}"]) {
            parse_and_resolve(&text);
        }

        #[test]
        fn mutated_example_never_panics(text in mutated_example()) {
            parse_and_resolve(&text);
        }
    }
}
