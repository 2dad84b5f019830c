//! Inboxes: messages anyone may append, that only the inbox's owner may list or delete, kept
//! until they expire.
//!
//! A message is a replicated record (see [`kura_node::message`]): the sender stores it on every
//! member of the inbox's close group, and repair spreads it to new members as it spreads
//! pointers. What this module adds is time: a vault refuses messages that have expired, that
//! carry too little work for its configured [`Difficulty`], or that their owner deleted, and
//! the [`InboxWorker`] purges messages once they expire. Deletions are remembered until the
//! message would have expired (bounded), so a member that missed the delete cannot push the
//! message back.
//!
//! Owns: the inbox counters, the expiries of the messages held and the deletions remembered.
//! Talks to: the records (storing, as `KindRules` of messages), repair (each message is
//! repaired by the replica-repair routine every replicated kind shares).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kura_node::message::{InboxOp, InboxRequest, Message, LIST_PAGE, MAX_INBOX, MAX_TTL_SECS};
use kura_node::wire::{RemoteError, Response};
use kura_node::{Address, NodeError, Record, RecordError, RecordKey, RecordKind};
use tracing::{debug, info};

use crate::context::{lock, Ctx};
use crate::records::{Guard, Held, KindRules, Records};
use crate::repair::Repair;
use crate::worker::WorkState;

/// Most deletions remembered at once.
const MAX_DELETED: usize = 1 << 16;

/// Seconds since the Unix epoch by this machine's clock.
fn unix_now() -> u64 {
    kura_node::message::unix_now().as_secs()
}

/// What a vault remembers about the messages it holds and those it deleted.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Messages held, by expiry (filled from the store by the first purge, then on each write).
    expiries: BTreeSet<(u64, RecordKey)>,
    /// Whether [`Ledger::expiries`] has been filled from the store.
    loaded: bool,
    /// Messages their owner deleted, and until when to remember that.
    deleted: HashMap<RecordKey, u64>,
}

impl Ledger {
    /// Notes a message stored here.
    pub fn held(&mut self, key: RecordKey, expires: u64) {
        self.expiries.insert((expires, key));
    }

    /// Notes that the owner deleted `key` (which expires at `expires`), at `now`. When the
    /// memory is full, deletions that have run out go first, then those that run out soonest.
    pub fn deleted(&mut self, key: RecordKey, expires: u64, now: u64) {
        self.expiries.retain(|(_, k)| *k != key);
        if self.deleted.len() >= MAX_DELETED {
            self.deleted.retain(|_, until| *until > now);
        }
        if self.deleted.len() >= MAX_DELETED {
            if let Some(soonest) = self.deleted.iter().min_by_key(|(_, until)| **until).map(|(k, _)| *k) {
                self.deleted.remove(&soonest);
            }
        }
        self.deleted.insert(key, expires);
    }

    /// Whether the owner deleted `key` and it has not expired by `now`.
    pub fn was_deleted(&self, key: &RecordKey, now: u64) -> bool {
        self.deleted.get(key).is_some_and(|until| *until > now)
    }

    /// Takes the messages expired by `now` out of the ledger and returns their keys; forgets
    /// deletions that have run out.
    pub fn expired(&mut self, now: u64) -> Vec<RecordKey> {
        let keep = self.expiries.split_off(&(now + 1, RecordKey::range(RecordKind::Message, Address([0; 32])).0));
        let gone = std::mem::replace(&mut self.expiries, keep);
        self.deleted.retain(|_, until| *until > now);
        gone.into_iter().map(|(_, k)| k).collect()
    }
}

/// Counters of the inbox worker and of inbox requests.
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Messages purged because they expired.
    pub purged: AtomicU64,
    /// Messages deleted by their owners.
    pub deleted: AtomicU64,
    /// Messages refused (too little work, expired, deleted, malformed, inbox full).
    pub refused: AtomicU64,
}

/// The inbox subsystem: admits, lists, deletes and purges messages.
#[derive(Clone)]
pub(crate) struct Inbox {
    ctx: Ctx,
    records: Records,
    repair: Repair,
    state: Arc<State>,
}

struct State {
    stats: InboxStats,
    /// Expiries of the messages held, and deletions remembered.
    ledger: Mutex<Ledger>,
}

impl Inbox {
    /// The inbox subsystem of the vault whose context is `ctx`.
    pub(crate) fn new(ctx: Ctx, records: Records, repair: Repair) -> Inbox {
        Inbox { ctx, records, repair, state: Arc::new(State { stats: InboxStats::default(), ledger: Mutex::default() }) }
    }

    /// The inbox counters.
    pub(crate) fn stats(&self) -> &InboxStats {
        &self.state.stats
    }

    /// Checks a message against this vault's clock, difficulty, deletions and inbox bound.
    pub(crate) fn admit_message(&self, message: &Message, key: &RecordKey) -> Result<(), RemoteError> {
        let now = unix_now();
        let refuse = |e: RemoteError| {
            self.state.stats.refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        if let Err(e) = message.admit(now, &self.ctx.config().message_difficulty()) {
            return refuse(RemoteError::Refused(e));
        }
        if lock(&self.state.ledger).was_deleted(key, now) {
            return refuse(RemoteError::Refused(RecordError::BadMessage("deleted by the inbox's owner".into())));
        }
        let held = self.ctx.store().keys_at(RecordKind::Message, &message.inbox);
        if held.len() >= MAX_INBOX && !held.contains(key) {
            return refuse(RemoteError::InboxFull { inbox: message.inbox, held: held.len() as u32 });
        }
        Ok(())
    }

    /// Answers an inbox owner's signed request.
    pub(crate) async fn inbox_request(&self, request: InboxRequest) -> Result<Response, RemoteError> {
        let now = unix_now();
        let inbox = request.verify(now).map_err(RemoteError::Refused)?;
        let mut keys = self.ctx.store().keys_at(RecordKind::Message, &inbox);
        keys.sort();
        match request.op {
            InboxOp::List { after } => {
                let keys: Vec<RecordKey> = keys.into_iter().filter(|k| after.is_none_or(|a| k.id > a)).collect();
                // Read a page at a time until a page of live messages is found: expired ones
                // (waiting for the purge) are skipped, and "more" still means that keys past
                // the last one examined remain.
                let mut messages = Vec::new();
                let mut examined = 0;
                while messages.len() < LIST_PAGE && examined < keys.len() {
                    let piece = keys[examined..].iter().take(LIST_PAGE - messages.len()).copied().collect::<Vec<_>>();
                    examined += piece.len();
                    let records =
                        self.records.read_records(piece).await.map_err(|e| RemoteError::Internal(e.to_string()))?;
                    messages.extend(records.into_iter().filter_map(|r| match r {
                        Record::Message(m) if !m.expired(now) => Some(m),
                        _ => None,
                    }));
                }
                Ok(Response::Messages { messages, more: examined < keys.len() })
            }
            InboxOp::Delete { ids } => {
                let mut gone = 0;
                for id in ids {
                    let key = RecordKey { kind: RecordKind::Message, address: inbox, id };
                    let expires = match self.records.read_record(key).await.map_err(|e| RemoteError::Internal(e.to_string()))? {
                        Some(Record::Message(m)) => {
                            self.records.delete_record(key).await;
                            gone += 1;
                            m.expires
                        }
                        // Not held (yet): remembered all the same, so a late copy is refused.
                        _ => now + MAX_TTL_SECS,
                    };
                    lock(&self.state.ledger).deleted(key, expires, now);
                }
                self.state.stats.deleted.fetch_add(u64::from(gone), Ordering::Relaxed);
                Ok(Response::Deleted(gone))
            }
        }
    }

    /// Deletes every message that has expired; on the first call, learns the expiry of every
    /// message in the store.
    pub(crate) async fn purge_expired(&self) -> Result<usize, NodeError> {
        if !lock(&self.state.ledger).loaded {
            let keys: Vec<RecordKey> =
                self.ctx.store().keys().into_iter().filter(|k| k.kind == RecordKind::Message).collect();
            let records = self.records.read_records(keys).await.map_err(|e| NodeError::Lookup {
                target: Address([0; 32]),
                reason: format!("reading messages: {e}"),
            })?;
            let mut ledger = lock(&self.state.ledger);
            for r in records {
                if let Record::Message(m) = r {
                    ledger.held(m.key(), m.expires);
                }
            }
            ledger.loaded = true;
        }
        let expired = lock(&self.state.ledger).expired(unix_now());
        for &key in &expired {
            self.records.delete_record(key).await;
        }
        if !expired.is_empty() {
            info!(purged = expired.len(), "expired messages purged");
        }
        self.state.stats.purged.fetch_add(expired.len() as u64, Ordering::Relaxed);
        Ok(expired.len())
    }

    /// Examines every message of the inbox at `address` held here (see
    /// [`Repair::repair_record`]); an expired one is purged instead.
    pub(crate) async fn repair_inbox(&self, address: Address) -> Result<(), NodeError> {
        let now = unix_now();
        for key in self.ctx.store().keys_at(RecordKind::Message, &address) {
            match self.records.read_record(key).await {
                Ok(Some(Record::Message(m))) if m.expired(now) => self.records.delete_record(key).await,
                Ok(Some(_)) => self.repair.repair_record(key).await?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Purges expired messages every `every`.
pub(crate) struct InboxWorker {
    inbox: Inbox,
    every: Duration,
    next: tokio::time::Instant,
}

impl InboxWorker {
    /// A worker for `inbox`, purging every `every`.
    pub(crate) fn new(inbox: Inbox, every: Duration) -> Self {
        InboxWorker { inbox, every, next: tokio::time::Instant::now() }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for InboxWorker {
    fn name(&self) -> &'static str {
        "inbox"
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = self.inbox.stats();
        vec![
            ("purged".into(), s.purged.load(Ordering::Relaxed)),
            ("deleted".into(), s.deleted.load(Ordering::Relaxed)),
            ("refused".into(), s.refused.load(Ordering::Relaxed)),
        ]
    }

    async fn work(&mut self) -> Result<WorkState, NodeError> {
        if tokio::time::Instant::now() < self.next {
            return Ok(WorkState::Idle);
        }
        self.next = tokio::time::Instant::now() + self.every;
        let purged = self.inbox.purge_expired().await?;
        debug!(purged, "inbox purge done");
        Ok(WorkState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep_until(self.next).await;
    }
}

#[async_trait::async_trait]
impl KindRules for Inbox {
    async fn admit(&self, record: &Record, key: &RecordKey) -> Result<Guard, RemoteError> {
        let Record::Message(m) = record else {
            return Err(RemoteError::Invalid(format!("{} is not a message", key)));
        };
        self.admit_message(m, key)?;
        self.ctx.responsible(key.address, record.strategy().group_size()).await?;
        // Each message of an inbox is a record of its own, so two senders never make each
        // other wait.
        self.records.lock_address(Address(m.id()))
    }

    fn held_already(&self, _held: &Record, _record: &Record, _key: &RecordKey) -> Result<Held, RemoteError> {
        // A message's key is its id, which covers all but the work: one held under the key is
        // this message (perhaps with another nonce).
        Ok(Held::Same)
    }

    fn stored(&self, record: &Record, key: &RecordKey) {
        // Its sender stores it on the whole group; repair spreads it when the group changes.
        if let Record::Message(m) = record {
            lock(&self.state.ledger).held(*key, m.expires);
        }
    }

    async fn repair(&self, address: Address) -> Result<(), NodeError> {
        self.repair_inbox(address).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> RecordKey {
        RecordKey { kind: RecordKind::Message, address: Address([i; 32]), id: [i; 32] }
    }

    #[test]
    fn expired_messages_come_out_once_in_order_of_expiry() {
        let mut l = Ledger::default();
        l.held(key(1), 100);
        l.held(key(2), 50);
        l.held(key(3), 200);
        assert_eq!(l.expired(49), vec![]);
        assert_eq!(l.expired(100), vec![key(2), key(1)], "expiring at `now` counts as expired");
        assert_eq!(l.expired(150), vec![]);
        assert_eq!(l.expired(u64::MAX - 1), vec![key(3)]);
    }

    #[test]
    fn deletions_are_remembered_until_the_message_would_expire_and_bounded() {
        let mut l = Ledger::default();
        l.held(key(1), 100);
        l.deleted(key(1), 100, 10);
        assert!(l.was_deleted(&key(1), 99));
        assert!(!l.was_deleted(&key(1), 100));
        assert_eq!(l.expired(1000), vec![], "a deleted message is not purged again");
        for i in 0..(MAX_DELETED + 10) {
            let mut k = key(0);
            k.id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            l.deleted(k, 1_000 + i as u64, 0);
        }
        assert!(l.deleted.len() <= MAX_DELETED);
        let mut last = key(0);
        last.id[..8].copy_from_slice(&((MAX_DELETED + 9) as u64).to_be_bytes());
        assert!(l.was_deleted(&last, 0), "the newest deletion is kept; the soonest to run out went");
    }
}
