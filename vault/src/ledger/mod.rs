//! The vault as a replica of the reward ledger (rules in `kura_types::ledger`, the committee
//! rule in `kura_node::committee`).
//!
//! A vault signs transfers out of an account only while it is in the account's committee
//! (the 8 vaults closest to it, as this vault sees the network), one per nonce: the promise
//! is written to disk (fsynced) before the signature leaves, so a restart never makes it sign
//! a second transfer at a nonce. Every certified transfer it admits, whichever way it comes
//! (a client's store, a group member's push, catch-up), passes every check: the owner's
//! signature, the signers' aggregate signature, a quorum of the payer's committee as this
//! vault sees it (looked up when its routing table does not settle it), and the account's
//! state here (a debit only at the next nonce and covered by the balance; a credit once per
//! payer and nonce). An old transfer whose signers have left the committee must in addition
//! be held by [`VOUCHERS`](kura_node::committee::VOUCHERS) members of the account's group, and its signers must be vault ids
//! (with work). Two certificates at one nonce, and a committee's certificate of a transfer
//! its owner never signed, are kept as evidence and their signers penalized.
//!
//! `admit` signs and checks; `catchup` serves what a replica holds and brings an account's
//! group in step. Storage payments, which take certificates this module checks, are
//! [`crate::payments`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kura_node::ledger::{AccountView, Binding, BindingCache, LedgerError, SignedTransfer, Summary, WalletKey};
use kura_node::verifier::Verifier;
use kura_node::wire::RemoteError;
use kura_node::{Address, NodeError, PeerId, RecordError};

use crate::evidence::Evidence;
use crate::payments::Unpaid;
use crate::server::Vault;

mod admit;
mod catchup;

pub use catchup::{plan_entries, EntryAction};

/// File of the vault's BLS key (its replica and earnings key) in its root.
pub const BLS_KEY_FILE: &str = "ledger.key";

/// Account summaries kept in memory (each can be built again from the entries on disk).
const SUMMARIES_KEPT: usize = 1 << 16;

/// Promises kept in memory (each also on disk).
const PROMISES_KEPT: usize = 1 << 16;

/// How long after storing a transfer a vault compares the account with its group.
const COMPARE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Accounts waiting to be compared at once.
const MAX_SCHEDULED: usize = 4096;

/// Accounts caught up on at once.
const MAX_CATCHING_UP: usize = 16;

/// Departed vaults a routing table may still hold ahead of a committee member: a vault
/// ranked this close behind the committee of its table looks the committee up before it
/// refuses to serve as a member (three: the most by which views may differ and the ledger stay
/// safe).
const LAGGING: usize = 3;

/// How long a committee found by lookup is reused.
const LOOKUP_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Committees found by lookup remembered at once.
const LOOKUPS_KEPT: usize = 4096;

/// Committee lookups under way at once: a flood of certificates from strangers, each naming
/// another payer, waits for these instead of starting a lookup each.
const MAX_LOOKUPS: usize = 8;

/// Transfers whose owner's signature this vault checked when it signed them, remembered so
/// that their certificate's check does not pay that pairing again.
const OWNER_CHECKED_KEPT: usize = 1 << 16;

/// Accounts compared with their group at once.
const MAX_COMPARING: usize = 64;

/// Certificates a catch-up round checks at once.
const CHECKS_AT_ONCE: usize = 8;

/// How long a certificate that passed every check, vouchers included, is taken as checked.
const CHECKED_FRESH: std::time::Duration = std::time::Duration::from_secs(120);

/// Certificates remembered as checked.
const CHECKED_KEPT: usize = 1 << 14;

/// Entries fetched from the group in one catch-up round (the rest come in the next).
const FETCH_PER_ROUND: usize = 1024;

/// A replica's ledger state.
pub(crate) struct Ledger {
    key: WalletKey,
    binding: Binding,
    genesis: Option<(Address, u64)>,
    cache: Mutex<BindingCache>,
    /// Checks owners' signatures and certificates, many at a time under load.
    verifier: Verifier,
    /// Summaries of the accounts whose entries this vault holds, built on first use.
    summaries: Mutex<HashMap<Address, Summary>>,
    /// The last transfer signed for each account (also on disk under `promises`).
    promises: Mutex<HashMap<Address, SignedTransfer>>,
    /// Where promises are written; `None` for a memory-only vault.
    dir: Option<PathBuf>,
    /// Locks that make signing and storing at one account take turns (an account hashes to
    /// one of them): a payee credited by many payers at once queues, it does not refuse.
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Accounts whose group is to be compared soon (see [`Vault::entry_stored`]).
    scheduled: Mutex<HashSet<Address>>,
    /// Accounts being caught up on (bounded: a flood of refused transfers starts few).
    catching_up: Mutex<HashSet<Address>>,
    /// The vault's identity, which signs its quotes.
    pub(crate) keypair: kura_node::Keypair,
    /// Shards stored by clients and not yet paid for.
    pub(crate) pending: Mutex<Unpaid>,
    /// Payments taken lately.
    pub(crate) payments_seen: Mutex<HashSet<[u8; 32]>>,
    /// This vault's balance as its account's replicas last agreed on it.
    pub(crate) balance: Mutex<Option<i128>>,
    /// Whether a read of the balance is under way.
    pub(crate) refreshing: std::sync::atomic::AtomicBool,
    /// Counters.
    pub(crate) stats: LedgerStats,
    /// Double spends and unowned certificates found.
    pub(crate) evidence: Evidence,
    /// Payers' committees found by lookup, and when.
    looked_up: Mutex<HashMap<Address, (std::time::Instant, Vec<PeerId>)>>,
    /// Bounds the committee lookups under way.
    lookups: tokio::sync::Semaphore,
    /// Ids of transfers whose owner's signature this vault checked when signing.
    owner_checked: Mutex<HashSet<[u8; 32]>>,
    /// Entries that passed every check lately (vouchers included), and when: a catch-up
    /// checks its entries side by side, then stores them in order.
    checked: Mutex<HashMap<[u8; 32], std::time::Instant>>,
    /// Accounts being compared with their group right now.
    comparing: Mutex<HashSet<Address>>,
}

/// Ledger counters.
#[derive(Debug, Default)]
pub(crate) struct LedgerStats {
    /// Transfers signed.
    pub signed: AtomicU64,
    /// Signatures refused.
    pub refused: AtomicU64,
    /// Entries admitted.
    pub applied: AtomicU64,
    /// Certified transfers refused because another held the nonce.
    pub double_spends: AtomicU64,
    /// Units earned for storing shards.
    pub earned: AtomicU64,
    /// Shards dropped because they were not paid for in time.
    pub unpaid_dropped: AtomicU64,
}

impl Ledger {
    /// The ledger state of a vault with BLS key `key`, bound to `keypair`'s peer id.
    pub(crate) fn new(key: WalletKey, keypair: &kura_node::Keypair, genesis: Option<(Address, u64)>, dir: Option<PathBuf>, verifier: Verifier) -> Ledger {
        let binding = key.bind(keypair);
        let evidence = Evidence::new(dir.as_ref().and_then(|d| d.parent()).map(|root| root.join("evidence")));
        Ledger {
            key,
            binding,
            genesis,
            cache: Mutex::default(),
            verifier,
            summaries: Mutex::default(),
            promises: Mutex::default(),
            dir,
            keypair: keypair.clone(),
            pending: Mutex::default(),
            payments_seen: Mutex::default(),
            balance: Mutex::default(),
            refreshing: Default::default(),
            catching_up: Mutex::default(),
            scheduled: Mutex::default(),
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            stats: LedgerStats::default(),
            evidence,
            looked_up: Mutex::default(),
            lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS),
            owner_checked: Mutex::default(),
            checked: Mutex::default(),
            comparing: Mutex::default(),
        }
    }

    /// The vault's account (its earnings).
    pub(crate) fn account(&self) -> Address {
        self.binding.account()
    }

    fn promise_path(&self, account: &Address) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{}.promise", hex::encode(account.0))))
    }

    /// Holds the account's turn until dropped.
    pub(crate) async fn turn(&self, account: &Address) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[usize::from(account.0[0])].lock().await
    }

    /// Keeps a promise in memory (bounded: when full, memory starts again; the promises stay on
    /// disk and are read back when needed).
    fn remember_promise(&self, account: Address, promise: SignedTransfer) {
        let mut promises = lock(&self.promises);
        // A memory-only vault has no other copy: it keeps them all.
        if self.dir.is_some() && promises.len() >= PROMISES_KEPT && !promises.contains_key(&account) {
            promises.clear();
        }
        promises.insert(account, promise);
    }

    fn forget(&self, account: &Address) {
        lock(&self.summaries).remove(account);
    }
}

/// What [`Vault::admit_entry`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A new entry: store it.
    Fresh,
    /// It contests another certified transfer at this nonce: store it as evidence (the summary
    /// counts it conservatively) and refuse.
    Contested(u64),
}

/// Writes a file so that it survives a crash whole or not at all (owner-only).
pub(crate) fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    kura_node::durable::replace(path, bytes, kura_node::durable::Access::Private)
}

/// Removes an account from a claimed set when dropped.
struct Unclaim<'a>(&'a Mutex<HashSet<Address>>, Address);

impl Drop for Unclaim<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

/// Adds `account` to `set` unless it is there already or `set` holds `max`; says whether it
/// was added (the caller then starts the work `set` tracks, and removes it when done).
fn claim(set: &Mutex<HashSet<Address>>, max: usize, account: Address) -> bool {
    let mut set = lock(set);
    set.len() < max && set.insert(account)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn refused(e: LedgerError) -> RemoteError {
    RemoteError::Refused(RecordError::Ledger(e))
}

pub(crate) fn internal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Internal(e.to_string())
}

/// Drops shards left unpaid past their grace period, and reads the vault's own balance now
/// and then (for status).
pub(crate) struct LedgerWorker {
    vault: Vault,
    next: tokio::time::Instant,
    next_balance: tokio::time::Instant,
}

/// How often unpaid shards are looked for.
const UNPAID_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the vault reads its own balance.
const BALANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

impl LedgerWorker {
    /// A worker for `vault`.
    pub(crate) fn new(vault: Vault) -> Self {
        let now = tokio::time::Instant::now();
        LedgerWorker { vault, next: now + UNPAID_EVERY, next_balance: now + UNPAID_EVERY }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for LedgerWorker {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = &self.vault.ledger().stats;
        vec![
            ("signed".into(), s.signed.load(Ordering::Relaxed)),
            ("refused".into(), s.refused.load(Ordering::Relaxed)),
            ("applied".into(), s.applied.load(Ordering::Relaxed)),
            ("double_spends_refused".into(), s.double_spends.load(Ordering::Relaxed)),
            ("evidence".into(), self.vault.ledger().evidence.found()),
            ("unpaid_dropped".into(), s.unpaid_dropped.load(Ordering::Relaxed)),
        ]
    }

    async fn work(&mut self) -> Result<crate::worker::WorkState, NodeError> {
        let now = tokio::time::Instant::now();
        if now >= self.next {
            self.next = now + UNPAID_EVERY;
            self.vault.drop_unpaid().await;
        }
        if now >= self.next_balance {
            self.next_balance = now + BALANCE_EVERY;
            let b = self.vault.own_balance().await;
            if b.is_some() {
                *lock(&self.vault.ledger().balance) = b;
            }
        }
        Ok(crate::worker::WorkState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep_until(self.next.min(self.next_balance)).await;
    }
}

