//! `puente transfers` and `puente statement`: create, show, list, post and void transfers; an
//! account's statement with the running balance.

use clap::Subcommand;
use puente_client::{Client, NewTransfer, pb};
use serde_json::json;

use super::output::*;
use super::{CliError, parse_key_value};

#[derive(Subcommand, Debug)]
pub(super) enum TransfersCommand {
    /// Move money (or reserve it with --pending).
    Create {
        /// Account to debit (UUID).
        #[arg(long)]
        from: String,
        /// Account to credit (UUID).
        #[arg(long)]
        to: String,
        /// Decimal amount, e.g. 12.50.
        #[arg(long)]
        amount: String,
        /// Currency code; must be both accounts' currency.
        #[arg(long)]
        currency: String,
        /// Transfer id (UUID), the idempotency key; a random one by default. Re-run with
        /// the same id to retry safely.
        #[arg(long)]
        id: Option<String>,
        /// Reserve the funds (two-phase); resolve with `post` or `void`.
        #[arg(long)]
        pending: bool,
        /// With --pending: release the reservation after this many milliseconds.
        #[arg(long, default_value_t = 0)]
        timeout_ms: u64,
        /// Free text shown on statements (at most 128 bytes).
        #[arg(long, default_value = "", hide_default_value = true)]
        reference: String,
        /// Metadata entry key=value (repeatable).
        #[arg(long = "meta", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
    },
    /// Show one transfer.
    Get {
        /// Transfer id (UUID).
        id: String,
    },
    /// List an account's transfers.
    List {
        /// Account whose transfers to list (UUID).
        #[arg(long)]
        account: String,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// RFC 3339 start time (inclusive), e.g. 2026-11-25T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 end time (exclusive).
        #[arg(long)]
        until: Option<String>,
        /// Rows per page (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Token from the previous page (`next page:` line) to continue from.
        #[arg(long, default_value = "", hide_default_value = true)]
        page_token: String,
    },
    /// Post a pending transfer, in full or (with --amount) partially.
    Post {
        /// The pending transfer to post (UUID).
        pending_id: String,
        /// Amount to post, at most the pending amount [default: the whole pending amount].
        #[arg(long)]
        amount: Option<String>,
        /// Id of the posting transfer (UUID) [default: a new random id].
        #[arg(long)]
        id: Option<String>,
    },
    /// Void a pending transfer.
    Void {
        /// The pending transfer to void (UUID).
        pending_id: String,
        /// Id of the voiding transfer (UUID) [default: a new random id].
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub(super) struct StatementArgs {
    /// Account id (UUID).
    account: String,
    /// Only entries at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only entries before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Rows per page (1 to 1,000).
    #[arg(long, default_value_t = 100)]
    page_size: i32,
    /// Token from the previous page (`next page:` line) to continue from.
    #[arg(long, default_value = "", hide_default_value = true)]
    page_token: String,
}

pub(super) async fn submit(client: &mut Client, transfer: NewTransfer, out: &Output) -> Result<(), CliError> {
    let id = transfer.0.id.clone();
    let results = client.create_transfers(vec![transfer.0]).await?;
    let result = results.into_iter().next().ok_or_else(|| CliError::Client("no result".into()))?;
    let value = json!({
        "id": id, "code": result.code, "replayed": result.replayed, "position": result.position,
        "create_time": time_text(&result.create_time),
    });
    out.print(value, || {
        format!(
            "transfer {id}: {}{}{}\n",
            result.code,
            if result.replayed { " (retry: first outcome returned)" } else { "" },
            if result.position > 0 { format!(" at position {}", result.position) } else { String::new() }
        )
    });
    if result.code == "OK" {
        Ok(())
    } else {
        Err(CliError::Client(format!("transfer refused: {}", result.code)))
    }
}

/// One transfer as a row, with its failure code if it failed.
fn transfer_text(t: &pb::Transfer) -> String {
    let mut text = transfer_rows(std::slice::from_ref(t));
    if !t.failure_code.is_empty() {
        text.push_str(&format!("failed: {}\n", t.failure_code));
    }
    text
}

/// The currency of the pending transfer `pending_id` (what its post or void is in).
async fn pending_currency(client: &mut Client, pending_id: &str) -> Result<String, CliError> {
    let pending = client.get_transfer(pending_id).await?;
    Ok(pending.amount.map(|m| m.currency_code).unwrap_or_default())
}

pub(super) async fn transfers(
    client: &mut Client,
    command: TransfersCommand,
    out: &Output,
) -> Result<(), CliError> {
    match command {
        TransfersCommand::Create {
            from,
            to,
            amount,
            currency,
            id,
            pending,
            timeout_ms,
            reference,
            metadata,
        } => {
            let mut t = NewTransfer::new(&from, &to, &currency, &amount).reference(&reference);
            if let Some(id) = id {
                t = t.id(&id);
            }
            if pending {
                t = t.pending(timeout_ms);
            } else if timeout_ms > 0 {
                return Err(CliError::Usage("--timeout-ms needs --pending".into()));
            }
            for (k, v) in &metadata {
                t = t.metadata(k, v);
            }
            submit(client, t, out).await
        }
        TransfersCommand::Get { id } => {
            let t = client.get_transfer(&id).await?;
            out.print(transfer_json(&t), || transfer_text(&t));
            Ok(())
        }
        TransfersCommand::List { account, desc, since, until, page_size, page_token } => {
            let request = pb::ListTransfersRequest {
                account_id: account,
                start_time: parse_time(&since, "--since")?,
                end_time: parse_time(&until, "--until")?,
                order_by: if desc { "create_time desc".into() } else { "create_time".into() },
                page_size,
                page_token,
            };
            let page = client.list_transfers(request).await?;
            out.print_page("transfers", &page.transfers, transfer_json, transfer_rows, &page.next_page_token);
            Ok(())
        }
        TransfersCommand::Post { pending_id, amount, id } => {
            let currency = pending_currency(client, &pending_id).await?;
            let mut t = NewTransfer::post(&pending_id, &currency, amount.as_deref());
            if let Some(id) = id {
                t = t.id(&id);
            }
            submit(client, t, out).await
        }
        TransfersCommand::Void { pending_id, id } => {
            let currency = pending_currency(client, &pending_id).await?;
            let mut t = NewTransfer::void(&pending_id, &currency);
            if let Some(id) = id {
                t = t.id(&id);
            }
            submit(client, t, out).await
        }
    }
}

pub(super) async fn statement(
    client: &mut Client,
    args: StatementArgs,
    out: &Output,
) -> Result<(), CliError> {
    let request = pb::GetAccountStatementRequest {
        account_id: args.account,
        start_time: parse_time(&args.since, "--since")?,
        end_time: parse_time(&args.until, "--until")?,
        page_size: args.page_size,
        page_token: args.page_token,
    };
    let s = client.statement(request).await?;
    let account = s.account.clone().unwrap_or_default();
    let kind = |k: i32| match pb::EntryKind::try_from(k) {
        Ok(pb::EntryKind::Posted) => "posted",
        Ok(pb::EntryKind::Pending) => "pending",
        Ok(pb::EntryKind::PostPending) => "post_pending",
        Ok(pb::EntryKind::VoidPending) => "void_pending",
        Ok(pb::EntryKind::Expired) => "expired",
        _ => "unspecified",
    };
    let value = json!({
        "account": account_json(&account),
        "opening_posted_balance": s.opening_posted_balance,
        "closing_posted_balance": s.closing_posted_balance,
        "lines": s.lines.iter().map(|l| json!({
            "time": time_text(&l.time), "position": l.position, "transfer_id": l.transfer_id,
            "kind": kind(l.kind), "side": if l.debit { "debit" } else { "credit" },
            "amount": l.amount.as_ref().map(|m| m.value.clone()),
            "posted_balance": l.posted_balance, "available_balance": l.available_balance,
        })).collect::<Vec<_>>(),
        "next_page_token": s.next_page_token,
    });
    out.print(value, || {
        let mut text = format!(
            "Statement for {} ({} {}, holder {}{})\nOpening posted balance: {}\n",
            account.id,
            account.participant,
            account.currency_code,
            account.holder_ref,
            if account.closed { "; CLOSED: takes no new transfers" } else { "" },
            s.opening_posted_balance
        );
        text.push_str(&format!(
            "{:<27}  {:<36}  {:<12}  {:<6}  {:>14}  {:>16}  {:>16}\n",
            "TIME", "TRANSFER", "KIND", "SIDE", "AMOUNT", "POSTED", "AVAILABLE"
        ));
        for l in &s.lines {
            text.push_str(&format!(
                "{:<27}  {:<36}  {:<12}  {:<6}  {:>14}  {:>16}  {:>16}\n",
                time_text(&l.time),
                l.transfer_id,
                kind(l.kind),
                if l.debit { "debit" } else { "credit" },
                l.amount.as_ref().map(|m| m.value.as_str()).unwrap_or(""),
                l.posted_balance,
                l.available_balance
            ));
        }
        text.push_str(&format!("Closing posted balance: {}\n", s.closing_posted_balance));
        if !s.next_page_token.is_empty() {
            text.push_str(&format!("next page: --page-token {}\n", s.next_page_token));
        }
        text
    });
    Ok(())
}
