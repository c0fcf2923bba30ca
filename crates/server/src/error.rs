//! The server's one error enum, and the one place errors become gRPC statuses.

use std::collections::HashMap;

use puente_ledger::LedgerError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain of every Puente error.
pub const ERROR_DOMAIN: &str = "puente.v1";

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
    #[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<Violation>),
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument(vec![Violation::new(field, description)])
    }

    fn code_and_reason(&self) -> (Code, &'static str) {
        match self {
            ApiError::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_FIELD"),
            ApiError::NotFound { resource: "account", .. } => (Code::NotFound, "ACCOUNT_NOT_FOUND"),
            ApiError::NotFound { resource: "transfer", .. } => (Code::NotFound, "TRANSFER_NOT_FOUND"),
            ApiError::NotFound { .. } => (Code::NotFound, "NOT_FOUND"),
            ApiError::Ledger(LedgerError::InvalidBatch(_)) => (Code::InvalidArgument, "INVALID_BATCH"),
            ApiError::Ledger(LedgerError::Storage(_)) => (Code::Internal, "STORAGE_ERROR"),
            ApiError::Ledger(LedgerError::Corrupt(_)) => (Code::DataLoss, "STORE_CORRUPT"),
            ApiError::Ledger(LedgerError::Unavailable(_)) => (Code::Unavailable, "LEDGER_UNAVAILABLE"),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let (code, reason) = error.code_and_reason();
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        match &error {
            ApiError::InvalidArgument(violations) => {
                for v in violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
            }
            ApiError::Ledger(LedgerError::InvalidBatch(description)) => {
                details.add_bad_request_violation("transfers", description.clone());
            }
            ApiError::NotFound { resource, id } => {
                metadata.insert("resource".to_owned(), (*resource).to_owned());
                metadata.insert("id".to_owned(), id.clone());
            }
            ApiError::Ledger(_) => {}
        }
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        match &error {
            ApiError::Ledger(
                LedgerError::Storage(_) | LedgerError::Corrupt(_) | LedgerError::Unavailable(_),
            ) => {
                tracing::error!(%error, "request failed on the server side");
            }
            _ => tracing::debug!(%error, "request rejected"),
        }
        Status::with_error_details(code, error.to_string(), details)
    }
}
