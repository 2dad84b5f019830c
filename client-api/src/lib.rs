//! The Kura client library: join the network as a client and use it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kura_client::ClientError> {
//! let peers = kura_client::peers::resolve(None)?; // --peers, KURA_PEERS or the local testnet
//! let client = kura_client::Client::connect(peers).await?;
//! let group = client.closest_vaults(kura_node::Address::of_content(b"hi"), 8).await?;
//! println!("{group:?}");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
mod error;
pub mod peers;

pub use client::Client;
pub use error::ClientError;
