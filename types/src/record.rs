//! Record kinds, keys, replication strategies, and the two kinds so far: chunk shards and
//! mutable pointers.
//!
//! A record is stored under a [`RecordKey`]: a stable kind tag, an address in the XOR space
//! (which decides the close group that holds it) and a 32-byte id (so many records can live at
//! one address: the shards of a chunk, later the messages of an inbox). Every key is derived
//! from the record itself ([`Record::key`]), and every record is checkable against it alone
//! ([`Record::validate`]): a shard's address commits to its chunk's coding and every shard
//! hash, a pointer's address to its owner's key and name, and the owner signs every version.
//! So a vault never needs other shards or records to refuse a forgery, and a stored record is
//! never replaced except by one that [`Record::supersedes`] it (immutable kinds: never).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kind::Kind;

use crate::address::Address;

/// What kind of record a key names. The tags ([`RecordKind::tag`]) are stable: they are
/// written to disk and sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RecordKind {
    /// One erasure-coded shard of a chunk.
    Shard,
    /// A mutable pointer, replicated whole on its close group.
    Pointer,
    /// A message in an inbox, replicated whole on the inbox's close group until it expires.
    Message,
    /// A certified transfer, stored at each account it debits or credits.
    Transfer,
}

/// Every kind this build knows.
pub const KINDS: [RecordKind; 4] = [RecordKind::Shard, RecordKind::Pointer, RecordKind::Message, RecordKind::Transfer];

impl RecordKind {
    /// The kind's stable one-byte tag.
    pub const fn tag(self) -> u8 {
        match self {
            RecordKind::Shard => 1,
            RecordKind::Pointer => 2,
            RecordKind::Message => 3,
            RecordKind::Transfer => 4,
        }
    }

    /// The kind with this [`RecordKind::tag`].
    pub fn from_tag(tag: u8) -> Option<Self> {
        KINDS.into_iter().find(|k| k.tag() == tag)
    }

    /// A short stable name, used in file names and status output.
    pub fn name(&self) -> &'static str {
        match self {
            RecordKind::Shard => "shard",
            RecordKind::Pointer => "pointer",
            RecordKind::Message => "message",
            RecordKind::Transfer => "transfer",
        }
    }

    /// The kind with this [`RecordKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    /// Whether a stored record of this kind may be replaced by a newer version.
    pub fn mutable(&self) -> bool {
        matches!(self, RecordKind::Pointer)
    }
}

/// Where a record lives and how it is repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// `k` data and `m` parity shards, shard `i` on the `i`-th closest vault; any `k` rebuild
    /// the chunk.
    ErasureCoded {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
    },
    /// A whole copy on each of the `n` closest vaults; the newest valid version wins.
    Replicated {
        /// Copies.
        n: u8,
    },
}

/// How a record's close group brings it back to full redundancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairPlan {
    /// Any `k` shards rebuild the lost ones, which go to members holding none.
    Rebuild,
    /// The newest valid copy (each checked against the key) goes to members lacking it.
    CopyNewest,
}

/// Vaults a writer of a coded chunk asks: the group, and those past it that stand in for a
/// member that refuses.
pub const CHUNK_CANDIDATES: usize = 20;

impl Strategy {
    /// How many vaults of the close group hold the record (or a shard of it).
    pub fn group_size(&self) -> usize {
        match *self {
            Strategy::ErasureCoded { k, m } => usize::from(k) + usize::from(m),
            Strategy::Replicated { n } => usize::from(n),
        }
    }

    /// How many vaults a writer asks, closest first: the group, and those past it that stand
    /// in for members that refuse or do not answer.
    pub fn candidates(&self) -> usize {
        match *self {
            Strategy::ErasureCoded { .. } => CHUNK_CANDIDATES.max(self.group_size()),
            Strategy::Replicated { n } => 2 * usize::from(n),
        }
    }

    /// How many of a group of `group` vaults must store the record before a write succeeds:
    /// every shard of a coded chunk (each is one of the `k + m`), a majority of the copies of
    /// a replicated record (two majorities meet, so a later write sees an earlier one).
    pub fn write_quorum(&self, group: usize) -> usize {
        match *self {
            Strategy::ErasureCoded { .. } => self.group_size(),
            Strategy::Replicated { .. } => group / 2 + 1,
        }
    }

    /// How many valid answers a reader needs: `k` distinct shards of a coded chunk; one copy
    /// of a replicated record (each is checked against its key, and the newest read wins).
    pub fn read_quorum(&self) -> usize {
        match *self {
            Strategy::ErasureCoded { k, .. } => usize::from(k),
            Strategy::Replicated { .. } => 1,
        }
    }

    /// How the record's group repairs it.
    pub fn repair_plan(&self) -> RepairPlan {
        match self {
            Strategy::ErasureCoded { .. } => RepairPlan::Rebuild,
            Strategy::Replicated { .. } => RepairPlan::CopyNewest,
        }
    }
}

/// Copies of a replicated record: the same close group size as a coded chunk, so a pointer
/// survives the loss of any 7 of its holders.
pub const REPLICAS: u8 = 8;

/// The key of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordKey {
    /// Record kind.
    pub kind: RecordKind,
    /// The address the record belongs to: its close group holds it.
    pub address: Address,
    /// Which record at that address (a shard's index; zero for a pointer).
    pub id: [u8; 32],
}

/// The id of shard `index`: the index as a 256-bit big-endian number.
fn shard_id(index: u8) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[31] = index;
    id
}

impl RecordKey {
    /// The key of shard `index` of the chunk stored at `address`.
    pub fn shard(address: Address, index: u8) -> Self {
        RecordKey { kind: RecordKind::Shard, address, id: shard_id(index) }
    }

    /// The key of the pointer at `address`.
    pub fn pointer(address: Address) -> Self {
        RecordKey { kind: RecordKind::Pointer, address, id: [0; 32] }
    }

    /// The shard index this key names, for a shard key.
    pub fn shard_index(&self) -> Option<u8> {
        (self.kind == RecordKind::Shard && self.id[..31] == [0; 31]).then_some(self.id[31])
    }

    /// The first and last keys of `kind` at `address`, for range scans.
    pub fn range(kind: RecordKind, address: Address) -> (RecordKey, RecordKey) {
        (RecordKey { kind, address, id: [0; 32] }, RecordKey { kind, address, id: [0xff; 32] })
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard_index() {
            Some(i) => write!(f, "{}/{}.{i}", self.kind.name(), self.address),
            None => write!(f, "{}/{}.{}", self.kind.name(), self.address, hex::encode(self.id)),
        }
    }
}

/// Most shards (k + m) a chunk may be coded into.
pub const MAX_SHARDS: usize = 64;

/// Largest chunk a shard may belong to (self_encryption's chunks are at most ~4 MiB).
pub const MAX_CHUNK_LEN: u32 = 8 * 1024 * 1024;

/// The codings vaults accept, as `(k, m)`. A short list: every coding a vault accepts is one
/// an attacker can make it store, and repair and audits are tuned for these.
pub const ACCEPTED_CODINGS: [(u8, u8); 1] = [(4, 4)];

/// What every shard of a chunk carries: enough for any holder to check its own shard against
/// the address it is stored under, and for a repairer to check a rebuilt chunk end to end.
///
/// The field order is the first disk format's: a shard written by a vault before storage
/// addresses committed to the coding decodes into this struct unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardHeader {
    /// BLAKE3 of the chunk's bytes (what self-encryption names the chunk by).
    pub content: Address,
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

/// Domain of chunk storage addresses.
const CHUNK_ADDRESS_DOMAIN: &str = "kura 2026-11 chunk storage address v1";

impl ShardHeader {
    /// Total shards `k + m`.
    pub fn n(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// The length of every shard of this chunk.
    pub fn shard_len(&self) -> usize {
        shard_len(self.chunk_len as usize, usize::from(self.k))
    }

    /// The chunk's storage address: BLAKE3 (domain-separated) of its content hash, coding,
    /// length and every shard hash. Its close group holds the shards, and any holder can check
    /// a shard against it without any other shard.
    pub fn address(&self) -> Address {
        let mut h = blake3::Hasher::new_derive_key(CHUNK_ADDRESS_DOMAIN);
        h.update(&self.content.0);
        h.update(&[self.k, self.m]);
        h.update(&self.chunk_len.to_be_bytes());
        h.update(&(self.shard_hashes.len() as u32).to_be_bytes());
        for hash in &self.shard_hashes {
            h.update(hash);
        }
        Address(*h.finalize().as_bytes())
    }

    /// Whether `other` is a header of the same coding of the same chunk.
    pub fn same_coding(&self, other: &ShardHeader) -> bool {
        self.content == other.content
            && self.k == other.k
            && self.m == other.m
            && self.chunk_len == other.chunk_len
            && self.shard_hashes == other.shard_hashes
    }

    /// Whether vaults accept this coding ([`ACCEPTED_CODINGS`]).
    pub fn accepted(&self) -> bool {
        ACCEPTED_CODINGS.contains(&(self.k, self.m))
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
        write!(f, "Shard({:?} #{} of {}, {} B)", self.header.content, self.header.index, self.header.n(), self.data.len())
    }
}

/// Why a record is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The coding parameters are impossible.
    #[error("bad coding parameters k = {k}, m = {m}")]
    BadParameters {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
    },
    /// The coding is possible but not one vaults accept.
    #[error("coding k = {k}, m = {m} is not accepted (accepted: {ACCEPTED_CODINGS:?})")]
    NotAccepted {
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
        /// The chunk's storage address.
        chunk: Address,
        /// The shard's index.
        index: u8,
    },
    /// The record is not the one its key names.
    #[error("record is not {expected}: it belongs under {actual}")]
    WrongKey {
        /// The key it was asked for or stored under.
        expected: RecordKey,
        /// The key the record itself derives.
        actual: RecordKey,
    },
    /// A pointer's signature does not verify under its owner's key.
    #[error("pointer {0}: signature does not verify under its owner's key")]
    BadSignature(Address),
    /// An owner key is not a valid Ed25519 public key.
    #[error("owner key is not a valid Ed25519 key")]
    BadOwner,
    /// An inbox message is malformed, expired or from the future.
    #[error("message refused: {0}")]
    BadMessage(String),
    /// An inbox message carries less proof of work than asked.
    #[error("message carries too little work (asked: {asked:?})")]
    TooLittleWork {
        /// The difficulty asked.
        asked: crate::message::Difficulty,
    },
    /// An inbox operation is not signed by the inbox's owner, or not now.
    #[error("inbox request refused: {0}")]
    Unauthorized(String),
    /// A transfer, certificate or payment is refused.
    #[error("{0}")]
    Ledger(crate::ledger::LedgerError),
}


impl Shard {
    /// The key this shard is stored under: its chunk's storage address and its index.
    pub fn key(&self) -> RecordKey {
        RecordKey::shard(self.header.address(), self.header.index)
    }

    /// Checks the header's consistency and the data against its hash. (The key is derived
    /// from the header, so a shard that verifies is checked against its own address.)
    pub fn verify(&self) -> Result<(), RecordError> {
        let h = &self.header;
        if h.k == 0 || h.n() > MAX_SHARDS {
            return Err(RecordError::BadParameters { k: h.k, m: h.m });
        }
        if h.shard_hashes.len() != h.n() || usize::from(h.index) >= h.n() {
            return Err(RecordError::BadHeader { hashes: h.shard_hashes.len(), index: h.index, n: h.n() });
        }
        if h.chunk_len == 0 || h.chunk_len > MAX_CHUNK_LEN {
            return Err(RecordError::BadLength(h.chunk_len));
        }
        if self.data.len() != h.shard_len() {
            return Err(RecordError::WrongSize { got: self.data.len(), expected: h.shard_len() });
        }
        if blake3::hash(&self.data).as_bytes() != &h.shard_hashes[usize::from(h.index)] {
            return Err(RecordError::HashMismatch { chunk: h.address(), index: h.index });
        }
        Ok(())
    }
}

/// Domain of pointer addresses.
const POINTER_ADDRESS_DOMAIN: &str = "kura 2026-11 pointer address v1";
/// Domain of pointer names.
const POINTER_NAME_DOMAIN: &str = "kura 2026-11 pointer name v1";
/// Prefix of the bytes a pointer's owner signs: fixed, so a signature over a pointer can never
/// be read as a signature over anything else.
const POINTER_SIGNING_PREFIX: &[u8; 16] = b"kura-pointer-v1\0";

/// A mutable pointer: an owner's signed statement "version `version` of my pointer `name`
/// points at `target`". Its address derives from the owner's key and the name, so nobody else
/// can claim it first, and the highest version wins.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The owner's Ed25519 public key.
    pub owner: [u8; 32],
    /// The name's hash ([`Pointer::name_hash`]).
    pub name: [u8; 32],
    /// The version; each update raises it.
    pub version: u64,
    /// What it points at: a file, a tree, another pointer.
    pub target: Address,
    /// The owner's signature over [`Pointer::signed_bytes`].
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pointer({:?} v{} → {:?})", self.address(), self.version, self.target)
    }
}

impl Pointer {
    /// The hash a user's pointer name is stored as.
    pub fn name_hash(name: &str) -> [u8; 32] {
        Address::derive(POINTER_NAME_DOMAIN, &[name.as_bytes()]).0
    }

    /// The address of `owner`'s pointer with name hash `name`.
    pub fn address_of(owner: &[u8; 32], name: &[u8; 32]) -> Address {
        Address::derive(POINTER_ADDRESS_DOMAIN, &[owner, name])
    }

    /// This pointer's address.
    pub fn address(&self) -> Address {
        Self::address_of(&self.owner, &self.name)
    }

    /// The key it is stored under.
    pub fn key(&self) -> RecordKey {
        RecordKey::pointer(self.address())
    }

    /// The canonical bytes the owner signs: a fixed prefix, the address (which binds owner and
    /// name), the version as 8 big-endian bytes and the target.
    pub fn signed_bytes(address: &Address, version: u64, target: &Address) -> [u8; 88] {
        let mut out = [0u8; 88];
        out[..16].copy_from_slice(POINTER_SIGNING_PREFIX);
        out[16..48].copy_from_slice(&address.0);
        out[48..56].copy_from_slice(&version.to_be_bytes());
        out[56..88].copy_from_slice(&target.0);
        out
    }

    /// Version `version` of the pointer named `name` (a hash) owned by `key`.
    pub fn sign(key: &ed25519_dalek::SigningKey, name: [u8; 32], version: u64, target: Address) -> Pointer {
        use ed25519_dalek::Signer;
        let owner = key.verifying_key().to_bytes();
        let address = Self::address_of(&owner, &name);
        let signature = key.sign(&Self::signed_bytes(&address, version, &target)).to_bytes();
        Pointer { owner, name, version, target, signature }
    }

    /// Checks the owner's signature.
    pub fn verify(&self) -> Result<(), RecordError> {
        let owner = ed25519_dalek::VerifyingKey::from_bytes(&self.owner).map_err(|_| RecordError::BadOwner)?;
        let address = self.address();
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        owner
            .verify_strict(&Self::signed_bytes(&address, self.version, &self.target), &signature)
            .map_err(|_| RecordError::BadSignature(address))
    }

    /// Whether this version wins over `other` (of the same pointer): the higher version, and
    /// between two different records of one version (an owner writing from two places at
    /// once) the higher target then signature, so that every vault picks the same one.
    pub fn supersedes(&self, other: &Pointer) -> bool {
        (self.version, self.target, self.signature) > (other.version, other.target, other.signature)
    }
}

/// A record of any kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Record {
    /// A chunk shard.
    Shard(Shard),
    /// A pointer.
    Pointer(Pointer),
    /// An inbox message.
    Message(crate::message::Message),
    /// A certified transfer at one account it touches.
    Transfer(crate::ledger::Entry),
}

impl Record {
    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        crate::each_kind!(self, r => kind_of(r))
    }

    /// The key it is stored under, derived from the record itself.
    pub fn key(&self) -> RecordKey {
        crate::each_kind!(self, r => Kind::key(r))
    }

    /// How it is replicated.
    pub fn strategy(&self) -> Strategy {
        crate::each_kind!(self, r => r.strategy())
    }

    /// Checks the record on its own (hashes, signature) and that vaults accept it.
    pub fn validate(&self) -> Result<(), RecordError> {
        crate::each_kind!(self, r => r.check())
    }

    /// [`Record::validate`], and that it belongs under `key`.
    pub fn validate_for(&self, key: &RecordKey) -> Result<(), RecordError> {
        let actual = self.key();
        if actual != *key {
            return Err(RecordError::WrongKey { expected: *key, actual });
        }
        self.validate()
    }

    /// Whether this record may replace `stored` under the same key: never for immutable
    /// kinds, only a newer version for mutable ones.
    pub fn supersedes(&self, stored: &Record) -> bool {
        if self.key() != stored.key() {
            return false;
        }
        match (self, stored) {
            (Record::Pointer(new), Record::Pointer(old)) => Kind::supersedes(new, old),
            (Record::Shard(new), Record::Shard(old)) => Kind::supersedes(new, old),
            (Record::Message(new), Record::Message(old)) => Kind::supersedes(new, old),
            (Record::Transfer(new), Record::Transfer(old)) => Kind::supersedes(new, old),
            _ => false,
        }
    }

    /// Bytes charged against a vault's quota for it.
    pub fn size(&self) -> usize {
        crate::each_kind!(self, r => r.size())
    }
}

/// The kind of a record of kind `K`.
fn kind_of<K: Kind>(_: &K) -> RecordKind {
    K::KIND
}

impl Kind for Shard {
    const KIND: RecordKind = RecordKind::Shard;

    fn key(&self) -> RecordKey {
        Shard::key(self)
    }

    fn strategy(&self) -> Strategy {
        Strategy::ErasureCoded { k: self.header.k, m: self.header.m }
    }

    fn check(&self) -> Result<(), RecordError> {
        self.verify()?;
        if !self.header.accepted() {
            return Err(RecordError::NotAccepted { k: self.header.k, m: self.header.m });
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.data.len() + 32 * self.header.shard_hashes.len() + 48
    }

    fn into_record(self) -> Record {
        Record::Shard(self)
    }
}

impl Kind for Pointer {
    const KIND: RecordKind = RecordKind::Pointer;

    fn key(&self) -> RecordKey {
        Pointer::key(self)
    }

    fn strategy(&self) -> Strategy {
        Strategy::Replicated { n: REPLICAS }
    }

    fn check(&self) -> Result<(), RecordError> {
        self.verify()
    }

    fn supersedes(&self, held: &Self) -> bool {
        Pointer::supersedes(self, held)
    }

    fn size(&self) -> usize {
        200
    }

    fn into_record(self) -> Record {
        Record::Pointer(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erasure::Coding;

    fn signer() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&rand::random())
    }

    #[test]
    fn strategies_answer_placement_quorums_and_repair() {
        let coded = Strategy::ErasureCoded { k: 4, m: 4 };
        assert_eq!((coded.group_size(), coded.candidates(), coded.write_quorum(8), coded.read_quorum()), (8, 20, 8, 4));
        assert_eq!(coded.repair_plan(), RepairPlan::Rebuild);
        let replicated = Strategy::Replicated { n: REPLICAS };
        assert_eq!((replicated.group_size(), replicated.candidates(), replicated.read_quorum()), (8, 16, 1));
        assert_eq!(replicated.write_quorum(8), 5);
        assert_eq!(replicated.write_quorum(3), 2, "a majority of the group found");
        assert_eq!(replicated.repair_plan(), RepairPlan::CopyNewest);
    }

    #[test]
    fn kind_tags_and_names_are_stable_and_round_trip() {
        assert_eq!(RecordKind::Shard.tag(), 1);
        assert_eq!(RecordKind::Pointer.tag(), 2);
        assert_eq!(RecordKind::Message.tag(), 3);
        assert_eq!(RecordKind::Transfer.tag(), 4);
        for kind in KINDS {
            assert_eq!(RecordKind::from_tag(kind.tag()), Some(kind));
            assert_eq!(RecordKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(RecordKind::from_tag(0), None);
    }

    #[test]
    fn shard_keys_name_their_index_and_scan_in_order() {
        let a = Address::random();
        let k = RecordKey::shard(a, 7);
        assert_eq!(k.shard_index(), Some(7));
        assert_eq!(RecordKey::pointer(a).shard_index(), None);
        let (lo, hi) = RecordKey::range(RecordKind::Shard, a);
        assert!(lo <= RecordKey::shard(a, 0) && RecordKey::shard(a, 255) <= hi);
    }

    #[test]
    fn a_shard_address_commits_to_every_shard_hash() {
        let shards = Coding::default().encode(b"some chunk of content").unwrap();
        let address = shards[0].header.address();
        assert!(shards.iter().all(|s| s.key().address == address));
        assert_ne!(address, shards[0].header.content, "storage and content addresses differ");
        // A forger who changes any one hash (to pass off other data) changes the address.
        for i in 0..8 {
            let mut h = shards[0].header.clone();
            h.shard_hashes[i][0] ^= 1;
            assert_ne!(h.address(), address);
        }
        let mut other = shards[0].header.clone();
        other.chunk_len += 1;
        assert_ne!(other.address(), address);
    }

    #[test]
    fn forged_shards_cannot_claim_a_stored_key() {
        let real = Coding::default().encode(b"the real chunk").unwrap();
        let key = real[3].key();
        // Self-consistent forgery: other data, its own hashes.
        let forged = Coding::default().encode(b"an attacker's chunk").unwrap().remove(3);
        let forged = Record::Shard(forged);
        forged.validate().unwrap();
        assert!(matches!(forged.validate_for(&key), Err(RecordError::WrongKey { .. })));
        // The forger's header with the real hashes but other data fails its hash.
        let mut s = real[3].clone();
        s.data[0] ^= 1;
        assert!(matches!(Record::Shard(s).validate_for(&key), Err(RecordError::HashMismatch { .. })));
        // A real shard never supersedes: immutable.
        assert!(!Record::Shard(real[3].clone()).supersedes(&Record::Shard(real[3].clone())));
    }

    #[test]
    fn only_accepted_codings_are_valid_records() {
        let shard = Coding { k: 2, m: 1 }.encode(b"abc").unwrap().remove(0);
        shard.verify().unwrap();
        assert_eq!(Record::Shard(shard).validate(), Err(RecordError::NotAccepted { k: 2, m: 1 }));
    }

    #[test]
    fn pointers_verify_and_derive_their_address_from_owner_and_name() {
        let key = signer();
        let name = Pointer::name_hash("site");
        let p = Pointer::sign(&key, name, 1, Address::random());
        p.verify().unwrap();
        assert_eq!(p.address(), Pointer::address_of(&key.verifying_key().to_bytes(), &name));
        assert_ne!(p.address(), Pointer::sign(&signer(), name, 1, p.target).address(), "another owner, another address");
        assert_ne!(p.address(), Pointer::sign(&key, Pointer::name_hash("blog"), 1, p.target).address());
    }

    #[test]
    fn forged_pointer_updates_are_refused() {
        let owner = signer();
        let name = Pointer::name_hash("site");
        let p = Pointer::sign(&owner, name, 3, Address::random());
        // A stranger signs an update claiming the owner's key.
        let mut forged = Pointer::sign(&signer(), name, 4, Address::random());
        forged.owner = p.owner;
        assert_eq!(forged.verify(), Err(RecordError::BadSignature(p.address())));
        // The owner's signature moved onto another version or target.
        for (version, target) in [(4, p.target), (3, Address::random())] {
            let mut moved = p.clone();
            moved.version = version;
            moved.target = target;
            assert!(moved.verify().is_err());
        }
        let mut bad_owner = p.clone();
        bad_owner.owner = [0xff; 32];
        assert!(bad_owner.verify().is_err());
    }

    #[test]
    fn newer_versions_supersede_and_ties_break_the_same_everywhere() {
        let owner = signer();
        let name = Pointer::name_hash("x");
        let v1 = Record::Pointer(Pointer::sign(&owner, name, 1, Address::random()));
        let v2 = Record::Pointer(Pointer::sign(&owner, name, 2, Address::random()));
        assert!(v2.supersedes(&v1));
        assert!(!v1.supersedes(&v2), "a stale update never replaces a newer one");
        assert!(!v2.supersedes(&v2), "a replay is not newer");
        let a = Record::Pointer(Pointer::sign(&owner, name, 5, Address::random()));
        let b = Record::Pointer(Pointer::sign(&owner, name, 5, Address::random()));
        assert!(a.supersedes(&b) ^ b.supersedes(&a), "exactly one of two same-version records wins");
        // Another pointer's record never supersedes this one's.
        let other = Record::Pointer(Pointer::sign(&owner, Pointer::name_hash("y"), 9, Address::random()));
        assert!(!other.supersedes(&v1));
    }
}
