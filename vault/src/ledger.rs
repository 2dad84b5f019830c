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
//! be held by [`VOUCHERS`] members of the account's group, and its signers must be vault ids
//! (with work). Two certificates at one nonce, and a committee's certificate of a transfer
//! its owner never signed, are kept as evidence and their signers penalized.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kura_node::committee::{committee, outsiders, quorum_of, VOUCHERS};
use kura_node::ledger::{
    AccountView, Binding, BindingCache, Certificate, Entry, LedgerError, Quote, ReplicaSignature, SignedTransfer, Summary, WalletKey, QUORUM,
};
use kura_node::verifier::Verifier;
use kura_node::wire::{RemoteError, Request, Response, HISTORY_PAGE, PAGE};
use kura_node::{Address, NodeError, PeerId, Record, RecordError, RecordKey, RecordKind};
use tracing::{debug, error};

use crate::evidence::{culprits, Evidence, Exhibit, Offence};
use crate::server::Vault;

/// File of the vault's BLS key (its replica and earnings key) in its root.
pub const BLS_KEY_FILE: &str = "ledger.key";

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
    keypair: kura_node::Keypair,
    /// Shards stored by clients and not yet paid for.
    pending: Mutex<Unpaid>,
    /// Payments taken lately.
    payments_seen: Mutex<HashSet<[u8; 32]>>,
    /// This vault's balance as its account's replicas last agreed on it.
    pub(crate) balance: Mutex<Option<i128>>,
    /// Whether a read of the balance is under way.
    refreshing: std::sync::atomic::AtomicBool,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn refused(e: LedgerError) -> RemoteError {
    RemoteError::Refused(RecordError::Ledger(e))
}

fn internal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Internal(e.to_string())
}

impl Vault {
    /// The account's summary as this vault holds it.
    async fn summary(&self, account: Address) -> Result<Summary, RemoteError> {
        if let Some(s) = lock(&self.ledger().summaries).get(&account) {
            return Ok(s.clone());
        }
        let genesis = self.ledger().genesis.filter(|(a, _)| *a == account).map_or(0, |(_, s)| s);
        let keys = self.store().keys_at(RecordKind::Transfer, &account);
        let records = self.read_records(keys).await.map_err(internal)?;
        let mut summary = Summary::new(genesis);
        for r in records {
            if let Record::Transfer(e) = r {
                // Contested entries are kept as evidence and counted as the summary's rules say.
                if let Err(err) = summary.apply(&e) {
                    debug!(%account, error = %err, "an entry that contests another");
                }
            }
        }
        if summary.entries > 0 || genesis > 0 {
            let mut summaries = lock(&self.ledger().summaries);
            // A cache: a summary left out is built again from disk when next needed.
            if summaries.len() >= SUMMARIES_KEPT {
                if let Some(other) = summaries.keys().next().copied() {
                    summaries.remove(&other);
                }
            }
            summaries.insert(account, summary.clone());
        }
        Ok(summary)
    }

    /// The last transfer this vault signed for `account`. A promise that cannot be read is an
    /// error, never "none": signing on would risk a second transfer at its nonce.
    fn promise(&self, account: &Address) -> Result<Option<SignedTransfer>, RemoteError> {
        if let Some(p) = lock(&self.ledger().promises).get(account) {
            return Ok(Some(p.clone()));
        }
        let Some(path) = self.ledger().promise_path(account) else { return Ok(None) };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal(format!("reading the promise {}: {e}", path.display()))),
        };
        let promise = kura_node::stored::decode_transfer(&bytes)
            .map_err(|e| internal(format!("the promise {} does not decode: {e}", path.display())))?;
        self.ledger().remember_promise(*account, promise.clone());
        Ok(Some(promise))
    }

    /// Writes the promise durably ([`write_durably`]) before the signature leaves.
    async fn keep_promise(&self, account: Address, signed: &SignedTransfer) -> Result<(), RemoteError> {
        if let Some(path) = self.ledger().promise_path(&account) {
            let bytes = kura_node::stored::encode_transfer(signed);
            tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
                .await
                .map_err(internal)?
                .map_err(|e| internal(format!("writing a promise: {e}")))?;
        }
        self.ledger().remember_promise(account, signed.clone());
        Ok(())
    }

    /// The account's committee as this vault sees it, if this vault is in it; else
    /// [`RemoteError::NotResponsible`]. Nothing wider than the committee signs for an account
    /// or holds its entries. A routing table lags churn (a vault that left stays in it for a
    /// while), so a vault that finds itself just outside the committee of its table, when
    /// asked as a member, looks the committee up before it refuses.
    pub(crate) async fn committee_member(&self, account: Address) -> Result<Vec<PeerId>, RemoteError> {
        let me = self.node().peer_id();
        let view = self.node().local_closest(account, usize::from(kura_node::REPLICAS) + LAGGING).await.map_err(internal)?;
        let members = committee(&account, view.iter().copied());
        if members.contains(&me) {
            return Ok(members);
        }
        // Only a vault close behind the committee may be a member whose table lags; any other
        // refuses at no cost.
        if !view.contains(&me) {
            return Err(RemoteError::NotResponsible(account));
        }
        let found = self.looked_up_committee(account).await?;
        match found.contains(&me) {
            true => Ok(found),
            false => Err(RemoteError::NotResponsible(account)),
        }
    }

    /// Signs a transfer out of an account this vault is a replica of, if the rules allow.
    pub(crate) async fn sign_transfer(&self, signed: SignedTransfer) -> Result<Response, RemoteError> {
        let result = self.try_sign(signed).await;
        let counter = match &result {
            Ok(_) => &self.ledger().stats.signed,
            Err(_) => &self.ledger().stats.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn try_sign(&self, signed: SignedTransfer) -> Result<Response, RemoteError> {
        let owned = signed.clone();
        let (total, check) = tokio::task::spawn_blocking(move || owned.prepare()).await.map_err(internal)?.map_err(refused)?;
        let account = signed.transfer.from_address();
        // Whose replica this is costs no pairing: a transfer of another committee's account is
        // refused before its signature is checked.
        self.committee_member(account).await?;
        // Remembered by what replicas sign, which covers the owner's very signature bytes.
        let certified = signed.certified_id();
        if !self.ledger().verifier.holds(check).await {
            return Err(refused(LedgerError::BadOwnerSignature));
        }
        {
            let mut checked = lock(&self.ledger().owner_checked);
            if checked.len() >= OWNER_CHECKED_KEPT {
                checked.clear();
            }
            checked.insert(certified);
        }
        let _turn = self.ledger().turn(&account).await;
        let summary = self.summary(account).await?;
        let promise = self.promise(&account)?;
        if let Err(e) = summary.may_sign(promise.as_ref(), &signed, total) {
            if matches!(e, LedgerError::Behind | LedgerError::WrongNonce { .. } | LedgerError::InsufficientFunds { .. })
                && (e == LedgerError::Behind || summary.nonce() < signed.transfer.nonce)
            {
                // Perhaps this vault missed transfers: look, in the background.
                self.catch_up(account);
            }
            debug!(%account, error = %e, "a transfer not signed");
            return Err(refused(e));
        }
        if promise.as_ref() != Some(&signed) {
            self.keep_promise(account, &signed).await?;
        }
        let signature = self.ledger().key.sign_replica(&signed);
        Ok(Response::Signed(ReplicaSignature { binding: self.ledger().binding.clone(), signature }))
    }

    /// Checks a certified transfer's certificate and who signed it, before it is stored.
    /// Called before the account's turn is taken: a payee credited by many payers at once
    /// would otherwise check their certificates one after another.
    pub(crate) async fn check_entry(&self, entry: &Entry) -> Result<(), RemoteError> {
        self.check_entry_held(entry, None).await
    }

    /// [`Vault::check_entry`], knowing already which other members of the account's group
    /// list this transfer (a catch-up lists what each holds): an old entry's vouchers are
    /// asked of them only, and none when too few list it.
    async fn check_entry_held(&self, entry: &Entry, holders: Option<Vec<PeerId>>) -> Result<(), RemoteError> {
        // The whole entry, certificate and all: another certificate of the same transfer is
        // checked on its own.
        let key = *blake3::hash(&postcard::to_stdvec(entry).map_err(internal)?).as_bytes();
        if lock(&self.ledger().checked).get(&key).is_some_and(|at| at.elapsed() < CHECKED_FRESH) {
            return Ok(());
        }
        self.check_certificate(&entry.certificate, Some((entry, holders))).await?;
        let mut checked = lock(&self.ledger().checked);
        if checked.len() >= CHECKED_KEPT {
            checked.retain(|_, at| at.elapsed() < CHECKED_FRESH);
            if checked.len() >= CHECKED_KEPT {
                checked.clear();
            }
        }
        checked.insert(key, std::time::Instant::now());
        Ok(())
    }

    /// Whether the account's state here admits a checked entry ([`Summary::admits`]). Called
    /// with the account's turn taken. A second certified transfer at one nonce is evidence:
    /// it is kept (and stored, so that the summary stays conservative however it is rebuilt),
    /// its double signers penalized, and the sender told. A replica that finds itself behind
    /// catches up.
    pub(crate) async fn admit_entry(&self, entry: &Entry) -> Result<Admission, RemoteError> {
        let summary = self.summary(entry.account).await?;
        let t = &entry.certificate.transfer.transfer;
        match summary.admits(entry) {
            Ok(()) => Ok(Admission::Fresh),
            // A nonce contested already keeps the two certificates it has: more are refused
            // unstored, so signers that sign many cannot grow the store.
            Err(LedgerError::DoubleSpend(nonce)) if summary.contested.contains(&(t.from_address(), nonce)) => {
                Err(refused(LedgerError::DoubleSpend(nonce)))
            }
            Err(LedgerError::DoubleSpend(nonce)) => {
                let other = match summary.counted(&t.from_address(), nonce, entry.is_debit()) {
                    Some(id) => match self.read_record(RecordKey { kind: RecordKind::Transfer, address: entry.account, id }).await {
                        Ok(Some(Record::Transfer(e))) => Some(e.certificate),
                        _ => None,
                    },
                    None => None,
                };
                if let Some(other) = other {
                    let exhibit = Exhibit {
                        offence: Offence::DoubleSpend { account: t.from_address(), nonce },
                        certificates: vec![other, entry.certificate.clone()],
                    };
                    self.report(&exhibit).await;
                }
                Ok(Admission::Contested(nonce))
            }
            Err(e @ (LedgerError::Behind | LedgerError::InsufficientFunds { .. })) => {
                self.catch_up(entry.account);
                Err(refused(e))
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// Keeps a piece of evidence and penalizes the signers it proves guilty (once).
    async fn report(&self, exhibit: &Exhibit) {
        if !self.ledger().evidence.keep(exhibit).await {
            return;
        }
        let guilty = culprits(exhibit);
        if matches!(exhibit.offence, Offence::DoubleSpend { .. }) {
            self.ledger().stats.double_spends.fetch_add(1, Ordering::Relaxed);
        }
        error!(offence = ?exhibit.offence, guilty = ?guilty, "ledger evidence kept; its signers penalized");
        for peer in guilty {
            if peer != self.node().peer_id() {
                let _ = self.node().penalize(peer, format!("signed against the ledger's rules: {:?}", exhibit.offence)).await;
            }
        }
    }

    /// Compares the account with its group in the background (bounded: a flood of refused
    /// entries starts few).
    fn catch_up(&self, account: Address) {
        if claim(&self.ledger().catching_up, MAX_CATCHING_UP, account) {
            let vault = self.clone();
            tokio::spawn(async move {
                if let Err(e) = vault.repair_account(account).await {
                    debug!(%account, error = %e, "catching up failed");
                }
                lock(&vault.ledger().catching_up).remove(&account);
            });
        }
    }

    /// The payer's committee as this vault sees it: from its routing table when that makes
    /// `signers` a quorum of it, else found by lookup (a payee far from the payer on a large
    /// network has no table entries near it; a table can also lag churn). Lookups are reused
    /// for a while and bounded in number, so certificates naming many payers cost little.
    async fn payer_committee(&self, payer: Address, signers: &[PeerId]) -> Result<Vec<PeerId>, RemoteError> {
        let n = usize::from(kura_node::REPLICAS);
        let local = committee(&payer, self.node().local_closest(payer, n).await.map_err(internal)?);
        if quorum_of(signers, &local) {
            return Ok(local);
        }
        self.looked_up_committee(payer).await
    }

    /// The account's committee found by lookup (reused for [`LOOKUP_FRESH`]; at most
    /// [`MAX_LOOKUPS`] at once).
    async fn looked_up_committee(&self, account: Address) -> Result<Vec<PeerId>, RemoteError> {
        let n = usize::from(kura_node::REPLICAS);
        if let Some((at, found)) = lock(&self.ledger().looked_up).get(&account) {
            if at.elapsed() < LOOKUP_FRESH {
                return Ok(found.clone());
            }
        }
        let _permit = self.ledger().lookups.acquire().await.map_err(internal)?;
        let found = committee(&account, self.node().closest_vaults(account, n).await.map_err(internal)?);
        let mut kept = lock(&self.ledger().looked_up);
        if kept.len() >= LOOKUPS_KEPT {
            kept.retain(|_, (at, _)| at.elapsed() < LOOKUP_FRESH);
            if kept.len() >= LOOKUPS_KEPT {
                kept.clear();
            }
        }
        kept.insert(account, (std::time::Instant::now(), found.clone()));
        Ok(found)
    }

    /// Checks a certificate: its signers are vault ids and a quorum of the payer's committee
    /// as this vault sees it, its owner signed the transfer, its signers' aggregate signature
    /// holds. An `entry` whose signers have left the committee (history, met in catch-up) is
    /// taken only if [`VOUCHERS`] members of its account's group hold this very entry.
    async fn check_certificate(&self, cert: &Certificate, entry: Option<(&Entry, Option<Vec<PeerId>>)>) -> Result<u64, RemoteError> {
        // The free checks first, so that a stranger's certificate is refused before it costs
        // a pairing: its shape, and that its signers are vault ids (they carry work).
        cert.transfer.transfer.total().map_err(refused)?;
        let signers = cert.signer_peers();
        let difficulty = self.config().id_difficulty;
        let no_vaults: Vec<PeerId> = signers.iter().filter(|p| !kura_node::puzzle::meets(p, difficulty)).copied().collect();
        if !no_vaults.is_empty() {
            return Err(refused(LedgerError::UnknownSigners(no_vaults)));
        }
        let from = cert.transfer.transfer.from_address();
        let members = self.payer_committee(from, &signers).await?;
        // A certificate of evidence this vault kept was its payer's committee's when found;
        // its signers are penalized since, so the table no longer shows them.
        let current = quorum_of(&signers, &members) || self.ledger().evidence.holds(cert);
        if !current && entry.is_none() {
            return Err(refused(LedgerError::UnknownSigners(outsiders(&signers, &members))));
        }
        let vault = self.clone();
        let owned = cert.clone();
        let prepared = tokio::task::spawn_blocking(move || owned.prepare(&mut lock(&vault.ledger().cache)))
            .await
            .map_err(internal)?
            .map_err(refused)?;
        let id = cert.transfer.certified_id();
        let verifier = &self.ledger().verifier;
        let owner = async {
            match prepared.owner.clone() {
                Some(check) if !lock(&self.ledger().owner_checked).contains(&id) => verifier.holds_once(id, check).await,
                _ => true,
            }
        };
        let aggregate = async {
            match prepared.aggregate.clone() {
                Some(check) => verifier.holds_once(prepared.digest, check).await,
                None => true,
            }
        };
        let (owner, aggregate) = tokio::join!(owner, aggregate);
        if !aggregate {
            return Err(refused(LedgerError::BadCertificate));
        }
        if !owner {
            if current {
                // The payer's committee certified what its owner never signed.
                self.report(&Exhibit { offence: Offence::Unowned, certificates: vec![cert.clone()] }).await;
            }
            return Err(refused(LedgerError::BadOwnerSignature));
        }
        lock(&self.ledger().cache).remember(prepared.digest);
        if let (false, Some((e, holders))) = (current, entry) {
            let vouchers = match holders {
                Some(listed) if listed.len() < VOUCHERS => listed.len(),
                Some(listed) => self.vouchers_among(e, listed).await,
                None => self.vouchers(e).await,
            };
            if vouchers < VOUCHERS {
                return Err(refused(LedgerError::UnknownSigners(outsiders(&signers, &members))));
            }
        }
        Ok(prepared.total)
    }

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
                tokio::spawn(async move {
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

    fn owed(&self, shards: &[RecordKey]) -> u64 {
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

    /// How many other members of the entry's account group hold this very entry.
    /// The group asked is the account's committee as this vault's table has it, with the
    /// [`LAGGING`] vaults past it, and as a lookup finds it: after churn a table still holds
    /// vaults that left, and a lookup already holds vaults that have not caught up, so either
    /// alone can leave too few holders to ask.
    async fn vouchers(&self, entry: &Entry) -> usize {
        let me = self.node().peer_id();
        let Ok(mut group) = self.node().local_closest(entry.account, usize::from(kura_node::REPLICAS) + LAGGING).await else { return 0 };
        if let Ok(found) = self.looked_up_committee(entry.account).await {
            group.extend(found.into_iter().filter(|p| !group.contains(p)).collect::<Vec<_>>());
        }
        self.vouchers_among(entry, group.into_iter().filter(|p| *p != me).collect()).await
    }

    /// How many of `peers` hold this very entry (the same certificate, not only the same
    /// transfer).
    async fn vouchers_among(&self, entry: &Entry, peers: Vec<PeerId>) -> usize {
        let key = entry.key();
        let asks = peers.into_iter().map(|peer| self.ask(peer, Request::GetRecord(key)));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|a| matches!(a, Ok(Response::Record(Some(Record::Transfer(e)))) if e == entry))
            .count()
    }

    /// Counts a stored entry in its account's summary, and has the account's group compared
    /// a little later: a member that missed this transfer (its payer stopped at a quorum)
    /// gets it then, not at the next full sweep.
    pub(crate) fn entry_stored(&self, entry: &Entry) {
        self.ledger().stats.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = lock(&self.ledger().summaries).get_mut(&entry.account) {
            let _ = s.apply(entry);
        }
        let account = entry.account;
        if claim(&self.ledger().scheduled, MAX_SCHEDULED, account) {
            let vault = self.clone();
            tokio::spawn(async move {
                // One comparison per account per period, however many transfers it saw.
                tokio::time::sleep(COMPARE_AFTER).await;
                lock(&vault.ledger().scheduled).remove(&account);
                if let Err(e) = vault.repair_account(account).await {
                    debug!(%account, error = %e, "comparing an account with its group failed");
                }
            });
        }
    }

    /// Forgets the summary of an account one of whose entries left the store.
    pub(crate) fn entry_gone(&self, key: &RecordKey) {
        if key.kind == RecordKind::Transfer {
            self.ledger().forget(&key.address);
        }
    }

    /// What this vault holds of an account.
    pub(crate) async fn account_view(&self, account: Address) -> Result<Response, RemoteError> {
        // In turn with stores at the account: a summary built from disk while an entry is being
        // written could miss it and be kept.
        let s = {
            let _turn = self.ledger().turn(&account).await;
            self.summary(account).await?
        };
        Ok(Response::Account(AccountView {
            account,
            balance: s.balance(),
            genesis: s.genesis,
            nonce: s.nonce(),
            entries: s.entries,
            behind: s.has_gap(),
            pending: self.promise(&account)?.filter(|p| p.transfer.nonce > s.nonce()),
        }))
    }

    fn ids_after(&self, account: &Address, after: Option<[u8; 32]>) -> Vec<RecordKey> {
        let mut keys: Vec<RecordKey> = self
            .store()
            .keys_at(RecordKind::Transfer, account)
            .into_iter()
            .filter(|k| after.is_none_or(|a| k.id > a))
            .collect();
        keys.sort();
        keys
    }

    /// A page of the ids of the transfers held at an account.
    pub(crate) fn entry_ids(&self, account: Address, after: Option<[u8; 32]>) -> Response {
        let keys = self.ids_after(&account, after);
        Response::Ids { more: keys.len() > PAGE, ids: keys.into_iter().take(PAGE).map(|k| k.id).collect() }
    }

    /// A page of the transfers held at an account.
    pub(crate) async fn history(&self, account: Address, after: Option<[u8; 32]>) -> Result<Response, RemoteError> {
        let keys = self.ids_after(&account, after);
        let more = keys.len() > HISTORY_PAGE;
        let records = self.read_records(keys.into_iter().take(HISTORY_PAGE).collect()).await.map_err(internal)?;
        let entries = records
            .into_iter()
            .filter_map(|r| match r {
                Record::Transfer(e) => Some(e),
                _ => None,
            })
            .collect();
        Ok(Response::Entries { entries, more })
    }

    /// Every id a peer holds at an account (all pages), or `None` if it did not answer.
    async fn peer_ids(&self, peer: PeerId, account: Address) -> Option<HashSet<[u8; 32]>> {
        let mut ids = HashSet::new();
        let mut after = None;
        loop {
            match self.ask(peer, Request::EntryIds { account, after }).await {
                Ok(Response::Ids { ids: page, more }) => {
                    after = page.last().copied();
                    ids.extend(page);
                    if !more || after.is_none() {
                        return Some(ids);
                    }
                }
                _ => return None,
            }
        }
    }

    /// Brings an account's group in step: lists what each member holds, fetches the entries
    /// this vault lacks (checked as any other), pushes those a member lacks when this vault
    /// is the one chosen to, and drops its own copies once it is out of the group and the
    /// group holds them.
    pub(crate) async fn repair_account(&self, account: Address) -> Result<(), NodeError> {
        // One comparison of an account at a time: catch-up, the comparison after a store and
        // the repair worker's sweep would otherwise fetch the same entries side by side.
        if !claim(&self.ledger().comparing, MAX_COMPARING, account) {
            return Ok(());
        }
        let _done = Unclaim(&self.ledger().comparing, account);
        let started = std::time::Instant::now();
        let me = self.node().peer_id();
        let n = usize::from(kura_node::REPLICAS);
        let candidates = self.node().local_closest(account, n + self.config().spare_candidates).await?;
        let asked = futures::future::join_all(
            candidates.iter().filter(|p| **p != me).map(|&p| async move { (p, self.peer_ids(p, account).await) }),
        )
        .await;
        let mut held: HashMap<PeerId, HashSet<[u8; 32]>> = asked.into_iter().filter_map(|(p, ids)| Some((p, ids?))).collect();
        held.insert(me, self.ids_after(&account, None).into_iter().map(|k| k.id).collect());
        let group: Vec<PeerId> = candidates.iter().filter(|p| held.contains_key(p)).take(n).copied().collect();
        let mut wanted = Vec::new();
        for action in plan_entries(me, &account, &group, &held) {
            match action {
                EntryAction::Fetch { id, from } => {
                    if wanted.len() < FETCH_PER_ROUND {
                        wanted.push((RecordKey { kind: RecordKind::Transfer, address: account, id }, from));
                    }
                }
                EntryAction::Push { id, to } => {
                    let key = RecordKey { kind: RecordKind::Transfer, address: account, id };
                    let Ok(Some(record)) = self.read_record(key).await else { continue };
                    for peer in to {
                        match self.ask(peer, Request::PutRecord(record.clone())).await {
                            Ok(Response::Stored) => {
                                self.repair_stats().replicas_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            other => debug!(%key, %peer, answer = ?other, "transfer not taken"),
                        }
                    }
                }
                EntryAction::Drop { id } => {
                    let key = RecordKey { kind: RecordKind::Transfer, address: account, id };
                    self.release(key).await;
                    self.repair_stats().handed_over.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let mut fetched = Vec::new();
        for batch in wanted.chunks(CHECKS_AT_ONCE) {
            let asks = batch.iter().map(|&(key, from)| async move { (key, self.ask(from, Request::GetRecord(key)).await) });
            for (key, answer) in futures::future::join_all(asks).await {
                if let Ok(Response::Record(Some(record))) = answer {
                    if record.validate_for(&key).is_ok() {
                        fetched.push(record);
                    }
                }
            }
        }
        // Each is admitted as a fresh store is, so order matters: credits before the debits
        // they pay for, debits by nonce.
        fetched.sort_by_key(|r| match r {
            Record::Transfer(e) => (e.is_debit(), e.certificate.transfer.transfer.nonce),
            _ => (true, u64::MAX),
        });
        // Their certificates are checked side by side first (each may ask the network: a
        // committee lookup, the group's vouchers); admitting them in order then finds each
        // checked already.
        let entries: Vec<&Entry> = fetched
            .iter()
            .filter_map(|r| match r {
                Record::Transfer(e) => Some(e),
                _ => None,
            })
            .collect();
        // The group's other members (with the margin a lagging table needs) that listed each.
        let near: Vec<&PeerId> = candidates.iter().filter(|p| **p != me && held.contains_key(p)).take(n + LAGGING).collect();
        let holders = |id: &[u8; 32]| -> Vec<PeerId> {
            near.iter().filter(|p| held.get(**p).is_some_and(|ids| ids.contains(id))).map(|p| **p).collect()
        };
        for batch in entries.chunks(CHECKS_AT_ONCE) {
            let mut checks = Vec::with_capacity(batch.len());
            for e in batch {
                checks.push(self.check_entry_held(e, Some(holders(&e.certificate.id()))));
            }
            futures::future::join_all(checks).await;
        }
        let (fetched_count, mut admitted) = (fetched.len(), 0);
        for record in fetched {
            let key = record.key();
            match self.put_record(record).await {
                Ok(()) => admitted += 1,
                Err(e) => debug!(%key, error = %e, "a fetched transfer was refused"),
            }
        }
        debug!(%account, group = group.len(), fetched = fetched_count, admitted, secs = started.elapsed().as_secs_f64(), "account compared with its group");
        Ok(())
    }
}

/// What a vault does for one entry of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryAction {
    /// Fetch entry `id` from `from` (it is checked on arrival).
    Fetch {
        /// The entry.
        id: [u8; 32],
        /// A holder.
        from: PeerId,
    },
    /// Send entry `id` to these group members.
    Push {
        /// The entry.
        id: [u8; 32],
        /// Members lacking it.
        to: Vec<PeerId>,
    },
    /// Delete the local copy: the group holds it.
    Drop {
        /// The entry.
        id: [u8; 32],
    },
}

/// The entry actions of `me` for an account whose `group` (closest first, those that answered)
/// holds `held` (every vault that answered, `me` included). A member in the group fetches
/// what others hold and it lacks; for each entry, one holder (the group member first by
/// rendezvous hashing, or any holder when no member has it) pushes it to members lacking it;
/// a holder outside the group drops an entry once every member that answered holds it.
pub fn plan_entries(
    me: PeerId,
    account: &Address,
    group: &[PeerId],
    held: &HashMap<PeerId, HashSet<[u8; 32]>>,
) -> Vec<EntryAction> {
    let empty = HashSet::new();
    let mine = held.get(&me).unwrap_or(&empty);
    let in_group = group.contains(&me);
    let mut all: Vec<[u8; 32]> = held.values().flatten().copied().collect::<HashSet<_>>().into_iter().collect();
    all.sort();
    let mut actions = Vec::new();
    for id in all {
        let holds = |p: &PeerId| held.get(p).is_some_and(|s| s.contains(&id));
        if !mine.contains(&id) {
            if in_group {
                if let Some(from) = group.iter().chain(held.keys()).find(|p| holds(p)) {
                    actions.push(EntryAction::Fetch { id, from: *from });
                }
            }
            continue;
        }
        let rank = |p: &&PeerId| crate::repair::rendezvous_id(account, &id, p);
        let members: Vec<&PeerId> = group.iter().filter(|p| holds(p)).collect();
        let coordinator = match members.is_empty() {
            true => held.keys().filter(|p| holds(p)).max_by_key(rank),
            false => members.into_iter().max_by_key(rank),
        };
        if coordinator == Some(&me) {
            let to: Vec<PeerId> = group.iter().filter(|p| **p != me && !holds(p)).copied().collect();
            if !to.is_empty() {
                actions.push(EntryAction::Push { id, to });
            }
        }
        if !in_group && !group.is_empty() && group.iter().all(|p| holds(p)) {
            actions.push(EntryAction::Drop { id });
        }
    }
    actions
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

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

    #[test]
    fn members_fetch_what_they_lack_one_holder_pushes_and_outsiders_drop_only_when_all_hold() {
        let account = Address::random();
        let g = peers(4);
        let outsider = PeerId::random();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut held: HashMap<PeerId, HashSet<[u8; 32]>> = HashMap::new();
        held.insert(g[0], [a, b].into());
        held.insert(g[1], [a].into());
        held.insert(g[2], HashSet::new());
        held.insert(g[3], [a].into());
        held.insert(outsider, [b].into());
        // g[2] fetches both; g[1] fetches b.
        let p2 = plan_entries(g[2], &account, &g, &held);
        assert_eq!(p2.iter().filter(|a| matches!(a, EntryAction::Fetch { .. })).count(), 2);
        assert!(plan_entries(g[1], &account, &g, &held).contains(&EntryAction::Fetch { id: b, from: g[0] }));
        // Exactly one vault pushes each entry to each member lacking it.
        for id in [a, b] {
            for m in &g {
                if held[m].contains(&id) {
                    continue;
                }
                let pushers = g
                    .iter()
                    .chain([&outsider])
                    .filter(|p| {
                        plan_entries(**p, &account, &g, &held)
                            .iter()
                            .any(|x| matches!(x, EntryAction::Push { id: i, to } if *i == id && to.contains(m)))
                    })
                    .count();
                assert_eq!(pushers, 1);
            }
        }
        // The outsider keeps b until every member holds it.
        assert!(!plan_entries(outsider, &account, &g, &held).contains(&EntryAction::Drop { id: b }));
        for m in &g {
            held.get_mut(m).unwrap().insert(b);
        }
        assert!(plan_entries(outsider, &account, &g, &held).contains(&EntryAction::Drop { id: b }));
        assert!(plan_entries(outsider, &account, &[], &held).is_empty(), "no group answered: keep");
    }
}
