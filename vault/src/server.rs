//! The vault's request loop: takes requests from the node and answers them.

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
    /// The tasks of the request loop and the workers, stopped at shutdown.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// More store writes than can ever be in flight at once.
const MAX_WRITES: u32 = 1 << 20;
/// How long shutdown waits for writes in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
            }),
        };
        let mut tasks = vec![tokio::spawn(vault.clone().serve(inbound))];
        let workers = &vault.shared.workers;
        if let Some(sweep) = vault.shared.config.repair_sweep() {
            tasks.push(workers.spawn(crate::repair::RepairWorker::new(vault.clone(), sweep)));
        }
        if let Some(every) = vault.shared.config.audit_interval() {
            tasks.push(workers.spawn(crate::audit::AuditWorker::new(vault.clone(), every)));
        }
        let purge = Duration::from_secs(vault.shared.config.message_purge_secs.max(1));
        tasks.push(workers.spawn(crate::inbox::InboxWorker::new(vault.clone(), purge)));
        tasks.push(workers.spawn(crate::ledger::LedgerWorker::new(vault.clone())));
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
        let tasks = std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
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
                let req_from_vault = req.from_vault;
                let (peer, request, responder) = req.into_parts();
                let response = vault.handle(request, peer, req_from_vault).await;
                debug!(%peer, "answered request");
                responder.respond(response);
                drop(admit);
            });
        }
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

    /// Validates a record off the async threads (hashing a shard is ~1 ms per MiB).
    async fn validated(record: Record) -> Result<(Record, RecordKey), RemoteError> {
        tokio::task::spawn_blocking(move || record.validate().map(|()| (record.key(), record)))
            .await
            .map_err(internal)?
            .map(|(key, record)| (record, key))
            .map_err(|e| RemoteError::Invalid(e.to_string()))
    }

    /// The vaults responsible for `address`, closest first (its `n` closest, and the placement
    /// window past them), or an error when this vault is not among them.
    pub(crate) async fn responsible(&self, address: Address, n: usize) -> Result<Vec<PeerId>, RemoteError> {
        let window = self.shared.config.placement_window.max(n);
        let vaults = self.node.local_closest(address, window).await.map_err(internal)?;
        if !vaults.contains(&self.node.peer_id()) {
            return Err(RemoteError::NotResponsible(address));
        }
        Ok(vaults)
    }

    /// Holds `address` against other writes here until the guard drops, or answers busy.
    fn lock_address(&self, address: Address) -> Result<Storing<'_>, RemoteError> {
        if !self.shared.storing.lock().unwrap_or_else(|e| e.into_inner()).insert(address) {
            return Err(RemoteError::Busy);
        }
        Ok(Storing(&self.shared, address))
    }

    pub(crate) async fn put_shard(&self, shard: Shard) -> Result<(), RemoteError> {
        let (record, key) = Self::validated(Record::Shard(shard)).await?;
        let chunk = key.address;
        let n = record.strategy().group_size();
        let responsible = self.responsible(chunk, n).await?;
        // Checking what is held and storing must not interleave with another shard of the same
        // chunk (two repairers placing on the same vault at once): the second waits its turn.
        let _storing = self.lock_address(chunk)?;
        let held = self.shared.store.keys_at(RecordKind::Shard, &chunk);
        // A shard's key derives from its checked header and data, so the one already stored
        // under the key (if it still reads) is this very shard: stored records are never
        // replaced, and a resend is simply acknowledged.
        if held.contains(&key) && self.read_record(key).await.map_err(internal)?.is_some() {
            return Ok(());
        }
        // One shard of a chunk per vault, so that losing a vault loses one shard; only a
        // network smaller than the close group needs vaults to hold several.
        let group = responsible[..n.min(responsible.len())].to_vec();
        if let Some(other) = held.iter().find(|k| **k != key) {
            if group.len() >= n {
                return Err(RemoteError::Invalid(format!("already holds {other}")));
            }
        }
        self.write_record(key, &record).await?;
        if self.shared.config.repair {
            let mut noted = self.shared.stored_groups.lock().unwrap_or_else(|e| e.into_inner());
            if noted.len() < MEMORY_LEN {
                noted.push((chunk, group));
            }
        }
        Ok(())
    }

    /// The groups of chunks stored since the last call (see [`Shared::stored_groups`]).
    pub(crate) fn take_stored_groups(&self) -> Vec<(Address, Vec<PeerId>)> {
        std::mem::take(&mut *self.shared.stored_groups.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stores a whole record of a replicated kind, unless a record that supersedes it is held.
    pub(crate) async fn put_record(&self, record: Record) -> Result<(), RemoteError> {
        if record.kind() == RecordKind::Shard {
            return Err(RemoteError::Invalid(format!("{} records are stored with PutShard", record.kind().name())));
        }
        let (record, key) = Self::validated(record).await?;
        if let Record::Message(m) = &record {
            self.admit_message(m, &key)?;
        }
        match &record {
            // An account's entries are held by its committee, nothing wider.
            Record::Transfer(_) => drop(self.committee_member(key.address).await?),
            _ => drop(self.responsible(key.address, record.strategy().group_size()).await?),
        }
        // Versions of one pointer are written one at a time; the messages of an inbox are
        // each a record of their own, so two senders never make each other wait.
        let _storing = match &record {
            Record::Message(m) => Some(self.lock_address(Address(m.id()))?),
            Record::Transfer(_) => None,
            _ => Some(self.lock_address(key.address)?),
        };
        let _turn = match &record {
            Record::Transfer(entry) => {
                // A replay is answered before the certificate is checked: for an old transfer
                // whose signers have gone, checking asks the account's group.
                if self.read_record(key).await.map_err(internal)?.is_some() {
                    return Err(already_applied(&key));
                }
                self.check_entry(entry).await?;
                Some(self.ledger().turn(&key.address).await)
            }
            _ => None,
        };
        if let Some(held) = self.read_record(key).await.map_err(internal)? {
            if key.kind == RecordKind::Transfer {
                // Its key is the transfer's id: this very certificate is applied already.
                return Err(already_applied(&key));
            }
            // A message's key is its id, which covers all but the work: one held under the key
            // is this message (perhaps with another nonce).
            if held == record || key.kind == RecordKind::Message {
                return Ok(());
            }
            if !record.supersedes(&held) {
                let version = match &held {
                    Record::Pointer(p) => p.version,
                    _ => 0,
                };
                return Err(RemoteError::Stale { key, held: version });
            }
        }
        let admission = match &record {
            Record::Transfer(entry) => Some(self.admit_entry(entry).await?),
            _ => None,
        };
        self.write_record(key, &record).await?;
        match &record {
            // Its sender stores it on the whole group; repair spreads it when the group changes.
            Record::Message(m) => self.inbox_ledger().held(key, m.expires),
            // Its payer stores it on the whole group; a replica that missed it catches up.
            Record::Transfer(entry) => self.entry_stored(entry),
            // Spread it: the repair worker brings the rest of the group up to this version.
            _ => {
                let _ = self.shared.updated.try_send(key);
            }
        }
        if let Some(crate::ledger::Admission::Contested(nonce)) = admission {
            // Kept as evidence; the sender learns it was not taken as a transfer.
            return Err(RemoteError::Refused(kura_node::RecordError::Ledger(kura_node::ledger::LedgerError::DoubleSpend(nonce))));
        }
        Ok(())
    }

    /// Writes a checked record in the disk format.
    async fn write_record(&self, key: RecordKey, record: &Record) -> Result<(), RemoteError> {
        let bytes = stored::encode(record);
        let store = self.shared.store.clone();
        let permit = self.write_permit().ok_or(RemoteError::Busy)?;
        let written = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            store.put(&key, &bytes)
        });
        match written.await.map_err(internal)? {
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
                warn!(%key, error = %e, "storing a record failed");
                Err(internal(e))
            }
        }
    }

    /// The record stored under `key`, read and checked against the key; one that does not
    /// read or check out is moved aside and counted, never returned.
    pub(crate) async fn read_record(&self, key: RecordKey) -> Result<Option<Record>, StoreError> {
        let mut records = self.read_records(vec![key]).await?;
        Ok(records.pop())
    }

    /// [`Vault::read_record`] for many keys at once; returns those that check out.
    pub(crate) async fn read_records(&self, keys: Vec<RecordKey>) -> Result<Vec<Record>, StoreError> {
        let store = self.shared.store.clone();
        let (records, corrupt) = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            let mut corrupt = 0u64;
            for key in keys {
                let Some(bytes) = store.get(&key)? else { continue };
                let record = stored::decode(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.validate_for(&key).map(|()| r).map_err(|e| e.to_string()));
                match record {
                    Ok(r) => records.push(r),
                    Err(reason) => {
                        corrupt += 1;
                        store.quarantine(&key, &reason)?;
                    }
                }
            }
            Ok::<_, StoreError>((records, corrupt))
        })
        .await
        .map_err(|e| StoreError::Index(e.to_string()))??;
        self.shared.corrupt_records.fetch_add(corrupt, Ordering::Relaxed);
        Ok(records)
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

    /// Every verified shard of `chunk` held here. Corrupt ones are moved aside and counted,
    /// never returned.
    pub(crate) async fn read_shards(&self, chunk: Address) -> Result<Vec<Shard>, StoreError> {
        let keys = self.shared.store.keys_at(RecordKind::Shard, &chunk);
        let records = self.read_records(keys).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r {
                Record::Shard(s) => Some(s),
                _ => None,
            })
            .collect())
    }

    /// Deletes a shard this vault is no longer responsible for (handed over, or held by a
    /// closer vault), remembering that it did.
    pub(crate) async fn release(&self, key: RecordKey) {
        // Noted first: an audit answered while the file goes must not find it merely missing.
        self.shared.released.note(key);
        self.delete_record(key).await
    }

    /// Deletes a record this vault should no longer keep (an expired or deleted message).
    pub(crate) async fn delete_record(&self, key: RecordKey) {
        self.entry_gone(&key);
        let store = self.shared.store.clone();
        let Some(permit) = self.write_permit() else { return };
        let deleted = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            store.delete(&key)
        });
        match deleted.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(%key, error = %e, "deleting a record failed"),
            Err(e) => warn!(%key, error = %e, "deleting a record failed"),
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
