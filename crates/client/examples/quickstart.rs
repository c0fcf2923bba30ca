//! Opens two wallets, funds one from a participant's settlement account, moves money with a
//! two-phase transfer, and prints the statement. Run against a server:
//! `PUENTE_API_KEY_FILE=~/.puente/operator.key cargo run -p puente-client --example quickstart -- 127.0.0.1:50051`
//! (an operator's key: see `puente participants bootstrap`).
use puente_client::{Client, ConnectOptions, NewAccount, NewTransfer, pb};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let mut client = Client::connect_with(&addr, &ConnectOptions::api_key(&api_key()?)).await?;
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

/// The key from PUENTE_API_KEY_FILE (preferred) or PUENTE_API_KEY.
fn api_key() -> Result<String, Box<dyn std::error::Error>> {
    if let Ok(path) = std::env::var("PUENTE_API_KEY_FILE") {
        return Ok(std::fs::read_to_string(path)?.trim().to_owned());
    }
    Ok(std::env::var("PUENTE_API_KEY").map_err(|_| "set PUENTE_API_KEY_FILE or PUENTE_API_KEY")?)
}
