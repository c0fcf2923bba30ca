//! Opens two wallets, funds one from a participant's settlement account, moves money with a
//! two-phase transfer, and prints the statement. Run against a server:
//! `PUENTE_API_KEY_FILE=~/.puente/operator.key cargo run -p puente-client --example quickstart -- 127.0.0.1:50051`
//! (an operator's key: see `puente participants bootstrap`).
use puente_client::{Client, ConnectOptions, NewAccount, NewTransfer, pb};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let mut client = Client::connect_with(&addr, &options()?).await?;
    let settlement =
        client.create_account(NewAccount::new("fintech-a", "USD").holder_ref("settlement")).await?;
    let alice =
        client.create_account(NewAccount::new("fintech-a", "USD").no_overdraft().holder_ref("alice")).await?;
    let bob =
        client.create_account(NewAccount::new("fintech-a", "USD").no_overdraft().holder_ref("bob")).await?;
    client
        .transfer(NewTransfer::new(&settlement.id, &alice.id, "USD", "500.00").reference("deposit"))
        .await?;
    let hold = NewTransfer::new(&alice.id, &bob.id, "USD", "120.00").pending(60_000);
    let hold_id = hold.0.id.clone();
    client.transfer(hold).await?;
    client.transfer(NewTransfer::post(&hold_id, "USD", Some("100.00"))).await?;
    let statement = client
        .statement(pb::GetAccountStatementRequest { account_id: alice.id.clone(), ..Default::default() })
        .await?;
    println!(
        "alice opening {} closing {}",
        statement.opening_posted_balance, statement.closing_posted_balance
    );
    for line in statement.lines {
        let amount = line.amount.map(|m| m.value).unwrap_or_default();
        println!(
            "{:>12} {:>5} {:>10} -> posted {:>10} available {:>10}",
            line.position,
            if line.debit { "DEBIT" } else { "CREDIT" },
            amount,
            line.posted_balance,
            line.available_balance
        );
    }
    Ok(())
}

/// The key as the CLI reads it: the file named by PUENTE_API_KEY_FILE, else PUENTE_API_KEY.
fn options() -> Result<ConnectOptions, Box<dyn std::error::Error>> {
    let options = ConnectOptions::from_env()?;
    if options.api_key.is_none() {
        return Err("no API key: set PUENTE_API_KEY_FILE (or PUENTE_API_KEY) to an operator's key".into());
    }
    Ok(options)
}
