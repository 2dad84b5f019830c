//! A pointer: a mutable name, signed by its owner, that leads to an address (a file, a
//! folder, another pointer). Only the owner's key can move it; vaults keep the newest version.
//!
//! ```text
//! cargo run -p kura-client --example pointer
//! ```

use kura_client::{peers, Client, UserKey};
use kura_node::Address;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::connect(peers::resolve(None)?).await?;
    let key = UserKey::generate();

    let first = Address::of_content(b"version one of my site");
    let pointer = client.create_pointer(&key, "my-site", Some(first)).await?;
    let address = pointer.address();
    println!("pointer {address} -> {first} (version {})", pointer.version);

    let second = Address::of_content(b"version two of my site");
    let moved = client.set_pointer(&key, address, second).await?;
    println!("moved to {second} (version {})", moved.version);

    // Anyone holding the pointer's address reads the newest version its owner signed.
    let newest = client.get_pointer(address).await?.ok_or_else(|| anyhow::anyhow!("the pointer is gone"))?;
    anyhow::ensure!(newest.target == second, "read {} instead of {second}", newest.target);
    println!("read back: {address} -> {}", newest.target);
    client.close().await;
    Ok(())
}
