//! The reward ledger's rules: accounts, owner-signed transfers, quorum certificates, and what
//! a replica may sign, as pure functions (no clock, no disk, no network).
//!
//! An account is a BLS public key; its address is the BLAKE3 hash of the key, and its
//! committee (the [`crate::age::VOTERS`] elders closest to that address) holds its state. The owner signs a
//! [`Transfer`] `{from, nonce, outputs}`; each replica of `from` checks the signature, that the
//! nonce is the next one and that the balance covers it, promises never to sign another
//! transfer at that nonce, and signs the transfer's id with its own BLS key. [`quorum`] of those
//! signatures, aggregated, are the transfer's [`Certificate`] (FastPay's design: Baudet,
//! Danezis, Sonnino 2020). Two certificates for one nonce would need `2q − n` replicas that
//! signed twice, so with `n = 24`, `q = 17`, ten dishonest replicas of one account.
//!
//! The certificate is stored as a [`Entry`] record (kind `transfer`) at `from` (a debit) and at
//! every output's account (a credit). An account's state is what its entries add up to
//! ([`Summary`]), so replicas that missed a transfer catch up by copying entries, each of which
//! carries its own proof.
//!
//! Each replica's BLS key is bound to its peer id by a [`Binding`]: the peer's Ed25519
//! signature over the BLS key, and a BLS proof of possession, without which one dishonest
//! signer could choose a key that cancels the others' out of the aggregate (the rogue-key
//! attack). Checking a proof of possession costs a pairing, so verified bindings are
//! remembered ([`BindingCache`]).
//!
//! This file holds keys, transfers and certificates; `sig` checks signatures and bindings,
//! `summary` adds up an account, `quote` prices storage.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bls_signatures::Serialize as _;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::record::{RecordKey, RecordKind};

mod quote;
mod sig;
mod summary;

pub use quote::{format_amount, parse_amount, price_per_mib, shards_memo, Quote, QUOTE_SECS};
pub use sig::{aggregate_check, aggregate_signatures, verify_batch, Binding, BindingCache, SigCheck};
pub use summary::Summary;

/// Most outputs one transfer may have (one upload batch pays each of its holders once).
pub const MAX_OUTPUTS: usize = 1024;

/// Bytes of a BLS public key (compressed G1).
pub const PUBLIC_KEY_LEN: usize = 48;

/// Bytes of a BLS signature (compressed G2).
pub const SIGNATURE_LEN: usize = 96;

/// Units of the smallest amount in one token (amounts are whole units; 1 KURA = 10⁹ units).
pub const UNITS_PER_TOKEN: u64 = 1_000_000_000;

const TRANSFER_DOMAIN: &[u8] = b"kura-transfer-v1";
const REPLICA_DOMAIN: &[u8] = b"kura-replica-signature-v2";
const CERTIFIED_DOMAIN: &[u8] = b"kura-certified-transfer-v1";
const OWNER_DOMAIN: &[u8] = b"kura-owner-signature-v1";
const BINDING_DOMAIN: &[u8] = b"kura-bls-binding-v1";
const POP_DOMAIN: &[u8] = b"kura-bls-possession-v1";

/// Signatures that certify a transfer out of an account held by `n` replicas: ⌊2n/3⌋ + 1.
pub const fn quorum(n: usize) -> usize {
    2 * n / 3 + 1
}

/// The certificate quorum of a full committee ([`crate::age::VOTERS`] elders): 17 of 24.
pub const QUORUM: usize = quorum(crate::age::VOTERS);

/// The fewest signers any certificate has: the quorum of a committee of one (a network of
/// one elder).
pub const MIN_SIGNERS: usize = quorum(1);

/// Why a transfer, a certificate or a replica's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// An output of zero.
    #[error("an output of zero is not a transfer")]
    ZeroAmount,
    /// The outputs add up past the largest amount.
    #[error("the outputs add up to more than {} units", u64::MAX)]
    Overflow,
    /// No outputs, or more than [`MAX_OUTPUTS`].
    #[error("a transfer has 1 to {MAX_OUTPUTS} outputs, not {0}")]
    Outputs(usize),
    /// An output pays the account it comes from.
    #[error("a transfer cannot pay the account it comes from")]
    SelfPayment,
    /// Nonces start at 1.
    #[error("nonce 0 is never valid: an account's first transfer has nonce 1")]
    ZeroNonce,
    /// A key or signature is not a valid BLS point.
    #[error("malformed {0}")]
    Malformed(String),
    /// The owner's signature does not verify.
    #[error("the transfer is not signed by its account's key")]
    BadOwnerSignature,
    /// The transfer's nonce is not the account's next.
    #[error("wrong nonce {got}: the account's next nonce is {expected}")]
    WrongNonce {
        /// The next nonce.
        expected: u64,
        /// The nonce sent.
        got: u64,
    },
    /// The balance does not cover the transfer.
    #[error("insufficient funds: balance {balance}, transfer needs {needed}")]
    InsufficientFunds {
        /// The balance this replica holds.
        balance: i128,
        /// The transfer's total.
        needed: u64,
    },
    /// This replica promised another transfer at this nonce (it is returned so its owner can
    /// finish it).
    #[error("nonce {nonce} is promised to another transfer ({})", hex::encode(&promised.transfer.id()[..8]))]
    Conflict {
        /// The nonce.
        nonce: u64,
        /// The owner-signed transfer this replica signed at that nonce.
        promised: Box<SignedTransfer>,
    },
    /// This replica is missing some of the account's earlier transfers and cannot vouch for
    /// its balance until it has copied them.
    #[error("this replica is catching up on the account's transfers")]
    Behind,
    /// Fewer distinct signers than the quorum, or more than the replicas.
    #[error("{got} signers; a certificate needs {need} to {}", crate::age::VOTERS)]
    TooFewSigners {
        /// Signers present.
        got: usize,
        /// The quorum.
        need: usize,
    },
    /// The same vault or key signs twice.
    #[error("a signer appears twice")]
    DuplicateSigner,
    /// A signer's BLS key is not bound to its peer id.
    #[error("signer {0}'s key is not bound to its peer id")]
    BadBinding(PeerId),
    /// The aggregate signature does not verify.
    #[error("the certificate's signature does not verify")]
    BadCertificate,
    /// The signers are not the account's replicas, as this vault sees them.
    #[error("signers {0:?} are not among the closest vaults to the account")]
    UnknownSigners(Vec<PeerId>),
    /// The entry is not about the account it is stored under.
    #[error("the transfer neither debits nor credits {0}")]
    NotInvolved(Address),
    /// The certificate is already applied to this account.
    #[error("transfer {0} is already applied to this account")]
    AlreadyApplied(String),
    /// Two certified transfers share a nonce: a double spend (never expected while fewer than
    /// `2q − n` replicas are dishonest).
    #[error("another certified transfer holds nonce {0}")]
    DoubleSpend(u64),
    /// A storage quote is forged, expired or not for this vault.
    #[error("bad quote: {0}")]
    BadQuote(String),
    /// A client sent a shard without a quote to a vault that stores only paid shards.
    #[error("this vault stores only paid shards: ask for a quote (Request::Quote) and store with it")]
    Unpaid,
    /// A payment does not cover the shards it names.
    #[error("payment of {paid} does not cover the {owed} owed")]
    Underpaid {
        /// Paid to this vault.
        paid: u64,
        /// Owed for the shards named.
        owed: u64,
    },
}

/// An account's address: the BLAKE3 hash of its BLS public key.
pub fn account_address(public_key: &[u8]) -> Address {
    Address(*blake3::hash(public_key).as_bytes())
}

/// An account's signing key.
#[derive(Clone)]
pub struct WalletKey(bls_signatures::PrivateKey, Vec<u8>);

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletKey({})", self.address())
    }
}

impl WalletKey {
    /// The key derived from 32 bytes of seed (the BLS key generation of the IETF draft).
    pub fn from_seed(seed: &[u8; 32]) -> WalletKey {
        let key = bls_signatures::PrivateKey::new(seed);
        // Deriving the public key is a scalar multiplication: done once, not per transfer.
        let public = key.public_key().as_bytes();
        WalletKey(key, public)
    }

    /// A fresh random key.
    pub fn random() -> WalletKey {
        WalletKey::from_seed(&rand::random())
    }

    /// The public key, 48 bytes.
    pub fn public_key(&self) -> Vec<u8> {
        self.1.clone()
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        account_address(&self.public_key())
    }

    /// Signs a transfer out of this account.
    pub fn sign(&self, nonce: u64, outputs: Vec<Output>) -> SignedTransfer {
        let transfer = Transfer { from: self.public_key(), nonce, outputs };
        let signature = self.0.sign(owner_message(&transfer.id())).as_bytes();
        SignedTransfer { transfer, signature }
    }

    /// A replica's signature of an owner-signed transfer (see [`Certificate`]).
    pub fn sign_replica(&self, signed: &SignedTransfer) -> Vec<u8> {
        self.0.sign(replica_message(&signed.certified_id())).as_bytes()
    }

    /// A signature of a message that begins with its own domain tag (an age grant).
    pub(crate) fn sign_tagged(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).as_bytes()
    }

    /// This replica key's binding to the peer holding `keypair`.
    pub fn bind(&self, keypair: &libp2p_identity::Keypair) -> Binding {
        let bls = self.public_key();
        let pop = self.0.sign(pop_message(&bls)).as_bytes();
        let signature = keypair.sign(&binding_message(&bls)).unwrap_or_default();
        Binding { peer: keypair.public().to_peer_id(), peer_key: keypair.public().encode_protobuf(), bls, pop, signature }
    }
}

fn tagged(domain: &[u8], bytes: &[u8]) -> Vec<u8> {
    [domain, bytes].concat()
}

fn owner_message(id: &[u8; 32]) -> Vec<u8> {
    tagged(OWNER_DOMAIN, id)
}

fn replica_message(id: &[u8; 32]) -> Vec<u8> {
    tagged(REPLICA_DOMAIN, id)
}

fn binding_message(bls: &[u8]) -> Vec<u8> {
    tagged(BINDING_DOMAIN, bls)
}

fn pop_message(bls: &[u8]) -> Vec<u8> {
    tagged(POP_DOMAIN, bls)
}

/// One payment of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Output {
    /// The account paid.
    pub to: Address,
    /// Units paid.
    pub amount: u64,
    /// What it pays for: zero for a plain payment, or the hash of the shards a storage
    /// payment covers ([`shards_memo`]).
    pub memo: [u8; 32],
}

/// A transfer out of one account, before anyone signs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    /// The paying account's BLS public key.
    #[serde(with = "serde_bytes")]
    pub from: Vec<u8>,
    /// The account's transfer number: 1 for its first, each next one more.
    pub nonce: u64,
    /// Who is paid what.
    pub outputs: Vec<Output>,
}

impl Transfer {
    /// The transfer's id: a hash of all of it.
    pub fn id(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(TRANSFER_DOMAIN);
        h.update(&postcard::to_stdvec(self).unwrap_or_default());
        *h.finalize().as_bytes()
    }

    /// The paying account's address.
    pub fn from_address(&self) -> Address {
        account_address(&self.from)
    }

    /// The sum of the outputs, after checking the transfer's shape: 1 to [`MAX_OUTPUTS`]
    /// outputs, none zero or to the payer, a nonce of at least 1, no overflow.
    pub fn total(&self) -> Result<u64, LedgerError> {
        if self.outputs.is_empty() || self.outputs.len() > MAX_OUTPUTS {
            return Err(LedgerError::Outputs(self.outputs.len()));
        }
        if self.nonce == 0 {
            return Err(LedgerError::ZeroNonce);
        }
        let from = self.from_address();
        let mut total = 0u64;
        for o in &self.outputs {
            if o.amount == 0 {
                return Err(LedgerError::ZeroAmount);
            }
            if o.to == from {
                return Err(LedgerError::SelfPayment);
            }
            total = total.checked_add(o.amount).ok_or(LedgerError::Overflow)?;
        }
        Ok(total)
    }

    /// What this transfer pays `account` (zero if nothing).
    pub fn paid_to(&self, account: &Address) -> u64 {
        self.outputs.iter().filter(|o| o.to == *account).fold(0u64, |a, o| a.saturating_add(o.amount))
    }
}

/// A transfer signed by its account's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedTransfer {
    /// The transfer.
    pub transfer: Transfer,
    /// The owner's BLS signature of its id.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SignedTransfer {
    /// What replicas sign: the transfer's id and its owner's signature, so that a
    /// certificate binds its signers to the very owner signature it carries (a certificate
    /// whose owner signature does not verify is then evidence against its signers, and no one
    /// can frame them by swapping it).
    pub fn certified_id(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(CERTIFIED_DOMAIN);
        h.update(&self.transfer.id());
        h.update(&self.signature);
        *h.finalize().as_bytes()
    }

    /// Checks the shape and the owner's signature; returns the total (one pairing: ~1 ms).
    pub fn verify(&self) -> Result<u64, LedgerError> {
        let (total, check) = self.prepare()?;
        match check.holds() {
            true => Ok(total),
            false => Err(LedgerError::BadOwnerSignature),
        }
    }

    /// Checks the shape and decodes the key and signature; returns the total and the owner's
    /// signature still to verify (alone, or batched with others: [`verify_batch`]).
    pub fn prepare(&self) -> Result<(u64, SigCheck), LedgerError> {
        let total = self.transfer.total()?;
        let check = SigCheck::new(&self.transfer.from, owner_message(&self.transfer.id()), &self.signature)?;
        Ok((total, check))
    }
}

/// A certificate checked in all but its signatures ([`Certificate::prepare`]).
#[derive(Debug)]
pub struct PreparedCertificate {
    /// The transfer's total.
    pub total: u64,
    /// The certificate's digest, for [`BindingCache::remember`] once both checks hold.
    pub digest: [u8; 32],
    /// The owner's signature of the transfer, still to verify; `None` if the cache knows the
    /// certificate holds.
    pub owner: Option<SigCheck>,
    /// The signers' aggregate signature, still to verify; `None` if the cache knows it holds.
    pub aggregate: Option<SigCheck>,
}

impl PreparedCertificate {
    /// Both checks left, owner's first (empty when the cache knows the certificate).
    pub fn checks(&self) -> Vec<SigCheck> {
        self.owner.iter().chain(self.aggregate.iter()).cloned().collect()
    }
}

/// A transfer certified by a quorum of its account's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Certificate {
    /// The owner-signed transfer.
    pub transfer: SignedTransfer,
    /// The replicas that signed, with their keys' bindings.
    pub signers: Vec<Binding>,
    /// Their aggregated BLS signature of the transfer's id.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Certificate {
    /// Aggregates replica signatures `(binding, signature)` into a certificate. Does not
    /// verify them (see [`Certificate::verify`]).
    pub fn aggregate(transfer: SignedTransfer, shares: Vec<(Binding, Vec<u8>)>) -> Result<Certificate, LedgerError> {
        // Each share is decoded but not checked to be in the group (a third of a pairing
        // each): the sum is, when the certificate is verified.
        let signature = aggregate_signatures(&shares.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>())?;
        Ok(Certificate { transfer, signers: shares.into_iter().map(|(b, _)| b).collect(), signature })
    }

    /// The transfer's id.
    pub fn id(&self) -> [u8; 32] {
        self.transfer.transfer.id()
    }

    /// The signers' peer ids.
    pub fn signer_peers(&self) -> Vec<PeerId> {
        self.signers.iter().map(|b| b.peer).collect()
    }

    /// Checks everything a certificate proves on its own: the transfer's shape, its owner's
    /// signature, a quorum of distinct signers with bound keys, and their aggregate signature
    /// (two pairings, plus one per binding not in `cache`). The owner's signature is checked
    /// here too, not left to the replicas that signed: a certificate is evidence of what the
    /// owner asked only if the owner's signature is in it. Whether the signers are the
    /// account's committee depends on who checks (`kura_node::committee`).
    pub fn verify(&self, cache: &mut BindingCache) -> Result<u64, LedgerError> {
        let prepared = self.prepare(cache)?;
        if let Some(owner) = &prepared.owner {
            if !owner.holds() {
                return Err(LedgerError::BadOwnerSignature);
            }
        }
        if let Some(aggregate) = &prepared.aggregate {
            if !aggregate.holds() {
                return Err(LedgerError::BadCertificate);
            }
        }
        cache.remember(prepared.digest);
        Ok(prepared.total)
    }

    /// Everything [`Certificate::verify`] checks but the owner's and the aggregate
    /// signatures, which it returns to verify (alone, or batched with others:
    /// [`verify_batch`]).
    pub fn prepare(&self, cache: &mut BindingCache) -> Result<PreparedCertificate, LedgerError> {
        let (total, owner) = self.transfer.prepare()?;
        // How many signers make a quorum depends on how many elders the payer's committee
        // has (all of them on a network of fewer than eight: see `kura_types::age`); who
        // counts is the admitting vault's to check. Here only the shape: one to a committee.
        let n = self.signers.len();
        if !(MIN_SIGNERS..=crate::age::VOTERS).contains(&n) {
            return Err(LedgerError::TooFewSigners { got: n, need: MIN_SIGNERS });
        }
        let peers: HashSet<PeerId> = self.signers.iter().map(|b| b.peer).collect();
        let keys: HashSet<&[u8]> = self.signers.iter().map(|b| b.bls.as_slice()).collect();
        if peers.len() != n || keys.len() != n {
            return Err(LedgerError::DuplicateSigner);
        }
        let digest = *blake3::hash(&postcard::to_stdvec(self).unwrap_or_default()).as_bytes();
        if cache.verified.contains(&digest) {
            return Ok(PreparedCertificate { total, digest, owner: None, aggregate: None });
        }
        let aggregate = aggregate_check(&self.signers, replica_message(&self.transfer.certified_id()), &self.signature, cache)?;
        Ok(PreparedCertificate { total, digest, owner: Some(owner), aggregate: Some(aggregate) })
    }
}

/// A replica's answer to a transfer it signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSignature {
    /// The replica's binding.
    pub binding: Binding,
    /// Its signature of the transfer's id.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl ReplicaSignature {
    /// Checks the replica's signature of `signed` (its binding checked separately).
    pub fn verify(&self, signed: &SignedTransfer) -> bool {
        SigCheck::new(&self.binding.bls, replica_message(&signed.certified_id()), &self.signature).is_ok_and(|c| c.holds())
    }
}

/// A certificate stored at one account it touches: a debit at `from`, a credit at an output's
/// account. Kind `transfer`, keyed by the transfer's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The account it is stored at.
    pub account: Address,
    /// The certified transfer.
    pub certificate: Certificate,
}

impl Entry {
    /// The key it is stored under.
    pub fn key(&self) -> RecordKey {
        RecordKey { kind: RecordKind::Transfer, address: self.account, id: self.certificate.id() }
    }

    /// Checks the shape, and that the transfer debits or credits the account (the
    /// certificate's signatures are checked by [`Certificate::verify`]).
    pub fn check_shape(&self) -> Result<(), LedgerError> {
        let t = &self.certificate.transfer.transfer;
        t.total()?;
        if t.from_address() != self.account && t.paid_to(&self.account) == 0 {
            return Err(LedgerError::NotInvolved(self.account));
        }
        Ok(())
    }

    /// Whether it debits its account.
    pub fn is_debit(&self) -> bool {
        self.certificate.transfer.transfer.from_address() == self.account
    }
}

/// What a replica reports of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The account.
    pub account: Address,
    /// Its balance here.
    pub balance: i128,
    /// What it started with: the genesis supply for the genesis account, else zero (a client
    /// that sums the account's certificates itself adds it).
    pub genesis: u64,
    /// The highest nonce debited.
    pub nonce: u64,
    /// Entries held.
    pub entries: u64,
    /// Whether a debit is missing here.
    pub behind: bool,
    /// The transfer this replica signed at the next nonce, whose certificate has not come:
    /// the owner must finish it before any other (a wallet that lost it learns it here).
    pub pending: Option<SignedTransfer>,
}
impl crate::kind::Kind for Entry {
    const KIND: crate::record::RecordKind = crate::record::RecordKind::Transfer;

    fn key(&self) -> crate::record::RecordKey {
        Entry::key(self)
    }

    fn strategy(&self) -> crate::record::Strategy {
        crate::record::Strategy::Replicated { n: crate::age::VOTERS as u8 }
    }

    /// The certificate's pairings are checked where a vault admits it (with its cache of
    /// verified keys, and its view of who the account's replicas are).
    fn check(&self) -> Result<(), crate::record::RecordError> {
        self.check_shape().map_err(crate::record::RecordError::Ledger)
    }

    fn size(&self) -> usize {
        400 + 40 * self.certificate.transfer.transfer.outputs.len()
    }

    fn into_record(self) -> crate::record::Record {
        crate::record::Record::Transfer(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) struct Replica {
        pub(crate) key: WalletKey,
        pub(crate) binding: Binding,
    }

    pub(crate) fn replicas(n: usize) -> Vec<Replica> {
        (0..n)
            .map(|_| {
                let key = WalletKey::random();
                let binding = key.bind(&libp2p_identity::Keypair::generate_ed25519());
                Replica { key, binding }
            })
            .collect()
    }

    pub(crate) fn pay(to: Address, amount: u64) -> Output {
        Output { to, amount, memo: [0; 32] }
    }

    pub(crate) fn certify(signed: &SignedTransfer, by: &[Replica]) -> Certificate {
        let shares = by.iter().map(|r| (r.binding.clone(), r.key.sign_replica(signed))).collect();
        Certificate::aggregate(signed.clone(), shares).unwrap()
    }

    #[test]
    fn a_quorum_certifies_and_fewer_or_forged_signers_do_not() {
        let reps = replicas(8);
        let owner = WalletKey::random();
        let to = WalletKey::random().address();
        let signed = owner.sign(1, vec![pay(to, 5)]);
        assert_eq!(signed.verify(), Ok(5));
        let mut cache = BindingCache::default();
        assert_eq!(QUORUM, 17);
        assert_eq!(certify(&signed, &reps[..6]).verify(&mut cache), Ok(5));
        assert_eq!(certify(&signed, &reps[..8]).verify(&mut cache), Ok(5));
        // The shape admits one to eight signers; how many make a quorum is the committee's.
        let mut none = certify(&signed, &reps[..1]);
        none.signers.clear();
        assert_eq!(none.verify(&mut cache), Err(LedgerError::TooFewSigners { got: 0, need: 1 }));
        let mut many = certify(&signed, &reps[..8]);
        many.signers.extend(replicas(crate::age::VOTERS + 1 - 8).into_iter().map(|r| r.binding));
        assert_eq!(many.verify(&mut cache), Err(LedgerError::TooFewSigners { got: crate::age::VOTERS + 1, need: 1 }));
        // One signer listed twice to make up the count.
        let mut dup = certify(&signed, &reps[..5]);
        dup.signers.push(dup.signers[0].clone());
        assert_eq!(dup.verify(&mut cache), Err(LedgerError::DuplicateSigner));
        // Five real signatures and a sixth signer who did not sign.
        let mut short = certify(&signed, &reps[..5]);
        short.signers.push(reps[5].binding.clone());
        assert_eq!(short.verify(&mut cache), Err(LedgerError::BadCertificate));
        // The certificate moved onto another transfer.
        let mut moved = certify(&signed, &reps[..6]);
        moved.transfer = owner.sign(1, vec![pay(to, 500)]);
        assert_eq!(moved.verify(&mut cache), Err(LedgerError::BadCertificate));
        // A signer's key bound to someone else's peer id.
        let mut stolen = certify(&signed, &reps[..6]);
        stolen.signers[2].peer = PeerId::random();
        assert_eq!(stolen.verify(&mut cache), Err(LedgerError::BadBinding(stolen.signers[2].peer)));
    }

    #[test]
    fn a_rogue_key_cannot_cancel_the_others_out() {
        // The attacker's key is x·G − Σ(honest keys), so that the sum of all keys is x·G and
        // the attacker alone could sign for the whole quorum. It has no proof of possession.
        let reps = replicas(6);
        let x = WalletKey::random();
        let mut rogue: blstrs::G1Projective = bls_signatures::PublicKey::from_bytes(&x.public_key()).unwrap().into();
        for r in &reps[..5] {
            rogue -= blstrs::G1Projective::from(bls_signatures::PublicKey::from_bytes(&r.binding.bls).unwrap());
        }
        let owner = WalletKey::random();
        let signed = owner.sign(1, vec![pay(Address::random(), 1_000_000)]);
        let kp = libp2p_identity::Keypair::generate_ed25519();
        let bls = bls_signatures::PublicKey::from(rogue).as_bytes();
        let signers: Vec<Binding> = reps[..5]
            .iter()
            .map(|r| r.binding.clone())
            .chain([Binding {
                peer: kp.public().to_peer_id(),
                peer_key: kp.public().encode_protobuf(),
                signature: kp.sign(&binding_message(&bls)).unwrap(),
                pop: x.0.sign(pop_message(&bls)).as_bytes(),
                bls,
            }])
            .collect();
        let cert = Certificate {
            signature: x.sign_replica(&signed),
            transfer: signed,
            signers,
        };
        assert!(matches!(cert.verify(&mut BindingCache::default()), Err(LedgerError::BadBinding(_))));
    }

    #[test]
    fn a_batch_finds_each_bad_signature_and_swapped_ones_do_not_cancel() {
        let owners: Vec<WalletKey> = (0..9).map(|_| WalletKey::random()).collect();
        let to = Address::random();
        let signed: Vec<SignedTransfer> = owners.iter().map(|o| o.sign(1, vec![pay(to, 7)])).collect();
        let mut checks: Vec<SigCheck> = signed.iter().map(|s| s.prepare().unwrap().1).collect();
        // A certificate among the owners' signatures.
        let reps = replicas(6);
        let cert = certify(&signed[0], &reps);
        let prepared = cert.prepare(&mut BindingCache::default()).unwrap();
        checks.push(prepared.aggregate.unwrap());
        assert_eq!(verify_batch(&checks), vec![true; 10]);
        // One forged signature: only it fails.
        let mut forged = signed[4].clone();
        forged.signature = owners[5].sign(1, vec![pay(to, 7)]).signature;
        checks[4] = SigCheck::new(&forged.transfer.from, owner_message(&forged.transfer.id()), &forged.signature).unwrap();
        let ok = verify_batch(&checks);
        assert_eq!(ok.iter().filter(|o| !**o).count(), 1);
        assert!(!ok[4]);
        // Two signatures swapped between two transfers: their sum is the sum of two good ones,
        // so an unweighted batch would pass both. Weighted, both fail.
        let (a, b) = (&signed[1], &signed[2]);
        let swapped = vec![
            SigCheck::new(&a.transfer.from, owner_message(&a.transfer.id()), &b.signature).unwrap(),
            SigCheck::new(&b.transfer.from, owner_message(&b.transfer.id()), &a.signature).unwrap(),
        ];
        assert_eq!(verify_batch(&swapped), vec![false, false]);
        let mut mixed = checks[..4].to_vec();
        mixed.extend(swapped);
        assert_eq!(verify_batch(&mixed), vec![true, true, true, true, false, false]);
        assert!(verify_batch(&[]).is_empty());
    }

    #[test]
    fn transfers_are_checked_for_shape_and_owner() {
        let owner = WalletKey::random();
        let to = Address::random();
        assert_eq!(owner.sign(1, vec![pay(to, 0)]).verify(), Err(LedgerError::ZeroAmount));
        assert_eq!(owner.sign(1, vec![pay(to, u64::MAX), pay(to, 1)]).verify(), Err(LedgerError::Overflow));
        assert_eq!(owner.sign(1, vec![]).verify(), Err(LedgerError::Outputs(0)));
        assert_eq!(owner.sign(0, vec![pay(to, 1)]).verify(), Err(LedgerError::ZeroNonce));
        assert_eq!(owner.sign(1, vec![pay(owner.address(), 1)]).verify(), Err(LedgerError::SelfPayment));
        // Someone else's signature on a transfer out of the owner's account.
        let thief = WalletKey::random();
        let mut forged = thief.sign(1, vec![pay(to, 1)]);
        forged.transfer.from = owner.public_key();
        assert_eq!(forged.verify(), Err(LedgerError::BadOwnerSignature));
        // The owner's signature moved onto a larger amount.
        let mut raised = owner.sign(1, vec![pay(to, 1)]);
        raised.transfer.outputs[0].amount = 1000;
        assert_eq!(raised.verify(), Err(LedgerError::BadOwnerSignature));
        assert_eq!(
            SignedTransfer { signature: vec![1; 3], ..owner.sign(1, vec![pay(to, 1)]) }.verify(),
            Err(LedgerError::Malformed("signature".into()))
        );
    }

    #[test]
    fn a_certificate_checks_its_owners_signature() {
        let reps = replicas(6);
        let (owner, thief) = (WalletKey::random(), WalletKey::random());
        let mut forged = thief.sign(1, vec![pay(Address::random(), 5)]);
        forged.transfer.from = owner.public_key();
        // Every replica signature is real: only the owner never signed.
        let cert = certify(&forged, &reps);
        assert_eq!(cert.verify(&mut BindingCache::default()), Err(LedgerError::BadOwnerSignature));
        let good = certify(&owner.sign(1, vec![pay(Address::random(), 5)]), &reps);
        assert_eq!(good.verify(&mut BindingCache::default()), Ok(5));
    }

    #[test]
    fn entries_belong_to_an_account_they_touch() {
        let reps = replicas(6);
        let owner = WalletKey::random();
        let to = Address::random();
        let c = certify(&owner.sign(1, vec![pay(to, 3)]), &reps);
        for account in [owner.address(), to] {
            let e = Entry { account, certificate: c.clone() };
            e.check_shape().unwrap();
            assert_eq!(e.key().address, account);
        }
        let stranger = Address::random();
        assert_eq!(Entry { account: stranger, certificate: c }.check_shape(), Err(LedgerError::NotInvolved(stranger)));
    }

}