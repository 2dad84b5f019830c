//! A vault's records on its own disk: checked before they are stored, one writer per address
//! at a time, stored records never replaced by different ones (only a mutable record, by a
//! newer version its owner signed), reads off the async threads, and shards placed on other
//! vaults.
//!
//! Owns: the addresses being written, the shards released lately, the vaults found full, the
//! groups of chunks stored lately (for repair), the counters of refused and corrupt records,
//! and the table of [`KindRules`]. Talks to: the store and the node, through [`Ctx`].
//!
//! Every replicated kind is stored by one routine ([`Records::put_record`]); what a kind adds
//! (its admission, what supersedes what, what it notes once stored, how its group is repaired)
//! it declares by implementing [`KindRules`] in its own module, which registers itself here
//! at start. Records know no subsystem: the table holds weak references, so nothing here
//! keeps a subsystem alive.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use kura_node::wire::{RemoteError, Request, Response, MAX_FRAME_LEN};
use kura_node::{stored, Address, NodeError, PeerId, Record, RecordKey, RecordKind, Shard};
use tracing::warn;

use crate::context::{internal, lock, Ctx};
use crate::recent::Recent;
use crate::store::StoreError;

/// The most events of one kind remembered, bounding the memory they take.
pub(crate) const MEMORY_LEN: usize = 1 << 16;

/// What a kind holds while one of its records is stored (a lock on an address, an account's
/// turn); dropped once the record is written.
pub(crate) type Guard = Box<dyn Send>;

/// What is done with a record whose key holds a record already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// The same record (or one its kind takes as the same): acknowledge, write nothing.
    Same,
    /// The new record supersedes the one held: write it.
    Superseded,
}

/// What a kind's last check before the write decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Store it.
    Store,
    /// Store it (as evidence), then answer the sender with this refusal.
    StoreAndRefuse(RemoteError),
}

/// How a vault stores and repairs one replicated record kind (pointers, messages, ledger
/// entries): the rules the kind adds to [`Records::put_record`], the routine every kind
/// shares.
#[async_trait::async_trait]
pub(crate) trait KindRules: Send + Sync {
    /// Admits `record` (already checked against `key`): the kind's own rules, and that this
    /// vault is among those that hold records at its address. Returns what is held while the
    /// record is stored.
    async fn admit(&self, record: &Record, key: &RecordKey) -> Result<Guard, RemoteError>;

    /// What to do when `held` is stored under the key already: acknowledge it as the same,
    /// replace it, or refuse.
    fn held_already(&self, held: &Record, record: &Record, key: &RecordKey) -> Result<Held, RemoteError>;

    /// The last check, with the guard held, just before the record is written.
    async fn before_write(&self, _record: &Record) -> Result<Verdict, RemoteError> {
        Ok(Verdict::Store)
    }

    /// Notes a record just written.
    fn stored(&self, record: &Record, key: &RecordKey);

    /// Notes that the record under `key` left the store.
    fn gone(&self, _key: &RecordKey) {}

    /// Examines what this vault holds of the kind at `address` against its group, and repairs
    /// what is short.
    async fn repair(&self, address: Address) -> Result<(), NodeError>;
}

/// The vault's records: a cheap clone of one shared state.
#[derive(Clone)]
pub(crate) struct Records {
    ctx: Ctx,
    state: Arc<State>,
}

struct State {
    refused_full: AtomicU64,
    corrupt: AtomicU64,
    /// Addresses being written right now (see [`Records::lock_address`]).
    storing: Mutex<HashSet<Address>>,
    /// Shards handed on lately: an audit of one is answered "released", not "not held".
    released: Recent<RecordKey>,
    /// Vaults that refused a shard lately for want of room (see [`Records::full_lately`]).
    full: Recent<PeerId>,
    /// The close group of each chunk stored here lately, as this vault saw it when storing:
    /// the repair worker's record of the group a later routing change is compared with
    /// (bounded; a chunk that does not fit is noted by the worker's next baseline round).
    stored_groups: Mutex<Vec<(Address, Vec<PeerId>)>>,
    /// The rules of each replicated kind, registered at start.
    kinds: RwLock<HashMap<RecordKind, Weak<dyn KindRules>>>,
}

/// Holds an address in [`State::storing`] until dropped.
struct Storing(Arc<State>, Address);

impl Drop for Storing {
    fn drop(&mut self) {
        lock(&self.0.storing).remove(&self.1);
    }
}

impl Records {
    /// The records of the vault whose context is `ctx`.
    pub(crate) fn new(ctx: Ctx) -> Records {
        let config = ctx.config();
        let state = State {
            refused_full: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            storing: Mutex::default(),
            released: Recent::new(Duration::from_secs(config.release_memory_secs), MEMORY_LEN),
            full: Recent::new(Duration::from_secs(config.full_memory_secs), MEMORY_LEN),
            stored_groups: Mutex::default(),
            kinds: RwLock::default(),
        };
        Records { ctx, state: Arc::new(state) }
    }

    /// Registers the rules of `kind` (a subsystem, which stays owned by the vault).
    pub(crate) fn register(&self, kind: RecordKind, rules: Weak<dyn KindRules>) {
        self.state.kinds.write().unwrap_or_else(|e| e.into_inner()).insert(kind, rules);
    }

    /// The rules of a replicated kind.
    pub(crate) fn rules(&self, kind: RecordKind) -> Result<Arc<dyn KindRules>, RemoteError> {
        let kinds = self.state.kinds.read().unwrap_or_else(|e| e.into_inner());
        match kinds.get(&kind) {
            Some(rules) => rules.upgrade().ok_or(RemoteError::Busy),
            None => Err(RemoteError::Invalid(format!("{} records are not stored whole", kind.name()))),
        }
    }

    /// Records refused for want of room.
    pub(crate) fn refused_full(&self) -> u64 {
        self.state.refused_full.load(Ordering::Relaxed)
    }

    /// Records that did not read or check out, moved aside.
    pub(crate) fn corrupt(&self) -> u64 {
        self.state.corrupt.load(Ordering::Relaxed)
    }

    /// Validates a record off the async threads (hashing a shard is ~1 ms per MiB).
    async fn validated(record: Record) -> Result<(Record, RecordKey), RemoteError> {
        tokio::task::spawn_blocking(move || record.validate().map(|()| (record.key(), record)))
            .await
            .map_err(internal)?
            .map(|(key, record)| (record, key))
            .map_err(|e| RemoteError::Invalid(e.to_string()))
    }

    /// Holds `address` against other writes here until the guard drops, or answers busy.
    pub(crate) fn lock_address(&self, address: Address) -> Result<Guard, RemoteError> {
        if !lock(&self.state.storing).insert(address) {
            return Err(RemoteError::Busy);
        }
        Ok(Box::new(Storing(self.state.clone(), address)))
    }

    /// Stores a shard of a chunk this vault is responsible for.
    pub(crate) async fn put_shard(&self, shard: Shard) -> Result<(), RemoteError> {
        let (record, key) = Self::validated(Record::Shard(shard)).await?;
        let chunk = key.address;
        let n = record.strategy().group_size();
        let responsible = self.ctx.responsible(chunk, n).await?;
        // Checking what is held and storing must not interleave with another shard of the same
        // chunk (two repairers placing on the same vault at once): the second waits its turn.
        let _storing = self.lock_address(chunk)?;
        let held = self.ctx.store().keys_at(RecordKind::Shard, &chunk);
        // A shard's key derives from its checked header and data, so the one already stored
        // under the key (if it still reads) is this very shard: stored records are never
        // replaced, and a resend is simply acknowledged.
        if held.contains(&key) && self.read_record(key).await.map_err(internal)?.is_some() {
            return Ok(());
        }
        // One shard of a chunk per vault, so that losing a vault loses one shard; only a
        // network smaller than the close group needs vaults to hold several.
        let group = responsible[..n.min(responsible.len())].to_vec();
        if let Some(other) = held.iter().find(|k| **k != key) {
            if group.len() >= n {
                return Err(RemoteError::Invalid(format!("already holds {other}")));
            }
        }
        self.write_record(key, &record).await?;
        if self.ctx.config().repair {
            let mut noted = lock(&self.state.stored_groups);
            if noted.len() < MEMORY_LEN {
                noted.push((chunk, group));
            }
        }
        Ok(())
    }

    /// The groups of chunks stored since the last call (see [`State::stored_groups`]).
    pub(crate) fn take_stored_groups(&self) -> Vec<(Address, Vec<PeerId>)> {
        std::mem::take(&mut *lock(&self.state.stored_groups))
    }

    /// Stores a whole record of a replicated kind, unless a record that supersedes it is held:
    /// the kind admits it, a record held under its key is compared with it, the kind's last
    /// check runs with its guard held, and the record is written and noted.
    pub(crate) async fn put_record(&self, record: Record) -> Result<(), RemoteError> {
        if record.kind() == RecordKind::Shard {
            return Err(RemoteError::Invalid(format!("{} records are stored with PutShard", record.kind().name())));
        }
        let (record, key) = Self::validated(record).await?;
        let rules = self.rules(key.kind)?;
        let _guard = rules.admit(&record, &key).await?;
        if let Some(held) = self.read_record(key).await.map_err(internal)? {
            if rules.held_already(&held, &record, &key)? == Held::Same {
                return Ok(());
            }
        }
        let verdict = rules.before_write(&record).await?;
        self.write_record(key, &record).await?;
        rules.stored(&record, &key);
        match verdict {
            Verdict::Store => Ok(()),
            Verdict::StoreAndRefuse(refusal) => Err(refusal),
        }
    }

    /// Writes a checked record in the disk format.
    async fn write_record(&self, key: RecordKey, record: &Record) -> Result<(), RemoteError> {
        let bytes = stored::encode(record);
        let written = self.ctx.actor().run(move |store| store.put(&key, &bytes)).await;
        match written.and_then(|w| w) {
            Ok(()) => {
                // Held again: losing it from now on is a loss, not a hand-on.
                self.state.released.forget(&key);
                Ok(())
            }
            Err(StoreError::Full { used, capacity, wanted }) => {
                self.state.refused_full.fetch_add(1, Ordering::Relaxed);
                Err(RemoteError::Full { used, capacity, wanted })
            }
            // Shutting down: the sender tries another vault or later.
            Err(StoreError::Closed) => Err(RemoteError::Busy),
            Err(e) => {
                warn!(%key, error = %e, "storing a record failed");
                Err(internal(e))
            }
        }
    }

    /// The record stored under `key`, read and checked against the key; one that does not
    /// read or check out is moved aside and counted, never returned.
    pub(crate) async fn read_record(&self, key: RecordKey) -> Result<Option<Record>, StoreError> {
        let mut records = self.read_records(vec![key]).await?;
        Ok(records.pop())
    }

    /// [`Records::read_record`] for many keys at once; returns those that check out.
    pub(crate) async fn read_records(&self, keys: Vec<RecordKey>) -> Result<Vec<Record>, StoreError> {
        let (records, corrupt) = self.ctx.actor().run(move |store| {
            let mut records = Vec::new();
            let mut corrupt = 0u64;
            for key in keys {
                let Some(bytes) = store.get(&key)? else { continue };
                let record = stored::decode(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.validate_for(&key).map(|()| r).map_err(|e| e.to_string()));
                match record {
                    Ok(r) => records.push(r),
                    Err(reason) => {
                        corrupt += 1;
                        store.quarantine(&key, &reason)?;
                    }
                }
            }
            Ok::<_, StoreError>((records, corrupt))
        })
        .await??;
        self.state.corrupt.fetch_add(corrupt, Ordering::Relaxed);
        Ok(records)
    }

    /// The verified shards of `chunk` held here that fit in one answer.
    pub(crate) async fn get_shards(&self, chunk: Address) -> Result<Vec<Shard>, RemoteError> {
        let mut shards = self.read_shards(chunk).await.map_err(internal)?;
        let mut size = 0usize;
        shards.retain(|s| {
            size += s.data.len() + 1024;
            size <= MAX_FRAME_LEN - 64 * 1024
        });
        Ok(shards)
    }

    /// Every verified shard of `chunk` held here. Corrupt ones are moved aside and counted,
    /// never returned.
    pub(crate) async fn read_shards(&self, chunk: Address) -> Result<Vec<Shard>, StoreError> {
        let keys = self.ctx.store().keys_at(RecordKind::Shard, &chunk);
        let records = self.read_records(keys).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r {
                Record::Shard(s) => Some(s),
                _ => None,
            })
            .collect())
    }

    /// Deletes a record this vault is no longer responsible for (handed over, or held by a
    /// closer vault), remembering that it did.
    pub(crate) async fn release(&self, key: RecordKey) {
        // Noted first: an audit answered while the file goes must not find it merely missing.
        self.state.released.note(key);
        self.delete_record(key).await
    }

    /// Deletes a record this vault should no longer keep (an expired or deleted message, a
    /// shard left unpaid).
    pub(crate) async fn delete_record(&self, key: RecordKey) {
        if let Ok(rules) = self.rules(key.kind) {
            rules.gone(&key);
        }
        match self.ctx.actor().run(move |store| store.delete(&key)).await {
            Ok(Ok(_)) | Err(StoreError::Closed) => {}
            Ok(Err(e)) | Err(e) => warn!(%key, error = %e, "deleting a record failed"),
        }
    }

    /// Stores `shard` on `peer` for repair or handover; a peer that refuses it for want of
    /// room is remembered as full.
    pub(crate) async fn place(&self, peer: PeerId, shard: Shard) -> Result<(), NodeError> {
        match self.ctx.node().request(peer, Request::PutShard(shard)).await {
            Ok(Response::Stored) => Ok(()),
            Ok(_) => Err(NodeError::UnexpectedResponse { peer, request: "PutShard" }),
            Err(e) => {
                if let NodeError::Remote { error: RemoteError::Full { .. }, .. } = &e {
                    self.state.full.note(peer);
                }
                Err(e)
            }
        }
    }

    /// Whether `peer` refused a shard for want of room lately: repair counts it as not
    /// answering, so that nothing is offered to it again and again.
    pub(crate) fn full_lately(&self, peer: &PeerId) -> bool {
        self.state.full.contains(peer)
    }

    /// Whether this vault released `key` lately.
    pub(crate) fn released(&self, key: RecordKey) -> bool {
        self.state.released.contains(&key)
    }
}
