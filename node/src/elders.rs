//! Which vaults are elders: ages learned from the vaults' own proofs, checked against the
//! network's genesis key (rules in [`kura_types::age`]).
//!
//! A vault or client asks each vault it counts for its [`AgeProof`] once (`Request::Age`),
//! verifies it (one pairing) and remembers the age; a vault that shows none, or cannot be
//! asked, counts as a newcomer for [`YOUNG_FOR`] and is asked again after. What it keeps is
//! one small entry per vault it has counted, at most [`MAX_KNOWN`], so checking who is an
//! elder needs neither the network's whole membership nor any history: an age proof is
//! signed by a key every vault already holds.
//!
//! A network without a genesis key has no elders and no ledger supply: on it every vault
//! counts as it did before ages (see [`Elders::elders`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kura_types::age::{diverse, quorum, AgeError, AgeProof, ELDER_AGE, HOLD_AGE, PER_PREFIX};
use kura_types::ledger::BindingCache;
use kura_types::wire::{Request, Response};
use libp2p::PeerId;
use tracing::debug;

use crate::NodeHandle;

/// How long a vault that showed no age (or did not answer) counts as a newcomer before it
/// is asked again.
pub const YOUNG_FOR: Duration = Duration::from_secs(30);

/// Most vaults whose age is remembered.
pub const MAX_KNOWN: usize = 1 << 16;

/// Relocations deep that a proof's signers are looked up: a signer relocated by signers
/// themselves unknown is asked about too, this far.
const DEPTH: u32 = 3;

/// Age proofs asked for at once.
const ASKS_AT_ONCE: usize = 16;

/// Times a vault is asked for its age before it is left unknown, and the wait between.
const ASK_ATTEMPTS: u32 = 3;
const ASK_BACKOFF: Duration = Duration::from_millis(200);

/// How long one ask for an age is waited for: a peer that never answers costs the asker
/// little.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the elders of the routing table are counted at most.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// How long a vault that did not answer is not asked again.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Known {
    /// A proven age.
    Aged(u8),
    /// No age shown, as of this instant.
    Young(Instant),
    /// Did not answer, as of this instant: unknown, not asked again for [`UNREACHABLE_FOR`].
    Unreachable(Instant),
    /// Failed an audit or signed against the ledger's rules: counted as a newcomer whatever
    /// its proof says, and not asked again.
    Demoted,
}

/// The ages this node has learned.
#[derive(Debug)]
pub struct Elders {
    genesis: Option<Vec<u8>>,
    known: Mutex<HashMap<PeerId, Known>>,
    /// Signers' bindings verified already (each costs a pairing).
    cache: Arc<Mutex<BindingCache>>,
    /// Elders in the routing table (and this node, if one) when last counted; 0 before.
    live: std::sync::atomic::AtomicUsize,
    /// When the elders were last counted.
    counted_at: Mutex<Option<Instant>>,
}

impl Elders {
    /// A registry for a network whose genesis key is `genesis` (none: no ages on it).
    pub fn new(genesis: Option<Vec<u8>>) -> Arc<Elders> {
        Arc::new(Elders { genesis, known: Mutex::new(HashMap::new()), cache: Default::default(), live: Default::default(), counted_at: Default::default() })
    }

    /// The network's genesis key.
    pub fn genesis(&self) -> Option<&[u8]> {
        self.genesis.as_deref()
    }

    /// Whether ages count on this network (it has a genesis key).
    pub fn counted(&self) -> bool {
        self.genesis.is_some()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The proven age of `peer`, if this node knows it (0 for a newcomer it asked lately).
    pub fn age(&self, peer: &PeerId) -> Option<u8> {
        match self.known().get(peer) {
            Some(Known::Aged(a)) => Some(*a),
            Some(Known::Young(at)) if at.elapsed() < YOUNG_FOR => Some(0),
            Some(Known::Demoted) => Some(0),
            _ => None,
        }
    }

    /// Takes `peer`'s age away in this node's eyes: it failed an audit or signed against the
    /// ledger's rules. It votes and holds alone no more here, whatever proof it shows.
    pub fn demote(&self, peer: PeerId) {
        self.remember(peer, Known::Demoted);
    }

    /// Whether `peer` should be asked for its age now: never asked, or its last answer (or
    /// silence) is old.
    fn to_ask(&self, peer: &PeerId) -> bool {
        match self.known().get(peer) {
            Some(Known::Aged(_) | Known::Demoted) => false,
            Some(Known::Young(at)) => at.elapsed() >= YOUNG_FOR,
            Some(Known::Unreachable(at)) => at.elapsed() >= UNREACHABLE_FOR,
            None => true,
        }
    }

    /// Whether `peer` is a proven elder.
    pub fn is_elder(&self, peer: &PeerId) -> bool {
        self.age(peer).is_some_and(|a| a >= ELDER_AGE)
    }

    fn remember(&self, peer: PeerId, known: Known) {
        let mut map = self.known();
        if map.len() >= MAX_KNOWN && !map.contains_key(&peer) {
            // Newcomers first: they are asked again anyway.
            map.retain(|_, k| matches!(k, Known::Aged(_) | Known::Demoted));
            if map.len() >= MAX_KNOWN {
                map.clear();
            }
        }
        map.insert(peer, known);
    }

    /// Checks the proof `shown_by` showed (off the async threads) and remembers the age it
    /// proves; a missing or bad proof counts as a newcomer's. Returns the age. A relocation's
    /// signers must be elders: those whose age is not known are asked, and their proofs
    /// checked the same way, at most [`DEPTH`] relocations deep.
    pub async fn admit(&self, node: &NodeHandle, shown_by: PeerId, proof: Option<AgeProof>) -> u8 {
        self.admit_at(node, shown_by, proof, DEPTH).await
    }

    /// Takes this node's own proof, written by itself: its signatures are checked, its
    /// signers' ages are not (at start the node knows no one yet to ask). Returns the age.
    pub async fn admit_own(&self, me: PeerId, proof: AgeProof) -> Result<u8, AgeError> {
        let (genesis, cache, age) = (self.genesis.clone(), self.cache.clone(), proof.age);
        tokio::task::spawn_blocking(move || {
            let pending = proof.prepare(&me, genesis.as_deref(), &mut cache.lock().unwrap_or_else(|e| e.into_inner()))?;
            match pending.checks.iter().all(|c| c.holds()) {
                true => Ok(()),
                false => Err(AgeError::BadSignature(me)),
            }
        })
        .await
        .map_err(|e| AgeError::BadRelocation { peer: me, reason: e.to_string() })??;
        self.remember(me, Known::Aged(age));
        Ok(age)
    }

    fn admit_at<'a>(
        &'a self,
        node: &'a NodeHandle,
        shown_by: PeerId,
        proof: Option<AgeProof>,
        depth: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = u8> + Send + 'a>> {
        Box::pin(async move {
            if matches!(self.known().get(&shown_by), Some(Known::Demoted)) {
                return 0;
            }
            let age = match proof {
                Some(proof) => match self.check(node, &shown_by, proof, depth).await {
                    Ok(age) => Some(age),
                    Err(e) => {
                        debug!(peer = %shown_by, error = %e, "an age proof refused");
                        None
                    }
                },
                None => None,
            };
            match age {
                Some(a) => self.remember(shown_by, Known::Aged(a)),
                None => self.remember(shown_by, Known::Young(Instant::now())),
            }
            age.unwrap_or(0)
        })
    }

    async fn check(&self, node: &NodeHandle, shown_by: &PeerId, proof: AgeProof, depth: u32) -> Result<u8, AgeError> {
        let (genesis, cache, peer) = (self.genesis.clone(), self.cache.clone(), *shown_by);
        let age = proof.age;
        let voters = tokio::task::spawn_blocking(move || {
            let pending = proof.prepare(&peer, genesis.as_deref(), &mut cache.lock().unwrap_or_else(|e| e.into_inner()))?;
            match pending.checks.iter().all(|c| c.holds()) {
                true => Ok(pending.voters),
                false => Err(AgeError::BadSignature(peer)),
            }
        })
        .await
        .map_err(|e| AgeError::BadRelocation { peer, reason: e.to_string() })??;
        if voters.is_empty() {
            return Ok(age);
        }
        if depth > 0 {
            self.learn_at(node, &voters, depth - 1).await;
        }
        let elders = voters.iter().filter(|p| self.is_elder(p)).count();
        let size = match self.live.load(std::sync::atomic::Ordering::Relaxed) {
            // Not counted yet: the elders of the routing table whose ages are known now (no
            // asking here, which would come back to this check).
            0 => {
                let table = node.routing_table().await.unwrap_or_default();
                crate::committee::committee_size(table.iter().filter(|p| self.is_elder(p)).count())
            }
            _ => self.committee_size(),
        };
        let needed = quorum(size);
        match elders >= needed {
            true => Ok(age),
            false => Err(AgeError::BadRelocation { peer, reason: format!("{elders} of its signers are known elders, {needed} needed") }),
        }
    }

    /// Asks every one of `peers` whose age is not known for its proof (a few at a time).
    pub async fn learn(&self, node: &NodeHandle, peers: &[PeerId]) {
        self.learn_at(node, peers, DEPTH).await
    }

    async fn learn_at(&self, node: &NodeHandle, peers: &[PeerId], depth: u32) {
        if !self.counted() {
            return;
        }
        let me = node.peer_id();
        let unknown: Vec<PeerId> = peers.iter().filter(|p| **p != me && self.to_ask(p)).copied().collect();
        futures::stream::iter(unknown)
            .map(|peer| async move {
                for attempt in 0..ASK_ATTEMPTS {
                    let asked = tokio::time::timeout(ASK_TIMEOUT, node.request(peer, Request::Age)).await;
                    match asked.unwrap_or_else(|_| Err(crate::NodeError::Request { peer, reason: "no age within the time".into() })) {
                        Ok(Response::Age { proof, .. }) => {
                            self.admit_at(node, peer, proof, depth).await;
                            return;
                        }
                        // An answer that is not one: no age shown.
                        Ok(_) => break,
                        // Busy, rate limited, or not reached: asked again, and if it never
                        // answers it is left unknown (not an elder now), not taken for a
                        // newcomer.
                        Err(_) if attempt + 1 < ASK_ATTEMPTS => tokio::time::sleep(ASK_BACKOFF * (attempt + 1)).await,
                        Err(_) => {
                            self.remember(peer, Known::Unreachable(Instant::now()));
                            return;
                        }
                    }
                }
                self.admit_at(node, peer, None, depth).await;
            })
            .buffer_unordered(ASKS_AT_ONCE)
            .collect::<Vec<()>>()
            .await;
    }

    /// The elders among `peers`, in their order, after learning the ages not yet known, past
    /// the [`PER_PREFIX`]-th of one address prefix (see [`kura_types::age::diverse`]). On a
    /// network without a genesis key, every peer.
    pub async fn elders(&self, node: &NodeHandle, peers: Vec<PeerId>) -> Vec<PeerId> {
        if !self.counted() {
            return peers;
        }
        self.learn(node, &peers).await;
        let elders: Vec<PeerId> = peers.into_iter().filter(|p| self.is_elder(p)).collect();
        let ips = node.peer_ips(elders.clone()).await.unwrap_or_default();
        diverse(elders.into_iter().zip(ips.iter().map(Option::as_ref).chain(std::iter::repeat(None))), PER_PREFIX)
    }

    /// Whether `peer` may hold data alone (it has aged to [`HOLD_AGE`], or ages do not count
    /// on this network).
    pub fn has_aged(&self, peer: &PeerId) -> bool {
        !self.counted() || self.age(peer).is_some_and(|a| a >= HOLD_AGE)
    }

    /// Whether `peer` may vote (sign for a committee, vouch for history): it is a proven
    /// elder, or ages do not count on this network.
    pub fn votes(&self, peer: &PeerId) -> bool {
        !self.counted() || self.is_elder(peer)
    }

    /// How many elders a committee has on this network as this node knows it
    /// ([`crate::committee::committee_size`] of the elders in its routing table when last
    /// counted, see [`Elders::count_live`]; [`kura_types::age::VOTERS`] where ages do not
    /// count). Elders that left, or moved to new ids, drop out of the count as they drop out of
    /// the table, so a small network's quorum never outgrows the elders it has.
    pub fn committee_size(&self) -> usize {
        if !self.counted() {
            return kura_types::age::VOTERS;
        }
        // Before the first count, the strictest: a full committee's quorum.
        match self.live.load(std::sync::atomic::Ordering::Relaxed) {
            0 => kura_types::age::VOTERS,
            live => crate::committee::committee_size(live),
        }
    }

    /// Counts the elders in `node`'s routing table (and `node` itself, if a vault and an
    /// elder), learning the ages not yet known; at most once every [`COUNT_EVERY`] (callers on
    /// a payment's path call it each time).
    pub async fn count_live(&self, node: &NodeHandle) {
        {
            let mut last = self.counted_at.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < COUNT_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(mut table) = node.routing_table().await else { return };
        if node.role() == crate::Role::Vault {
            table.push(node.peer_id());
        }
        self.learn(node, &table).await;
        let live = table.iter().filter(|p| self.is_elder(p)).count();
        self.live.store(live, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many vaults this node knows the age of, and how many of them are elders.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.known();
        let elders = map.values().filter(|k| matches!(k, Known::Aged(a) if *a >= ELDER_AGE)).count();
        (map.len(), elders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_types::ledger::WalletKey;

    #[tokio::test]
    async fn proven_ages_are_remembered_and_anything_else_is_a_newcomer() {
        let (node, _inbound) = crate::spawn(crate::NodeConfig::client(crate::Keypair::generate_ed25519())).await.unwrap();
        let node = &node;
        let genesis = WalletKey::random();
        let elders = Elders::new(Some(genesis.public_key()));
        let (old, forged, none) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(elders.admit(node, old, Some(AgeProof::genesis(&genesis, old, ELDER_AGE))).await, ELDER_AGE);
        let stranger = WalletKey::random();
        assert_eq!(elders.admit(node, forged, Some(AgeProof::genesis(&stranger, forged, 40))).await, 0);
        // Another vault's proof, shown as one's own.
        let thief = PeerId::random();
        assert_eq!(elders.admit(node, thief, Some(AgeProof::genesis(&genesis, old, ELDER_AGE))).await, 0);
        assert_eq!(elders.admit(node, none, None).await, 0);
        assert!(elders.is_elder(&old));
        for p in [forged, thief, none] {
            assert_eq!(elders.age(&p), Some(0));
            assert!(!elders.is_elder(&p));
        }
        assert_eq!(elders.age(&PeerId::random()), None, "never asked");
        assert_eq!(elders.counts(), (4, 1));
        // An elder caught misbehaving votes no more here, whatever it shows again.
        elders.demote(old);
        assert!(!elders.is_elder(&old));
        assert_eq!(elders.admit(node, old, Some(AgeProof::genesis(&genesis, old, ELDER_AGE))).await, 0);
        assert!(!elders.is_elder(&old) && !elders.has_aged(&old));
    }
}
