//! `puente accounts`: open, show, list and close accounts.

use clap::Subcommand;
use puente_client::{Client, NewAccount};
use serde_json::json;

use super::output::*;
use super::{CliError, parse_key_value};

#[derive(Subcommand, Debug)]
pub(super) enum AccountsCommand {
    /// Open an account.
    Create {
        /// Participant that owns the account (operators; a participant key opens its own).
        #[arg(long)]
        participant: String,
        /// Currency code: USD or MXN.
        #[arg(long)]
        currency: String,
        /// Account id (UUID); a random one by default.
        #[arg(long)]
        id: Option<String>,
        /// Debits may not exceed credits (a wallet).
        #[arg(long)]
        no_overdraft: bool,
        /// Allow going below zero by at most this much (implies --no-overdraft's check).
        #[arg(long)]
        overdraft_limit: Option<String>,
        /// Credits may not exceed debits.
        #[arg(long)]
        credit_cap: bool,
        /// The participant's own reference for the account holder (optional).
        #[arg(long, default_value = "", hide_default_value = true)]
        holder_ref: String,
        /// Metadata as key=value (repeatable).
        #[arg(long = "meta", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
    },
    /// Show one account.
    Get {
        /// Account id (UUID).
        id: String,
    },
    /// Close an account: it takes no new transfers (refused while transfers are pending).
    Close {
        /// Account id (UUID); its balances must be zero.
        id: String,
    },
    /// List accounts (of one participant with --participant).
    List {
        /// Only this participant's accounts (operators; a participant sees its own).
        #[arg(long, default_value = "", hide_default_value = true)]
        participant: String,
        /// Rows per page (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Token from the previous page (`next page:` line) to continue from.
        #[arg(long, default_value = "", hide_default_value = true)]
        page_token: String,
    },
}

pub(super) async fn accounts(
    client: &mut Client,
    command: AccountsCommand,
    out: &Output,
) -> Result<(), CliError> {
    match command {
        AccountsCommand::Create {
            participant,
            currency,
            id,
            no_overdraft,
            overdraft_limit,
            credit_cap,
            holder_ref,
            metadata,
        } => {
            let mut new = NewAccount::new(&participant, &currency).holder_ref(&holder_ref);
            if let Some(id) = id {
                new = new.id(&id);
            }
            if no_overdraft {
                new = new.no_overdraft();
            }
            if let Some(limit) = overdraft_limit {
                new = new.overdraft_limit(&limit);
            }
            if credit_cap {
                new = new.credit_cap();
            }
            for (k, v) in &metadata {
                new = new.metadata(k, v);
            }
            let account = client.create_account(new).await?;
            out.print(account_json(&account), || account_rows(std::slice::from_ref(&account)));
        }
        AccountsCommand::Close { id } => {
            let (account, replayed) = client.close_account(&id).await?;
            let mut value = account_json(&account);
            value["replayed"] = json!(replayed);
            out.print(value, || {
                let note = if replayed { " (it was already closed)" } else { "" };
                format!(
                    "closed account {}{note}\n{}",
                    account.id,
                    account_rows(std::slice::from_ref(&account))
                )
            });
        }
        AccountsCommand::Get { id } => {
            let account = client.get_account(&id).await?;
            out.print(account_json(&account), || account_rows(std::slice::from_ref(&account)));
        }
        AccountsCommand::List { participant, page_size, page_token } => {
            let page = client.list_accounts(&participant, page_size, &page_token).await?;
            out.print_page("accounts", &page.accounts, account_json, account_rows, &page.next_page_token);
        }
    }
    Ok(())
}
