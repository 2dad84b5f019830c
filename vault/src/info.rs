//! The status file a running vault writes under its root, so local tools can find it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::VaultError;

/// File name of the status file under a vault's root.
pub const INFO_FILE: &str = "vault.json";

/// The format of the status file this build writes (format 0, before the field, is read too).
pub const INFO_FORMAT: u32 = 1;

/// What a running vault publishes about itself on its local disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultInfo {
    /// The file's format ([`INFO_FORMAT`] when written by this build; 0 when absent).
    #[serde(default)]
    pub format: u32,
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
        Self::decode(&bytes).map_err(|e| VaultError::Config(format!("{}: {e}", path.display())))
    }

    /// The status file's contents from its bytes, of this build's format or an earlier one.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let info: VaultInfo = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if info.format > INFO_FORMAT {
            return Err(format!("format {}, newer than this build reads ({INFO_FORMAT})", info.format));
        }
        Ok(info)
    }

    /// Removes the file (on clean shutdown).
    pub fn remove(root: &Path) {
        let _ = std::fs::remove_file(root.join(INFO_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status files of every format, kept in `tests/fixtures` (format 0 has no `format` field),
    /// read back. `KURA_WRITE_FIXTURES=1` writes them again.
    #[test]
    fn status_files_of_every_format_read_back() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let info = |format| VaultInfo {
            format,
            peer_id: "12D3KooWExample".into(),
            listen_addrs: vec!["/ip4/127.0.0.1/udp/4000/quic-v1".into()],
            pid: 42,
            version: "0.1.0".into(),
        };
        if std::env::var_os("KURA_WRITE_FIXTURES").is_some() {
            let mut old = serde_json::to_value(info(0)).unwrap();
            old.as_object_mut().unwrap().remove("format");
            std::fs::write(fixtures.join("vault-json-format0.json"), serde_json::to_vec_pretty(&old).unwrap()).unwrap();
            std::fs::write(fixtures.join("vault-json-format1.json"), serde_json::to_vec_pretty(&info(INFO_FORMAT)).unwrap()).unwrap();
        }
        let old = std::fs::read(fixtures.join("vault-json-format0.json")).unwrap();
        assert!(!String::from_utf8_lossy(&old).contains("format"));
        assert_eq!(VaultInfo::decode(&old).unwrap(), info(0));
        let now = std::fs::read(fixtures.join("vault-json-format1.json")).unwrap();
        assert_eq!(VaultInfo::decode(&now).unwrap(), info(INFO_FORMAT));
        let dir = tempfile::tempdir().unwrap();
        info(INFO_FORMAT).write(dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join(INFO_FILE)).unwrap(), now, "format 1 is what this build writes");
        let newer = serde_json::to_vec(&info(INFO_FORMAT + 1)).unwrap();
        assert!(VaultInfo::decode(&newer).unwrap_err().contains("newer"));
    }
}
