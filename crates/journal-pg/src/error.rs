//! The crate's one error type.

/// Everything a journal call can fail with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PgJournalError {
    /// The append was refused and nothing was written: another leader took over (the lease row's
    /// epoch is no longer `epoch`), or `seq` is not the next sequence number (`last_seq + 1`).
    /// `current_epoch` and `last_seq` are the lease row's values when the append was refused.
    #[error(
        "fenced: the append of seq {seq} under epoch {epoch} was refused (the lease is at epoch \
         {current_epoch}, the last record is seq {last_seq})"
    )]
    Fenced { epoch: u64, seq: u64, current_epoch: u64, last_seq: u64 },
    /// The database could not be reached or a statement failed or timed out. For an append or
    /// a lease change the outcome is unknown when the connection broke during `COMMIT`: read
    /// [`crate::PgJournal::last_seq`] (or the lease) to learn whether it committed.
    #[error("database: {0}")]
    Db(String),
    /// The database holds data this crate never writes (a gap in the sequence numbers, a
    /// negative number, a missing lease row).
    #[error("corrupt journal data: {0}")]
    Corrupt(String),
    /// The caller passed something out of bounds (an empty holder, a record over
    /// [`crate::RECORD_BYTES_MAX`], sequence number 0, ...); nothing was sent to the database.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The database's schema was made by a newer version of this crate.
    #[error("the journal's schema is version {found}; this build knows versions up to {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
}

/// `Result` with [`PgJournalError`].
pub type Result<T> = std::result::Result<T, PgJournalError>;

/// A driver error as [`PgJournalError::Db`], with the server's message and SQLSTATE when it
/// has them (the driver's own `Display` only says "db error").
pub(crate) fn db_error(what: &str, error: &tokio_postgres::Error) -> PgJournalError {
    match error.as_db_error() {
        Some(db) => PgJournalError::Db(format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code())),
        None => {
            let mut text = format!("{what}: {error}");
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            PgJournalError::Db(text)
        }
    }
}
