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
    /// The user's key could not be read or created.
    #[error("user key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An account could not be made, read or used, or an account ID is not valid.
    #[error("account: {0}")]
    Account(String),
    /// Vaults refused a record as invalid (too little work, expired, forged).
    #[error("vaults refused it: {0}")]
    Refused(String),
    /// A message could not be sent, opened or kept.
    #[error("message: {0}")]
    Message(String),
    /// Stored bytes are not what they should be (data map, root record, manifest, address).
    #[error("malformed: {0}")]
    Malformed(String),
    /// A directory manifest has an entry that could reach outside the output folder, or
    /// breaks a limit; nothing of the tree was written.
    #[error("refusing directory manifest: entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path (first 200 characters).
        entry: String,
        /// What is unsafe about it.
        reason: String,
    },
    /// A private address was sealed to another user's key.
    #[error("cannot open this private address: it was stored with another user's key")]
    NotYourKey,
    /// A shard of a chunk could not be stored on any vault.
    #[error("chunk {chunk}: shard {shard} could not be stored; tried {tried}")]
    StoreShard {
        /// The chunk.
        chunk: kura_node::Address,
        /// The shard's index.
        shard: u8,
        /// The vaults tried and what each said.
        tried: String,
    },
    /// Too few shards of a chunk could be found to rebuild it.
    #[error("chunk {chunk} is unavailable: {found} verified shards of the {needed} needed, from {asked} vaults asked ({detail})")]
    ChunkUnavailable {
        /// The chunk.
        chunk: kura_node::Address,
        /// Verified shards found.
        found: usize,
        /// Shards needed.
        needed: usize,
        /// Vaults asked.
        asked: usize,
        /// What the vaults said.
        detail: String,
    },
    /// Self-encryption failed.
    #[error("self-encryption: {0}")]
    Encryption(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A pointer update was refused: the network holds a version at least as new.
    #[error("pointer {address}: the network holds version {held}; version {sent} refused as stale")]
    StalePointer {
        /// The pointer.
        address: kura_node::Address,
        /// The version sent.
        sent: u64,
        /// The newest version a vault holds.
        held: u64,
    },
    /// No vault holds a pointer at this address.
    #[error("no pointer at {0}")]
    NoPointer(kura_node::Address),
    /// The pointer belongs to another user's key.
    #[error("pointer {0} is owned by another key: only its owner can set it")]
    NotYourPointer(kura_node::Address),
    /// A pointer already exists under this name.
    #[error("pointer {address} already exists (version {version}); use `kura pointer set`")]
    PointerExists {
        /// The pointer.
        address: kura_node::Address,
        /// Its version.
        version: u64,
    },
    /// Too few vaults stored a record.
    #[error("{what}: stored on {stored} vaults, {needed} needed ({detail})")]
    NotStored {
        /// The record.
        what: String,
        /// Vaults that stored it.
        stored: usize,
        /// Vaults needed.
        needed: usize,
        /// What the others said.
        detail: String,
    },
    /// The wallet cannot pay what storing costs.
    #[error("storing costs up to {} but the wallet holds {}", kura_node::ledger::format_amount(i128::from(*cost)), kura_node::ledger::format_amount(*balance))]
    InsufficientFunds {
        /// Units storing costs at most.
        cost: u64,
        /// Units the wallet holds.
        balance: i128,
    },
    /// Storing would cost more than the most the user allowed.
    #[error("storing costs up to {}, more than --max-cost {}", kura_node::ledger::format_amount(i128::from(*cost)), kura_node::ledger::format_amount(i128::from(*max)))]
    TooExpensive {
        /// Units storing costs at most.
        cost: u64,
        /// The most allowed.
        max: u64,
    },
    /// A wallet's state could not be read or kept, or its replicas disagree.
    #[error("wallet: {0}")]
    Wallet(String),
    /// A transfer breaks a ledger rule (checked before anything is sent).
    #[error("transfer refused: {0}")]
    Ledger(kura_node::ledger::LedgerError),
    /// Too few replicas of the paying account signed a transfer.
    #[error("transfer not certified: {signed} of the {needed} signatures needed ({detail})")]
    NotCertified {
        /// Replicas that signed.
        signed: usize,
        /// Signatures a certificate needs.
        needed: usize,
        /// Why the others refused.
        detail: String,
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
