//! Stores a file on a Kura network, privately, and fetches it back.
//!
//! ```text
//! kura-testnet up --nodes 10 &                     # or KURA_PEERS=<peers file> for any network
//! cargo run -p kura-client --example store_file -- <file>
//! ```
//!
//! Storage is paid from a wallet; on a local testnet its faucet tops the wallet up.

use std::sync::Arc;

use anyhow::Context;
use kura_client::{peers, Client, ClientConfig, UserKey, Visibility, Wallet};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).context("usage: store_file <file>")?;
    let work = tempfile::tempdir()?;
    // An app keeps its key (`UserKey::load_or_create`) and wallet in the user's Kura home; this
    // example makes throwaway ones.
    let key = UserKey::generate();
    let mut config = ClientConfig::default();
    config.wallet = Some(Arc::new(Wallet::of_home(work.path())?));
    config.faucet = peers::testnet_dir().map(|d| Wallet::faucet(&d)).transpose()?.flatten().map(Arc::new);
    let client = Client::connect_with(peers::resolve(None)?, config).await?;

    let quiet = indicatif::ProgressBar::hidden();
    let address = client.put_path(path.as_ref(), Visibility::Private, &key, &quiet).await?;
    println!("stored {path} at {address}");

    let back = work.path().join("fetched");
    client.get_path(address, &back, &key, &quiet).await?;
    anyhow::ensure!(std::fs::read(&path)? == std::fs::read(&back)?, "the file came back different");
    println!("fetched it back: {} bytes, identical", std::fs::metadata(&back)?.len());
    client.close().await;
    Ok(())
}
