//! XOR addresses and the one distance rule every Kura node computes identically.
//!
//! Content addresses are BLAKE3 hashes. To agree with Kademlia's routing, every address and
//! every peer id is mapped into libp2p-kad's key space (`kbucket::Key`, a SHA-256 of the
//! preimage) before distances are taken. A close group computed here is therefore the same set
//! that a Kademlia lookup for the address converges on.

use std::fmt;
use std::str::FromStr;

use libp2p::kad::KBucketKey;
use libp2p::kad::KBucketDistance;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// Length of an address in bytes.
pub const ADDRESS_LEN: usize = 32;

/// A 256-bit address in Kura's XOR space (a BLAKE3 hash of content, or of a name).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub [u8; ADDRESS_LEN]);

/// Why an address string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressParseError {
    /// The string is not hexadecimal.
    #[error("address is not hexadecimal: {0}")]
    NotHex(String),
    /// The string decodes to the wrong number of bytes.
    #[error("address must be {expected} bytes ({} hex characters), got {got} bytes", expected * 2)]
    WrongLength {
        /// Bytes an address has.
        expected: usize,
        /// Bytes the string held.
        got: usize,
    },
}

impl Address {
    /// The address of `content`: its BLAKE3 hash.
    pub fn of_content(content: &[u8]) -> Self {
        Address(*blake3::hash(content).as_bytes())
    }

    /// An address drawn uniformly at random (for tests, audits and health probes).
    pub fn random() -> Self {
        Address(rand::random())
    }

    /// The address's position in Kademlia's key space.
    pub fn kad_key(&self) -> KBucketKey<Vec<u8>> {
        KBucketKey::from(self.0.to_vec())
    }

    /// The XOR distance between this address and a peer, in Kademlia's key space.
    pub fn distance_to_peer(&self, peer: &PeerId) -> KBucketDistance {
        self.kad_key().distance(&KBucketKey::from(*peer))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", &hex::encode(&self.0[..6]))
    }
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim()).map_err(|e| AddressParseError::NotHex(e.to_string()))?;
        let arr: [u8; ADDRESS_LEN] = bytes.as_slice().try_into().map_err(|_| {
            AddressParseError::WrongLength {
                expected: ADDRESS_LEN,
                got: bytes.len(),
            }
        })?;
        Ok(Address(arr))
    }
}

/// The `n` peers of `candidates` closest to `target`, closest first.
///
/// This is the single placement rule of the network: duplicates are removed and ties (which
/// need a SHA-256 collision) are broken by peer id bytes, so every node that sees the same
/// candidates returns the same group in the same order.
pub fn close_group<I>(target: &Address, candidates: I, n: usize) -> Vec<PeerId>
where
    I: IntoIterator<Item = PeerId>,
{
    let key = target.kad_key();
    let mut scored: Vec<(KBucketDistance, PeerId)> = candidates
        .into_iter()
        .map(|p| (key.distance(&KBucketKey::from(p)), p))
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.to_bytes().cmp(&b.1.to_bytes())));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(n).map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn address_round_trips_through_hex() {
        let a = Address::random();
        assert_eq!(a.to_string().parse::<Address>(), Ok(a));
    }

    #[test]
    fn bad_address_strings_are_errors() {
        assert!(matches!("zz".parse::<Address>(), Err(AddressParseError::NotHex(_))));
        assert_eq!(
            "abcd".parse::<Address>(),
            Err(AddressParseError::WrongLength { expected: 32, got: 2 })
        );
    }

    #[test]
    fn close_group_agrees_with_kademlia_ordering() {
        let ps = peers(40);
        let target = Address::random();
        let group = close_group(&target, ps.clone(), 8);
        let key = target.kad_key();
        let mut keys: Vec<KBucketKey<PeerId>> = ps.iter().map(|p| KBucketKey::from(*p)).collect();
        keys.sort_by_key(|k| key.distance(k));
        let expected: Vec<PeerId> = keys.iter().take(8).map(|k| *k.preimage()).collect();
        assert_eq!(group, expected);
    }

    proptest! {
        #[test]
        fn close_group_is_order_independent_and_deduplicated(
            seed in any::<u64>(), n in 0usize..12, count in 0usize..30
        ) {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let ps = peers(count);
            let target = Address(rand::Rng::gen(&mut rng));
            let a = close_group(&target, ps.clone(), n);
            let mut shuffled = ps.clone();
            shuffled.extend(ps.iter().take(5).copied());
            shuffled.shuffle(&mut rng);
            let b = close_group(&target, shuffled, n);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.len(), n.min(count));
            // Every member is at least as close as every non-member.
            if let Some(last) = a.last() {
                let worst = target.distance_to_peer(last);
                for p in ps.iter().filter(|p| !a.contains(p)) {
                    prop_assert!(target.distance_to_peer(p) >= worst);
                }
            }
        }
    }
}
