//! The only code in this crate that touches the operating system: randomness for quote ids and
//! key generation, via `ring::rand::SystemRandom`. Everything else is pure.

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::Ed25519KeyPair;

use crate::error::FxError;
use crate::terms::QuoteId;

/// A fresh random 16-byte quote id.
pub fn generate_quote_id() -> Result<QuoteId, FxError> {
    let mut id = [0u8; 16];
    SystemRandom::new().fill(&mut id).map_err(|_| FxError::RandomFailure)?;
    Ok(id)
}

/// A fresh 32-byte Ed25519 private key (seed), for [`crate::QuoteKeyring`]. A secret.
pub fn generate_signing_seed() -> Result<[u8; 32], FxError> {
    let mut seed = [0u8; 32];
    SystemRandom::new().fill(&mut seed).map_err(|_| FxError::RandomFailure)?;
    Ok(seed)
}

/// A fresh Ed25519 key as a PKCS#8 v2 document, for [`crate::QuoteSigner::from_pkcs8`].
/// Store it as a secret.
pub fn generate_pkcs8() -> Result<Vec<u8>, FxError> {
    let document =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| FxError::RandomFailure)?;
    Ok(document.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ() {
        assert_ne!(super::generate_quote_id().unwrap(), super::generate_quote_id().unwrap());
    }
}
