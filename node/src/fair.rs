//! A byte budget shared by many connections and granted fairly: whoever holds least is served
//! first.
//!
//! Inbound requests draw on one budget as their bytes arrive (see [`crate::KuraCodec`]). With a
//! first-come queue, a peer that opens many streams of maximal frames (peer ids are free, so
//! many peers) takes nearly all of it, and an honest client's one small request waits behind
//! every one of their pieces. Here each waiting draw is ranked by what its connection held
//! when it asked, so a connection holding nothing goes before one holding megabytes: a flood
//! slows the flooders, not everyone. A draw is never skipped for a smaller one behind it, so a
//! large frame is not starved either.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A budget of bytes shared by connections.
#[derive(Debug)]
pub struct FairBudget {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    available: usize,
    held: HashMap<u64, usize>,
    /// Waiting draws by (bytes their connection held when they asked, arrival).
    queue: BTreeMap<(usize, u64), Waiter>,
    arrivals: u64,
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

impl State {
    fn take(&mut self, conn: u64, amount: usize) {
        self.available -= amount;
        *self.held.entry(conn).or_default() += amount;
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
}

impl FairBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Arc<FairBudget> {
        Arc::new(FairBudget { state: Mutex::new(State { available: total, ..State::default() }) })
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
        let rx = {
            let mut s = self.lock();
            if s.queue.is_empty() && s.available >= amount {
                s.take(conn, amount);
                return Share { budget: self.clone(), conn, amount };
            }
            let (tx, rx) = oneshot::channel();
            let key = (s.held.get(&conn).copied().unwrap_or(0), s.arrivals);
            s.arrivals += 1;
            s.queue.insert(key, Waiter { conn, amount, tx });
            rx
        };
        match rx.await {
            Ok(share) => share,
            // The budget went away while this waited: nothing is held.
            Err(_) => Share { budget: self.clone(), conn, amount: 0 },
        }
    }

    fn release(self: &Arc<Self>, conn: u64, amount: usize) {
        let mut s = self.lock();
        s.give_back(conn, amount);
        // Draws whose waiters went (a stream closed, a read timed out) give up their place.
        s.queue.retain(|_, w| !w.tx.is_closed());
        while s.queue.first_key_value().is_some_and(|(_, w)| w.amount <= s.available) {
            let Some((_, w)) = s.queue.pop_first() else { break };
            s.take(w.conn, w.amount);
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
