//! `puente.v1.HolderService`, the wire of the holder desk (`holder_desk.rs`): account holders
//! with a KYC tier and sealed personal data, and the KYC policy.
//!
//! Personal data is validated here (CLABE and ABA by check digit, RFC by format), then the desk
//! seals it before the ledger sees it. It is never logged: tracing fields carry the holder id
//! only, and errors name the field, never its value.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::grpc::holder_service_server::HolderService;
use puente_kyc::kyc::{KycPolicy, Tier, UsTierLimits};
use puente_kyc::pii::Keyring;
use puente_ledger::Ledger;
use puente_ledger::holders::{Holder, HolderKind, SealedPii};
use puente_ledger::identity::Caller;
use puente_money::CurrencyTable;
use puente_proto::v1 as pb;
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::convert::{self, timestamp};
use crate::error::{ApiError, Violation, check};
use crate::holder_desk::{HolderDesk, HolderUsage, PersonalData};

/// Longest plaintext of one personal-data field, in bytes.
pub const PII_FIELD_LEN_MAX: usize = 512;
pub use crate::holder_desk::US_TIERS_PER_POLICY_MAX;

pub struct HolderApi {
    desk: HolderDesk,
}

impl HolderApi {
    pub fn new(ledger: Ledger, keyring: Option<Arc<Keyring>>) -> HolderApi {
        HolderApi { desk: HolderDesk::new(ledger, keyring) }
    }

    fn currencies(&self) -> &CurrencyTable {
        self.desk.ledger().currencies()
    }
}

fn pii_in(pii: &pb::HolderPersonalData) -> PersonalData {
    PersonalData {
        full_name: pii.full_name.clone(),
        address: pii.address.clone(),
        clabe: pii.clabe.clone(),
        account_number: pii.account_number.clone(),
        routing_number: pii.routing_number.clone(),
        rfc: pii.rfc.clone(),
    }
}

fn pii_out(pii: PersonalData) -> pb::HolderPersonalData {
    pb::HolderPersonalData {
        full_name: pii.full_name,
        address: pii.address,
        clabe: pii.clabe,
        account_number: pii.account_number,
        routing_number: pii.routing_number,
        rfc: pii.rfc,
    }
}

/// The participant a request names (`auth::named_participant`); operators must name one.
fn named(caller: &Caller, participant: &str) -> Result<String, ApiError> {
    let named = auth::named_participant(caller, participant)?;
    if named.is_empty() {
        return Err(ApiError::invalid("participant", "required for operators"));
    }
    Ok(named)
}

fn kind_in(kind: i32) -> Option<HolderKind> {
    match pb::HolderKind::try_from(kind) {
        Ok(pb::HolderKind::Individual) => Some(HolderKind::Individual),
        Ok(pb::HolderKind::Business) => Some(HolderKind::Business),
        _ => None,
    }
}

fn kind_out(kind: HolderKind) -> pb::HolderKind {
    match kind {
        HolderKind::Individual => pb::HolderKind::Individual,
        HolderKind::Business => pb::HolderKind::Business,
    }
}

/// Validates the personal data (field by field; values never appear in the violations).
fn validate_pii(pii: &pb::HolderPersonalData, kind: Option<HolderKind>, violations: &mut Vec<Violation>) {
    let field = |name: &str| format!("holder.personal_data.{name}");
    for (name, value) in [
        ("full_name", &pii.full_name),
        ("address", &pii.address),
        ("clabe", &pii.clabe),
        ("account_number", &pii.account_number),
        ("routing_number", &pii.routing_number),
        ("rfc", &pii.rfc),
    ] {
        if value.len() > PII_FIELD_LEN_MAX || value.chars().any(char::is_control) {
            violations.push(Violation::new(
                field(name),
                format!("at most {PII_FIELD_LEN_MAX} bytes, no control characters"),
            ));
        }
    }
    if !pii.clabe.is_empty() && !puente_settlement::ids::clabe_valid(&pii.clabe) {
        violations.push(Violation::new(field("clabe"), "not a CLABE: 18 digits with a valid check digit"));
    }
    if !pii.routing_number.is_empty() && !puente_settlement::ids::aba_valid(&pii.routing_number) {
        violations.push(Violation::new(
            field("routing_number"),
            "not an ABA routing number: 9 digits with a valid check digit",
        ));
    }
    let account_number = &pii.account_number;
    if !account_number.is_empty()
        && (!(4..=17).contains(&account_number.len()) || !account_number.bytes().all(|b| b.is_ascii_digit()))
    {
        violations.push(Violation::new(field("account_number"), "4 to 17 digits"));
    }
    if !pii.rfc.is_empty() {
        match puente_kyc::rfc::Rfc::parse(&pii.rfc) {
            Ok(rfc) => {
                let expected = match kind {
                    Some(HolderKind::Business) => Some(puente_kyc::rfc::RfcKind::Moral),
                    Some(HolderKind::Individual) => Some(puente_kyc::rfc::RfcKind::Fisica),
                    None => None,
                };
                if expected.is_some_and(|k| k != rfc.kind()) {
                    violations.push(Violation::new(
                        field("rfc"),
                        "a business RFC has 12 characters, an individual's 13",
                    ));
                }
            }
            Err(e) => violations.push(Violation::new(field("rfc"), e.to_string())),
        }
    }
}

fn holder_out(holder: &Holder, personal_data: Option<pb::HolderPersonalData>) -> pb::Holder {
    pb::Holder {
        participant: holder.participant.clone(),
        holder_id: holder.id.clone(),
        kind: kind_out(holder.kind) as i32,
        country: holder.country.clone(),
        kyc_tier: holder.tier.as_str().to_owned(),
        personal_data,
        create_time: timestamp(holder.created_at_ns),
    }
}

fn usd_minor(
    currencies: &CurrencyTable,
    text: &str,
    field: String,
    violations: &mut Vec<Violation>,
) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    match currencies.lookup("USD").and_then(|usd| usd.parse_amount(text)) {
        Ok(minor) => Some(minor),
        Err(e) => {
            violations.push(Violation::new(field, e.to_string()));
            None
        }
    }
}

fn minor_text(currencies: &CurrencyTable, currency: &str, minor: Option<u64>) -> String {
    let Some(minor) = minor else { return String::new() };
    currencies.lookup(currency).map(|c| c.format_amount(minor as u128)).unwrap_or_default()
}

fn policy_out(currencies: &CurrencyTable, policy: &KycPolicy) -> pb::SetKycPolicyResponse {
    pb::SetKycPolicyResponse {
        udi_rate: policy.udi_rate.to_string(),
        us_tiers: policy
            .us_tiers
            .iter()
            .map(|(name, limits)| pb::UsTier {
                name: name.clone(),
                monthly_credit_limit: minor_text(currencies, "USD", limits.monthly_credit_limit_minor),
                balance_limit: minor_text(currencies, "USD", limits.balance_limit_minor),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl HolderService for HolderApi {
    async fn create_holder(
        &self,
        request: Request<pb::CreateHolderRequest>,
    ) -> Result<Response<pb::CreateHolderResponse>, Status> {
        let caller = auth::caller(&request)?;
        let holder = request.into_inner().holder.unwrap_or_default();
        let participant = named(&caller, &holder.participant)?;
        let mut violations = Vec::new();
        let kind = kind_in(holder.kind);
        if kind.is_none() {
            violations.push(Violation::new("holder.kind", "HOLDER_KIND_INDIVIDUAL or HOLDER_KIND_BUSINESS"));
        }
        let tier = match Tier::parse(&holder.kyc_tier) {
            Ok(tier) => Some(tier),
            Err(e) => {
                violations.push(Violation::new("holder.kyc_tier", e.to_string()));
                None
            }
        };
        let pii = holder.personal_data.clone().unwrap_or_default();
        validate_pii(&pii, kind, &mut violations);
        check(violations)?;
        let (Some(kind), Some(tier)) = (kind, tier) else {
            return Err(ApiError::invalid("holder", "kind and kyc_tier are required").into());
        };
        let (holder, created) = self
            .desk
            .create(
                Holder {
                    participant,
                    id: holder.holder_id,
                    kind,
                    country: holder.country,
                    tier,
                    pii: SealedPii::default(),
                    created_at_ns: 0,
                },
                &pii_in(&pii),
            )
            .await?;
        let personal_data = pii_out(self.desk.open(&holder)?);
        Ok(Response::new(pb::CreateHolderResponse {
            holder: Some(holder_out(&holder, Some(personal_data))),
            created,
        }))
    }

    async fn get_holder(
        &self,
        request: Request<pb::GetHolderRequest>,
    ) -> Result<Response<pb::GetHolderResponse>, Status> {
        let (caller, r) = auth::caller_and_body(request)?;
        let participant = named(&caller, &r.participant)?;
        let holder = self.desk.get(participant, r.holder_id).await?;
        let personal_data = pii_out(self.desk.open(&holder)?);
        Ok(Response::new(pb::GetHolderResponse { holder: Some(holder_out(&holder, Some(personal_data))) }))
    }

    async fn list_holders(
        &self,
        request: Request<pb::ListHoldersRequest>,
    ) -> Result<Response<pb::ListHoldersResponse>, Status> {
        let (caller, r) = auth::caller_and_body(request)?;
        let mut violations = Vec::new();
        let page_size = convert::page_size(r.page_size, "page_size", &mut violations);
        let after = if r.page_token.is_empty() {
            None
        } else {
            match r.page_token.split_once('/') {
                Some((p, id)) => Some((p.to_owned(), id.to_owned())),
                None => {
                    violations.push(Violation::new("page_token", "not a token from a previous response"));
                    None
                }
            }
        };
        check(violations)?;
        // Naming another participant lists nothing (as if it had no holders).
        let Ok(participant) = auth::named_participant(&caller, &r.participant) else {
            return Ok(Response::new(pb::ListHoldersResponse::default()));
        };
        let participant = (!participant.is_empty()).then_some(participant);
        let holders = self.desk.list(participant, after, page_size).await?;
        let next_page_token = match holders.last() {
            Some(last) if holders.len() == page_size => format!("{}/{}", last.participant, last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListHoldersResponse {
            holders: holders.iter().map(|h| holder_out(h, None)).collect(),
            next_page_token,
        }))
    }

    async fn get_holder_usage(
        &self,
        request: Request<pb::GetHolderUsageRequest>,
    ) -> Result<Response<pb::GetHolderUsageResponse>, Status> {
        let (caller, r) = auth::caller_and_body(request)?;
        let participant = named(&caller, &r.participant)?;
        let HolderUsage { holder, limits, credited_minor, month, foreign_refusals } =
            self.desk.usage(participant, r.holder_id).await?;
        let currency = limits.map(|l| l.currency).unwrap_or("");
        let currencies = self.currencies();
        Ok(Response::new(pb::GetHolderUsageResponse {
            kyc_tier: holder.tier.as_str().to_owned(),
            currency_code: currency.to_owned(),
            month,
            credited: minor_text(
                currencies,
                if currency.is_empty() { "USD" } else { currency },
                Some(credited_minor),
            ),
            monthly_credit_limit: minor_text(
                currencies,
                currency,
                limits.and_then(|l| l.monthly_credit_limit_minor),
            ),
            balance_limit: minor_text(currencies, currency, limits.and_then(|l| l.balance_limit_minor)),
            refused_credits_from_others: foreign_refusals,
        }))
    }

    async fn set_kyc_policy(
        &self,
        request: Request<pb::SetKycPolicyRequest>,
    ) -> Result<Response<pb::SetKycPolicyResponse>, Status> {
        let r = request.into_inner();
        let mut violations = Vec::new();
        let udi_rate = r.udi_rate.parse::<Decimal>().ok();
        let mut us_tiers = BTreeMap::new();
        for (i, tier) in r.us_tiers.iter().enumerate() {
            let limits = UsTierLimits {
                monthly_credit_limit_minor: usd_minor(
                    self.currencies(),
                    &tier.monthly_credit_limit,
                    format!("us_tiers[{i}].monthly_credit_limit"),
                    &mut violations,
                ),
                balance_limit_minor: usd_minor(
                    self.currencies(),
                    &tier.balance_limit,
                    format!("us_tiers[{i}].balance_limit"),
                    &mut violations,
                ),
            };
            us_tiers.insert(tier.name.clone(), limits);
        }
        let policy = match udi_rate.map(KycPolicy::new) {
            Some(Ok(mut policy)) => {
                policy.us_tiers = us_tiers;
                if let Err(e) = policy.validate() {
                    violations.push(Violation::new("us_tiers", e.to_string()));
                }
                Some(policy)
            }
            Some(Err(e)) => {
                violations.push(Violation::new("udi_rate", e.to_string()));
                None
            }
            None => {
                violations.push(Violation::new("udi_rate", "a positive decimal, e.g. \"8.70\""));
                None
            }
        };
        check(violations)?;
        let Some(policy) = policy else { return Err(ApiError::invalid("udi_rate", "required").into()) };
        let policy = self.desk.set_policy(policy).await?;
        Ok(Response::new(policy_out(self.currencies(), &policy)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pii(clabe: &str, routing: &str, account: &str, rfc: &str) -> pb::HolderPersonalData {
        pb::HolderPersonalData {
            full_name: "Ana".into(),
            clabe: clabe.into(),
            routing_number: routing.into(),
            account_number: account.into(),
            rfc: rfc.into(),
            ..Default::default()
        }
    }

    fn fields(data: &pb::HolderPersonalData, kind: HolderKind) -> Vec<String> {
        let mut violations = Vec::new();
        validate_pii(data, Some(kind), &mut violations);
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn identifiers_are_checked_by_check_digit_and_format() {
        let ok = pii("032180000118359719", "021000021", "12345678", "GODE561231GR8");
        assert!(fields(&ok, HolderKind::Individual).is_empty());
        let bad = pii("032180000118359718", "021000022", "12a", "ABC010101AB1");
        assert_eq!(
            fields(&bad, HolderKind::Individual),
            [
                "holder.personal_data.clabe",
                "holder.personal_data.routing_number",
                "holder.personal_data.account_number",
                "holder.personal_data.rfc"
            ]
        );
        // A business RFC (12 characters) fits a business.
        assert!(fields(&pii("", "", "", "ABC010101AB1"), HolderKind::Business).is_empty());
    }

    proptest! {
        #[test]
        fn any_personal_data_is_validated_without_panicking_or_echoing_it(
            clabe in "\\PC{0,40}", routing in "[0-9]{0,12}", account in "\\PC{0,20}", rfc in "\\PC{0,20}",
        ) {
            let data = pii(&clabe, &routing, &account, &rfc);
            let mut violations = Vec::new();
            validate_pii(&data, Some(HolderKind::Individual), &mut violations);
            for v in violations {
                for value in [&clabe, &account, &rfc] {
                    prop_assert!(value.len() < 4 || !v.description.contains(value.as_str()), "{} echoed", v.field);
                }
            }
        }
    }
}
