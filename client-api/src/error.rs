//! Errors of the client library.

use std::path::PathBuf;

/// What went wrong in a client operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The network layer failed.
    #[error(transparent)]
    Node(#[from] kura_node::NodeError),
    /// No peers file was given and no local testnet was found.
    #[error("no peers to join: pass --peers FILE, set KURA_PEERS, or start a local testnet with `kura-testnet up`")]
    NoPeers,
    /// The peers file could not be read.
    #[error("peers file {path}: {reason}")]
    PeersFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// None of the bootstrap peers could be reached.
    #[error("could not reach any of {tried} bootstrap peers within {secs} s")]
    Unreachable {
        /// How many peers were tried.
        tried: usize,
        /// How long we waited.
        secs: u64,
    },
}
