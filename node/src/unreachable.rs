//! Peers that could not be dialled lately: a behaviour that refuses to dial them again for a
//! while, and keeps their addresses so that a passing failure never exiles them.
//!
//! A vault that died stays in other vaults' routing tables until they notice (keep-alives take
//! up to ten seconds), and they keep naming it in lookup answers. Every dial to it waits out the
//! QUIC handshake timeout, and a lookup or download waits with it. Once a dial to a peer has
//! failed, or the last connection to it broke, further dials to it fail at once for a while:
//! [`FIRST_BACKOFF`], doubling with each failure in a row up to [`MAX_BACKOFF`]. A connection
//! to or from the peer proves it alive again.
//!
//! A peer that failed is dropped from the routing table, and with it the only address this
//! node had for it; a client, which never receives connections, could then never reach it again
//! (`kura-testnet up --nodes 100` never turned healthy that way). So the addresses of peers
//! that left are kept here (bounded, for [`ADDRESS_MEMORY`]) and offered to every later dial of
//! the peer, and [`Unreachable::due_retries`] says which departed vaults to dial again, once
//! each backoff has passed.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionError, ConnectionId, DialError, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// How long dials to a peer are refused after a first failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest dials to a peer are refused after failures in a row.
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// How long the addresses of a peer that left are kept.
pub const ADDRESS_MEMORY: Duration = Duration::from_secs(3600);
/// Most peers whose addresses are kept after they left.
const MAX_REMEMBERED: usize = 4096;
/// Most addresses kept per peer.
const MAX_ADDRS: usize = 8;

#[derive(Debug, Clone)]
struct Failure {
    at: Instant,
    /// Failures in a row.
    streak: u32,
}

impl Failure {
    fn backoff(&self) -> Duration {
        FIRST_BACKOFF.saturating_mul(1 << self.streak.saturating_sub(1).min(16)).min(MAX_BACKOFF)
    }
}

#[derive(Debug, Clone)]
struct Remembered {
    addrs: Vec<Multiaddr>,
    since: Instant,
    /// Whether this node should dial it again by itself (a vault that left; not a client).
    retry: bool,
}

/// Peers whose last dial failed, and when; the peers connected now; and the addresses of
/// peers that left.
#[derive(Debug, Default)]
pub(crate) struct Unreachable {
    failed: HashMap<PeerId, Failure>,
    connected: HashSet<PeerId>,
    remembered: HashMap<PeerId, Remembered>,
}

impl Unreachable {
    /// Notes that dialling `peer` failed, or its last connection broke, at `now`.
    pub fn dial_failed(&mut self, peer: PeerId, now: Instant) {
        let streak = match self.failed.get(&peer) {
            // A failure soon after the last backoff ended continues the streak.
            Some(f) if now.duration_since(f.at) < f.backoff() + MAX_BACKOFF => f.streak + 1,
            _ => 1,
        };
        self.failed.retain(|_, f| now.duration_since(f.at) < f.backoff() + MAX_BACKOFF);
        // Bounded: lookup answers could name any number of ids that fail to dial.
        if self.failed.len() >= MAX_REMEMBERED && !self.failed.contains_key(&peer) {
            self.connected.remove(&peer);
            return;
        }
        self.failed.insert(peer, Failure { at: now, streak });
        self.connected.remove(&peer);
    }

    /// Notes that `peer` is connected, so reachable.
    pub fn connected(&mut self, peer: PeerId) {
        self.failed.remove(&peer);
        self.connected.insert(peer);
        if let Some(r) = self.remembered.get_mut(&peer) {
            r.retry = false;
        }
    }

    /// Keeps `addrs` for `peer`, which left the routing table at `now`; a vault (`retry`) is
    /// dialled again by [`Unreachable::due_retries`].
    pub fn remember(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, retry: bool, now: Instant) {
        if addrs.is_empty() {
            return;
        }
        if !self.remembered.contains_key(&peer) && self.remembered.len() >= MAX_REMEMBERED {
            self.remembered.retain(|_, r| now.duration_since(r.since) < ADDRESS_MEMORY);
            if self.remembered.len() >= MAX_REMEMBERED {
                return;
            }
        }
        let r = self.remembered.entry(peer).or_insert(Remembered { addrs: Vec::new(), since: now, retry });
        r.since = now;
        r.retry |= retry;
        for a in addrs {
            if !r.addrs.contains(&a) {
                r.addrs.insert(0, a);
            }
        }
        r.addrs.truncate(MAX_ADDRS);
    }

    /// `peer` was found at `addrs` by a lookup after dials to it failed: a new address is
    /// tried at once (the failure was the old address's), a known one waits out its backoff.
    pub fn relocated(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) {
        let known = self.addresses(&peer);
        let new = addrs.iter().any(|a| !known.contains(a));
        let retry = self.remembered.get(&peer).is_some_and(|r| r.retry);
        self.remember(peer, addrs, retry, now);
        if new {
            self.failed.remove(&peer);
        }
    }

    /// Lets the next dial of `peer` through (a lookup is about to dial it where others say it
    /// is now).
    pub fn forgive(&mut self, peer: &PeerId) {
        self.failed.remove(peer);
    }

    /// The addresses kept for `peer`.
    pub fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.remembered.get(peer).map(|r| r.addrs.clone()).unwrap_or_default()
    }

    /// Departed vaults to dial again at `now`: not connected, not refused, remembered within
    /// [`ADDRESS_MEMORY`]; each with its addresses. A dial that fails lengthens the wait.
    pub fn due_retries(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.remembered.retain(|_, r| now.duration_since(r.since) < ADDRESS_MEMORY);
        let due: Vec<(PeerId, Vec<Multiaddr>)> = self
            .remembered
            .iter()
            .filter(|(p, r)| r.retry && !self.connected.contains(p) && !self.refuses(p, now))
            .map(|(p, r)| (*p, r.addrs.clone()))
            .collect();
        // Until the dial's outcome is known, it counts as failing: no second dial meanwhile.
        for (p, _) in &due {
            let streak = self.failed.get(p).map_or(0, |f| f.streak);
            self.failed.insert(*p, Failure { at: now, streak: streak.max(1) });
        }
        due
    }

    /// Notes that the last connection to `peer` closed in an orderly way.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
    }

    /// Whether a dial to `peer` at `now` should be refused.
    pub fn refuses(&self, peer: &PeerId, now: Instant) -> bool {
        let recent = |f: &Failure| now.duration_since(f.at) < f.backoff();
        if !self.failed.get(peer).is_some_and(recent) {
            return false;
        }
        // When most peers failed at once, the fault is likely this node's own link: refusing
        // them all would keep it cut off after the link came back.
        self.failed.values().filter(|f| recent(f)).count() <= self.connected.len()
    }
}

/// Why a dial was refused.
#[derive(Debug, thiserror::Error)]
#[error("peer unreachable when last dialled")]
struct Refused;

/// Whether `error` says the peer itself could not be reached (not that the dial was never
/// tried, or was refused here).
fn is_unreachable(error: &DialError) -> bool {
    matches!(error, DialError::Transport(_) | DialError::WrongPeerId { .. })
}

impl NetworkBehaviour for Unreachable {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match maybe_peer {
            Some(peer) if self.refuses(&peer, Instant::now()) => Err(ConnectionDenied::new(Refused)),
            // The addresses a departed peer had: without them a peer dropped from the routing
            // table could not be dialled at all.
            Some(peer) => Ok(self.addresses(&peer)),
            None => Ok(Vec::new()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::DialFailure(f) => {
                if let Some(peer) = f.peer_id.filter(|_| is_unreachable(f.error)) {
                    self.dial_failed(peer, Instant::now());
                }
            }
            FromSwarm::ConnectionEstablished(e) => self.connected(e.peer_id),
            // The last connection failing (keep-alives unanswered, or the peer went away) is
            // as good as a failed dial: the next dial would wait out the handshake timeout.
            // Closing an idle connection here is not.
            FromSwarm::ConnectionClosed(c) if c.remaining_established == 0 => match c.cause {
                Some(ConnectionError::IO(_)) => self.dial_failed(c.peer_id, Instant::now()),
                _ => self.disconnected(&c.peer_id),
            },
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _connection: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_failed_peer_for_a_growing_while_and_not_once_it_connects() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut u = Unreachable::default();
        u.connected(b);
        u.connected(c);
        let t0 = Instant::now();
        u.dial_failed(a, t0);
        assert!(u.refuses(&a, t0 + Duration::from_secs(1)));
        assert!(!u.refuses(&b, t0));
        assert!(!u.refuses(&a, t0 + FIRST_BACKOFF), "tried again after the first backoff");
        // Failing again soon doubles the wait, up to the cap.
        let mut t = t0 + FIRST_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..8 {
            u.dial_failed(a, t);
            let wait = (1..=MAX_BACKOFF.as_secs()).find(|s| !u.refuses(&a, t + Duration::from_secs(*s))).unwrap();
            waits.push(wait);
            t += Duration::from_secs(wait);
        }
        assert_eq!(waits, vec![10, 20, 40, 80, 120, 120, 120, 120]);
        u.connected(a);
        assert!(!u.refuses(&a, t), "a connection proves it reachable");
        u.dial_failed(a, t);
        assert!(!u.refuses(&a, t + FIRST_BACKOFF), "and starts the streak over");
    }

    #[test]
    fn a_peer_found_at_a_new_address_is_dialled_at_once() {
        let peer = PeerId::random();
        let (old, new): (Multiaddr, Multiaddr) =
            ("/ip4/127.0.0.1/udp/4000/quic-v1".parse().unwrap(), "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap());
        let mut u = Unreachable::default();
        u.connected(PeerId::random());
        u.connected(PeerId::random());
        let t0 = Instant::now();
        u.remember(peer, vec![old.clone()], false, t0);
        u.dial_failed(peer, t0);
        u.relocated(peer, vec![old.clone()], t0);
        assert!(u.refuses(&peer, t0), "the same address waits out its backoff");
        u.relocated(peer, vec![new.clone()], t0);
        assert!(!u.refuses(&peer, t0), "a new address is tried at once");
        assert_eq!(u.addresses(&peer), vec![new, old], "newest first");
    }

    #[test]
    fn departed_vaults_keep_their_addresses_and_are_retried_once_per_backoff() {
        let (vault, client) = (PeerId::random(), PeerId::random());
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4000/quic-v1".parse().unwrap();
        let mut u = Unreachable::default();
        u.connected(PeerId::random());
        u.connected(PeerId::random());
        let t0 = Instant::now();
        u.remember(vault, vec![addr.clone()], true, t0);
        u.remember(client, vec![addr.clone()], false, t0);
        assert_eq!(u.addresses(&vault), vec![addr.clone()]);
        u.dial_failed(vault, t0);
        assert!(u.due_retries(t0 + Duration::from_secs(1)).is_empty(), "not while refused");
        let due = u.due_retries(t0 + FIRST_BACKOFF);
        assert_eq!(due, vec![(vault, vec![addr.clone()])], "a vault, not a client, is dialled again");
        assert!(u.due_retries(t0 + FIRST_BACKOFF).is_empty(), "one dial at a time");
        u.connected(vault);
        assert!(u.due_retries(t0 + FIRST_BACKOFF * 10).is_empty(), "back: no more retries");
        assert_eq!(u.addresses(&vault), vec![addr], "its address is still offered to dials");
        assert!(u.due_retries(t0 + ADDRESS_MEMORY * 2).is_empty());
        assert!(u.addresses(&vault).is_empty(), "forgotten after the memory");
    }

    #[test]
    fn refuses_nobody_when_most_peers_failed_at_once() {
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let mut u = Unreachable::default();
        for p in &peers {
            u.connected(*p);
        }
        let t0 = Instant::now();
        // This node's own link went down: every connection broke.
        for p in &peers[..4] {
            u.dial_failed(*p, t0);
        }
        assert!(!u.refuses(&peers[0], t0), "4 failed, 1 connected: the fault is here");
        u.connected(peers[0]);
        u.connected(peers[1]);
        u.connected(peers[2]);
        assert!(u.refuses(&peers[3], t0), "1 failed, 4 connected: that peer is gone");
    }

    #[test]
    fn only_failures_to_reach_the_peer_count() {
        assert!(!is_unreachable(&DialError::NoAddresses));
        assert!(!is_unreachable(&DialError::Aborted));
        assert!(!is_unreachable(&DialError::Denied { cause: ConnectionDenied::new(Refused) }));
        assert!(is_unreachable(&DialError::Transport(Vec::new())));
    }
}
