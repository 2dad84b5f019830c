//! Storage payments: a vault quotes its price, stores a client's shards owed for, takes
//! certified payments for them (each counted once), and drops shards left unpaid past the
//! grace period. Its earnings are what its account's replicas agree it holds.
//!
//! Owns: the vault's quoting key, the shards owed for, the payments taken, the balance last
//! read. Talks to: the records (storing and dropping shards), the ledger (checking
//! certificates, this vault's account), peers (reading the balance).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kura_node::ledger::{quorum, LedgerError, Quote};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{NodeError, PeerId, RecordKey, RecordKind};

use crate::context::{lock, Ctx};
use crate::ledger::{refused, Ledger};
use crate::records::Records;

/// Shards one client may have stored at one vault and not yet paid for.
pub const MAX_UNPAID_PER_CLIENT: usize = 4096;

/// Payment ids remembered (so a replayed payment is not counted as earned twice).
const MEMORY: usize = 1 << 16;

/// A shard stored and not yet paid for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    cost: u64,
    client: PeerId,
    deadline: u64,
}

/// Most shards waiting for payment at once, from all clients together.
const MAX_UNPAID: usize = 1 << 18;

/// Shards stored by clients and not yet paid for, counted per client.
#[derive(Default)]
pub(crate) struct Unpaid {
    shards: HashMap<RecordKey, Pending>,
    per_client: HashMap<PeerId, usize>,
}

impl Unpaid {
    /// Whether `client` may leave shard `key` unpaid here: a resend always may; a new one only
    /// within the client's bound and the vault's.
    fn admits(&self, key: &RecordKey, client: &PeerId) -> Result<(), RemoteError> {
        if self.shards.contains_key(key) {
            return Ok(());
        }
        if self.per_client.get(client).copied().unwrap_or(0) >= MAX_UNPAID_PER_CLIENT {
            return Err(refused(LedgerError::BadQuote(format!(
                "{MAX_UNPAID_PER_CLIENT} shards stored here are waiting for your payment: pay for them first"
            ))));
        }
        if self.shards.len() >= MAX_UNPAID {
            return Err(RemoteError::Busy);
        }
        Ok(())
    }

    /// Owes for `key` (once), and returns what is owed for it.
    fn owe(&mut self, key: RecordKey, pending: Pending) -> u64 {
        if let Some(p) = self.shards.get(&key) {
            return p.cost;
        }
        *self.per_client.entry(pending.client).or_default() += 1;
        let cost = pending.cost;
        self.shards.insert(key, pending);
        cost
    }

    fn remove(&mut self, key: &RecordKey) {
        if let Some(p) = self.shards.remove(key) {
            if let Some(n) = self.per_client.get_mut(&p.client) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&p.client);
                }
            }
        }
    }
}

/// Storage payments: quotes, shards owed for, payments taken, the vault's own balance.
#[derive(Clone)]
pub(crate) struct Payments {
    ctx: Ctx,
    records: Records,
    ledger: Ledger,
    state: Arc<State>,
}

struct State {
    /// The vault's identity, which signs its quotes.
    keypair: kura_node::Keypair,
    /// Shards stored by clients and not yet paid for.
    pending: Mutex<Unpaid>,
    /// Payments taken lately.
    seen: Mutex<HashSet<[u8; 32]>>,
    /// This vault's balance as its account's replicas last agreed on it.
    balance: Mutex<Option<i128>>,
    /// Whether a read of the balance is under way.
    refreshing: AtomicBool,
    stats: PaymentStats,
}

/// Counters of storage payments.
#[derive(Debug, Default)]
pub(crate) struct PaymentStats {
    /// Units earned for storing shards.
    pub earned: AtomicU64,
    /// Shards dropped because they were not paid for in time.
    pub unpaid_dropped: AtomicU64,
}

impl Payments {
    /// The payments subsystem of the vault whose context is `ctx`, quoting as `keypair`.
    pub(crate) fn new(ctx: Ctx, records: Records, ledger: Ledger, keypair: kura_node::Keypair) -> Payments {
        let state = State {
            keypair,
            pending: Mutex::default(),
            seen: Mutex::default(),
            balance: Mutex::default(),
            refreshing: AtomicBool::new(false),
            stats: PaymentStats::default(),
        };
        Payments { ctx, records, ledger, state: Arc::new(state) }
    }

    /// The payment counters.
    pub(crate) fn stats(&self) -> &PaymentStats {
        &self.state.stats
    }

    /// This vault's balance as its account's replicas last agreed on it, if they have.
    pub(crate) fn balance(&self) -> Option<i128> {
        *lock(&self.state.balance)
    }

    /// A signed quote of this vault's current price.
    pub(crate) fn quote(&self) -> Response {
        let usage = self.ctx.store().usage();
        let price = match self.ctx.config().paid_storage {
            true => kura_node::ledger::price_per_mib(self.ctx.config().storage_price, usage.bytes, usage.capacity),
            false => 0,
        };
        let expires = kura_node::message::unix_now().as_secs() + kura_node::ledger::QUOTE_SECS;
        Response::Quote(Quote::sign(&self.state.keypair, self.ledger.account(), price, expires))
    }

    /// Stores a client's shard at its quote; it is owed for until paid, and dropped if not
    /// paid within the grace period.
    pub(crate) async fn store_quoted(&self, shard: kura_node::Shard, quote: Quote, client: PeerId) -> Result<Response, RemoteError> {
        if !self.ctx.config().paid_storage {
            return self.records.put_shard(shard).await.map(|()| Response::Stored);
        }
        let now = kura_node::message::unix_now().as_secs();
        quote.verify(now).map_err(refused)?;
        if quote.vault != self.ctx.node().peer_id() || quote.account != self.ledger.account() {
            return Err(refused(LedgerError::BadQuote("the quote is another vault's".into())));
        }
        let key = shard.key();
        let cost = quote.cost(shard.data.len());
        let held = self.ctx.store().keys_at(RecordKind::Shard, &key.address).contains(&key);
        lock(&self.state.pending).admits(&key, &client)?;
        self.records.put_shard(shard).await?;
        let mut pending = lock(&self.state.pending);
        if held && !pending.shards.contains_key(&key) {
            return Ok(Response::Stored); // held and paid for already
        }
        let deadline = now + self.ctx.config().payment_grace_secs;
        Ok(Response::Owed(pending.owe(key, Pending { cost, client, deadline })))
    }

    /// Takes a payment for shards owed for.
    pub(crate) async fn paid(&self, cert: kura_node::ledger::Certificate, shards: Vec<RecordKey>) -> Result<Response, RemoteError> {
        if shards.len() > MAX_UNPAID_PER_CLIENT {
            return Err(RemoteError::Invalid(format!("at most {MAX_UNPAID_PER_CLIENT} shards per payment")));
        }
        let me = self.ledger.account();
        let memo = kura_node::ledger::shards_memo(&shards);
        let Some(output) = cert.transfer.transfer.outputs.iter().find(|o| o.to == me && o.memo == memo).cloned() else {
            return Err(refused(LedgerError::Underpaid { paid: 0, owed: self.owed(&shards) }));
        };
        self.ledger.check_certificate(&cert, None).await?;
        let owed = self.owed(&shards);
        if output.amount < owed {
            return Err(refused(LedgerError::Underpaid { paid: output.amount, owed }));
        }
        {
            let mut pending = lock(&self.state.pending);
            for k in &shards {
                pending.remove(k);
            }
        }
        let first = {
            let mut seen = lock(&self.state.seen);
            if seen.len() >= MEMORY {
                seen.clear();
            }
            seen.insert(cert.id())
        };
        if first {
            self.state.stats.earned.fetch_add(output.amount, Ordering::Relaxed);
            // The balance shown in status follows soon after (the certificate reaches this
            // vault's account group as the payer confirms it).
            if !self.state.refreshing.swap(true, Ordering::Relaxed) {
                let payments = self.clone();
                self.ctx.spawn_background(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    payments.refresh_balance().await;
                    payments.state.refreshing.store(false, Ordering::Relaxed);
                });
            }
        }
        Ok(Response::PaidFor(output.amount))
    }

    pub(crate) fn owed(&self, shards: &[RecordKey]) -> u64 {
        let pending = lock(&self.state.pending);
        shards.iter().filter_map(|k| pending.shards.get(k)).fold(0u64, |a, p| a.saturating_add(p.cost))
    }

    /// Deletes the shards left unpaid past their grace period; returns how many.
    pub(crate) async fn drop_unpaid(&self) -> usize {
        let now = kura_node::message::unix_now().as_secs();
        let due: Vec<RecordKey> = {
            let mut pending = lock(&self.state.pending);
            let due: Vec<RecordKey> = pending.shards.iter().filter(|(_, p)| p.deadline < now).map(|(k, _)| *k).collect();
            for k in &due {
                pending.remove(k);
            }
            due
        };
        for &key in &due {
            self.records.delete_record(key).await;
        }
        if !due.is_empty() {
            tracing::info!(dropped = due.len(), "shards left unpaid past the grace period dropped");
        }
        self.state.stats.unpaid_dropped.fetch_add(due.len() as u64, Ordering::Relaxed);
        due.len()
    }

    /// Reads this vault's balance ([`Payments::own_balance`]) and keeps it for status, unless
    /// the replicas did not agree.
    async fn refresh_balance(&self) {
        if let Some(b) = self.own_balance().await {
            *lock(&self.state.balance) = Some(b);
        }
    }

    /// This vault's balance, as its account's replicas agree on it (asked now, 2 s at most).
    pub(crate) async fn own_balance(&self) -> Option<i128> {
        let account = self.ledger.account();
        let ask = async {
            let near = self.ctx.node().closest_vaults(account, 2 * kura_node::age::VOTERS).await.ok()?;
            let group: Vec<_> = self.ctx.elders_among(near).await.into_iter().take(kura_node::age::VOTERS).collect();
            let me = self.ctx.node().peer_id();
            let mut votes: HashMap<i128, usize> = HashMap::new();
            let answers = futures::future::join_all(group.iter().map(|&p| async move {
                match p == me {
                    true => self.ledger.account_view(account).await.map_err(|e| NodeError::Lookup { target: account, reason: e.to_string() }),
                    false => self.ctx.ask(p, Request::Account(account)).await,
                }
            }))
            .await;
            for a in answers {
                if let Ok(Response::Account(v)) = a {
                    *votes.entry(v.balance).or_default() += 1;
                }
            }
            let needed = quorum(self.ctx.elders().committee_size());
            votes.into_iter().filter(|(_, n)| *n >= needed).max_by_key(|(_, n)| *n).map(|(b, _)| b)
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), ask).await.ok().flatten()
    }
}

/// Drops shards left unpaid past their grace period, and reads the vault's own balance now
/// and then (for status). Named for the ledger, whose counters it shows in status too.
pub(crate) struct LedgerWorker {
    payments: Payments,
    next: tokio::time::Instant,
    next_balance: tokio::time::Instant,
}

/// How often unpaid shards are looked for.
const UNPAID_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the vault reads its own balance.
const BALANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

impl LedgerWorker {
    /// A worker for `payments`.
    pub(crate) fn new(payments: Payments) -> Self {
        let now = tokio::time::Instant::now();
        LedgerWorker { payments, next: now + UNPAID_EVERY, next_balance: now + UNPAID_EVERY }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for LedgerWorker {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = self.payments.ledger.stats();
        vec![
            ("signed".into(), s.signed.load(Ordering::Relaxed)),
            ("refused".into(), s.refused.load(Ordering::Relaxed)),
            ("applied".into(), s.applied.load(Ordering::Relaxed)),
            ("double_spends_refused".into(), s.double_spends.load(Ordering::Relaxed)),
            ("evidence".into(), self.payments.ledger.evidence().found()),
            ("unpaid_dropped".into(), self.payments.stats().unpaid_dropped.load(Ordering::Relaxed)),
        ]
    }

    async fn work(&mut self) -> Result<crate::worker::WorkState, NodeError> {
        let now = tokio::time::Instant::now();
        if now >= self.next {
            self.next = now + UNPAID_EVERY;
            self.payments.drop_unpaid().await;
        }
        if now >= self.next_balance {
            self.next_balance = now + BALANCE_EVERY;
            self.payments.refresh_balance().await;
        }
        Ok(crate::worker::WorkState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep_until(self.next.min(self.next_balance)).await;
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use kura_node::Address;

    #[test]
    fn unpaid_shards_are_bounded_per_client_and_counted_once() {
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let key = |i: usize| RecordKey::shard(Address::random(), i as u8);
        let owe = |client| Pending { cost: 3, client, deadline: 0 };
        let mut unpaid = Unpaid::default();
        let keys: Vec<RecordKey> = (0..MAX_UNPAID_PER_CLIENT).map(key).collect();
        for k in &keys {
            unpaid.admits(k, &greedy).unwrap();
            assert_eq!(unpaid.owe(*k, owe(greedy)), 3);
        }
        // A resend is owed once; a new shard past the bound is refused; others still may.
        assert!(unpaid.admits(&keys[0], &greedy).is_ok());
        assert_eq!(unpaid.owe(keys[0], owe(greedy)), 3);
        assert_eq!(unpaid.per_client[&greedy], MAX_UNPAID_PER_CLIENT);
        assert!(matches!(unpaid.admits(&key(0), &greedy), Err(RemoteError::Refused(_))));
        assert!(unpaid.admits(&key(0), &other).is_ok());
        // Paying for one makes room for one.
        unpaid.remove(&keys[7]);
        unpaid.remove(&keys[7]);
        assert_eq!(unpaid.per_client[&greedy], MAX_UNPAID_PER_CLIENT - 1);
        assert!(unpaid.admits(&key(0), &greedy).is_ok());
        for k in &keys {
            unpaid.remove(k);
        }
        assert!(unpaid.per_client.is_empty() && unpaid.shards.is_empty());
    }
}
