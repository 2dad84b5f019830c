//! The reward ledger's rules: accounts, owner-signed transfers, quorum certificates, and what
//! a replica may sign, as pure functions (no clock, no disk, no network).
//!
//! An account is a BLS public key; its address is the BLAKE3 hash of the key, and the close
//! group of that address (its `REPLICAS` closest vaults) holds its state. The owner signs a
//! [`Transfer`] `{from, nonce, outputs}`; each replica of `from` checks the signature, that the
//! nonce is the next one and that the balance covers it, promises never to sign another
//! transfer at that nonce, and signs the transfer's id with its own BLS key. [`quorum`] of those
//! signatures, aggregated, are the transfer's [`Certificate`] (FastPay's design: Baudet,
//! Danezis, Sonnino 2020). Two certificates for one nonce would need `2q − n` replicas that
//! signed twice, so with `n = 8`, `q = 6`, four dishonest replicas of one account.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use bls_signatures::Serialize as _;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::record::{RecordKey, RecordKind, REPLICAS};

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

/// The certificate quorum for an account's replicas.
pub const QUORUM: usize = quorum(REPLICAS as usize);

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
    #[error("{got} signers; a certificate needs {need} of {REPLICAS} replicas")]
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

/// The ciphersuite `bls-signatures` signs under (the IETF draft's basic scheme, signatures
/// in G2), so what one crate signs the other verifies.
const CSUITE: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_";

/// One BLS signature to verify: a key (or a sum of keys) and a signature, both decoded and
/// checked to be in their groups, and the message.
#[derive(Clone)]
pub struct SigCheck {
    key: blst::blst_p1_affine,
    sig: blst::blst_p2_affine,
    msg: Vec<u8>,
}

impl fmt::Debug for SigCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigCheck({} message bytes)", self.msg.len())
    }
}

impl SigCheck {
    fn new(key: &[u8], msg: Vec<u8>, sig: &[u8]) -> Result<SigCheck, LedgerError> {
        Ok(SigCheck { key: decode_key(key)?.into(), sig: decode_signature(sig)?.into(), msg })
    }

    /// Verifies this one signature (one pairing).
    pub fn holds(&self) -> bool {
        let mut pairing = blst::Pairing::new(true, CSUITE);
        pairing.aggregate(&self.key, false, &self.sig, false, &self.msg, &[]) == blst::BLST_ERROR::BLST_SUCCESS && {
            pairing.commit();
            pairing.finalverify(None)
        }
    }
}

/// Verifies many signatures at once; says which hold. All are checked in one product of
/// pairings, each weighted by a fresh random 64-bit scalar so that invalid signatures cannot
/// cancel out (a forger succeeds with probability 2⁻⁶⁴). That costs a Miller loop per
/// signature and one final exponentiation for the lot, against a Miller loop pair and a final
/// exponentiation each: about half the work. If the product fails, the halves are checked
/// apart until each bad signature is found, so one bad signature among good ones costs the
/// good ones nothing but time.
pub fn verify_batch(checks: &[SigCheck]) -> Vec<bool> {
    let mut ok = vec![false; checks.len()];
    settle(checks, &mut ok);
    ok
}

fn settle(checks: &[SigCheck], ok: &mut [bool]) {
    match checks.len() {
        0 => {}
        1 => ok[0] = checks[0].holds(),
        n if all_hold(checks) => ok[..n].fill(true),
        n => {
            let (a, b) = checks.split_at(n / 2);
            let (oa, ob) = ok.split_at_mut(n / 2);
            settle(a, oa);
            settle(b, ob);
        }
    }
}

fn all_hold(checks: &[SigCheck]) -> bool {
    let mut pairing = blst::Pairing::new(true, CSUITE);
    for c in checks {
        // An odd weight is never zero.
        let weight = (rand::random::<u64>() | 1).to_le_bytes();
        if pairing.mul_n_aggregate(&c.key, false, &c.sig, false, &weight, 64, &c.msg, &[]) != blst::BLST_ERROR::BLST_SUCCESS {
            return false;
        }
        pairing.commit();
    }
    pairing.finalverify(None)
}

fn decode_key(bytes: &[u8]) -> Result<blst::min_pk::PublicKey, LedgerError> {
    if bytes.len() != PUBLIC_KEY_LEN {
        return Err(LedgerError::Malformed("public key".into()));
    }
    blst::min_pk::PublicKey::key_validate(bytes).map_err(|_| LedgerError::Malformed("public key".into()))
}

fn decode_signature(bytes: &[u8]) -> Result<blst::min_pk::Signature, LedgerError> {
    if bytes.len() != SIGNATURE_LEN {
        return Err(LedgerError::Malformed("signature".into()));
    }
    blst::min_pk::Signature::sig_validate(bytes, true).map_err(|_| LedgerError::Malformed("signature".into()))
}

/// A vault's BLS key, bound to its peer id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    /// The vault.
    pub peer: PeerId,
    /// Its libp2p public key (protobuf encoding), whose hash is the peer id.
    #[serde(with = "serde_bytes")]
    pub peer_key: Vec<u8>,
    /// Its BLS public key.
    #[serde(with = "serde_bytes")]
    pub bls: Vec<u8>,
    /// The BLS key's signature of itself: proof that its holder knows the secret.
    #[serde(with = "serde_bytes")]
    pub pop: Vec<u8>,
    /// The peer key's signature of the BLS key.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Binding {
    /// The vault's account address (where its earnings go).
    pub fn account(&self) -> Address {
        account_address(&self.bls)
    }

    /// Checks both signatures (one pairing and one Ed25519 verification).
    pub fn verify(&self) -> Result<(), LedgerError> {
        let bad = || LedgerError::BadBinding(self.peer);
        let peer_key = libp2p_identity::PublicKey::try_decode_protobuf(&self.peer_key).map_err(|_| bad())?;
        if peer_key.to_peer_id() != self.peer || !peer_key.verify(&binding_message(&self.bls), &self.signature) {
            return Err(bad());
        }
        match SigCheck::new(&self.bls, pop_message(&self.bls), &self.pop).map(|c| c.holds()) {
            Ok(true) => Ok(()),
            _ => Err(bad()),
        }
    }

    fn digest(&self) -> [u8; 32] {
        *blake3::hash(&postcard::to_stdvec(self).unwrap_or_default()).as_bytes()
    }
}

/// Bindings and certificates already verified, so each costs its pairings once, and the
/// bound keys decoded (bounded: when full it starts again).
#[derive(Debug, Default, Clone)]
pub struct BindingCache {
    verified: HashSet<[u8; 32]>,
    keys: HashMap<Vec<u8>, blst::min_pk::PublicKey>,
}

impl BindingCache {
    /// Most entries remembered.
    pub const CAPACITY: usize = 1 << 16;

    fn check(&mut self, digest: [u8; 32], verify: impl FnOnce() -> Result<(), LedgerError>) -> Result<(), LedgerError> {
        if self.verified.contains(&digest) {
            return Ok(());
        }
        verify()?;
        self.remember(digest);
        Ok(())
    }

    /// Remembers a certificate whose aggregate signature held (see [`Certificate::prepare`]).
    pub fn remember(&mut self, digest: [u8; 32]) {
        if self.verified.len() >= Self::CAPACITY {
            self.verified.clear();
            self.keys.clear();
        }
        self.verified.insert(digest);
    }

    /// The key of a binding already verified, decoded.
    fn key(&mut self, binding: &Binding) -> Result<blst::min_pk::PublicKey, LedgerError> {
        if let Some(k) = self.keys.get(&binding.bls) {
            return Ok(*k);
        }
        let key = decode_key(&binding.bls)?;
        if self.keys.len() >= Self::CAPACITY {
            self.keys.clear();
        }
        self.keys.insert(binding.bls.clone(), key);
        Ok(key)
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
        let sigs = shares
            .iter()
            .map(|(_, s)| match s.len() {
                SIGNATURE_LEN => blst::min_pk::Signature::uncompress(s).map_err(|_| LedgerError::Malformed("signature".into())),
                _ => Err(LedgerError::Malformed("signature".into())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let signature = blst::min_pk::AggregateSignature::aggregate(&sigs.iter().collect::<Vec<_>>(), false)
            .map_err(|_| LedgerError::BadCertificate)?
            .to_signature()
            .compress()
            .to_vec();
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
        let n = self.signers.len();
        if !(QUORUM..=usize::from(REPLICAS)).contains(&n) {
            return Err(LedgerError::TooFewSigners { got: n, need: QUORUM });
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
        let mut keys = Vec::with_capacity(n);
        for b in &self.signers {
            cache.check(b.digest(), || b.verify())?;
            keys.push(cache.key(b)?);
        }
        // Summing is safe because each key comes with a proof of possession.
        let sum = blst::min_pk::AggregatePublicKey::aggregate(&keys.iter().collect::<Vec<_>>(), false)
            .map_err(|_| LedgerError::BadCertificate)?
            .to_public_key();
        let sig = decode_signature(&self.signature)?;
        let aggregate = SigCheck { key: sum.into(), sig: sig.into(), msg: replica_message(&self.transfer.certified_id()) };
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

/// What an account's entries held by one replica add up to.
///
/// Each debit counts once per nonce and each credit once per `(payer, nonce)`. Where two
/// certified transfers share a `(payer, nonce)` (a double spend: never while fewer than
/// `2q − n` of the payer's committee sign twice), both are kept as evidence and the summary
/// stays conservative whatever order it sees them in: the payer is debited the larger of the
/// two, and the payee is credited neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The genesis supply, for the genesis account; zero for every other.
    pub genesis: u64,
    /// Units credited.
    pub credits: u128,
    /// Units debited.
    pub debits: u128,
    /// The transfer id at each debited nonce (the first seen, where two contest it).
    pub debited: BTreeMap<u64, [u8; 32]>,
    /// The amount debited at each nonce (the larger, where two contest it).
    debit_amounts: BTreeMap<u64, u64>,
    /// Each credit counted, by its payer and nonce: the transfer's id and what it paid here.
    credited: HashMap<(Address, u64), ([u8; 32], u64)>,
    /// Payer nonces at which two certified transfers were seen here (never credited).
    pub contested: BTreeSet<(Address, u64)>,
    /// Entries counted.
    pub entries: u64,
}

impl Summary {
    /// A summary of no entries for an account that starts with `genesis`.
    pub fn new(genesis: u64) -> Summary {
        Summary { genesis, ..Summary::default() }
    }

    /// Adds an entry for this account, whatever its order among the others (rebuilding from
    /// disk). [`LedgerError::AlreadyApplied`] changes nothing; [`LedgerError::DoubleSpend`]
    /// means the entry contests another at its nonce, and is counted as the type's docs say.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        let t = &entry.certificate.transfer.transfer;
        let id = t.id();
        let total = t.total()?;
        if entry.is_debit() {
            let held = self.debited.get(&t.nonce).copied();
            match held {
                Some(h) if h == id => return Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
                Some(_) => {
                    let before = self.debit_amounts.get(&t.nonce).copied().unwrap_or(0);
                    if total > before {
                        self.debits += u128::from(total - before);
                        self.debit_amounts.insert(t.nonce, total);
                    }
                    self.contested.insert((entry.account, t.nonce));
                    self.entries += 1;
                    return Err(LedgerError::DoubleSpend(t.nonce));
                }
                None => {
                    self.debits += u128::from(total);
                    self.debited.insert(t.nonce, id);
                    self.debit_amounts.insert(t.nonce, total);
                }
            }
        } else {
            let pair = (t.from_address(), t.nonce);
            let amount = t.paid_to(&entry.account);
            if self.contested.contains(&pair) {
                self.entries += 1;
                return Err(LedgerError::DoubleSpend(t.nonce));
            }
            match self.credited.get(&pair).copied() {
                Some((h, _)) if h == id => return Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
                Some((_, earlier)) => {
                    // Neither is credited: the earlier one is taken back.
                    self.credits -= u128::from(earlier);
                    self.credited.remove(&pair);
                    self.contested.insert(pair);
                    self.entries += 1;
                    return Err(LedgerError::DoubleSpend(t.nonce));
                }
                None => {
                    self.credits += u128::from(amount);
                    self.credited.insert(pair, (id, amount));
                }
            }
        }
        self.entries += 1;
        Ok(())
    }

    /// Whether a replica holding this summary may admit `entry` (its certificate already
    /// checked) as a new entry: a debit only at the account's next nonce (or one that fills
    /// a gap) and only if the balance covers it; a credit only once per `(payer, nonce)`.
    /// [`LedgerError::DoubleSpend`] is evidence (the caller keeps both); [`LedgerError::Behind`]
    /// and [`LedgerError::InsufficientFunds`] may mean this replica missed entries.
    pub fn admits(&self, entry: &Entry) -> Result<(), LedgerError> {
        let t = &entry.certificate.transfer.transfer;
        let id = t.id();
        let total = t.total()?;
        if entry.is_debit() {
            match self.debited.get(&t.nonce) {
                Some(h) if *h == id => return Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
                Some(_) => return Err(LedgerError::DoubleSpend(t.nonce)),
                None if t.nonce > self.nonce() + 1 => return Err(LedgerError::Behind),
                None => {}
            }
            if self.balance() < i128::from(total) {
                return Err(LedgerError::InsufficientFunds { balance: self.balance(), needed: total });
            }
            return Ok(());
        }
        let pair = (t.from_address(), t.nonce);
        if self.contested.contains(&pair) {
            return Err(LedgerError::DoubleSpend(t.nonce));
        }
        match self.credited.get(&pair) {
            Some((h, _)) if *h == id => Err(LedgerError::AlreadyApplied(hex::encode(&id[..8]))),
            Some(_) => Err(LedgerError::DoubleSpend(t.nonce)),
            None => Ok(()),
        }
    }

    /// The transfer this summary counts at `(payer, nonce)`, if any: a debit's id for this
    /// account's own nonces, a credit's for another payer's.
    pub fn counted(&self, payer: &Address, nonce: u64, own: bool) -> Option<[u8; 32]> {
        match own {
            true => self.debited.get(&nonce).copied(),
            false => self.credited.get(&(*payer, nonce)).map(|(id, _)| *id),
        }
    }

    /// The balance: genesis and credits less debits. Negative only at a replica that holds a
    /// debit but missed the credits that paid for it.
    pub fn balance(&self) -> i128 {
        i128::from(self.genesis) + self.credits as i128 - self.debits as i128
    }

    /// The highest nonce debited.
    pub fn nonce(&self) -> u64 {
        self.debited.keys().next_back().copied().unwrap_or(0)
    }

    /// Whether a debit below the highest is missing here.
    pub fn has_gap(&self) -> bool {
        self.debited.len() as u64 != self.nonce()
    }

    /// Whether a replica holding this summary, and `promise` (the transfer it last signed
    /// for the account, if any), may sign `transfer` (already checked by
    /// [`SignedTransfer::verify`] to total `total`). The rules: the same transfer again may be
    /// signed again; another at a promised nonce never; only the next nonce; only with no
    /// debit missing; only with the balance to cover it.
    pub fn may_sign(&self, promise: Option<&SignedTransfer>, signed: &SignedTransfer, total: u64) -> Result<(), LedgerError> {
        let t = &signed.transfer;
        if let Some(id) = self.debited.get(&t.nonce) {
            return match *id == t.id() {
                true => Ok(()),
                false => Err(LedgerError::WrongNonce { expected: self.nonce() + 1, got: t.nonce }),
            };
        }
        if let Some(p) = promise {
            if p.transfer.nonce == t.nonce {
                return match p.transfer.id() == t.id() {
                    true => Ok(()),
                    false => Err(LedgerError::Conflict { nonce: t.nonce, promised: Box::new(p.clone()) }),
                };
            }
        }
        if self.has_gap() {
            return Err(LedgerError::Behind);
        }
        if let Some(p) = promise {
            if p.transfer.nonce > self.nonce() && t.nonce != p.transfer.nonce {
                // Signed at a nonce whose certificate has not arrived: the owner finishes that
                // one first.
                return Err(LedgerError::Conflict { nonce: p.transfer.nonce, promised: Box::new(p.clone()) });
            }
        }
        if t.nonce != self.nonce() + 1 {
            return Err(LedgerError::WrongNonce { expected: self.nonce() + 1, got: t.nonce });
        }
        if self.balance() < i128::from(total) {
            return Err(LedgerError::InsufficientFunds { balance: self.balance(), needed: total });
        }
        Ok(())
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

/// The memo of a storage payment: a hash of the shard keys it pays one vault for, sorted.
pub fn shards_memo(keys: &[RecordKey]) -> [u8; 32] {
    let mut keys = keys.to_vec();
    keys.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"kura-storage-payment-v1");
    h.update(&postcard::to_stdvec(&keys).unwrap_or_default());
    *h.finalize().as_bytes()
}

/// How long a vault's storage quote holds, in seconds.
pub const QUOTE_SECS: u64 = 600;

/// A vault's price per MiB stored, `base` when empty, rising with the square of how full it
/// is to ten times `base` when full.
pub fn price_per_mib(base: u64, used: u64, capacity: u64) -> u64 {
    let capacity = u128::from(capacity.max(1));
    let used = u128::from(used).min(capacity);
    let base = u128::from(base);
    (base + base * 9 * used * used / (capacity * capacity)).min(u128::from(u64::MAX)) as u64
}

/// A vault's signed price for storing shards, paid to its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The vault.
    pub vault: PeerId,
    /// Its libp2p public key (protobuf), whose hash is the peer id.
    #[serde(with = "serde_bytes")]
    pub peer_key: Vec<u8>,
    /// Its ledger account: where payment goes.
    pub account: Address,
    /// Units per MiB of shard stored.
    pub price_per_mib: u64,
    /// Unix time after which the quote no longer holds.
    pub expires: u64,
    /// The vault's signature of all of the above.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Quote {
    fn signed_bytes(vault: &PeerId, account: &Address, price_per_mib: u64, expires: u64) -> Vec<u8> {
        let mut b = b"kura-storage-quote-v1".to_vec();
        b.extend_from_slice(&vault.to_bytes());
        b.extend_from_slice(&account.0);
        b.extend_from_slice(&price_per_mib.to_be_bytes());
        b.extend_from_slice(&expires.to_be_bytes());
        b
    }

    /// A quote signed by the vault holding `keypair`.
    pub fn sign(keypair: &libp2p_identity::Keypair, account: Address, price_per_mib: u64, expires: u64) -> Quote {
        let vault = keypair.public().to_peer_id();
        let signature = keypair.sign(&Self::signed_bytes(&vault, &account, price_per_mib, expires)).unwrap_or_default();
        Quote { vault, peer_key: keypair.public().encode_protobuf(), account, price_per_mib, expires, signature }
    }

    /// Checks the vault's signature, and that the quote still holds at `now`.
    pub fn verify(&self, now: u64) -> Result<(), LedgerError> {
        let key = libp2p_identity::PublicKey::try_decode_protobuf(&self.peer_key)
            .map_err(|_| LedgerError::BadQuote("undecodable vault key".into()))?;
        if key.to_peer_id() != self.vault
            || !key.verify(&Self::signed_bytes(&self.vault, &self.account, self.price_per_mib, self.expires), &self.signature)
        {
            return Err(LedgerError::BadQuote("not signed by the vault it names".into()));
        }
        if now > self.expires {
            return Err(LedgerError::BadQuote(format!("expired {} s ago", now - self.expires)));
        }
        Ok(())
    }

    /// What storing `bytes` costs at this price: at least one unit, or nothing at a price of
    /// zero (a vault that stores for free).
    pub fn cost(&self, bytes: usize) -> u64 {
        if self.price_per_mib == 0 {
            return 0;
        }
        let c = (bytes as u128 * u128::from(self.price_per_mib)).div_ceil(1 << 20);
        c.clamp(1, u128::from(u64::MAX)) as u64
    }
}

/// Formats units as tokens (`1.5 KURA`).
pub fn format_amount(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let u = units.unsigned_abs();
    let whole = u / u128::from(UNITS_PER_TOKEN);
    let frac = u % u128::from(UNITS_PER_TOKEN);
    if frac == 0 {
        return format!("{sign}{whole} KURA");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{} KURA", frac.trim_end_matches('0'))
}

/// Parses a token amount (`1.5`, `0.000000001`, `2 KURA`) into units.
pub fn parse_amount(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("KURA").trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 || !(whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())) {
        return Err(format!("{text:?} is not an amount (say 1.5 for one and a half KURA)"));
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| format!("{text:?} is too large"))? };
    let frac: u64 = format!("{frac:0<9}").parse().map_err(|_| format!("{text:?} is not an amount"))?;
    whole.checked_mul(UNITS_PER_TOKEN).and_then(|w| w.checked_add(frac)).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Replica {
        key: WalletKey,
        binding: Binding,
    }

    fn replicas(n: usize) -> Vec<Replica> {
        (0..n)
            .map(|_| {
                let key = WalletKey::random();
                let binding = key.bind(&libp2p_identity::Keypair::generate_ed25519());
                Replica { key, binding }
            })
            .collect()
    }

    fn pay(to: Address, amount: u64) -> Output {
        Output { to, amount, memo: [0; 32] }
    }

    fn certify(signed: &SignedTransfer, by: &[Replica]) -> Certificate {
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
        assert_eq!(QUORUM, 6);
        assert_eq!(certify(&signed, &reps[..6]).verify(&mut cache), Ok(5));
        assert_eq!(certify(&signed, &reps[..8]).verify(&mut cache), Ok(5));
        assert_eq!(
            certify(&signed, &reps[..5]).verify(&mut cache),
            Err(LedgerError::TooFewSigners { got: 5, need: 6 })
        );
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
    fn a_replica_signs_one_transfer_per_nonce_and_only_what_the_balance_covers() {
        let reps = replicas(6);
        let owner = WalletKey::random();
        let (a, b) = (Address::random(), Address::random());
        let mut s = Summary::new(0);
        // Funded by a credit.
        let funder = WalletKey::random();
        let credit = certify(&funder.sign(1, vec![pay(owner.address(), 10)]), &reps);
        s.apply(&Entry { account: owner.address(), certificate: credit.clone() }).unwrap();
        assert_eq!(s.balance(), 10);
        assert!(matches!(s.apply(&Entry { account: owner.address(), certificate: credit }), Err(LedgerError::AlreadyApplied(_))));
        assert_eq!(s.balance(), 10, "a credit counts once");
        let s = {
            let mut s = Summary::new(0);
            s.credits = 10;
            s
        };
        let t1 = owner.sign(1, vec![pay(a, 7)]);
        let t1x = owner.sign(1, vec![pay(b, 7)]);
        assert_eq!(s.may_sign(None, &t1, 7), Ok(()));
        assert_eq!(s.may_sign(Some(&t1), &t1, 7), Ok(()), "the same transfer may be signed again");
        assert!(matches!(s.may_sign(Some(&t1), &t1x, 7), Err(LedgerError::Conflict { nonce: 1, .. })));
        assert_eq!(s.may_sign(None, &owner.sign(2, vec![pay(a, 1)]), 1), Err(LedgerError::WrongNonce { expected: 1, got: 2 }));
        assert_eq!(
            s.may_sign(None, &owner.sign(1, vec![pay(a, 11)]), 11),
            Err(LedgerError::InsufficientFunds { balance: 10, needed: 11 })
        );
        // Certified: the debit applies once; a conflicting certificate is a double spend.
        let mut s = s;
        let c1 = certify(&t1, &reps);
        s.apply(&Entry { account: owner.address(), certificate: c1.clone() }).unwrap();
        assert_eq!((s.balance(), s.nonce()), (3, 1));
        assert!(matches!(s.apply(&Entry { account: owner.address(), certificate: c1 }), Err(LedgerError::AlreadyApplied(_))));
        assert_eq!(
            s.apply(&Entry { account: owner.address(), certificate: certify(&t1x, &reps) }),
            Err(LedgerError::DoubleSpend(1))
        );
        assert_eq!(s.balance(), 3, "nothing changed");
        // A replica that holds nonce 3 but not 2 is behind and signs nothing.
        let mut gap = s.clone();
        gap.debited.insert(3, [9; 32]);
        assert_eq!(gap.may_sign(None, &owner.sign(4, vec![pay(a, 1)]), 1), Err(LedgerError::Behind));
        // Promised nonce 2, whose certificate has not come: nonce 2 again (another transfer)
        // and nonce 3 are both refused with the promised transfer.
        let t2 = owner.sign(2, vec![pay(a, 1)]);
        assert!(matches!(s.may_sign(Some(&t2), &owner.sign(2, vec![pay(b, 1)]), 1), Err(LedgerError::Conflict { nonce: 2, .. })));
        assert!(matches!(s.may_sign(Some(&t2), &owner.sign(3, vec![pay(b, 1)]), 1), Err(LedgerError::Conflict { nonce: 2, .. })));
    }

    #[test]
    fn a_replica_admits_debits_in_order_and_covered_and_credits_once_per_payer_nonce() {
        let reps = replicas(6);
        let (funder, owner, other) = (WalletKey::random(), WalletKey::random(), WalletKey::random());
        let entry = |account: Address, c: &Certificate| Entry { account, certificate: c.clone() };
        let credit = certify(&funder.sign(1, vec![pay(owner.address(), 10)]), &reps);
        let mut s = Summary::new(0);
        // A debit before the credit that pays for it is an overdraft here.
        let d1 = certify(&owner.sign(1, vec![pay(other.address(), 7)]), &reps);
        assert_eq!(s.admits(&entry(owner.address(), &d1)), Err(LedgerError::InsufficientFunds { balance: 0, needed: 7 }));
        s.apply(&entry(owner.address(), &credit)).unwrap();
        // A debit past the next nonce: this replica is behind.
        let d2 = certify(&owner.sign(2, vec![pay(other.address(), 1)]), &reps);
        assert_eq!(s.admits(&entry(owner.address(), &d2)), Err(LedgerError::Behind));
        s.admits(&entry(owner.address(), &d1)).unwrap();
        s.apply(&entry(owner.address(), &d1)).unwrap();
        assert_eq!(s.admits(&entry(owner.address(), &d1)), Err(LedgerError::AlreadyApplied(hex::encode(&d1.id()[..8]))));
        let d1x = certify(&owner.sign(1, vec![pay(other.address(), 9)]), &reps);
        assert_eq!(s.admits(&entry(owner.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        // Kept as evidence, the larger debit counts, in either order.
        let mut a = s.clone();
        assert_eq!(a.apply(&entry(owner.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        let mut b = Summary::new(0);
        for c in [&credit, &d1x, &d1] {
            let _ = b.apply(&entry(owner.address(), c));
        }
        assert_eq!((a.balance(), b.balance()), (1, 1));
        assert!(a.contested.contains(&(owner.address(), 1)));

        // The payee: credited once per (payer, nonce); two certificates there credit neither,
        // whichever came first.
        let mut p = Summary::new(0);
        p.apply(&entry(other.address(), &d1)).unwrap();
        assert_eq!(p.balance(), 7);
        assert_eq!(p.admits(&entry(other.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        assert_eq!(p.apply(&entry(other.address(), &d1x)), Err(LedgerError::DoubleSpend(1)));
        assert_eq!(p.balance(), 0, "neither is credited");
        let mut q = Summary::new(0);
        for c in [&d1x, &d1] {
            let _ = q.apply(&entry(other.address(), c));
        }
        assert_eq!(q.balance(), 0);
        assert_eq!(q.admits(&entry(other.address(), &d1)), Err(LedgerError::DoubleSpend(1)));
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

    #[test]
    fn prices_rise_with_fullness_and_quotes_are_the_vaults_own() {
        assert_eq!(price_per_mib(100, 0, 1000), 100);
        assert_eq!(price_per_mib(100, 500, 1000), 325);
        assert_eq!(price_per_mib(100, 1000, 1000), 1000);
        assert!(price_per_mib(100, 900, 1000) > price_per_mib(100, 800, 1000));
        let kp = libp2p_identity::Keypair::generate_ed25519();
        let q = Quote::sign(&kp, Address::random(), 1 << 20, 1000);
        q.verify(999).unwrap();
        assert!(matches!(q.verify(1001), Err(LedgerError::BadQuote(_))));
        assert_eq!(q.cost(1), 1);
        assert_eq!(q.cost(3), 3);
        let mut cheaper = q.clone();
        cheaper.price_per_mib = 1;
        assert!(matches!(cheaper.verify(999), Err(LedgerError::BadQuote(_))), "a client cannot lower the price");
        let mut other = Quote::sign(&libp2p_identity::Keypair::generate_ed25519(), q.account, 1, 1000);
        other.vault = q.vault;
        assert!(other.verify(999).is_err(), "nor sign a quote in a vault's name");
    }

    #[test]
    fn amounts_format_and_parse() {
        assert_eq!(parse_amount("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_amount("0.000000001 KURA"), Ok(1));
        assert_eq!(parse_amount("7"), Ok(7 * UNITS_PER_TOKEN));
        assert!(parse_amount("1.0000000001").is_err());
        assert!(parse_amount("-1").is_err());
        assert!(parse_amount("").is_err());
        assert!(parse_amount("99999999999999999999").is_err());
        assert_eq!(format_amount(1_500_000_000), "1.5 KURA");
        assert_eq!(format_amount(-3), "-0.000000003 KURA");
        assert_eq!(format_amount(2 * 1_000_000_000), "2 KURA");
    }
}
