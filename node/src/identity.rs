//! A node's persistent identity key, and the create-once file write that keys share.

use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::NodeError;

/// File name of the identity key inside a vault's root directory.
pub const KEY_FILE: &str = "identity.key";

/// Reads the key file `dir/name`, or publishes `make()`'s key there once (owner-only,
/// durably, with its format: see [`kura_types::durable::key_once`]) and returns the key.
pub fn read_or_create_once(dir: &Path, name: &str, make: impl FnOnce() -> Vec<u8>) -> std::io::Result<Vec<u8>> {
    kura_types::durable::key_once(dir, name, make)
}

/// Loads the Ed25519 identity stored in `dir`, or creates and stores a new one (see
/// [`read_or_create_once`]: a crash never leaves a half-written key that would silently change
/// the node's identity, and two vaults started at once on one folder share one identity).
pub fn load_or_create(dir: &Path) -> Result<Keypair, NodeError> {
    load_or_create_with_work(dir, 0)
}

/// [`load_or_create`] for a vault whose id must carry `difficulty` bits of work (see
/// [`crate::puzzle`]): a new identity is ground until it does; a stored one that does not is
/// refused with a clear error, never replaced.
pub fn load_or_create_with_work(dir: &Path, difficulty: u8) -> Result<Keypair, NodeError> {
    let path = dir.join(KEY_FILE);
    let identity_err = |reason: String| NodeError::Identity { path: path.clone(), reason };
    let mut encode_err = None;
    let bytes = read_or_create_once(dir, KEY_FILE, || {
        crate::puzzle::generate(difficulty).to_protobuf_encoding().unwrap_or_else(|e| {
            encode_err = Some(e.to_string());
            Vec::new()
        })
    })
    .map_err(|e| NodeError::io(&path, e))?;
    if let Some(reason) = encode_err {
        return Err(identity_err(reason));
    }
    let key = Keypair::from_protobuf_encoding(&bytes).map_err(|e| identity_err(e.to_string()))?;
    let id = key.public().to_peer_id();
    if !crate::puzzle::meets(&id, difficulty) {
        return Err(identity_err(format!(
            "{id} carries {} bits of work, the network asks {difficulty}; move the key aside to make a new identity",
            crate::puzzle::work(&id)
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn identity_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn a_vault_identity_carries_its_work_and_an_old_one_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_with_work(dir.path(), 6).unwrap();
        assert!(crate::puzzle::meets(&key.public().to_peer_id(), 6));
        let weak = loop {
            let k = Keypair::generate_ed25519();
            if crate::puzzle::work(&k.public().to_peer_id()) < 6 {
                break k;
            }
        };
        let old = tempfile::tempdir().unwrap();
        fs::write(old.path().join(KEY_FILE), weak.to_protobuf_encoding().unwrap()).unwrap();
        assert!(matches!(load_or_create_with_work(old.path(), 6), Err(NodeError::Identity { .. })));
        assert_eq!(fs::read(old.path().join(KEY_FILE)).unwrap(), weak.to_protobuf_encoding().unwrap(), "kept");
    }

    /// Key files of every format, kept in `tests/fixtures` (format 0: the bare key of builds
    /// before formats; format 1: with its header), load as the same key, and are left as they
    /// are. `KURA_WRITE_FIXTURES=1` writes them again.
    #[test]
    fn key_files_of_every_format_load_as_the_same_key() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let identity = Keypair::ed25519_from_bytes([3u8; 32]).unwrap();
        let bare = identity.to_protobuf_encoding().unwrap();
        let seed = [5u8; 32];
        let files = [
            ("identity-format0.key", bare.clone()),
            ("identity-format1.key", kura_types::durable::encode_key(&bare)),
            ("seed-format0.key", seed.to_vec()),
            ("seed-format1.key", kura_types::durable::encode_key(&seed)),
        ];
        if std::env::var_os("KURA_WRITE_FIXTURES").is_some() {
            for (name, bytes) in &files {
                fs::write(fixtures.join(name), bytes).unwrap();
            }
        }
        for (name, bytes) in &files {
            let on_disk = fs::read(fixtures.join(name)).unwrap();
            assert_eq!(&on_disk, bytes, "{name} is what this build writes for its format");
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("key"), &on_disk).unwrap();
            let key = read_or_create_once(dir.path(), "key", || unreachable!("the file exists")).unwrap();
            let want = if name.starts_with("identity") { bare.clone() } else { seed.to_vec() };
            assert_eq!(key, want, "{name}");
            assert_eq!(fs::read(dir.path().join("key")).unwrap(), on_disk, "{name} is left as it is");
        }
        let dir = tempfile::tempdir().unwrap();
        fs::copy(fixtures.join("identity-format0.key"), dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap().public().to_peer_id(), identity.public().to_peer_id());
        let fresh = tempfile::tempdir().unwrap();
        load_or_create(fresh.path()).unwrap();
        assert!(fs::read(fresh.path().join(KEY_FILE)).unwrap().starts_with(b"KKEY\x01"), "a new key file has its format");
    }

    #[test]
    fn corrupt_identity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(NodeError::Identity { .. })));
    }

    #[test]
    fn first_runs_at_once_end_with_one_identity() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Barrier::new(8);
            let ids: Vec<_> = std::thread::scope(|s| {
                let runs: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            load_or_create(dir.path()).unwrap().public().to_peer_id()
                        })
                    })
                    .collect();
                runs.into_iter().map(|r| r.join().unwrap()).collect()
            });
            assert!(ids.iter().all(|id| *id == ids[0]), "every run uses the one key: {ids:?}");
            assert_eq!(load_or_create(dir.path()).unwrap().public().to_peer_id(), ids[0]);
            let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, vec![std::ffi::OsString::from(KEY_FILE)], "no temporary file is left");
        }
    }
}
