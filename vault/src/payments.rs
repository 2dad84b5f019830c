//! Storage payments: a vault quotes its price, stores a client's shards owed for, takes
//! certified payments for them (each counted once), and drops shards left unpaid past the
//! grace period. Its earnings are what its account's replicas agree it holds.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use kura_node::ledger::{LedgerError, Quote, QUORUM};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{NodeError, PeerId, RecordKey, RecordKind};

use crate::ledger::{lock, refused};
use crate::server::Vault;

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

impl Vault {
    /// A signed quote of this vault's current price.
    pub(crate) fn quote(&self) -> Response {
        let usage = self.store().usage();
        let price = match self.config().paid_storage {
            true => kura_node::ledger::price_per_mib(self.config().storage_price, usage.bytes, usage.capacity),
            false => 0,
        };
        let expires = kura_node::message::unix_now().as_secs() + kura_node::ledger::QUOTE_SECS;
        Response::Quote(Quote::sign(&self.ledger().keypair, self.ledger().account(), price, expires))
    }

    /// Stores a client's shard at its quote; it is owed for until paid, and dropped if not
    /// paid within the grace period.
    pub(crate) async fn store_quoted(&self, shard: kura_node::Shard, quote: Quote, client: PeerId) -> Result<Response, RemoteError> {
        if !self.config().paid_storage {
            return self.put_shard(shard).await.map(|()| Response::Stored);
        }
        let now = kura_node::message::unix_now().as_secs();
        quote.verify(now).map_err(refused)?;
        if quote.vault != self.node().peer_id() || quote.account != self.ledger().account() {
            return Err(refused(LedgerError::BadQuote("the quote is another vault's".into())));
        }
        let key = shard.key();
        let cost = quote.cost(shard.data.len());
        let held = self.store().keys_at(RecordKind::Shard, &key.address).contains(&key);
        lock(&self.ledger().pending).admits(&key, &client)?;
        self.put_shard(shard).await?;
        let mut pending = lock(&self.ledger().pending);
        if held && !pending.shards.contains_key(&key) {
            return Ok(Response::Stored); // held and paid for already
        }
        let deadline = now + self.config().payment_grace_secs;
        Ok(Response::Owed(pending.owe(key, Pending { cost, client, deadline })))
    }

    /// Takes a payment for shards owed for.
    pub(crate) async fn paid(&self, cert: kura_node::ledger::Certificate, shards: Vec<RecordKey>) -> Result<Response, RemoteError> {
        if shards.len() > MAX_UNPAID_PER_CLIENT {
            return Err(RemoteError::Invalid(format!("at most {MAX_UNPAID_PER_CLIENT} shards per payment")));
        }
        let me = self.ledger().account();
        let memo = kura_node::ledger::shards_memo(&shards);
        let Some(output) = cert.transfer.transfer.outputs.iter().find(|o| o.to == me && o.memo == memo).cloned() else {
            return Err(refused(LedgerError::Underpaid { paid: 0, owed: self.owed(&shards) }));
        };
        self.check_certificate(&cert, None).await?;
        let owed = self.owed(&shards);
        if output.amount < owed {
            return Err(refused(LedgerError::Underpaid { paid: output.amount, owed }));
        }
        {
            let mut pending = lock(&self.ledger().pending);
            for k in &shards {
                pending.remove(k);
            }
        }
        let first = {
            let mut seen = lock(&self.ledger().payments_seen);
            if seen.len() >= MEMORY {
                seen.clear();
            }
            seen.insert(cert.id())
        };
        if first {
            self.ledger().stats.earned.fetch_add(output.amount, Ordering::Relaxed);
            // The balance shown in status follows soon after (the certificate reaches this
            // vault's account group as the payer confirms it).
            if !self.ledger().refreshing.swap(true, Ordering::Relaxed) {
                let vault = self.clone();
                self.spawn_background(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if let Some(b) = vault.own_balance().await {
                        *lock(&vault.ledger().balance) = Some(b);
                    }
                    vault.ledger().refreshing.store(false, Ordering::Relaxed);
                });
            }
        }
        Ok(Response::PaidFor(output.amount))
    }

    pub(crate) fn owed(&self, shards: &[RecordKey]) -> u64 {
        let pending = lock(&self.ledger().pending);
        shards.iter().filter_map(|k| pending.shards.get(k)).fold(0u64, |a, p| a.saturating_add(p.cost))
    }

    /// Deletes the shards left unpaid past their grace period; returns how many.
    pub(crate) async fn drop_unpaid(&self) -> usize {
        let now = kura_node::message::unix_now().as_secs();
        let due: Vec<RecordKey> = {
            let mut pending = lock(&self.ledger().pending);
            let due: Vec<RecordKey> = pending.shards.iter().filter(|(_, p)| p.deadline < now).map(|(k, _)| *k).collect();
            for k in &due {
                pending.remove(k);
            }
            due
        };
        for &key in &due {
            self.delete_record(key).await;
        }
        if !due.is_empty() {
            tracing::info!(dropped = due.len(), "shards left unpaid past the grace period dropped");
        }
        self.ledger().stats.unpaid_dropped.fetch_add(due.len() as u64, Ordering::Relaxed);
        due.len()
    }

    /// This vault's balance, as its account's replicas agree on it (asked now, 2 s at most).
    pub(crate) async fn own_balance(&self) -> Option<i128> {
        let account = self.ledger().account();
        let ask = async {
            let group = self.node().closest_vaults(account, usize::from(kura_node::REPLICAS)).await.ok()?;
            let me = self.node().peer_id();
            let mut votes: HashMap<i128, usize> = HashMap::new();
            let answers = futures::future::join_all(group.iter().map(|&p| async move {
                match p == me {
                    true => self.account_view(account).await.map_err(|e| NodeError::Lookup { target: account, reason: e.to_string() }),
                    false => self.ask(p, Request::Account(account)).await,
                }
            }))
            .await;
            for a in answers {
                if let Ok(Response::Account(v)) = a {
                    *votes.entry(v.balance).or_default() += 1;
                }
            }
            let needed = QUORUM.min(group.len());
            votes.into_iter().filter(|(_, n)| *n >= needed).max_by_key(|(_, n)| *n).map(|(b, _)| b)
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), ask).await.ok().flatten()
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
