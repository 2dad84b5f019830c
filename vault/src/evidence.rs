//! Evidence that signers broke the ledger's rules, kept on disk and counted in status.
//!
//! Two kinds can be proven from certificates alone: two certified transfers at one nonce of
//! one account (a vault that signed both signed twice, which an honest vault never does), and
//! a certificate whose aggregate signature holds and whose signers are the payer's committee
//! but whose owner never signed the transfer (every signer signed what no owner asked). The
//! vault keeps each such set of certificates in `evidence/` under its root (at most
//! [`MAX_KEPT`] files; past that it still counts and penalizes), and penalizes the signers it
//! proves guilty ([`culprits`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kura_node::ledger::Certificate;
use kura_node::{Address, PeerId};
use serde::{Deserialize, Serialize};

/// Most evidence files kept.
pub const MAX_KEPT: usize = 1024;

/// The evidence file format's version (the first byte of each file).
const FORMAT: u8 = 1;

/// What a piece of evidence proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Offence {
    /// Two certified transfers at one nonce of `account`.
    DoubleSpend {
        /// The paying account.
        account: Address,
        /// The nonce.
        nonce: u64,
    },
    /// A certificate whose owner's signature does not verify.
    Unowned,
}

/// One piece of evidence, as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exhibit {
    /// What it proves.
    pub offence: Offence,
    /// The certificates that prove it.
    pub certificates: Vec<Certificate>,
}

impl Exhibit {
    fn digest(&self) -> [u8; 32] {
        let mut ids: Vec<[u8; 32]> = self.certificates.iter().map(Certificate::id).collect();
        ids.sort();
        *blake3::hash(&postcard::to_stdvec(&(&self.offence, ids)).unwrap_or_default()).as_bytes()
    }
}

/// The signers an exhibit proves guilty: for a double spend, those that signed both
/// transfers; for an unowned certificate, all of them.
pub fn culprits(exhibit: &Exhibit) -> Vec<PeerId> {
    let signers: Vec<HashSet<PeerId>> = exhibit.certificates.iter().map(|c| c.signer_peers().into_iter().collect()).collect();
    let mut guilty: Vec<PeerId> = match exhibit.offence {
        Offence::DoubleSpend { .. } => match signers.split_first() {
            Some((first, rest)) => first.iter().filter(|p| rest.iter().all(|s| s.contains(p))).copied().collect(),
            None => Vec::new(),
        },
        Offence::Unowned => signers.into_iter().flatten().collect(),
    };
    guilty.sort_by_key(|p| p.to_bytes());
    guilty.dedup();
    guilty
}

/// The evidence a vault has found.
pub(crate) struct Evidence {
    dir: Option<PathBuf>,
    seen: Mutex<HashSet<[u8; 32]>>,
    /// The certificates in the evidence kept (their digests, [`certificate_digest`]).
    certificates: Mutex<HashSet<[u8; 32]>>,
    found: AtomicU64,
}

/// A certificate's digest: a hash of all of it.
pub fn certificate_digest(cert: &Certificate) -> [u8; 32] {
    *blake3::hash(&postcard::to_stdvec(cert).unwrap_or_default()).as_bytes()
}

impl Evidence {
    /// Evidence kept under `dir` (`None`: memory only).
    pub(crate) fn new(dir: Option<PathBuf>) -> Evidence {
        Evidence { dir, seen: Mutex::default(), certificates: Mutex::default(), found: AtomicU64::new(0) }
    }

    /// Whether `cert` is part of evidence this vault kept. Its signers were the payer's
    /// committee when the evidence was found; they are penalized now (out of this vault's
    /// view), so the certificate is known by this instead, wherever else it is stored.
    pub(crate) fn holds(&self, cert: &Certificate) -> bool {
        self.certificates.lock().unwrap_or_else(|e| e.into_inner()).contains(&certificate_digest(cert))
    }

    /// Pieces of evidence found since the vault started.
    pub(crate) fn found(&self) -> u64 {
        self.found.load(Ordering::Relaxed)
    }

    /// Records an exhibit once: counts it and writes it (if there is room). Returns whether
    /// it was new.
    pub(crate) async fn keep(&self, exhibit: &Exhibit) -> bool {
        let digest = exhibit.digest();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= MAX_KEPT * 4 {
                seen.clear();
            }
            if !seen.insert(digest) {
                return false;
            }
        }
        {
            let mut certificates = self.certificates.lock().unwrap_or_else(|e| e.into_inner());
            if certificates.len() >= MAX_KEPT * 8 {
                certificates.clear();
            }
            certificates.extend(exhibit.certificates.iter().map(certificate_digest));
        }
        self.found.fetch_add(1, Ordering::Relaxed);
        let Some(dir) = self.dir.clone() else { return true };
        let mut bytes = vec![FORMAT];
        bytes.extend(postcard::to_stdvec(exhibit).unwrap_or_default());
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            std::fs::create_dir_all(&dir)?;
            if std::fs::read_dir(&dir)?.count() >= MAX_KEPT {
                return Ok(false);
            }
            kura_node::durable::replace(&dir.join(format!("{}.evidence", hex::encode(digest))), &bytes, kura_node::durable::Access::Private)?;
            Ok(true)
        })
        .await;
        match written {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => tracing::warn!(max = MAX_KEPT, "evidence folder full: this piece is counted, not kept"),
            other => tracing::warn!(result = ?other, "keeping evidence failed"),
        }
        true
    }
}

/// Reads an evidence file.
pub fn read(bytes: &[u8]) -> Result<Exhibit, String> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("evidence format {v} is not {FORMAT}")),
        None => Err("an empty evidence file".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_node::ledger::{Output, WalletKey};

    fn certified(owner: &WalletKey, to: Address, signers: &[(WalletKey, kura_node::ledger::Binding)]) -> Certificate {
        let signed = owner.sign(1, vec![Output { to, amount: 5, memo: [0; 32] }]);
        let shares = signers.iter().map(|(k, b)| (b.clone(), k.sign_replica(&signed))).collect();
        Certificate::aggregate(signed, shares).unwrap()
    }

    #[tokio::test]
    async fn those_who_signed_twice_are_the_culprits_and_evidence_is_kept_once() {
        let vaults: Vec<(WalletKey, kura_node::ledger::Binding)> = (0..8)
            .map(|_| {
                let k = WalletKey::random();
                let b = k.bind(&kura_node::Keypair::generate_ed25519());
                (k, b)
            })
            .collect();
        let owner = WalletKey::random();
        let a = certified(&owner, Address::random(), &vaults[..6]);
        let b = certified(&owner, Address::random(), &vaults[2..8]);
        let exhibit = Exhibit { offence: Offence::DoubleSpend { account: owner.address(), nonce: 1 }, certificates: vec![a.clone(), b] };
        let mut want: Vec<PeerId> = vaults[2..6].iter().map(|(_, b)| b.peer).collect();
        want.sort_by_key(|p| p.to_bytes());
        assert_eq!(culprits(&exhibit), want);
        assert_eq!(culprits(&Exhibit { offence: Offence::Unowned, certificates: vec![a] }).len(), 6);

        let dir = tempfile::tempdir().unwrap();
        let evidence = Evidence::new(Some(dir.path().join("evidence")));
        assert!(evidence.keep(&exhibit).await);
        assert!(!evidence.keep(&exhibit).await, "the same exhibit twice");
        assert_eq!(evidence.found(), 1);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("evidence")).unwrap().collect();
        assert_eq!(files.len(), 1);
        let back = read(&std::fs::read(files[0].as_ref().unwrap().path()).unwrap()).unwrap();
        assert_eq!(back, exhibit);
        assert!(read(&[9, 1, 2]).is_err());
    }
}
