//! The vault's own age, and learning the ages of the vaults around it (rules in
//! `kura_types::age`, the registry in `kura_node::elders`).
//!
//! A vault's age proof is kept in [`AGE_FILE`] in its root: a local testnet writes it for the
//! vaults it starts with (the network's genesis makes them its first elders); a vault without
//! one is a newcomer. A proof that names another peer (the identity key was replaced) is not
//! the vault's: it runs as a newcomer and says so. The worker asks the vaults in the routing
//! table for their proofs as they appear, so that the ledger finds the ages it needs already
//! known.
//!
//! Relocation (the rules in `kura_types::age`): once an age epoch (`age_epoch_secs`), a vault
//! asks the elders of its own group to sign a ticket `(peer, age, epoch, bits)`. An elder
//! signs only a vault of its group that it has seen for a whole epoch, at the age it knows.
//! The hash of the lead elder's signature (the one closest to the vault) is the churn event:
//! if it ends in at least `age` zero bits, the vault moves. It makes a new key within `bits`
//! of the event's destination (with the id work), writes the proof of its new age and the new
//! key, and starts again as the new id; the records it held as the old id are handed over as
//! any departed holder's are.
//!
//! Owns: its BLS key's binding for tickets, when it first saw each vault, the relocation
//! signal. Talks to: peers (`Request::Age`, `Request::Ticket`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_node::age::{destination, estimate_vaults, in_range, position, quorum, range_bits, relocates, xor, AgeProof, Grant, Ticket, VOTERS};
use kura_node::ledger::{Binding, ReplicaSignature, WalletKey};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, Keypair, NodeError, PeerId};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::context::{internal, lock, Ctx};
use crate::error::VaultError;

mod promises;
use promises::{Promises, Refused};

/// The file in a vault's root holding its age proof.
pub const AGE_FILE: &str = "age.proof";

const MAGIC: &[u8] = b"KAGE\x01";

/// How often the worker looks for vaults whose age it does not know.
const LEARN_EVERY: Duration = Duration::from_secs(3);

/// The bytes of an age proof file.
pub fn encode(proof: &AgeProof) -> Vec<u8> {
    [MAGIC, &postcard::to_stdvec(proof).unwrap_or_default()].concat()
}

/// Reads `root`'s age proof, if it has one for `me`. A file that does not decode is an
/// error (never silently dropped: it may be the only copy of an age).
pub fn load(root: &Path, me: &PeerId) -> Result<Option<AgeProof>, VaultError> {
    let path = root.join(AGE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(VaultError::Io { path, source }),
    };
    let proof: AgeProof = bytes
        .strip_prefix(MAGIC)
        .and_then(|b| postcard::from_bytes(b).ok())
        .ok_or_else(|| VaultError::Config(format!("{} is not an age proof; move it aside to run as a newcomer", path.display())))?;
    if proof.peer != *me {
        warn!(proof = %proof.peer, me = %me, "the age proof names another peer: running as a newcomer");
        return Ok(None);
    }
    Ok(Some(proof))
}

/// Vaults whose first sighting is remembered (for the tenure a ticket needs).
const SEEN_KEPT: usize = 1 << 16;

/// Departed vaults a routing table may still hold ahead of an elder of a vault's group: an
/// elder this close behind the group still signs its ticket.
const LAGGING: usize = 3;

/// The vault's age subsystem: signs the tickets of the vaults in its group while it is an
/// elder, and once an epoch asks its own group to sign its ticket, moving when the ticket
/// says so.
#[derive(Clone)]
pub(crate) struct Ages {
    ctx: Ctx,
    inner: Arc<Inner>,
}

struct Inner {
    key: WalletKey,
    binding: Binding,
    keypair: Keypair,
    /// When each vault of the routing table was first seen there.
    first_seen: Mutex<HashMap<PeerId, Instant>>,
    /// The one ticket this elder signed for each vault and epoch, kept on disk: a vault that
    /// asked again with another range would get another signature, so another event, and
    /// could pick where it goes from several.
    promises: Promises,
    /// Turned `true` once this vault has relocated: its process starts again as the new id.
    relocated: watch::Sender<bool>,
    stats: AgeStats,
}

/// What the age subsystem has done, for status.
#[derive(Debug, Default)]
pub(crate) struct AgeStats {
    tickets_signed: AtomicU64,
    tickets_refused: AtomicU64,
    epochs_asked: AtomicU64,
    relocations: AtomicU64,
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Ages {
    pub(crate) fn new(ctx: Ctx, key: WalletKey, keypair: Keypair) -> Result<Ages, VaultError> {
        let binding = key.bind(&keypair);
        let secs = ctx.config().age_epoch_secs;
        let promises = Promises::open(&ctx.config().root, (secs > 0).then(|| unix_secs() / secs))?;
        let inner = Inner {
            key,
            binding,
            keypair,
            first_seen: Mutex::new(HashMap::new()),
            promises,
            relocated: watch::channel(false).0,
            stats: AgeStats::default(),
        };
        Ok(Ages { ctx, inner: Arc::new(inner) })
    }

    /// Turns `true` when this vault has relocated and must start again as its new id.
    pub(crate) fn relocated(&self) -> watch::Receiver<bool> {
        self.inner.relocated.subscribe()
    }

    fn epoch(&self) -> Option<u64> {
        let secs = self.ctx.config().age_epoch_secs;
        (secs > 0 && self.ctx.elders().counted()).then(|| unix_secs() / secs)
    }

    /// The elders of `peer`'s group as this vault sees them, nearest its position first.
    async fn group_of(&self, peer: &PeerId) -> Result<Vec<PeerId>, NodeError> {
        let mut view = self.ctx.node().routing_table().await?;
        view.push(self.ctx.me());
        view.retain(|p| p != peer);
        let from = position(peer);
        view.sort_by_key(|p| xor(&from, &position(p)));
        view.truncate(VOTERS * 2);
        Ok(self.ctx.elders_among(view).await)
    }

    /// The range a relocated vault must land in on this network, as this vault estimates
    /// its size.
    async fn bits(&self) -> Result<u32, NodeError> {
        let table = self.ctx.node().routing_table().await?;
        Ok(range_bits(estimate_vaults(&self.ctx.me(), &table)))
    }

    /// Signs `from`'s ticket if this vault is an elder of its group and the ticket says what
    /// this vault knows: its age, this epoch (or the last), a range no wider than the
    /// network's size calls for, and a vault seen here for a whole epoch already.
    pub(crate) async fn sign_ticket(&self, from: PeerId, ticket: Ticket) -> Result<Response, RemoteError> {
        let result = self.check_ticket(from, &ticket).await;
        let counter = match &result {
            Ok(()) => &self.inner.stats.tickets_signed,
            Err(_) => &self.inner.stats.tickets_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result?;
        let signature = ticket.sign(&self.inner.key);
        Ok(Response::Ticket(ReplicaSignature { binding: self.inner.binding.clone(), signature }))
    }

    async fn check_ticket(&self, from: PeerId, ticket: &Ticket) -> Result<(), RemoteError> {
        let me = self.ctx.me();
        let Some(epoch) = self.epoch() else { return Err(RemoteError::Invalid("this vault does not relocate vaults".into())) };
        if !self.ctx.elders().is_elder(&me) {
            return Err(RemoteError::NotResponsible(Address(position(&from))));
        }
        if ticket.peer != from {
            return Err(RemoteError::Invalid("a ticket is asked for by its own vault".into()));
        }
        if ticket.epoch != epoch && ticket.epoch + 1 != epoch {
            return Err(RemoteError::Invalid(format!("epoch {} is not this one ({epoch})", ticket.epoch)));
        }
        let tenure = Duration::from_secs(self.ctx.config().age_epoch_secs);
        let seen = lock(&self.inner.first_seen).get(&from).copied();
        if seen.is_none_or(|at| at.elapsed() < tenure) {
            return Err(RemoteError::Invalid("seen here for less than an epoch".into()));
        }
        self.ctx.elders().learn(self.ctx.node(), &[from]).await;
        let age = self.ctx.elders().age(&from).unwrap_or(0);
        if age != ticket.age {
            return Err(RemoteError::Invalid(format!("age {} is not the age known here ({age})", ticket.age)));
        }
        let wanted = self.bits().await.map_err(internal)?;
        if ticket.bits + 2 < wanted {
            return Err(RemoteError::Invalid(format!("a range of {} bits; this network calls for {wanted}", ticket.bits)));
        }
        let group = self.group_of(&from).await.map_err(internal)?;
        if !group.iter().take(VOTERS + LAGGING).any(|p| *p == me) {
            return Err(RemoteError::NotResponsible(Address(position(&from))));
        }
        let hash = *blake3::hash(&postcard::to_stdvec(ticket).map_err(internal)?).as_bytes();
        match self.inner.promises.promise(from, ticket.epoch, epoch, hash).await {
            Ok(()) => Ok(()),
            Err(Refused::Another) => Err(RemoteError::Invalid("this elder signed another ticket of this vault this epoch".into())),
            Err(Refused::Full) => Err(RemoteError::Invalid("too many tickets this epoch; try the next".into())),
            Err(Refused::Io(e)) => Err(internal(e)),
        }
    }

    /// Notes when the vaults of the routing table were first seen.
    async fn note_table(&self) -> Result<Vec<PeerId>, NodeError> {
        let table = self.ctx.node().routing_table().await?;
        let mut seen = lock(&self.inner.first_seen);
        if seen.len() >= SEEN_KEPT {
            seen.retain(|p, _| table.contains(p));
        }
        let now = Instant::now();
        for p in &table {
            if seen.len() < SEEN_KEPT {
                seen.entry(*p).or_insert(now);
            }
        }
        Ok(table)
    }

    /// Asks this vault's group's elders to sign its ticket for `epoch`; relocates when the
    /// signed ticket says so. Returns whether it relocated.
    async fn ask_ticket(&self, epoch: u64) -> Result<bool, NodeError> {
        let me = self.ctx.me();
        let group: Vec<PeerId> = self.group_of(&me).await?.into_iter().take(VOTERS).collect();
        let needed = quorum(self.ctx.elders().committee_size());
        if group.len() < needed {
            return Ok(false);
        }
        self.inner.stats.epochs_asked.fetch_add(1, Ordering::Relaxed);
        let age = self.ctx.age().map_or(0, |p| p.age);
        let ticket = Ticket { peer: me, age, epoch, bits: self.bits().await? };
        let asks = group.iter().map(|&p| {
            let ticket = ticket.clone();
            async move { (p, self.ctx.ask(p, Request::Ticket(ticket)).await) }
        });
        let mut shares = Vec::new();
        for (peer, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Response::Ticket(s)) if s.binding.peer == peer => shares.push((s.binding, s.signature)),
                Ok(other) => debug!(%peer, answer = ?other, "no ticket"),
                Err(e) => debug!(%peer, error = %e, "no ticket"),
            }
        }
        // Shares are checked before any of them decides where this vault goes.
        let check = ticket.clone();
        let shares = tokio::task::spawn_blocking(move || {
            shares.into_iter().filter(|(b, s)| b.verify().is_ok() && check.holds(b, s)).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| NodeError::Lookup { target: Address(position(&me)), reason: e.to_string() })?;
        if shares.len() < needed {
            debug!(signed = shares.len(), needed, "too few elders signed this epoch's ticket");
            return Ok(false);
        }
        let from = position(&me);
        let lead = shares.iter().min_by_key(|(b, _)| xor(&from, &position(&b.peer))).map(|(_, s)| s.clone()).unwrap_or_default();
        let event = Ticket::event(&lead);
        if !relocates(&event, age) {
            self.renew(ticket, shares).await;
            return Ok(false);
        }
        self.relocate(ticket, shares, event).await?;
        Ok(true)
    }

    /// Takes the elders' signatures of a ticket that did not move this vault as its proof of
    /// age (kept on disk too), so that its proof is signed by elders still there. A grant of
    /// the network's genesis is kept as it is: it never goes stale.
    async fn renew(&self, ticket: Ticket, shares: Vec<(Binding, Vec<u8>)>) {
        let current = self.ctx.age();
        if ticket.age == 0 || matches!(current.as_ref().map(|p| &p.grant), Some(Grant::Genesis { .. })) {
            return;
        }
        let Ok(proof) = AgeProof::attested(ticket, shares) else { return };
        let path = self.ctx.config().root.join(AGE_FILE);
        let bytes = encode(&proof);
        let written = tokio::task::spawn_blocking(move || kura_node::durable::replace(&path, &bytes, kura_node::durable::Access::Private)).await;
        match written {
            Ok(Ok(())) => self.ctx.set_age(proof),
            Ok(Err(e)) => warn!(error = %e, "keeping a renewed age proof failed"),
            Err(e) => warn!(error = %e, "keeping a renewed age proof failed"),
        }
    }

    /// Makes a key in the destination's range (with the id work), writes the proof of the
    /// new age and the new key, and says the vault must start again as the new id.
    async fn relocate(&self, ticket: Ticket, shares: Vec<(Binding, Vec<u8>)>, event: [u8; 32]) -> Result<(), NodeError> {
        let (dest, bits, difficulty) = (destination(&event), ticket.bits, self.ctx.config().id_difficulty);
        let new = tokio::task::spawn_blocking(move || loop {
            let key = kura_node::puzzle::generate(difficulty);
            if in_range(&position(&key.public().to_peer_id()), &dest, bits) {
                return key;
            }
        })
        .await
        .map_err(|e| NodeError::Lookup { target: Address(dest), reason: e.to_string() })?;
        let new_id = new.public().to_peer_id();
        let failed = |reason: String| NodeError::Lookup { target: Address(dest), reason };
        let proof = AgeProof::relocated(ticket, shares, &self.inner.keypair, new_id).map_err(|e| failed(e.to_string()))?;
        let root = self.ctx.config().root.clone();
        let key_bytes = new.to_protobuf_encoding().map_err(|e| failed(e.to_string()))?;
        let age = proof.age;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // The proof first: a crash before the key is written leaves the old key and a
            // proof naming another peer, which runs as a newcomer (never as a false elder).
            kura_node::durable::replace(&root.join(AGE_FILE), &encode(&proof), kura_node::durable::Access::Private)?;
            kura_node::durable::replace(&root.join(kura_node::identity::KEY_FILE), &kura_node::durable::encode_key(&key_bytes), kura_node::durable::Access::Private)
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("writing the relocated identity: {e}")))?;
        self.inner.stats.relocations.fetch_add(1, Ordering::Relaxed);
        info!(new = %new_id, age, "relocated: starting again as the new id");
        let _ = self.inner.relocated.send(true);
        Ok(())
    }
}

/// Learns the ages of the vaults in the routing table, and once an epoch asks this vault's
/// group for its ticket.
pub(crate) struct AgeWorker {
    ages: Ages,
    asked: Option<u64>,
}

impl AgeWorker {
    pub(crate) fn new(ages: Ages) -> AgeWorker {
        AgeWorker { ages, asked: None }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for AgeWorker {
    fn name(&self) -> &'static str {
        "age"
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let ctx = &self.ages.ctx;
        let (known, elders) = ctx.elders().counts();
        let s = &self.ages.inner.stats;
        vec![
            ("age".into(), ctx.age().map_or(0, |p| u64::from(p.age))),
            ("known".into(), known as u64),
            ("elders".into(), elders as u64),
            ("tickets_signed".into(), s.tickets_signed.load(Ordering::Relaxed)),
            ("tickets_refused".into(), s.tickets_refused.load(Ordering::Relaxed)),
            ("epochs_asked".into(), s.epochs_asked.load(Ordering::Relaxed)),
            ("relocations".into(), s.relocations.load(Ordering::Relaxed)),
        ]
    }

    async fn work(&mut self) -> Result<crate::worker::WorkState, NodeError> {
        self.ages.note_table().await?;
        self.ages.ctx.elders().count_live(self.ages.ctx.node()).await;
        if let Some(epoch) = self.ages.epoch() {
            if self.asked.is_none_or(|e| e < epoch) && !*self.ages.inner.relocated.borrow() {
                self.asked = Some(epoch);
                if self.ages.ask_ticket(epoch).await? {
                    return Ok(crate::worker::WorkState::Done);
                }
            }
        }
        Ok(crate::worker::WorkState::Idle)
    }

    async fn wait_for_work(&mut self) {
        // A short epoch (a test's) is looked at each second; otherwise every few seconds.
        let epoch = self.ages.ctx.config().age_epoch_secs;
        let every = match epoch {
            0 => LEARN_EVERY,
            e => LEARN_EVERY.min(Duration::from_secs(e / 2).max(Duration::from_secs(1))),
        };
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_node::ledger::WalletKey;

    #[test]
    fn a_proof_file_loads_for_its_peer_only_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let me = PeerId::random();
        assert_eq!(load(dir.path(), &me).unwrap(), None, "a newcomer");
        let proof = AgeProof::genesis(&WalletKey::random(), me, kura_node::age::ELDER_AGE);
        std::fs::write(dir.path().join(AGE_FILE), encode(&proof)).unwrap();
        assert_eq!(load(dir.path(), &me).unwrap(), Some(proof));
        assert_eq!(load(dir.path(), &PeerId::random()).unwrap(), None, "another peer's proof");
        std::fs::write(dir.path().join(AGE_FILE), b"KAGE\x01garbage").unwrap();
        assert!(load(dir.path(), &me).is_err());
        assert!(dir.path().join(AGE_FILE).exists(), "kept");
    }
}
