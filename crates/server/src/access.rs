//! The one table of who may call what (the role table), read by the auth layer and by the
//! wire guard (which lets unauthenticated methods take only small messages). Kept apart from
//! both so that neither depends on the other for it; `tests/e2e/security.rs` checks it against
//! the API's own descriptor.

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials: health checks and reflection (the schema is public).
    Public,
    /// No credentials, from loopback, while the ledger has no operator.
    Bootstrap,
    /// Any participant or operator; the handler checks ownership.
    Authenticated,
    /// Operators only.
    Operator,
}

/// The one table of who may call what. Anything not listed is operator-only (deny by default).
pub fn access(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return Access::Public;
    }
    match path {
        "/puente.v1.ParticipantService/BootstrapOperator" => Access::Bootstrap,
        "/puente.v1.ParticipantService/GetCaller"
        | "/puente.v1.LedgerService/CreateAccounts"
        | "/puente.v1.LedgerService/GetAccount"
        | "/puente.v1.LedgerService/ListAccounts"
        | "/puente.v1.LedgerService/CloseAccount"
        | "/puente.v1.LedgerService/CreateTransfers"
        | "/puente.v1.LedgerService/GetTransfer"
        | "/puente.v1.LedgerService/ListTransfers"
        | "/puente.v1.LedgerService/GetAccountStatement"
        | "/puente.v1.LedgerService/StreamTransfers"
        | "/puente.v1.FxService/ListRates"
        | "/puente.v1.FxService/GetQuote"
        | "/puente.v1.FxService/GetQuoteById"
        | "/puente.v1.FxService/ListQuotes"
        | "/puente.v1.FxService/ExecuteQuote"
        | "/puente.v1.FxService/CancelTransfer"
        | "/puente.v1.FxService/GetPublicKey"
        | "/puente.v1.SettlementService/GetParticipantProfile"
        | "/puente.v1.SettlementService/ListWindows"
        | "/puente.v1.SettlementService/GetWindow"
        | "/puente.v1.SettlementService/GetSettlementStatement"
        | "/puente.v1.SettlementService/ConfirmSettlement"
        | "/puente.v1.HolderService/CreateHolder"
        | "/puente.v1.HolderService/GetHolder"
        | "/puente.v1.HolderService/ListHolders"
        | "/puente.v1.HolderService/GetHolderUsage" => Access::Authenticated,
        // Listed for the record: anything not above is operator-only anyway.
        "/puente.v1.OperationsService/GetServerStatus" => Access::Operator,
        // Confirms participants' settlements from the banks' documents: operators only.
        "/puente.v1.SettlementService/ReconcileStatements" => Access::Operator,
        _ => Access::Operator,
    }
}
