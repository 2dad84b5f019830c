//! A byte budget shared by many connections and granted fairly: whoever drew least lately is
//! served first. It can also bound the rate at which all connections together are read.
//!
//! Inbound requests draw on one budget as their bytes arrive (see [`crate::KuraCodec`]). With a
//! first-come queue, a peer that opens many streams of maximal frames (peer ids are free, so
//! many peers) takes nearly all of it, and an honest client's one small request waits behind
//! every one of their pieces. Here each waiting draw is ranked by what its connection drew in
//! about the last second, so a connection that sent little goes before one that sent
//! megabytes: a flood slows the flooders, not everyone. A draw is never skipped for a smaller
//! one behind it, so a large frame is not starved either.
//!
//! With a rate, what is not read is not sent: QUIC's flow control stops a sender whose stream
//! this node does not read, so the rate bounds the bytes all peers together make this node
//! decrypt, copy and decode, before any request is looked at.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A budget of bytes shared by connections, and optionally a rate they are read at.
#[derive(Debug)]
pub struct FairBudget {
    state: Mutex<State>,
}

/// How fast a connection's recent use is forgotten (its rank is its bytes drawn lately,
/// decaying by half about every this long).
const MEMORY_SECS: f64 = 1.0;

/// Draws this small do not wait for the rate (they are still counted against it, and may run
/// it into debt): a request that fits in one is cheap to read. Their number is bounded per peer by the
/// request budgets ([`crate::budget`]).
const UNRATED: usize = 4 << 10;

/// Connections whose recent use is remembered; past this, those that used little are dropped.
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug)]
struct State {
    available: usize,
    held: HashMap<u64, usize>,
    /// Bytes each connection drew lately (decayed) and when that was last updated.
    used: HashMap<u64, (f64, Instant)>,
    /// Bytes a second all connections together are read at, and what the rate has earned
    /// (at most a second's worth).
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    /// Waiting draws by arrival; the next served is the one whose connection drew least lately
    /// as of the moment it is served (a rank fixed when it asked would let a flood's draws
    /// queued during a lull go ahead of a quiet peer's).
    queue: BTreeMap<u64, Waiter>,
    arrivals: u64,
    /// When a waiter's timer last looked at the queue.
    looked: Instant,
}

#[derive(Debug)]
struct Waiter {
    conn: u64,
    amount: usize,
    tx: oneshot::Sender<Share>,
}

/// Bytes of a [`FairBudget`] held by one connection, given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<FairBudget>,
    conn: u64,
    amount: usize,
}

impl Share {
    /// Bytes held.
    pub fn amount(&self) -> usize {
        self.amount
    }

    /// Adds `other` (of the same connection) to this share.
    pub fn merge(&mut self, mut other: Share) {
        debug_assert_eq!(self.conn, other.conn);
        self.amount += std::mem::take(&mut other.amount);
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.amount > 0 {
            self.budget.release(self.conn, self.amount);
        }
    }
}

fn decayed(used: f64, since: Instant, now: Instant) -> f64 {
    used * (-(now - since).as_secs_f64() / MEMORY_SECS * std::f64::consts::LN_2).exp()
}

impl State {
    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            // A second's worth at most may be drawn at once.
            self.tokens = (self.tokens + rate * (now - self.refilled).as_secs_f64()).min(rate);
        }
        self.refilled = now;
    }

    fn used(&self, conn: u64, now: Instant) -> f64 {
        self.used.get(&conn).map_or(0.0, |(u, at)| decayed(*u, *at, now))
    }

    /// Whether `amount` may be drawn now: the budget has room, and the rate has earned it (a
    /// draw waits until all of it is earned rather than running the rate into debt, so a small
    /// draw ranked ahead of a flood's large one is served as soon as its own bytes are earned).
    fn grantable(&self, amount: usize) -> bool {
        self.available >= amount && (amount <= UNRATED || self.rate.is_none_or(|r| self.tokens >= (amount as f64).min(r)))
    }

    fn take(&mut self, conn: u64, amount: usize, now: Instant) {
        self.available -= amount;
        *self.held.entry(conn).or_default() += amount;
        if self.rate.is_some() {
            self.tokens -= amount as f64;
        }
        if self.used.len() >= MAX_REMEMBERED && !self.used.contains_key(&conn) {
            self.used.retain(|_, (u, at)| decayed(*u, *at, now) >= 4096.0);
        }
        let used = self.used(conn, now) + amount as f64;
        if self.used.len() < MAX_REMEMBERED {
            self.used.insert(conn, (used, now));
        }
    }

    fn give_back(&mut self, conn: u64, amount: usize) {
        self.available += amount;
        if let Some(h) = self.held.get_mut(&conn) {
            *h = h.saturating_sub(amount);
            if *h == 0 {
                self.held.remove(&conn);
            }
        }
    }

    /// The waiter served next: the one whose connection holds and drew least now, the earliest
    /// among equals. Returns its arrival and amount.
    fn next(&self, now: Instant) -> Option<(u64, usize)> {
        let rank = |w: &Waiter| self.used(w.conn, now) + self.held.get(&w.conn).copied().unwrap_or(0) as f64;
        self.queue.iter().min_by(|(a, x), (b, y)| rank(x).total_cmp(&rank(y)).then(a.cmp(b))).map(|(k, w)| (*k, w.amount))
    }

    /// How long until the rate lets the next waiter through (releases wake waiters sooner).
    fn wait(&self) -> Duration {
        let needed = self.next(Instant::now()).map_or(0, |(_, a)| a);
        match self.rate {
            Some(rate) if needed > UNRATED && self.tokens < (needed as f64).min(rate) => {
                Duration::from_secs_f64(((needed as f64).min(rate) - self.tokens) / rate).clamp(Duration::from_millis(1), Duration::from_millis(100))
            }
            _ => Duration::from_millis(100),
        }
    }
}

impl FairBudget {
    /// A budget of `total` bytes held at once, read at any rate.
    pub fn new(total: usize) -> Arc<FairBudget> {
        FairBudget::with_rate(total, None)
    }

    /// A budget of `total` bytes held at once, and of `rate` bytes a second drawn by all
    /// connections together (`None`: any rate).
    pub fn with_rate(total: usize, rate: Option<u64>) -> Arc<FairBudget> {
        let rate = rate.map(|r| r.max(1) as f64);
        let state = State {
            available: total,
            held: HashMap::new(),
            used: HashMap::new(),
            rate,
            tokens: rate.unwrap_or(0.0),
            refilled: Instant::now(),
            queue: BTreeMap::new(),
            arrivals: 0,
            looked: Instant::now(),
        };
        Arc::new(FairBudget { state: Mutex::new(state) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes not held by anyone.
    pub fn available(&self) -> usize {
        self.lock().available
    }

    /// Draws `amount` bytes for connection `conn`, waiting for its turn.
    pub async fn acquire(self: &Arc<Self>, conn: u64, amount: usize) -> Share {
        let mut rx = {
            let mut s = self.lock();
            let now = Instant::now();
            s.refill(now);
            if s.queue.is_empty() && s.grantable(amount) {
                s.take(conn, amount, now);
                return Share { budget: self.clone(), conn, amount };
            }
            let (tx, rx) = oneshot::channel();
            let arrival = s.arrivals;
            s.arrivals += 1;
            s.queue.insert(arrival, Waiter { conn, amount, tx });
            rx
        };
        loop {
            // Releases wake waiters; time does too, when the rate is what holds them back.
            let wait = self.lock().wait();
            tokio::select! {
                share = &mut rx => {
                    return match share {
                        Ok(share) => share,
                        // The budget went away while this waited: nothing is held.
                        Err(_) => Share { budget: self.clone(), conn, amount: 0 },
                    };
                }
                _ = tokio::time::sleep(wait) => {
                    // Every waiter has a timer, and a look costs a pass over the queue: many
                    // waiters waking together look once a millisecond between them.
                    let look = {
                        let mut s = self.lock();
                        let due = s.looked.elapsed() >= Duration::from_millis(1);
                        if due {
                            s.looked = Instant::now();
                        }
                        due
                    };
                    if look {
                        self.pump();
                    }
                }
            }
        }
    }

    fn release(self: &Arc<Self>, conn: u64, amount: usize) {
        self.lock().give_back(conn, amount);
        self.pump();
    }

    /// Grants waiting draws in their order while the budget and the rate allow.
    fn pump(self: &Arc<Self>) {
        let mut s = self.lock();
        let now = Instant::now();
        s.refill(now);
        // Draws whose waiters went (a stream closed, a read timed out) give up their place.
        s.queue.retain(|_, w| !w.tx.is_closed());
        loop {
            let Some((arrival, amount)) = s.next(now) else { break };
            if !s.grantable(amount) {
                break;
            }
            let Some(w) = s.queue.remove(&arrival) else { break };
            s.take(w.conn, w.amount, now);
            if let Err(mut share) = w.tx.send(Share { budget: self.clone(), conn: w.conn, amount: w.amount }) {
                // Gone between the check and the send: undone here, under the lock.
                let amount = std::mem::take(&mut share.amount);
                s.give_back(w.conn, amount);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_connection_holding_nothing_goes_before_a_flood() {
        let budget = FairBudget::new(100);
        // A flooding connection takes the whole budget and queues more.
        let held = budget.acquire(1, 100).await;
        let mut flood = Vec::new();
        for _ in 0..5 {
            let b = budget.clone();
            flood.push(tokio::spawn(async move { b.acquire(1, 50).await }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // An honest connection asks after all of them.
        let honest = {
            let b = budget.clone();
            tokio::spawn(async move { b.acquire(2, 10).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let share = tokio::time::timeout(Duration::from_secs(1), honest).await.unwrap().unwrap();
        assert_eq!(share.amount(), 10, "served first, though it asked last");
        // 90 left: one flood draw of 50 fits, the next waits.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.available(), 40);
        drop(share);
        for f in flood {
            f.abort();
        }
    }

    #[tokio::test]
    async fn a_rate_bounds_what_all_connections_draw_and_the_quiet_one_goes_first() {
        let budget = FairBudget::with_rate(1 << 30, Some(1_000_000));
        let start = Instant::now();
        // A second's worth at once, then the rate: two seconds' worth takes about one more.
        for i in 0..20 {
            drop(budget.acquire(1 + i % 4, 100_000).await);
        }
        assert!(start.elapsed() >= Duration::from_millis(800), "2 MB at 1 MB/s took {:?}", start.elapsed());
        // A flood queued behind the rate; a quiet connection asking last is served first.
        let mut flood = Vec::new();
        for _ in 0..8 {
            let b = budget.clone();
            flood.push(tokio::spawn(async move {
                drop(b.acquire(1, 200_000).await);
                Instant::now()
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let quiet = {
            let b = budget.clone();
            tokio::spawn(async move {
                drop(b.acquire(9, 1_000).await);
                Instant::now()
            })
        };
        let served = quiet.await.unwrap();
        let mut after = 0;
        for f in flood {
            if f.await.unwrap() > served {
                after += 1;
            }
        }
        assert!(after >= 6, "the quiet connection waited behind {} of 8 flood draws", 8 - after);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_holds_nothing() {
        let budget = FairBudget::new(10);
        let held = budget.acquire(1, 10).await;
        let waiting = {
            let b = budget.clone();
            tokio::spawn(async move { b.acquire(2, 10).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        assert_eq!(budget.available(), 10, "nothing leaked to the waiter that went");
        let mut a = budget.acquire(3, 4).await;
        a.merge(budget.acquire(3, 6).await);
        assert_eq!((a.amount(), budget.available()), (10, 0));
        drop(a);
        assert_eq!(budget.available(), 10);
    }
}
