//! The status file a running vault writes under its root, so local tools can find it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::VaultError;

/// File name of the status file under a vault's root.
pub const INFO_FILE: &str = "vault.json";

/// What a running vault publishes about itself on its local disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultInfo {
    /// Peer id, as a string.
    pub peer_id: String,
    /// Bound listen addresses, as strings.
    pub listen_addrs: Vec<String>,
    /// Process id.
    pub pid: u32,
    /// Software version.
    pub version: String,
}

impl VaultInfo {
    /// Writes the file durably ([`kura_node::durable::replace`]).
    pub fn write(&self, root: &Path) -> Result<(), VaultError> {
        let path = root.join(INFO_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| VaultError::Config(e.to_string()))?;
        kura_node::durable::replace(&path, &bytes, kura_node::durable::Access::Shared)
            .map_err(|source| VaultError::Io { path: path.clone(), source })
    }

    /// Reads the file of the vault rooted at `root`.
    pub fn read(root: &Path) -> Result<Self, VaultError> {
        let path = root.join(INFO_FILE);
        let bytes = std::fs::read(&path).map_err(|source| VaultError::Io { path: path.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|e| VaultError::Config(format!("{}: {e}", path.display())))
    }

    /// Removes the file (on clean shutdown).
    pub fn remove(root: &Path) {
        let _ = std::fs::remove_file(root.join(INFO_FILE));
    }
}
