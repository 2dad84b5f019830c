//! Records vaults store, and the shard record in particular.
//!
//! A record is addressed by a [`RecordKey`]: its kind, an address in the XOR space, and an
//! index within that address (the shard number for shards; 0 for whole records). Stores,
//! placement and repair work on keys and opaque bytes; each kind says how its bytes are
//! checked ([`Shard::verify`] for shards), so later kinds (inbox messages, account state) reuse
//! the same machinery.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::Address;

/// What kind of record a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RecordKind {
    /// One erasure-coded shard of a chunk.
    Shard,
}

impl RecordKind {
    /// A short stable name, used in file names.
    pub fn name(&self) -> &'static str {
        match self {
            RecordKind::Shard => "shard",
        }
    }

    /// The kind with this [`RecordKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "shard" => Some(RecordKind::Shard),
            _ => None,
        }
    }
}

/// The key of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    /// Record kind.
    pub kind: RecordKind,
    /// The address the record belongs to (a chunk's address for shards).
    pub address: Address,
    /// Index within the address (the shard number).
    pub index: u8,
}

impl RecordKey {
    /// The key of shard `index` of `chunk`.
    pub fn shard(chunk: Address, index: u8) -> Self {
        RecordKey { kind: RecordKind::Shard, address: chunk, index }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}.{}", self.kind.name(), self.address, self.index)
    }
}

/// Most shards (k + m) a chunk may be coded into.
pub const MAX_SHARDS: usize = 64;

/// Largest chunk a shard may belong to (self_encryption's chunks are at most ~4 MiB).
pub const MAX_CHUNK_LEN: u32 = 8 * 1024 * 1024;

/// What every shard of a chunk carries: enough for any holder to verify its own shard, and for
/// a repairer to verify a rebuilt chunk end to end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardHeader {
    /// The chunk's address: BLAKE3 of its bytes.
    pub chunk: Address,
    /// This shard's number, `0..k+m`; shard `i` belongs on the `i`-th closest vault.
    pub index: u8,
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// The chunk's length in bytes.
    pub chunk_len: u32,
    /// BLAKE3 of every shard, by index.
    pub shard_hashes: Vec<[u8; 32]>,
}

impl ShardHeader {
    /// Total shards `k + m`.
    pub fn n(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// The length of every shard of this chunk.
    pub fn shard_len(&self) -> usize {
        shard_len(self.chunk_len as usize, usize::from(self.k))
    }

    /// Whether `other` is a shard header of the same coding of the same chunk.
    pub fn same_coding(&self, other: &ShardHeader) -> bool {
        self.chunk == other.chunk
            && self.k == other.k
            && self.m == other.m
            && self.chunk_len == other.chunk_len
            && self.shard_hashes == other.shard_hashes
    }
}

/// The length of each shard when a `chunk_len`-byte chunk is split into `k` data shards
/// (rounded up to an even length, which the Reed-Solomon code works in).
pub fn shard_len(chunk_len: usize, k: usize) -> usize {
    (chunk_len.div_ceil(k.max(1)).max(1) + 1) & !1
}

/// One shard of a chunk with its header.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Where it belongs and how to check it.
    pub header: ShardHeader,
    /// The shard's bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shard({:?} #{} of {}, {} B)", self.header.chunk, self.header.index, self.header.n(), self.data.len())
    }
}

/// Why a shard is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The coding parameters are impossible.
    #[error("bad coding parameters k = {k}, m = {m}")]
    BadParameters {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
    },
    /// The header lists the wrong number of hashes or an out-of-range index.
    #[error("header lists {hashes} hashes and index {index} for {n} shards")]
    BadHeader {
        /// Hashes listed.
        hashes: usize,
        /// The shard's index.
        index: u8,
        /// Shards the coding has.
        n: usize,
    },
    /// The chunk length is out of range.
    #[error("chunk length {0} is out of range")]
    BadLength(u32),
    /// The data has the wrong length.
    #[error("shard has {got} bytes, its header implies {expected}")]
    WrongSize {
        /// Bytes present.
        got: usize,
        /// Bytes implied.
        expected: usize,
    },
    /// The data does not hash to the header's hash for this index.
    #[error("shard {index} of chunk {chunk} does not match its hash")]
    HashMismatch {
        /// The chunk.
        chunk: Address,
        /// The shard's index.
        index: u8,
    },
}

impl Shard {
    /// The key this shard is stored under.
    pub fn key(&self) -> RecordKey {
        RecordKey::shard(self.header.chunk, self.header.index)
    }

    /// Checks the header's consistency and the data against its hash.
    pub fn verify(&self) -> Result<(), ShardError> {
        let h = &self.header;
        if h.k == 0 || h.n() > MAX_SHARDS {
            return Err(ShardError::BadParameters { k: h.k, m: h.m });
        }
        if h.shard_hashes.len() != h.n() || usize::from(h.index) >= h.n() {
            return Err(ShardError::BadHeader { hashes: h.shard_hashes.len(), index: h.index, n: h.n() });
        }
        if h.chunk_len == 0 || h.chunk_len > MAX_CHUNK_LEN {
            return Err(ShardError::BadLength(h.chunk_len));
        }
        if self.data.len() != h.shard_len() {
            return Err(ShardError::WrongSize { got: self.data.len(), expected: h.shard_len() });
        }
        if blake3::hash(&self.data).as_bytes() != &h.shard_hashes[usize::from(h.index)] {
            return Err(ShardError::HashMismatch { chunk: h.chunk, index: h.index });
        }
        Ok(())
    }
}
