//! The vault: its shared state, start and shutdown, and the request loop that takes requests
//! from the node and routes them (record storage is `records`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_node::audit::{self, Challenge};
use kura_node::wire::{RemoteError, Request, Response, VaultStatus, MAX_FRAME_LEN};
use kura_node::{stored, Address, InboundRequest, NodeError, NodeHandle, PeerId, Record, RecordKey, RecordKind, Shard};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::config::{Storage, VaultConfig};
use crate::error::VaultError;
use crate::info::VaultInfo;
use crate::recent::Recent;
use crate::audit::AuditStats;
use crate::repair::{RateLimit, RepairStats};
use crate::store::{DiskStore, MemoryStore, RecordStore, StoreError};

mod records;

/// The default placement window ([`VaultConfig::placement_window`]).
pub const PLACEMENT_WINDOW: usize = 20;

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
    /// Losses whose coordinator has not acted yet, since when.
    standby: crate::recent::Losses,
    /// Vaults that left audits unanswered, since when (forgotten when they answer).
    silent: Recent<PeerId>,
    /// Shards handed over or held by others, watched before this vault's copy goes.
    probation: std::sync::Mutex<crate::repair::Probation>,
    /// The close group of each chunk stored here lately, as this vault saw it when storing:
    /// the repair worker's record of the group a later routing change is compared with
    /// (bounded; a chunk that does not fit is noted by the worker's next baseline round).
    stored_groups: std::sync::Mutex<Vec<(Address, Vec<PeerId>)>>,
    /// Replicated records updated here lately, for the repair worker to spread (bounded: when
    /// full, the worker's sweep finds them instead).
    updated: mpsc::Sender<RecordKey>,
    /// The repair worker's end of [`Shared::updated`], taken when it starts.
    updated_rx: std::sync::Mutex<Option<mpsc::Receiver<RecordKey>>>,
    /// One permit per store write or delete in flight, held by the blocking task that does it;
    /// shutdown takes them all, so the index is marked clean only once nothing is writing.
    writes: Arc<Semaphore>,
    /// The background workers' states, for status.
    workers: crate::worker::Workers,
    /// Inbox counters.
    inbox: crate::inbox::InboxStats,
    /// Expiries of the messages held, and deletions remembered.
    inbox_ledger: std::sync::Mutex<crate::inbox::Ledger>,
    /// The vault as a ledger replica.
    ledger: crate::ledger::Ledger,
    /// The tasks of the request loop and the workers, drained at shutdown.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Tells the workers to stop once their current step is done.
    stop: tokio::sync::watch::Sender<bool>,
    /// Short tasks started in the background (an account's comparison with its group, a
    /// balance read), aborted at shutdown: none outlives the vault.
    background: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// More store writes than can ever be in flight at once.
const MAX_WRITES: u32 = 1 << 20;
/// How long shutdown waits for writes in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the workers' steps and the requests under way to finish
/// before it aborts them.
const WORKERS_DRAIN: Duration = Duration::from_secs(5);

/// Updates of replicated records waiting for the repair worker.
const UPDATED_QUEUE: usize = 1024;

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
        let keypair = kura_node::identity::load_or_create_with_work(&config.root, config.id_difficulty)?;
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
        let bls_seed = kura_node::identity::read_or_create_once(&config.root, crate::ledger::BLS_KEY_FILE, || {
            rand::random::<[u8; 32]>().to_vec()
        })
        .map_err(|source| VaultError::Io { path: config.root.join(crate::ledger::BLS_KEY_FILE), source })?;
        let bls_seed: [u8; 32] = bls_seed
            .try_into()
            .map_err(|_| VaultError::Config(format!("{} is not a 32-byte key", crate::ledger::BLS_KEY_FILE)))?;
        let ledger = crate::ledger::Ledger::new(
            kura_node::ledger::WalletKey::from_seed(&bls_seed),
            &keypair,
            config.genesis()?,
            (config.storage == Storage::Disk).then(|| config.root.join("ledger")),
            kura_node::verifier::Verifier::start()
                .map_err(|source| VaultError::Io { path: config.root.clone(), source })?,
        );
        let mut node_config = kura_node::NodeConfig::vault(keypair)
            .with_listen(config.listen.clone())
            .with_bootstrap(config.bootstrap.clone());
        node_config.client_budget = kura_node::budget::Budget {
            requests_per_sec: f64::from(config.client_requests_per_sec.max(1)),
            writes_per_sec: f64::from(config.client_writes_per_sec.max(1)),
            bytes_per_sec: config.client_bytes_per_sec.max(1) as f64,
            ..kura_node::budget::Budget::CLIENT
        };
        node_config.connections_per_ip = (config.connections_per_ip > 0).then_some(config.connections_per_ip);
        node_config.id_difficulty = config.id_difficulty;
        node_config.ids_per_ip_per_bucket = (config.ids_per_ip_per_bucket > 0).then_some(config.ids_per_ip_per_bucket);
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
        let (updated, updated_rx) = mpsc::channel(UPDATED_QUEUE);
        let rebuilds = Semaphore::new(config.rebuild_concurrency.max(1));
        let released = Recent::new(Duration::from_secs(config.release_memory_secs), MEMORY_LEN);
        let full = Recent::new(Duration::from_secs(config.full_memory_secs), MEMORY_LEN);
        let standby = crate::recent::Losses::new(Duration::from_secs(600), MEMORY_LEN);
        // A spell of silence is forgotten a while after it ends, so an old one is not added to a new.
        let probation =
            std::sync::Mutex::new(crate::repair::Probation::new(Duration::from_secs(config.handover_probation_secs), MEMORY_LEN));
        let silent = Recent::new(Duration::from_secs(config.audit_silence_secs.saturating_mul(4).max(60)), MEMORY_LEN);
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
                rebuilds,
                audit: AuditStats::default(),
                storing: Default::default(),
                released,
                full,
                standby,
                silent,
                probation,
                stored_groups: Default::default(),
                updated,
                updated_rx: std::sync::Mutex::new(Some(updated_rx)),
                writes: Arc::new(Semaphore::new(MAX_WRITES as usize)),
                workers: Default::default(),
                inbox: Default::default(),
                inbox_ledger: Default::default(),
                ledger,
                tasks: Default::default(),
                stop: tokio::sync::watch::channel(false).0,
                background: Default::default(),
            }),
        };
        let mut tasks = vec![tokio::spawn(vault.clone().serve(inbound))];
        let workers = &vault.shared.workers;
        if let Some(sweep) = vault.shared.config.repair_sweep() {
            tasks.push(workers.spawn(crate::repair::RepairWorker::new(vault.clone(), sweep), vault.shared.stop.subscribe()));
        }
        if let Some(every) = vault.shared.config.audit_interval() {
            tasks.push(workers.spawn(crate::audit::AuditWorker::new(vault.clone(), every), vault.shared.stop.subscribe()));
        }
        let purge = Duration::from_secs(vault.shared.config.message_purge_secs.max(1));
        tasks.push(workers.spawn(crate::inbox::InboxWorker::new(vault.clone(), purge), vault.shared.stop.subscribe()));
        tasks.push(workers.spawn(crate::ledger::LedgerWorker::new(vault.clone()), vault.shared.stop.subscribe()));
        *vault.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
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

    /// The addresses this vault holds records at, with the kind held there (a shard of a
    /// chunk, or a replicated record).
    pub(crate) fn held(&self) -> std::collections::BTreeMap<Address, RecordKind> {
        self.shared.store.keys().into_iter().map(|k| (k.address, k.kind)).collect()
    }

    /// The repair worker's queue of replicated records updated here (once).
    pub(crate) fn take_updates(&self) -> Option<mpsc::Receiver<RecordKey>> {
        self.shared.updated_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The vault's configuration.
    pub fn config(&self) -> &VaultConfig {
        &self.shared.config
    }

    /// Sends a maintenance request (repair, audit) to `peer`, giving up after the configured
    /// maintenance timeout.
    pub(crate) async fn ask(&self, peer: PeerId, request: Request) -> Result<Response, NodeError> {
        tokio::time::timeout(self.shared.config.maintenance_timeout(), self.node.request(peer, request))
            .await
            .unwrap_or_else(|_| Err(NodeError::Request { peer, reason: "timed out".into() }))
    }

    pub(crate) fn probation(&self) -> std::sync::MutexGuard<'_, crate::repair::Probation> {
        self.shared.probation.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn silent_peers(&self) -> &Recent<PeerId> {
        &self.shared.silent
    }

    pub(crate) fn standby(&self) -> &crate::recent::Losses {
        &self.shared.standby
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

    pub(crate) fn inbox_stats(&self) -> &crate::inbox::InboxStats {
        &self.shared.inbox
    }

    pub(crate) fn ledger(&self) -> &crate::ledger::Ledger {
        &self.shared.ledger
    }

    pub(crate) fn inbox_ledger(&self) -> std::sync::MutexGuard<'_, crate::inbox::Ledger> {
        crate::inbox::lock(&self.shared.inbox_ledger)
    }

    /// A permit to write to the store, or `None` once shutdown has begun.
    fn write_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.shared.writes.clone().try_acquire_owned().ok()
    }

    /// Stops the vault's network node and its workers, waits for store writes in flight,
    /// then marks its store cleanly closed and removes its status file.
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
        // The request loop ends once the node's queue closes; workers finish the step under
        // way. Whatever has not finished by the deadline is aborted.
        let _ = self.shared.stop.send(true);
        let tasks = std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(WORKERS_DRAIN, futures::future::join_all(tasks)).await.is_err() {
            debug!("workers still busy at the shutdown deadline; aborted");
            aborts.iter().for_each(|a| a.abort());
        }
        self.shared.background.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
        // A write's permit lives in its blocking task, which an abort does not stop: holding
        // every permit means every write has finished, and no new one can start.
        match tokio::time::timeout(DRAIN_TIMEOUT, self.shared.writes.acquire_many(MAX_WRITES)).await {
            Ok(Ok(all)) => all.forget(),
            _ => {
                // Leaving the index unclean makes the next start rebuild it from the files.
                warn!("writes still in flight at shutdown; the index will be rebuilt at next start");
                VaultInfo::remove(&self.shared.config.root);
                return;
            }
        }
        self.shared.writes.close();
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
        // Requests being answered: waited for when the node's queue closes, aborted with this
        // loop if shutdown's deadline passes first.
        let mut answering_now = tokio::task::JoinSet::new();
        while let Some(req) = inbound.recv().await {
            while answering_now.try_join_next().is_some() {}
            let Ok(admit) = admitted.clone().acquire_owned().await else { break };
            let (answering, maintenance) = (answering.clone(), maintenance.clone());
            let vault = self.clone();
            answering_now.spawn(async move {
                let _maintenance = match req.from_vault {
                    true => Some(maintenance.acquire_owned().await),
                    false => None,
                };
                let Ok(_answering) = answering.acquire_owned().await else { return };
                let req_from_vault = req.from_vault;
                let (peer, request, responder) = req.into_parts();
                let response = vault.handle(request, peer, req_from_vault).await;
                debug!(%peer, "answered request");
                responder.respond(response);
                drop(admit);
            });
        }
        while answering_now.join_next().await.is_some() {}
    }

    async fn handle(&self, request: Request, peer: PeerId, from_vault: bool) -> Response {
        let result = match request {
            // Clients store through quotes where storage is paid; vaults place shards for
            // repair and handover.
            Request::PutShard(_) if self.shared.config.paid_storage && !from_vault => {
                Err(RemoteError::Refused(kura_node::RecordError::Ledger(kura_node::ledger::LedgerError::Unpaid)))
            }
            Request::Ping => Ok(Response::Pong),
            Request::Status => self.status().await.map(Response::Status).map_err(internal),
            Request::FindClosest { target, n } => {
                self.node.closest_vaults(target, usize::from(n)).await.map(Response::Closest).map_err(internal)
            }
            Request::PutShard(shard) => self.put_shard(shard).await.map(|()| Response::Stored),
            Request::PutRecord(record) => self.put_record(record).await.map(|()| Response::Stored),
            Request::GetRecord(key) => self.read_record(key).await.map(Response::Record).map_err(internal),
            Request::GetShards { chunk } => self.get_shards(chunk).await.map(Response::Shards),
            Request::ShardIndices { chunk } => Ok(Response::Indices(
                self.shared.store.keys_at(RecordKind::Shard, &chunk).iter().filter_map(|k| k.shard_index()).collect(),
            )),
            Request::Audit { chunk, index, challenge } => self.prove(chunk, index, challenge).await.map(Response::Proof),
            Request::Inbox(request) => self.inbox_request(request).await,
            Request::Sign(signed) => self.sign_transfer(signed).await,
            Request::Quote => Ok(self.quote()),
            Request::StoreShard { shard, quote } => self.store_quoted(shard, quote, peer).await,
            Request::Paid { certificate, shards } => self.paid(certificate, shards).await,
            Request::Account(account) => self.account_view(account).await,
            Request::EntryIds { account, after } => Ok(self.entry_ids(account, after)),
            Request::History { account, after } => self.history(account, after).await,
            other => Err(RemoteError::Invalid(format!("unsupported request {other:?}"))),
        };
        result.unwrap_or_else(Response::Error)
    }

    /// Runs `task` in the background until it ends or the vault shuts down.
    pub(crate) fn spawn_background(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if *self.shared.stop.borrow() {
            return;
        }
        let mut background = self.shared.background.lock().unwrap_or_else(|e| e.into_inner());
        while background.try_join_next().is_some() {}
        background.spawn(task);
    }

    /// The vault's current status.
    pub async fn status(&self) -> Result<VaultStatus, VaultError> {
        let routing = self.node.routing_table().await?;
        let usage = self.shared.store.usage();
        let mut by_kind = std::collections::BTreeMap::new();
        for key in self.shared.store.keys() {
            *by_kind.entry(key.kind.name().to_string()).or_insert(0u64) += 1;
        }
        Ok(VaultStatus {
            peer_id: self.node.peer_id(),
            listen_addrs: self.node.listen_addrs().await?,
            routing_table_size: routing.len() as u32,
            records_stored: usage.records,
            records_by_kind: by_kind.into_iter().collect(),
            bytes_used: usage.bytes,
            capacity: usage.capacity,
            uptime_secs: self.shared.started.elapsed().as_secs(),
            malformed_requests: self.node.stats().malformed_requests.load(Ordering::Relaxed),
            rate_limited: self.node.stats().rate_limited.load(Ordering::Relaxed),
            refused_full: self.shared.refused_full.load(Ordering::Relaxed),
            corrupt_records: self.shared.corrupt_records.load(Ordering::Relaxed),
            pending_repairs: self.shared.repair.pending.load(Ordering::Relaxed),
            shards_repaired: self.shared.repair.repaired.load(Ordering::Relaxed),
            shards_handed_over: self.shared.repair.handed_over.load(Ordering::Relaxed),
            repair_bytes: self.shared.repair.bytes.load(Ordering::Relaxed),
            audits_passed: self.shared.audit.passed.load(Ordering::Relaxed),
            audit_failures: self.shared.audit.failed.load(Ordering::Relaxed),
            bad_shards_served: self.shared.repair.bad_shards.load(Ordering::Relaxed),
            account: self.ledger().account(),
            earned: self.ledger().stats.earned.load(Ordering::Relaxed),
            balance: *self.ledger().balance.lock().unwrap_or_else(|e| e.into_inner()),
            transfers_signed: self.ledger().stats.signed.load(Ordering::Relaxed),
            ledger_evidence: self.ledger().evidence.found(),
            workers: self.shared.workers.statuses(),
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
        cfg.repair = false;
        cfg.audit = false;
        Vault::start(cfg).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_waits_for_writes_in_flight_before_marking_the_index_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = VaultConfig::local(dir.path().to_path_buf());
        cfg.repair = false;
        cfg.audit = false;
        let vault = Vault::start(cfg.clone()).await.unwrap();
        // Many writes of 1 MiB shards in flight when shutdown begins.
        let mut writes = Vec::new();
        for i in 0..40u32 {
            let vault = vault.clone();
            writes.push(tokio::spawn(async move {
                let content: Vec<u8> = (0..4 << 20).map(|j| (j as u32 ^ i) as u8).collect();
                let shard = Coding::default().encode(&content).unwrap().remove(0);
                vault.put_shard(shard).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        // And one write that is slow to finish (a slow disk): shutdown must wait for it.
        let slow = vault.write_permit().unwrap();
        let closing = tokio::spawn({
            let vault = vault.clone();
            async move { vault.shutdown().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!closing.is_finished(), "shutdown returned while a write was in flight");
        assert!(vault.write_permit().is_none(), "no new write starts once shutdown has begun");
        drop(slow);
        closing.await.unwrap();
        let record_files = || {
            let mut files = 0;
            for prefix in std::fs::read_dir(dir.path().join("store/shard")).into_iter().flatten().flatten() {
                files += std::fs::read_dir(prefix.path()).unwrap().filter(|f| f.as_ref().is_ok_and(|f| !f.file_name().to_string_lossy().contains(".tmp"))).count();
            }
            files
        };
        // Once shutdown returns, nothing more reaches the disk.
        let at_shutdown = record_files();
        let results: Vec<_> = futures::future::join_all(writes).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let files = record_files();
        assert_eq!(files, at_shutdown, "a write finished after shutdown had marked the index clean");
        let stored = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        eprintln!("{stored} of 40 writes acknowledged around shutdown");
        drop(vault);
        // Reopened: the index was marked clean, and it lists exactly the records on disk.
        let store = DiskStore::open(dir.path(), cfg.capacity).unwrap();
        assert!(store.opened_clean(), "shutdown marked the index clean");
        assert_eq!(store.keys().len(), files, "every record file is in the index, and only those");
        assert_eq!(files, stored, "every acknowledged write is on disk; refused ones left nothing");
    }

    #[tokio::test]
    async fn an_audit_of_a_released_shard_says_so_and_of_a_lost_one_says_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let vault = lone_vault(dir.path()).await;
        let shard = Coding::default().encode(b"some chunk content").unwrap().remove(2);
        let (chunk, len) = (shard.header.address(), shard.data.len() as u64);
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

/// The refusal of a certified transfer this vault holds already (its key is the transfer's id).
fn already_applied(key: &RecordKey) -> RemoteError {
    RemoteError::Refused(kura_node::RecordError::Ledger(kura_node::ledger::LedgerError::AlreadyApplied(hex::encode(&key.id[..8]))))
}
