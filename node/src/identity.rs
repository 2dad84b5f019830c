//! A node's persistent identity key.

use std::fs;
use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::NodeError;

/// File name of the identity key inside a vault's root directory.
pub const KEY_FILE: &str = "identity.key";

/// Loads the Ed25519 identity stored in `dir`, or creates and stores a new one.
///
/// The key is written to a temporary file, fsynced and renamed into place, so a crash never
/// leaves a half-written key that would silently change the node's identity.
pub fn load_or_create(dir: &Path) -> Result<Keypair, NodeError> {
    let path = dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| NodeError::Identity {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| NodeError::Identity {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(|e| NodeError::io(&tmp, e))?;
            f.write_all(&bytes).map_err(|e| NodeError::io(&tmp, e))?;
            f.sync_all().map_err(|e| NodeError::io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| NodeError::io(&path, e))?;
            Ok(key)
        }
        Err(e) => Err(NodeError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn corrupt_identity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(NodeError::Identity { .. })));
    }
}
