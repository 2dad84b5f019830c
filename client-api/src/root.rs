//! What a file address opens: a root record, public or sealed to its owner's key.
//!
//! The root record is stored as a chunk (erasure-coded like any other); the file's address is
//! that chunk's address. Its bytes are `"KURA" ‖ version ‖ visibility ‖ payload`: a public
//! payload is the postcard-encoded [`RootRecord`]; a private one is a 24-byte nonce and the
//! record sealed with XChaCha20-Poly1305 under the user's key, the header bound as associated
//! data. Vaults see only the sealed bytes, so a private file's data map (and with it every
//! chunk's key) stays with its owner.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::keys::UserKey;

const MAGIC: &[u8; 4] = b"KURA";
/// Version of the root record format (2: files list where their chunks are stored; 3: a
/// private record's content carries its owner's convergence keystream, see
/// [`crate::keys::Convergence`]).
pub const ROOT_VERSION: u8 = 3;
/// The oldest root record format this build reads.
const OLDEST_READ: u8 = 2;
const PUBLIC: u8 = 0;
const PRIVATE: u8 = 1;
const HEADER_LEN: usize = 6;
const NONCE_LEN: usize = 24;

/// Who can open an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Anyone holding the address.
    Public,
    /// Only the holder of the key that stored it.
    Private,
}

/// What an address leads to.
///
/// The type does not nest (a directory's manifest is [`Content`], which cannot be a directory),
/// so decoding a crafted record cannot recurse without bound. Its encoding is the same as when
/// the manifest was a boxed `RootRecord`, so records stored before still open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootRecord {
    /// Content too small for self-encryption (under 3 bytes), kept in the record itself.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A self-encrypted file: its data map (self_encryption's encoding), size, and where each
    /// of its chunks is stored.
    File {
        /// `self_encryption::DataMap::to_bytes`.
        #[serde(with = "serde_bytes")]
        data_map: Vec<u8>,
        /// The file's size in bytes.
        size: u64,
        /// Every chunk the data map names (its own and, for a large file, those of its shrunk
        /// data map), with the storage address that commits to its coding.
        chunks: Vec<ChunkRef>,
    },
    /// A directory tree: its manifest (a postcard list of [`DirEntry`]), itself stored as content.
    Directory {
        /// Where the manifest's bytes are.
        manifest: Content,
    },
}

/// The bytes of one file: the first two variants of [`RootRecord`], encoded the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// Content too small for self-encryption (under 3 bytes), kept in the record itself.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A self-encrypted file (see [`RootRecord::File`]).
    File {
        /// `self_encryption::DataMap::to_bytes`.
        #[serde(with = "serde_bytes")]
        data_map: Vec<u8>,
        /// The file's size in bytes.
        size: u64,
        /// Where each chunk the data map names is stored.
        chunks: Vec<ChunkRef>,
    },
}

impl Content {
    /// The size the record declares for the file.
    pub fn size(&self) -> u64 {
        match self {
            Content::Inline(b) => b.len() as u64,
            Content::File { size, .. } => *size,
        }
    }
}

impl From<Content> for RootRecord {
    fn from(c: Content) -> Self {
        match c {
            Content::Inline(b) => RootRecord::Inline(b),
            Content::File { data_map, size, chunks } => RootRecord::File { data_map, size, chunks },
        }
    }
}

impl RootRecord {
    /// The file content the record leads to, or `None` for a directory.
    pub fn content(&self) -> Option<Content> {
        match self {
            RootRecord::Inline(b) => Some(Content::Inline(b.clone())),
            RootRecord::File { data_map, size, chunks } => {
                Some(Content::File { data_map: data_map.clone(), size: *size, chunks: chunks.clone() })
            }
            RootRecord::Directory { .. } => None,
        }
    }
}

/// Where one chunk of a file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's content hash (self_encryption's name for it).
    pub content: kura_node::Address,
    /// The storage address its shards live at, which commits to the content hash, the coding
    /// and every shard hash.
    pub address: kura_node::Address,
}

/// One entry of a directory manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Path relative to the stored directory, `/`-separated, without `.` or `..` components.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

/// The kind of a directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file and where its content is.
    File {
        /// Size in bytes.
        size: u64,
        /// Its content.
        content: Content,
    },
    /// A symbolic link and its target.
    Symlink(String),
}

impl RootRecord {
    /// Encodes the record for storage, sealing it to `key` when private.
    pub fn seal(&self, visibility: Visibility, key: &UserKey) -> Result<Vec<u8>, ClientError> {
        let body = postcard::to_stdvec(self).map_err(|e| ClientError::Malformed(format!("root record: {e}")))?;
        let mut out = MAGIC.to_vec();
        out.push(ROOT_VERSION);
        match visibility {
            Visibility::Public => {
                out.push(PUBLIC);
                out.extend_from_slice(&body);
            }
            Visibility::Private => {
                out.push(PRIVATE);
                let nonce: [u8; NONCE_LEN] = rand::random();
                let cipher = XChaCha20Poly1305::new((&key.0).into());
                let sealed = cipher
                    .encrypt(XNonce::from_slice(&nonce), Payload { msg: &body, aad: &out[..HEADER_LEN] })
                    .map_err(|_| ClientError::Malformed("sealing failed".into()))?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
        }
        Ok(out)
    }

    /// Decodes stored bytes, opening them with `key` when private.
    pub fn open(bytes: &[u8], key: &UserKey) -> Result<(RootRecord, Visibility), ClientError> {
        Self::open_layered(bytes, key).map(|(r, v, _)| (r, v))
    }

    /// [`RootRecord::open`], also saying whether the content under the record carries the
    /// owner's convergence keystream (private records from version 3 on).
    pub fn open_layered(bytes: &[u8], key: &UserKey) -> Result<(RootRecord, Visibility, bool), ClientError> {
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(ClientError::Malformed("not a Kura root record (bad magic)".into()));
        }
        if !(OLDEST_READ..=ROOT_VERSION).contains(&bytes[4]) {
            return Err(ClientError::Malformed(format!(
                "root record version {} (this build reads {OLDEST_READ} to {ROOT_VERSION})",
                bytes[4]
            )));
        }
        let version = bytes[4];
        let (body, visibility) = match bytes[5] {
            PUBLIC => (bytes[HEADER_LEN..].to_vec(), Visibility::Public),
            PRIVATE => {
                let rest = &bytes[HEADER_LEN..];
                if rest.len() < NONCE_LEN {
                    return Err(ClientError::Malformed("private root record too short".into()));
                }
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                let cipher = XChaCha20Poly1305::new((&key.0).into());
                let body = cipher
                    .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: &bytes[..HEADER_LEN] })
                    .map_err(|_| ClientError::NotYourKey)?;
                (body, Visibility::Private)
            }
            other => return Err(ClientError::Malformed(format!("unknown visibility {other}"))),
        };
        let (record, rest) = postcard::take_from_bytes::<RootRecord>(&body)
            .map_err(|e| ClientError::Malformed(format!("root record: {e}")))?;
        if !rest.is_empty() {
            return Err(ClientError::Malformed(format!("root record has {} trailing bytes", rest.len())));
        }
        Ok((record, visibility, version >= 3 && visibility == Visibility::Private))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RootRecord {
        RootRecord::File { data_map: vec![1, 2, 3], size: 99, chunks: vec![ChunkRef { content: kura_node::Address([1; 32]), address: kura_node::Address([2; 32]) }] }
    }

    #[test]
    fn public_and_private_round_trip() {
        let key = UserKey::generate();
        for vis in [Visibility::Public, Visibility::Private] {
            let bytes = sample().seal(vis, &key).unwrap();
            assert_eq!(RootRecord::open(&bytes, &key).unwrap(), (sample(), vis));
        }
    }

    #[test]
    fn private_record_needs_the_owners_key() {
        let bytes = sample().seal(Visibility::Private, &UserKey::generate()).unwrap();
        assert!(matches!(RootRecord::open(&bytes, &UserKey::generate()), Err(ClientError::NotYourKey)));
        // Flipping the visibility byte is caught too.
        let mut flipped = bytes.clone();
        flipped[5] = PUBLIC;
        assert!(RootRecord::open(&flipped, &UserKey::generate()).is_err());
    }

    #[test]
    fn malformed_records_are_errors() {
        let key = UserKey::generate();
        for bad in [&b""[..], b"KUR", b"NOPE\x01\x00", b"KURA\x09\x00", b"KURA\x01\x07", b"KURA\x01\x01short", b"KURA\x01\x00\xff\xff"] {
            assert!(RootRecord::open(bad, &key).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nesting_is_refused_and_old_encodings_open() {
        let key = UserKey::generate();
        // A directory whose manifest is a directory whose manifest is ...: an error, not a
        // stack overflow.
        let mut body = vec![2u8; 1_000_000];
        body.push(0);
        body.push(0);
        let mut bytes = b"KURA".to_vec();
        bytes.extend_from_slice(&[ROOT_VERSION, PUBLIC]);
        bytes.extend_from_slice(&body);
        assert!(matches!(RootRecord::open(&bytes, &key), Err(ClientError::Malformed(_))));
        // A directory record as it was encoded with a boxed manifest.
        let dir = RootRecord::Directory { manifest: Content::Inline(vec![7]) };
        assert_eq!(postcard::to_stdvec(&dir).unwrap(), vec![2, 0, 1, 7]);
    }
}
