//! The vault: it builds its subsystems, starts their workers, routes each request to the
//! subsystem that answers it, and shuts them down in order.
//!
//! The subsystems form layers, each using only those below it (the README's architecture
//! section draws them; `scripts/module-graph.sh` checks in CI that no module uses one above):
//! [`Ctx`] (the node, the config, the store, the vault's lifetime); [`Records`] (storing and
//! reading, and the [`KindRules`](crate::records::KindRules) table); [`Auditor`]; [`Repair`]
//! (and the audit round); [`Pointers`], [`Inbox`], [`Ledger`] (each a replicated kind's rules);
//! [`Payments`]; and this module, which only builds them and routes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kura_node::wire::{RemoteError, Request, Response, VaultStatus};
use kura_node::{InboundRequest, NodeHandle, PeerId, RecordKind};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::audit::Auditor;
use crate::config::{Storage, VaultConfig};
use crate::context::{internal, lock, Ctx};
use crate::error::VaultError;
use crate::inbox::Inbox;
use crate::info::VaultInfo;
use crate::ledger::Ledger;
use crate::payments::Payments;
use crate::pointer::Pointers;
use crate::records::{KindRules, Records};
use crate::repair::Repair;
use crate::store::{DiskStore, MemoryStore, RecordStore, StoreActor};

/// The default placement window ([`VaultConfig::placement_window`]).
pub const PLACEMENT_WINDOW: usize = 20;

/// A running vault.
#[derive(Clone)]
pub struct Vault {
    ctx: Ctx,
    records: Records,
    auditor: Auditor,
    repair: Repair,
    /// The pointer rules: the records' table holds every kind's rules weakly, the vault owns
    /// them (this field, `inbox` and `ledger`).
    _pointers: Arc<Pointers>,
    inbox: Arc<Inbox>,
    ledger: Arc<Ledger>,
    payments: Payments,
    ages: crate::age::Ages,
    life: Arc<Life>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("peer", &self.ctx.me()).finish()
    }
}

/// What the vault keeps for status and shutdown.
struct Life {
    started: Instant,
    /// The disk store, closed (its index marked clean) at shutdown.
    disk: Option<Arc<DiskStore>>,
    /// The background workers' states, for status.
    workers: crate::worker::Workers,
    /// The tasks of the request loop and the workers, drained at shutdown.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long shutdown waits for writes in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the workers' steps and the requests under way to finish
/// before it aborts them.
const WORKERS_DRAIN: Duration = Duration::from_secs(5);

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
        let verifier = kura_node::verifier::Verifier::start().map_err(|source| VaultError::Io { path: config.root.clone(), source })?;
        let genesis = config.genesis()?;
        let age = crate::age::load(&config.root, &keypair.public().to_peer_id())?;
        let elders = kura_node::elders::Elders::new(config.genesis_public_key()?);
        let mut node_config = kura_node::NodeConfig::vault(keypair.clone())
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
            format: crate::info::INFO_FORMAT,
            peer_id: node.peer_id().to_string(),
            listen_addrs: listen.iter().map(|a| a.to_string()).collect(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
        .write(&config.root)?;
        let ledger_dir = (config.storage == Storage::Disk).then(|| config.root.join("ledger"));
        let store = StoreActor::start(store).map_err(|source| VaultError::Io { path: config.root.clone(), source })?;
        let me = node.peer_id();
        if let Some(proof) = age.clone() {
            if let Err(e) = elders.admit_own(me, proof).await {
                return Err(VaultError::Config(format!(
                    "the age proof in {} does not hold on this network: {e}",
                    config.root.join(crate::age::AGE_FILE).display()
                )));
            }
        }
        let ctx = Ctx::new(node, config, store, elders, age);
        let vault = Vault::assemble(ctx, disk, keypair, kura_node::ledger::WalletKey::from_seed(&bls_seed), genesis, ledger_dir, verifier)?;
        vault.start_workers(inbound);
        Ok(vault)
    }

    /// Builds the subsystems, each on those below it, and registers the replicated kinds'
    /// rules with the records.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        ctx: Ctx,
        disk: Option<Arc<DiskStore>>,
        keypair: kura_node::Keypair,
        bls: kura_node::ledger::WalletKey,
        genesis: Option<(kura_node::Address, u64)>,
        ledger_dir: Option<std::path::PathBuf>,
        verifier: kura_node::verifier::Verifier,
    ) -> Result<Vault, VaultError> {
        let records = Records::new(ctx.clone());
        let auditor = Auditor::new(ctx.clone(), records.clone());
        let repair = Repair::new(ctx.clone(), records.clone(), auditor.clone());
        let pointers = Arc::new(Pointers::new(ctx.clone(), records.clone(), repair.clone()));
        let inbox = Arc::new(Inbox::new(ctx.clone(), records.clone(), repair.clone()));
        let bls_for_tickets = bls.clone();
        let ledger = Arc::new(Ledger::new(ctx.clone(), records.clone(), repair.clone(), bls, &keypair, genesis, ledger_dir, verifier));
        let ages = crate::age::Ages::new(ctx.clone(), bls_for_tickets, keypair.clone())?;
        let payments = Payments::new(ctx.clone(), records.clone(), (*ledger).clone(), keypair);
        let kinds: [(RecordKind, Arc<dyn KindRules>); 3] =
            [(RecordKind::Pointer, pointers.clone()), (RecordKind::Message, inbox.clone()), (RecordKind::Transfer, ledger.clone())];
        for (kind, rules) in &kinds {
            records.register(*kind, Arc::downgrade(rules));
        }
        let life = Life { started: Instant::now(), disk, workers: Default::default(), tasks: Default::default() };
        Ok(Vault { ctx, records, auditor, repair, _pointers: pointers, inbox, ledger, payments, ages, life: Arc::new(life) })
    }

    /// Starts the request loop and the workers the configuration turns on.
    fn start_workers(&self, inbound: mpsc::Receiver<InboundRequest>) {
        let mut tasks = vec![tokio::spawn(self.clone().serve(inbound))];
        let (workers, config) = (&self.life.workers, self.ctx.config());
        if let Some(sweep) = config.repair_sweep() {
            tasks.push(workers.spawn(crate::repair::RepairWorker::new(self.repair.clone(), sweep), self.ctx.stop_signal()));
        }
        if let Some(every) = config.audit_interval() {
            tasks.push(workers.spawn(crate::repair::AuditWorker::new(self.repair.clone(), every), self.ctx.stop_signal()));
        }
        let purge = Duration::from_secs(config.message_purge_secs.max(1));
        tasks.push(workers.spawn(crate::inbox::InboxWorker::new((*self.inbox).clone(), purge), self.ctx.stop_signal()));
        tasks.push(workers.spawn(crate::payments::LedgerWorker::new(self.payments.clone()), self.ctx.stop_signal()));
        tasks.push(workers.spawn(crate::age::AgeWorker::new(self.ages.clone()), self.ctx.stop_signal()));
        *lock(&self.life.tasks) = tasks;
    }

    /// Turns `true` when the vault has been relocated: its identity and age proof on disk are
    /// the new ones, and it must be shut down and started again to take them up.
    pub fn relocated(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ages.relocated()
    }

    /// The vault's network handle.
    pub fn node(&self) -> &NodeHandle {
        self.ctx.node()
    }

    /// The vault's record store.
    pub fn store(&self) -> &Arc<dyn RecordStore> {
        self.ctx.store()
    }

    /// The vault's configuration.
    pub fn config(&self) -> &VaultConfig {
        self.ctx.config()
    }

    /// Stops the vault's network node and its workers, waits for store writes in flight,
    /// then marks its store cleanly closed and removes its status file.
    pub async fn shutdown(&self) {
        self.ctx.node().shutdown().await;
        // The request loop ends once the node's queue closes; workers finish the step under
        // way. Whatever has not finished by the deadline is aborted.
        self.ctx.stop();
        let tasks = std::mem::take(&mut *lock(&self.life.tasks));
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(WORKERS_DRAIN, futures::future::join_all(tasks)).await.is_err() {
            debug!("workers still busy at the shutdown deadline; aborted");
            aborts.iter().for_each(|a| a.abort());
        }
        self.ctx.abort_background();
        if !self.ctx.drain_writes(DRAIN_TIMEOUT).await {
            // Leaving the index unclean makes the next start rebuild it from the files.
            warn!("writes still in flight at shutdown; the index will be rebuilt at next start");
            VaultInfo::remove(&self.ctx.config().root);
            return;
        }
        if let Some(disk) = &self.life.disk {
            if let Err(e) = disk.close() {
                warn!(error = %e, "closing the record store");
            }
        }
        VaultInfo::remove(&self.ctx.config().root);
    }

    /// Answers inbound requests, at most `max_concurrent_requests` at once, a quarter of them
    /// kept for clients: after a death every vault asks its groups about hundreds of chunks at
    /// once, and clients' requests queued behind that maintenance saw downloads stall.
    async fn serve(self, mut inbound: mpsc::Receiver<InboundRequest>) {
        let max = self.ctx.config().max_concurrent_requests.max(2);
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
            Request::PutShard(_) if self.ctx.config().paid_storage && !from_vault => {
                Err(RemoteError::Refused(kura_node::RecordError::Ledger(kura_node::ledger::LedgerError::Unpaid)))
            }
            Request::Ping => Ok(Response::Pong),
            Request::Status => self.status().await.map(Response::Status).map_err(internal),
            Request::FindClosest { target, n } => {
                self.ctx.node().closest_vaults(target, usize::from(n)).await.map(Response::Closest).map_err(internal)
            }
            Request::PutShard(shard) => self.records.put_shard(shard).await.map(|()| Response::Stored),
            Request::PutRecord(record) => self.records.put_record(record).await.map(|()| Response::Stored),
            Request::GetRecord(key) => self.records.read_record(key).await.map(Response::Record).map_err(internal),
            Request::GetShards { chunk } => self.records.get_shards(chunk).await.map(Response::Shards),
            Request::ShardIndices { chunk } => Ok(Response::Indices(
                self.ctx.store().keys_at(RecordKind::Shard, &chunk).iter().filter_map(|k| k.shard_index()).collect(),
            )),
            Request::Audit { chunk, index, challenge } => self.auditor.prove(chunk, index, challenge).await.map(Response::Proof),
            Request::Inbox(request) => self.inbox.inbox_request(request).await,
            Request::Sign(signed) => self.ledger.sign_transfer(signed).await,
            Request::Quote => Ok(self.payments.quote()),
            Request::Ticket(ticket) => self.ages.sign_ticket(peer, ticket).await,
            Request::Age => Ok(Response::Age { proof: self.ctx.age(), genesis: self.ctx.elders().genesis().map(<[u8]>::to_vec) }),
            Request::StoreShard { shard, quote } => self.payments.store_quoted(shard, quote, peer).await,
            Request::Paid { certificate, shards } => self.payments.paid(certificate, shards).await,
            Request::Account(account) => self.ledger.account_view(account).await,
            Request::EntryIds { account, after } => Ok(self.ledger.entry_ids(account, after)),
            Request::History { account, after } => self.ledger.history(account, after).await,
            other => Err(RemoteError::Invalid(format!("unsupported request {other:?}"))),
        };
        result.unwrap_or_else(Response::Error)
    }

    /// The vault's current status.
    pub async fn status(&self) -> Result<VaultStatus, VaultError> {
        let routing = self.ctx.node().routing_table().await?;
        let usage = self.ctx.store().usage();
        let mut by_kind = std::collections::BTreeMap::new();
        for key in self.ctx.store().keys() {
            *by_kind.entry(key.kind.name().to_string()).or_insert(0u64) += 1;
        }
        Ok(VaultStatus {
            peer_id: self.ctx.me(),
            listen_addrs: self.ctx.node().listen_addrs().await?,
            routing_table_size: routing.len() as u32,
            records_stored: usage.records,
            records_by_kind: by_kind.into_iter().collect(),
            bytes_used: usage.bytes,
            capacity: usage.capacity,
            uptime_secs: self.life.started.elapsed().as_secs(),
            malformed_requests: self.ctx.node().stats().malformed_requests.load(Ordering::Relaxed),
            rate_limited: self.ctx.node().stats().rate_limited.load(Ordering::Relaxed),
            refused_full: self.records.refused_full(),
            corrupt_records: self.records.corrupt(),
            pending_repairs: self.repair.stats().pending.load(Ordering::Relaxed),
            shards_repaired: self.repair.stats().repaired.load(Ordering::Relaxed),
            shards_handed_over: self.repair.stats().handed_over.load(Ordering::Relaxed),
            repair_bytes: self.repair.stats().bytes.load(Ordering::Relaxed),
            audits_passed: self.auditor.stats().passed.load(Ordering::Relaxed),
            audit_failures: self.auditor.stats().failed.load(Ordering::Relaxed),
            bad_shards_served: self.repair.stats().bad_shards.load(Ordering::Relaxed),
            account: self.ledger.account(),
            earned: self.payments.stats().earned.load(Ordering::Relaxed),
            balance: self.payments.balance(),
            transfers_signed: self.ledger.stats().signed.load(Ordering::Relaxed),
            ledger_evidence: self.ledger.evidence().found(),
            workers: self.life.workers.statuses(),
            settings: self.ctx.config().effective_settings(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}


#[cfg(test)]
mod tests {
    use kura_node::audit::Challenge;
    use kura_node::erasure::Coding;
    use kura_node::RecordKey;

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
                vault.records.put_shard(shard).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        // And one write that is slow to finish (a slow disk): shutdown must wait for it.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let slow = tokio::spawn({
            let vault = vault.clone();
            async move { vault.ctx.actor().run(move |_| { let _ = wait.recv(); }).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let closing = tokio::spawn({
            let vault = vault.clone();
            async move { vault.shutdown().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!closing.is_finished(), "shutdown returned while a write was in flight");
        assert!(vault.ctx.actor().run(|_| ()).await.is_err(), "no new write starts once shutdown has begun");
        drop(release);
        closing.await.unwrap();
        assert!(slow.await.unwrap().is_ok(), "the slow write ran to its end");
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
        vault.records.put_shard(shard.clone()).await.unwrap();
        assert!(vault.auditor.prove(chunk, 2, challenge()).await.is_ok());
        assert_eq!(vault.auditor.prove(chunk, 5, challenge()).await, Err(RemoteError::NotHeld { chunk, index: 5 }));

        vault.records.release(RecordKey::shard(chunk, 2)).await;
        assert_eq!(vault.auditor.prove(chunk, 2, challenge()).await, Err(RemoteError::Released { chunk, index: 2 }));

        // Stored again, it is held again: losing it now would be a loss, not a hand-on.
        vault.records.put_shard(shard).await.unwrap();
        assert!(vault.auditor.prove(chunk, 2, challenge()).await.is_ok());
        vault.ctx.store().delete(&RecordKey::shard(chunk, 2)).unwrap();
        assert_eq!(vault.auditor.prove(chunk, 2, challenge()).await, Err(RemoteError::NotHeld { chunk, index: 2 }));
        vault.shutdown().await;
    }
}

