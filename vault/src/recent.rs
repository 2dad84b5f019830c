//! A bounded memory of recent events, each forgotten a while after it happened.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys noted lately, each remembered for `memory`, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct Recent<K> {
    memory: Duration,
    cap: usize,
    inner: Mutex<Inner<K>>,
}

#[derive(Debug)]
struct Inner<K> {
    /// When each key was last noted.
    seen: HashMap<K, Instant>,
    /// Notes oldest first, so that forgetting the old ones costs nothing per note; an entry
    /// whose key was noted again since, or forgotten, is stale and skipped.
    order: VecDeque<(K, Instant)>,
}

impl<K: Eq + Hash + Copy> Recent<K> {
    /// An empty memory.
    pub fn new(memory: Duration, cap: usize) -> Self {
        Recent { memory, cap, inner: Mutex::new(Inner { seen: HashMap::new(), order: VecDeque::new() }) }
    }

    /// Notes `key` as seen now.
    pub fn note(&self, key: K) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(old, at)) = inner.order.front() {
            if now.duration_since(at) < self.memory && inner.order.len() < self.cap {
                break;
            }
            inner.order.pop_front();
            if inner.seen.get(&old) == Some(&at) {
                inner.seen.remove(&old);
            }
        }
        inner.seen.insert(key, now);
        inner.order.push_back((key, now));
    }

    /// How long ago `key` was first noted without being forgotten since (noting it now if it
    /// was not): the length of a spell, such as a peer's silence.
    pub fn noted_for(&self, key: K) -> Duration {
        {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = inner.seen.get(&key).filter(|at| at.elapsed() < self.memory) {
                return at.elapsed();
            }
        }
        self.note(key);
        Duration::ZERO
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &K) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).seen.remove(key);
    }

    /// Whether `key` was noted within the memory.
    pub fn contains(&self, key: &K) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.seen.get(key).is_some_and(|at| at.elapsed() < self.memory)
    }
}

/// Losses waiting on their coordinator: for each chunk, which indices it lacks and since
/// when. A different set of lost indices is a new loss, counted afresh.
#[derive(Debug)]
pub(crate) struct Losses {
    memory: Duration,
    cap: usize,
    inner: Mutex<HashMap<kura_node::Address, (u64, Instant)>>,
}

impl Losses {
    /// An empty record, each loss kept at most `memory`, at most `cap` at once.
    pub fn new(memory: Duration, cap: usize) -> Self {
        Losses { memory, cap, inner: Mutex::new(HashMap::new()) }
    }

    /// How long `chunk` has lacked exactly the indices in `lost` (a bit each); notes it, and
    /// returns zero, when that is new.
    pub fn waited(&self, chunk: kura_node::Address, lost: u64) -> Duration {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((mask, since)) = inner.get(&chunk) {
            if *mask == lost && now.duration_since(*since) < self.memory {
                return now.duration_since(*since);
            }
        }
        if inner.len() >= self.cap {
            let memory = self.memory;
            inner.retain(|_, (_, since)| now.duration_since(*since) < memory);
            if inner.len() >= self.cap {
                return Duration::ZERO;
            }
        }
        inner.insert(chunk, (lost, now));
        Duration::ZERO
    }

    /// Forgets `chunk`'s loss (repaired, or acted on).
    pub fn clear(&self, chunk: &kura_node::Address) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).remove(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_a_while_and_within_its_bound() {
        let r = Recent::new(Duration::from_millis(50), 3);
        r.note(1);
        assert!(r.contains(&1));
        assert!(!r.contains(&2));
        r.forget(&1);
        assert!(!r.contains(&1));
        for k in 0..10 {
            r.note(k);
        }
        assert!(r.inner.lock().unwrap().seen.len() <= 3);
        assert!(r.inner.lock().unwrap().order.len() <= 3);
        assert!(r.contains(&9), "the newest is kept");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!r.contains(&9), "forgotten after the memory");
    }

    #[test]
    fn a_loss_is_timed_from_when_it_was_first_seen_and_a_new_loss_afresh() {
        let l = Losses::new(Duration::from_secs(60), 2);
        let (a, b, c) = (kura_node::Address([1; 32]), kura_node::Address([2; 32]), kura_node::Address([3; 32]));
        assert_eq!(l.waited(a, 0b1), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        assert!(l.waited(a, 0b1) >= Duration::from_millis(20));
        assert_eq!(l.waited(a, 0b10), Duration::ZERO, "another index lost: a new loss");
        l.clear(&a);
        assert_eq!(l.waited(a, 0b10), Duration::ZERO);
        l.waited(b, 1);
        assert_eq!(l.waited(c, 1), Duration::ZERO);
        assert!(l.inner.lock().unwrap().len() <= 2, "bounded");
    }

    #[test]
    fn a_key_noted_again_outlives_its_first_note() {
        let r = Recent::new(Duration::from_secs(60), 3);
        r.note(1);
        r.note(2);
        r.note(1);
        r.note(3);
        r.note(4);
        assert!(r.contains(&1), "its second note is among the last three");
        assert!(!r.contains(&2), "the oldest went to make room");
        assert!(r.contains(&3) && r.contains(&4));
    }
}
