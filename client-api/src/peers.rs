//! Finding the network to join: `--peers FILE`, `KURA_PEERS`, or the most recent local testnet.

use std::path::{Path, PathBuf};

use kura_node::Multiaddr;

use crate::error::ClientError;

/// Environment variable naming a peers file (or holding multiaddrs separated by commas).
pub const PEERS_ENV: &str = "KURA_PEERS";

/// Kura's per-user data directory (`$XDG_DATA_HOME/kura`, `~/.local/share/kura`, ...).
pub fn data_dir() -> PathBuf {
    dirs::data_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("kura")
}

/// The file in which `kura-testnet up` records the directory of the most recent testnet.
pub fn latest_testnet_pointer() -> PathBuf {
    data_dir().join("latest-testnet")
}

/// The directory of the most recently started local testnet, if any.
pub fn latest_testnet_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string(latest_testnet_pointer()).ok()?;
    let dir = PathBuf::from(text.trim());
    dir.join("peers").exists().then_some(dir)
}

/// The folder of the local testnet in use: the one whose peers file `KURA_PEERS` names (if it
/// holds a genesis key), else the most recent. Its faucet funds wallets on a testnet.
pub fn testnet_dir() -> Option<PathBuf> {
    let from_env = std::env::var_os(PEERS_ENV).map(PathBuf::from);
    from_env
        .and_then(|p| p.parent().map(PathBuf::from))
        .filter(|d| d.join(crate::wallet::GENESIS_KEY_FILE).exists())
        .or_else(latest_testnet_dir)
}

/// Reads a peers file: one multiaddr a line; blank lines and `#` comments are skipped.
pub fn read_peers_file(path: &Path) -> Result<Vec<Multiaddr>, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::PeersFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_peers(&text).map_err(|reason| ClientError::PeersFile { path: path.to_path_buf(), reason })
}

/// Parses peers text: multiaddrs separated by newlines or commas.
pub fn parse_peers(text: &str) -> Result<Vec<Multiaddr>, String> {
    text.split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.parse::<Multiaddr>().map_err(|e| format!("bad multiaddr {l:?}: {e}")))
        .collect()
}

/// The bootstrap peers to use: `explicit` file, else `KURA_PEERS`, else the latest testnet.
pub fn resolve(explicit: Option<&Path>) -> Result<Vec<Multiaddr>, ClientError> {
    if let Some(path) = explicit {
        return non_empty(read_peers_file(path)?);
    }
    if let Ok(value) = std::env::var(PEERS_ENV) {
        let value = value.trim();
        // Multiaddrs and absolute paths both start with '/': whatever parses as multiaddrs
        // is taken as such, anything else as a file.
        if let Ok(peers) = parse_peers(value) {
            if !peers.is_empty() {
                return Ok(peers);
            }
        }
        if !value.is_empty() {
            return non_empty(read_peers_file(Path::new(value))?);
        }
    }
    match latest_testnet_dir() {
        Some(dir) => non_empty(read_peers_file(&dir.join("peers"))?),
        None => Err(ClientError::NoPeers),
    }
}

fn non_empty(peers: Vec<Multiaddr>) -> Result<Vec<Multiaddr>, ClientError> {
    if peers.is_empty() {
        Err(ClientError::NoPeers)
    } else {
        Ok(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_commas() {
        let text = "# testnet\n/ip4/127.0.0.1/udp/1/quic-v1\n\n/ip4/127.0.0.1/udp/2/quic-v1,/ip4/127.0.0.1/udp/3/quic-v1\n";
        assert_eq!(parse_peers(text).unwrap().len(), 3);
        assert!(parse_peers("not-an-addr").is_err());
    }

    #[test]
    fn env_takes_multiaddrs_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peers");
        std::fs::write(&f, "/ip4/127.0.0.1/udp/9/quic-v1\n").unwrap();
        // Both forms start with '/'; only one parses as multiaddrs.
        assert!(parse_peers(f.to_str().unwrap()).is_err());
        assert_eq!(read_peers_file(&f).unwrap().len(), 1);
    }

    #[test]
    fn explicit_empty_file_is_no_peers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peers");
        std::fs::write(&f, "\n# nothing\n").unwrap();
        assert!(matches!(resolve(Some(&f)), Err(ClientError::NoPeers)));
        assert!(matches!(resolve(Some(&dir.path().join("missing"))), Err(ClientError::PeersFile { .. })));
    }
}
