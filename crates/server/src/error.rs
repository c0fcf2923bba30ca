//! The server's one error enum, and the one place errors become gRPC statuses.

use std::collections::HashMap;

use puente_fx::FxError;
use puente_ledger::LedgerError;
use puente_ledger::holders::HolderRefusal;
use puente_ledger::identity::IdentityRefusal;
use puente_ledger::settlement::SettlementRefusal;

use crate::fx_desk::DeskError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain of every Puente error.
pub const ERROR_DOMAIN: &str = "puente.v1";
/// Most field violations in a status's `google.rpc.BadRequest`; one more says how many were
/// left out.
pub const VIOLATIONS_MAX: usize = 100;
pub use puente_proto::{LEADER_ADDRESS_KEY, NOT_LEADER_REASON};
/// How long a client should wait before retrying a write refused by a standby (RetryInfo).
pub const NOT_LEADER_RETRY_MS: u64 = 100;
/// Most field violations spelled out in a status's message.
pub const VIOLATIONS_IN_MESSAGE_MAX: usize = 10;

/// A bad field: its path in the request (`transfers[3].amount.value`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Violation {
        Violation { field: field.into(), description: description.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: nothing was changed.
    #[error("invalid request: {}", summary(.0))]
    InvalidArgument(Vec<Violation>),
    /// A top-level repeated field (the batch) has more entries than its limit: nothing was
    /// changed. Same reason as the ledger's empty or oversized batch.
    #[error("invalid batch: {}", summary(.0))]
    BatchTooLarge(Vec<Violation>),
    /// The request's bytes are not a valid protobuf message of its type.
    #[error("malformed request message: {0}")]
    Malformed(String),
    /// A request message above the size limit (refused from its length prefix).
    #[error("the request message is {bytes} bytes; the limit is {max_bytes}")]
    MessageTooLarge { bytes: u64, max_bytes: u64 },
    /// A path that is no method of the served API.
    #[error("unknown method")]
    UnknownMethod,
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    /// The ledger refused an operation on the state (e.g. ACCOUNT_HAS_PENDING_TRANSFERS).
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Fx(#[from] DeskError),
    #[error(transparent)]
    Settlement(#[from] puente_ledger::settlement::SettlementRefusal),
    #[error(transparent)]
    Identity(#[from] puente_ledger::identity::IdentityRefusal),
    /// No credentials, or unknown or revoked ones. The text never includes a key.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// Authenticated, but the role does not allow the method.
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    #[error(transparent)]
    Holder(#[from] puente_ledger::holders::HolderRefusal),
    /// Holder requests need the personal-data key, which this server was not given.
    #[error(
        "personal data cannot be stored or read: the server has no personal-data key (pii_key_file or PUENTE_PII_KEY)"
    )]
    PiiKeyMissing,
    /// Sealed personal data could not be opened (a key was rotated out) or sealed.
    #[error("personal data could not be sealed or opened with the configured keys")]
    PiiSealing,
    /// A bank document given to reconciliation is not what it claims (schema errors, not
    /// well-formed, too large): nothing was changed.
    #[error("invalid document: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    DocumentInvalid(Vec<Violation>),
    /// The XSD validator (xmllint) cannot be run on this server.
    #[error("documents cannot be validated: {0}")]
    ValidatorUnavailable(String),
    /// One of the caller's rate, cost or concurrency limits: retry after `retry_after_ms`.
    #[error("over the limit {limit}; retry after {retry_after_ms} ms")]
    RateLimited { limit: &'static str, retry_after_ms: u64 },
}

/// The first violations, and how many more there were.
fn summary(violations: &[Violation]) -> String {
    let mut text = violations
        .iter()
        .take(VIOLATIONS_IN_MESSAGE_MAX)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > VIOLATIONS_IN_MESSAGE_MAX {
        text.push_str(&format!("; and {} more", violations.len() - VIOLATIONS_IN_MESSAGE_MAX));
    }
    text
}

impl From<FxError> for ApiError {
    fn from(error: FxError) -> Self {
        ApiError::Fx(DeskError::Fx(error))
    }
}

fn fx_code_and_reason(error: &DeskError) -> (Code, &'static str) {
    match error {
        DeskError::Fx(e) => match e {
            FxError::MissingRate { .. } => (Code::FailedPrecondition, "RATE_MISSING"),
            FxError::StaleRate { .. } | FxError::RateFromFuture { .. } => {
                (Code::FailedPrecondition, "RATE_STALE")
            }
            FxError::InvalidRate { .. } => (Code::InvalidArgument, "INVALID_RATE"),
            FxError::InvalidPair { .. } => (Code::InvalidArgument, "INVALID_PAIR"),
            FxError::PairNotPriced { .. } => (Code::InvalidArgument, "PAIR_NOT_PRICED"),
            FxError::LimitExceeded { .. } => (Code::InvalidArgument, "LIMIT_EXCEEDED"),
            FxError::InvalidArgument(_) | FxError::Money(_) | FxError::EcbFormat { .. } => {
                (Code::InvalidArgument, "INVALID_FIELD")
            }
            FxError::AmountTooSmall => (Code::InvalidArgument, "AMOUNT_TOO_SMALL"),
            FxError::AmountTooLarge => (Code::InvalidArgument, "AMOUNT_TOO_LARGE"),
            FxError::QuoteExpired { .. } => (Code::FailedPrecondition, "QUOTE_EXPIRED"),
            FxError::QuoteNotYetValid { .. } => (Code::FailedPrecondition, "QUOTE_NOT_YET_VALID"),
            FxError::InconsistentQuote(_) | FxError::MalformedQuote(_) | FxError::UnsupportedVersion(_) => {
                (Code::InvalidArgument, "QUOTE_MALFORMED")
            }
            FxError::InvalidSignature => (Code::InvalidArgument, "QUOTE_SIGNATURE_INVALID"),
            FxError::InvalidConfig(_)
            | FxError::InvalidKey(_)
            | FxError::InvalidKeyring(_)
            | FxError::RandomFailure
            | FxError::Overflow => (Code::Internal, "FX_INTERNAL"),
        },
        DeskError::Ledger(e) => ledger_code_and_reason(e),
        DeskError::Storage(_) => (Code::Internal, "FX_STORAGE_ERROR"),
        DeskError::QuoteNotFound(_) => (Code::NotFound, "QUOTE_NOT_FOUND"),
        DeskError::QuoteNotIssued(_) => (Code::InvalidArgument, "QUOTE_NOT_ISSUED"),
        DeskError::QuoteLimit { .. } => (Code::ResourceExhausted, "QUOTE_LIMIT_EXCEEDED"),
        DeskError::ExecutionNotFound(_) => (Code::NotFound, "EXECUTION_NOT_FOUND"),
        DeskError::ParticipantMismatch { .. } => (Code::PermissionDenied, "QUOTE_PARTICIPANT_MISMATCH"),
        DeskError::AlreadyUsed => (Code::FailedPrecondition, "QUOTE_ALREADY_USED"),
        DeskError::AccountNotFound { .. } => (Code::NotFound, "ACCOUNT_NOT_FOUND"),
        DeskError::AccountCurrency { .. } => (Code::FailedPrecondition, "ACCOUNT_CURRENCY_MISMATCH"),
        DeskError::Refused(code) => (Code::FailedPrecondition, code),
        DeskError::NotCancellable => (Code::FailedPrecondition, "NOT_CANCELLABLE"),
        DeskError::CancellationWindowClosed => (Code::FailedPrecondition, "CANCELLATION_WINDOW_CLOSED"),
    }
}

fn identity_code_and_reason(error: &IdentityRefusal) -> (Code, &'static str) {
    match error {
        IdentityRefusal::Invalid { .. } | IdentityRefusal::BootstrapNeedsOperator => {
            (Code::InvalidArgument, "INVALID_FIELD")
        }
        IdentityRefusal::NotFound(_) => (Code::NotFound, "PARTICIPANT_NOT_FOUND"),
        IdentityRefusal::ExistsWithDifferent { field: "role", .. } => {
            (Code::AlreadyExists, "PARTICIPANT_EXISTS_WITH_DIFFERENT_ROLE")
        }
        IdentityRefusal::ExistsWithDifferent { field: "display_name", .. } => {
            (Code::AlreadyExists, "PARTICIPANT_EXISTS_WITH_DIFFERENT_DISPLAY_NAME")
        }
        IdentityRefusal::ExistsWithDifferent { .. } => {
            (Code::AlreadyExists, "PARTICIPANT_EXISTS_WITH_DIFFERENT_KEY")
        }
        IdentityRefusal::KeyIdTaken(_) => (Code::AlreadyExists, "KEY_ID_TAKEN"),
        IdentityRefusal::KeyNotFound { .. } => (Code::NotFound, "KEY_NOT_FOUND"),
        IdentityRefusal::BootstrapOver => (Code::PermissionDenied, "BOOTSTRAP_CLOSED"),
        IdentityRefusal::CertificateTaken => (Code::AlreadyExists, "CERTIFICATE_TAKEN"),
        IdentityRefusal::KeyReused => (Code::AlreadyExists, "KEY_ALREADY_REGISTERED"),
        IdentityRefusal::LimitReached(_) => (Code::ResourceExhausted, "LIMIT_REACHED"),
    }
}

fn holder_code_and_reason(error: &HolderRefusal) -> (Code, &'static str) {
    match error {
        HolderRefusal::Invalid { .. } => (Code::InvalidArgument, "INVALID_FIELD"),
        HolderRefusal::NotFound(_) => (Code::NotFound, "HOLDER_NOT_FOUND"),
        HolderRefusal::ExistsWithDifferent { .. } => {
            (Code::AlreadyExists, "HOLDER_EXISTS_WITH_DIFFERENT_FIELDS")
        }
        HolderRefusal::PolicyNotSet => (Code::FailedPrecondition, "KYC_POLICY_NOT_SET"),
        HolderRefusal::Kyc(_) => (Code::InvalidArgument, "INVALID_KYC_POLICY"),
        HolderRefusal::LimitReached => (Code::ResourceExhausted, "LIMIT_REACHED"),
    }
}

fn ledger_code_and_reason(error: &LedgerError) -> (Code, &'static str) {
    match error {
        LedgerError::InvalidBatch(_) => (Code::InvalidArgument, "INVALID_BATCH"),
        LedgerError::Storage(_) => (Code::Internal, "STORAGE_ERROR"),
        LedgerError::Corrupt(_) => (Code::DataLoss, "STORE_CORRUPT"),
        LedgerError::Unavailable(_) => (Code::Unavailable, "LEDGER_UNAVAILABLE"),
        LedgerError::NotLeader(_) => (Code::Unavailable, NOT_LEADER_REASON),
    }
}

/// `Ok` when a request parsed cleanly, else every violation at once (INVALID_ARGUMENT).
pub fn check(violations: Vec<Violation>) -> Result<(), ApiError> {
    if violations.is_empty() { Ok(()) } else { Err(ApiError::InvalidArgument(violations)) }
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument(vec![Violation::new(field, description)])
    }

    fn code_and_reason(&self) -> (Code, &'static str) {
        match self {
            ApiError::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_FIELD"),
            ApiError::BatchTooLarge(_) => (Code::InvalidArgument, "INVALID_BATCH"),
            ApiError::Malformed(_) => (Code::InvalidArgument, "MALFORMED_MESSAGE"),
            ApiError::MessageTooLarge { .. } => (Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
            ApiError::UnknownMethod => (Code::Unimplemented, "UNKNOWN_METHOD"),
            ApiError::NotFound { resource: "account", .. } => (Code::NotFound, "ACCOUNT_NOT_FOUND"),
            ApiError::NotFound { resource: "transfer", .. } => (Code::NotFound, "TRANSFER_NOT_FOUND"),
            ApiError::NotFound { .. } => (Code::NotFound, "NOT_FOUND"),
            ApiError::Refused(code) => (Code::FailedPrecondition, code),
            ApiError::Ledger(e) => ledger_code_and_reason(e),
            ApiError::Fx(e) => fx_code_and_reason(e),
            ApiError::Settlement(e) => settlement_code_and_reason(e),
            ApiError::Identity(e) => identity_code_and_reason(e),
            ApiError::Holder(e) => holder_code_and_reason(e),
            ApiError::PiiKeyMissing => (Code::FailedPrecondition, "PII_KEY_NOT_CONFIGURED"),
            ApiError::PiiSealing => (Code::Internal, "PII_UNREADABLE"),
            ApiError::Unauthenticated(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
            ApiError::PermissionDenied(_) => (Code::PermissionDenied, "PERMISSION_DENIED"),
            ApiError::RateLimited { .. } => (Code::ResourceExhausted, "RATE_LIMITED"),
            ApiError::DocumentInvalid(_) => (Code::InvalidArgument, "DOCUMENT_INVALID"),
            ApiError::ValidatorUnavailable(_) => (Code::FailedPrecondition, "XSD_VALIDATOR_UNAVAILABLE"),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let (code, reason) = error.code_and_reason();
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        add_error_details(&error, &mut details, &mut metadata);
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        log_error(&error);
        Status::with_error_details(code, error.to_string(), details)
    }
}

/// The details of a refusal that the client can act on: the bad fields, where to retry, the
/// limit hit, the resource not found.
fn add_error_details(error: &ApiError, details: &mut ErrorDetails, metadata: &mut HashMap<String, String>) {
    match error {
        ApiError::InvalidArgument(violations)
        | ApiError::BatchTooLarge(violations)
        | ApiError::DocumentInvalid(violations) => {
            for v in violations.iter().take(VIOLATIONS_MAX) {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            if violations.len() > VIOLATIONS_MAX {
                details.add_bad_request_violation(
                    "",
                    format!("{} more violations not listed", violations.len() - VIOLATIONS_MAX),
                );
            }
        }
        ApiError::Malformed(description) => {
            details.add_bad_request_violation("", description.clone());
        }
        ApiError::MessageTooLarge { max_bytes, .. } => {
            metadata.insert("max_bytes".to_owned(), max_bytes.to_string());
        }
        ApiError::Ledger(LedgerError::InvalidBatch(description)) => {
            details.add_bad_request_violation("transfers", description.clone());
        }
        ApiError::Ledger(LedgerError::NotLeader(leader)) => {
            // Clients follow `leader_address` (and retry: writes are idempotent by id).
            if let Some(leader) = leader {
                metadata.insert(LEADER_ADDRESS_KEY.to_owned(), leader.address.clone());
                metadata.insert("leader_node".to_owned(), leader.node.clone());
                metadata.insert("leader_epoch".to_owned(), leader.epoch.to_string());
            }
            details.set_retry_info(Some(std::time::Duration::from_millis(NOT_LEADER_RETRY_MS)));
        }
        ApiError::NotFound { resource, id } => {
            metadata.insert("resource".to_owned(), (*resource).to_owned());
            metadata.insert("id".to_owned(), id.clone());
        }
        ApiError::Holder(HolderRefusal::Invalid { field, reason }) => {
            details.add_bad_request_violation(*field, reason.clone());
        }
        ApiError::Identity(IdentityRefusal::Invalid { field, reason }) => {
            details.add_bad_request_violation(*field, reason.clone());
        }
        ApiError::RateLimited { limit, retry_after_ms } => {
            // Every refusal by a limit passes here on its way to the client: counted once.
            crate::metrics::count_rate_limited(limit);
            metadata.insert("limit".to_owned(), (*limit).to_owned());
            details.set_retry_info(Some(std::time::Duration::from_millis(*retry_after_ms)));
        }
        ApiError::Ledger(_)
        | ApiError::Fx(_)
        | ApiError::Refused(_)
        | ApiError::Identity(_)
        | ApiError::Holder(_)
        | ApiError::PiiKeyMissing
        | ApiError::PiiSealing
        | ApiError::UnknownMethod
        | ApiError::ValidatorUnavailable(_)
        | ApiError::Unauthenticated(_)
        | ApiError::PermissionDenied(_) => {}
        ApiError::Settlement(e) => add_settlement_details(e, details, metadata),
    }
}

/// Logs a failure on the server's side as an error, any other refusal at debug level.
fn log_error(error: &ApiError) {
    match error {
        ApiError::Ledger(LedgerError::Storage(_) | LedgerError::Corrupt(_) | LedgerError::Unavailable(_)) => {
            tracing::error!(%error, "request failed on the server side");
        }
        ApiError::ValidatorUnavailable(_) => tracing::error!(%error, "reconciliation refused"),
        _ => tracing::debug!(%error, "request rejected"),
    }
}

/// The error codes of settlement refusals.
fn settlement_code_and_reason(refusal: &SettlementRefusal) -> (Code, &'static str) {
    match refusal {
        SettlementRefusal::ProfileInvalid { .. } => (Code::InvalidArgument, "INVALID_FIELD"),
        SettlementRefusal::ProfileNotFound(_) => (Code::NotFound, "PROFILE_NOT_FOUND"),
        SettlementRefusal::WindowNotFound(_) => (Code::NotFound, "WINDOW_NOT_FOUND"),
        SettlementRefusal::NoOpenWindow(_) => (Code::FailedPrecondition, "NO_OPEN_WINDOW"),
        SettlementRefusal::WrongState { .. } => (Code::FailedPrecondition, "WINDOW_STATE_INVALID"),
        SettlementRefusal::ParticipantNotInWindow { .. } => (Code::NotFound, "PARTICIPANT_NOT_IN_WINDOW"),
        SettlementRefusal::MissingProfiles { .. } => (Code::FailedPrecondition, "PROFILE_MISSING"),
    }
}

/// The google.rpc details of a settlement refusal.
fn add_settlement_details(
    refusal: &SettlementRefusal,
    details: &mut ErrorDetails,
    metadata: &mut HashMap<String, String>,
) {
    match refusal {
        SettlementRefusal::ProfileInvalid { field, reason } => {
            details.add_bad_request_violation(format!("profile.{field}"), reason.clone());
        }
        SettlementRefusal::WrongState { window_id, state, .. } => {
            metadata.insert("window_id".into(), window_id.to_string());
            metadata.insert("state".into(), state.code().into());
        }
        SettlementRefusal::WindowNotFound(id) => {
            metadata.insert("window_id".into(), id.to_string());
        }
        SettlementRefusal::MissingProfiles { participants, .. } => {
            metadata.insert("participants".into(), participants.join(",").chars().take(256).collect());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_lists_at_most_the_first_violations_and_how_many_more() {
        let violations: Vec<_> =
            (0..8_189).map(|i| Violation::new(format!("transfers[{i}].id"), "a UUID is required")).collect();
        let status: Status = ApiError::InvalidArgument(violations).into();
        let listed = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(listed.len(), VIOLATIONS_MAX + 1);
        assert_eq!(listed[0].field, "transfers[0].id");
        assert_eq!(listed[VIOLATIONS_MAX].description, "8089 more violations not listed");
        assert!(status.message().ends_with("; and 8179 more"), "{}", status.message());
        assert!(status.details().len() < 16 * 1024, "{} bytes of details", status.details().len());
    }
}
