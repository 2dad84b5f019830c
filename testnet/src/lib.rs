//! `kura-testnet`: launch, inspect, churn and tear down a local network of real `kura-vault`
//! processes on 127.0.0.1.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kura_testnet::TestnetError> {
//! use kura_testnet::{HealthConfig, Testnet};
//! let net = Testnet::new("/tmp/kura-net".into());
//! net.up(10, 1 << 30)?;
//! let report = net.wait_healthy(std::time::Duration::from_secs(30), HealthConfig::default()).await?;
//! assert!(report.healthy());
//! net.down()?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod error;
pub mod health;
pub mod process;
pub mod state;
mod testnet;

pub use error::TestnetError;
pub use health::{HealthConfig, HealthReport};
pub use testnet::{Testnet, GENESIS_SUPPLY};
