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
