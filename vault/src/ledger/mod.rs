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
//! `crate::payments`.
//!
//! Owns: the vault's BLS key, account summaries, promises, the accounts being caught up on
//! and compared, committees found by lookup, checked certificates, evidence. Talks to: the
//! records (storing entries, as `KindRules` of transfers), repair (its counters), peers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use kura_node::ledger::{AccountView, Binding, BindingCache, LedgerError, SignedTransfer, Summary, WalletKey};
use kura_node::verifier::Verifier;
use kura_node::wire::RemoteError;
use kura_node::{Address, NodeError, PeerId, RecordError};

use kura_node::{Record, RecordKey};

use crate::context::{internal, lock, Ctx};
use crate::evidence::Evidence;
use crate::records::{Guard, Held, KindRules, Records, Verdict};
use crate::repair::Repair;

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

/// Vaults looked at around an account to find its committee's elders among them: newcomers
/// near it are passed over, so more than the committee is looked at.
const WIDE: usize = 2 * kura_node::age::VOTERS;

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

/// The ledger subsystem: a vault as a replica of the accounts it is in the committee of.
#[derive(Clone)]
pub(crate) struct Ledger {
    ctx: Ctx,
    records: Records,
    repair: Repair,
    state: Arc<State>,
}

/// A replica's ledger state.
pub(crate) struct State {
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
    stripes: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Accounts whose group is to be compared soon (see [`Ledger::entry_stored`]).
    scheduled: Mutex<HashSet<Address>>,
    /// Accounts being caught up on (bounded: a flood of refused transfers starts few).
    catching_up: Mutex<HashSet<Address>>,
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
}

impl Ledger {
    /// The ledger subsystem of a vault with BLS key `key`, bound to `keypair`'s peer id,
    /// keeping its promises in `dir` (none: in memory only).
    pub(crate) fn new(ctx: Ctx, records: Records, repair: Repair, key: WalletKey, keypair: &kura_node::Keypair, genesis: Option<(Address, u64)>, dir: Option<PathBuf>, verifier: Verifier) -> Ledger {
        let state = State::new(key, keypair, genesis, dir, verifier);
        Ledger { ctx, records, repair, state: Arc::new(state) }
    }

    /// The vault's account (its earnings).
    pub(crate) fn account(&self) -> Address {
        self.state.account()
    }

    /// The ledger counters.
    pub(crate) fn stats(&self) -> &LedgerStats {
        &self.state.stats
    }

    /// The evidence this vault kept.
    pub(crate) fn evidence(&self) -> &Evidence {
        &self.state.evidence
    }
}

#[async_trait::async_trait]
impl KindRules for Ledger {
    async fn admit(&self, record: &Record, key: &RecordKey) -> Result<Guard, RemoteError> {
        let Record::Transfer(entry) = record else {
            return Err(RemoteError::Invalid(format!("{key} is not a ledger entry")));
        };
        // An account's entries are held by its committee, nothing wider.
        self.committee_member(key.address).await?;
        // A replay is answered before the certificate is checked: for an old transfer whose
        // signers have gone, checking asks the account's group.
        if self.records.read_record(*key).await.map_err(internal)?.is_some() {
            return Err(already_applied(key));
        }
        self.check_entry(entry).await?;
        Ok(Box::new(self.state.turn(&key.address).await))
    }

    fn held_already(&self, _held: &Record, _record: &Record, key: &RecordKey) -> Result<Held, RemoteError> {
        // Its key is the transfer's id: this very certificate is applied already.
        Err(already_applied(key))
    }

    async fn before_write(&self, record: &Record) -> Result<Verdict, RemoteError> {
        let Record::Transfer(entry) = record else { return Ok(Verdict::Store) };
        match self.admit_entry(entry).await? {
            Admission::Fresh => Ok(Verdict::Store),
            // Kept as evidence; the sender learns it was not taken as a transfer.
            Admission::Contested(nonce) => Ok(Verdict::StoreAndRefuse(refused(LedgerError::DoubleSpend(nonce)))),
        }
    }

    fn stored(&self, record: &Record, _key: &RecordKey) {
        // Its payer stores it on the whole group; a replica that missed it catches up.
        if let Record::Transfer(entry) = record {
            self.entry_stored(entry);
        }
    }

    fn gone(&self, key: &RecordKey) {
        self.entry_gone(key);
    }

    async fn repair(&self, address: Address) -> Result<(), NodeError> {
        self.repair_account(address).await
    }
}

/// The refusal of a certified transfer this vault holds already (its key is the transfer's id).
fn already_applied(key: &RecordKey) -> RemoteError {
    refused(LedgerError::AlreadyApplied(hex::encode(&key.id[..8])))
}

impl State {
    /// The ledger state of a vault with BLS key `key`, bound to `keypair`'s peer id.
    fn new(key: WalletKey, keypair: &kura_node::Keypair, genesis: Option<(Address, u64)>, dir: Option<PathBuf>, verifier: Verifier) -> State {
        let binding = key.bind(keypair);
        let evidence = Evidence::new(dir.as_ref().and_then(|d| d.parent()).map(|root| root.join("evidence")));
        State {
            key,
            binding,
            genesis,
            cache: Mutex::default(),
            verifier,
            summaries: Mutex::default(),
            promises: Mutex::default(),
            dir,
            catching_up: Mutex::default(),
            scheduled: Mutex::default(),
            stripes: (0..256).map(|_| Arc::new(tokio::sync::Mutex::new(()))).collect(),
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
    pub(crate) async fn turn(&self, account: &Address) -> tokio::sync::OwnedMutexGuard<()> {
        self.stripes[usize::from(account.0[0])].clone().lock_owned().await
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

/// What [`Ledger::admit_entry`] decided.
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

pub(crate) fn refused(e: LedgerError) -> RemoteError {
    RemoteError::Refused(RecordError::Ledger(e))
}
