//! The wallet: pay from a ledger account, read balances and history (rules in
//! `kura_types::ledger`).
//!
//! A payment is three steps, FastPay's: the owner signs a transfer at the account's next
//! nonce; every replica of the account (its close group) checks it and signs; a quorum of
//! those signatures, aggregated, is the certificate, which is stored at the paying account and
//! at every account it pays. The signed transfer is written to the wallet's folder before any
//! replica sees it, because replicas that signed it will sign nothing else at that nonce: a
//! payment cut off halfway is finished by the next one, never replaced. One process at a time
//! pays from a wallet folder (a lock file).
//!
//! Reads ask the whole committee. A balance is believed when a quorum of the committee
//! agrees on it and the certificates one of them holds add up to it; otherwise the client adds
//! up the certificates the replicas hold itself, counting only those whose signers are a
//! quorum of the payer's committee or that [`VOUCHERS`](kura_node::committee::VOUCHERS) replicas hold, so three lying replicas
//! can neither show a balance nor hide one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use kura_node::committee::{quorum_of, vouchers};
use kura_node::ledger::{quorum, Certificate, Entry, LedgerError, Output, SignedTransfer, Summary, WalletKey, QUORUM};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, NodeError, PeerId, Record, RecordError};

use crate::chunks::{transient, ATTEMPTS_PER_VAULT, BACKOFF};
use crate::client::Client;
use crate::error::ClientError;

/// One more than the dishonest replicas a quorum tolerates: replicas that agree on what they
/// hold include an honest one.
pub const AGREEING: usize = kura_node::age::VOTERS - QUORUM + 1;

/// [`AGREEING`] for a committee of `size` elders (a network with fewer than
/// [`kura_node::age::VOTERS`]).
pub const fn agreeing(size: usize) -> usize {
    size - quorum(size) + 1
}

const PENDING_FILE: &str = "pending-transfer";

/// Most entries a balance read takes from one replica (a lying one could page forever).
const MAX_ENTRIES_READ: usize = 1 << 16;

/// The file in a testnet's folder holding its genesis key's seed (the faucet).
pub const GENESIS_KEY_FILE: &str = "genesis.key";

/// The file in a Kura home holding the wallet key of a home with no account.
const WALLET_KEY_FILE: &str = "wallet.key";
const LOCK_FILE: &str = "wallet.lock";

/// A ledger account's key and the folder that keeps its payment in flight.
#[derive(Debug)]
pub struct Wallet {
    key: WalletKey,
    dir: PathBuf,
    /// The nonce this wallet last spent, once it has paid: the next payment needs no read
    /// of the balance first (a wrong guess is refused and read again).
    spent: std::sync::Mutex<Option<u64>>,
}

/// An account's state, as a quorum of its replicas agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The balance in units.
    pub balance: i128,
    /// The last nonce spent.
    pub nonce: u64,
    /// How many replicas agree on this.
    pub agreeing: usize,
    /// A transfer some replica signed at the next nonce and still waits to see certified.
    pub pending: Option<SignedTransfer>,
}

impl Wallet {
    /// The wallet of `key`, keeping its state in `dir` (created if needed).
    pub fn open(dir: &Path, key: WalletKey) -> Result<Wallet, ClientError> {
        std::fs::create_dir_all(dir).map_err(|e| ClientError::Io { path: dir.to_path_buf(), source: e })?;
        Ok(Wallet { key, dir: dir.to_path_buf(), spent: Default::default() })
    }

    /// The wallet of a Kura home: its account's wallet key, or, for a home with no account,
    /// a key of its own (created once).
    pub fn of_home(home: &Path) -> Result<Wallet, ClientError> {
        let key = match crate::Account::load(home)? {
            Some(account) => account.wallet_key(),
            None => {
                let seed = kura_node::identity::read_or_create_once(home, WALLET_KEY_FILE, || rand::random::<[u8; 32]>().to_vec())
                    .map_err(|e| ClientError::Io { path: home.join(WALLET_KEY_FILE), source: e })?;
                let seed: [u8; 32] =
                    seed.try_into().map_err(|_| ClientError::Wallet(format!("{} is not a 32-byte key", home.join(WALLET_KEY_FILE).display())))?;
                WalletKey::from_seed(&seed)
            }
        };
        Wallet::open(&home.join("wallet"), key)
    }

    /// The faucet of the local testnet in `dir` (its genesis account), if it has one.
    pub fn faucet(dir: &Path) -> Result<Option<Wallet>, ClientError> {
        let path = dir.join(GENESIS_KEY_FILE);
        let seed = match std::fs::read(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ClientError::Io { path, source: e }),
        };
        let seed = kura_node::durable::decode_key(&seed).map_err(|e| ClientError::Wallet(format!("{}: {e}", path.display())))?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| ClientError::Wallet(format!("{} is not a 32-byte key", path.display())))?;
        Wallet::open(&dir.join("faucet"), WalletKey::from_seed(&seed)).map(Some)
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The account's key.
    pub fn key(&self) -> &WalletKey {
        &self.key
    }

    fn pending(&self) -> Result<Option<SignedTransfer>, ClientError> {
        let path = self.dir.join(PENDING_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => kura_node::stored::decode_transfer(&bytes)
                .map(Some)
                .map_err(|e| ClientError::Wallet(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClientError::Io { path, source: e }),
        }
    }

    fn set_pending(&self, signed: Option<&SignedTransfer>) -> Result<(), ClientError> {
        let path = self.dir.join(PENDING_FILE);
        let io = |e| ClientError::Io { path: path.clone(), source: e };
        match signed {
            Some(s) => {
                crate::messages::write_synced(&path, &kura_node::stored::encode_transfer(s)).map_err(io)
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            },
        }
    }
}

/// Waits for, and holds while the file lives, the lock of the wallet folder `dir` (one
/// process at a time pays from it).
fn lock_dir(dir: &Path) -> Result<std::fs::File, ClientError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ClientError::Io { path: path.clone(), source: e })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| ClientError::Wallet(format!("locking {}: {e}", path.display())))?;
    Ok(file)
}

fn account_of(signed: &SignedTransfer) -> Address {
    signed.transfer.from_address()
}

fn ledger_error(e: &NodeError) -> Option<&LedgerError> {
    match e {
        NodeError::Remote { error: RemoteError::Refused(RecordError::Ledger(l)), .. } => Some(l),
        _ => None,
    }
}

impl Client {
    /// Pays `outputs` from `wallet`'s account; returns the certificate once a quorum of each
    /// account's replicas stored it. A payment left half done by an earlier call is finished
    /// first.
    pub async fn pay(&self, wallet: &Wallet, outputs: Vec<Output>) -> Result<Certificate, ClientError> {
        let dir = wallet.dir.clone();
        let _lock = tokio::task::spawn_blocking(move || lock_dir(&dir))
            .await
            .map_err(|e| ClientError::Wallet(format!("locking the wallet: {e}")))??;
        if let Some(pending) = wallet.pending()? {
            self.finish(wallet, pending).await?;
        }
        for _ in 0..3 {
            let known = wallet.spent.lock().unwrap_or_else(|e| e.into_inner()).take();
            let nonce = match known {
                Some(n) => n,
                None => {
                    let state = self.balance(wallet.address()).await?;
                    if let Some(theirs) = state.pending.filter(|p| p.transfer.nonce == state.nonce + 1) {
                        // Replicas promised a transfer of this account that this wallet does
                        // not know (made elsewhere, or its folder lost): it comes first.
                        self.finish(wallet, theirs).await?;
                        continue;
                    }
                    state.nonce
                }
            };
            let signed = wallet.key.sign(nonce + 1, outputs.clone());
            // Our own signature holds; only the shape can be wrong.
            signed.transfer.total().map_err(ClientError::Ledger)?;
            wallet.set_pending(Some(&signed))?;
            match self.certify(&signed).await {
                Ok(cert) => {
                    self.confirm(&cert).await?;
                    wallet.set_pending(None)?;
                    *wallet.spent.lock().unwrap_or_else(|e| e.into_inner()) = Some(nonce + 1);
                    return Ok(cert);
                }
                Err(Uncertified { signed: 0, conflict, reasons, needed }) => {
                    wallet.set_pending(None)?;
                    match conflict {
                        // A transfer of ours at this nonce that we no longer had: finish it,
                        // then try ours again at the next nonce.
                        Some(theirs) => self.finish(wallet, theirs).await?,
                        // The nonce remembered may be stale: read the account and try again.
                        None if known.is_some() => {}
                        None => return Err(uncertified_error(0, needed, reasons)),
                    }
                }
                // Some replicas promised it: it stays pending, and the next payment finishes it.
                Err(Uncertified { signed, reasons, needed, .. }) => return Err(uncertified_error(signed, needed, reasons)),
            }
        }
        Err(ClientError::Wallet("the account's replicas keep disagreeing on its next nonce; try again".into()))
    }

    /// Certifies and stores a transfer already signed (pending from an earlier payment).
    async fn finish(&self, wallet: &Wallet, signed: SignedTransfer) -> Result<(), ClientError> {
        if signed.transfer.from != wallet.key.public_key() || !self.owner_signed(&signed).await {
            wallet.set_pending(None)?;
            return Ok(());
        }
        wallet.set_pending(Some(&signed))?;
        match self.certify(&signed).await {
            Ok(cert) => self.confirm(&cert).await?,
            Err(Uncertified { signed: 0, .. }) => {} // no replica promised it: drop it
            Err(Uncertified { signed, reasons, needed, .. }) => return Err(uncertified_error(signed, needed, reasons)),
        }
        wallet.set_pending(None)
    }

    /// Asks every replica of the paying account to sign; aggregates a quorum.
    async fn certify(&self, signed: &SignedTransfer) -> Result<Certificate, Uncertified> {
        let from = signed.transfer.from_address();
        let (group, size) = self.committee(from).await.map_err(|e| Uncertified {
            needed: QUORUM,
            signed: 0,
            conflict: None,
            reasons: vec![e.to_string()],
        })?;
        let need = quorum(size);
        let ask = |vault: PeerId, attempt: u32| {
            let node = self.node().clone();
            let signed = signed.clone();
            async move {
                if attempt > 1 {
                    tokio::time::sleep(BACKOFF * (1 << (attempt - 2))).await;
                }
                (vault, attempt, node.request(vault, Request::Sign(signed)).await)
            }
        };
        let mut asks: futures::stream::FuturesUnordered<_> = group.iter().map(|&v| ask(v, 1)).collect();
        let mut shares = Vec::new();
        let mut reasons = Vec::new();
        let mut conflict = None;
        let mut checked = false;
        loop {
            // A quorum is enough: the slowest replicas of the group are not waited for (they
            // were asked, and sign all the same).
            while shares.len() < need {
                let Some((vault, attempt, answer)) = asks.next().await else { break };
                match answer {
                    Ok(Response::Signed(share)) if share.binding.peer == vault => shares.push((share.binding, share.signature)),
                    Err(e) if transient(&e) && attempt < ATTEMPTS_PER_VAULT => asks.push(ask(vault, attempt + 1)),
                    Err(e) => {
                        if ledger_error(&e).is_none() {
                            self.forget_group(&from);
                        }
                        if let Some(LedgerError::Conflict { promised, .. }) = ledger_error(&e) {
                            if promised.transfer.from == signed.transfer.from && self.owner_signed(promised).await {
                                conflict = Some((**promised).clone());
                            }
                        }
                        reasons.push(match ledger_error(&e) {
                            Some(l) => l.to_string(),
                            None => format!("{vault}: {e}"),
                        });
                    }
                    Ok(other) => reasons.push(format!("{vault}: unexpected answer {other:?}")),
                }
            }
            let signed_count = shares.len();
            if signed_count < need {
                let reasons = match checked {
                    true => vec![format!("only {signed_count} of the signatures verify")],
                    false => reasons,
                };
                return Err(Uncertified { signed: signed_count, needed: need, conflict, reasons });
            }
            let fail = |reasons| Uncertified { signed: signed_count, needed: need, conflict: None, reasons };
            // One pairing for all; only if that fails, one per share to find the bad ones,
            // and the rest of the group's answers are waited for.
            let cert = Certificate::aggregate(signed.clone(), shares.clone()).map_err(|e| fail(vec![e.to_string()]))?;
            // The owner's signature is our own: only the replicas' shares need checking.
            let error = match self.verify_certificate_with(&cert, false).await {
                Ok(_) => return Ok(cert),
                Err(e) => e,
            };
            checked = true;
            let before = shares.len();
            let signed_again = signed.clone();
            shares = tokio::task::spawn_blocking(move || {
                shares
                    .into_iter()
                    .filter(|(b, s)| {
                        b.verify().is_ok()
                            && kura_node::ledger::ReplicaSignature { binding: b.clone(), signature: s.clone() }.verify(&signed_again)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| fail(vec![format!("checking shares: {e}")]))?;
            if shares.len() == before {
                // Every share holds, yet their sum does not: nothing more to learn.
                return Err(fail(vec![error.to_string()]));
            }
        }
    }

    /// Whether `signed` is well formed and carries its owner's signature (checked off the
    /// async threads).
    async fn owner_signed(&self, signed: &SignedTransfer) -> bool {
        match signed.prepare() {
            Ok((_, check)) => self.holds(check).await,
            Err(_) => false,
        }
    }

    /// Whether a signature holds, checked on this client's verifier thread (started on first
    /// use; if it cannot start, on a blocking thread).
    async fn holds(&self, check: kura_node::ledger::SigCheck) -> bool {
        match self.verifier.get_or_init(|| kura_node::verifier::Verifier::start().ok()) {
            Some(v) => v.holds(check).await,
            None => tokio::task::spawn_blocking(move || check.holds()).await.unwrap_or(false),
        }
    }

    /// Verifies a certificate with this client's cache of verified keys, off the async
    /// threads (a pairing is a millisecond or two).
    async fn verify_certificate(&self, cert: &Certificate) -> Result<u64, LedgerError> {
        self.verify_certificate_with(cert, true).await
    }

    /// [`Client::verify_certificate`], checking the owner's signature only if `owner`.
    async fn verify_certificate_with(&self, cert: &Certificate, owner: bool) -> Result<u64, LedgerError> {
        let (owned, cache) = (cert.clone(), self.verified.clone());
        let prepared = tokio::task::spawn_blocking(move || owned.prepare(&mut cache.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .map_err(|e| LedgerError::Malformed(format!("verifying: {e}")))??;
        let (owner, aggregate) = match (prepared.owner.filter(|_| owner), prepared.aggregate) {
            (Some(o), Some(a)) => tokio::join!(self.holds(o), self.holds(a)),
            (None, Some(a)) => (true, self.holds(a).await),
            _ => (true, true),
        };
        if !owner {
            return Err(LedgerError::BadOwnerSignature);
        }
        if !aggregate {
            return Err(LedgerError::BadCertificate);
        }
        self.verified.lock().unwrap_or_else(|e| e.into_inner()).remember(prepared.digest);
        Ok(prepared.total)
    }

    /// Stores a certificate at the paying account and at every account it pays; each needs a
    /// quorum of its group to store it (the rest catch up from them).
    pub async fn confirm(&self, cert: &Certificate) -> Result<(), ClientError> {
        let t = &cert.transfer.transfer;
        let mut accounts = vec![t.from_address()];
        for o in &t.outputs {
            if !accounts.contains(&o.to) {
                accounts.push(o.to);
            }
        }
        let stores = accounts.into_iter().map(|account| async move {
            let entry = Record::Transfer(Entry { account, certificate: cert.clone() });
            (account, self.store_replicas(entry).await)
        });
        let needed = quorum(self.elders().await?.committee_size());
        for (account, outcome) in futures::future::join_all(stores).await {
            let outcome = outcome?;
            if outcome.stored < needed {
                return Err(ClientError::NotStored {
                    what: format!("transfer at account {account}"),
                    stored: outcome.stored,
                    needed,
                    detail: outcome.detail.join("; "),
                });
            }
        }
        Ok(())
    }

    /// The account's state: what a quorum of its committee agrees on, once the certificates
    /// one of them holds add up to it; else what the certificates its replicas hold add up
    /// to, counting only those this client can place (see the module's docs).
    pub async fn balance(&self, account: Address) -> Result<Balance, ClientError> {
        let (group, size) = self.committee(account).await?;
        let asks = group.iter().map(|&v| async move { (v, self.ask_retrying(v, Request::Account(account)).await) });
        let mut votes: HashMap<(i128, u64), Vec<PeerId>> = HashMap::new();
        let mut geneses: HashMap<u64, usize> = HashMap::new();
        let mut answered = Vec::new();
        let mut pending = None;
        for (vault, answer) in futures::future::join_all(asks).await {
            if answer.is_err() {
                self.forget_group(&account);
            }
            if let Ok(Response::Account(view)) = answer {
                answered.push(vault);
                votes.entry((view.balance, view.nonce)).or_default().push(vault);
                *geneses.entry(view.genesis).or_default() += 1;
                if let Some(p) = view.pending {
                    // Replicas report one pending transfer alike: it is checked once.
                    if pending.as_ref() != Some(&p) && account_of(&p) == account && self.owner_signed(&p).await {
                        pending = Some(p);
                    }
                }
            }
        }
        if answered.is_empty() {
            return Err(ClientError::Wallet(format!("no replica of account {account} answered ({} asked); try again", group.len())));
        }
        let genesis = geneses.into_iter().max_by_key(|(g, n)| (*n, std::cmp::Reverse(*g))).map_or(0, |(g, _)| g);
        let needed = quorum(size);
        let agreed = votes.iter().filter(|(_, v)| v.len() >= needed).max_by_key(|((_, nonce), v)| (*nonce, v.len()));
        if let Some((&(balance, nonce), voters)) = agreed {
            let behind = self.summed(account, &voters[..1], genesis, false, size).await?;
            if (behind.balance(), behind.nonce()) == (balance, nonce) {
                return Ok(Balance { balance, nonce, agreeing: voters.len(), pending });
            }
        }
        let summed = self.summed(account, &answered, genesis, true, size).await?;
        let (balance, nonce) = (summed.balance(), summed.nonce());
        let agreeing = votes.get(&(balance, nonce)).map_or(0, Vec::len);
        Ok(Balance { balance, nonce, agreeing, pending })
    }

    /// What the certificates that `vaults` hold at `account` add up to, each verified (and
    /// counted as the ledger's rules say: a debit once per nonce, a credit once per payer and
    /// nonce). With `strict`, a certificate counts only if its signers are a quorum of the
    /// payer's committee as this client finds it, or if [`VOUCHERS`](kura_node::committee::VOUCHERS) of `vaults` (elders of
    /// the account's committee, `size` of them on this network) hold it.
    async fn summed(&self, account: Address, vaults: &[PeerId], genesis: u64, strict: bool, size: usize) -> Result<Summary, ClientError> {
        let mut found: BTreeMap<[u8; 32], (Entry, usize)> = BTreeMap::new();
        for &vault in vaults {
            for e in self.held_at(vault, account).await {
                found.entry(e.certificate.id()).or_insert((e, 0)).1 += 1;
            }
        }
        let mut summary = Summary::new(genesis);
        for (entry, holders) in found.into_values() {
            if self.verify_certificate(&entry.certificate).await.is_err() {
                continue;
            }
            if strict && holders < vouchers(size) {
                let payer = entry.certificate.transfer.transfer.from_address();
                let (members, size) = self.committee(payer).await?;
                if !quorum_of(&entry.certificate.signer_peers(), &members, size) {
                    continue;
                }
            }
            let _ = summary.apply(&entry);
        }
        Ok(summary)
    }

    /// Every entry `vault` holds at `account` that is about it (all pages, up to
    /// [`MAX_ENTRIES_READ`]; none if it does not answer). A vault's pages must move forward
    /// in id order: one that repeats itself or runs on past the bound is read no further.
    async fn held_at(&self, vault: PeerId, account: Address) -> Vec<Entry> {
        let mut held = Vec::new();
        let mut after: Option<[u8; 32]> = None;
        loop {
            match self.ask_retrying(vault, Request::History { account, after }).await {
                Ok(Response::Entries { entries, more }) => {
                    let last = entries.last().map(|e| e.certificate.id());
                    if last.is_some_and(|l| after.is_some_and(|a| l <= a)) || held.len() + entries.len() > MAX_ENTRIES_READ {
                        return held;
                    }
                    after = last;
                    held.extend(entries.into_iter().filter(|e| e.account == account && e.check_shape().is_ok()));
                    if !more || after.is_none() {
                        return held;
                    }
                }
                _ => return held,
            }
        }
    }

    /// Every transfer into or out of `account` that the replicas hold and whose certificate
    /// verifies, oldest nonce first for debits (credits in id order).
    pub async fn history(&self, account: Address) -> Result<Vec<Entry>, ClientError> {
        let (group, _) = self.committee(account).await?;
        let mut found: BTreeMap<[u8; 32], Entry> = BTreeMap::new();
        for vault in group.into_iter().take(AGREEING) {
            for e in self.held_at(vault, account).await {
                let id = e.certificate.id();
                if !found.contains_key(&id) && self.verify_certificate(&e.certificate).await.is_ok() {
                    found.insert(id, e);
                }
            }
        }
        let mut entries: Vec<Entry> = found.into_values().collect();
        entries.sort_by_key(|e| (!e.is_debit(), e.certificate.transfer.transfer.nonce));
        Ok(entries)
    }

    async fn ask_retrying(&self, vault: PeerId, request: Request) -> Result<Response, NodeError> {
        let mut attempt = 1;
        loop {
            match self.node().request(vault, request.clone()).await {
                Err(e) if transient(&e) && attempt < ATTEMPTS_PER_VAULT => {
                    tokio::time::sleep(BACKOFF * (1 << (attempt - 1))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Why a transfer was not certified.
#[derive(Debug)]
struct Uncertified {
    /// Signatures a certificate needed.
    needed: usize,
    /// Replicas that signed (and so promised it).
    signed: usize,
    /// An earlier transfer of the same account that a replica promised at this nonce.
    conflict: Option<SignedTransfer>,
    /// What the others said.
    reasons: Vec<String>,
}

fn uncertified_error(signed: usize, needed: usize, reasons: Vec<String>) -> ClientError {
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *counted.entry(r).or_default() += 1;
    }
    let mut reasons: Vec<(String, usize)> = counted.into_iter().collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let detail = reasons.into_iter().map(|(r, n)| format!("{r} ({n})")).collect::<Vec<_>>().join("; ");
    ClientError::NotCertified { signed, needed, detail }
}
