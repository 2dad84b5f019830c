//! A bounded memory of recent events, each forgotten a while after it happened.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys noted lately, each remembered for `memory`, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct Recent<K> {
    memory: Duration,
    cap: usize,
    seen: Mutex<HashMap<K, Instant>>,
}

impl<K: Eq + Hash + Copy> Recent<K> {
    /// An empty memory.
    pub fn new(memory: Duration, cap: usize) -> Self {
        Recent { memory, cap, seen: Mutex::new(HashMap::new()) }
    }

    /// Notes `key` as seen now.
    pub fn note(&self, key: K) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= self.cap {
            seen.retain(|_, at| now.duration_since(*at) < self.memory);
            if seen.len() >= self.cap {
                // Still full of recent ones: forget the oldest.
                if let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) {
                    seen.remove(&oldest);
                }
            }
        }
        seen.insert(key, now);
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &K) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Whether `key` was noted within the memory.
    pub fn contains(&self, key: &K) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(key).is_some_and(|at| at.elapsed() < self.memory)
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
        assert!(r.seen.lock().unwrap().len() <= 3);
        assert!(r.contains(&9), "the newest is kept");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!r.contains(&9), "forgotten after the memory");
    }
}
