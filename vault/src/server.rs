//! The vault's request loop: takes requests from the node and answers them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_node::audit::{self, Challenge};
use kura_node::wire::{self, RemoteError, Request, Response, VaultStatus, MAX_FRAME_LEN};
use kura_node::{Address, InboundRequest, NodeError, NodeHandle, PeerId, RecordKey, RecordKind, Shard};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::config::{Storage, VaultConfig};
use crate::error::VaultError;
use crate::info::VaultInfo;
use crate::recent::Recent;
use crate::audit::AuditStats;
use crate::repair::{RateLimit, RepairStats};
use crate::store::{DiskStore, MemoryStore, RecordStore, StoreError};

/// How far past the close group a vault still accepts shards: a vault that refuses (full)
/// pushes its shard to the next-closest vault, so holders may sit a little beyond `n`.
pub const PLACEMENT_WINDOW: usize = 20;

/// How long another vault has to answer a repair or audit request.
const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running vault.
#[derive(Clone)]
pub struct Vault {
    node: NodeHandle,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("peer", &self.node.peer_id()).finish()
    }
}

struct Shared {
    config: VaultConfig,
    started: Instant,
    store: Arc<dyn RecordStore>,
    disk: Option<Arc<DiskStore>>,
    refused_full: AtomicU64,
    corrupt_records: AtomicU64,
    repair: RepairStats,
    repair_rate: RateLimit,
    /// Rebuilds running at once (each holds a chunk's shards in memory).
    rebuilds: Semaphore,
    audit: AuditStats,
    /// Chunks with a shard being stored right now (see [`Vault::put_shard`]).
    storing: std::sync::Mutex<std::collections::HashSet<Address>>,
    /// Shards handed on lately: an audit of one is answered "released", not "not held".
    released: Recent<RecordKey>,
    /// Vaults that refused a shard lately for want of room (see [`Vault::full_lately`]).
    full: Recent<PeerId>,
}

/// How long a vault remembers handing a shard on: longer than an auditor takes between asking
/// what a vault holds and challenging it.
const RELEASE_MEMORY: Duration = Duration::from_secs(600);
/// How long a vault that refused a shard for want of room is not offered another.
const FULL_MEMORY: Duration = Duration::from_secs(60);
/// The most events of one kind remembered, bounding the memory they take.
const MEMORY_LEN: usize = 1 << 16;

/// Holds a chunk's place in [`Shared::storing`] until dropped.
struct Storing<'a>(&'a Shared, Address);

impl Drop for Storing<'_> {
    fn drop(&mut self) {
        self.0.storing.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

impl Vault {
    /// Starts a vault: loads or creates its identity under `config.root`, opens its record
    /// store, joins the network and serves requests on the current tokio runtime until
    /// [`Vault::shutdown`].
    pub async fn start(config: VaultConfig) -> Result<Vault, VaultError> {
        std::fs::create_dir_all(&config.root).map_err(|source| VaultError::Io {
            path: config.root.clone(),
            source,
        })?;
        let keypair = kura_node::identity::load_or_create(&config.root)?;
        let (store, disk): (Arc<dyn RecordStore>, _) = match config.storage {
            Storage::Disk => {
                let root = config.root.clone();
                let capacity = config.capacity;
                let disk = tokio::task::spawn_blocking(move || DiskStore::open(&root, capacity))
                    .await
                    .map_err(|e| VaultError::Config(format!("opening store: {e}")))??;
                let disk = Arc::new(disk);
                (disk.clone(), Some(disk))
            }
            Storage::Memory => (Arc::new(MemoryStore::new(config.capacity)), None),
        };
        let node_config = kura_node::NodeConfig::vault(keypair)
            .with_listen(config.listen.clone())
            .with_bootstrap(config.bootstrap.clone());
        let (node, inbound) = kura_node::spawn(node_config).await?;
        let listen = node.listen_addrs().await?;
        let usage = store.usage();
        info!(peer = %node.peer_id(), ?listen, records = usage.records, bytes = usage.bytes, "vault started");
        VaultInfo {
            peer_id: node.peer_id().to_string(),
            listen_addrs: listen.iter().map(|a| a.to_string()).collect(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
        .write(&config.root)?;
        let repair_rate = RateLimit::new(config.repair_rate);
        let vault = Vault {
            node,
            shared: Arc::new(Shared {
                config,
                started: Instant::now(),
                store,
                disk,
                refused_full: AtomicU64::new(0),
                corrupt_records: AtomicU64::new(0),
                repair: RepairStats::default(),
                repair_rate,
                rebuilds: Semaphore::new(crate::repair::CONCURRENT_REBUILDS),
                audit: AuditStats::default(),
                storing: Default::default(),
                released: Recent::new(RELEASE_MEMORY, MEMORY_LEN),
                full: Recent::new(FULL_MEMORY, MEMORY_LEN),
            }),
        };
        tokio::spawn(vault.clone().serve(inbound));
        if let Some(sweep) = vault.shared.config.repair_sweep {
            tokio::spawn(vault.clone().repair_worker(sweep));
        }
        if let Some(every) = vault.shared.config.audit_interval {
            tokio::spawn(vault.clone().audit_worker(every));
        }
        Ok(vault)
    }

    /// The vault's network handle.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// The vault's record store.
    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.shared.store
    }

    pub(crate) fn repair_stats(&self) -> &RepairStats {
        &self.shared.repair
    }

    /// The chunks this vault holds a shard of.
    pub(crate) fn held_chunks(&self) -> std::collections::BTreeSet<Address> {
        self.shared.store.keys().into_iter().filter(|k| k.kind == RecordKind::Shard).map(|k| k.address).collect()
    }

    /// Sends a maintenance request (repair, audit) to `peer`, giving up after
    /// [`MAINTENANCE_TIMEOUT`].
    pub(crate) async fn ask(&self, peer: PeerId, request: Request) -> Result<Response, NodeError> {
        tokio::time::timeout(MAINTENANCE_TIMEOUT, self.node.request(peer, request))
            .await
            .unwrap_or_else(|_| Err(NodeError::Request { peer, reason: "timed out".into() }))
    }

    pub(crate) fn rebuild_slots(&self) -> &Semaphore {
        &self.shared.rebuilds
    }

    pub(crate) fn repair_rate(&self) -> &RateLimit {
        &self.shared.repair_rate
    }

    pub(crate) fn audit_stats(&self) -> &AuditStats {
        &self.shared.audit
    }

    /// Stops the vault's network node, marks its store cleanly closed and removes its status
    /// file.
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
        if let Some(disk) = &self.shared.disk {
            if let Err(e) = disk.close() {
                warn!(error = %e, "closing the record store");
            }
        }
        VaultInfo::remove(&self.shared.config.root);
    }

    /// Answers inbound requests, at most `max_concurrent_requests` at once, a quarter of them
    /// kept for clients: after a death every vault asks its groups about hundreds of chunks at
    /// once, and clients' requests queued behind that maintenance saw downloads stall.
    async fn serve(self, mut inbound: mpsc::Receiver<InboundRequest>) {
        let max = self.shared.config.max_concurrent_requests.max(2);
        let answering = Arc::new(Semaphore::new(max));
        // Vaults' requests hold one of these before one of `answering`, so they never hold
        // more of `answering` than this.
        let maintenance = Arc::new(Semaphore::new(max - max / 4));
        // Requests taken off the node's queue and waiting here; bounded, so that a flood
        // backs up into the node's queue, which answers "busy" when full.
        let admitted = Arc::new(Semaphore::new(4 * max));
        while let Some(req) = inbound.recv().await {
            let Ok(admit) = admitted.clone().acquire_owned().await else { break };
            let (answering, maintenance) = (answering.clone(), maintenance.clone());
            let vault = self.clone();
            tokio::spawn(async move {
                let _maintenance = match req.from_vault {
                    true => Some(maintenance.acquire_owned().await),
                    false => None,
                };
                let Ok(_answering) = answering.acquire_owned().await else { return };
                let (peer, request, responder) = req.into_parts();
                let response = vault.handle(request).await;
                debug!(%peer, "answered request");
                responder.respond(response);
                drop(admit);
            });
        }
    }

    async fn handle(&self, request: Request) -> Response {
        let result = match request {
            Request::Ping => Ok(Response::Pong),
            Request::Status => self.status().await.map(Response::Status).map_err(internal),
            Request::FindClosest { target, n } => {
                self.node.closest_vaults(target, usize::from(n)).await.map(Response::Closest).map_err(internal)
            }
            Request::PutShard(shard) => self.put_shard(shard).await.map(|()| Response::Stored),
            Request::GetShards { chunk } => self.get_shards(chunk).await.map(Response::Shards),
            Request::ShardIndices { chunk } => Ok(Response::Indices(
                self.shared.store.keys_at(RecordKind::Shard, &chunk).iter().map(|k| k.index).collect(),
            )),
            Request::Audit { chunk, index, challenge } => self.prove(chunk, index, challenge).await.map(Response::Proof),
            other => Err(RemoteError::Invalid(format!("unsupported request {other:?}"))),
        };
        result.unwrap_or_else(Response::Error)
    }

    async fn put_shard(&self, shard: Shard) -> Result<(), RemoteError> {
        shard.verify().map_err(|e| RemoteError::Invalid(e.to_string()))?;
        let chunk = shard.header.chunk;
        let window = PLACEMENT_WINDOW.max(shard.header.n());
        let group = self.node.local_closest(chunk, window).await.map_err(internal)?;
        if !group.contains(&self.node.peer_id()) {
            return Err(RemoteError::NotResponsible(chunk));
        }
        let key = shard.key();
        // Checking what is held and storing must not interleave with another shard of the same
        // chunk (two repairers placing on the same vault at once): the second waits its turn.
        if !self.shared.storing.lock().unwrap_or_else(|e| e.into_inner()).insert(chunk) {
            return Err(RemoteError::Busy);
        }
        let _storing = Storing(&self.shared, chunk);
        // One shard of a chunk per vault, so that losing a vault loses one shard; only a
        // network smaller than the close group needs vaults to hold several.
        let held = self.shared.store.keys_at(RecordKind::Shard, &chunk);
        if held.iter().any(|k| k.index != key.index) && group.len() >= shard.header.n() {
            return Err(RemoteError::Invalid(format!(
                "already holds shard {} of chunk {chunk}",
                held[0].index
            )));
        }
        let bytes = wire::encode(&shard).map_err(|e| RemoteError::Invalid(e.to_string()))?;
        let store = self.shared.store.clone();
        match tokio::task::spawn_blocking(move || store.put(&key, &bytes)).await.map_err(internal)? {
            Ok(()) => {
                // Held again: losing it from now on is a loss, not a hand-on.
                self.shared.released.forget(&key);
                Ok(())
            }
            Err(StoreError::Full { used, capacity, wanted }) => {
                self.shared.refused_full.fetch_add(1, Ordering::Relaxed);
                Err(RemoteError::Full { used, capacity, wanted })
            }
            Err(e) => {
                warn!(%key, error = %e, "storing a shard failed");
                Err(internal(e))
            }
        }
    }

    /// Answers a storage audit of shard `index` of `chunk`: reads it (verifying it, so a
    /// damaged or vanished one is dropped and reported as not held) and proves the slices asked.
    /// A shard handed on since the auditor asked what this vault holds is reported as such.
    async fn prove(&self, chunk: Address, index: u8, challenge: Challenge) -> Result<Vec<u8>, RemoteError> {
        let shards = self.read_shards(chunk).await.map_err(internal)?;
        let Some(shard) = shards.into_iter().find(|s| s.header.index == index) else {
            if self.released(RecordKey::shard(chunk, index)) {
                return Err(RemoteError::Released { chunk, index });
            }
            return Err(RemoteError::NotHeld { chunk, index });
        };
        tokio::task::spawn_blocking(move || audit::prove(&shard.data, &challenge))
            .await
            .map_err(internal)?
            .map_err(|e| RemoteError::Invalid(e.to_string()))
    }

    /// The verified shards of `chunk` held here that fit in one answer.
    async fn get_shards(&self, chunk: Address) -> Result<Vec<Shard>, RemoteError> {
        let mut shards = self.read_shards(chunk).await.map_err(internal)?;
        let mut size = 0usize;
        shards.retain(|s| {
            size += s.data.len() + 1024;
            size <= MAX_FRAME_LEN - 64 * 1024
        });
        Ok(shards)
    }

    /// Every verified shard of `chunk` held here. Corrupt ones are deleted and counted, never
    /// returned.
    pub(crate) async fn read_shards(&self, chunk: Address) -> Result<Vec<Shard>, StoreError> {
        let store = self.shared.store.clone();
        let (shards, corrupt) = tokio::task::spawn_blocking(move || {
            let mut shards = Vec::new();
            let mut corrupt = 0u64;
            for key in store.keys_at(RecordKind::Shard, &chunk) {
                let Some(bytes) = store.get(&key)? else { continue };
                let shard = wire::decode::<Shard>(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.verify().map(|()| s).map_err(|e| e.to_string()))
                    .and_then(|s| if s.key() == key { Ok(s) } else { Err("stored under another key".into()) });
                match shard {
                    Ok(s) => shards.push(s),
                    Err(reason) => {
                        warn!(%key, %reason, "corrupt record dropped");
                        corrupt += 1;
                        store.delete(&key)?;
                    }
                }
            }
            Ok::<_, StoreError>((shards, corrupt))
        })
        .await
        .map_err(|e| StoreError::Index(e.to_string()))??;
        self.shared.corrupt_records.fetch_add(corrupt, Ordering::Relaxed);
        Ok(shards)
    }

    /// Deletes a shard this vault is no longer responsible for (handed over, or held by a
    /// closer vault), remembering that it did.
    pub(crate) async fn release(&self, key: RecordKey) {
        // Noted first: an audit answered while the file goes must not find it merely missing.
        self.shared.released.note(key);
        let store = self.shared.store.clone();
        match tokio::task::spawn_blocking(move || store.delete(&key)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(%key, error = %e, "deleting a released shard failed"),
            Err(e) => warn!(%key, error = %e, "deleting a released shard failed"),
        }
    }

    /// Stores `shard` on `peer` for repair or handover; a peer that refuses it for want of
    /// room is remembered as full.
    pub(crate) async fn place(&self, peer: PeerId, shard: Shard) -> Result<(), NodeError> {
        match self.node.request(peer, Request::PutShard(shard)).await {
            Ok(Response::Stored) => Ok(()),
            Ok(_) => Err(NodeError::UnexpectedResponse { peer, request: "PutShard" }),
            Err(e) => {
                if let NodeError::Remote { error: RemoteError::Full { .. }, .. } = &e {
                    self.shared.full.note(peer);
                }
                Err(e)
            }
        }
    }

    /// Whether `peer` refused a shard for want of room lately: repair counts it as not
    /// answering, so that nothing is offered to it again and again.
    pub(crate) fn full_lately(&self, peer: &PeerId) -> bool {
        self.shared.full.contains(peer)
    }

    /// Whether this vault released `key` lately.
    fn released(&self, key: RecordKey) -> bool {
        self.shared.released.contains(&key)
    }

    /// The vault's current status.
    pub async fn status(&self) -> Result<VaultStatus, VaultError> {
        let routing = self.node.routing_table().await?;
        let usage = self.shared.store.usage();
        Ok(VaultStatus {
            peer_id: self.node.peer_id(),
            listen_addrs: self.node.listen_addrs().await?,
            routing_table_size: routing.len() as u32,
            records_stored: usage.records,
            bytes_used: usage.bytes,
            capacity: usage.capacity,
            uptime_secs: self.shared.started.elapsed().as_secs(),
            malformed_requests: self.node.stats().malformed_requests.load(Ordering::Relaxed),
            refused_full: self.shared.refused_full.load(Ordering::Relaxed),
            corrupt_records: self.shared.corrupt_records.load(Ordering::Relaxed),
            pending_repairs: self.shared.repair.pending.load(Ordering::Relaxed),
            shards_repaired: self.shared.repair.repaired.load(Ordering::Relaxed),
            shards_handed_over: self.shared.repair.handed_over.load(Ordering::Relaxed),
            repair_bytes: self.shared.repair.bytes.load(Ordering::Relaxed),
            audits_passed: self.shared.audit.passed.load(Ordering::Relaxed),
            audit_failures: self.shared.audit.failed.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}

fn internal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use kura_node::erasure::Coding;

    use super::*;

    /// A lone vault keeping records in memory, with repair and audits off.
    async fn lone_vault(dir: &std::path::Path) -> Vault {
        let mut cfg = VaultConfig::local(dir.to_path_buf());
        cfg.storage = Storage::Memory;
        cfg.repair_sweep = None;
        cfg.audit_interval = None;
        Vault::start(cfg).await.unwrap()
    }

    #[tokio::test]
    async fn an_audit_of_a_released_shard_says_so_and_of_a_lost_one_says_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let vault = lone_vault(dir.path()).await;
        let shard = Coding::default().encode(b"some chunk content").unwrap().remove(2);
        let (chunk, len) = (shard.header.chunk, shard.data.len() as u64);
        let challenge = || Challenge::random(len, &mut rand::thread_rng());
        vault.put_shard(shard.clone()).await.unwrap();
        assert!(vault.prove(chunk, 2, challenge()).await.is_ok());
        assert_eq!(vault.prove(chunk, 5, challenge()).await, Err(RemoteError::NotHeld { chunk, index: 5 }));

        vault.release(RecordKey::shard(chunk, 2)).await;
        assert_eq!(vault.prove(chunk, 2, challenge()).await, Err(RemoteError::Released { chunk, index: 2 }));

        // Stored again, it is held again: losing it now would be a loss, not a hand-on.
        vault.put_shard(shard).await.unwrap();
        assert!(vault.prove(chunk, 2, challenge()).await.is_ok());
        vault.shared.store.delete(&RecordKey::shard(chunk, 2)).unwrap();
        assert_eq!(vault.prove(chunk, 2, challenge()).await, Err(RemoteError::NotHeld { chunk, index: 2 }));
        vault.shutdown().await;
    }
}
