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

use crate::ledger::{Binding, BindingCache, SigCheck, WalletKey};

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
const TICKET_DOMAIN: &[u8] = b"kura-age-ticket-v1";
const HANDOFF_DOMAIN: &[u8] = b"kura-age-handoff-v1";

/// How a vault's age was granted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Grant {
    /// By the network's genesis key: the vaults a network starts with (a local testnet's
    /// founding vaults) are its first elders.
    Genesis {
        /// The genesis key's BLS signature of `(peer, age)`.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// By relocation: a quorum of the elders of the vault's old group signed a ticket whose
    /// hash relocated it, and it made its new key in the range of the destination.
    Relocated(Box<Relocation>),
    /// By attestation: a quorum of the elders of the vault's group signed its ticket this
    /// epoch, at its age, and the ticket did not move it. A vault renews its proof so once an
    /// epoch, so its proof is signed by elders that are still there.
    Attested(Box<Attestation>),
}

/// Elders' signatures of a ticket that did not relocate its vault: a fresh proof of its age.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attestation {
    /// The ticket the elders signed.
    pub ticket: Ticket,
    /// The elders that signed.
    pub signers: Vec<Binding>,
    /// Their aggregate signature of the ticket.
    #[serde(with = "serde_bytes")]
    pub aggregate: Vec<u8>,
}

/// A vault's request to its group's elders, once an epoch: "I, `peer`, of age `age`, am here
/// at `epoch`; my range is `bits` bits". Its signatures decide whether and where it moves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ticket {
    /// The vault asking.
    pub peer: PeerId,
    /// Its age, as the elders know it.
    pub age: u8,
    /// The epoch (seconds since 1970 over the network's epoch length).
    pub epoch: u64,
    /// The leading bits its new position must share with its destination.
    pub bits: u32,
}

impl Ticket {
    fn message(&self) -> Vec<u8> {
        [TICKET_DOMAIN, &postcard::to_stdvec(self).unwrap_or_default()].concat()
    }

    /// An elder's signature of this ticket with its replica key.
    pub fn sign(&self, key: &WalletKey) -> Vec<u8> {
        key.sign_tagged(&self.message())
    }

    /// Whether `signature` is `binding`'s signature of this ticket (one pairing; the
    /// binding is checked apart).
    pub fn holds(&self, binding: &Binding, signature: &[u8]) -> bool {
        SigCheck::new(&binding.bls, self.message(), signature).is_ok_and(|c| c.holds())
    }

    /// The churn event the lead elder's signature makes: unpredictable to anyone without
    /// that elder's key, and unique (BLS signatures are deterministic).
    pub fn event(lead: &[u8]) -> [u8; 32] {
        *blake3::hash(lead).as_bytes()
    }

    fn handoff(&self, new: &PeerId) -> Vec<u8> {
        [HANDOFF_DOMAIN, &postcard::to_stdvec(&(self, new)).unwrap_or_default()].concat()
    }
}

/// What proves a relocation: the ticket, its elders' aggregate signature, the lead elder's own
/// signature (whose hash is the churn event), and the old key's handing of its age to the new.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Relocation {
    /// The ticket the elders signed.
    pub ticket: Ticket,
    /// The elders that signed, the lead (closest to the old position) first.
    pub signers: Vec<Binding>,
    /// Their aggregate signature of the ticket.
    #[serde(with = "serde_bytes")]
    pub aggregate: Vec<u8>,
    /// The lead's own signature of the ticket.
    #[serde(with = "serde_bytes")]
    pub lead: Vec<u8>,
    /// The old peer's public key (protobuf encoding), whose hash is `ticket.peer`.
    #[serde(with = "serde_bytes")]
    pub old_key: Vec<u8>,
    /// The old key's signature of (ticket, new peer).
    #[serde(with = "serde_bytes")]
    pub handoff: Vec<u8>,
}

/// A signed statement that `peer` has age `age`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgeProof {
    /// The vault.
    pub peer: PeerId,
    /// Its age.
    pub age: u8,
    /// How the age was granted.
    pub grant: Grant,
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
    /// A signature is malformed or does not verify.
    #[error("the age proof of {0} is not signed by its issuer")]
    BadSignature(PeerId),
    /// The relocation does not follow the rules (age, signers, event, range, handoff).
    #[error("the relocation of {peer} is not valid: {reason}")]
    BadRelocation {
        /// The relocated vault.
        peer: PeerId,
        /// What is wrong.
        reason: String,
    },
}

fn message(peer: &PeerId, age: u8) -> Vec<u8> {
    let mut m = AGE_DOMAIN.to_vec();
    m.extend_from_slice(&postcard::to_stdvec(&(peer, age, 0u8)).unwrap_or_default());
    m
}

/// A peer's position in Kademlia's key space: the SHA-256 of its id (libp2p-kad's key).
pub fn position(peer: &PeerId) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(peer.to_bytes()).into()
}

/// The XOR of two positions, compared as big-endian numbers.
pub fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// An estimate of how many vaults the network holds, from the distances (in key space) of a
/// vault's `k` closest peers: `k` peers within a fraction `f` of the space means about `k / f`.
pub fn estimate_vaults(me: &PeerId, near: &[PeerId]) -> usize {
    let mine = position(me);
    let mut d: Vec<[u8; 32]> = near.iter().filter(|p| *p != me).map(|p| xor(&mine, &position(p))).collect();
    d.sort_unstable();
    let k = d.len().min(8);
    if k == 0 {
        return 1;
    }
    let top = u64::from_be_bytes(d[k - 1][..8].try_into().unwrap_or([0xff; 8])).max(1);
    let fraction = top as f64 / u64::MAX as f64;
    ((k as f64 / fraction) as usize).max(k + 1)
}

/// What a proof asks of the one who checks it: signatures to verify, and the peers that
/// must be elders (at least a quorum of the committee size the checker knows).
#[derive(Debug)]
pub struct Pending {
    /// The signatures.
    pub checks: Vec<SigCheck>,
    /// The signers who must be elders.
    pub voters: Vec<PeerId>,
}

/// A ticket's signers: one to [`VOTERS`], distinct, and not the vault itself.
fn signers_shape(signers: &[Binding], vault: &PeerId) -> Result<(), String> {
    let n = signers.len();
    let peers: std::collections::HashSet<PeerId> = signers.iter().map(|b| b.peer).collect();
    match n == 0 || n > VOTERS || peers.len() != n || peers.contains(vault) {
        true => Err(format!("{n} signers, {} distinct", peers.len())),
        false => Ok(()),
    }
}

impl AgeProof {
    /// The genesis key's grant of `age` to `peer`.
    pub fn genesis(key: &WalletKey, peer: PeerId, age: u8) -> AgeProof {
        let signature = key.sign_tagged(&message(&peer, age));
        AgeProof { peer, age, grant: Grant::Genesis { signature } }
    }

    /// The proof of `new`'s age after the relocation that `shares` (elders' signatures of
    /// `ticket`, any order) decided, handed over by the old identity `old`.
    pub fn relocated(ticket: Ticket, mut shares: Vec<(Binding, Vec<u8>)>, old: &libp2p_identity::Keypair, new: PeerId) -> Result<AgeProof, AgeError> {
        let bad = |reason: &str| AgeError::BadRelocation { peer: new, reason: reason.into() };
        let from = position(&ticket.peer);
        shares.sort_by_key(|(b, _)| xor(&from, &position(&b.peer)));
        shares.truncate(VOTERS);
        let lead = shares.first().map(|(_, s)| s.clone()).ok_or_else(|| bad("no signers"))?;
        let sigs: Vec<Vec<u8>> = shares.iter().map(|(_, s)| s.clone()).collect();
        let aggregate = crate::ledger::aggregate_signatures(&sigs).map_err(|e| bad(&e.to_string()))?;
        let handoff = old.sign(&ticket.handoff(&new)).map_err(|e| bad(&e.to_string()))?;
        let age = ticket.age.saturating_add(1);
        let relocation = Relocation {
            ticket,
            signers: shares.into_iter().map(|(b, _)| b).collect(),
            aggregate,
            lead,
            old_key: old.public().encode_protobuf(),
            handoff,
        };
        Ok(AgeProof { peer: new, age, grant: Grant::Relocated(Box::new(relocation)) })
    }

    /// A fresh proof of `ticket`'s age, from the elders' signatures of it (`shares`).
    pub fn attested(ticket: Ticket, mut shares: Vec<(Binding, Vec<u8>)>) -> Result<AgeProof, AgeError> {
        let bad = |reason: String| AgeError::BadRelocation { peer: ticket.peer, reason };
        shares.truncate(VOTERS);
        let sigs: Vec<Vec<u8>> = shares.iter().map(|(_, s)| s.clone()).collect();
        let aggregate = crate::ledger::aggregate_signatures(&sigs).map_err(|e| bad(e.to_string()))?;
        let (peer, age) = (ticket.peer, ticket.age);
        let attestation = Attestation { ticket, signers: shares.into_iter().map(|(b, _)| b).collect(), aggregate };
        Ok(AgeProof { peer, age, grant: Grant::Attested(Box::new(attestation)) })
    }

    /// Everything this proof proves on its own (as shown by `shown_by`, on a network whose
    /// genesis key is `genesis`), and what is left to check: its signatures, and for a
    /// relocation that its signers were elders.
    pub fn prepare(&self, shown_by: &PeerId, genesis: Option<&[u8]>, cache: &mut BindingCache) -> Result<Pending, AgeError> {
        if self.peer != *shown_by {
            return Err(AgeError::OtherPeer { proof: self.peer, peer: *shown_by });
        }
        let Some(genesis) = genesis else { return Err(AgeError::NoGenesis) };
        match &self.grant {
            Grant::Genesis { signature } => {
                let check = SigCheck::new(genesis, message(&self.peer, self.age), signature).map_err(|_| AgeError::BadSignature(self.peer))?;
                Ok(Pending { checks: vec![check], voters: Vec::new() })
            }
            Grant::Relocated(r) => {
                let bad = |reason: String| AgeError::BadRelocation { peer: self.peer, reason };
                let t = &r.ticket;
                if self.age != t.age.saturating_add(1) || self.age == t.age {
                    return Err(bad(format!("age {} after a ticket of age {}", self.age, t.age)));
                }
                let old = libp2p_identity::PublicKey::try_decode_protobuf(&r.old_key).map_err(|e| bad(e.to_string()))?;
                if old.to_peer_id() != t.peer || !old.verify(&t.handoff(&self.peer), &r.handoff) {
                    return Err(bad("the old key did not hand its age to this peer".into()));
                }
                signers_shape(&r.signers, &t.peer).map_err(bad)?;
                let from = position(&t.peer);
                let lead_distance = xor(&from, &position(&r.signers[0].peer));
                if r.signers.iter().any(|b| xor(&from, &position(&b.peer)) < lead_distance) {
                    return Err(bad("the lead is not the signer closest to the old position".into()));
                }
                let event = Ticket::event(&r.lead);
                if !relocates(&event, t.age) {
                    return Err(bad("the ticket's event does not relocate a vault of that age".into()));
                }
                if !in_range(&position(&self.peer), &destination(&event), t.bits) {
                    return Err(bad(format!("the new position is not within {} bits of the destination", t.bits)));
                }
                let aggregate = crate::ledger::aggregate_check(&r.signers, t.message(), &r.aggregate, cache).map_err(|e| bad(e.to_string()))?;
                let lead = SigCheck::new(&r.signers[0].bls, t.message(), &r.lead).map_err(|e| bad(e.to_string()))?;
                Ok(Pending { checks: vec![aggregate, lead], voters: r.signers.iter().map(|b| b.peer).collect() })
            }
            Grant::Attested(a) => {
                let bad = |reason: String| AgeError::BadRelocation { peer: self.peer, reason };
                let t = &a.ticket;
                if t.peer != self.peer || t.age != self.age {
                    return Err(bad(format!("a ticket of {} at age {} attests {} at {}", t.peer, t.age, self.peer, self.age)));
                }
                signers_shape(&a.signers, &t.peer).map_err(bad)?;
                let aggregate = crate::ledger::aggregate_check(&a.signers, t.message(), &a.aggregate, cache).map_err(|e| bad(e.to_string()))?;
                Ok(Pending { checks: vec![aggregate], voters: a.signers.iter().map(|b| b.peer).collect() })
            }
        }
    }

    /// Verifies a genesis grant as shown by `shown_by` (one pairing). A relocation needs its
    /// signers' ages too: see [`AgeProof::prepare`].
    pub fn verify(&self, shown_by: &PeerId, genesis: Option<&[u8]>) -> Result<u8, AgeError> {
        let pending = self.prepare(shown_by, genesis, &mut BindingCache::default())?;
        if !pending.voters.is_empty() {
            return Err(AgeError::BadRelocation { peer: self.peer, reason: "its signers' ages are not known here".into() });
        }
        match pending.checks.iter().all(SigCheck::holds) {
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
        let garbage = AgeProof { grant: Grant::Genesis { signature: vec![7; 5] }, ..proof };
        assert_eq!(garbage.verify(&peer, Some(&pk)), Err(AgeError::BadSignature(peer)));
        assert!(!AgeProof::genesis(&genesis, peer, ELDER_AGE - 1).elder());
    }

    /// Elders with bound keys, and a ticket of `old` at `age` that their signatures relocate.
    fn relocating(old: &libp2p_identity::Keypair, age: u8) -> (Ticket, Vec<(Binding, Vec<u8>)>) {
        let elders: Vec<(WalletKey, Binding)> = (0..6)
            .map(|_| {
                let k = WalletKey::random();
                let b = k.bind(&libp2p_identity::Keypair::generate_ed25519());
                (k, b)
            })
            .collect();
        for epoch in 0.. {
            let ticket = Ticket { peer: old.public().to_peer_id(), age, epoch, bits: 4 };
            let mut shares: Vec<(Binding, Vec<u8>)> = elders.iter().map(|(k, b)| (b.clone(), ticket.sign(k))).collect();
            let from = position(&ticket.peer);
            shares.sort_by_key(|(b, _)| xor(&from, &position(&b.peer)));
            if relocates(&Ticket::event(&shares[0].1), age) {
                return (ticket, shares);
            }
        }
        unreachable!()
    }

    /// A new key in the destination's range of `ticket`'s event.
    fn landing(ticket: &Ticket, lead: &[u8]) -> libp2p_identity::Keypair {
        let dest = destination(&Ticket::event(lead));
        loop {
            let k = libp2p_identity::Keypair::generate_ed25519();
            if in_range(&position(&k.public().to_peer_id()), &dest, ticket.bits) {
                return k;
            }
        }
    }

    #[test]
    fn a_relocation_proves_one_more_year_only_for_the_key_made_where_the_elders_sent_it() {
        let genesis = WalletKey::random();
        let pk = genesis.public_key();
        let old = libp2p_identity::Keypair::generate_ed25519();
        let (ticket, shares) = relocating(&old, 2);
        let mut sorted = shares.clone();
        let from = position(&ticket.peer);
        sorted.sort_by_key(|(b, _)| xor(&from, &position(&b.peer)));
        let new = landing(&ticket, &sorted[0].1);
        let new_id = new.public().to_peer_id();
        // Shares in any order: the lead is found.
        let mut shuffled = shares.clone();
        shuffled.reverse();
        let proof = AgeProof::relocated(ticket.clone(), shuffled, &old, new_id).unwrap();
        assert_eq!(proof.age, 3);
        let mut cache = BindingCache::default();
        let pending = proof.prepare(&new_id, Some(&pk), &mut cache).unwrap();
        assert!(pending.checks.iter().all(SigCheck::holds));
        assert_eq!(pending.voters.len(), 6);
        assert!(matches!(proof.verify(&new_id, Some(&pk)), Err(AgeError::BadRelocation { .. })), "its signers' ages are needed");
        let refused = |p: &AgeProof, by: &PeerId| p.prepare(by, Some(&pk), &mut BindingCache::default()).map(|_| ()).unwrap_err();
        // A key made anywhere else.
        let elsewhere = loop {
            let k = libp2p_identity::Keypair::generate_ed25519();
            let dest = destination(&Ticket::event(&sorted[0].1));
            if !in_range(&position(&k.public().to_peer_id()), &dest, ticket.bits) {
                break k.public().to_peer_id();
            }
        };
        let stolen = AgeProof::relocated(ticket.clone(), shares.clone(), &old, elsewhere).unwrap();
        assert!(matches!(refused(&stolen, &elsewhere), AgeError::BadRelocation { .. }));
        // Older than one relocation makes.
        let older = AgeProof { age: 5, ..proof.clone() };
        assert!(matches!(refused(&older, &new_id), AgeError::BadRelocation { .. }));
        // Someone else's key handing over the old vault's age.
        let thief = libp2p_identity::Keypair::generate_ed25519();
        let forged = AgeProof::relocated(ticket.clone(), shares.clone(), &thief, new_id).unwrap();
        assert!(matches!(refused(&forged, &new_id), AgeError::BadRelocation { .. }));
        // A signature that is not the lead's.
        let mut swapped = proof.clone();
        if let Grant::Relocated(r) = &mut swapped.grant {
            r.lead = sorted[1].1.clone();
        }
        assert!(refused(&swapped, &new_id).to_string().contains("not valid") || {
            let p = swapped.prepare(&new_id, Some(&pk), &mut BindingCache::default()).unwrap();
            !p.checks.iter().all(SigCheck::holds)
        });
        // A ticket its event does not relocate (a vault of a greater age).
        let mut unmoved = proof.clone();
        if let Grant::Relocated(r) = &mut unmoved.grant {
            r.ticket.age = 200;
        }
        unmoved.age = 201;
        assert!(matches!(refused(&unmoved, &new_id), AgeError::BadRelocation { .. }));
    }

    #[test]
    fn an_attestation_proves_the_age_its_elders_signed_and_no_other() {
        let genesis = WalletKey::random();
        let pk = genesis.public_key();
        let vault = libp2p_identity::Keypair::generate_ed25519();
        let peer = vault.public().to_peer_id();
        let (ticket, shares) = relocating(&vault, 3);
        let proof = AgeProof::attested(ticket, shares).unwrap();
        assert_eq!((proof.peer, proof.age), (peer, 3));
        let pending = proof.prepare(&peer, Some(&pk), &mut BindingCache::default()).unwrap();
        assert!(pending.checks.iter().all(SigCheck::holds));
        assert_eq!(pending.voters.len(), 6);
        let older = AgeProof { age: 4, ..proof.clone() };
        assert!(older.prepare(&peer, Some(&pk), &mut BindingCache::default()).is_err());
        let other = PeerId::random();
        let renamed = AgeProof { peer: other, ..proof };
        assert!(renamed.prepare(&other, Some(&pk), &mut BindingCache::default()).is_err());
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
