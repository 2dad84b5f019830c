//! The user's own key, which seals private data maps.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::ClientError;

/// Environment variable naming the user's Kura home (keys live there).
pub const HOME_ENV: &str = "KURA_HOME";

/// The file holding the user's key, inside the Kura home.
pub const KEY_FILE: &str = "user.key";

/// A 256-bit secret that seals this user's private data maps.
#[derive(Clone)]
pub struct UserKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKey(..)")
    }
}

impl UserKey {
    /// A fresh random key (not stored).
    pub fn generate() -> Self {
        UserKey(rand::random())
    }

    /// The Ed25519 key that signs this user's pointers, derived from the user key (so one
    /// backed-up file keeps both).
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&blake3::derive_key("kura 2026-11 pointer signing key v1", &self.0))
    }

    /// The Kura home: `$KURA_HOME`, else the per-user data directory.
    pub fn home() -> PathBuf {
        std::env::var_os(HOME_ENV).map(PathBuf::from).unwrap_or_else(crate::peers::data_dir)
    }

    /// Loads the key from `home`, creating it on first use (mode 0600, written atomically).
    pub fn load_or_create(home: &Path) -> Result<Self, ClientError> {
        let path = home.join(KEY_FILE);
        let key_err = |reason: String| ClientError::Key { path: path.clone(), reason };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let arr: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| key_err(format!("{} bytes, expected 32", bytes.len())))?;
                Ok(UserKey(arr))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(home).map_err(|e| key_err(e.to_string()))?;
                let key = UserKey::generate();
                let tmp = home.join(format!("{KEY_FILE}.tmp"));
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp).map_err(|e| key_err(e.to_string()))?;
                f.write_all(&key.0).and_then(|()| f.sync_all()).map_err(|e| key_err(e.to_string()))?;
                std::fs::rename(&tmp, &path).map_err(|e| key_err(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(key_err(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = UserKey::load_or_create(dir.path()).unwrap();
        let b = UserKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(UserKey::load_or_create(dir.path()), Err(ClientError::Key { .. })));
    }
}
