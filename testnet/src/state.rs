//! A testnet's state on disk: `DIR/testnet.json`, `DIR/peers`, one `DIR/vault-I/` per vault.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TestnetError;
pub use kura_node::durable::Access;

/// Version of the state file format.
const STATE_VERSION: u32 = 1;

/// One vault of a testnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultEntry {
    /// Index, stable for the testnet's life.
    pub index: usize,
    /// Peer id, as a string.
    pub peer_id: String,
    /// Dialable address with its `/p2p/` suffix.
    pub addr: String,
    /// UDP port it listens on (kept across restarts so peers' routing tables stay valid).
    pub port: u16,
    /// Process id of its last start.
    pub pid: u32,
    /// Capacity quota in bytes.
    pub capacity: u64,
}

/// Everything `kura-testnet` knows about one testnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TestnetState {
    /// Format version.
    pub version: u32,
    /// The vaults, by index.
    pub vaults: Vec<VaultEntry>,
    /// Extra `kura-vault run` flags every vault of this testnet gets (e.g. `--no-repair`).
    #[serde(default)]
    pub vault_args: Vec<String>,
}

impl Default for TestnetState {
    fn default() -> Self {
        TestnetState { version: STATE_VERSION, vaults: Vec::new(), vault_args: Vec::new() }
    }
}

/// Paths of a testnet directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The testnet directory.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout of `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Layout { dir }
    }
    /// `DIR/testnet.json`.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("testnet.json")
    }
    /// `DIR/peers`.
    pub fn peers_file(&self) -> PathBuf {
        self.dir.join("peers")
    }
    /// `DIR/vault-I`: the vault's root.
    pub fn vault_root(&self, index: usize) -> PathBuf {
        self.dir.join(format!("vault-{index}"))
    }
    /// `DIR/vault-I/log`: the vault's log.
    pub fn vault_log(&self, index: usize) -> PathBuf {
        self.vault_root(index).join("log")
    }

    /// Loads the state; a missing file is an empty testnet.
    pub fn load(&self) -> Result<TestnetState, TestnetError> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state: TestnetState = serde_json::from_slice(&bytes)
                    .map_err(|e| TestnetError::State(format!("{}: {e}", path.display())))?;
                if state.version != STATE_VERSION {
                    return Err(TestnetError::State(format!(
                        "{}: format version {} (this build reads {STATE_VERSION})",
                        path.display(),
                        state.version
                    )));
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TestnetState::default()),
            Err(e) => Err(TestnetError::io(&path, e)),
        }
    }

    /// Saves the state and rewrites the peers file with the vaults in `running`.
    pub fn save(&self, state: &TestnetState, running: &[usize]) -> Result<(), TestnetError> {
        let json = serde_json::to_vec_pretty(state).map_err(|e| TestnetError::State(e.to_string()))?;
        write_atomic(&self.state_file(), &json, Access::Shared)?;
        let peers: String = state
            .vaults
            .iter()
            .filter(|v| running.contains(&v.index))
            .map(|v| format!("{}\n", v.addr))
            .collect();
        write_atomic(&self.peers_file(), peers.as_bytes(), Access::Shared)
    }
}

/// Writes `bytes` to `path` durably ([`kura_node::durable::replace`]) with `access`.
pub fn write_atomic(path: &Path, bytes: &[u8], access: Access) -> Result<(), TestnetError> {
    kura_node::durable::replace(path, bytes, access).map_err(|e| TestnetError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_peers_list_running_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        assert_eq!(layout.load().unwrap(), TestnetState::default());
        let mut state = TestnetState::default();
        for i in 0..3 {
            state.vaults.push(VaultEntry {
                index: i,
                peer_id: format!("p{i}"),
                addr: format!("/ip4/127.0.0.1/udp/{}/quic-v1", 4000 + i),
                port: 4000 + i as u16,
                pid: 100 + i as u32,
                capacity: 1,
            });
        }
        layout.save(&state, &[0, 2]).unwrap();
        assert_eq!(layout.load().unwrap(), state);
        let peers = std::fs::read_to_string(layout.peers_file()).unwrap();
        assert_eq!(peers.lines().count(), 2);
        assert!(!peers.contains("4001"));
    }

    /// A state file of format 1, kept in `tests/fixtures` (`KURA_WRITE_FIXTURES=1` writes it
    /// again), reads back.
    #[test]
    fn a_state_file_of_format_1_reads_back() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/testnet-format1.json");
        let state = TestnetState {
            version: 1,
            vaults: vec![VaultEntry {
                index: 0,
                peer_id: "12D3KooWExample".into(),
                addr: "/ip4/127.0.0.1/udp/4000/quic-v1/p2p/12D3KooWExample".into(),
                port: 4000,
                pid: 42,
                capacity: 1 << 30,
            }],
            vault_args: vec!["--no-repair".into()],
        };
        if std::env::var_os("KURA_WRITE_FIXTURES").is_some() {
            std::fs::write(&fixture, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        std::fs::copy(&fixture, layout.state_file()).unwrap();
        assert_eq!(layout.load().unwrap(), state);
    }

    #[test]
    fn future_state_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        std::fs::write(layout.state_file(), r#"{"version":99,"vaults":[]}"#).unwrap();
        assert!(matches!(layout.load(), Err(TestnetError::State(_))));
    }
}
