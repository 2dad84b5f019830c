//! Errors of the testnet manager.

use std::path::{Path, PathBuf};

/// What went wrong managing a testnet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestnetError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The state file is unreadable.
    #[error("testnet state: {0}")]
    State(String),
    /// The `kura-vault` binary could not be found or built.
    #[error("kura-vault binary: {0}")]
    VaultBinary(String),
    /// A vault process failed to start.
    #[error("vault {index} did not start: {reason} (log: {log})")]
    VaultStart {
        /// The vault's index.
        index: usize,
        /// What happened.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The command's arguments do not fit the testnet.
    #[error("{0}")]
    Usage(String),
    /// The client side failed.
    #[error(transparent)]
    Client(#[from] kura_client::ClientError),
}

impl TestnetError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TestnetError::Io { path: path.to_path_buf(), source }
    }
}
