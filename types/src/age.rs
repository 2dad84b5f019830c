//! Node age: who may vote for a group, proven by signatures, as pure rules.
//!
//! A vault's id is the hash of a key it made, so it can make ids until one sits where it
//! wants (the id work only prices each try). What a group decides — which transfers are
//! certified, which entries are vouched for — must therefore not be decided by whichever
//! vaults sit closest to an address, but by its **elders**: vaults that have proven an age of
//! at least [`ELDER_AGE`] with an [`AgeProof`]. An age is granted by the network, never
//! claimed: a proof is signed by an issuer every vault already knows (the network's genesis
//! key; see [`Issuer`]), so a vault checks another's age without trusting its own view of who
//! is near, and a newcomer aimed at an address, however many keys it ground, has no vote
//! there.
//!
//! Groups and quorums are defined for networks of any size: a committee is the
//! [`crate::record::REPLICAS`] closest elders, or all of them when the network has fewer,
//! and certifies with [`quorum`] of its size, so a network of five elders certifies with four
//! signatures (no weaker than five can be: one dishonest elder of five is tolerated, as one of
//! three would be, and two of eight).
//!
//! Elders are chosen under a diversity limit ([`diverse`]): at most [`PER_PREFIX`] elders of
//! one committee may share an address prefix (/24 for IPv4, /48 for IPv6), so one operator's
//! machines in one network cannot fill a committee.

use std::collections::HashMap;
use std::net::IpAddr;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::ledger::{SigCheck, WalletKey};

/// The age from which a vault is an elder: it signs certificates and vouches for history.
pub const ELDER_AGE: u8 = 5;

/// The age from which a vault may hold a shard alone: a holder displaced by a younger vault
/// keeps its copy until the newcomer has aged this far (not merely for a probation), so data
/// is never left only with vaults whose place was chosen by grinding ids.
pub const HOLD_AGE: u8 = 1;

/// Elders in a voting group (an account's committee): 24, certifying with 17. Chosen by
/// `kura-sim` (see `benches/RESULTS.md`): node age keeps an attacker from choosing which group
/// it sits in, but a patient attacker's share of elders becomes its share of vaults, so the
/// chance that it holds a quorum of *some* group is the binomial tail of the group size. With
/// 10 % of 10,000 vaults that is about 3·10⁻² for groups of 8, 2·10⁻⁵ for 16 and under 10⁻⁹
/// for 24, the smallest size that meets 10⁻⁶ over a year. Data is still coded and replicated
/// over 8 vaults: only votes need the larger group.
pub const VOTERS: usize = 24;

/// Most elders of one committee that share an address prefix.
pub const PER_PREFIX: usize = 2;

const AGE_DOMAIN: &[u8] = b"kura-age-v1";

/// Who signed an age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Issuer {
    /// The network's genesis key: the vaults a network starts with (a local testnet's
    /// founding vaults) are its first elders.
    Genesis,
}

/// A signed statement that `peer` has age `age`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgeProof {
    /// The vault.
    pub peer: PeerId,
    /// Its age.
    pub age: u8,
    /// Who signed it.
    pub issuer: Issuer,
    /// The issuer's BLS signature of `(peer, age)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why an age proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgeError {
    /// The proof is about another peer than the one that showed it.
    #[error("the age proof is for {proof}, not {peer}")]
    OtherPeer {
        /// Whom the proof names.
        proof: PeerId,
        /// Who showed it.
        peer: PeerId,
    },
    /// This network has no genesis key to check the proof against.
    #[error("this network has no genesis key: no age can be proven on it")]
    NoGenesis,
    /// The signature is malformed or does not verify.
    #[error("the age proof of {0} is not signed by its issuer")]
    BadSignature(PeerId),
}

fn message(peer: &PeerId, age: u8, issuer: Issuer) -> Vec<u8> {
    let mut m = AGE_DOMAIN.to_vec();
    m.extend_from_slice(&postcard::to_stdvec(&(peer, age, issuer)).unwrap_or_default());
    m
}

impl AgeProof {
    /// The genesis key's grant of `age` to `peer`.
    pub fn genesis(key: &WalletKey, peer: PeerId, age: u8) -> AgeProof {
        let signature = key.sign_tagged(&message(&peer, age, Issuer::Genesis));
        AgeProof { peer, age, issuer: Issuer::Genesis, signature }
    }

    /// The signature check that proves this age on a network whose genesis key is `genesis`
    /// (one pairing: run it where pairings run), after the free checks.
    pub fn check(&self, genesis: Option<&[u8]>) -> Result<SigCheck, AgeError> {
        let Some(genesis) = genesis else { return Err(AgeError::NoGenesis) };
        match self.issuer {
            Issuer::Genesis => SigCheck::new(genesis, message(&self.peer, self.age, self.issuer), &self.signature)
                .map_err(|_| AgeError::BadSignature(self.peer)),
        }
    }

    /// Verifies this proof as shown by `shown_by` (one pairing).
    pub fn verify(&self, shown_by: &PeerId, genesis: Option<&[u8]>) -> Result<u8, AgeError> {
        if self.peer != *shown_by {
            return Err(AgeError::OtherPeer { proof: self.peer, peer: *shown_by });
        }
        match self.check(genesis)?.holds() {
            true => Ok(self.age),
            false => Err(AgeError::BadSignature(self.peer)),
        }
    }

    /// Whether this proof makes its peer an elder.
    pub fn elder(&self) -> bool {
        self.age >= ELDER_AGE
    }
}

/// Signatures that certify for a committee of `n` elders: ⌊2n/3⌋ + 1 (FastPay's and
/// PBFT's), so two quorums of one committee share `⌊n/3⌋ + 1` members, more than the
/// ⌊(n − 1)/3⌋ dishonest ones it tolerates.
pub use crate::ledger::quorum;

/// Whether a churn event whose signed hash is `event` relocates a vault of `age`: when the
/// hash ends in at least `age` zero bits. A newcomer (age 0) is relocated by the first event
/// it meets, and each step of age halves how often a vault moves, so an old vault rarely
/// moves and a young one is diluted across the network before it ever votes.
pub fn relocates(event: &[u8; 32], age: u8) -> bool {
    trailing_zero_bits(event) >= u32::from(age)
}

fn trailing_zero_bits(bytes: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for b in bytes.iter().rev() {
        if *b == 0 {
            bits += 8;
        } else {
            return bits + b.trailing_zeros();
        }
    }
    bits
}

/// Where a vault relocated by `event` must make its new key: a position in Kademlia's key
/// space that neither the vault nor anyone short of a quorum of its group's elders can
/// choose, since the event's hash is of their signatures.
pub fn destination(event: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"kura-relocation-destination-v1");
    h.update(event);
    *h.finalize().as_bytes()
}

/// The leading bits a relocated vault's new position must share with its destination on a
/// network of about `vaults` vaults: enough that the range holds about one group
/// (⌊log₂(vaults / 8)⌋), so the vault cannot choose where in the network it lands.
pub fn range_bits(vaults: usize) -> u32 {
    let groups = (vaults / usize::from(crate::record::REPLICAS)).max(1);
    (usize::BITS - 1 - groups.leading_zeros()).min(32)
}

/// Whether `position` (a Kademlia key) lies in the range of `destination` at `bits`.
pub fn in_range(position: &[u8; 32], destination: &[u8; 32], bits: u32) -> bool {
    let mut shared = 0;
    for (a, b) in position.iter().zip(destination) {
        let x = a ^ b;
        if x == 0 {
            shared += 8;
        } else {
            shared += x.leading_zeros();
            break;
        }
    }
    shared >= bits
}

/// The prefix under which elders count as one place: /24 of an IPv4 address, /48 of IPv6.
/// Loopback addresses each count apart (a local testnet is one machine by design).
pub fn prefix(ip: &IpAddr) -> Option<Vec<u8>> {
    match ip {
        _ if ip.is_loopback() => None,
        IpAddr::V4(v4) => Some(v4.octets()[..3].to_vec()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => prefix(&IpAddr::V4(v4)),
            None => Some(v6.octets()[..6].to_vec()),
        },
    }
}

/// Elders in order (closest first), skipping any past the `per_prefix`-th of one address
/// prefix (an elder whose address is unknown counts as a place of its own).
pub fn diverse<'a, T>(elders: impl IntoIterator<Item = (T, Option<&'a IpAddr>)>, per_prefix: usize) -> Vec<T> {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut out = Vec::new();
    for (elder, ip) in elders {
        if let Some(p) = ip.and_then(prefix) {
            let n = seen.entry(p).or_default();
            if *n >= per_prefix {
                continue;
            }
            *n += 1;
        }
        out.push(elder);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_genesis_grant_proves_its_age_to_its_peer_only_and_nothing_else_does() {
        let genesis = WalletKey::random();
        let pk = genesis.public_key();
        let peer = PeerId::random();
        let proof = AgeProof::genesis(&genesis, peer, ELDER_AGE);
        assert_eq!(proof.verify(&peer, Some(&pk)), Ok(ELDER_AGE));
        assert!(proof.elder());
        let other = PeerId::random();
        assert!(matches!(proof.verify(&other, Some(&pk)), Err(AgeError::OtherPeer { .. })));
        // Claimed older than granted, another peer's grant renamed, another network's key.
        let older = AgeProof { age: ELDER_AGE + 1, ..proof.clone() };
        assert_eq!(older.verify(&peer, Some(&pk)), Err(AgeError::BadSignature(peer)));
        let renamed = AgeProof { peer: other, ..proof.clone() };
        assert_eq!(renamed.verify(&other, Some(&pk)), Err(AgeError::BadSignature(other)));
        let stranger = WalletKey::random();
        assert_eq!(AgeProof::genesis(&stranger, peer, 9).verify(&peer, Some(&pk)), Err(AgeError::BadSignature(peer)));
        assert_eq!(proof.verify(&peer, None), Err(AgeError::NoGenesis));
        let garbage = AgeProof { signature: vec![7; 5], ..proof };
        assert_eq!(garbage.verify(&peer, Some(&pk)), Err(AgeError::BadSignature(peer)));
        assert!(!AgeProof::genesis(&genesis, peer, ELDER_AGE - 1).elder());
    }

    #[test]
    fn quorums_of_small_committees_still_overlap_in_more_than_the_tolerated_liars() {
        for n in 1..=8usize {
            let q = quorum(n);
            assert!(q <= n, "a committee of {n} can certify");
            let overlap = 2 * q - n;
            assert!(overlap > (n - 1) / 3, "two quorums of {n} share {overlap}");
        }
        assert_eq!((quorum(8), quorum(5), quorum(4), quorum(1)), (6, 4, 3, 1));
    }

    #[test]
    fn relocation_halves_with_each_year_of_age_and_lands_in_range() {
        let events: Vec<[u8; 32]> = (0..4096u32).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect();
        for age in 0..6u8 {
            let moved = events.iter().filter(|e| relocates(e, age)).count();
            let expected = 4096 >> age;
            assert!(moved.abs_diff(expected) <= expected / 4 + 8, "age {age}: {moved} of 4096, about {expected} expected");
        }
        assert!(events.iter().all(|e| relocates(e, 0)), "a newcomer moves at its first event");
        assert_eq!((range_bits(8), range_bits(10_000), range_bits(1)), (0, 10, 0));
        let dest = destination(&events[0]);
        assert!(in_range(&dest, &dest, 256));
        let mut near = dest;
        near[1] ^= 0x01;
        assert!(in_range(&near, &dest, 15) && !in_range(&near, &dest, 16));
        assert_ne!(destination(&events[0]), destination(&events[1]));
    }

    #[test]
    fn no_more_than_the_limit_of_one_prefix_sit_in_a_committee() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let addrs = [ip("198.18.0.1"), ip("198.18.0.2"), ip("198.18.0.3"), ip("198.18.1.1"), ip("127.0.0.1"), ip("127.0.0.1")];
        let picked = diverse(addrs.iter().enumerate().map(|(i, a)| (i, Some(a))), 2);
        assert_eq!(picked, vec![0, 1, 3, 4, 5], "a third of 198.18.0.0/24 is skipped; loopback counts apart");
        let v6 = [ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"), ip("2001:db8:2::1")];
        assert_eq!(diverse(v6.iter().enumerate().map(|(i, a)| (i, Some(a))), 1), vec![0, 2]);
        assert_eq!(diverse([(0, None), (1, None)], 0), vec![0, 1], "an unknown address is a place of its own");
    }
}
