//! A remittance app's flow: set a rate (operator), quote "send exactly USD 200", show the
//! Regulation E disclosure, verify the quote's signature offline (with the key it names),
//! execute it, print the receipt, and look at the balances and the house's exposure. Run against a server:
//! `PUENTE_API_KEY_FILE=~/.puente/operator.key cargo run -p puente-client --example fx -- 127.0.0.1:50051`
//! (an operator's key: see `puente participants bootstrap`).
use puente_client::{
    Client, ConnectOptions, Fixed, NewAccount, NewTransfer, new_id, pb, verify_quote_with_keys,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let mut client = Client::connect_with(&addr, &options()?).await?;
    // Operator: the mid-market rate (in production a feed streams these).
    client.set_rate("USD", "MXN", "18.9125", "example").await?;

    // The remittance app's accounts: a funding account and a customer's USD wallet; the
    // recipient's MXN account at a Mexican bank.
    let funding = client.create_account(NewAccount::new("remit-app", "USD").holder_ref("funding")).await?;
    let sender =
        client.create_account(NewAccount::new("remit-app", "USD").no_overdraft().holder_ref("ana")).await?;
    let recipient = client.create_account(NewAccount::new("mx-bank", "MXN").holder_ref("luis")).await?;
    client.transfer(NewTransfer::new(&funding.id, &sender.id, "USD", "300.00")).await?;

    let quote =
        client.quote("remit-app", pb::FxSegment::Remittance, "USD", "MXN", Fixed::Send("200.00")).await?;
    let disclosure = quote.disclosure.clone().unwrap_or_default();
    println!("{}\n{}", disclosure.text_en, disclosure.text_es);

    let keys = client.fx_public_keys().await?;
    assert!(verify_quote_with_keys(&keys, &quote), "the quote's signature must verify");
    let execution_id = new_id();
    let executed = client.execute_quote(&quote, &sender.id, &recipient.id, &execution_id).await?;
    println!(
        "executed {} (state {:?}); a retry with the same execution id is safe",
        executed.quote_id,
        executed.state()
    );
    println!("{}", executed.receipt.clone().unwrap_or_default().text_en);

    let sender = client.get_account(&sender.id).await?;
    println!("sender: posted {} available {}", sender.posted_balance, sender.available_balance);
    for position in client.exposure().await? {
        println!(
            "house {}: {} (with held {})",
            position.currency_code, position.posted_position, position.projected_position
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
