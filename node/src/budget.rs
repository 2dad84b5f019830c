//! Per-peer request budgets: how many requests, and how many bytes, each peer may have served
//! per second.
//!
//! Peer ids cost nothing, and any peer may send any bytes, so every peer draws from its own
//! pair of token buckets (requests and bytes), refilled at a steady rate up to a burst. A
//! request past either budget is answered at once with [`RemoteError::RateLimited`] and never
//! reaches the vault: a flooder spends its own bandwidth and the vault's other peers are served
//! as before. Vaults in the routing table get a larger budget than clients, since after a
//! departure they ask about every chunk they share at once.
//!
//! The map of buckets is bounded: a bucket that has refilled is the same as no bucket, so it
//! is forgotten when room is needed; when every bucket is in use, a new peer is refused until
//! one refills (connection limits keep the peers that can ask at once well under the bound).
//!
//! [`RemoteError::RateLimited`]: crate::wire::RemoteError::RateLimited

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::wire::Request;

/// What one kind of peer may spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Requests per second, sustained.
    pub requests_per_sec: f64,
    /// Of those, writes (records to store) per second: each costs the vault a durable write.
    pub writes_per_sec: f64,
    /// Request bytes per second, sustained (see [`request_cost`]).
    pub bytes_per_sec: f64,
    /// How many seconds' worth may be spent at once.
    pub burst_secs: f64,
}

impl Budget {
    /// Clients: 400 requests and 64 MiB per second (a fast upload spreads over many vaults,
    /// each seeing a fraction of it), with two seconds' burst.
    pub const CLIENT: Budget =
        Budget { requests_per_sec: 400.0, writes_per_sec: 100.0, bytes_per_sec: 64.0 * 1048576.0, burst_secs: 2.0 };
    /// Vaults in the routing table: 2,000 requests and 128 MiB per second, with five seconds'
    /// burst (repair after a departure).
    pub const VAULT: Budget =
        Budget { requests_per_sec: 2000.0, writes_per_sec: 1000.0, bytes_per_sec: 128.0 * 1048576.0, burst_secs: 5.0 };
}

/// What a request costs against a budget: bytes (what it carries, or for a read about what its
/// answer carries; a shard of a 1 MiB chunk is 256 KiB; at least 1 KiB, and a record at least
/// the 4 KiB it is charged against the quota), and whether it is a write.
pub fn request_cost(request: &Request) -> Cost {
    const SHARD: u64 = 256 << 10;
    let (bytes, write) = match request {
        Request::PutShard(s) => (s.data.len() as u64, true),
        Request::PutRecord(r) => (r.size() as u64, true),
        Request::GetShards { .. } | Request::GetRecord(_) => (SHARD, false),
        Request::Audit { .. } => (16 << 10, false),
        _ => (0, false),
    };
    Cost { bytes: bytes.max(if write { 4096 } else { 1024 }), write }
}

/// What one request costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Bytes charged.
    pub bytes: u64,
    /// Whether it is a write.
    pub write: bool,
}

#[derive(Debug, Clone)]
struct Bucket {
    requests: f64,
    writes: f64,
    bytes: f64,
    at: Instant,
}

/// The buckets of every peer that asked lately.
#[derive(Debug)]
pub(crate) struct Budgets {
    client: Budget,
    vault: Budget,
    max_peers: usize,
    peers: HashMap<PeerId, Bucket>,
}

impl Budgets {
    /// Budgets for clients and vaults, remembering at most `max_peers` peers.
    pub fn new(client: Budget, vault: Budget, max_peers: usize) -> Self {
        Budgets { client, vault, max_peers: max_peers.max(1), peers: HashMap::new() }
    }

    /// Charges `peer` (a vault in the routing table when `vault`) one request costing `cost`
    /// at `now`; `Err` says how long until it would be admitted.
    pub fn admit(&mut self, peer: PeerId, vault: bool, cost: Cost, now: Instant) -> Result<(), Duration> {
        let budget = if vault { self.vault } else { self.client };
        let (max_requests, max_bytes) = (budget.requests_per_sec * budget.burst_secs, budget.bytes_per_sec * budget.burst_secs);
        let max_writes = budget.writes_per_sec * budget.burst_secs;
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.max_peers {
            self.forget_refilled(now);
            if self.peers.len() >= self.max_peers {
                return Err(Duration::from_secs(1));
            }
        }
        let b = self.peers.entry(peer).or_insert(Bucket { requests: max_requests, writes: max_writes, bytes: max_bytes, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.requests = (b.requests + elapsed * budget.requests_per_sec).min(max_requests);
        b.writes = (b.writes + elapsed * budget.writes_per_sec).min(max_writes);
        b.bytes = (b.bytes + elapsed * budget.bytes_per_sec).min(max_bytes);
        b.at = now;
        // A request larger than the whole burst is admitted on a full bucket, so no request
        // is refused forever; the debt then holds the peer back for its size.
        let bytes = cost.bytes as f64;
        let writes_ok = !cost.write || b.writes >= 1.0;
        if b.requests >= 1.0 && writes_ok && (b.bytes >= bytes || b.bytes >= max_bytes) {
            b.requests -= 1.0;
            b.bytes -= bytes;
            if cost.write {
                b.writes -= 1.0;
            }
            return Ok(());
        }
        let wait_requests = (1.0 - b.requests).max(0.0) / budget.requests_per_sec;
        let wait_writes = if cost.write { (1.0 - b.writes).max(0.0) / budget.writes_per_sec } else { 0.0 };
        let wait_bytes = (bytes.min(max_bytes) - b.bytes).max(0.0) / budget.bytes_per_sec;
        Err(Duration::from_secs_f64(wait_requests.max(wait_writes).max(wait_bytes)).max(Duration::from_millis(1)))
    }

    /// Drops the buckets that have refilled by `now` (a full bucket is no different from none).
    fn forget_refilled(&mut self, now: Instant) {
        let longest = Duration::from_secs_f64(self.client.burst_secs.max(self.vault.burst_secs));
        self.peers.retain(|_, b| now.saturating_duration_since(b.at) < longest);
    }

    /// Peers with a bucket now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Budget = Budget { requests_per_sec: 10.0, writes_per_sec: 5.0, bytes_per_sec: 1000.0, burst_secs: 2.0 };

    fn read(bytes: u64) -> Cost {
        Cost { bytes, write: false }
    }

    #[test]
    fn a_peer_spends_its_burst_then_its_rate() {
        let mut b = Budgets::new(TEST, TEST, 100);
        let (p, t0) = (PeerId::random(), Instant::now());
        for _ in 0..20 {
            b.admit(p, false, read(1), t0).unwrap();
        }
        let wait = b.admit(p, false, read(1), t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}");
        assert!(b.admit(p, false, read(1), t0 + Duration::from_millis(100)).is_ok(), "one more after 1/10 s");
        assert!(b.admit(p, false, read(1), t0 + Duration::from_millis(100)).is_err());
        // Another peer is not held back by the first.
        assert!(b.admit(PeerId::random(), false, read(1), t0).is_ok());
    }

    #[test]
    fn bytes_are_budgeted_too_and_huge_requests_pass_on_a_full_bucket() {
        let mut b = Budgets::new(TEST, TEST, 100);
        let (p, t0) = (PeerId::random(), Instant::now());
        b.admit(p, false, read(1500), t0).unwrap();
        let wait = b.admit(p, false, read(1000), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "500 bytes short at 1000 bytes/s");
        let q = PeerId::random();
        b.admit(q, false, read(1_000_000), t0).unwrap();
        let wait = b.admit(q, false, read(1), t0).unwrap_err();
        assert!(wait > Duration::from_secs(900), "the debt holds it back: {wait:?}");
    }

    #[test]
    fn writes_have_a_budget_of_their_own() {
        let mut b = Budgets::new(TEST, TEST, 100);
        let (p, t0) = (PeerId::random(), Instant::now());
        let write = Cost { bytes: 1, write: true };
        assert_eq!((0..100).filter(|_| b.admit(p, false, write, t0).is_ok()).count(), 10, "5 writes/s, 2 s burst");
        assert!(b.admit(p, false, read(1), t0).is_ok(), "reads still pass");
        assert_eq!(b.admit(p, false, write, t0).unwrap_err(), Duration::from_millis(200));
    }

    #[test]
    fn vaults_get_their_own_budget() {
        let big = Budget { requests_per_sec: 1000.0, ..TEST };
        let mut b = Budgets::new(TEST, big, 100);
        let (v, c, t0) = (PeerId::random(), PeerId::random(), Instant::now());
        assert_eq!((0..100).filter(|_| b.admit(c, false, read(1), t0).is_ok()).count(), 20);
        assert_eq!((0..100).filter(|_| b.admit(v, true, read(1), t0).is_ok()).count(), 100);
    }

    #[test]
    fn the_map_is_bounded_and_forgets_refilled_peers() {
        let mut b = Budgets::new(TEST, TEST, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            b.admit(PeerId::random(), false, read(1), t0).unwrap();
        }
        assert!(b.admit(PeerId::random(), false, read(1), t0).is_err(), "no room while all are in use");
        assert_eq!(b.len(), 3);
        let later = t0 + Duration::from_secs(3);
        b.admit(PeerId::random(), false, read(1), later).unwrap();
        assert_eq!(b.len(), 1, "refilled buckets were forgotten");
    }
}
