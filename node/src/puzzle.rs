//! The proof of work a vault id carries: S/Kademlia's static puzzle.
//!
//! A peer id costs nothing to make, so an attacker can make ids until some land closer to a
//! chunk than its close group, then drain it. A vault id is accepted into routing tables only
//! if `BLAKE3("kura id puzzle v1" ‖ peer id)` starts with `difficulty` zero bits. The id is its
//! own proof: there is nothing to send or store beside it, and nothing to replay, since the
//! id is bound to the key that signs the connection. Making one valid id takes 2^difficulty
//! key generations (about a second of one core at 16 bits); aiming one at a chunk among N
//! vaults takes N times that.

use libp2p::identity::Keypair;
use libp2p::PeerId;

const DOMAIN: &[u8] = b"kura id puzzle v1";

/// The zero bits leading the puzzle hash of `peer`.
pub fn work(peer: &PeerId) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(&peer.to_bytes());
    let hash = h.finalize();
    let mut bits = 0;
    for byte in hash.as_bytes() {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// Whether `peer` carries at least `difficulty` bits of work.
pub fn meets(peer: &PeerId, difficulty: u8) -> bool {
    difficulty == 0 || work(peer) >= u32::from(difficulty)
}

/// A new Ed25519 identity whose peer id carries `difficulty` bits of work.
pub fn generate(difficulty: u8) -> Keypair {
    loop {
        let key = Keypair::generate_ed25519();
        if meets(&key.public().to_peer_id(), difficulty) {
            return key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_carry_the_work_and_most_random_ids_do_not() {
        for d in [0, 4, 8] {
            assert!(meets(&generate(d).public().to_peer_id(), d));
        }
        let random = (0..256).filter(|_| meets(&PeerId::random(), 8)).count();
        assert!(random < 16, "{random} of 256 random ids meet 8 bits (expected about 1)");
        assert!((0..64).all(|_| meets(&PeerId::random(), 0)));
    }
}
