//! Which peers this node has dropped from its routing table for misbehaving, and until when.
//!
//! A vault that fails a storage audit is dropped and kept out for a while, so that lookups and
//! repair stop counting on it; each further offence doubles the time. Offences are forgotten
//! after a long quiet spell, so a vault that lost data once and was refilled is not shunned
//! forever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a first offence keeps a peer out.
pub const FIRST_PENALTY: Duration = Duration::from_secs(60);
/// The longest a peer is kept out.
pub const MAX_PENALTY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Record {
    offences: u32,
    until: Instant,
}

/// Peers kept out of the routing table.
#[derive(Debug, Default)]
pub(crate) struct Penalties {
    peers: HashMap<PeerId, Record>,
}

impl Penalties {
    /// Records an offence by `peer` at `now`; returns how long it is kept out.
    pub fn penalize(&mut self, peer: PeerId, now: Instant) -> Duration {
        let offences = match self.peers.get(&peer) {
            // Offences within a few penalty spans of each other escalate.
            Some(r) if now < r.until + MAX_PENALTY => r.offences + 1,
            _ => 1,
        };
        let span = FIRST_PENALTY.saturating_mul(1 << (offences - 1).min(16)).min(MAX_PENALTY);
        self.peers.insert(peer, Record { offences, until: now + span });
        span
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
        let t0 = Instant::now();
        assert!(!p.is_banned(&peer, t0));
        assert_eq!(p.penalize(peer, t0), FIRST_PENALTY);
        assert!(p.is_banned(&peer, t0 + FIRST_PENALTY / 2));
        assert!(!p.is_banned(&peer, t0 + FIRST_PENALTY));
        let t1 = t0 + FIRST_PENALTY * 2;
        assert_eq!(p.penalize(peer, t1), FIRST_PENALTY * 2);
        let mut t = t1;
        for _ in 0..20 {
            t += Duration::from_secs(1);
            assert!(p.penalize(peer, t) <= MAX_PENALTY);
        }
        assert_eq!(p.penalize(peer, t), MAX_PENALTY);
        let much_later = t + MAX_PENALTY * 3;
        p.prune(much_later);
        assert_eq!(p.penalize(peer, much_later), FIRST_PENALTY, "old offences are forgotten");
        assert!(!p.is_banned(&PeerId::random(), much_later));
    }
}
