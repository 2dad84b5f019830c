//! The swarm actor: one task owns the libp2p swarm; a cloneable [`NodeHandle`] talks to it.
//!
//! The actor is the only I/O loop. Placement rules live in [`crate::address`]; the actor feeds
//! them the peers Kademlia finds.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use libp2p::kad::{self, store::MemoryStore, Mode, QueryResult, StoreInserts};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::address::{close_group, Address};
use crate::budget::{request_cost, Budgets};
use crate::codec::{Envelope, KuraCodec};
use crate::limits::IpLimits;
use tokio::sync::OwnedSemaphorePermit;
use crate::config::{NodeConfig, Role};
use crate::error::NodeError;
use crate::penalty::Penalties;
use crate::unreachable::Unreachable;
use crate::wire::{RemoteError, Request, Response, KAD_PROTOCOL, MAX_GROUP_QUERY, REQUEST_PROTOCOL};

/// Commands queued to the actor before the caller waits.
const COMMAND_QUEUE: usize = 256;
/// Routing events buffered per subscriber; a slower subscriber sees `Lagged` and should
/// re-read the routing table.
const EVENT_QUEUE: usize = 1024;

/// A change in this node's view of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A vault entered the routing table.
    PeerAdded(PeerId),
    /// A vault left the routing table: its connection failed or it closed it.
    PeerRemoved(PeerId),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    rr: request_response::Behaviour<KuraCodec>,
    unreachable: Unreachable,
    limits: libp2p::connection_limits::Behaviour,
    ip_limits: IpLimits,
}

/// How long a lookup waits for one peer's answer.
const KAD_RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// A request from a remote peer, waiting for the application's answer.
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked.
    pub peer: PeerId,
    /// What they asked.
    pub request: Request,
    /// Whether the peer is a vault in this node's routing table (clients never are): its
    /// requests are maintenance, which yields to clients'.
    pub from_vault: bool,
    reply: oneshot::Sender<Response>,
    /// The request's share of the inbound byte budget, held until it is answered.
    permit: Option<OwnedSemaphorePermit>,
}

impl InboundRequest {
    /// Sends the answer back to the peer.
    pub fn respond(self, response: Response) {
        self.into_parts().2.respond(response);
    }

    /// Splits the request from the handle that answers it, so the request can be consumed.
    pub fn into_parts(self) -> (PeerId, Request, Responder) {
        (self.peer, self.request, Responder { reply: self.reply, _permit: self.permit })
    }
}

/// Answers one inbound request.
#[derive(Debug)]
pub struct Responder {
    reply: oneshot::Sender<Response>,
    /// Held until the answer is sent: the request's bytes count against the budget till then.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Responder {
    /// Sends the answer back to the peer.
    pub fn respond(self, response: Response) {
        // The actor drops the receiver only if the node is shutting down.
        let _ = self.reply.send(response);
    }
}

/// Counters the node keeps about what it received.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Requests that could not be decoded.
    pub malformed_requests: AtomicU64,
    /// Requests refused because the application queue was full.
    pub busy_refusals: AtomicU64,
    /// Requests refused because their peer had spent its budget.
    pub rate_limited: AtomicU64,
    /// Inbound streams that failed (oversized, truncated, timed out).
    pub inbound_failures: AtomicU64,
}

enum Command {
    ClosestVaults {
        target: Address,
        n: usize,
        reply: oneshot::Sender<Result<Lookup, NodeError>>,
    },
    Request {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, NodeError>>,
    },
    RoutingTable {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    LocalClosest {
        target: Address,
        n: usize,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        addr: Multiaddr,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    Penalize {
        peer: PeerId,
        reason: String,
        reply: oneshot::Sender<Duration>,
    },
    Shutdown,
}

/// A cloneable handle to a running node. The node stops when every handle is dropped or
/// [`NodeHandle::shutdown`] is called.
#[derive(Clone)]
pub struct NodeHandle {
    peer_id: PeerId,
    role: Role,
    cmd: mpsc::Sender<Command>,
    stats: Arc<NodeStats>,
    events: broadcast::Sender<NodeEvent>,
    /// The longest a request is waited for here, whatever the event loop does.
    request_deadline: Duration,
    /// The longest a lookup is waited for here.
    lookup_deadline: Duration,
}

/// What a caller waits beyond twice the event loop's own timeout (a request may first wait
/// out a dial) before it gives up on an answer: every request and lookup ends, even one the
/// transport never reports on.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("peer_id", &self.peer_id).finish()
    }
}

impl NodeHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Whether this node is a vault or a client.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Subscribes to routing table changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Counters of bad input received.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).await.map_err(|_| NodeError::Shutdown)?;
        rx.await.map_err(|_| NodeError::Shutdown)
    }

    /// The `n` vaults closest to `target`, closest first, found by an iterative Kademlia lookup.
    /// A vault counts itself among the candidates; a client never does.
    pub async fn closest_vaults(&self, target: Address, n: usize) -> Result<Vec<PeerId>, NodeError> {
        Ok(self.lookup(target, n).await?.peers)
    }

    /// Like [`NodeHandle::closest_vaults`], with the lookup's cost.
    pub async fn lookup(&self, target: Address, n: usize) -> Result<Lookup, NodeError> {
        match tokio::time::timeout(self.lookup_deadline, self.call(|reply| Command::ClosestVaults { target, n, reply })).await {
            Ok(answer) => answer?,
            Err(_) => Err(NodeError::Lookup { target, reason: format!("no answer within {:?}", self.lookup_deadline) }),
        }
    }

    /// Sends `request` to `peer` and waits for its answer (bounded by the request timeout).
    /// An error answer is returned as [`NodeError::Remote`].
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NodeError> {
        let asked = tokio::time::timeout(self.request_deadline, self.call(|reply| Command::Request { peer, request, reply }));
        let answer = asked.await.map_err(|_| NodeError::Request {
            peer,
            reason: format!("no answer within {:?}", self.request_deadline),
        })?;
        match answer?? {
            Response::Error(error) => Err(NodeError::Remote { peer, error }),
            other => Ok(other),
        }
    }

    /// Asks a vault to look up the `n` vaults closest to `target` from its own position.
    pub async fn remote_closest(&self, peer: PeerId, target: Address, n: u16) -> Result<Vec<PeerId>, NodeError> {
        match self.request(peer, Request::FindClosest { target, n }).await? {
            Response::Closest(peers) => Ok(peers),
            _ => Err(NodeError::UnexpectedResponse { peer, request: "FindClosest" }),
        }
    }

    /// The `n` vaults closest to `target` that this node knows without asking anyone: its
    /// routing table, and itself if it is a vault. Accurate near the node's own address, which
    /// is where a vault checks its responsibility for records.
    pub async fn local_closest(&self, target: Address, n: usize) -> Result<Vec<PeerId>, NodeError> {
        self.call(|reply| Command::LocalClosest { target, n, reply }).await
    }

    /// The peers in this node's Kademlia routing table.
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, NodeError> {
        self.call(|reply| Command::RoutingTable { reply }).await
    }

    /// The addresses this node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Dials an address (for example a bootstrap peer learned later).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.cmd.send(Command::Dial { addr }).await.map_err(|_| NodeError::Shutdown)
    }

    /// Records where `peer` can be reached, so requests to it can dial it.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NodeError> {
        self.cmd.send(Command::AddAddress { peer, addr }).await.map_err(|_| NodeError::Shutdown)
    }

    /// Drops `peer` from the routing table and keeps it out of the table and of lookup results
    /// for a while (longer for each repeated offence; see [`crate::penalty`]). Subscribers see
    /// it leave. Returns how long it is kept out.
    pub async fn penalize(&self, peer: PeerId, reason: impl Into<String>) -> Result<Duration, NodeError> {
        let reason = reason.into();
        self.call(|reply| Command::Penalize { peer, reason, reply }).await
    }

    /// Stops the node's event loop.
    pub async fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown).await;
    }
}

/// Starts a node: binds its listen addresses, dials its bootstrap peers and spawns its event
/// loop on the current tokio runtime. Returns once every listen address is bound. Inbound
/// requests arrive on the returned receiver (vaults only; a client's never yields).
pub async fn spawn(config: NodeConfig) -> Result<(NodeHandle, mpsc::Receiver<InboundRequest>), NodeError> {
    let peer_id = config.keypair.public().to_peer_id();
    let mut swarm = build_swarm(&config)?;

    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| NodeError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    }
    let mut listen_addrs = Vec::new();
    while listen_addrs.len() < config.listen.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some())
            .await
            .map_err(|_| NodeError::Listen {
                addr: format!("{:?}", config.listen),
                reason: "no listen address reported within 10 s".into(),
            })?;
        match event {
            SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
            SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                return Err(NodeError::Listen {
                    addr: format!("{:?}", config.listen),
                    reason: error.to_string(),
                })
            }
            other => debug!(?other, "event before listening"),
        }
    }

    for addr in &config.bootstrap {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            if peer == peer_id {
                continue;
            }
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }

    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(config.inbound_queue.max(1));
    let stats = Arc::new(NodeStats::default());
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let now = Instant::now();
    let actor = Actor {
        swarm,
        role: config.role,
        local: peer_id,
        listen_addrs,
        inbound: in_tx,
        stats: stats.clone(),
        events: events.clone(),
        lookups: HashMap::new(),
        requests: HashMap::new(),
        replies: FuturesUnordered::new(),
        join_bootstraps: config.join_bootstraps.iter().rev().map(|d| now + *d).collect(),
        request_timeout: config.request_timeout,
        penalties: Penalties::default(),
        budgets: Budgets::new(config.client_budget, config.vault_budget, config.max_connections.max(1) * 4),
        id_difficulty: config.id_difficulty,
        ids_per_ip: config.ids_per_ip_per_bucket,
        relocating: HashMap::new(),
        relocated_at: HashMap::new(),
    };
    let span = tracing::info_span!("node", peer = %peer_id);
    tokio::spawn(tracing::Instrument::instrument(actor.run(cmd_rx), span));
    Ok((
        NodeHandle {
            peer_id,
            role: config.role,
            cmd: cmd_tx,
            stats,
            events,
            request_deadline: config.request_timeout * 2 + DEADLINE_MARGIN,
            lookup_deadline: config.lookup_timeout * 2 + DEADLINE_MARGIN,
        },
        in_rx,
    ))
}

fn build_swarm(config: &NodeConfig) -> Result<Swarm<Behaviour>, NodeError> {
    let role = config.role;
    let lookup_timeout = config.lookup_timeout;
    let request_timeout = config.request_timeout;
    let dead_peer_timeout = config.dead_peer_timeout;
    let mtu = config.mtu_upper_bound;
    let inbound_bytes = config.inbound_bytes;
    let streams_per_connection = config.streams_per_connection;
    let max_connections = config.max_connections as u32;
    let connections_per_peer = config.connections_per_peer as u32;
    let per_ip = config.connections_per_ip;
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_quic_config(|mut c| {
            c.max_idle_timeout = u32::try_from(dead_peer_timeout.as_millis()).unwrap_or(u32::MAX);
            c.keep_alive_interval = dead_peer_timeout / 4;
            c.mtu_upper_bound(mtu)
        })
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kcfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            kcfg.set_query_timeout(lookup_timeout);
            // A lookup waits for every one of the closest peers it asks; one that died, its
            // connection not yet timed out, would hold each lookup for the default 10 s. A
            // FIND_NODE answer is a few hundred bytes: a peer that takes this long is gone.
            kcfg.set_substreams_timeout(KAD_RPC_TIMEOUT);
            // Data never lives in libp2p's record store: refuse remote puts outright.
            kcfg.set_record_filtering(StoreInserts::FilterBoth);
            let mut kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kcfg);
            // Automatic mode waits for a confirmed external address, which a loopback testnet
            // never has; the role decides instead.
            kad.set_mode(Some(match role {
                Role::Vault => Mode::Server,
                Role::Client => Mode::Client,
            }));
            let identify = identify::Behaviour::new(
                identify::Config::new("/kura/id/1".into(), key.public())
                    .with_agent_version(format!("kura/{}", env!("CARGO_PKG_VERSION"))),
            );
            let support = match role {
                Role::Vault => ProtocolSupport::Full,
                Role::Client => ProtocolSupport::Outbound,
            };
            let rr = request_response::Behaviour::with_codec(
                KuraCodec::new(inbound_bytes),
                [(StreamProtocol::new(REQUEST_PROTOCOL), support)],
                request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    .with_max_concurrent_streams(streams_per_connection),
            );
            let limits = libp2p::connection_limits::Behaviour::new(
                libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(max_connections))
                    .with_max_established_per_peer(Some(connections_per_peer))
                    .with_max_pending_incoming(Some(max_connections)),
            );
            Behaviour { kad, identify, rr, unreachable: Unreachable::default(), limits, ip_limits: IpLimits::new(per_ip) }
        })
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}

type ReplyFuture = Pin<Box<dyn Future<Output = (ResponseChannel<Response>, Response)> + Send>>;

/// The result of an iterative lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The closest vaults, closest first.
    pub peers: Vec<PeerId>,
    /// Requests the lookup sent (libp2p-kad does not expose its hop count).
    pub requests: u32,
    /// Requests that were answered.
    pub successes: u32,
}

struct PendingLookup {
    target: Address,
    n: usize,
    reply: oneshot::Sender<Result<Lookup, NodeError>>,
}

struct Actor {
    swarm: Swarm<Behaviour>,
    role: Role,
    local: PeerId,
    listen_addrs: Vec<Multiaddr>,
    inbound: mpsc::Sender<InboundRequest>,
    stats: Arc<NodeStats>,
    events: broadcast::Sender<NodeEvent>,
    lookups: HashMap<kad::QueryId, PendingLookup>,
    requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, NodeError>>>,
    replies: FuturesUnordered<ReplyFuture>,
    /// Due times of the remaining join bootstraps, latest first (so `pop` yields the next).
    join_bootstraps: Vec<Instant>,
    request_timeout: Duration,
    /// Peers dropped for misbehaving, kept out of the routing table for a while.
    penalties: Penalties,
    /// What each peer may still ask of this node.
    budgets: Budgets,
    /// Bits of work a vault id must carry to enter the routing table.
    id_difficulty: u8,
    /// Ids of one IP address a bucket may hold.
    ids_per_ip: Option<usize>,
    /// Lookups run to find where a peer that could not be dialled is now, by query.
    relocating: HashMap<kad::QueryId, PeerId>,
    /// When each peer was last looked for that way (one lookup per peer per few seconds).
    relocated_at: HashMap<PeerId, std::time::Instant>,
}

/// Most lookups for moved peers in flight, and peers remembered as looked for.
const MAX_RELOCATING: usize = 256;
/// How often one peer is looked for after failed dials.
const RELOCATE_EVERY: Duration = Duration::from_secs(5);

impl Actor {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Command>) {
        let mut release = tokio::time::interval(Duration::from_secs(1));
        release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_bootstrap = self.join_bootstraps.last().copied();
            tokio::select! {
                biased;
                // Answers the application has ready go out first: they finish work already done.
                Some((channel, response)) = self.replies.next(), if !self.replies.is_empty() => {
                    if self.swarm.behaviour_mut().rr.send_response(channel, response).is_err() {
                        debug!("peer went away before its answer was sent");
                    }
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.on_command(cmd),
                },
                _ = release.tick() => {
                    self.release_penalized();
                    self.retry_departed();
                    // A caller that gave up (its deadline passed, or it was dropped) leaves
                    // its reply here; the transport may never report on it.
                    self.requests.retain(|_, reply| !reply.is_closed());
                    self.lookups.retain(|_, lookup| !lookup.reply.is_closed());
                }
                _ = tokio::time::sleep_until(next_bootstrap.unwrap_or_else(Instant::now)), if next_bootstrap.is_some() => {
                    self.join_bootstraps.pop();
                    if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                        debug!(error = %e, "join bootstrap skipped");
                    }
                }
            }
        }
        info!("node stopped");
    }

    /// Puts peers whose penalty ended back in the routing table, so they rejoin close groups
    /// without waiting for Kademlia to hear from them.
    fn release_penalized(&mut self) {
        for (peer, addrs) in self.penalties.released(std::time::Instant::now()) {
            debug!(%peer, "penalty over; peer put back");
            for addr in addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
        }
    }

    /// Whether `peer`, at `addrs`, would be one id too many from one IP in its bucket.
    fn crowded<'a>(&mut self, peer: &PeerId, addrs: impl Iterator<Item = &'a Multiaddr>) -> bool {
        let Some(max) = self.ids_per_ip else { return false };
        let new = crate::limits::remote_ips(addrs);
        if new.is_empty() {
            return false;
        }
        let others: Vec<Vec<std::net::IpAddr>> = match self.swarm.behaviour_mut().kad.kbucket(*peer) {
            Some(bucket) => bucket
                .iter()
                .filter(|e| e.node.key.preimage() != peer)
                .map(|e| crate::limits::remote_ips(e.node.value.iter()))
                .collect(),
            None => Vec::new(),
        };
        let crowded = crate::limits::crowded(&new, &others, max);
        if crowded {
            debug!(%peer, "bucket already holds enough ids from its address");
        }
        crowded
    }

    /// Whether `peer`'s id carries the work this node asks of vault ids.
    fn worked(&self, peer: &PeerId) -> bool {
        crate::puzzle::meets(peer, self.id_difficulty)
    }

    fn banned(&self, peer: &PeerId) -> bool {
        self.penalties.is_banned(peer, std::time::Instant::now())
    }

    fn routing_table(&mut self) -> Vec<PeerId> {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect()
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ClosestVaults { target, n, reply } => {
                // Ask Kademlia for a full k-set even when fewer are wanted: the extra answers
                // make the top `n` more reliable at little cost on a healthy network.
                let want = NonZeroUsize::new(20).expect("nonzero");
                let id = self.swarm.behaviour_mut().kad.get_n_closest_peers(target.0.to_vec(), want);
                self.lookups.insert(id, PendingLookup { target, n, reply });
            }
            Command::Request { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, Envelope::from(request));
                self.requests.insert(id, reply);
            }
            Command::RoutingTable { reply } => {
                let _ = reply.send(self.routing_table());
            }
            Command::LocalClosest { target, n, reply } => {
                let mut candidates = self.routing_table();
                if self.role == Role::Vault {
                    candidates.push(self.local);
                }
                let _ = reply.send(close_group(&target, candidates, n));
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Dial { addr } => {
                if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                }
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    warn!(%addr, error = %e, "dial failed");
                }
            }
            Command::AddAddress { peer, addr } => self.swarm.add_peer_address(peer, addr),
            Command::Penalize { peer, reason, reply } => {
                let now = std::time::Instant::now();
                self.penalties.prune(now);
                let addrs = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .remove_peer(&peer)
                    .map(|entry| entry.node.value.iter().cloned().collect())
                    .unwrap_or_default();
                let already_out = self.penalties.is_banned(&peer, now);
                let span = self.penalties.penalize(peer, addrs, now);
                // Failures found while it is out are the same offence: said and acted on once.
                if !already_out {
                    warn!(%peer, %reason, secs = span.as_secs(), "peer dropped from the routing table");
                    let _ = self.events.send(NodeEvent::PeerRemoved(peer));
                }
                let _ = reply.send(span);
            }
            Command::Shutdown => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                let is_vault = info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL);
                if is_vault && !self.banned(&peer_id) && self.worked(&peer_id) {
                    for addr in info.listen_addrs.into_iter().filter(dialable) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(e)) => self.on_request_response(e),
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                self.listen_addrs.push(address)
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen_addrs.retain(|a| a != &address),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => debug!(peer = %peer_id, "connected"),
            // Vaults hold their connections open, so losing the last one to an error or a
            // remote close means the peer left: drop it now rather than let every lookup stall
            // on it until a dial times out. A live peer is re-added when it is next seen.
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause: Some(cause), .. } => {
                self.peer_left(peer_id, &cause.to_string())
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed")
            }
            _ => {}
        }
    }

    /// Whether `peer` is in the routing table.
    fn in_routing_table(&mut self, peer: &PeerId) -> bool {
        self.swarm
            .behaviour_mut()
            .kad
            .kbucket(*peer)
            .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == peer))
    }

    /// Drops `peer`, found gone, from the routing table, and says so if it was there.
    fn peer_left(&mut self, peer: PeerId, cause: &str) {
        if let Some(entry) = self.swarm.behaviour_mut().kad.remove_peer(&peer) {
            debug!(%peer, %cause, "peer left");
            // Its addresses are kept, so a passing failure does not exile it: later dials can
            // still reach it, and a vault dials it again now and then until it is back.
            let addrs = entry.node.value.iter().cloned().collect();
            let retry = self.role == Role::Vault;
            self.swarm.behaviour_mut().unreachable.remember(peer, addrs, retry, std::time::Instant::now());
            let _ = self.events.send(NodeEvent::PeerRemoved(peer));
        }
    }

    /// Looks `peer` up in the network after dials to it failed: a vault that restarted on a new
    /// address is in other vaults' routing tables under it, and a lookup of its own key finds
    /// it there. Without this a client, which no vault ever dials, would not reach it again.
    fn relocate(&mut self, peer: PeerId) {
        let now = std::time::Instant::now();
        if self.relocated_at.get(&peer).is_some_and(|at| now.duration_since(*at) < RELOCATE_EVERY) {
            return;
        }
        if self.relocating.len() >= MAX_RELOCATING {
            return;
        }
        if self.relocated_at.len() >= MAX_RELOCATING {
            self.relocated_at.retain(|_, at| now.duration_since(*at) < RELOCATE_EVERY);
        }
        self.relocated_at.insert(peer, now);
        debug!(%peer, "looking up where a peer that could not be dialled is now");
        // The lookup dials the peer itself at the addresses other vaults report for it: that
        // dial must not be refused for the old address's failures.
        self.swarm.behaviour_mut().unreachable.forgive(&peer);
        let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
        self.relocating.insert(id, peer);
    }

    /// Dials departed vaults whose backoff has passed; one that answers rejoins the routing
    /// table through identify.
    fn retry_departed(&mut self) {
        for (peer, addrs) in self.swarm.behaviour_mut().unreachable.due_retries(std::time::Instant::now()) {
            debug!(%peer, "dialling a departed vault again");
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer).addresses(addrs).build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, error = %e, "redial not started");
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::RoutingUpdated { peer, is_new_peer, addresses, .. } = event {
            // Kademlia re-adds any peer it hears from; a penalized one, one whose id does not
            // carry the network's work, or one more from an address its bucket has enough of,
            // goes straight back out.
            if self.banned(&peer) || !self.worked(&peer) || self.crowded(&peer, addresses.iter()) {
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
            } else if is_new_peer {
                let _ = self.events.send(NodeEvent::PeerAdded(peer));
            }
            return;
        }
        if let kad::Event::OutboundQueryProgressed { id, result, step, stats } = event {
            let QueryResult::GetClosestPeers(result) = result else { return };
            if !step.last {
                return;
            }
            if let Some(moved) = self.relocating.remove(&id) {
                let found = match &result {
                    Ok(ok) => ok.peers.iter().find(|p| p.peer_id == moved).map(|p| p.addrs.clone()),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => {
                        peers.iter().find(|p| p.peer_id == moved).map(|p| p.addrs.clone())
                    }
                };
                debug!(peer = %moved, found = ?found, "lookup of a peer that could not be dialled done");
                if let Some(addrs) = found.filter(|a| !a.is_empty()) {
                    debug!(peer = %moved, ?addrs, "found where a peer that could not be dialled is now");
                    let addrs: Vec<Multiaddr> = addrs.into_iter().filter(dialable).collect();
                    self.swarm.behaviour_mut().unreachable.relocated(moved, addrs.clone(), std::time::Instant::now());
                    if self.role == Role::Vault && !self.banned(&moved) && self.worked(&moved) {
                        for addr in addrs {
                            self.swarm.behaviour_mut().kad.add_address(&moved, addr);
                        }
                    }
                }
                return;
            }
            let Some(lookup) = self.lookups.remove(&id) else { return };
            let peers = match result {
                Ok(ok) => ok.peers,
                // A timed-out lookup still tells us the best peers it reached; a lookup that
                // reached none is an error.
                Err(kad::GetClosestPeersError::Timeout { peers, .. }) if !peers.is_empty() => peers,
                Err(e) => {
                    let _ = lookup.reply.send(Err(NodeError::Lookup {
                        target: lookup.target,
                        reason: e.to_string(),
                    }));
                    return;
                }
            };
            let mut candidates: Vec<PeerId> =
                peers.into_iter().map(|p| p.peer_id).filter(|p| !self.banned(p) && self.worked(p)).collect();
            // Kademlia leaves out every peer whose answer came late, though a peer slow under
            // load is still in the group (CI: a burst of 300 lookups on two busy cores left
            // live group members out of a quarter of the results). Vaults of the routing table
            // this node is connected to are alive: they are candidates too.
            for p in self.routing_table() {
                if !candidates.contains(&p) && self.swarm.is_connected(&p) && !self.banned(&p) && self.worked(&p) {
                    candidates.push(p);
                }
            }
            if self.role == Role::Vault {
                candidates.push(self.local);
            }
            let _ = lookup.reply.send(Ok(Lookup {
                peers: close_group(&lookup.target, candidates, lookup.n),
                requests: stats.num_requests(),
                successes: stats.num_successes(),
            }));
        }
    }

    fn on_request_response(&mut self, event: request_response::Event<Envelope, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                self.on_inbound(peer, request, channel)
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure { peer, request_id, error, .. } => {
                // A vault that cannot be dialled at all is gone, even if this node never held a
                // connection to it to see close: drop it now rather than wait for Kademlia.
                if matches!(error, request_response::OutboundFailure::DialFailure) {
                    self.peer_left(peer, "dial failed");
                    self.relocate(peer);
                }
                if let Some(reply) = self.requests.remove(&request_id) {
                    let _ = reply.send(Err(NodeError::Request { peer, reason: error.to_string() }));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                self.stats.inbound_failures.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, %error, "inbound request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound(&mut self, peer: PeerId, envelope: Envelope, channel: ResponseChannel<Response>) {
        let Envelope { request, permit } = envelope;
        let from_vault = self.in_routing_table(&peer);
        if let Err(wait) = self.budgets.admit(peer, from_vault, request_cost(&request), std::time::Instant::now()) {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, ?wait, "request over the peer's budget");
            let retry_after_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
            let _ = self.swarm.behaviour_mut().rr.send_response(channel, Response::Error(RemoteError::RateLimited { retry_after_ms }));
            return;
        }
        let immediate = match &request {
            Request::Undecodable(e) => {
                self.stats.malformed_requests.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, error = %e, "malformed request");
                Some(Response::Error(RemoteError::Malformed(e.clone())))
            }
            Request::FindClosest { n, .. } if *n > MAX_GROUP_QUERY => Some(Response::Error(
                RemoteError::Invalid(format!("n = {n} exceeds the limit of {MAX_GROUP_QUERY}")),
            )),
            _ => None,
        };
        if let Some(response) = immediate {
            let _ = self.swarm.behaviour_mut().rr.send_response(channel, response);
            return;
        }
        let (tx, rx) = oneshot::channel();
        match self.inbound.try_send(InboundRequest { peer, request, from_vault, reply: tx, permit }) {
            Ok(()) => {
                let timeout = self.request_timeout;
                self.replies.push(Box::pin(async move {
                    let response = match tokio::time::timeout(timeout, rx).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(_)) => Response::Error(RemoteError::Internal("request dropped".into())),
                        Err(_) => Response::Error(RemoteError::Internal("request timed out".into())),
                    };
                    (channel, response)
                }));
            }
            Err(_) => {
                self.stats.busy_refusals.fetch_add(1, Ordering::Relaxed);
                let _ = self.swarm.behaviour_mut().rr.send_response(channel, Response::Error(RemoteError::Busy));
            }
        }
    }
}

/// Whether an advertised listen address is worth putting in a routing table.
fn dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
