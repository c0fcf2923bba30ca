//! The tables, made idempotently at connect, and the schema version.
//!
//! Plain tables, each statement on its own (CockroachDB runs schema changes in explicit
//! transactions differently from PostgreSQL), every one `IF NOT EXISTS` or
//! `ON CONFLICT DO NOTHING`, so any number of nodes may connect at once.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::error::{PgJournalError, Result, db_error};

/// The schema version this build writes and reads. A later version migrates from the number
/// in `puente_schema`; this build refuses a database whose number is higher.
pub const SCHEMA_VERSION: i64 = 1;

/// How many times each schema statement is tried: concurrent `CREATE TABLE IF NOT EXISTS`
/// can still fail in PostgreSQL with a unique violation on its catalog or "type already exists"
/// (raised once the other creator committed), and the retry then finds the table.
const SCHEMA_ATTEMPTS: u32 = 3;

const STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS puente_schema (
        id INT8 PRIMARY KEY,
        version INT8 NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS puente_lease (
        id INT8 PRIMARY KEY,
        epoch INT8 NOT NULL,
        holder TEXT NOT NULL,
        address TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        last_seq INT8 NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS puente_journal (
        seq INT8 PRIMARY KEY,
        epoch INT8 NOT NULL,
        record BYTEA NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS puente_snapshots (
        seq INT8 PRIMARY KEY,
        taken_at TIMESTAMPTZ NOT NULL,
        body BYTEA NOT NULL
    )",
    // Never held: epoch 0, expired long ago, no record yet.
    "INSERT INTO puente_lease (id, epoch, holder, address, expires_at, last_seq)
        VALUES (1, 0, '', '', TIMESTAMPTZ '1970-01-01 00:00:00+00', 0)
        ON CONFLICT (id) DO NOTHING",
];

/// Makes whatever is missing and checks the version.
pub(crate) async fn ensure(client: &Client) -> Result<()> {
    for statement in STATEMENTS {
        let mut attempt = 1;
        loop {
            match client.batch_execute(statement).await {
                Ok(()) => break,
                Err(error) if attempt < SCHEMA_ATTEMPTS && is_creation_race(&error) => {
                    tracing::debug!(attempt, "schema creation raced another node; trying again");
                    attempt += 1;
                }
                Err(error) => return Err(db_error("creating the journal schema", &error)),
            }
        }
    }
    let version_row = format!(
        "INSERT INTO puente_schema (id, version) VALUES (1, {SCHEMA_VERSION}) ON CONFLICT (id) DO NOTHING"
    );
    client.batch_execute(&version_row).await.map_err(|e| db_error("recording the schema version", &e))?;
    let row = client
        .query_one("SELECT version FROM puente_schema WHERE id = 1", &[])
        .await
        .map_err(|e| db_error("reading the schema version", &e))?;
    let found: i64 = row.try_get(0).map_err(|e| db_error("reading the schema version", &e))?;
    if found > SCHEMA_VERSION {
        return Err(PgJournalError::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    if found < 1 {
        return Err(PgJournalError::Corrupt(format!("schema version {found} (versions start at 1)")));
    }
    Ok(())
}

fn is_creation_race(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        [SqlState::UNIQUE_VIOLATION, SqlState::DUPLICATE_TABLE, SqlState::DUPLICATE_OBJECT].contains(code)
    })
}
