//! The one distance rule every Kura node computes identically.
//!
//! To agree with Kademlia's routing, every address and every peer id is mapped into
//! libp2p-kad's key space (`kbucket::Key`, a SHA-256 of the preimage) before distances are
//! taken. A close group computed here is therefore the same set that a Kademlia lookup for the
//! address converges on.

use libp2p::kad::KBucketDistance;
use libp2p::kad::KBucketKey;
use libp2p::PeerId;

pub use kura_types::{Address, AddressParseError, ADDRESS_LEN};

/// An address's position in Kademlia's key space.
pub fn kad_key(address: &Address) -> KBucketKey<Vec<u8>> {
    KBucketKey::from(address.0.to_vec())
}

/// The XOR distance between an address and a peer, in Kademlia's key space.
pub fn distance_to_peer(address: &Address, peer: &PeerId) -> KBucketDistance {
    kad_key(address).distance(&KBucketKey::from(*peer))
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
    let key = kad_key(target);
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

    #[test]
    fn the_age_rules_place_peers_where_kademlia_does() {
        for _ in 0..16 {
            let peer = PeerId::random();
            assert_eq!(kura_types::age::position(&peer).as_slice(), KBucketKey::from(peer).hashed_bytes());
        }
    }
    use proptest::prelude::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn close_group_agrees_with_kademlia_ordering() {
        let ps = peers(40);
        let target = Address::random();
        let group = close_group(&target, ps.clone(), 8);
        let key = kad_key(&target);
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
                let worst = distance_to_peer(&target, last);
                for p in ps.iter().filter(|p| !a.contains(p)) {
                    prop_assert!(distance_to_peer(&target, p) >= worst);
                }
            }
        }
    }
}
