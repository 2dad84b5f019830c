//! What every subsystem of a vault shares, and nothing more: the network handle, the
//! configuration, the record store, and the vault's lifetime (the stop signal its workers
//! watch, the short tasks it started in the background, the store writes in flight).
//!
//! It is the bottom of the vault's module graph: it uses no subsystem, and every subsystem
//! gets a [`Ctx`] (a cheap clone) instead of the whole vault.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kura_node::age::AgeProof;
use kura_node::elders::Elders;
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, NodeHandle, PeerId, RecordKind};
use tokio::sync::watch;

use crate::config::VaultConfig;
use crate::store::{RecordStore, StoreActor};

/// Vaults looked at around an address to find its closest elders past the newcomers.
pub(crate) const ELDERS_LOOKED_AT: usize = 64;

/// A vault's shared context: cheap to clone, handed to every subsystem.
#[derive(Clone)]
pub(crate) struct Ctx {
    node: NodeHandle,
    core: Arc<Core>,
}

struct Core {
    config: VaultConfig,
    /// The ages this vault has learned (who is an elder).
    elders: Arc<Elders>,
    /// The proof of this vault's own age, none while it is a newcomer (renewed once an epoch
    /// by attestation).
    age: Mutex<Option<AgeProof>>,
    /// The store's actor: reads and writes of record files go through it.
    store: StoreActor,
    /// Tells the workers to stop once their current step is done.
    stop: watch::Sender<bool>,
    /// Short tasks started in the background (an account's comparison with its group, a
    /// balance read), aborted at shutdown: none outlives the vault.
    background: Mutex<tokio::task::JoinSet<()>>,
}

impl Ctx {
    /// The context of a vault with network handle `node`, configuration `config` and store
    /// `store`.
    pub(crate) fn new(node: NodeHandle, config: VaultConfig, store: StoreActor, elders: Arc<Elders>, age: Option<AgeProof>) -> Ctx {
        let core = Core { config, elders, age: Mutex::new(age), store, stop: watch::channel(false).0, background: Default::default() };
        Ctx { node, core: Arc::new(core) }
    }

    /// The ages this vault has learned.
    pub(crate) fn elders(&self) -> &Arc<Elders> {
        &self.core.elders
    }

    /// The proof of this vault's age, if it has one.
    pub(crate) fn age(&self) -> Option<AgeProof> {
        lock(&self.core.age).clone()
    }

    /// Takes up a renewed proof of this vault's age.
    pub(crate) fn set_age(&self, proof: AgeProof) {
        *lock(&self.core.age) = Some(proof);
    }

    /// The elders among `peers` (in order), their ages learned first.
    pub(crate) async fn elders_among(&self, peers: Vec<PeerId>) -> Vec<PeerId> {
        self.core.elders.elders(&self.node, peers).await
    }

    /// The vault's network handle.
    pub(crate) fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// The vault's configuration.
    pub(crate) fn config(&self) -> &VaultConfig {
        &self.core.config
    }

    /// The vault's record store, for index lookups (in memory); reads and writes of record
    /// files go through [`Ctx::actor`].
    pub(crate) fn store(&self) -> &Arc<dyn RecordStore> {
        self.core.store.store()
    }

    /// The store's actor, which reads and writes record files off the async threads.
    pub(crate) fn actor(&self) -> &StoreActor {
        &self.core.store
    }

    /// The vault's own peer id.
    pub(crate) fn me(&self) -> PeerId {
        self.node.peer_id()
    }

    /// Sends a maintenance request (repair, audit, catch-up) to `peer`, giving up after the
    /// configured maintenance timeout.
    pub(crate) async fn ask(&self, peer: PeerId, request: Request) -> Result<Response, NodeError> {
        tokio::time::timeout(self.config().maintenance_timeout(), self.node.request(peer, request))
            .await
            .unwrap_or_else(|_| Err(NodeError::Request { peer, reason: "timed out".into() }))
    }

    /// The addresses this vault holds records at, with the kind held there (a shard of a
    /// chunk, or a replicated record).
    pub(crate) fn held(&self) -> BTreeMap<Address, RecordKind> {
        self.store().keys().into_iter().map(|k| (k.address, k.kind)).collect()
    }

    /// The vaults responsible for `address`, closest first (its `n` closest, and the placement
    /// window past them), or an error when this vault is not among them. An elder among the
    /// `n` closest elders is responsible however many newcomers sit closer (their ids may be
    /// ground there: a record is always also held by elders).
    pub(crate) async fn responsible(&self, address: Address, n: usize) -> Result<Vec<PeerId>, RemoteError> {
        let window = self.config().placement_window.max(n);
        let vaults = self.node.local_closest(address, window).await.map_err(internal)?;
        if vaults.contains(&self.me()) {
            return Ok(vaults);
        }
        if self.core.elders.counted() && self.core.elders.is_elder(&self.me()) {
            let wide = self.node.local_closest(address, ELDERS_LOOKED_AT).await.map_err(internal)?;
            let elders: Vec<PeerId> = self.elders_among(wide).await.into_iter().take(n).collect();
            if elders.contains(&self.me()) {
                return Ok(elders);
            }
        }
        Err(RemoteError::NotResponsible(address))
    }

    /// The vaults that hold a replicated record at `address` when all is well: its `n`
    /// closest of `candidates` (closest first) and its `n` closest elders among them, each
    /// once.
    pub(crate) async fn replica_group(&self, candidates: &[PeerId], n: usize) -> Vec<PeerId> {
        let mut group: Vec<PeerId> = candidates.iter().take(n).copied().collect();
        let elders = self.elders_among(candidates.to_vec()).await;
        group.extend(elders.into_iter().filter(|e| !group.contains(e)).take(n).collect::<Vec<_>>());
        group
    }

    /// Runs `task` in the background until it ends or the vault shuts down.
    pub(crate) fn spawn_background(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if *self.core.stop.borrow() {
            return;
        }
        let mut background = lock(&self.core.background);
        while background.try_join_next().is_some() {}
        background.spawn(task);
    }

    /// The signal a worker watches: it turns `true` when the vault begins to shut down.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.core.stop.subscribe()
    }

    /// Tells the workers to stop once their current step is done; no background task
    /// starts from now on.
    pub(crate) fn stop(&self) {
        let _ = self.core.stop.send(true);
    }

    /// Aborts the background tasks still running.
    pub(crate) fn abort_background(&self) {
        lock(&self.core.background).abort_all();
    }

    /// Refuses every later store read or write and waits (up to `limit`) for those under
    /// way; says whether they finished in time. A job runs on the store's own thread, which
    /// no abort stops: only once the actor has closed may the index be marked clean.
    pub(crate) async fn drain_writes(&self, limit: Duration) -> bool {
        self.core.store.close(limit).await
    }
}

/// An internal error, as a peer is told it.
pub(crate) fn internal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Internal(e.to_string())
}

/// A lock's guard (a poisoned lock still holds usable state: every update here is a whole
/// insert or remove).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
