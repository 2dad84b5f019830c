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
use crate::config::{NodeConfig, Role};
use crate::error::NodeError;
use crate::penalty::Penalties;
use crate::unreachable::Unreachable;
use crate::wire::{RemoteError, Request, Response, KAD_PROTOCOL, MAX_GROUP_QUERY, REQUEST_PROTOCOL};

mod actor;
use actor::Actor;

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
    permit: Option<crate::fair::Share>,
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
    _permit: Option<crate::fair::Share>,
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
    PeerIps {
        peers: Vec<PeerId>,
        reply: oneshot::Sender<Vec<Option<std::net::IpAddr>>>,
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

    /// The IP address each of `peers` is known at in the routing table (none for a peer not
    /// in it, or known only at a loopback address).
    pub async fn peer_ips(&self, peers: Vec<PeerId>) -> Result<Vec<Option<std::net::IpAddr>>, NodeError> {
        self.call(|reply| Command::PeerIps { peers, reply }).await
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
    let (stream_window, connection_window, incoming_streams) = (config.stream_window, config.connection_window, config.incoming_streams);
    let (inbound_bytes, inbound_rate) = (config.inbound_bytes, config.inbound_rate);
    let streams_per_connection = config.streams_per_connection;
    let max_connections = config.max_connections as u32;
    let connections_per_peer = config.connections_per_peer as u32;
    let per_ip = config.connections_per_ip;
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_quic_config(|mut c| {
            c.max_idle_timeout = u32::try_from(dead_peer_timeout.as_millis()).unwrap_or(u32::MAX);
            c.keep_alive_interval = dead_peer_timeout / 4;
            c.max_stream_data = stream_window;
            c.max_connection_data = connection_window.max(stream_window);
            c.max_concurrent_stream_limit = incoming_streams.max(1);
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
                KuraCodec::with_rate(inbound_bytes, inbound_rate),
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

