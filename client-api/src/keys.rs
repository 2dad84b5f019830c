//! The user's own key, which seals private data maps.

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

    /// The key with these bytes (an attachment's key, say).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        UserKey(bytes)
    }

    /// The key's bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The Ed25519 key that signs this user's pointers, derived from the user key (so one
    /// backed-up file keeps both).
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&blake3::derive_key("kura 2026-11 pointer signing key v1", &self.0))
    }

    /// The secret that makes this user's private content encrypt differently from everyone
    /// else's (Tahoe-LAFS's convergence secret), derived from the user key.
    pub fn convergence(&self) -> Convergence {
        Convergence(blake3::derive_key("kura 2026-11 convergence secret v1", &self.0))
    }

    /// The Kura home: `$KURA_HOME`, else the per-user data directory.
    pub fn home() -> PathBuf {
        std::env::var_os(HOME_ENV).map(PathBuf::from).unwrap_or_else(crate::peers::data_dir)
    }

    /// Loads the key from `home`, creating it on first use (mode 0600, exclusive create,
    /// fsynced; two first runs at once end with one key both use).
    pub fn load_or_create(home: &Path) -> Result<Self, ClientError> {
        let path = home.join(KEY_FILE);
        let key_err = |reason: String| ClientError::Key { path: path.clone(), reason };
        let bytes = kura_node::identity::read_or_create_once(home, KEY_FILE, || UserKey::generate().0.to_vec())
            .map_err(|e| key_err(e.to_string()))?;
        let arr: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| key_err(format!("{} bytes, expected 32", bytes.len())))?;
        Ok(UserKey(arr))
    }
}

/// A per-user keystream laid over private content before self-encryption.
///
/// Self-encryption is convergent: the same bytes always become the same chunks, so anyone who
/// guesses a file could compute its chunk addresses and ask whether they are stored. Private
/// content is first XORed with a keystream only its owner can compute (ChaCha20 under a key
/// derived from the user key; the content offset picks the nonce and block), so its chunks
/// differ from every other user's: nobody else can confirm or deduplicate it. The same user
/// storing the same file again still yields the same chunks. The keystream hides nothing by
/// itself (the self-encryption over it does); it only takes the content out of the
/// network-wide convergence domain.
#[derive(Clone)]
pub struct Convergence([u8; 32]);

impl std::fmt::Debug for Convergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Convergence(..)")
    }
}

/// Bytes of content under one nonce: 64 GiB, well inside ChaCha20's 256 GiB per nonce.
const SEGMENT: u64 = 1 << 36;

impl Convergence {
    /// XORs the keystream at content offset `offset` into `buf` (applying twice undoes it).
    pub fn apply(&self, offset: u64, buf: &mut [u8]) {
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let (segment, within) = (at / SEGMENT, at % SEGMENT);
            let n = usize::try_from(SEGMENT - within).unwrap_or(usize::MAX).min(buf.len() - done);
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&segment.to_be_bytes());
            let mut cipher = chacha20::ChaCha20::new((&self.0).into(), (&nonce).into());
            cipher.seek(within);
            cipher.apply_keystream(&mut buf[done..done + n]);
            done += n;
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

    #[test]
    fn the_convergence_keystream_is_per_user_seekable_and_undoes_itself() {
        let (a, b) = (UserKey::generate().convergence(), UserKey::generate().convergence());
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut whole = data.clone();
        a.apply(0, &mut whole);
        let mut parts = data.clone();
        a.apply(0, &mut parts[..3000]);
        a.apply(3000, &mut parts[3000..]);
        assert_eq!(whole, parts, "applying in pieces at their offsets is applying once");
        let mut other = data.clone();
        b.apply(0, &mut other);
        assert_ne!(whole, other, "another user's keystream differs");
        a.apply(0, &mut whole);
        assert_eq!(whole, data);
        // Across a nonce segment's end, pieces still agree with the whole.
        let edge = SEGMENT - 100;
        let mut whole = vec![0u8; 300];
        a.apply(edge, &mut whole);
        let mut parts = vec![0u8; 300];
        a.apply(edge, &mut parts[..100]);
        a.apply(SEGMENT, &mut parts[100..]);
        assert_eq!(whole, parts);
    }

    #[test]
    fn first_runs_at_once_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Barrier::new(6);
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        UserKey::load_or_create(dir.path()).unwrap().0
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]));
        assert_eq!(UserKey::load_or_create(dir.path()).unwrap().0, keys[0]);
    }
}
