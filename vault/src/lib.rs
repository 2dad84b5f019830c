//! The Kura vault: a storage provider that joins the network, answers requests and (as the
//! storage issues land) stores, repairs and audits shards under a capacity quota, and keeps
//! inbox messages until they expire.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kura_vault::VaultError> {
//! let vault = kura_vault::Vault::start(kura_vault::VaultConfig::local("/tmp/v1".into())).await?;
//! println!("{}", vault.node().peer_id());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod age;
pub mod audit;
pub mod cli;
mod config;
mod context;
pub mod evidence;
mod error;
pub mod inbox;
mod info;
pub mod ledger;
mod payments;
mod pointer;
mod recent;
mod records;
pub mod repair;
mod server;
pub mod store;
pub mod worker;

pub use config::{Storage, VaultConfig, PRESETS};
pub use error::VaultError;
pub use info::{VaultInfo, INFO_FILE, INFO_FORMAT};
pub use server::{Vault, PLACEMENT_WINDOW};
