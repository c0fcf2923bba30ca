//! The holder desk: account holders with a KYC tier and sealed personal data, and the KYC
//! policy, over the ledger's single writer (`Ledger::holders`). No protobuf here: the wire is
//! `holder_service.rs`, which validates the personal data (CLABE and ABA by check digit, RFC by
//! format) before handing it to the desk.
//!
//! The desk seals personal data with AES-256-GCM (`puente_kyc::pii::Keyring`) bound to
//! (participant, holder, field), and only then hands it to the ledger, which journals
//! ciphertext. It never logs it: tracing fields carry the holder id only.

use std::sync::Arc;

use puente_kyc::kyc::KycPolicy;
use puente_kyc::pii::Keyring;
use puente_ledger::Call;
use puente_ledger::Ledger;
use puente_ledger::holders::{
    self as registry, CreateHolder, GetHolder, GetUsage, Holder, HolderCreated, HolderRefusal, ListHolders,
    SealedPii, SetKycPolicy,
};

use tracing::Instrument as _;

use crate::error::ApiError;

/// Most US tiers in one KYC policy (bounded on the wire, `wire::REPEATED_FIELD_LIMITS`).
pub const US_TIERS_PER_POLICY_MAX: usize = 32;

/// A holder's personal data in clear, as the desk seals and opens it. Its `Debug` names the
/// fields only, never their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PersonalData {
    pub full_name: String,
    pub address: String,
    pub clabe: String,
    pub account_number: String,
    pub routing_number: String,
    pub rfc: String,
}

impl std::fmt::Debug for PersonalData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonalData([redacted])")
    }
}

/// A holder's KYC usage this month (see `GetHolderUsage`).
pub struct HolderUsage {
    pub holder: Box<Holder>,
    pub limits: Option<puente_kyc::kyc::TierLimits>,
    pub credited_minor: u64,
    /// The month counted, `YYYYMM`.
    pub month: u32,
    pub foreign_refusals: u32,
}

/// The holder desk, shared by the gRPC service.
#[derive(Clone)]
pub struct HolderDesk {
    ledger: Ledger,
    keyring: Option<Arc<Keyring>>,
}

fn aad(participant: &str, holder_id: &str, field: &str) -> Vec<u8> {
    format!("puente/holder/{participant}/{holder_id}/{field}").into_bytes()
}

impl HolderDesk {
    pub fn new(ledger: Ledger, keyring: Option<Arc<Keyring>>) -> HolderDesk {
        HolderDesk { ledger, keyring }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn keyring(&self) -> Result<&Keyring, ApiError> {
        self.keyring.as_deref().ok_or(ApiError::PiiKeyMissing)
    }

    /// One registry call through the ledger's writer; the answer's type follows the call.
    async fn run<T, C: Call<Answer = Result<T, HolderRefusal>>>(&self, call: C) -> Result<T, ApiError> {
        Ok(self.ledger.call(call).await??)
    }

    fn seal(&self, participant: &str, id: &str, pii: &PersonalData) -> Result<SealedPii, ApiError> {
        let keyring = self.keyring()?;
        let seal = |name: &str, value: &str| -> Result<Vec<u8>, ApiError> {
            if value.is_empty() {
                return Ok(Vec::new());
            }
            keyring.seal(&aad(participant, id, name), value.as_bytes()).map_err(|_| ApiError::PiiSealing)
        };
        let rfc = if pii.rfc.is_empty() {
            String::new()
        } else {
            puente_kyc::rfc::Rfc::parse(&pii.rfc).map(|r| r.as_str().to_owned()).unwrap_or_default()
        };
        Ok(SealedPii {
            full_name: seal("full_name", &pii.full_name)?,
            address: seal("address", &pii.address)?,
            clabe: seal("clabe", &pii.clabe)?,
            account_number: seal("account_number", &pii.account_number)?,
            routing_number: seal("routing_number", &pii.routing_number)?,
            rfc: seal("rfc", &rfc)?,
        })
    }

    /// The holder's personal data in clear.
    pub fn open(&self, holder: &Holder) -> Result<PersonalData, ApiError> {
        let keyring = self.keyring()?;
        let open = |name: &str, sealed: &[u8]| -> Result<String, ApiError> {
            if sealed.is_empty() {
                return Ok(String::new());
            }
            let plain = keyring
                .open(&aad(&holder.participant, &holder.id, name), sealed)
                .map_err(|_| ApiError::PiiSealing)?;
            String::from_utf8(plain).map_err(|_| ApiError::PiiSealing)
        };
        let p = &holder.pii;
        Ok(PersonalData {
            full_name: open("full_name", &p.full_name)?,
            address: open("address", &p.address)?,
            clabe: open("clabe", &p.clabe)?,
            account_number: open("account_number", &p.account_number)?,
            routing_number: open("routing_number", &p.routing_number)?,
            rfc: open("rfc", &p.rfc)?,
        })
    }

    /// Registers a holder (`holder.pii` is ignored: `pii` is sealed into it). Returns the
    /// holder as stored and whether this call created it (a retry with the same content
    /// returns the first outcome).
    pub async fn create(&self, mut holder: Holder, pii: &PersonalData) -> Result<(Holder, bool), ApiError> {
        holder.pii = self.seal(&holder.participant, &holder.id, pii)?;
        let span = tracing::info_span!("create_holder", holder_id = %holder.id, tier = holder.tier.as_str());
        let HolderCreated { holder, created } =
            self.run(CreateHolder(Box::new(holder))).instrument(span).await?;
        Ok((holder, created))
    }

    pub async fn get(&self, participant: String, id: String) -> Result<Holder, ApiError> {
        self.run(GetHolder { participant, id }).await
    }

    /// A page of holders (of one participant, or all for an operator), after `after`
    /// (participant, holder id).
    pub async fn list(
        &self,
        participant: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<Holder>, ApiError> {
        self.run(ListHolders { participant, after, limit }).await
    }

    pub async fn usage(&self, participant: String, id: String) -> Result<HolderUsage, ApiError> {
        let registry::HolderUsage { holder, limits, usage, month, foreign_refusals } =
            self.run(GetUsage { participant, id }).await?;
        Ok(HolderUsage {
            holder: Box::new(holder),
            limits,
            credited_minor: usage.credited_minor,
            month,
            foreign_refusals,
        })
    }

    pub async fn set_policy(&self, policy: KycPolicy) -> Result<KycPolicy, ApiError> {
        let policy = self.run(SetKycPolicy(policy)).await?;
        tracing::info!(udi_rate = %policy.udi_rate, us_tiers = policy.us_tiers.len(), "KYC policy set");
        Ok(policy)
    }
}
