//! Admitting to the ledger: signing a transfer once per nonce, and checking every certified
//! transfer a vault is given (its certificate, its signers, the account's state here) before
//! it is stored. Conflicts become evidence ([`crate::evidence`]).

use std::sync::atomic::Ordering;

use kura_node::age::VOTERS;
use kura_node::committee::{committee, outsiders, quorum_of, vouchers};
use kura_node::ledger::{Certificate, Entry, LedgerError, ReplicaSignature, SignedTransfer, Summary};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{Address, PeerId, Record, RecordKey, RecordKind};
use tracing::{debug, error};

use super::*;
use crate::evidence::{culprits, Exhibit, Offence};

impl Ledger {
    /// The account's summary as this vault holds it.
    pub(crate) async fn summary(&self, account: Address) -> Result<Summary, RemoteError> {
        if let Some(s) = lock(&self.state.summaries).get(&account) {
            return Ok(s.clone());
        }
        let genesis = self.state.genesis.filter(|(a, _)| *a == account).map_or(0, |(_, s)| s);
        let keys = self.ctx.store().keys_at(RecordKind::Transfer, &account);
        let records = self.records.read_records(keys).await.map_err(internal)?;
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
            let mut summaries = lock(&self.state.summaries);
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
    pub(crate) fn promise(&self, account: &Address) -> Result<Option<SignedTransfer>, RemoteError> {
        if let Some(p) = lock(&self.state.promises).get(account) {
            return Ok(Some(p.clone()));
        }
        let Some(path) = self.state.promise_path(account) else { return Ok(None) };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal(format!("reading the promise {}: {e}", path.display()))),
        };
        let promise = kura_node::stored::decode_transfer(&bytes)
            .map_err(|e| internal(format!("the promise {} does not decode: {e}", path.display())))?;
        self.state.remember_promise(*account, promise.clone());
        Ok(Some(promise))
    }

    /// Writes the promise durably ([`write_durably`]) before the signature leaves.
    pub(crate) async fn keep_promise(&self, account: Address, signed: &SignedTransfer) -> Result<(), RemoteError> {
        if let Some(path) = self.state.promise_path(&account) {
            let bytes = kura_node::stored::encode_transfer(signed);
            tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
                .await
                .map_err(internal)?
                .map_err(|e| internal(format!("writing a promise: {e}")))?;
        }
        self.state.remember_promise(account, signed.clone());
        Ok(())
    }

    /// The account's committee as this vault sees it, if this vault is in it; else
    /// [`RemoteError::NotResponsible`]. Nothing wider than the committee signs for an account
    /// or holds its entries, and only elders sit in it: a newcomer refuses at once, however
    /// close its id. A routing table lags churn (a vault that left stays in it for a while),
    /// so a vault that finds itself just outside the committee of its table, when asked as a
    /// member, looks the committee up before it refuses.
    pub(crate) async fn committee_member(&self, account: Address) -> Result<Vec<PeerId>, RemoteError> {
        let me = self.ctx.me();
        if !self.ctx.elders().votes(&me) {
            return Err(RemoteError::NotResponsible(account));
        }
        let view = self.ctx.node().local_closest(account, WIDE).await.map_err(internal)?;
        let elders = self.ctx.elders_among(view).await;
        let members = committee(&account, elders.iter().copied());
        if members.contains(&me) {
            return Ok(members);
        }
        // Only a vault close behind the committee may be a member whose table lags; any other
        // refuses at no cost.
        if !elders.iter().take(VOTERS + LAGGING).any(|p| *p == me) {
            return Err(RemoteError::NotResponsible(account));
        }
        let found = self.looked_up_committee(account).await?;
        match found.contains(&me) {
            true => Ok(found),
            false => Err(RemoteError::NotResponsible(account)),
        }
    }

    /// How many elders a committee has on this network, as this vault knows it.
    pub(crate) fn committee_size(&self) -> usize {
        self.ctx.elders().committee_size()
    }

    /// Signs a transfer out of an account this vault is a replica of, if the rules allow.
    pub(crate) async fn sign_transfer(&self, signed: SignedTransfer) -> Result<Response, RemoteError> {
        let result = self.try_sign(signed).await;
        let counter = match &result {
            Ok(_) => &self.state.stats.signed,
            Err(_) => &self.state.stats.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    pub(crate) async fn try_sign(&self, signed: SignedTransfer) -> Result<Response, RemoteError> {
        let owned = signed.clone();
        let (total, check) = tokio::task::spawn_blocking(move || owned.prepare()).await.map_err(internal)?.map_err(refused)?;
        let account = signed.transfer.from_address();
        // Whose replica this is costs no pairing: a transfer of another committee's account is
        // refused before its signature is checked.
        self.committee_member(account).await?;
        // Remembered by what replicas sign, which covers the owner's very signature bytes.
        let certified = signed.certified_id();
        if !self.state.verifier.holds(check).await {
            return Err(refused(LedgerError::BadOwnerSignature));
        }
        {
            let mut checked = lock(&self.state.owner_checked);
            if checked.len() >= OWNER_CHECKED_KEPT {
                checked.clear();
            }
            checked.insert(certified);
        }
        let _turn = self.state.turn(&account).await;
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
        let signature = self.state.key.sign_replica(&signed);
        Ok(Response::Signed(ReplicaSignature { binding: self.state.binding.clone(), signature }))
    }

    /// Checks a certified transfer's certificate and who signed it, before it is stored.
    /// Called before the account's turn is taken: a payee credited by many payers at once
    /// would otherwise check their certificates one after another.
    pub(crate) async fn check_entry(&self, entry: &Entry) -> Result<(), RemoteError> {
        self.check_entry_held(entry, None).await
    }

    /// [`Ledger::check_entry`], knowing already which other members of the account's group
    /// list this transfer (a catch-up lists what each holds): an old entry's vouchers are
    /// asked of them only, and none when too few list it.
    pub(crate) async fn check_entry_held(&self, entry: &Entry, holders: Option<Vec<PeerId>>) -> Result<(), RemoteError> {
        // The whole entry, certificate and all: another certificate of the same transfer is
        // checked on its own.
        let key = *blake3::hash(&postcard::to_stdvec(entry).map_err(internal)?).as_bytes();
        if lock(&self.state.checked).get(&key).is_some_and(|at| at.elapsed() < CHECKED_FRESH) {
            return Ok(());
        }
        self.check_certificate(&entry.certificate, Some((entry, holders))).await?;
        let mut checked = lock(&self.state.checked);
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
                    Some(id) => match self.records.read_record(RecordKey { kind: RecordKind::Transfer, address: entry.account, id }).await {
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
    pub(crate) async fn report(&self, exhibit: &Exhibit) {
        if !self.state.evidence.keep(exhibit).await {
            return;
        }
        let guilty = culprits(exhibit);
        if matches!(exhibit.offence, Offence::DoubleSpend { .. }) {
            self.state.stats.double_spends.fetch_add(1, Ordering::Relaxed);
        }
        error!(offence = ?exhibit.offence, guilty = ?guilty, "ledger evidence kept; its signers penalized");
        for peer in guilty {
            if peer != self.ctx.node().peer_id() {
                let _ = self.ctx.node().penalize(peer, format!("signed against the ledger's rules: {:?}", exhibit.offence)).await;
                self.ctx.elders().demote(peer);
            }
        }
    }

    /// Compares the account with its group in the background (bounded: a flood of refused
    /// entries starts few).
    pub(crate) fn catch_up(&self, account: Address) {
        if claim(&self.state.catching_up, MAX_CATCHING_UP, account) {
            let ledger = self.clone();
            self.ctx.spawn_background(async move {
                if let Err(e) = ledger.repair_account(account).await {
                    debug!(%account, error = %e, "catching up failed");
                }
                lock(&ledger.state.catching_up).remove(&account);
            });
        }
    }

    /// The payer's committee as this vault sees it: from its routing table when that makes
    /// `signers` a quorum of it, else found by lookup (a payee far from the payer on a large
    /// network has no table entries near it; a table can also lag churn). Lookups are reused
    /// for a while and bounded in number, so certificates naming many payers cost little.
    pub(crate) async fn payer_committee(&self, payer: Address, signers: &[PeerId]) -> Result<Vec<PeerId>, RemoteError> {
        let view = self.ctx.node().local_closest(payer, WIDE).await.map_err(internal)?;
        let local = committee(&payer, self.ctx.elders_among(view).await);
        if quorum_of(signers, &local, self.committee_size()) {
            return Ok(local);
        }
        self.looked_up_committee(payer).await
    }

    /// The account's committee found by lookup (reused for [`LOOKUP_FRESH`]; at most
    /// [`MAX_LOOKUPS`] at once).
    pub(crate) async fn looked_up_committee(&self, account: Address) -> Result<Vec<PeerId>, RemoteError> {
        if let Some((at, found)) = lock(&self.state.looked_up).get(&account) {
            if at.elapsed() < LOOKUP_FRESH {
                return Ok(found.clone());
            }
        }
        let _permit = self.state.lookups.acquire().await.map_err(internal)?;
        let near = self.ctx.node().closest_vaults(account, WIDE).await.map_err(internal)?;
        let found = committee(&account, self.ctx.elders_among(near).await);
        let mut kept = lock(&self.state.looked_up);
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
    /// taken only if [`vouchers`] elders of its account's group hold this very entry.
    pub(crate) async fn check_certificate(&self, cert: &Certificate, entry: Option<(&Entry, Option<Vec<PeerId>>)>) -> Result<u64, RemoteError> {
        // The free checks first, so that a stranger's certificate is refused before it costs
        // a pairing: its shape, and that its signers are vault ids (they carry work).
        cert.transfer.transfer.total().map_err(refused)?;
        let signers = cert.signer_peers();
        let difficulty = self.ctx.config().id_difficulty;
        let no_vaults: Vec<PeerId> = signers.iter().filter(|p| !kura_node::puzzle::meets(p, difficulty)).copied().collect();
        if !no_vaults.is_empty() {
            return Err(refused(LedgerError::UnknownSigners(no_vaults)));
        }
        let from = cert.transfer.transfer.from_address();
        let members = self.payer_committee(from, &signers).await?;
        // A certificate of evidence this vault kept was its payer's committee's when found;
        // its signers are penalized since, so the table no longer shows them.
        let current = quorum_of(&signers, &members, self.committee_size()) || self.state.evidence.holds(cert);
        let not_current = || {
            let strangers = outsiders(&signers, &members);
            refused(match strangers.is_empty() {
                // Members all, but too few of them.
                true => LedgerError::TooFewSigners { got: signers.len(), need: kura_node::ledger::quorum(self.committee_size().max(members.len()).min(VOTERS)) },
                false => LedgerError::UnknownSigners(strangers),
            })
        };
        if !current && entry.is_none() {
            return Err(not_current());
        }
        let state = self.state.clone();
        let owned = cert.clone();
        let prepared = tokio::task::spawn_blocking(move || owned.prepare(&mut lock(&state.cache)))
            .await
            .map_err(internal)?
            .map_err(refused)?;
        let id = cert.transfer.certified_id();
        let verifier = &self.state.verifier;
        let owner = async {
            match prepared.owner.clone() {
                Some(check) if !lock(&self.state.owner_checked).contains(&id) => verifier.holds_once(id, check).await,
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
        lock(&self.state.cache).remember(prepared.digest);
        if let (false, Some((e, holders))) = (current, entry) {
            let needed = vouchers(self.committee_size());
            let held = match holders {
                Some(listed) => {
                    let listed = self.ctx.elders_among(listed).await;
                    match listed.len() < needed {
                        true => listed.len(),
                        false => self.vouchers_among(e, listed).await,
                    }
                }
                None => self.vouchers(e).await,
            };
            if held < needed {
                return Err(not_current());
            }
        }
        Ok(prepared.total)
    }

    /// How many other elders of the entry's account group hold this very entry (a newcomer's
    /// word is not counted: its id may have been ground next to the account).
    /// The group asked is the account's committee as this vault's table has it, with the
    /// [`LAGGING`] vaults past it, and as a lookup finds it: after churn a table still holds
    /// vaults that left, and a lookup already holds vaults that have not caught up, so either
    /// alone can leave too few holders to ask.
    pub(crate) async fn vouchers(&self, entry: &Entry) -> usize {
        let me = self.ctx.node().peer_id();
        let Ok(mut group) = self.ctx.node().local_closest(entry.account, WIDE).await else { return 0 };
        if let Ok(found) = self.looked_up_committee(entry.account).await {
            group.extend(found.into_iter().filter(|p| !group.contains(p)).collect::<Vec<_>>());
        }
        // The committee's elders and those just past it, nearest first: no wider.
        let all = group.len();
        group = kura_node::close_group(&entry.account, group, all);
        let elders: Vec<PeerId> = self.ctx.elders_among(group).await.into_iter().take(VOTERS + LAGGING).filter(|p| *p != me).collect();
        self.vouchers_among(entry, elders).await
    }

    /// How many of `peers` hold this very entry (the same certificate, not only the same
    /// transfer).
    pub(crate) async fn vouchers_among(&self, entry: &Entry, peers: Vec<PeerId>) -> usize {
        let key = entry.key();
        let asks = peers.into_iter().map(|peer| self.ctx.ask(peer, Request::GetRecord(key)));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|a| matches!(a, Ok(Response::Record(Some(Record::Transfer(e)))) if e == entry))
            .count()
    }
}
