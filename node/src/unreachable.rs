//! Peers that could not be dialled lately, and a behaviour that refuses to dial them again for
//! a while.
//!
//! A vault that died stays in other vaults' routing tables until they notice (keep-alives take
//! up to ten seconds), and they keep naming it in lookup answers. Every dial to it waits out the
//! QUIC handshake timeout, and a lookup or download waits with it. Once a dial to a peer has
//! failed, or the last connection to it broke, further dials to it fail at once for
//! [`UNREACHABLE_MEMORY`]. A connection the peer makes to this node proves it alive again.

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

/// How long dials to a peer are refused after one failed.
pub const UNREACHABLE_MEMORY: Duration = Duration::from_secs(30);

/// Peers whose last dial failed, and when; and the peers connected now.
#[derive(Debug, Default)]
pub(crate) struct Unreachable {
    failed: HashMap<PeerId, Instant>,
    connected: HashSet<PeerId>,
}

impl Unreachable {
    /// Notes that dialling `peer` failed, or its last connection broke, at `now`.
    pub fn dial_failed(&mut self, peer: PeerId, now: Instant) {
        self.failed.retain(|_, at| now.duration_since(*at) < UNREACHABLE_MEMORY);
        self.failed.insert(peer, now);
        self.connected.remove(&peer);
    }

    /// Notes that `peer` is connected, so reachable.
    pub fn connected(&mut self, peer: PeerId) {
        self.failed.remove(&peer);
        self.connected.insert(peer);
    }

    /// Notes that the last connection to `peer` closed in an orderly way.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
    }

    /// Whether a dial to `peer` at `now` should be refused.
    pub fn refuses(&self, peer: &PeerId, now: Instant) -> bool {
        let recent = |at: &Instant| now.duration_since(*at) < UNREACHABLE_MEMORY;
        if !self.failed.get(peer).is_some_and(recent) {
            return false;
        }
        // When most peers failed at once, the fault is likely this node's own link: refusing
        // them all would keep it cut off after the link came back.
        self.failed.values().filter(|at| recent(at)).count() <= self.connected.len()
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
            _ => Ok(Vec::new()),
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
    fn refuses_a_failed_peer_for_a_while_and_not_once_it_connects() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut u = Unreachable::default();
        u.connected(b);
        u.connected(c);
        let t0 = Instant::now();
        u.dial_failed(a, t0);
        assert!(u.refuses(&a, t0 + Duration::from_secs(1)));
        assert!(!u.refuses(&b, t0));
        assert!(!u.refuses(&a, t0 + UNREACHABLE_MEMORY), "forgiven after the memory");
        u.connected(a);
        assert!(!u.refuses(&a, t0), "a connection proves it reachable");
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
