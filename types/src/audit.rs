//! Storage audits: proof that a vault still holds a shard, checked by anyone who knows only
//! the shard's BLAKE3 hash and length.
//!
//! Shard hashes in a [`ShardHeader`](crate::ShardHeader) are BLAKE3 roots, so a shard is a
//! Bao tree. An auditor picks a few random 1 KiB chunks ([`Challenge::random`]); the holder
//! answers with those chunks and the tree nodes that link them to the root ([`prove`], Bao
//! verified streaming via `bao-tree`); the auditor checks them against the hash it already has
//! ([`verify`]). The holder cannot answer without the bytes it was asked for, and cannot
//! predict which ones will be asked, so a vault that lost or dropped a shard fails. A proof is
//! small: four chunks of a 256 KiB shard cost about 6 KiB, against 256 KiB to fetch it.

use std::io::Cursor;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{encode_ranges_validated, DecodeResponseIter};
use bao_tree::io::BaoContentItem;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Bytes of one audited chunk (BLAKE3's chunk size).
pub const AUDIT_CHUNK: u64 = 1024;
/// Chunks one challenge asks for.
pub const SLICES_PER_CHALLENGE: usize = 4;
/// The most chunks a holder answers for in one challenge (bounds the work a request can ask).
pub const MAX_SLICES: usize = 64;

/// Bao trees with one BLAKE3 chunk per block: proofs carry no more data than asked for. The
/// root hash does not depend on the block size; it is the plain BLAKE3 hash of the shard.
const BLOCK: BlockSize = BlockSize::ZERO;

/// Which chunks of a shard an auditor asks for, as chunk numbers (byte offset / 1 KiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Chunk numbers, ascending, without repeats.
    pub chunks: Vec<u64>,
}

/// Why a challenge or proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The challenge names no chunk, too many, or one past the end of the shard.
    #[error("bad challenge: {0}")]
    BadChallenge(String),
    /// The proof does not match the shard's hash.
    #[error("proof does not verify: {0}")]
    BadProof(String),
}

impl Challenge {
    /// A challenge for [`SLICES_PER_CHALLENGE`] random chunks of a shard of `len` bytes.
    pub fn random(len: u64, rng: &mut impl Rng) -> Challenge {
        let count = chunk_count(len);
        let mut chunks: Vec<u64> = (0..SLICES_PER_CHALLENGE).map(|_| rng.gen_range(0..count)).collect();
        chunks.sort_unstable();
        chunks.dedup();
        Challenge { chunks }
    }

    /// The challenge as Bao chunk ranges, checked against a shard of `len` bytes.
    fn ranges(&self, len: u64) -> Result<ChunkRanges, AuditError> {
        let count = chunk_count(len);
        if self.chunks.is_empty() || self.chunks.len() > MAX_SLICES {
            return Err(AuditError::BadChallenge(format!("{} chunks asked (1 to {MAX_SLICES} allowed)", self.chunks.len())));
        }
        let mut ranges = ChunkRanges::empty();
        for &c in &self.chunks {
            if c >= count {
                return Err(AuditError::BadChallenge(format!("chunk {c} is past the end ({count} chunks)")));
            }
            ranges |= ChunkRanges::from(ChunkNum(c)..ChunkNum(c + 1));
        }
        Ok(ranges)
    }
}

/// Chunks in a blob of `len` bytes (an empty blob has one, empty, chunk).
fn chunk_count(len: u64) -> u64 {
    len.div_ceil(AUDIT_CHUNK).max(1)
}

/// The proof that answers `challenge` for `data`: the chunks asked for and the tree nodes
/// linking them to the root, in Bao's pre-order encoding.
pub fn prove(data: &[u8], challenge: &Challenge) -> Result<Vec<u8>, AuditError> {
    let ranges = challenge.ranges(data.len() as u64)?;
    let outboard = PreOrderMemOutboard::create(data, BLOCK);
    let mut proof = Vec::new();
    encode_ranges_validated(data, &outboard, &ranges, &mut proof)
        .map_err(|e| AuditError::BadChallenge(e.to_string()))?;
    Ok(proof)
}

/// Checks `proof` against a shard known only by its BLAKE3 `hash` and length `len`.
pub fn verify(hash: &[u8; 32], len: u64, challenge: &Challenge, proof: &[u8]) -> Result<(), AuditError> {
    let ranges = challenge.ranges(len)?;
    let tree = BaoTree::new(len, BLOCK);
    let mut reader = Cursor::new(proof);
    let mut leaves = 0usize;
    for item in DecodeResponseIter::new(blake3::Hash::from_bytes(*hash), tree, &mut reader, &ranges) {
        match item.map_err(|e| AuditError::BadProof(e.to_string()))? {
            BaoContentItem::Leaf(_) => leaves += 1,
            BaoContentItem::Parent(_) => {}
        }
    }
    if leaves == 0 {
        return Err(AuditError::BadProof("no data in the proof".into()));
    }
    if reader.position() != proof.len() as u64 {
        return Err(AuditError::BadProof(format!("{} bytes past the end of the proof", proof.len() as u64 - reader.position())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn blob(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen()).collect()
    }

    #[test]
    fn an_honest_holder_passes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for len in [0usize, 1, 1023, 1024, 1025, 4096, 262_144, 262_145] {
            let data = blob(len, len as u64);
            let hash = *blake3::hash(&data).as_bytes();
            for _ in 0..8 {
                let c = Challenge::random(len as u64, &mut rng);
                let proof = prove(&data, &c).expect("prove");
                verify(&hash, len as u64, &c, &proof).unwrap_or_else(|e| panic!("len {len}: {e}"));
            }
        }
    }

    #[test]
    fn a_proof_is_small() {
        let data = blob(262_144, 2);
        let c = Challenge { chunks: vec![3, 70, 140, 255] };
        let proof = prove(&data, &c).expect("prove");
        assert!(proof.len() < 8 * 1024, "{} bytes", proof.len());
    }

    #[test]
    fn a_holder_with_other_bytes_fails() {
        let data = blob(65_536, 3);
        let hash = *blake3::hash(&data).as_bytes();
        let mut altered = data.clone();
        altered[10 * 1024 + 5] ^= 1;
        let c = Challenge { chunks: vec![10] };
        let proof = prove(&altered, &c).expect("prove");
        assert!(matches!(verify(&hash, 65_536, &c, &proof), Err(AuditError::BadProof(_))));
        // Far from the altered byte, the proof's tree nodes still give it away.
        let c = Challenge { chunks: vec![60] };
        assert!(verify(&hash, 65_536, &c, &prove(&altered, &c).expect("prove")).is_err());
    }

    #[test]
    fn a_proof_for_another_challenge_or_length_fails() {
        let data = blob(65_536, 4);
        let hash = *blake3::hash(&data).as_bytes();
        let asked = Challenge { chunks: vec![7] };
        let other = prove(&data, &Challenge { chunks: vec![8] }).expect("prove");
        assert!(verify(&hash, 65_536, &asked, &other).is_err());
        let right = prove(&data, &asked).expect("prove");
        assert!(verify(&hash, 65_536 + 1024, &asked, &right).is_err());
        let mut trailing = right.clone();
        trailing.push(0);
        assert!(verify(&hash, 65_536, &asked, &trailing).is_err());
        assert!(verify(&hash, 65_536, &asked, &right[..right.len() - 1]).is_err());
        assert!(verify(&hash, 65_536, &asked, &[]).is_err());
    }

    #[test]
    fn bad_challenges_are_refused_by_the_holder() {
        let data = blob(4096, 5);
        for chunks in [vec![], vec![4], (0..65).collect::<Vec<u64>>()] {
            assert!(matches!(prove(&data, &Challenge { chunks }), Err(AuditError::BadChallenge(_))));
        }
    }

    proptest! {
        #[test]
        fn verify_never_panics(proof in proptest::collection::vec(any::<u8>(), 0..4096), c in 0u64..64, len in 0u64..65_536) {
            let _ = verify(&[7; 32], len, &Challenge { chunks: vec![c] }, &proof);
        }
    }
}
