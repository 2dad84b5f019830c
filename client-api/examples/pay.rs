//! Tokens: a local testnet's faucet funds a new wallet, which pays another account. Each
//! payment is certified by a quorum of the paying account's replicas before it counts.
//!
//! ```text
//! cargo run -p kura-client --example pay
//! ```

use anyhow::Context;
use kura_client::{peers, Client, Wallet};
use kura_node::ledger::{format_amount, Output, WalletKey, UNITS_PER_TOKEN};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::connect(peers::resolve(None)?).await?;
    let testnet = peers::testnet_dir().context("no local testnet: its faucet funds this example")?;
    let faucet = Wallet::faucet(&testnet)?.context("the testnet has no genesis key")?;

    // A wallet is a key and a folder that remembers a payment in flight.
    let folder = tempfile::tempdir()?;
    let mine = Wallet::open(folder.path(), WalletKey::random())?;
    client.pay(&faucet, vec![Output { to: mine.address(), amount: 5 * UNITS_PER_TOKEN, memo: [0; 32] }]).await?;
    println!("funded {}: {}", mine.address(), format_amount(client.balance(mine.address()).await?.balance));

    let friend = WalletKey::random().address();
    let cert = client.pay(&mine, vec![Output { to: friend, amount: 2 * UNITS_PER_TOKEN, memo: [0; 32] }]).await?;
    println!("paid {} to {friend}, certified by {} replicas", format_amount(2 * i128::from(UNITS_PER_TOKEN)), cert.signers.len());
    println!("mine now: {}", format_amount(client.balance(mine.address()).await?.balance));
    println!("friend:   {}", format_amount(client.balance(friend).await?.balance));
    client.close().await;
    Ok(())
}
