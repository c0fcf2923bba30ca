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
    /// Extra currencies beyond USD and MXN, e.g. [{ code = "CAD", scale = 2 }].
    #[serde(default)]
    pub currencies: Vec<CurrencyConfig>,
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
    Ok(Resolved { listen, data_dir, log_format, currencies })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rejects_bad_config() {
        assert!(toml::from_str::<FileConfig>("listen_addr = \"x\"").is_err());
        assert!(resolve(FileConfig::default(), Some("nowhere".into()), None, None).is_err());
        let file: FileConfig = toml::from_str("currencies = [{ code = \"cad\", scale = 2 }]").unwrap();
        assert!(resolve(file, None, None, None).is_err());
    }

    #[test]
    fn example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/puente.example.toml");
        let file = load_file(&path).unwrap();
        resolve(file, None, None, None).unwrap();
    }
}
