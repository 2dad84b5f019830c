//! Vault configuration with documented defaults and presets.

use std::path::PathBuf;

use kura_node::Multiaddr;

/// How a vault is set up.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Directory holding the identity key, the records and the status file.
    pub root: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Most bytes of records the vault stores before refusing new ones.
    pub capacity: u64,
    /// Inbound requests handled at once, a quarter of them kept for clients; more wait in the
    /// node's bounded queue.
    pub max_concurrent_requests: usize,
    /// Where records are kept.
    pub storage: Storage,
    /// Period of the repair worker's full sweep; `None` turns repair and handover off (for
    /// tests of what erasure coding alone survives).
    pub repair_sweep: Option<std::time::Duration>,
    /// Most bytes per second of shard traffic repair and handover may cause (fetches and
    /// stores together), so that they leave the disk and uplink to clients.
    pub repair_rate: u64,
    /// Period of storage audit rounds (see [`crate::audit`]); `None` turns audits off.
    pub audit_interval: Option<std::time::Duration>,
}

/// Which record store backs a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Files under `root/records`, indexed in `root/index` (crash-safe).
    Disk,
    /// Memory only (tests).
    Memory,
}

impl VaultConfig {
    /// A vault of a local testnet: loopback, an OS-assigned port, 1 GiB.
    pub fn local(root: PathBuf) -> Self {
        VaultConfig {
            root,
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("static multiaddr")],
            bootstrap: Vec::new(),
            capacity: 1 << 30,
            max_concurrent_requests: 64,
            storage: Storage::Disk,
            repair_sweep: Some(std::time::Duration::from_secs(60)),
            repair_rate: 64 << 20,
            audit_interval: Some(std::time::Duration::from_secs(30)),
        }
    }

    /// A vault on a real network: every interface, port 12000, 50 GiB.
    pub fn production(root: PathBuf) -> Self {
        VaultConfig {
            listen: vec!["/ip4/0.0.0.0/udp/12000/quic-v1".parse().expect("static multiaddr")],
            capacity: 50 << 30,
            repair_sweep: Some(std::time::Duration::from_secs(600)),
            repair_rate: 16 << 20,
            audit_interval: Some(std::time::Duration::from_secs(300)),
            ..VaultConfig::local(root)
        }
    }
}
