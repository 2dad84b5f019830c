//! Errors of the vault.

use std::path::PathBuf;

/// What went wrong in a vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The network layer failed.
    #[error(transparent)]
    Node(#[from] kura_node::NodeError),
    /// A file under the vault's root could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The record store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}
