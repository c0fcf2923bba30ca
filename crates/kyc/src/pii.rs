//! AES-256-GCM encryption of personal data at rest, with key rotation.
//!
//! A [`Keyring`] holds one or more 256-bit keys, each named by a key id (`[a-z0-9-]{1,16}`).
//! The first key is the active one: [`Keyring::seal`] always uses it. Every key can open, so a
//! rotation is: put the new key first, keep the old ones after it until every record has been
//! re-sealed, then drop them.
//!
//! Key spec text: `<key_id>:<64 hex chars>`. A key file holds one spec per line (blank lines
//! and lines starting with `#` are ignored); an environment value holds specs separated by
//! commas. No error of this module ever contains key material: a bad spec is named by its line
//! or entry number only.
//!
//! Sealed format (version 1):
//!
//! ```text
//! [version u8 = 1][key_id_len u8][key_id bytes][nonce 12 bytes][ciphertext || 16-byte tag]
//! ```
//!
//! The caller's AAD (e.g. `b"holder/fintech-a/h-123/name"`) is authenticated, not stored: a
//! sealed value moved to another record does not open there. Nonces are 96 random bits from
//! `SystemRandom`; keep the number of values sealed under one key well below 2^32 (rotate).
//!
//! Size: about 500 lines of code, then its tests (key parsing, rotation and tampering cases).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The largest plaintext [`Keyring::seal`] accepts, in bytes.
pub const PLAINTEXT_LEN_MAX: usize = 2048;
/// The largest sealed value [`Keyring::open`] accepts, in bytes.
pub const SEALED_LEN_MAX: usize = 4096;
/// The longest key id, in bytes (ASCII characters).
pub const KEY_ID_LEN_MAX: usize = 16;
/// The length of a key in a spec, in hex characters (256 bits).
pub const KEY_HEX_LEN: usize = 64;
/// The largest key file [`Keyring::from_file`] reads, in bytes.
pub const KEY_FILE_LEN_MAX: usize = 64 * 1024;
/// The most keys one keyring holds.
pub const KEYRING_KEYS_MAX: usize = 64;
/// The version byte of the sealed format.
pub const SEALED_VERSION: u8 = 1;

const KEY_LEN_BYTES: usize = 32;
const TAG_LEN_BYTES: usize = 16;

/// Everything that can go wrong loading keys, sealing or opening. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    /// The key file could not be opened or read.
    #[error("cannot read key file {path}: {reason}")]
    KeyFileIo {
        /// The key file.
        path: PathBuf,
        /// The operating system's message.
        reason: String,
    },
    /// The data directory's location could not be resolved.
    #[error("cannot resolve data directory {path}: {reason}")]
    DataDirIo {
        /// The data directory as given.
        path: PathBuf,
        /// The operating system's message.
        reason: String,
    },
    /// The key file lies inside the data directory, so a copy of the data would carry its key.
    #[error(
        "key file {path} is inside the data directory {data_dir}: keep keys outside the data \
         directory (a backup of the data must not carry its key)"
    )]
    KeyFileInsideDataDir {
        /// The key file (canonical).
        path: PathBuf,
        /// The data directory (resolved).
        data_dir: PathBuf,
    },
    /// The key file is readable or writable by group or others.
    #[error("key file {path} is accessible by group or others (mode {mode:o}): run `chmod 600` on it")]
    KeyFileInsecure {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not a regular file.
    #[error("key file {path} is not a regular file")]
    KeyFileNotRegular {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is larger than [`KEY_FILE_LEN_MAX`].
    #[error("key file {path} is larger than {len_max} bytes")]
    KeyFileTooLarge {
        /// The key file.
        path: PathBuf,
        /// The limit in bytes.
        len_max: usize,
    },
    /// The key file is not UTF-8 text.
    #[error("key file {path} is not UTF-8 text")]
    KeyFileNotUtf8 {
        /// The key file.
        path: PathBuf,
    },
    /// A spec has no `:` between key id and key.
    #[error("key spec at {location}: expected `<key_id>:<64 hex chars>`")]
    SpecMissingColon {
        /// `line N` (file) or `entry N` (environment value), counted from 1.
        location: String,
    },
    /// A key id is not `[a-z0-9-]{1,16}`.
    #[error("key spec at {location}: key id must be 1 to {KEY_ID_LEN_MAX} chars of [a-z0-9-]")]
    InvalidKeyId {
        /// `line N`, `entry N` or `argument`.
        location: String,
    },
    /// A key has the wrong length.
    #[error(
        "key spec at {location}: key has {len_chars} characters, expected {KEY_HEX_LEN} hex \
         characters (256 bits)"
    )]
    KeyWrongLength {
        /// `line N` or `entry N`.
        location: String,
        /// The number of characters found.
        len_chars: usize,
    },
    /// A key is not hexadecimal.
    #[error("key spec at {location}: key is not valid hex")]
    KeyNotHex {
        /// `line N` or `entry N`.
        location: String,
    },
    /// Two keys share one key id.
    #[error("duplicate key id {key_id:?} in keyring")]
    DuplicateKeyId {
        /// The repeated id.
        key_id: String,
    },
    /// The keyring has no key.
    #[error("keyring is empty: at least one `<key_id>:<64 hex chars>` spec is required")]
    EmptyKeyring,
    /// The keyring has more than [`KEYRING_KEYS_MAX`] keys.
    #[error("keyring has more than {keys_max} keys")]
    TooManyKeys {
        /// The limit.
        keys_max: usize,
    },
    /// A plaintext is longer than [`PLAINTEXT_LEN_MAX`].
    #[error("plaintext is {len} bytes, more than {len_max}")]
    PlaintextTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        len_max: usize,
    },
    /// A sealed value is not in the sealed format.
    #[error("malformed sealed value: {0}")]
    Malformed(&'static str),
    /// A sealed value has a version this code does not know.
    #[error("unsupported sealed value version {0}")]
    UnsupportedVersion(u8),
    /// A sealed value names a key this keyring does not hold.
    #[error("sealed value uses key id {key_id:?}, which is not in the keyring")]
    UnknownKeyId {
        /// The key id named by the sealed value.
        key_id: String,
    },
    /// Authentication failed: wrong key, wrong AAD or a tampered value.
    #[error("authentication failed: wrong key, wrong AAD or tampered value")]
    AuthenticationFailed,
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    RandomFailure,
    /// The cipher refused to seal (not reachable with valid lengths).
    #[error("encryption failed")]
    EncryptionFailed,
}

/// One key of a keyring.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// A set of AES-256-GCM keys: the first seals, all open. `Debug` prints key ids only.
pub struct Keyring {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("key_ids", &self.key_ids()).finish_non_exhaustive()
    }
}

/// Whether `id` is `[a-z0-9-]{1,16}`.
fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= KEY_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses one spec; errors name `location`, never the spec's text.
fn parse_spec(spec: &str, location: &dyn Fn() -> String) -> Result<Key, PiiError> {
    let (id, key_hex) =
        spec.split_once(':').ok_or_else(|| PiiError::SpecMissingColon { location: location() })?;
    let id = id.trim();
    let key_hex = key_hex.trim();
    if !is_valid_key_id(id) {
        return Err(PiiError::InvalidKeyId { location: location() });
    }
    let len_chars = key_hex.chars().count();
    if len_chars != KEY_HEX_LEN {
        return Err(PiiError::KeyWrongLength { location: location(), len_chars });
    }
    let mut bytes = [0u8; KEY_LEN_BYTES];
    // `hex`'s error names the offending character: drop it, it is key material.
    let decoded = hex::decode_to_slice(key_hex, &mut bytes);
    let key = match decoded {
        Ok(()) => UnboundKey::new(&AES_256_GCM, &bytes).map(LessSafeKey::new),
        Err(_) => {
            wipe(&mut bytes);
            return Err(PiiError::KeyNotHex { location: location() });
        }
    };
    wipe(&mut bytes);
    let key = key.map_err(|_| PiiError::KeyWrongLength { location: location(), len_chars })?;
    Ok(Key { id: id.to_owned(), key })
}

/// Best-effort overwrite of key bytes that are no longer needed.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// Lexical normalization: drops `.`, resolves `..` against the preceding component.
fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The data directory's canonical location. It may not exist yet: then its longest existing
/// ancestor is canonicalized and the rest appended in absolute lexical form.
fn resolve_data_dir(data_dir: &Path) -> Result<PathBuf, PiiError> {
    if let Ok(canonical) = data_dir.canonicalize() {
        return Ok(canonical);
    }
    let io_err =
        |e: std::io::Error| PiiError::DataDirIo { path: data_dir.to_path_buf(), reason: e.to_string() };
    let absolute = normalize_lexically(&std::path::absolute(data_dir).map_err(io_err)?);
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut resolved = canonical;
            resolved.extend(rest.iter().rev());
            return Ok(resolved);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return Ok(absolute),
        }
    }
}

/// Reads a secret key file and hands its text to `parse`, then wipes the text. Every key file
/// the server reads gets these checks (the personal-data keyring here, the FX quote-signing
/// keyring in the binary):
///
/// Refuses a file inside `data_dir` (canonical paths are compared; a `data_dir` that does not
/// exist yet is resolved through its longest existing ancestor), so that no copy of the data
/// carries its key; a file that is not regular; on unix, a file with any group or other
/// permission bit (`chmod 600` it); a file larger than [`KEY_FILE_LEN_MAX`] or not UTF-8.
/// Errors name the file, never its contents.
pub fn read_key_file<T>(path: &Path, data_dir: &Path, parse: impl FnOnce(&str) -> T) -> Result<T, PiiError> {
    let io_err = |e: std::io::Error| PiiError::KeyFileIo { path: path.to_path_buf(), reason: e.to_string() };
    let canonical = path.canonicalize().map_err(io_err)?;
    let data_dir = resolve_data_dir(data_dir)?;
    if canonical.starts_with(&data_dir) {
        return Err(PiiError::KeyFileInsideDataDir { path: canonical, data_dir });
    }
    let file = File::open(&canonical).map_err(io_err)?;
    let metadata = file.metadata().map_err(io_err)?;
    if !metadata.is_file() {
        return Err(PiiError::KeyFileNotRegular { path: path.to_path_buf() });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PiiError::KeyFileInsecure { path: path.to_path_buf(), mode });
        }
    }
    let mut bytes = Vec::new();
    let limit = u64::try_from(KEY_FILE_LEN_MAX).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() > KEY_FILE_LEN_MAX {
        wipe(&mut bytes);
        return Err(PiiError::KeyFileTooLarge { path: path.to_path_buf(), len_max: KEY_FILE_LEN_MAX });
    }
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            wipe(&mut e.into_bytes());
            return Err(PiiError::KeyFileNotUtf8 { path: path.to_path_buf() });
        }
    };
    let parsed = parse(&text);
    let mut bytes = std::mem::take(&mut text).into_bytes();
    wipe(&mut bytes);
    Ok(parsed)
}

impl Keyring {
    /// Builds a keyring from specs, refusing an empty one, too many keys and duplicate ids.
    fn from_keys(keys: Vec<Key>) -> Result<Keyring, PiiError> {
        if keys.is_empty() {
            return Err(PiiError::EmptyKeyring);
        }
        if keys.len() > KEYRING_KEYS_MAX {
            return Err(PiiError::TooManyKeys { keys_max: KEYRING_KEYS_MAX });
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|other| other.id == key.id) {
                return Err(PiiError::DuplicateKeyId { key_id: key.id.clone() });
            }
        }
        Ok(Keyring { keys, rng: SystemRandom::new() })
    }

    /// A keyring from an environment value: specs separated by commas (the first is active).
    /// Whitespace around specs is ignored, and so are empty entries.
    pub fn from_env_value(value: &str) -> Result<Keyring, PiiError> {
        let mut keys = Vec::new();
        for (i, entry) in value.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if keys.len() >= KEYRING_KEYS_MAX {
                return Err(PiiError::TooManyKeys { keys_max: KEYRING_KEYS_MAX });
            }
            keys.push(parse_spec(entry, &|| format!("entry {}", i + 1))?);
        }
        Keyring::from_keys(keys)
    }

    /// A keyring from a key file: one spec per line (the first is active); blank lines and lines
    /// starting with `#` are ignored. The file gets the checks of [`read_key_file`].
    pub fn from_file(path: &Path, data_dir: &Path) -> Result<Keyring, PiiError> {
        read_key_file(path, data_dir, Keyring::from_file_text)?
    }

    /// Parses the text of a key file.
    fn from_file_text(text: &str) -> Result<Keyring, PiiError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if keys.len() >= KEYRING_KEYS_MAX {
                return Err(PiiError::TooManyKeys { keys_max: KEYRING_KEYS_MAX });
            }
            keys.push(parse_spec(line, &|| format!("line {}", i + 1))?);
        }
        Keyring::from_keys(keys)
    }

    /// A new random key spec `<key_id>:<64 hex chars>` (from `SystemRandom`). It is a secret:
    /// store it in a file with mode 600 outside the data directory.
    pub fn generate_spec(key_id: &str) -> Result<String, PiiError> {
        if !is_valid_key_id(key_id) {
            return Err(PiiError::InvalidKeyId { location: "argument".to_owned() });
        }
        let mut bytes = [0u8; KEY_LEN_BYTES];
        SystemRandom::new().fill(&mut bytes).map_err(|_| PiiError::RandomFailure)?;
        let spec = format!("{key_id}:{}", hex::encode(bytes));
        wipe(&mut bytes);
        Ok(spec)
    }

    /// The id of the key that seals.
    pub fn active_key_id(&self) -> &str {
        // `from_keys` refuses an empty keyring.
        self.keys.first().map_or("", |key| key.id.as_str())
    }

    /// Every key id, the active one first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|key| key.id.clone()).collect()
    }

    /// Encrypts `plaintext` under the active key, authenticating `aad` as well; see the module
    /// documentation for the output format. Refuses a plaintext longer than
    /// [`PLAINTEXT_LEN_MAX`].
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, PiiError> {
        if plaintext.len() > PLAINTEXT_LEN_MAX {
            return Err(PiiError::PlaintextTooLong { len: plaintext.len(), len_max: PLAINTEXT_LEN_MAX });
        }
        let key = self.keys.first().ok_or(PiiError::EmptyKeyring)?;
        let id_len = u8::try_from(key.id.len()).map_err(|_| PiiError::EncryptionFailed)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| PiiError::RandomFailure)?;
        let mut in_out = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
            .map_err(|_| PiiError::EncryptionFailed)?;
        let mut out = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + in_out.len());
        out.push(SEALED_VERSION);
        out.push(id_len);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// Decrypts a value from [`Keyring::seal`] with the key it names, checking `aad`. Fails on
    /// an unknown key id, a malformed value, or failed authentication (wrong key, wrong AAD,
    /// tampering). Never panics.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, PiiError> {
        if sealed.len() > SEALED_LEN_MAX {
            return Err(PiiError::Malformed("longer than SEALED_LEN_MAX"));
        }
        let (&version, rest) = sealed.split_first().ok_or(PiiError::Malformed("empty"))?;
        if version != SEALED_VERSION {
            return Err(PiiError::UnsupportedVersion(version));
        }
        let (&id_len, rest) = rest.split_first().ok_or(PiiError::Malformed("no key id length"))?;
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > KEY_ID_LEN_MAX {
            return Err(PiiError::Malformed("bad key id length"));
        }
        let (id, rest) = rest.split_at_checked(id_len).ok_or(PiiError::Malformed("truncated key id"))?;
        let id = std::str::from_utf8(id).map_err(|_| PiiError::Malformed("bad key id"))?;
        if !is_valid_key_id(id) {
            return Err(PiiError::Malformed("bad key id"));
        }
        let (nonce, ciphertext) =
            rest.split_at_checked(NONCE_LEN).ok_or(PiiError::Malformed("truncated nonce"))?;
        if ciphertext.len() < TAG_LEN_BYTES {
            return Err(PiiError::Malformed("truncated ciphertext"));
        }
        let key = self
            .keys
            .iter()
            .find(|key| key.id == id)
            .ok_or_else(|| PiiError::UnknownKeyId { key_id: id.to_owned() })?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| PiiError::Malformed("truncated nonce"))?;
        let mut in_out = ciphertext.to_vec();
        let plaintext_len = key
            .key
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| PiiError::AuthenticationFailed)?
            .len();
        in_out.truncate(plaintext_len);
        Ok(in_out)
    }
}

/// A value that must not appear in logs: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> Redacted<T> {
    /// The wrapped value.
    pub fn inner(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    const KEY_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const KEY_B: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdef0123";

    fn keyring(value: &str) -> Keyring {
        Keyring::from_env_value(value).unwrap()
    }

    fn write_key_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        let mut file = File::create(&path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    #[test]
    fn env_value_parses_and_first_is_active() {
        let ring = keyring(&format!(" new:{KEY_B} , old:{KEY_A},"));
        assert_eq!(ring.active_key_id(), "new");
        assert_eq!(ring.key_ids(), vec!["new".to_owned(), "old".to_owned()]);
    }

    #[test]
    fn env_value_refusals() {
        assert_eq!(Keyring::from_env_value("").unwrap_err(), PiiError::EmptyKeyring);
        assert_eq!(Keyring::from_env_value(" , ").unwrap_err(), PiiError::EmptyKeyring);
        assert!(matches!(
            Keyring::from_env_value(&format!("a:{KEY_A},a:{KEY_B}")),
            Err(PiiError::DuplicateKeyId { key_id }) if key_id == "a"
        ));
        assert!(matches!(
            Keyring::from_env_value(&format!("a:{KEY_A},B:{KEY_B}")),
            Err(PiiError::InvalidKeyId { location }) if location == "entry 2"
        ));
        assert!(matches!(
            Keyring::from_env_value(&format!("a:{}", &KEY_A[..62])),
            Err(PiiError::KeyWrongLength { len_chars: 62, .. })
        ));
        assert!(matches!(
            Keyring::from_env_value(&format!("a:{KEY_A}00")),
            Err(PiiError::KeyWrongLength { len_chars: 66, .. })
        ));
        let not_hex = format!("{}zz", &KEY_A[..62]);
        assert!(matches!(Keyring::from_env_value(&format!("a:{not_hex}")), Err(PiiError::KeyNotHex { .. })));
        assert!(matches!(Keyring::from_env_value(KEY_A), Err(PiiError::SpecMissingColon { .. })));
        let long_id = "a".repeat(KEY_ID_LEN_MAX + 1);
        assert!(matches!(
            Keyring::from_env_value(&format!("{long_id}:{KEY_A}")),
            Err(PiiError::InvalidKeyId { .. })
        ));
        let many: Vec<String> = (0..=KEYRING_KEYS_MAX).map(|i| format!("k{i}:{KEY_A}")).collect();
        assert_eq!(
            Keyring::from_env_value(&many.join(",")).unwrap_err(),
            PiiError::TooManyKeys { keys_max: KEYRING_KEYS_MAX }
        );
    }

    #[test]
    fn debug_prints_ids_only() {
        let ring = keyring(&format!("k1:{KEY_A},k2:{KEY_B}"));
        let debug = format!("{ring:?}");
        assert!(debug.contains("k1") && debug.contains("k2"), "{debug}");
        assert!(!debug.contains("0101") && !debug.contains("abcdef"), "{debug}");
    }

    #[test]
    fn generate_spec_roundtrips() {
        let spec = Keyring::generate_spec("k-2026").unwrap();
        let (id, key) = spec.split_once(':').unwrap();
        assert_eq!(id, "k-2026");
        assert_eq!(key.len(), KEY_HEX_LEN);
        let ring = keyring(&spec);
        let sealed = ring.seal(b"aad", b"hello").unwrap();
        assert_eq!(ring.open(b"aad", &sealed).unwrap(), b"hello");
        assert_ne!(spec, Keyring::generate_spec("k-2026").unwrap());
        assert!(matches!(Keyring::generate_spec("Bad"), Err(PiiError::InvalidKeyId { .. })));
        assert!(matches!(Keyring::generate_spec(""), Err(PiiError::InvalidKeyId { .. })));
    }

    #[test]
    fn sealed_format_and_limits() {
        let ring = keyring(&format!("k1:{KEY_A}"));
        let sealed = ring.seal(b"aad", b"abc").unwrap();
        assert_eq!(sealed[0], SEALED_VERSION);
        assert_eq!(sealed[1], 2);
        assert_eq!(&sealed[2..4], b"k1");
        assert_eq!(sealed.len(), 2 + 2 + NONCE_LEN + 3 + TAG_LEN_BYTES);
        assert_ne!(ring.seal(b"aad", b"abc").unwrap(), sealed, "nonces are random");
        let biggest = vec![7u8; PLAINTEXT_LEN_MAX];
        let sealed_big = ring.seal(b"", &biggest).unwrap();
        assert!(sealed_big.len() <= SEALED_LEN_MAX);
        assert_eq!(ring.open(b"", &sealed_big).unwrap(), biggest);
        assert_eq!(
            ring.seal(b"", &vec![0u8; PLAINTEXT_LEN_MAX + 1]).unwrap_err(),
            PiiError::PlaintextTooLong { len: PLAINTEXT_LEN_MAX + 1, len_max: PLAINTEXT_LEN_MAX }
        );
        assert_eq!(ring.open(b"", b"").unwrap_err(), PiiError::Malformed("empty"));
        assert_eq!(ring.open(b"", &[2, 0]).unwrap_err(), PiiError::UnsupportedVersion(2));
        assert!(matches!(ring.open(b"", &vec![1u8; SEALED_LEN_MAX + 1]), Err(PiiError::Malformed(_))));
        let mut other_id = sealed.clone();
        other_id[2..4].copy_from_slice(b"k9");
        assert_eq!(
            ring.open(b"aad", &other_id).unwrap_err(),
            PiiError::UnknownKeyId { key_id: "k9".to_owned() }
        );
        let empty_plaintext = ring.seal(b"aad", b"").unwrap();
        assert_eq!(ring.open(b"aad", &empty_plaintext).unwrap(), b"");
    }

    #[test]
    fn wrong_aad_and_wrong_key_fail() {
        let a = keyring(&format!("k1:{KEY_A}"));
        let b = keyring(&format!("k1:{KEY_B}"));
        let sealed = a.seal(b"holder/fintech-a/h-123/name", b"Maria").unwrap();
        assert_eq!(
            a.open(b"holder/fintech-a/h-124/name", &sealed).unwrap_err(),
            PiiError::AuthenticationFailed
        );
        assert_eq!(
            b.open(b"holder/fintech-a/h-123/name", &sealed).unwrap_err(),
            PiiError::AuthenticationFailed
        );
    }

    #[test]
    fn rotation_opens_old_and_seals_new() {
        let old = keyring(&format!("old:{KEY_A}"));
        let rotated = keyring(&format!("new:{KEY_B},old:{KEY_A}"));
        let sealed_old = old.seal(b"x", b"secret").unwrap();
        assert_eq!(rotated.open(b"x", &sealed_old).unwrap(), b"secret");
        let sealed_new = rotated.seal(b"x", b"secret").unwrap();
        assert_eq!(&sealed_new[2..5], b"new");
        assert_eq!(
            old.open(b"x", &sealed_new).unwrap_err(),
            PiiError::UnknownKeyId { key_id: "new".to_owned() }
        );
    }

    #[test]
    fn key_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        let text = format!("# puente pii keys\n\nnew:{KEY_B}\n  # old one\nold:{KEY_A}\n");
        let path = write_key_file(dir.path(), "pii.keys", &text, 0o600);
        let ring = Keyring::from_file(&path, &data_dir).unwrap();
        assert_eq!(ring.key_ids(), vec!["new".to_owned(), "old".to_owned()]);
        // A data directory that does not exist yet.
        let ring = Keyring::from_file(&path, &dir.path().join("later/data")).unwrap();
        assert_eq!(ring.active_key_id(), "new");
    }

    #[test]
    fn key_file_inside_data_dir_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        let path = write_key_file(&data_dir, "pii.keys", &format!("k:{KEY_A}\n"), 0o600);
        assert!(matches!(Keyring::from_file(&path, &data_dir), Err(PiiError::KeyFileInsideDataDir { .. })));
        // Through a non-canonical data_dir spelling.
        let odd = dir.path().join("data/../data/.");
        assert!(matches!(Keyring::from_file(&path, &odd), Err(PiiError::KeyFileInsideDataDir { .. })));
        // The data directory is an ancestor of the key file.
        assert!(matches!(Keyring::from_file(&path, dir.path()), Err(PiiError::KeyFileInsideDataDir { .. })));
        // A data directory that does not exist yet, spelled with `..`, that is the key's dir.
        let nested = dir.path().join("not-yet/../data");
        assert!(matches!(Keyring::from_file(&path, &nested), Err(PiiError::KeyFileInsideDataDir { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_symlink_into_data_dir_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        let path = write_key_file(&data_dir, "pii.keys", &format!("k:{KEY_A}\n"), 0o600);
        let link = dir.path().join("link.keys");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(Keyring::from_file(&link, &data_dir), Err(PiiError::KeyFileInsideDataDir { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_permissions_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o700 | 0o001] {
            let path = write_key_file(dir.path(), "pii.keys", &format!("k:{KEY_A}\n"), mode);
            let err = Keyring::from_file(&path, &data_dir).unwrap_err();
            assert!(matches!(err, PiiError::KeyFileInsecure { .. }), "{mode:o}: {err:?}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
            assert!(!err.to_string().contains(KEY_A));
        }
        let path = write_key_file(dir.path(), "pii.keys", &format!("k:{KEY_A}\n"), 0o400);
        assert!(Keyring::from_file(&path, &data_dir).is_ok());
    }

    #[test]
    fn key_file_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let empty = write_key_file(dir.path(), "empty.keys", "# nothing\n\n", 0o600);
        assert_eq!(Keyring::from_file(&empty, &data_dir).unwrap_err(), PiiError::EmptyKeyring);
        let dup = write_key_file(dir.path(), "dup.keys", &format!("a:{KEY_A}\na:{KEY_B}\n"), 0o600);
        assert!(matches!(Keyring::from_file(&dup, &data_dir), Err(PiiError::DuplicateKeyId { .. })));
        let bad = write_key_file(dir.path(), "bad.keys", &format!("# c\na:{KEY_A}\nb:{KEY_B}x\n"), 0o600);
        assert!(matches!(
            Keyring::from_file(&bad, &data_dir),
            Err(PiiError::KeyWrongLength { location, len_chars: 65 }) if location == "line 3"
        ));
        let missing = dir.path().join("missing.keys");
        assert!(matches!(Keyring::from_file(&missing, &data_dir), Err(PiiError::KeyFileIo { .. })));
        assert!(matches!(
            Keyring::from_file(dir.path(), &data_dir),
            Err(PiiError::KeyFileNotRegular { .. } | PiiError::KeyFileInsecure { .. })
        ));
        let big = write_key_file(dir.path(), "big.keys", &"#".repeat(KEY_FILE_LEN_MAX + 1), 0o600);
        assert!(matches!(Keyring::from_file(&big, &data_dir), Err(PiiError::KeyFileTooLarge { .. })));
        let path = dir.path().join("binary.keys");
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(Keyring::from_file(&path, &data_dir), Err(PiiError::KeyFileNotUtf8 { .. })));
    }

    #[test]
    fn redacted_hides_value() {
        let name = Redacted("Maria Lopez".to_owned());
        assert_eq!(format!("{name:?}"), "[redacted]");
        assert_eq!(format!("{name}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(name.clone())), "Some([redacted])");
        assert_eq!(name.inner(), "Maria Lopez");
        assert_eq!(name, Redacted("Maria Lopez".to_owned()));
    }

    fn bad_specs(key_hex: &str) -> Vec<String> {
        let upper = key_hex.to_uppercase();
        vec![
            key_hex.to_owned(),
            format!("BAD:{key_hex}"),
            format!("{key_hex}:{key_hex}"),
            format!(":{key_hex}"),
            format!("k:{key_hex}0"),
            format!("k:{}", &key_hex[..63]),
            format!("k:{}g", &key_hex[..63]),
            format!("k:g{}", &key_hex[1..]),
            format!("k:{key_hex},k:{key_hex}"),
            format!("k:{upper},BAD:{key_hex}"),
            format!("k:{key_hex},{key_hex}"),
            format!("{}:{}", &key_hex[..17], &key_hex[17..]),
            format!("{}:{}", &key_hex[..10], &key_hex[10..]),
        ]
    }

    proptest! {
        #[test]
        fn seal_open_roundtrip(
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let ring = keyring(&format!("k1:{KEY_A}"));
            let sealed = ring.seal(&aad, &plaintext).unwrap();
            prop_assert_eq!(ring.open(&aad, &sealed).unwrap(), plaintext);
        }

        #[test]
        fn any_flipped_byte_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let ring = keyring(&format!("k1:{KEY_A},k2:{KEY_B}"));
            let mut sealed = ring.seal(b"aad", &plaintext).unwrap();
            let i = index.index(sealed.len());
            sealed[i] ^= flip;
            prop_assert!(ring.open(b"aad", &sealed).is_err());
        }

        #[test]
        fn wrong_aad_fails(
            aad in proptest::collection::vec(any::<u8>(), 0..32),
            other in proptest::collection::vec(any::<u8>(), 0..32),
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assume!(aad != other);
            let ring = keyring(&format!("k1:{KEY_A}"));
            let sealed = ring.seal(&aad, &plaintext).unwrap();
            prop_assert_eq!(ring.open(&other, &sealed).unwrap_err(), PiiError::AuthenticationFailed);
        }

        #[test]
        fn other_key_cannot_open(
            key_a in any::<[u8; 32]>(),
            key_b in any::<[u8; 32]>(),
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assume!(key_a != key_b);
            let a = keyring(&format!("k:{}", hex::encode(key_a)));
            let b = keyring(&format!("k:{}", hex::encode(key_b)));
            let sealed = a.seal(b"aad", &plaintext).unwrap();
            prop_assert_eq!(b.open(b"aad", &sealed).unwrap_err(), PiiError::AuthenticationFailed);
        }

        #[test]
        fn rotation_opens_everything_sealed_before(
            plaintexts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 1..8),
        ) {
            let old = keyring(&format!("old:{KEY_A}"));
            let rotated = keyring(&format!("new:{KEY_B},old:{KEY_A}"));
            for plaintext in &plaintexts {
                let sealed = old.seal(b"r", plaintext).unwrap();
                prop_assert_eq!(&rotated.open(b"r", &sealed).unwrap(), plaintext);
                let resealed = rotated.seal(b"r", plaintext).unwrap();
                prop_assert_eq!(&rotated.open(b"r", &resealed).unwrap(), plaintext);
            }
        }

        #[test]
        fn open_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
            header in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let ring = keyring(&format!("k1:{KEY_A}"));
            prop_assert!(ring.open(b"aad", &bytes).is_err());
            // Also with a plausible header, to reach the key lookup and the cipher.
            let mut plausible = vec![SEALED_VERSION, 2, b'k', b'1'];
            plausible.extend_from_slice(&header);
            prop_assert!(ring.open(b"aad", &plausible).is_err());
        }

        #[test]
        fn errors_never_contain_key(key in any::<[u8; 32]>()) {
            let key_hex = hex::encode(key);
            for spec in bad_specs(&key_hex) {
                let err = Keyring::from_env_value(&spec).unwrap_err();
                let shown = format!("{err} {err:?}");
                prop_assert!(!shown.contains(&key_hex), "{}", shown);
                prop_assert!(!shown.to_lowercase().contains(&key_hex[20..40]), "{}", shown);
                let file_err = Keyring::from_file_text(&spec.replace(',', "\n")).unwrap_err();
                let shown = format!("{file_err} {file_err:?}");
                prop_assert!(!shown.contains(&key_hex[20..40]), "{}", shown);
            }
        }
    }
}
