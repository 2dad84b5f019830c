//! Kura's network layer, shared by vaults and clients.
//!
//! - [`Address`] and [`close_group`]: the XOR space and the one placement rule.
//! - [`elders`]: which vaults are elders, learned from their age proofs.
//! - [`wire`]: versioned, size-limited request/response messages that decode without panics.
//! - [`spawn`] / [`NodeHandle`]: a libp2p swarm (QUIC, Kademlia under Kura's own protocol name,
//!   identify, request-response) run as an actor, with [`NodeHandle::closest_vaults`] built on
//!   Kademlia's iterative lookup.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kura_node::NodeError> {
//! use kura_node::{spawn, Address, NodeConfig};
//! let key = libp2p::identity::Keypair::generate_ed25519();
//! let bootstrap = vec!["/ip4/127.0.0.1/udp/4000/quic-v1".parse().unwrap()];
//! let (node, _inbound) = spawn(NodeConfig::client(key).with_bootstrap(bootstrap)).await?;
//! let group = node.closest_vaults(Address::of_content(b"hello"), 8).await?;
//! println!("close group: {group:?}");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod address;
pub mod budget;
mod codec;
pub mod committee;
mod config;
pub mod elders;
mod error;
pub mod fair;
pub mod identity;
mod limits;
mod node;
pub mod penalty;
pub mod puzzle;
mod unreachable;
pub mod verifier;

// The storage types live in `kura-types` (no runtime, no transport); they are re-exported
// here so that users of the network layer need one dependency.
pub use kura_types::{age, audit, durable, erasure, ledger, message, record, stored, wire};
pub use kura_types::record::REPLICAS;
pub use address::{close_group, distance_to_peer, kad_key, Address, AddressParseError, ADDRESS_LEN};
pub use codec::{read_frame, write_frame, Envelope, KuraCodec};
pub use config::{NodeConfig, Role};
pub use error::NodeError;
pub use kura_types::{Pointer, Record, RecordError, RecordKey, RecordKind, Shard, ShardHeader, Strategy};
pub use libp2p::{identity::Keypair, multiaddr::Protocol, Multiaddr, PeerId};
/// Sends `tracing` output to stderr, filtered by `RUST_LOG` or else `default` (quiet by
/// default: `"warn"`), coloured only on a terminal. For binaries; call once at start.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub use node::{spawn, InboundRequest, Lookup, NodeEvent, NodeHandle, NodeStats, Responder};
