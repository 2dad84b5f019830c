//! The Kura client library: join the network as a client, store and fetch files, and send
//! end-to-end encrypted messages (see [`messages`]) from an [`Account`].
//!
//! Files are self-encrypted (`self_encryption`), each chunk Reed-Solomon coded into k + m
//! shards, and shard `i` stored on the `i`-th closest vault to the chunk's address. The data
//! map becomes a root record, sealed to the user's key unless public, stored as a chunk too;
//! its address is the file's address.
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

pub mod account;
mod chunks;
mod client;
mod error;
mod files;
pub mod payments;
pub mod keys;
pub mod messages;
pub mod peers;
pub mod pointers;
pub mod root;
pub mod tree;
pub mod wallet;

pub use account::{Account, AccountId};
pub use chunks::Shunned;
pub use client::{Client, ClientConfig};
pub use error::ClientError;
pub use files::chunk_addresses;
pub use keys::UserKey;
pub use root::{RootRecord, Visibility};
pub use wallet::{Balance, Wallet};
