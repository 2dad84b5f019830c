//! Errors of the network layer.

use std::path::{Path, PathBuf};

use libp2p::PeerId;

use crate::address::Address;
use crate::wire::RemoteError;

/// What went wrong in the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The stored identity key is unreadable.
    #[error("identity key {path} is unreadable: {reason}")]
    Identity {
        /// The key file.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// The transport could not be set up.
    #[error("transport setup failed: {0}")]
    Transport(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A request to a peer failed in transit (dial failure, timeout, stream closed).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer asked.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("{peer} refused the request: {error}")]
    Remote {
        /// The peer asked.
        peer: PeerId,
        /// What it said.
        error: RemoteError,
    },
    /// The peer's answer was of the wrong kind.
    #[error("{peer} gave an unexpected answer to {request}")]
    UnexpectedResponse {
        /// The peer asked.
        peer: PeerId,
        /// The request kind.
        request: &'static str,
    },
    /// An iterative lookup failed.
    #[error("lookup of {target} failed: {reason}")]
    Lookup {
        /// The address looked up.
        target: Address,
        /// Why.
        reason: String,
    },
    /// The node's event loop has stopped.
    #[error("node has shut down")]
    Shutdown,
}

impl NodeError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        NodeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
