//! The repair and handover worker: keeps every chunk this vault holds a shard of at full
//! redundancy on its current close group.
//!
//! It wakes when the routing table changes (a vault left or joined; debounced) and on a slow
//! periodic sweep, and re-examines the chunks whose close group changed (every chunk, on a
//! sweep). For each it asks the group which indices they hold ([`Request::ShardIndices`],
//! no shard bytes), runs the pure rules in [`plan`], and carries out what they say: rebuild
//! lost shards from any `k` (decode, check the address, re-encode, check every hash) onto
//! group members that hold none, hand shards to closer vaults and delete them only after the
//! new holder stored them, or drop a copy the group (or a closer member) already holds. It
//! works on a bounded number of chunks at once (`repair_concurrency`) and holds the shard
//! bytes it moves to the vault's repair rate ([`RateLimit`]), so that client traffic keeps the
//! disk and the uplink.
//!
//! A replicated record (a pointer, a message) is repaired by `Repair::repair_record`, the
//! one replica routine; which routine a kind uses is the kind's to say
//! (`crate::records::KindRules::repair`), so repair never names the subsystems above it.
//!
//! Owns: the repair counters and rate, the rebuild slots, the losses on standby, the shards on
//! probation, the queue of records updated here. Talks to: the records, the auditor, peers.

mod plan;
mod probation;
mod rate;
mod replica;
mod schedule;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kura_node::erasure;
use kura_node::wire::{Request, Response};
use kura_node::{Address, NodeError, PeerId, Record, RecordKey, RecordKind, Shard};
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

pub use plan::{plan, plan_as, stand_in_rank, Action, ChunkView};
pub use probation::Probation;
pub use rate::RateLimit;
pub use replica::{plan_replica, ReplicaAction, ReplicaView};
pub(crate) use replica::rendezvous_id;
pub use schedule::Schedule;

use crate::audit::{Auditor, Verdict};
use crate::context::{lock, Ctx};
use crate::records::{Records, MEMORY_LEN};

mod audits;

pub(crate) use audits::AuditWorker;

/// Updates of replicated records waiting for the repair worker.
const UPDATED_QUEUE: usize = 1024;

/// How long before a chunk is examined again when a member answered that it is busy.
const LOADED_RETRY: Duration = Duration::from_secs(5);

/// Which chunks a repair round examines.
#[derive(Debug)]
pub enum Round {
    /// Those whose close group changed since they were last examined.
    Changed,
    /// All of them.
    Sweep,
    /// These, whose repair failed.
    Retry(BTreeSet<Address>),
    /// Note the groups of newly stored chunks, so that the next change examines just the
    /// chunks whose group it changed; examine those whose group, as this vault's routing table
    /// has it, leaves this vault out: a handover is due, which may have waited on a member
    /// that did not answer. (A vault that restarts within the keep-alive timeout is never seen
    /// leaving or coming back, so no change would examine the shards stored elsewhere while it
    /// was down.)
    Baseline,
}

/// How many holders in line behind a coordinator stand by to repair a loss it leaves.
const STANDBY_TURNS: usize = 2;

impl Round {
    fn name(&self) -> &'static str {
        match self {
            Round::Changed => "changed",
            Round::Sweep => "sweep",
            Round::Retry(_) => "retry",
            Round::Baseline => "baseline",
        }
    }
}

/// Counters of the repair worker.
#[derive(Debug, Default)]
pub struct RepairStats {
    /// Chunks waiting to be examined.
    pub pending: AtomicU64,
    /// Shards rebuilt and stored elsewhere.
    pub repaired: AtomicU64,
    /// Shards handed to closer vaults.
    pub handed_over: AtomicU64,
    /// Shard bytes fetched or sent.
    pub bytes: AtomicU64,
    /// Replicated records sent to group members that lacked them or held older versions.
    pub replicas_sent: AtomicU64,
    /// Answers to this vault's shard fetches that held a shard not matching its chunk's
    /// address (each from a vault that was then reported).
    pub bad_shards: AtomicU64,
}

/// The repair and handover worker: runs the rounds its [`Schedule`] makes due.
pub(crate) struct RepairWorker {
    repair: Repair,
    events: tokio::sync::broadcast::Receiver<kura_node::NodeEvent>,
    updates: Option<tokio::sync::mpsc::Receiver<RecordKey>>,
    schedule: Schedule,
    last_groups: HashMap<Address, Vec<PeerId>>,
    closed: bool,
}

impl RepairWorker {
    /// The repair worker of `repair`, sweeping every `sweep`.
    pub(crate) fn new(repair: Repair, sweep: Duration) -> Self {
        let c = repair.ctx.config();
        let schedule = Schedule::new(
            tokio::time::Instant::now(),
            sweep,
            Duration::from_secs(c.repair_baseline_secs.max(1)),
            Duration::from_millis(c.repair_debounce_ms),
            Duration::from_millis(c.repair_retry_ms),
        );
        RepairWorker {
            events: repair.ctx.node().subscribe(),
            updates: repair.take_updates(),
            schedule,
            last_groups: HashMap::new(),
            closed: false,
            repair,
        }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for RepairWorker {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let r = self.repair.stats();
        [
            ("pending", &r.pending),
            ("rebuilt", &r.repaired),
            ("handed_over", &r.handed_over),
            ("replicas_sent", &r.replicas_sent),
            ("bytes", &r.bytes),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
        .collect()
    }

    async fn work(&mut self) -> Result<crate::worker::WorkState, NodeError> {
        if self.closed {
            return Err(NodeError::Shutdown);
        }
        let Some(round) = self.schedule.next(tokio::time::Instant::now()) else {
            return Ok(crate::worker::WorkState::Idle);
        };
        match self.repair.repair_round(round, &mut self.last_groups).await {
            Ok((failed, later)) => {
                let now = tokio::time::Instant::now();
                self.schedule.failed(now, failed);
                for (chunk, after) in later {
                    self.schedule.recheck(now + after, chunk);
                }
            }
            Err(NodeError::Shutdown) => return Err(NodeError::Shutdown),
            Err(e) => warn!(error = %e, "repair round failed"),
        }
        Ok(crate::worker::WorkState::Busy)
    }

    async fn wait_for_work(&mut self) {
        let wake = self.schedule.next_wake();
        let updates = &mut self.updates;
        tokio::select! {
            ev = self.events.recv() => match ev {
                Err(RecvError::Closed) => self.closed = true,
                _ => self.schedule.routing_changed(tokio::time::Instant::now()),
            },
            // A replicated record updated here: bring its group up to this version now.
            Some(key) = async { updates.as_mut()?.recv().await }, if updates.is_some() => {
                self.schedule.updated(tokio::time::Instant::now(), key.address);
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Repair: examines what this vault holds against its groups and carries out the plans.
#[derive(Clone)]
pub(crate) struct Repair {
    ctx: Ctx,
    records: Records,
    auditor: Auditor,
    state: Arc<State>,
}

struct State {
    stats: RepairStats,
    rate: RateLimit,
    /// Rebuilds running at once (each holds a chunk's shards in memory).
    rebuilds: tokio::sync::Semaphore,
    /// Losses whose coordinator has not acted yet, since when.
    standby: crate::recent::Losses,
    /// Shards handed over or held by others, watched before this vault's copy goes.
    probation: std::sync::Mutex<Probation>,
    /// Replicated records updated here lately, for the repair worker to spread (bounded: when
    /// full, the worker's sweep finds them instead).
    updated: tokio::sync::mpsc::Sender<RecordKey>,
    /// The repair worker's end of [`State::updated`], taken when it starts.
    updated_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<RecordKey>>>,
}

impl Repair {
    /// The repair subsystem of the vault whose context is `ctx`.
    pub(crate) fn new(ctx: Ctx, records: Records, auditor: Auditor) -> Repair {
        let config = ctx.config();
        let (updated, updated_rx) = tokio::sync::mpsc::channel(UPDATED_QUEUE);
        let state = State {
            stats: RepairStats::default(),
            rate: RateLimit::new(config.repair_rate),
            rebuilds: tokio::sync::Semaphore::new(config.rebuild_concurrency.max(1)),
            standby: crate::recent::Losses::new(Duration::from_secs(600), MEMORY_LEN),
            probation: std::sync::Mutex::new(Probation::new(Duration::from_secs(config.handover_probation_secs), MEMORY_LEN)),
            updated,
            updated_rx: std::sync::Mutex::new(Some(updated_rx)),
        };
        Repair { ctx, records, auditor, state: Arc::new(state) }
    }

    /// The repair counters.
    pub(crate) fn stats(&self) -> &RepairStats {
        &self.state.stats
    }

    /// Has the repair worker bring the group of a replicated record updated here up to this
    /// version soon (dropped when the queue is full: the worker's sweep finds it then).
    pub(crate) fn spread(&self, key: RecordKey) {
        let _ = self.state.updated.try_send(key);
    }

    /// The repair worker's queue of replicated records updated here (once).
    fn take_updates(&self) -> Option<tokio::sync::mpsc::Receiver<RecordKey>> {
        lock(&self.state.updated_rx).take()
    }

    /// Examines the chunks `round` calls for; returns those whose repair failed, and those to
    /// look at again after a while.
    pub(crate) async fn repair_round(
        &self,
        round: Round,
        last: &mut HashMap<Address, Vec<PeerId>>,
    ) -> Result<(Vec<Address>, Vec<(Address, Duration)>), NodeError> {
        let me = self.ctx.node().peer_id();
        // A chunk's group is first noted as it was when the chunk was stored: noting it later
        // (at the next baseline) would take in a departure that happened meanwhile, and the
        // changed round due next would see no change for it (churn test: a chunk stored just
        // before a departure stayed one shard short).
        for (chunk, group) in self.records.take_stored_groups() {
            last.entry(chunk).or_insert(group);
        }
        let held = self.ctx.held();
        last.retain(|c, _| held.contains_key(c));
        let mut todo = Vec::new();
        for &chunk in held.keys() {
            if matches!(round, Round::Baseline) && last.get(&chunk).is_some_and(|g| g.contains(&me)) {
                continue;
            }
            let group = self.ctx.node().local_closest(chunk, erasure::Coding::default().n()).await?;
            let due = match &round {
                Round::Baseline => !group.contains(&me),
                Round::Sweep => true,
                Round::Changed => last.get(&chunk) != Some(&group),
                Round::Retry(set) => set.contains(&chunk),
            };
            // A group is noted only once the chunk is examined with it (or when first seen):
            // a retry or baseline round that noted the new groups of chunks it does not examine
            // would hide a routing change from the changed round due next, and those chunks
            // would wait for the sweep (churn test: chunks short for minutes).
            if due || !last.contains_key(&chunk) {
                last.insert(chunk, group);
            }
            if due {
                todo.push(chunk);
            }
        }
        let stats = &self.state.stats;
        stats.pending.store(todo.len() as u64, Ordering::Relaxed);
        if todo.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let started = std::time::Instant::now();
        let repaired_before = stats.repaired.load(Ordering::Relaxed);
        info!(chunks = todo.len(), round = round.name(), "repair round started");
        let mut failed = Vec::new();
        let mut later = Vec::new();
        let mut results = futures::stream::iter(todo)
            .map(|chunk| {
                let kind = held.get(&chunk).copied();
                async move {
                    let result = self.examine(chunk, kind, false).await;
                    (chunk, result)
                }
            })
            .buffer_unordered(self.ctx.config().repair_concurrency.max(1));
        while let Some((chunk, result)) = results.next().await {
            stats.pending.fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok(None) => {}
                Ok(Some(after)) => later.push((chunk, after)),
                Err(NodeError::Shutdown) => return Err(NodeError::Shutdown),
                Err(e) => {
                    debug!(%chunk, error = %e, "repair of chunk failed; retrying soon");
                    failed.push(chunk);
                }
            }
        }
        info!(
            secs = started.elapsed().as_secs_f64(),
            rebuilt = stats.repaired.load(Ordering::Relaxed) - repaired_before,
            failed = failed.len(),
            "repair round done"
        );
        Ok((failed, later))
    }

    /// Examines what this vault holds at `address` (a chunk's shards, a pointer, an inbox's
    /// messages) against its close group, and repairs what is short; with `audit`, a chunk's
    /// holders are also challenged. Returns when to look again, if it should be.
    pub(crate) async fn examine(&self, address: Address, kind: Option<RecordKind>, audit: bool) -> Result<Option<Duration>, NodeError> {
        match kind {
            None | Some(RecordKind::Shard) => self.repair_chunk(address, audit).await,
            // A replicated kind repairs its records its own way (see `KindRules::repair`).
            Some(kind) => match self.records.rules(kind) {
                Ok(rules) => rules.repair(address).await.map(|()| None),
                Err(_) => Ok(None),
            },
        }
    }

    /// A verified local shard, or `None` (a corrupt one is deleted and counted).
    async fn local_shard(&self, key: RecordKey) -> Option<Shard> {
        self.records.read_shards(key.address).await.ok()?.into_iter().find(|s| s.key() == key)
    }

    /// Examines one chunk and carries out the plan. With `audit`, every shard a group member
    /// claims is challenged first, and a member that fails counts as silent: its shards are
    /// rebuilt, and nothing is placed on it. Returns when to look at the chunk again, if a loss
    /// waits on its coordinator.
    pub(crate) async fn repair_chunk(&self, chunk: Address, audit: bool) -> Result<Option<Duration>, NodeError> {
        let me = self.ctx.node().peer_id();
        let local = self.records.read_shards(chunk).await.map_err(|e| NodeError::Lookup { target: chunk, reason: e.to_string() })?;
        let Some(first) = local.first() else { return Ok(None) };
        let n = first.header.n();
        let k = usize::from(first.header.k);
        // A few vaults past the group are asked too: the group is the `n` closest that answer.
        // A routing table can still list a vault that died (nothing told this vault yet);
        // counting it as a member would leave its shard unrepaired and no free member to
        // rebuild it on.
        let candidates = self.ctx.node().local_closest(chunk, n + self.ctx.config().spare_candidates).await?;
        let mut holdings = HashMap::new();
        holdings.insert(me, local.iter().map(|s| s.header.index).collect::<Vec<u8>>());
        // Everyone is asked at once: after a departure every holder of every affected chunk
        // asks, and sequential round trips made repair wait on latency, not work.
        let asked = futures::future::join_all(candidates.iter().filter(|p| **p != me).map(|&peer| async move {
            (peer, self.ctx.ask(peer, Request::ShardIndices { chunk }).await)
        }))
        .await;
        let mut proven = HashSet::new();
        'members: for (peer, answer) in asked {
            let mut indices = match answer {
                Ok(Response::Indices(indices)) => indices,
                // A member under load still holds what it held: look again later rather than
                // rebuild its shards elsewhere (a flood must not start repair storms).
                Err(NodeError::Remote { error, .. }) if error.is_load() => {
                    debug!(%chunk, %peer, "member busy; examining the chunk again later");
                    return Ok(Some(LOADED_RETRY));
                }
                _ => continue,
            };
            if self.records.full_lately(&peer) && indices.is_empty() {
                continue;
            }
            if audit {
                let mut withdrawn = Vec::new();
                for &index in &indices {
                    match self.auditor.audit_and_report(peer, &first.header, index).await? {
                        Verdict::Passed => {
                            proven.insert((peer, index));
                        }
                        // A busy holder keeps its claim this round; only a failure voids it.
                        Verdict::Inconclusive => {}
                        Verdict::Withdrawn => withdrawn.push(index),
                        Verdict::Failed => continue 'members,
                    }
                }
                indices.retain(|i| !withdrawn.contains(i));
            }
            holdings.insert(peer, indices);
        }
        let group: Vec<PeerId> = candidates.into_iter().filter(|p| holdings.contains_key(p)).take(n).collect();
        // What vaults past the group hold is theirs to hand over; the group is repaired as if
        // they held nothing (a copy left over there is dropped once the group holds it).
        holdings.retain(|p, _| *p == me || group.contains(p));
        let elders = self.ctx.elders();
        let aged = group.iter().filter(|p| elders.has_aged(p)).copied().collect();
        let view = ChunkView { chunk, n, group, holdings, aged };
        let mut actions = plan(me, &view);
        // This loss: the indices held nowhere (a later loss of the same chunk is another).
        let held_anywhere: BTreeSet<u8> = view.holdings.values().flatten().copied().collect();
        let lost = (0..n as u8).filter(|i| !held_anywhere.contains(i)).fold(0u64, |m, i| m | 1 << i);
        match stand_in_rank(me, &view) {
            // The first two in line stand by; the rest rely on them (and on sweeps and
            // audits), since every standby costs a second examination.
            Some(turn) if actions.is_empty() && turn <= STANDBY_TURNS => {
                // A loss the coordinator should repair: if it outlasts this vault's turn in
                // line, this vault repairs it; until then the chunk is looked at again then.
                let waited = self.state.standby.waited(chunk, lost);
                let turn_at = Duration::from_secs(self.ctx.config().repair_stand_in_secs) * turn as u32;
                if waited < turn_at {
                    debug!(%chunk, turn, "loss seen; waiting for the coordinator");
                    return Ok(Some(turn_at - waited));
                }
                info!(%chunk, turn, "standing in for a coordinator that did not act");
                actions = plan_as(me, &view, true);
                self.state.standby.clear(&chunk);
            }
            _ => self.state.standby.clear(&chunk),
        }
        debug!(%chunk, members = view.group.len(), answered = view.holdings.len(), ?actions, "chunk examined");
        // When to look again: a copy kept on probation is let go once its period is over.
        let mut later: Option<Duration> = None;
        for action in actions {
            match action {
                Action::Drop { index, kept_by } => {
                    if let Err(wait) = self.on_probation(chunk, index, kept_by, &view, k) {
                        later = Some(later.map_or(wait, |l| l.min(wait)));
                        continue;
                    }
                    // The other holder's word is checked before this copy goes: it may be the
                    // last one, so the vault that claims the shard must prove it.
                    if proven.contains(&(kept_by, index))
                        || self.auditor.audit_and_report(kept_by, &first.header, index).await? == Verdict::Passed
                    {
                        self.records.release(RecordKey::shard(chunk, index)).await;
                        lock(&self.state.probation).forget(chunk, index);
                        debug!(%chunk, index, %kept_by, "shard dropped: held by a closer vault for the probation");
                    } else {
                        lock(&self.state.probation).forget(chunk, index);
                    }
                }
                Action::HandOver { index, to } => {
                    // Placed once; kept here until `to` has held it for the probation and then
                    // proves it (a resend of a shard `to` holds is acknowledged without a write).
                    if lock(&self.state.probation).is_new(chunk, index, to) {
                        let Some(shard) = self.local_shard(RecordKey::shard(chunk, index)).await else { continue };
                        let len = shard.data.len() as u64;
                        self.state.rate.spend(len).await;
                        self.records.place(to, shard).await?;
                        self.state.stats.handed_over.fetch_add(1, Ordering::Relaxed);
                        self.state.stats.bytes.fetch_add(len, Ordering::Relaxed);
                        debug!(%chunk, index, %to, "shard handed over; kept here while it is on probation");
                    }
                    match self.on_probation(chunk, index, to, &view, k) {
                        Err(wait) => later = Some(later.map_or(wait, |l| l.min(wait))),
                        Ok(()) => {
                            if self.auditor.audit_and_report(to, &first.header, index).await? == Verdict::Passed {
                                self.records.release(RecordKey::shard(chunk, index)).await;
                                debug!(%chunk, index, %to, "probation over: shard released");
                            }
                            lock(&self.state.probation).forget(chunk, index);
                        }
                    }
                }
                Action::Rebuild(assign) => {
                    let _slot = self.state.rebuilds.acquire().await.map_err(|_| NodeError::Shutdown)?;
                    self.rebuild(chunk, k, local.clone(), &view, assign).await?
                }
            }
        }
        Ok(later)
    }

    /// Whether this vault's copy of shard `index` of `chunk` may go now that `holder` holds it
    /// (see [`Probation`]); else how long until it may. Data is never left only with
    /// newcomers (their ids may have been ground next to the chunk): a vault the group has
    /// displaced keeps its copy, however long a newcomer has held it, until vaults of the group
    /// that have aged ([`kura_node::age::HOLD_AGE`]) hold at least `k` of the chunk's shards,
    /// enough to rebuild it without any newcomer. A member of the group dropping a second copy
    /// (a closer member holds it too) needs only the probation: the chunk stays with its group,
    /// and the member is freed to take a shard the group lacks.
    fn on_probation(&self, chunk: Address, index: u8, holder: PeerId, view: &ChunkView, k: usize) -> Result<(), Duration> {
        let mut probation = lock(&self.state.probation);
        let served = probation.may_release(chunk, index, holder, std::time::Instant::now());
        if view.group.contains(&self.ctx.me()) {
            return served;
        }
        let elders = self.ctx.elders();
        let with_aged: BTreeSet<u8> = view
            .group
            .iter()
            .filter(|p| **p != self.ctx.me() && elders.has_aged(p))
            .filter_map(|p| view.holdings.get(p))
            .flatten()
            .copied()
            .collect();
        match with_aged.len() >= k {
            true => served,
            false => Err(probation.period()),
        }
    }

    /// Examines one replicated record: fetches every group member's version (checked against
    /// the key, so a member cannot claim a version it does not hold), runs [`plan_replica`],
    /// and carries it out.
    pub(crate) async fn repair_record(&self, key: RecordKey) -> Result<(), NodeError> {
        let me = self.ctx.node().peer_id();
        let failed = |e: String| NodeError::Lookup { target: key.address, reason: e };
        let Some(mine) = self.records.read_record(key).await.map_err(|e| failed(e.to_string()))? else { return Ok(()) };
        let n = mine.strategy().group_size();
        // The record's closest vaults and closest elders (looked for past any newcomers near
        // it), and a few past them that stand in for members that do not answer.
        let wide = self.ctx.node().local_closest(key.address, crate::context::ELDERS_LOOKED_AT).await?;
        let mut candidates = self.ctx.replica_group(&wide, n).await;
        let spares: Vec<PeerId> = wide.iter().filter(|p| !candidates.contains(p)).take(self.ctx.config().spare_candidates).copied().collect();
        candidates.extend(spares);
        let asked = futures::future::join_all(candidates.iter().filter(|p| **p != me).map(|&peer| async move {
            (peer, self.ctx.ask(peer, Request::GetRecord(key)).await)
        }))
        .await;
        let mut answers: HashMap<PeerId, Option<Record>> = HashMap::new();
        answers.insert(me, Some(mine));
        for (peer, answer) in asked {
            match answer {
                Ok(Response::Record(record)) => {
                    // A record that does not check out counts as none held.
                    let record = record.filter(|r| r.validate_for(&key).is_ok());
                    answers.insert(peer, record);
                }
                Ok(_) | Err(_) => {}
            }
        }
        let mut versions: Vec<&Record> = Vec::new();
        for r in answers.values().flatten() {
            if !versions.contains(&r) {
                versions.push(r);
            }
        }
        versions.sort_by(|a, b| match (a.supersedes(b), b.supersedes(a)) {
            (true, _) => std::cmp::Ordering::Greater,
            (_, true) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Equal,
        });
        let rank = |r: &Option<Record>| r.as_ref().and_then(|r| versions.iter().position(|v| *v == r));
        // Its n closest that answered, and its n closest elders that answered.
        let mut answered: Vec<PeerId> = candidates.into_iter().filter(|p| answers.contains_key(p)).collect();
        answered.sort_by_key(|p| wide.iter().position(|w| w == p));
        let group = self.ctx.replica_group(&answered, n).await;
        let view = ReplicaView {
            address: key.address,
            group,
            held: answers.iter().map(|(p, r)| (*p, rank(r))).collect(),
        };
        let Some(newest) = versions.last().map(|r| (*r).clone()) else { return Ok(()) };
        for action in plan_replica(me, &view) {
            match action {
                ReplicaAction::Fetch { .. } => {
                    // The newest version was fetched and checked above: keep it.
                    if let Err(e) = self.records.put_record(newest.clone()).await {
                        debug!(%key, error = %e, "keeping a newer version failed");
                    }
                }
                ReplicaAction::Push { to } => {
                    let sends = to.iter().map(|&peer| {
                        let record = newest.clone();
                        async move { (peer, self.ctx.ask(peer, Request::PutRecord(record)).await) }
                    });
                    for (peer, result) in futures::future::join_all(sends).await {
                        match result {
                            Ok(Response::Stored) => {
                                self.state.stats.replicas_sent.fetch_add(1, Ordering::Relaxed);
                                debug!(%key, %peer, "replica sent");
                            }
                            other => debug!(%key, %peer, answer = ?other, "replica refused"),
                        }
                    }
                }
                ReplicaAction::Drop => {
                    self.records.release(key).await;
                    self.state.stats.handed_over.fetch_add(1, Ordering::Relaxed);
                    debug!(%key, "replica dropped: the group holds it");
                }
            }
        }
        Ok(())
    }

    async fn rebuild(
        &self,
        chunk: Address,
        k: usize,
        mut shards: Vec<Shard>,
        view: &ChunkView,
        assign: Vec<(u8, PeerId)>,
    ) -> Result<(), NodeError> {
        let me = self.ctx.node().peer_id();
        // Read only as many shards as a rebuild needs: k in all, local ones first. The holders
        // still needed are asked at once; more only if some of them fail.
        let holders: Vec<PeerId> = view
            .group
            .iter()
            .filter(|p| **p != me && view.holdings.get(p).is_some_and(|h| !h.is_empty()))
            .copied()
            .collect();
        let mut next = holders.into_iter();
        loop {
            let have: BTreeSet<u8> = shards.iter().map(|s| s.header.index).collect();
            let batch: Vec<PeerId> = next.by_ref().take(k.saturating_sub(have.len())).collect();
            if batch.is_empty() {
                break;
            }
            let answers = futures::future::join_all(batch.into_iter().map(|peer| async move {
                let answer = self.ctx.node().request(peer, Request::GetShards { chunk }).await;
                (peer, answer)
            }))
            .await;
            for (peer, got) in answers.into_iter().filter_map(|(p, a)| match a {
                Ok(Response::Shards(got)) => Some((p, got)),
                _ => None,
            }) {
                let len: u64 = got.iter().map(|s| s.data.len() as u64).sum();
                self.state.stats.bytes.fetch_add(len, Ordering::Relaxed);
                self.state.rate.spend(len).await;
                // Checked as they arrive: a shard that does not match the address would
                // otherwise take the place of a good one, and the rebuild would fail each
                // time it is tried. The vault that served it is skipped, and reported in the
                // log and in status. It is not dropped from the routing table: that would give
                // this vault a view of the group that other vaults do not share, which the
                // plan tolerates only for a while; skipping it costs one fetch per rebuild.
                let (good, lie) = tokio::task::spawn_blocking(move || erasure::sift(chunk, got))
                    .await
                    .map_err(|e| NodeError::Lookup { target: chunk, reason: e.to_string() })?;
                if let Some(index) = lie {
                    self.state.stats.bad_shards.fetch_add(1, Ordering::Relaxed);
                    warn!(%chunk, %peer, index, "a vault served a bad shard for repair; skipping it");
                }
                let have: BTreeSet<u8> = shards.iter().map(|s| s.header.index).collect();
                shards.extend(good.into_iter().filter(|s| !have.contains(&s.header.index)));
            }
        }
        let rebuilt = tokio::task::spawn_blocking(move || erasure::rebuild_verified(chunk, &shards))
            .await
            .map_err(|e| NodeError::Lookup { target: chunk, reason: e.to_string() })?
            .map_err(|e| NodeError::Lookup { target: chunk, reason: e.to_string() })?;
        for (index, to) in assign {
            let Some(shard) = rebuilt.get(usize::from(index)).cloned() else { continue };
            let len = shard.data.len() as u64;
            self.state.rate.spend(len).await;
            self.records.place(to, shard).await?;
            self.state.stats.repaired.fetch_add(1, Ordering::Relaxed);
            self.state.stats.bytes.fetch_add(len, Ordering::Relaxed);
            info!(%chunk, index, %to, "shard rebuilt");
        }
        Ok(())
    }
}
