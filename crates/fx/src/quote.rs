//! [`Quote`], its canonical byte encoding and Ed25519 signatures.
//!
//! # Canonical encoding, version 1
//!
//! All integers big-endian. Decimals are normalized first (`1.050` and `1.05` encode the same)
//! and written as `scale: u8` then `mantissa: u128` (16 bytes); rates are positive.
//!
//! ```text
//! "PFXQ"                 4 bytes magic
//! version                u8 = 1
//! id                     16 bytes
//! participant            u16 length + UTF-8 bytes (1..=64)
//! segment                u8 (0 sme, 1 remittance, 2 institution)
//! sell, buy              3 + 3 bytes (ISO 4217 letters)
//! fixed_side             u8 (0 send, 1 receive)
//! mid_rate               u8 scale + u128 mantissa
//! customer_rate          u8 scale + u128 mantissa
//! spread_bps             u32
//! rate_as_of_ms          u64
//! send_amount_minor, fee_fixed_minor, fee_pct_minor, fee_total_minor, tax_minor,
//! total_debit_minor, converted_amount_minor, third_party_fee_minor, receive_amount_minor,
//! created_at_ms, expires_at_ms                               u64 each
//! ```
//!
//! Decoding is strict (no trailing bytes, normalized decimals only, consistent amounts), so
//! every quote has exactly one encoding. The Ed25519 signature is over these bytes.

use puente_money::{AMOUNT_MAX_MINOR, CurrencyCode};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::significant_digits;
use crate::error::FxError;
use crate::rates::CLOCK_SKEW_MAX_MS;
use crate::terms::Pair;
use crate::terms::{CUSTOMER_RATE_SIGNIFICANT_DIGITS, SPREAD_MAX_BPS, Segment, TTL_MAX_MS};

pub use crate::terms::QuoteId;
/// Version of the canonical encoding produced by [`Quote::canonical_bytes`].
pub const QUOTE_ENCODING_VERSION: u8 = 1;
/// Longest participant id, in bytes (the one every crate uses; it is part of the signed encoding).
pub const QUOTE_PARTICIPANT_LEN_MAX: usize = puente_core::PARTICIPANT_ID_LEN_MAX;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// The first bytes of a quote's canonical encoding.
pub const QUOTE_MAGIC: &[u8; 4] = b"PFXQ";
const MAGIC: &[u8; 4] = QUOTE_MAGIC;
/// Largest canonical encoding (with the longest participant id).
pub const QUOTE_ENCODING_LEN_MAX: usize =
    4 + 1 + 16 + 2 + QUOTE_PARTICIPANT_LEN_MAX + 1 + 6 + 1 + 17 * 2 + 4 + 8 * 12;

/// Which amount the customer fixed when asking for the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FixedKind {
    Send,
    Receive,
}

/// A priced, time-limited offer. Amounts in minor units; `pair.base` is the sell (send)
/// currency and `pair.quote` the buy (receive) currency; rates are units of buy per 1 sell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub id: QuoteId,
    pub participant: String,
    pub segment: Segment,
    pub pair: Pair,
    pub fixed_side: FixedKind,
    pub mid_rate: Decimal,
    pub customer_rate: Decimal,
    pub spread_bps: u32,
    /// Timestamp of the mid rate used.
    pub rate_as_of_ms: u64,
    /// Amount converted, in the sell currency (fees excluded).
    pub send_amount_minor: u64,
    pub fee_fixed_minor: u64,
    pub fee_pct_minor: u64,
    /// `fee_fixed_minor + fee_pct_minor`.
    pub fee_total_minor: u64,
    /// Taxes collected by the provider, in the sell currency.
    pub tax_minor: u64,
    /// `send_amount_minor + fee_total_minor + tax_minor`: what the customer pays.
    pub total_debit_minor: u64,
    /// Send amount at the customer rate, in the buy currency.
    pub converted_amount_minor: u64,
    /// Covered third-party fees, in the buy currency, deducted from the converted amount.
    pub third_party_fee_minor: u64,
    /// `converted_amount_minor − third_party_fee_minor`: what the recipient gets.
    pub receive_amount_minor: u64,
    pub created_at_ms: u64,
    /// The quote is executable while `now_ms < expires_at_ms`.
    pub expires_at_ms: u64,
}

fn segment_byte(segment: Segment) -> u8 {
    match segment {
        Segment::Sme => 0,
        Segment::Remittance => 1,
        Segment::Institution => 2,
    }
}

fn put_decimal(out: &mut Vec<u8>, value: Decimal) {
    let value = value.normalize();
    out.push(value.scale() as u8);
    out.extend_from_slice(&value.mantissa().unsigned_abs().to_be_bytes());
}

impl Quote {
    /// Checks the arithmetic relations between the fields (scale-independent): totals add up,
    /// the customer rate is positive and not better than mid, amounts within limits, the
    /// lifetime within [`TTL_MAX_MS`].
    pub fn check_consistency(&self) -> Result<(), FxError> {
        let bad = FxError::InconsistentQuote;
        if self.pair.base == self.pair.quote {
            return Err(bad("sell and buy currencies are the same"));
        }
        if self.participant.is_empty() || self.participant.len() > QUOTE_PARTICIPANT_LEN_MAX {
            return Err(bad("participant id length"));
        }
        if self.mid_rate <= Decimal::ZERO || self.customer_rate <= Decimal::ZERO {
            return Err(bad("rates must be positive"));
        }
        if self.customer_rate > self.mid_rate {
            return Err(bad("customer rate better than mid"));
        }
        if significant_digits(self.customer_rate) > CUSTOMER_RATE_SIGNIFICANT_DIGITS {
            return Err(bad("customer rate has too many digits"));
        }
        if self.spread_bps > SPREAD_MAX_BPS {
            return Err(bad("spread above limit"));
        }
        if self.fee_fixed_minor.checked_add(self.fee_pct_minor) != Some(self.fee_total_minor) {
            return Err(bad("fee total"));
        }
        let total = self
            .send_amount_minor
            .checked_add(self.fee_total_minor)
            .and_then(|v| v.checked_add(self.tax_minor));
        if total != Some(self.total_debit_minor) {
            return Err(bad("total debit"));
        }
        if self.converted_amount_minor.checked_sub(self.third_party_fee_minor)
            != Some(self.receive_amount_minor)
        {
            return Err(bad("receive amount"));
        }
        if self.send_amount_minor == 0 || self.receive_amount_minor == 0 {
            return Err(bad("zero amount"));
        }
        if self.total_debit_minor > AMOUNT_MAX_MINOR || self.converted_amount_minor > AMOUNT_MAX_MINOR {
            return Err(bad("amount above limit"));
        }
        if self.expires_at_ms <= self.created_at_ms || self.expires_at_ms - self.created_at_ms > TTL_MAX_MS {
            return Err(bad("lifetime"));
        }
        Ok(())
    }

    /// The canonical, versioned encoding (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(QUOTE_ENCODING_LEN_MAX);
        out.extend_from_slice(MAGIC);
        out.push(QUOTE_ENCODING_VERSION);
        out.extend_from_slice(&self.id);
        // Participant ids longer than the limit never pass `check_consistency`; truncating
        // here keeps encoding infallible and such a quote unverifiable against a real one.
        let participant =
            &self.participant.as_bytes()[..self.participant.len().min(QUOTE_PARTICIPANT_LEN_MAX)];
        out.extend_from_slice(&(participant.len() as u16).to_be_bytes());
        out.extend_from_slice(participant);
        out.push(segment_byte(self.segment));
        out.extend_from_slice(&self.pair.base.as_bytes());
        out.extend_from_slice(&self.pair.quote.as_bytes());
        out.push(match self.fixed_side {
            FixedKind::Send => 0,
            FixedKind::Receive => 1,
        });
        put_decimal(&mut out, self.mid_rate);
        put_decimal(&mut out, self.customer_rate);
        out.extend_from_slice(&self.spread_bps.to_be_bytes());
        for value in [
            self.rate_as_of_ms,
            self.send_amount_minor,
            self.fee_fixed_minor,
            self.fee_pct_minor,
            self.fee_total_minor,
            self.tax_minor,
            self.total_debit_minor,
            self.converted_amount_minor,
            self.third_party_fee_minor,
            self.receive_amount_minor,
            self.created_at_ms,
            self.expires_at_ms,
        ] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        debug_assert!(out.len() <= QUOTE_ENCODING_LEN_MAX);
        out
    }

    /// Decodes a canonical encoding; strict (see the module documentation).
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Quote, FxError> {
        if bytes.len() > QUOTE_ENCODING_LEN_MAX {
            return Err(FxError::MalformedQuote("too long"));
        }
        let mut reader = Reader { bytes };
        if reader.take(4)? != MAGIC {
            return Err(FxError::MalformedQuote("bad magic"));
        }
        let version = reader.u8()?;
        if version != QUOTE_ENCODING_VERSION {
            return Err(FxError::UnsupportedVersion(version));
        }
        let id: QuoteId = reader.array()?;
        let participant_len = u16::from_be_bytes(reader.array()?) as usize;
        if participant_len == 0 || participant_len > QUOTE_PARTICIPANT_LEN_MAX {
            return Err(FxError::MalformedQuote("participant length"));
        }
        let participant = std::str::from_utf8(reader.take(participant_len)?)
            .map_err(|_| FxError::MalformedQuote("participant is not UTF-8"))?
            .to_owned();
        let segment = match reader.u8()? {
            0 => Segment::Sme,
            1 => Segment::Remittance,
            2 => Segment::Institution,
            _ => return Err(FxError::MalformedQuote("segment")),
        };
        let sell = reader.currency()?;
        let buy = reader.currency()?;
        let fixed_side = match reader.u8()? {
            0 => FixedKind::Send,
            1 => FixedKind::Receive,
            _ => return Err(FxError::MalformedQuote("fixed side")),
        };
        let mid_rate = reader.decimal()?;
        let customer_rate = reader.decimal()?;
        let spread_bps = u32::from_be_bytes(reader.array()?);
        let mut next = || reader.u64();
        let quote = Quote {
            id,
            participant,
            segment,
            pair: Pair::new(sell, buy).map_err(|_| FxError::MalformedQuote("pair"))?,
            fixed_side,
            mid_rate,
            customer_rate,
            spread_bps,
            rate_as_of_ms: next()?,
            send_amount_minor: next()?,
            fee_fixed_minor: next()?,
            fee_pct_minor: next()?,
            fee_total_minor: next()?,
            tax_minor: next()?,
            total_debit_minor: next()?,
            converted_amount_minor: next()?,
            third_party_fee_minor: next()?,
            receive_amount_minor: next()?,
            created_at_ms: next()?,
            expires_at_ms: next()?,
        };
        if !reader.bytes.is_empty() {
            return Err(FxError::MalformedQuote("trailing bytes"));
        }
        quote.check_consistency()?;
        Ok(quote)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FxError> {
        if self.bytes.len() < n {
            return Err(FxError::MalformedQuote("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FxError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FxError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, FxError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn currency(&mut self) -> Result<CurrencyCode, FxError> {
        let bytes: [u8; 3] = self.array()?;
        let text = std::str::from_utf8(&bytes).map_err(|_| FxError::MalformedQuote("currency"))?;
        CurrencyCode::parse(text).map_err(|_| FxError::MalformedQuote("currency"))
    }

    fn decimal(&mut self) -> Result<Decimal, FxError> {
        let scale = self.u8()? as u32;
        let mantissa = u128::from_be_bytes(self.array()?);
        if scale > 28 || mantissa == 0 || mantissa >= 1u128 << 96 {
            return Err(FxError::MalformedQuote("decimal out of range"));
        }
        if scale > 0 && mantissa % 10 == 0 {
            return Err(FxError::MalformedQuote("decimal not normalized"));
        }
        let mantissa = i128::try_from(mantissa).map_err(|_| FxError::MalformedQuote("decimal"))?;
        Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|_| FxError::MalformedQuote("decimal"))
    }
}

/// Whether `quote` may be executed at `now_ms`: consistent, not expired
/// ([`FxError::QuoteExpired`] once `now_ms >= expires_at_ms`), and not created more than
/// [`CLOCK_SKEW_MAX_MS`] in the future ([`FxError::QuoteNotYetValid`]). Checking the signature
/// is separate ([`verify_quote`]).
pub fn check_executable(quote: &Quote, now_ms: u64) -> Result<(), FxError> {
    quote.check_consistency()?;
    if quote.created_at_ms > now_ms.saturating_add(CLOCK_SKEW_MAX_MS) {
        return Err(FxError::QuoteNotYetValid { created_at_ms: quote.created_at_ms, now_ms });
    }
    if now_ms >= quote.expires_at_ms {
        return Err(FxError::QuoteExpired { expires_at_ms: quote.expires_at_ms, now_ms });
    }
    Ok(())
}

/// Signs quotes with an Ed25519 key (PKCS#8 v2 document, as produced by [`generate_pkcs8`]).
pub struct QuoteSigner {
    key_pair: Ed25519KeyPair,
}

impl std::fmt::Debug for QuoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuoteSigner").field("public_key", &self.public_key_bytes()).finish_non_exhaustive()
    }
}

impl QuoteSigner {
    /// A fresh PKCS#8 key document (see [`crate::generate_pkcs8`]).
    pub fn generate_pkcs8() -> Result<Vec<u8>, FxError> {
        crate::entropy::generate_pkcs8()
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, FxError> {
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| FxError::InvalidKey("not an Ed25519 PKCS#8 v2 key"))?;
        Ok(QuoteSigner { key_pair })
    }

    /// The 32-byte public key clients use with [`verify_quote`].
    pub fn public_key_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.key_pair.public_key().as_ref());
        out
    }

    /// Ed25519 signature over [`Quote::canonical_bytes`]. Refuses inconsistent quotes.
    pub fn sign(&self, quote: &Quote) -> Result<[u8; SIGNATURE_LEN], FxError> {
        quote.check_consistency()?;
        let signature = self.key_pair.sign(&quote.canonical_bytes());
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(signature.as_ref());
        Ok(out)
    }
}

/// Verifies `signature` over `quote` with a 32-byte Ed25519 `public_key`. Works offline.
/// Errors: [`FxError::InvalidKey`] for a key of the wrong length, [`FxError::InvalidSignature`]
/// when any field differs from what was signed or the key is not the signer's.
pub fn verify_quote(public_key: &[u8], quote: &Quote, signature: &[u8]) -> Result<(), FxError> {
    if public_key.len() != PUBLIC_KEY_LEN {
        return Err(FxError::InvalidKey("Ed25519 public key must be 32 bytes"));
    }
    // A participant id outside the limits cannot have been signed (`sign` refuses it) and
    // would not encode injectively.
    if signature.len() != SIGNATURE_LEN
        || quote.participant.is_empty()
        || quote.participant.len() > QUOTE_PARTICIPANT_LEN_MAX
    {
        return Err(FxError::InvalidSignature);
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&quote.canonical_bytes(), signature)
        .map_err(|_| FxError::InvalidSignature)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::str::FromStr;

    pub(crate) fn sample() -> Quote {
        Quote {
            id: [7; 16],
            participant: "acme".into(),
            segment: Segment::Remittance,
            pair: Pair { base: CurrencyCode::USD, quote: CurrencyCode::MXN },
            fixed_side: FixedKind::Send,
            mid_rate: Decimal::from_str("17.250").unwrap(),
            customer_rate: Decimal::from_str("16.99125").unwrap(),
            spread_bps: 150,
            rate_as_of_ms: 1_000,
            send_amount_minor: 20_000,
            fee_fixed_minor: 299,
            fee_pct_minor: 0,
            fee_total_minor: 299,
            tax_minor: 0,
            total_debit_minor: 20_299,
            converted_amount_minor: 339_825,
            third_party_fee_minor: 0,
            receive_amount_minor: 339_825,
            created_at_ms: 2_000,
            expires_at_ms: 2_000 + TTL_MAX_MS,
        }
    }

    #[test]
    fn encoding_round_trips_and_normalizes() {
        let quote = sample();
        let bytes = quote.canonical_bytes();
        assert_eq!(Quote::from_canonical_bytes(&bytes).unwrap(), quote);
        let mut same = quote.clone();
        same.mid_rate = Decimal::from_str("17.25").unwrap();
        assert_eq!(same.canonical_bytes(), bytes);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Quote::from_canonical_bytes(&longer).is_err());
        for cut in 0..bytes.len() {
            assert!(Quote::from_canonical_bytes(&bytes[..cut]).is_err());
        }
        let mut version = bytes.clone();
        version[4] = 2;
        assert_eq!(Quote::from_canonical_bytes(&version), Err(FxError::UnsupportedVersion(2)));
    }

    #[test]
    fn sign_verify_and_tamper() {
        let pkcs8 = crate::generate_pkcs8().unwrap();
        let signer = QuoteSigner::from_pkcs8(&pkcs8).unwrap();
        let quote = sample();
        let signature = signer.sign(&quote).unwrap();
        let key = signer.public_key_bytes();
        verify_quote(&key, &quote, &signature).unwrap();
        let mut tampered = quote.clone();
        tampered.receive_amount_minor += 1;
        assert_eq!(verify_quote(&key, &tampered, &signature), Err(FxError::InvalidSignature));
        let other = QuoteSigner::from_pkcs8(&crate::generate_pkcs8().unwrap()).unwrap();
        assert_eq!(
            verify_quote(&other.public_key_bytes(), &quote, &signature),
            Err(FxError::InvalidSignature)
        );
        assert!(matches!(verify_quote(&key[..31], &quote, &signature), Err(FxError::InvalidKey(_))));
        assert_eq!(verify_quote(&key, &quote, &signature[..63]), Err(FxError::InvalidSignature));
        assert!(matches!(QuoteSigner::from_pkcs8(b"not a key"), Err(FxError::InvalidKey(_))));
        let mut inconsistent = quote.clone();
        inconsistent.total_debit_minor += 1;
        assert!(matches!(signer.sign(&inconsistent), Err(FxError::InconsistentQuote(_))));
    }

    #[test]
    fn executable_window() {
        let quote = sample();
        check_executable(&quote, 2_000).unwrap();
        check_executable(&quote, quote.expires_at_ms - 1).unwrap();
        assert!(matches!(check_executable(&quote, quote.expires_at_ms), Err(FxError::QuoteExpired { .. })));
        check_executable(&quote, 0).unwrap(); // within clock skew
        let mut future = quote.clone();
        future.created_at_ms = 100_000;
        future.expires_at_ms = 200_000;
        assert!(matches!(check_executable(&future, 1_000), Err(FxError::QuoteNotYetValid { .. })));
        let mut bad = quote.clone();
        bad.fee_total_minor = 1;
        assert!(matches!(check_executable(&bad, 2_000), Err(FxError::InconsistentQuote(_))));
    }
}
