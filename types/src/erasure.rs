//! Reed-Solomon coding of chunks into shards, and end-to-end checked decoding.
//!
//! `reed-solomon-simd` was chosen over `reed-solomon-erasure` (`simd-accel`) by measurement
//! at Kura's sizes (4 + 4 shards of 1 MiB, `netbench erasure`, `benches/RESULTS.md`): it
//! rebuilds a chunk whose data shards are all lost 3× faster (1.6 vs 0.55 GiB/s), which is the
//! case repair and degraded downloads hit; it encodes a little slower (4.4 vs 6.6 GiB/s), far
//! above self-encryption's ~70 MiB/s; and it is pure Rust with run-time SIMD detection, where
//! `simd-accel` needs a C compiler and fixes the instruction set at build time.

use crate::address::Address;
use crate::record::{shard_len, Shard, ShardHeader, MAX_CHUNK_LEN, MAX_SHARDS};


/// Default data shards per chunk.
pub const DEFAULT_K: u8 = 4;
/// Default parity shards per chunk.
pub const DEFAULT_M: u8 = 4;

/// How chunks are coded: `k` data shards and `m` parity shards; any `k` rebuild the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coding {
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
}

impl Default for Coding {
    fn default() -> Self {
        Coding { k: DEFAULT_K, m: DEFAULT_M }
    }
}

/// Why a chunk could not be coded or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// The parameters are impossible.
    #[error("bad coding k = {k}, m = {m} (need k ≥ 1 and k + m ≤ {MAX_SHARDS})")]
    BadCoding {
        /// Data shards.
        k: u8,
        /// Parity shards.
        m: u8,
    },
    /// The chunk is empty or too large to code.
    #[error("chunk of {0} bytes cannot be coded")]
    BadChunk(usize),
    /// Too few verified, consistent shards to rebuild the chunk.
    #[error("chunk {chunk}: {have} verified shards of the {need} needed")]
    NotEnoughShards {
        /// The chunk.
        chunk: Address,
        /// Verified shards of the best coding seen.
        have: usize,
        /// Shards needed (k).
        need: usize,
    },
    /// Shards decoded, but not to bytes with the chunk's address.
    #[error("chunk {0}: shards decode to bytes with another address")]
    AddressMismatch(Address),
    /// The Reed-Solomon library refused.
    #[error("reed-solomon: {0}")]
    Codec(String),
}

impl Coding {
    /// Total shards `k + m`.
    pub fn n(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    fn check(k: u8, m: u8) -> Result<(), ErasureError> {
        if k == 0 || usize::from(k) + usize::from(m) > MAX_SHARDS {
            return Err(ErasureError::BadCoding { k, m });
        }
        Ok(())
    }

    /// Codes `chunk` into `k + m` shards, shard `i` with index `i`; the chunk is stored at
    /// their headers' [`ShardHeader::address`].
    pub fn encode(&self, chunk: &[u8]) -> Result<Vec<Shard>, ErasureError> {
        if chunk.is_empty() || chunk.len() > MAX_CHUNK_LEN as usize {
            return Err(ErasureError::BadChunk(chunk.len()));
        }
        Self::check(self.k, self.m)?;
        let len = shard_len(chunk.len(), usize::from(self.k));
        let mut shards: Vec<Vec<u8>> = (0..usize::from(self.k))
            .map(|i| {
                let start = (i * len).min(chunk.len());
                let end = ((i + 1) * len).min(chunk.len());
                let mut s = chunk[start..end].to_vec();
                s.resize(len, 0);
                s
            })
            .collect();
        if self.m > 0 {
            let parity = reed_solomon_simd::encode(usize::from(self.k), usize::from(self.m), &shards)
                .map_err(|e| ErasureError::Codec(e.to_string()))?;
            shards.extend(parity);
        }
        let hashes: Vec<[u8; 32]> = shards.iter().map(|s| *blake3::hash(s).as_bytes()).collect();
        let header = ShardHeader {
            content: Address::of_content(chunk),
            index: 0,
            k: self.k,
            m: self.m,
            chunk_len: chunk.len() as u32,
            shard_hashes: hashes,
        };
        Ok(shards
            .into_iter()
            .enumerate()
            .map(|(i, data)| Shard { header: ShardHeader { index: i as u8, ..header.clone() }, data })
            .collect())
    }
}

impl Coding {
    /// The storage address of `chunk` under this coding (codes it to learn the shard hashes).
    pub fn address_of(&self, chunk: &[u8]) -> Result<Address, ErasureError> {
        Ok(self.encode(chunk)?[0].header.address())
    }
}

/// Rebuilds the chunk stored at `address` from any `k` of its shards that verify, and checks
/// that the result hashes to the content hash its address commits to. Only shards whose header
/// derives `address` count, so the coding used is the one the address commits to, never one a
/// vault sent: a lying holder cannot poison a decode.
pub fn decode(address: Address, shards: impl IntoIterator<Item = Shard>) -> Result<Vec<u8>, ErasureError> {
    let verified: Vec<Shard> = shards.into_iter().filter(|s| s.verify().is_ok()).collect();
    decode_verified(address, &verified)
}

/// [`decode`] for shards the caller has already checked with [`Shard::verify`] (a download
/// verifies each shard as it arrives, and should not hash it twice).
pub fn decode_verified(address: Address, shards: &[Shard]) -> Result<Vec<u8>, ErasureError> {
    let group = of_address(address, shards);
    let Some(first) = group.first() else {
        return Err(ErasureError::NotEnoughShards { chunk: address, have: 0, need: 1 });
    };
    let k = usize::from(first.header.k);
    if group.len() < k {
        return Err(ErasureError::NotEnoughShards { chunk: address, have: group.len(), need: k });
    }
    let bytes = reconstruct_chunk(&group)?;
    if Address::of_content(&bytes) != first.header.content {
        return Err(ErasureError::AddressMismatch(address));
    }
    Ok(bytes)
}

/// Rebuilds every shard of the chunk at `address` from any `k` that verify (for repair):
/// decodes, checks the content hash, re-encodes and checks every shard against the hashes the
/// address commits to.
pub fn rebuild_all(address: Address, shards: impl IntoIterator<Item = Shard>) -> Result<Vec<Shard>, ErasureError> {
    let verified: Vec<Shard> = shards.into_iter().filter(|s| s.verify().is_ok()).collect();
    rebuild_verified(address, &verified)
}

/// [`rebuild_all`] for shards the caller has already checked (see [`sift`]).
pub fn rebuild_verified(address: Address, verified: &[Shard]) -> Result<Vec<Shard>, ErasureError> {
    let bytes = decode_verified(address, verified)?;
    let header = &of_address(address, verified)[0].header;
    let rebuilt = Coding { k: header.k, m: header.m }.encode(&bytes)?;
    if rebuilt.first().map(|s| &s.header.shard_hashes) != Some(&header.shard_hashes) {
        return Err(ErasureError::AddressMismatch(address));
    }
    Ok(rebuilt)
}

/// Checks what one vault served for `address`: returns the shards that verify and whose
/// header derives the address, up to the first that does not, and that one's index. Vaults
/// check shards before serving them, so a bad one marks the vault as lying; its answer is not
/// hashed further (a liar's shards cost the reader no more than one check).
pub fn sift(address: Address, served: Vec<Shard>) -> (Vec<Shard>, Option<u8>) {
    let mut good = Vec::with_capacity(served.len());
    for s in served {
        if s.header.address() != address || s.verify().is_err() {
            return (good, Some(s.header.index));
        }
        good.push(s);
    }
    (good, None)
}

/// The shards stored at `address`, one per index. Their headers all derive the address, so
/// they are all of one coding.
fn of_address(address: Address, shards: &[Shard]) -> Vec<&Shard> {
    let mut out: Vec<&Shard> = Vec::new();
    for shard in shards {
        if !out.iter().any(|s| s.header.index == shard.header.index) && shard.header.address() == address {
            out.push(shard);
        }
    }
    out
}

/// Reconstructs the chunk bytes from one group of verified shards (at least k).
fn reconstruct_chunk(group: &[&Shard]) -> Result<Vec<u8>, ErasureError> {
    let h = &group[0].header;
    let k = usize::from(h.k);
    Coding::check(h.k, h.m)?;
    let mut data: Vec<Option<&[u8]>> = vec![None; k];
    let mut parity = Vec::new();
    for s in group {
        let i = usize::from(s.header.index);
        match data.get_mut(i) {
            Some(slot) => *slot = Some(&s.data),
            None => parity.push((i - k, &s.data)),
        }
    }
    let restored = if data.iter().any(Option::is_none) {
        let present = data.iter().enumerate().filter_map(|(i, d)| d.map(|d| (i, d)));
        reed_solomon_simd::decode(k, usize::from(h.m), present, parity)
            .map_err(|e| ErasureError::Codec(e.to_string()))?
    } else {
        Default::default()
    };
    let mut out = Vec::with_capacity(k * h.shard_len());
    for (i, d) in data.iter().enumerate() {
        let piece = d.or_else(|| restored.get(&i).map(Vec::as_slice));
        out.extend_from_slice(piece.ok_or(ErasureError::Codec("data shard missing after reconstruction".into()))?);
    }
    out.truncate(h.chunk_len as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordError;
    use proptest::prelude::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn sift_keeps_shards_of_the_address_up_to_the_first_lie() {
        let shards = Coding::default().encode(&bytes(100_000)).unwrap();
        let addr = shards[0].header.address();
        let other = Coding::default().encode(&bytes(99_999)).unwrap();
        assert_eq!(sift(addr, shards.clone()), (shards.clone(), None));
        let mut tampered = shards[2].clone();
        tampered.data[0] ^= 1;
        let served = vec![shards[0].clone(), shards[1].clone(), tampered, shards[3].clone()];
        assert_eq!(sift(addr, served), (shards[..2].to_vec(), Some(2)));
        // A shard that is sound but of another chunk is a lie too.
        assert_eq!(sift(addr, vec![other[5].clone(), shards[0].clone()]), (vec![], Some(5)));
    }

    #[test]
    fn any_k_of_n_rebuild_the_chunk() {
        let chunk = bytes(1_000_003);
        let shards = Coding::default().encode(&chunk).unwrap();
        let addr = shards[0].header.address();
        assert_eq!(shards.len(), 8);
        for s in &shards {
            s.verify().unwrap();
        }
        // Every 4-subset of the 8 shards.
        for mask in 0u32..256 {
            if mask.count_ones() != 4 {
                continue;
            }
            let pick = shards.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| s.clone());
            assert_eq!(decode(addr, pick).unwrap(), chunk, "mask {mask:08b}");
        }
        let three = shards.iter().take(3).cloned();
        assert_eq!(decode(addr, three), Err(ErasureError::NotEnoughShards { chunk: addr, have: 3, need: 4 }));
    }

    #[test]
    fn tampered_shards_are_skipped_and_forged_codings_rejected() {
        let chunk = bytes(10_000);
        let mut shards = Coding::default().encode(&chunk).unwrap();
        let addr = shards[0].header.address();
        shards[0].data[5] ^= 1;
        assert!(matches!(shards[0].verify(), Err(RecordError::HashMismatch { .. })));
        // The tampered one is skipped; the other seven suffice.
        assert_eq!(decode(addr, shards.clone()).unwrap(), chunk);
        // A forger who re-hashes tampered data, and even claims the real content hash, gets a
        // consistent coding of another address: its shards do not count.
        let forged = Coding::default().encode(&bytes(9_999)).unwrap();
        let forged: Vec<Shard> = forged
            .into_iter()
            .map(|mut s| {
                s.header.content = shards[1].header.content;
                s
            })
            .collect();
        assert!(matches!(decode(addr, forged.clone()), Err(ErasureError::NotEnoughShards { have: 0, .. })));
        // A forger who keeps the real header but lies about the content hash makes another
        // address too; with the real header and content hash, the data must match.
        // Mixed with the real shards, the real coding still wins.
        let mixed = forged.into_iter().chain(shards.into_iter().skip(1));
        assert_eq!(decode(addr, mixed).unwrap(), chunk);
    }

    #[test]
    fn rebuild_all_restores_every_shard() {
        let chunk = bytes(4_190_208);
        let shards = Coding::default().encode(&chunk).unwrap();
        let addr = shards[0].header.address();
        let rebuilt = rebuild_all(addr, shards.iter().skip(4).cloned()).unwrap();
        assert_eq!(rebuilt, shards);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(Coding::default().encode(&[]), Err(ErasureError::BadChunk(0)));
        assert!(matches!(Coding { k: 0, m: 2 }.encode(b"abc"), Err(ErasureError::BadCoding { .. })));
        assert!(matches!(Coding { k: 60, m: 10 }.encode(b"abc"), Err(ErasureError::BadCoding { .. })));
        let mut s = Coding::default().encode(b"abc").unwrap().remove(0);
        s.header.shard_hashes.pop();
        assert!(matches!(s.verify(), Err(RecordError::BadHeader { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn round_trips_for_any_length_and_coding(len in 1usize..5000, k in 1u8..8, m in 0u8..6, drop_seed in any::<u64>()) {
            let chunk: Vec<u8> = (0..len).map(|i| (i as u64).wrapping_mul(drop_seed | 1) as u8).collect();
            let coding = Coding { k, m };
            let shards = coding.encode(&chunk).unwrap();
            let addr = shards[0].header.address();
            prop_assert_eq!(shards.len(), coding.n());
            // Drop m shards chosen by the seed.
            let mut keep: Vec<Shard> = shards;
            for j in 0..usize::from(m) {
                let idx = ((drop_seed >> (j * 5)) as usize) % keep.len();
                keep.remove(idx);
            }
            prop_assert_eq!(decode(addr, keep).unwrap(), chunk);
        }
    }
}
