//! BLS signature checks, one at a time or in batches, and the bindings of replicas' BLS keys
//! to their peer ids.

use std::collections::HashMap;
use std::fmt;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::*;

/// The ciphersuite `bls-signatures` signs under (the IETF draft's basic scheme, signatures
/// in G2), so what one crate signs the other verifies.
const CSUITE: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_";

/// One BLS signature to verify: a key (or a sum of keys) and a signature, both decoded and
/// checked to be in their groups, and the message.
#[derive(Clone)]
pub struct SigCheck {
    pub(super) key: blst::blst_p1_affine,
    pub(super) sig: blst::blst_p2_affine,
    pub(super) msg: Vec<u8>,
}

impl fmt::Debug for SigCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigCheck({} message bytes)", self.msg.len())
    }
}

impl SigCheck {
    pub(crate) fn new(key: &[u8], msg: Vec<u8>, sig: &[u8]) -> Result<SigCheck, LedgerError> {
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

pub(super) fn settle(checks: &[SigCheck], ok: &mut [bool]) {
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

pub(super) fn all_hold(checks: &[SigCheck]) -> bool {
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

pub(super) fn decode_key(bytes: &[u8]) -> Result<blst::min_pk::PublicKey, LedgerError> {
    if bytes.len() != PUBLIC_KEY_LEN {
        return Err(LedgerError::Malformed("public key".into()));
    }
    blst::min_pk::PublicKey::key_validate(bytes).map_err(|_| LedgerError::Malformed("public key".into()))
}

pub(super) fn decode_signature(bytes: &[u8]) -> Result<blst::min_pk::Signature, LedgerError> {
    if bytes.len() != SIGNATURE_LEN {
        return Err(LedgerError::Malformed("signature".into()));
    }
    blst::min_pk::Signature::sig_validate(bytes, true).map_err(|_| LedgerError::Malformed("signature".into()))
}

/// The aggregate of BLS signatures (each decoded; the sum is checked when verified).
pub fn aggregate_signatures(sigs: &[Vec<u8>]) -> Result<Vec<u8>, LedgerError> {
    let decoded = sigs
        .iter()
        .map(|s| match s.len() {
            SIGNATURE_LEN => blst::min_pk::Signature::uncompress(s).map_err(|_| LedgerError::Malformed("signature".into())),
            _ => Err(LedgerError::Malformed("signature".into())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(blst::min_pk::AggregateSignature::aggregate(&decoded.iter().collect::<Vec<_>>(), false)
        .map_err(|_| LedgerError::BadCertificate)?
        .to_signature()
        .compress()
        .to_vec())
}

/// The check that `signature` is the aggregate of `signers`' signatures of `msg`: their
/// bindings verified (each once, remembered in `cache`), their keys summed.
pub fn aggregate_check(signers: &[Binding], msg: Vec<u8>, signature: &[u8], cache: &mut BindingCache) -> Result<SigCheck, LedgerError> {
    let mut keys = Vec::with_capacity(signers.len());
    for b in signers {
        cache.check(b.digest(), || b.verify())?;
        keys.push(cache.key(b)?);
    }
    // Summing is safe because each key comes with a proof of possession.
    let sum = blst::min_pk::AggregatePublicKey::aggregate(&keys.iter().collect::<Vec<_>>(), false)
        .map_err(|_| LedgerError::BadCertificate)?
        .to_public_key();
    let sig = decode_signature(signature)?;
    Ok(SigCheck { key: sum.into(), sig: sig.into(), msg })
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

    pub(super) fn digest(&self) -> [u8; 32] {
        *blake3::hash(&postcard::to_stdvec(self).unwrap_or_default()).as_bytes()
    }
}

/// Bindings and certificates already verified, so each costs its pairings once, and the
/// bound keys decoded (bounded: when full it starts again).
#[derive(Debug, Default, Clone)]
pub struct BindingCache {
    pub(super) verified: HashSet<[u8; 32]>,
    keys: HashMap<Vec<u8>, blst::min_pk::PublicKey>,
}

impl BindingCache {
    /// Most entries remembered.
    pub const CAPACITY: usize = 1 << 16;

    pub(super) fn check(&mut self, digest: [u8; 32], verify: impl FnOnce() -> Result<(), LedgerError>) -> Result<(), LedgerError> {
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
    pub(super) fn key(&mut self, binding: &Binding) -> Result<blst::min_pk::PublicKey, LedgerError> {
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