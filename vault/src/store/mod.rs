//! Record stores: one trait, a memory backend and a crash-safe disk backend.
//!
//! A store keeps opaque bytes under [`RecordKey`]s within a capacity quota. It knows nothing of
//! what a record means: the vault checks records of each kind before storing and after
//! reading, so later record kinds reuse the same stores.

mod actor;
mod disk;
mod memory;

use std::path::PathBuf;

use kura_node::{Address, RecordKey, RecordKind};

pub use actor::StoreActor;
pub use disk::DiskStore;
pub use memory::MemoryStore;

/// The least a record is charged against the quota, whatever its length: each record costs a
/// file, an inode and an index entry, so 100,000 one-byte records must not fit in 100 kB.
pub const MIN_CHARGE: u64 = 4096;

/// What a record of `len` bytes is charged against the quota.
pub fn charge(len: u64) -> u64 {
    len.max(MIN_CHARGE)
}

/// How full a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Records stored.
    pub records: u64,
    /// Bytes charged against the quota: each record's length, but at least [`MIN_CHARGE`].
    pub bytes: u64,
    /// The quota in bytes.
    pub capacity: u64,
}

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Storing the record would exceed the quota; nothing was written.
    #[error("store full: {used} of {capacity} bytes used, {wanted} more refused")]
    Full {
        /// Bytes stored.
        used: u64,
        /// The quota.
        capacity: u64,
        /// Bytes the refused record needed.
        wanted: u64,
    },
    /// A file could not be read or written (a full disk shows up here too).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The sled index failed.
    #[error("index: {0}")]
    Index(String),
    /// The store on disk was written by a newer build; this one refuses to touch it.
    #[error("{path}: store format {found} is newer than this build knows ({known}); run a newer kura-vault")]
    NewerFormat {
        /// The format marker.
        path: PathBuf,
        /// The format it names.
        found: u32,
        /// The newest format this build knows.
        known: u32,
    },
    /// The store is closing (the vault is shutting down): nothing more is read or written.
    #[error("the store is closing")]
    Closed,
}

/// A place to keep records.
pub trait RecordStore: Send + Sync + 'static {
    /// Stores `value` under `key`, replacing any earlier value. When this returns `Ok` the
    /// record is durable (for the disk store: fsynced and renamed into place).
    fn put(&self, key: &RecordKey, value: &[u8]) -> Result<(), StoreError>;
    /// The value under `key`, if any.
    fn get(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes `key`; returns whether it was there.
    fn delete(&self, key: &RecordKey) -> Result<bool, StoreError>;
    /// Moves the record under `key` aside (it could not be read or did not check out): it
    /// leaves the store's keys and usage, but its bytes are kept for the operator, never
    /// deleted.
    fn quarantine(&self, key: &RecordKey, reason: &str) -> Result<(), StoreError>;
    /// Every key, in order.
    fn keys(&self) -> Vec<RecordKey>;
    /// The keys of `kind` at `address` (for shards: the shards of one chunk held here).
    fn keys_at(&self, kind: RecordKind, address: &Address) -> Vec<RecordKey>;
    /// Current usage.
    fn usage(&self) -> Usage;
}

/// The in-memory index both backends keep: key → charge, and the total charged.
#[derive(Debug, Default)]
struct Index {
    lens: std::collections::BTreeMap<RecordKey, u64>,
    bytes: u64,
    /// Bytes reserved by puts in progress.
    reserved: u64,
}

impl Index {
    /// Reserves room for a record of `len` bytes replacing `key`, or refuses.
    fn reserve(&mut self, key: &RecordKey, len: u64, capacity: u64) -> Result<(), StoreError> {
        let existing = self.lens.get(key).copied().unwrap_or(0);
        let used = self.bytes + self.reserved;
        if used.saturating_sub(existing) + charge(len) > capacity {
            return Err(StoreError::Full { used: self.bytes, capacity, wanted: charge(len) });
        }
        self.reserved += charge(len);
        Ok(())
    }

    /// Completes a reservation: the record of `len` bytes is now stored (or not, if `stored`
    /// is false).
    fn settle(&mut self, key: &RecordKey, len: u64, stored: bool) {
        self.reserved -= charge(len);
        if stored {
            self.insert(*key, len);
        }
    }

    /// Counts a stored record of `len` bytes under `key`.
    fn insert(&mut self, key: RecordKey, len: u64) {
        if let Some(old) = self.lens.insert(key, charge(len)) {
            self.bytes -= old;
        }
        self.bytes += charge(len);
    }

    fn remove(&mut self, key: &RecordKey) -> bool {
        match self.lens.remove(key) {
            Some(len) => {
                self.bytes -= len;
                true
            }
            None => false,
        }
    }

    fn keys_at(&self, kind: RecordKind, address: &Address) -> Vec<RecordKey> {
        let (lo, hi) = RecordKey::range(kind, *address);
        self.lens.range(lo..=hi).map(|(k, _)| *k).collect()
    }

    fn usage(&self, capacity: u64) -> Usage {
        Usage { records: self.lens.len() as u64, bytes: self.bytes, capacity }
    }
}

/// The behaviour every store must have; run against each backend.
#[cfg(test)]
#[macro_export]
macro_rules! store_suite {
    ($open:expr) => {
        use kura_node::{Address, RecordKey, RecordKind};
        use $crate::store::{RecordStore, StoreError};

        fn key(i: u8) -> RecordKey {
            RecordKey::shard(Address([i; 32]), i % 3)
        }

        #[test]
        fn put_get_delete() {
            let (_dir, store) = $open(1 << 20);
            assert_eq!(store.get(&key(1)).unwrap(), None);
            store.put(&key(1), b"hello").unwrap();
            assert_eq!(store.get(&key(1)).unwrap().as_deref(), Some(&b"hello"[..]));
            assert_eq!(store.usage().records, 1);
            assert_eq!(store.usage().bytes, 4096, "a tiny record is charged the minimum");
            assert!(store.delete(&key(1)).unwrap());
            assert!(!store.delete(&key(1)).unwrap());
            assert_eq!(store.get(&key(1)).unwrap(), None);
            assert_eq!(store.usage().bytes, 0);
        }

        #[test]
        fn overwrite_replaces_and_accounts_once() {
            let (_dir, store) = $open(1 << 20);
            store.put(&key(2), &[1; 10_000]).unwrap();
            store.put(&key(2), &[2; 5000]).unwrap();
            assert_eq!(store.get(&key(2)).unwrap(), Some(vec![2; 5000]));
            assert_eq!(store.usage().bytes, 5000);
            assert_eq!(store.usage().records, 1);
        }

        #[test]
        fn keys_at_lists_the_shards_of_one_chunk() {
            let (_dir, store) = $open(1 << 20);
            let chunk = Address([7; 32]);
            for i in [0u8, 3, 5] {
                store.put(&RecordKey::shard(chunk, i), &[i]).unwrap();
            }
            store.put(&key(9), b"other").unwrap();
            store.put(&RecordKey::pointer(chunk), b"a pointer at the same address").unwrap();
            let at: Vec<u8> = store.keys_at(RecordKind::Shard, &chunk).iter().filter_map(|k| k.shard_index()).collect();
            assert_eq!(at, vec![0, 3, 5]);
            assert_eq!(store.keys_at(RecordKind::Pointer, &chunk), vec![RecordKey::pointer(chunk)]);
            assert_eq!(store.keys().len(), 5);
        }

        #[test]
        fn quarantined_records_leave_keys_and_usage() {
            let (_dir, store) = $open(1 << 20);
            store.put(&key(1), b"bad bytes").unwrap();
            store.put(&key(2), b"good").unwrap();
            store.quarantine(&key(1), "test").unwrap();
            assert_eq!(store.keys(), vec![key(2)]);
            assert_eq!(store.get(&key(1)).unwrap(), None);
            assert_eq!(store.usage().bytes, 4096);
        }

        #[test]
        fn full_store_refuses_and_loses_nothing() {
            let (_dir, store) = $open(100_000);
            store.put(&key(1), &[1; 60_000]).unwrap();
            match store.put(&key(2), &[2; 50_000]) {
                Err(StoreError::Full { used: 60_000, capacity: 100_000, wanted: 50_000 }) => {}
                other => panic!("expected Full, got {other:?}"),
            }
            assert_eq!(store.get(&key(1)).unwrap(), Some(vec![1; 60_000]));
            assert_eq!(store.get(&key(2)).unwrap(), None);
            // Replacing a record may reuse its own room.
            store.put(&key(1), &[3; 90_000]).unwrap();
            assert_eq!(store.usage().bytes, 90_000);
            store.put(&key(2), &[2; 10_000]).unwrap();
            assert_eq!(store.usage().bytes, 100_000);
            // Tiny records are charged the minimum, so they cannot flood the quota.
            store.delete(&key(2)).unwrap();
            let tiny: usize = (10..20u8).filter(|i| store.put(&key(*i), &[0]).is_ok()).count();
            assert_eq!(tiny, 2, "10,000 bytes hold two minimum charges");
        }

        #[test]
        fn concurrent_puts_never_exceed_capacity() {
            let (_dir, store) = $open(100_000);
            let store = std::sync::Arc::new(store);
            let handles: Vec<_> = (0..8u8)
                .map(|t| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        (0..10u8).filter(|i| store.put(&RecordKey::shard(Address([t; 32]), *i), &[0; 5000]).is_ok()).count()
                    })
                })
                .collect();
            let stored: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(stored, 20, "exactly floor(100,000 / 5,000) fit");
            assert_eq!(store.usage().bytes, 100_000);
        }
    };
}
