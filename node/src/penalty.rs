//! Which peers this node has dropped from its routing table for misbehaving, and until when.
//!
//! A vault that fails a storage audit is dropped and kept out for a while, so that lookups and
//! repair stop counting on it; each offence after the penalty ended doubles the time (a vault
//! usually fails many audits at once, for every shard it lost: that is one offence). When a
//! penalty ends the peer is put back with the addresses it had, so it takes its place in close
//! groups again. Offences are forgotten after a long quiet spell, so a vault that lost data
//! once and was refilled is not shunned forever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// How long a first offence keeps a peer out.
pub const FIRST_PENALTY: Duration = Duration::from_secs(60);
/// The longest a peer is kept out.
pub const MAX_PENALTY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Record {
    offences: u32,
    until: Instant,
    /// Where the peer was reachable; `None` once it has been put back.
    addrs: Option<Vec<Multiaddr>>,
}

/// Peers kept out of the routing table.
#[derive(Debug, Default)]
pub(crate) struct Penalties {
    peers: HashMap<PeerId, Record>,
}

impl Penalties {
    /// Records an offence by `peer`, reachable at `addrs`, at `now`; returns how long it is
    /// kept out from now.
    pub fn penalize(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) -> Duration {
        if let Some(r) = self.peers.get_mut(&peer).filter(|r| now < r.until) {
            // Already out: more failures found meanwhile are the same offence.
            r.addrs.get_or_insert_with(Vec::new).extend(addrs);
            return r.until - now;
        }
        let offences = match self.peers.get(&peer) {
            // An offence soon after the last penalty ended escalates.
            Some(r) if now < r.until + MAX_PENALTY => r.offences + 1,
            _ => 1,
        };
        let span = FIRST_PENALTY.saturating_mul(1 << (offences - 1).min(16)).min(MAX_PENALTY);
        self.peers.insert(peer, Record { offences, until: now + span, addrs: Some(addrs) });
        span
    }

    /// Peers whose penalty has ended by `now` and who have not been put back yet, with their
    /// addresses; each is returned once.
    pub fn released(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers
            .iter_mut()
            .filter(|(_, r)| now >= r.until)
            .filter_map(|(p, r)| r.addrs.take().map(|a| (*p, a)))
            .collect()
    }

    /// Whether `peer` is kept out at `now`.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers.get(peer).is_some_and(|r| now < r.until)
    }

    /// Forgets offences long past, so the map does not grow without bound.
    pub fn prune(&mut self, now: Instant) {
        self.peers.retain(|_, r| now < r.until + MAX_PENALTY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_offences_escalate_then_are_forgotten() {
        let mut p = Penalties::default();
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4000/quic-v1".parse().unwrap();
        let t0 = Instant::now();
        assert!(!p.is_banned(&peer, t0));
        assert_eq!(p.penalize(peer, vec![addr.clone()], t0), FIRST_PENALTY);
        // Failures found while it is out do not lengthen the penalty.
        let half = t0 + FIRST_PENALTY / 2;
        assert_eq!(p.penalize(peer, vec![], half), FIRST_PENALTY / 2);
        assert!(p.is_banned(&peer, half));
        assert!(p.released(half).is_empty());
        assert!(!p.is_banned(&peer, t0 + FIRST_PENALTY));
        assert_eq!(p.released(t0 + FIRST_PENALTY), vec![(peer, vec![addr])], "put back once, with its address");
        assert!(p.released(t0 + FIRST_PENALTY).is_empty());
        // Offending again soon after doubles the penalty, up to the cap.
        let mut t = t0 + FIRST_PENALTY * 2;
        assert_eq!(p.penalize(peer, vec![], t), FIRST_PENALTY * 2);
        for _ in 0..20 {
            t += p.penalize(peer, vec![], t);
            assert!(p.penalize(peer, vec![], t) <= MAX_PENALTY);
        }
        assert_eq!(p.penalize(peer, vec![], t + MAX_PENALTY), MAX_PENALTY);
        let much_later = t + MAX_PENALTY * 5;
        p.prune(much_later);
        assert_eq!(p.penalize(peer, vec![], much_later), FIRST_PENALTY, "old offences are forgotten");
        assert!(!p.is_banned(&PeerId::random(), much_later));
    }
}
