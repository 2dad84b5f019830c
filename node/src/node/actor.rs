//! The swarm actor: the one task that owns the libp2p swarm. It takes commands from
//! [`NodeHandle`](super::NodeHandle)s, answers inbound requests within each peer's budget,
//! keeps the routing table to vaults with work (and out of penalized ones), and finds where
//! departed peers went.

use super::*;


pub(super) type ReplyFuture = Pin<Box<dyn Future<Output = (ResponseChannel<Response>, Response)> + Send>>;

pub(super) struct PendingLookup {
    pub(super) target: Address,
    pub(super) n: usize,
    pub(super) reply: oneshot::Sender<Result<Lookup, NodeError>>,
}

pub(super) struct Actor {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) role: Role,
    pub(super) local: PeerId,
    pub(super) listen_addrs: Vec<Multiaddr>,
    pub(super) inbound: mpsc::Sender<InboundRequest>,
    pub(super) stats: Arc<NodeStats>,
    pub(super) events: broadcast::Sender<NodeEvent>,
    pub(super) lookups: HashMap<kad::QueryId, PendingLookup>,
    pub(super) requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, NodeError>>>,
    pub(super) replies: FuturesUnordered<ReplyFuture>,
    /// Due times of the remaining join bootstraps, latest first (so `pop` yields the next).
    pub(super) join_bootstraps: Vec<Instant>,
    pub(super) request_timeout: Duration,
    /// Peers dropped for misbehaving, kept out of the routing table for a while.
    pub(super) penalties: Penalties,
    /// What each peer may still ask of this node.
    pub(super) budgets: Budgets,
    /// Bits of work a vault id must carry to enter the routing table.
    pub(super) id_difficulty: u8,
    /// Ids of one IP address a bucket may hold.
    pub(super) ids_per_ip: Option<usize>,
    /// Lookups run to find where a peer that could not be dialled is now, by query.
    pub(super) relocating: HashMap<kad::QueryId, PeerId>,
    /// When each peer was last looked for that way (one lookup per peer per few seconds).
    pub(super) relocated_at: HashMap<PeerId, std::time::Instant>,
}

/// Most lookups for moved peers in flight, and peers remembered as looked for.
const MAX_RELOCATING: usize = 256;
/// How often one peer is looked for after failed dials.
const RELOCATE_EVERY: Duration = Duration::from_secs(5);

impl Actor {
    pub(super) async fn run(mut self, mut cmd_rx: mpsc::Receiver<Command>) {
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
                let want = NonZeroUsize::new(n.max(20)).expect("nonzero");
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
            Command::PeerIps { peers, reply } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let ips = peers
                    .iter()
                    .map(|peer| {
                        let bucket = kad.kbucket(*peer)?;
                        let entry = bucket.iter().find(|e| e.node.key.preimage() == peer)?;
                        crate::limits::remote_ips(entry.node.value.iter()).into_iter().next()
                    })
                    .collect();
                let _ = reply.send(ips);
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
