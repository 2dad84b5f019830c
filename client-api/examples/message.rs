//! End-to-end encrypted messages between two accounts: Alice writes to Bob's account id, and
//! Bob reads it whenever he next looks (vaults hold it meanwhile, sealed so no vault can read
//! it or tell who sent it).
//!
//! ```text
//! cargo run -p kura-client --example message
//! ```

use std::time::Duration;

use kura_client::messages::Mailbox;
use kura_client::{peers, Account, Client};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::connect(peers::resolve(None)?).await?;
    // Each user has a Kura home holding their account; these are throwaway homes.
    let (alice_home, bob_home) = (tempfile::tempdir()?, tempfile::tempdir()?);
    Account::generate().install(alice_home.path())?;
    let bob = Account::generate();
    bob.install(bob_home.path())?;

    let mut alice = Mailbox::open(alice_home.path())?;
    let sent = alice.send(&client, bob.id(), "hello Bob, from Alice".into(), Vec::new(), Duration::from_secs(3600)).await?;
    println!("Alice sent message {} to {}", sent.id, bob.id());

    let mut inbox = Mailbox::open(bob_home.path())?;
    let delivery = inbox.sync(&client).await?;
    let letter = delivery.new.first().ok_or_else(|| anyhow::anyhow!("Bob's inbox is empty"))?;
    println!("Bob received from {}: {:?}", letter.from, letter.text);

    // Bob's read sent Alice a receipt (a message like any other): her next syncs see her
    // message delivered.
    let mut delivered = 0;
    for _ in 0..10 {
        delivered += alice.sync(&client).await?.delivered.len();
        if delivered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("Alice: {delivered} of her messages delivered");
    client.close().await;
    Ok(())
}
