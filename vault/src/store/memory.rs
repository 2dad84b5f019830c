//! A store in memory, for tests and for clients that cache.

use std::collections::HashMap;
use std::sync::Mutex;

use kura_node::{Address, RecordKey, RecordKind};

use super::{Index, RecordStore, StoreError, Usage};

/// Records in memory under a quota.
#[derive(Debug)]
pub struct MemoryStore {
    capacity: u64,
    inner: Mutex<(Index, HashMap<RecordKey, Vec<u8>>)>,
    /// Records moved aside, newest last (bounded: a memory store is for tests).
    quarantined: Mutex<std::collections::VecDeque<(RecordKey, Vec<u8>)>>,
}

/// Most quarantined records a memory store keeps.
const QUARANTINE_LEN: usize = 64;

impl MemoryStore {
    /// An empty store of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        MemoryStore { capacity, inner: Mutex::new((Index::default(), HashMap::new())), quarantined: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Index, HashMap<RecordKey, Vec<u8>>)> {
        // A panic while holding the lock cannot leave the maps half-updated: each update is a
        // single insert or remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RecordStore for MemoryStore {
    fn put(&self, key: &RecordKey, value: &[u8]) -> Result<(), StoreError> {
        let mut g = self.lock();
        let len = value.len() as u64;
        g.0.reserve(key, len, self.capacity)?;
        g.0.settle(key, len, true);
        g.1.insert(*key, value.to_vec());
        Ok(())
    }

    fn get(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().1.get(key).cloned())
    }

    fn delete(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let mut g = self.lock();
        g.1.remove(key);
        Ok(g.0.remove(key))
    }

    fn quarantine(&self, key: &RecordKey, _reason: &str) -> Result<(), StoreError> {
        let bytes = {
            let mut g = self.lock();
            g.0.remove(key);
            g.1.remove(key)
        };
        if let Some(bytes) = bytes {
            let mut q = self.quarantined.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() == QUARANTINE_LEN {
                q.pop_front();
            }
            q.push_back((*key, bytes));
        }
        Ok(())
    }

    fn keys(&self) -> Vec<RecordKey> {
        self.lock().0.lens.keys().copied().collect()
    }

    fn keys_at(&self, kind: RecordKind, address: &Address) -> Vec<RecordKey> {
        self.lock().0.keys_at(kind, address)
    }

    fn usage(&self) -> Usage {
        self.lock().0.usage(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    fn open(capacity: u64) -> ((), super::MemoryStore) {
        ((), super::MemoryStore::new(capacity))
    }
    crate::store_suite!(open);
}
