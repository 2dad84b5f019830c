//! Paying vaults for storage.
//!
//! A vault that stores only paid shards quotes a price per MiB (signed, valid ten minutes,
//! rising with how full it is). The client stores each shard with the holder's quote, and the
//! vault answers what it is owed. When the upload is done (or its bill grows long), one
//! certified transfer pays every holder of every shard stored, one output each, whose memo is
//! a hash of the shards it pays for; then each holder is shown the certificate and its list.
//! So a client pays only for shards that were stored, and one transfer pays a whole upload.
//! Shards left unpaid are dropped by their vaults after a grace period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kura_node::ledger::{shards_memo, Output, Quote};
use kura_node::wire::{Request, Response};
use kura_node::{Address, NodeError, PeerId, RecordKey, Shard};
use tracing::{debug, info, warn};

use crate::client::Client;
use crate::error::ClientError;

/// Shards billed before the bill is paid mid-upload (a vault keeps at most 4,096 unpaid
/// shards of one client).
pub const SETTLE_EVERY: usize = 1024;

/// Quotes, the bill of the shards stored and not yet paid, and what was paid.
#[derive(Debug, Default)]
pub struct Payments {
    quotes: Mutex<HashMap<PeerId, Quote>>,
    bill: Mutex<HashMap<PeerId, Due>>,
    paying: tokio::sync::Mutex<()>,
    paid: AtomicU64,
    billed: AtomicU64,
}

#[derive(Debug, Clone)]
struct Due {
    account: Address,
    shards: Vec<RecordKey>,
    amount: u64,
}

/// What storing will cost at most, before anything is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Units, at most.
    pub cost: u64,
    /// The highest price per MiB quoted by the vaults asked.
    pub price_per_mib: u64,
    /// Vaults asked.
    pub quotes: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> u64 {
    kura_node::message::unix_now().as_secs()
}

impl Client {
    /// A vault's quote: one it gave lately, or a new one.
    pub async fn quote_of(&self, vault: PeerId) -> Result<Quote, ClientError> {
        if let Some(q) = lock(&self.payments.quotes).get(&vault) {
            if q.expires > now() + 60 {
                return Ok(q.clone());
            }
        }
        let quote = match self.node().request(vault, Request::Quote).await? {
            Response::Quote(q) if q.vault == vault && q.verify(now()).is_ok() => q,
            _ => return Err(NodeError::UnexpectedResponse { peer: vault, request: "Quote" }.into()),
        };
        let mut quotes = lock(&self.payments.quotes);
        if quotes.len() > 4096 {
            quotes.clear();
        }
        quotes.insert(vault, quote.clone());
        Ok(quote)
    }

    /// Stores a shard on a vault: with its quote, and billed, when the client has a wallet;
    /// plainly otherwise.
    pub(crate) async fn send_shard(&self, vault: PeerId, shard: Shard) -> Result<Response, NodeError> {
        if self.config.wallet.is_none() {
            return self.node().request(vault, Request::PutShard(shard)).await;
        }
        let quote = match self.quote_of(vault).await {
            Ok(q) => q,
            Err(ClientError::Node(e)) => return Err(e),
            Err(e) => return Err(NodeError::Lookup { target: shard.key().address, reason: e.to_string() }),
        };
        let key = shard.key();
        let account = quote.account;
        let quoted = quote.cost(shard.data.len());
        let answer = self.node().request(vault, Request::StoreShard { shard, quote }).await?;
        if let Response::Owed(amount) = answer {
            if amount > quoted {
                // A vault asking more than its own quote is not paid, and not used.
                warn!(%vault, amount, quoted, "a vault asked more than it quoted");
                return Err(NodeError::UnexpectedResponse { peer: vault, request: "StoreShard" });
            }
            let mut bill = lock(&self.payments.bill);
            let due = bill.entry(vault).or_insert(Due { account, shards: Vec::new(), amount: 0 });
            if !due.shards.contains(&key) {
                due.shards.push(key);
                due.amount = due.amount.saturating_add(amount);
                self.payments.billed.fetch_add(amount, Ordering::Relaxed);
            }
        }
        Ok(answer)
    }

    /// Shards stored and not yet paid for.
    pub fn unpaid_shards(&self) -> usize {
        lock(&self.payments.bill).values().map(|d| d.shards.len()).sum()
    }

    /// Units paid for storage by this client so far.
    pub fn storage_paid(&self) -> u64 {
        self.payments.paid.load(Ordering::Relaxed)
    }

    /// Pays the bill if it has grown past [`SETTLE_EVERY`] shards.
    pub(crate) async fn settle_if_long(&self) -> Result<(), ClientError> {
        if self.config.wallet.is_some() && self.unpaid_shards() >= SETTLE_EVERY {
            self.settle().await?;
        }
        Ok(())
    }

    /// Pays every vault for the shards it stored and was not yet paid for, in one transfer;
    /// returns the units paid.
    pub async fn settle(&self) -> Result<u64, ClientError> {
        let Some(wallet) = self.config.wallet.clone() else { return Ok(0) };
        let _paying = self.payments.paying.lock().await;
        let bill: Vec<(PeerId, Due)> = std::mem::take(&mut *lock(&self.payments.bill)).into_iter().collect();
        if bill.is_empty() {
            return Ok(0);
        }
        let outputs: Vec<Output> =
            bill.iter().map(|(_, d)| Output { to: d.account, amount: d.amount, memo: shards_memo(&d.shards) }).collect();
        let total: u64 = bill.iter().map(|(_, d)| d.amount).sum();
        let cert = match self.pay(&wallet, outputs).await {
            Ok(c) => c,
            Err(e) => {
                // Still owed: kept for the next settle (the vaults keep the shards for the grace period).
                let mut kept = lock(&self.payments.bill);
                for (vault, due) in bill {
                    kept.insert(vault, due);
                }
                return Err(ClientError::Wallet(format!("{total} units owed for stored shards could not be paid: {e}")));
            }
        };
        let shows = bill.iter().map(|(vault, due)| {
            let request = Request::Paid { certificate: cert.clone(), shards: due.shards.clone() };
            async move { (*vault, self.node().request(*vault, request).await) }
        });
        for (vault, answer) in futures::future::join_all(shows).await {
            match answer {
                Ok(Response::PaidFor(n)) => debug!(%vault, units = n, "vault paid"),
                other => warn!(%vault, answer = ?other, "a vault did not take its payment"),
            }
        }
        self.payments.paid.fetch_add(total, Ordering::Relaxed);
        info!(units = total, vaults = bill.len(), "storage paid");
        Ok(total)
    }

    /// What storing `bytes` of content will cost at most: the highest price quoted by up to 16
    /// vaults, on the bytes the coding stores (every shard at least one unit).
    pub async fn estimate(&self, bytes: u64) -> Result<Estimate, ClientError> {
        let vaults: Vec<PeerId> = self.node().routing_table().await?.into_iter().take(16).collect();
        let quotes = futures::future::join_all(vaults.iter().map(|&v| self.quote_of(v))).await;
        let prices: Vec<u64> = quotes.into_iter().flatten().map(|q| q.price_per_mib).collect();
        let price_per_mib = prices.iter().copied().max().ok_or(ClientError::NoPeers)?;
        let coding = self.config.coding;
        let (k, n) = (u64::from(coding.k), u64::from(coding.k) + u64::from(coding.m));
        // Self-encryption makes at least 3 chunks of at most 1 MiB, each a little longer
        // than its content; the root record is a chunk too.
        let chunks = (bytes >> 20) + 4;
        let stored = (bytes + chunks * 4096 + 65536).div_ceil(k) * n;
        let cost = match price_per_mib {
            0 => 0,
            p => (u128::from(stored) * u128::from(p)).div_ceil(1 << 20) as u64 + chunks * n,
        };
        Ok(Estimate { cost, price_per_mib, quotes: prices.len() })
    }

    /// Makes sure the wallet can pay `cost`: on a local testnet whose faucet the client has,
    /// draws what is missing (and returns how much); elsewhere fails naming the cost and the
    /// balance.
    pub async fn ensure_funds(&self, cost: u64) -> Result<u64, ClientError> {
        let Some(wallet) = self.config.wallet.clone() else { return Ok(0) };
        if cost == 0 {
            return Ok(0);
        }
        let balance = self.balance(wallet.address()).await?.balance;
        if balance >= i128::from(cost) {
            return Ok(0);
        }
        let missing = (i128::from(cost) - balance) as u64;
        match self.config.faucet.clone() {
            Some(faucet) => {
                // A little more than missing, so the next few puts need not draw again.
                let draw = missing.max(kura_node::ledger::UNITS_PER_TOKEN);
                self.pay(&faucet, vec![Output { to: wallet.address(), amount: draw, memo: [0; 32] }]).await?;
                Ok(draw)
            }
            None => Err(ClientError::InsufficientFunds { cost, balance }),
        }
    }
}
