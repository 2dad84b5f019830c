//! The vault's own age, and learning the ages of the vaults around it (rules in
//! `kura_types::age`, the registry in `kura_node::elders`).
//!
//! A vault's age proof is kept in [`AGE_FILE`] in its root: a local testnet writes it for the
//! vaults it starts with (the network's genesis makes them its first elders); a vault without
//! one is a newcomer. A proof that names another peer (the identity key was replaced) is not
//! the vault's: it runs as a newcomer and says so. The worker asks the vaults in the routing
//! table for their proofs as they appear, so that the ledger finds the ages it needs already
//! known.
//!
//! Owns: nothing but the worker's counters. Talks to: peers (`Request::Age`).

use std::path::Path;
use std::time::Duration;

use kura_node::age::AgeProof;
use kura_node::{NodeError, PeerId};
use tracing::warn;

use crate::context::Ctx;
use crate::error::VaultError;

/// The file in a vault's root holding its age proof.
pub const AGE_FILE: &str = "age.proof";

const MAGIC: &[u8] = b"KAGE\x01";

/// How often the worker looks for vaults whose age it does not know.
const LEARN_EVERY: Duration = Duration::from_secs(3);

/// The bytes of an age proof file.
pub fn encode(proof: &AgeProof) -> Vec<u8> {
    [MAGIC, &postcard::to_stdvec(proof).unwrap_or_default()].concat()
}

/// Reads `root`'s age proof, if it has one for `me`. A file that does not decode is an
/// error (never silently dropped: it may be the only copy of an age).
pub fn load(root: &Path, me: &PeerId) -> Result<Option<AgeProof>, VaultError> {
    let path = root.join(AGE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(VaultError::Io { path, source }),
    };
    let proof: AgeProof = bytes
        .strip_prefix(MAGIC)
        .and_then(|b| postcard::from_bytes(b).ok())
        .ok_or_else(|| VaultError::Config(format!("{} is not an age proof; move it aside to run as a newcomer", path.display())))?;
    if proof.peer != *me {
        warn!(proof = %proof.peer, me = %me, "the age proof names another peer: running as a newcomer");
        return Ok(None);
    }
    Ok(Some(proof))
}

/// Learns the ages of the vaults in the routing table.
pub(crate) struct AgeWorker {
    ctx: Ctx,
}

impl AgeWorker {
    pub(crate) fn new(ctx: Ctx) -> AgeWorker {
        AgeWorker { ctx }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for AgeWorker {
    fn name(&self) -> &'static str {
        "age"
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let (known, elders) = self.ctx.elders().counts();
        vec![
            ("age".into(), self.ctx.age().map_or(0, |p| u64::from(p.age))),
            ("known".into(), known as u64),
            ("elders".into(), elders as u64),
        ]
    }

    async fn work(&mut self) -> Result<crate::worker::WorkState, NodeError> {
        let table = self.ctx.node().routing_table().await?;
        self.ctx.elders().learn(self.ctx.node(), &table).await;
        Ok(crate::worker::WorkState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(LEARN_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_node::ledger::WalletKey;

    #[test]
    fn a_proof_file_loads_for_its_peer_only_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let me = PeerId::random();
        assert_eq!(load(dir.path(), &me).unwrap(), None, "a newcomer");
        let proof = AgeProof::genesis(&WalletKey::random(), me, kura_node::age::ELDER_AGE);
        std::fs::write(dir.path().join(AGE_FILE), encode(&proof)).unwrap();
        assert_eq!(load(dir.path(), &me).unwrap(), Some(proof));
        assert_eq!(load(dir.path(), &PeerId::random()).unwrap(), None, "another peer's proof");
        std::fs::write(dir.path().join(AGE_FILE), b"KAGE\x01garbage").unwrap();
        assert!(load(dir.path(), &me).is_err());
        assert!(dir.path().join(AGE_FILE).exists(), "kept");
    }
}
