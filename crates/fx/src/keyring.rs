//! Quote-signing keys with ids, for rotation: [`QuoteKeyring`].
//!
//! A keyring holds one or more Ed25519 keys, each named by a key id (`[a-z0-9-]{1,16}`). The
//! first key signs every new quote; every key verifies. A rotation is: put the new key first,
//! keep the old ones after it until the quotes they signed have expired (and clients have
//! fetched the new public key), then drop them.
//!
//! Key spec text: `<key_id>:<64 hex chars>`, the 32-byte Ed25519 private key (the RFC 8032
//! seed). A keyring text holds one spec per line; blank lines and lines starting with `#` are
//! ignored. No error of this module carries key material: a bad spec is named by its line.
//! Parsing is pure; making keys needs randomness ([`crate::entropy`]).

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::error::FxError;
use crate::quote::{PUBLIC_KEY_LEN, Quote, SIGNATURE_LEN};

/// The longest key id, in bytes (ASCII characters).
pub const SIGNING_KEY_ID_LEN_MAX: usize = 16;
/// The length of a key in a spec, in hex characters (a 32-byte Ed25519 seed).
pub const SIGNING_KEY_HEX_LEN: usize = 64;
/// The most keys one keyring holds (verifying a quote that names no key tries each).
pub const SIGNING_KEYS_MAX: usize = 16;
/// Key ids of in-memory keys made by [`QuoteKeyring::ephemeral`] start with this.
pub const EPHEMERAL_KEY_ID_PREFIX: &str = "ephemeral-";

const SEED_LEN_BYTES: usize = 32;

/// One key of a keyring.
struct SigningKey {
    id: String,
    pair: Ed25519KeyPair,
    public: [u8; PUBLIC_KEY_LEN],
}

/// A key id and its 32-byte Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    pub public_key: [u8; PUBLIC_KEY_LEN],
}

/// Ed25519 quote-signing keys: the first signs, all verify. `Debug` prints key ids only.
pub struct QuoteKeyring {
    keys: Vec<SigningKey>,
    ephemeral: bool,
}

impl std::fmt::Debug for QuoteKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuoteKeyring")
            .field("key_ids", &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

/// Whether `id` is `[a-z0-9-]{1,16}`.
pub fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= SIGNING_KEY_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Best-effort overwrite of key bytes that are no longer needed.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

fn key_from_seed(id: &str, seed: &[u8]) -> Result<SigningKey, FxError> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| FxError::InvalidKey("not a 32-byte Ed25519 seed"))?;
    let mut public = [0u8; PUBLIC_KEY_LEN];
    public.copy_from_slice(pair.public_key().as_ref());
    Ok(SigningKey { id: id.to_owned(), pair, public })
}

/// Parses one spec; errors name `line`, never the spec's text.
fn parse_spec(spec: &str, line: usize) -> Result<SigningKey, FxError> {
    let bad = |reason: &str| FxError::InvalidKeyring(format!("line {line}: {reason}"));
    let (id, key_hex) = spec.split_once(':').ok_or_else(|| bad("expected `<key_id>:<64 hex chars>`"))?;
    let (id, key_hex) = (id.trim(), key_hex.trim());
    if !is_valid_key_id(id) {
        return Err(bad(&format!("key id must be 1 to {SIGNING_KEY_ID_LEN_MAX} characters of [a-z0-9-]")));
    }
    let len_chars = key_hex.chars().count();
    if len_chars != SIGNING_KEY_HEX_LEN {
        return Err(bad(&format!(
            "key has {len_chars} characters, expected {SIGNING_KEY_HEX_LEN} hex characters (a 32-byte Ed25519 key)"
        )));
    }
    let mut seed = [0u8; SEED_LEN_BYTES];
    // `hex`'s error names the offending character: drop it, it is key material.
    let decoded = hex::decode_to_slice(key_hex, &mut seed);
    let key = match decoded {
        Ok(()) => key_from_seed(id, &seed),
        Err(_) => Err(bad("key is not valid hex")),
    };
    wipe(&mut seed);
    key
}

impl QuoteKeyring {
    fn from_keys(keys: Vec<SigningKey>, ephemeral: bool) -> Result<QuoteKeyring, FxError> {
        if keys.is_empty() {
            return Err(FxError::InvalidKeyring(
                "no key: at least one `<key_id>:<64 hex chars>` line is required".into(),
            ));
        }
        if keys.len() > SIGNING_KEYS_MAX {
            return Err(FxError::InvalidKeyring(format!("more than {SIGNING_KEYS_MAX} keys")));
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|other| other.id == key.id) {
                return Err(FxError::InvalidKeyring(format!("duplicate key id {:?}", key.id)));
            }
        }
        Ok(QuoteKeyring { keys, ephemeral })
    }

    /// A keyring from the text of a key file: one spec per line, the first one signs.
    pub fn from_text(text: &str) -> Result<QuoteKeyring, FxError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if keys.len() >= SIGNING_KEYS_MAX {
                return Err(FxError::InvalidKeyring(format!("more than {SIGNING_KEYS_MAX} keys")));
            }
            keys.push(parse_spec(line, i + 1)?);
        }
        QuoteKeyring::from_keys(keys, false)
    }

    /// A keyring of one fresh key that lives only in memory (id `ephemeral-<6 hex>`): for a
    /// server started without a key file. Its quotes stop verifying when the process ends.
    pub fn ephemeral() -> Result<QuoteKeyring, FxError> {
        let mut seed = crate::entropy::generate_signing_seed()?;
        let suffix = crate::entropy::generate_quote_id()?;
        let id = format!("{EPHEMERAL_KEY_ID_PREFIX}{}", hex::encode(&suffix[..3]));
        let key = key_from_seed(&id, &seed);
        wipe(&mut seed);
        QuoteKeyring::from_keys(vec![key?], true)
    }

    /// A new random key spec `<key_id>:<64 hex chars>`. It is a secret: keep it in a file with
    /// mode 0600 outside the data directory.
    pub fn generate_spec(key_id: &str) -> Result<String, FxError> {
        if !is_valid_key_id(key_id) {
            return Err(FxError::InvalidKeyring(format!(
                "key id must be 1 to {SIGNING_KEY_ID_LEN_MAX} characters of [a-z0-9-]"
            )));
        }
        let mut seed = crate::entropy::generate_signing_seed()?;
        let spec = format!("{key_id}:{}", hex::encode(seed));
        wipe(&mut seed);
        Ok(spec)
    }

    /// True for the in-memory keyring of [`QuoteKeyring::ephemeral`].
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The id of the key that signs.
    pub fn active_key_id(&self) -> &str {
        // `from_keys` refuses an empty keyring.
        self.keys.first().map_or("", |key| key.id.as_str())
    }

    /// Every public key with its id, the signing key first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(|key| PublicKey { key_id: key.id.clone(), public_key: key.public }).collect()
    }

    /// Signs `quote` (refusing an inconsistent one) with the first key: (key id, signature).
    pub fn sign(&self, quote: &Quote) -> Result<(String, [u8; SIGNATURE_LEN]), FxError> {
        quote.check_consistency()?;
        let key = self.keys.first().ok_or(FxError::InvalidKey("empty keyring"))?;
        let signature = key.pair.sign(&quote.canonical_bytes());
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(signature.as_ref());
        Ok((key.id.clone(), out))
    }

    /// Signs a canonical encoding other than a quote's with the first key: (key id,
    /// signature). Only for encodings that start with their own magic (a settlement FX cover's
    /// is `PNTC`), so a signed document can never be read as a signed quote: execution parses
    /// a quote's magic after verifying its signature.
    pub fn sign_canonical(&self, canonical: &[u8]) -> Result<(String, [u8; SIGNATURE_LEN]), FxError> {
        if canonical.starts_with(crate::quote::QUOTE_MAGIC) {
            return Err(FxError::MalformedQuote("not a quote: sign quotes with `sign`"));
        }
        let key = self.keys.first().ok_or(FxError::InvalidKey("empty keyring"))?;
        let signature = key.pair.sign(canonical);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(signature.as_ref());
        Ok((key.id.clone(), out))
    }

    /// Verifies `signature` over `canonical` with the key named `key_id`, or, when `key_id` is
    /// empty, with each key in turn. Returns the id of the key that verified;
    /// [`FxError::InvalidSignature`] when none does (an unknown key id included).
    pub fn verify(&self, key_id: &str, canonical: &[u8], signature: &[u8]) -> Result<&str, FxError> {
        if signature.len() != SIGNATURE_LEN {
            return Err(FxError::InvalidSignature);
        }
        self.keys
            .iter()
            .filter(|key| key_id.is_empty() || key.id == key_id)
            .find(|key| UnparsedPublicKey::new(&ED25519, key.public).verify(canonical, signature).is_ok())
            .map(|key| key.id.as_str())
            .ok_or(FxError::InvalidSignature)
    }
}

/// Verifies an Ed25519 `signature` over `canonical` with a 32-byte `public_key` (as
/// [`QuoteKeyring::public_keys`] gives it): how a reader checks a signed settlement FX cover.
pub fn verify_canonical(public_key: &[u8], canonical: &[u8], signature: &[u8]) -> Result<(), FxError> {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(canonical, signature)
        .map_err(|_| FxError::InvalidSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::tests::sample;

    const K1: &str = "k1:0101010101010101010101010101010101010101010101010101010101010101";
    const K2: &str = "k2:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdef0123";

    #[test]
    fn first_key_signs_every_key_verifies() {
        let old = QuoteKeyring::from_text(K1).unwrap();
        let quote = sample();
        let (id, signature) = old.sign(&quote).unwrap();
        assert_eq!(id, "k1");
        let rotated = QuoteKeyring::from_text(&format!("# rotated\n{K2}\n\n{K1}\n")).unwrap();
        assert_eq!(rotated.active_key_id(), "k2");
        let ids: Vec<_> = rotated.public_keys().into_iter().map(|k| k.key_id).collect();
        assert_eq!(ids, ["k2", "k1"]);
        let canonical = quote.canonical_bytes();
        assert_eq!(rotated.verify("k1", &canonical, &signature), Ok("k1"));
        assert_eq!(rotated.verify("", &canonical, &signature), Ok("k1"));
        assert_eq!(rotated.verify("k2", &canonical, &signature), Err(FxError::InvalidSignature));
        assert_eq!(rotated.verify("k9", &canonical, &signature), Err(FxError::InvalidSignature));
        let (id, new_signature) = rotated.sign(&quote).unwrap();
        assert_eq!(id, "k2");
        assert_eq!(old.verify("", &canonical, &new_signature), Err(FxError::InvalidSignature));
        // The public key is the one verify_quote takes.
        let public = rotated.public_keys()[1].public_key;
        crate::verify_quote(&public, &quote, &signature).unwrap();
        let mut tampered = canonical.clone();
        tampered[30] ^= 1;
        assert_eq!(rotated.verify("", &tampered, &signature), Err(FxError::InvalidSignature));
        assert_eq!(rotated.verify("", &canonical, &signature[..63]), Err(FxError::InvalidSignature));
    }

    #[test]
    fn canonical_documents_are_signed_but_never_as_quotes() {
        let keyring = QuoteKeyring::from_text(K1).unwrap();
        let document = b"PNTC\x01 a settlement FX cover";
        let (id, signature) = keyring.sign_canonical(document).unwrap();
        assert_eq!(id, "k1");
        let public = keyring.public_keys()[0].public_key;
        verify_canonical(&public, document, &signature).unwrap();
        assert_eq!(
            verify_canonical(&public, b"PNTC\x01 another", &signature),
            Err(FxError::InvalidSignature)
        );
        assert_eq!(keyring.verify("k1", document, &signature), Ok("k1"));
        // A quote's bytes go through `sign`, which checks the quote.
        assert!(keyring.sign_canonical(&sample().canonical_bytes()).is_err());
    }

    #[test]
    fn bad_keyrings_are_refused_without_echoing_keys() {
        let secret = "0101010101010101010101010101010101010101010101010101010101010101";
        for (text, expected) in [
            ("", "no key"),
            ("# only a comment\n", "no key"),
            ("k1", "line 1: expected"),
            ("K1:00", "line 1: key id"),
            ("\nk1:0101", "line 2: key has 4 characters"),
            (&format!("k1:{}zz", &secret[..62]), "line 1: key is not valid hex"),
            (&format!("k1:{secret}\nk1:{secret}"), "duplicate key id"),
        ] {
            let error = QuoteKeyring::from_text(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains(&secret[..16]), "{error}");
        }
        let many: String = (0..=SIGNING_KEYS_MAX).map(|i| format!("k{i}:{secret}\n")).collect();
        assert!(QuoteKeyring::from_text(&many).unwrap_err().to_string().contains("more than"));
        assert!(!format!("{:?}", QuoteKeyring::from_text(K1).unwrap()).contains("0101"));
    }

    #[test]
    fn generated_specs_and_ephemeral_keys() {
        let spec = QuoteKeyring::generate_spec("k7").unwrap();
        let keyring = QuoteKeyring::from_text(&spec).unwrap();
        assert_eq!(keyring.active_key_id(), "k7");
        assert!(!keyring.is_ephemeral());
        assert_ne!(QuoteKeyring::generate_spec("k7").unwrap(), spec);
        assert!(QuoteKeyring::generate_spec("Bad").is_err());
        let a = QuoteKeyring::ephemeral().unwrap();
        let b = QuoteKeyring::ephemeral().unwrap();
        assert!(a.is_ephemeral() && a.active_key_id().starts_with(EPHEMERAL_KEY_ID_PREFIX));
        assert!(is_valid_key_id(a.active_key_id()), "{}", a.active_key_id());
        assert_ne!(a.public_keys()[0].public_key, b.public_keys()[0].public_key);
    }
}
