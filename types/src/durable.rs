//! The one way Kura writes a file that must survive a crash: whole or not at all, and still
//! there after power is lost.
//!
//! [`replace`] writes a temporary file beside the target (a name no other writer picks),
//! fsyncs it, renames it over the target and fsyncs the folder, so the rename itself is on
//! disk. [`create_once`] publishes a file only if none exists (a secret key made on first
//! run): two first runs at once agree on one. Secrets are written [`Access::Private`] (0600)
//! from the first byte, never widened and narrowed after.

use std::fs;
use std::io::Write;
use std::path::Path;

/// Who may read a file written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The owner only (0600): keys, wallets, mailboxes, promises.
    Private,
    /// Anyone the folder lets in (0644): state other tools read.
    Shared,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Shared => 0o644,
        }
    }
}

/// A fresh temporary name beside `path`, dotted so listings skip it.
fn temporary(dir: &Path, path: &Path) -> std::path::PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()))
}

/// Writes `bytes` to a new file at `tmp` with `access`, fsynced.
fn write_new(tmp: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, access.mode());
    let mut f = opts.open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Fsyncs the folder `dir`: a rename or link in it is durable only once its entry is.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The folder `path` is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` durably: temporary file, fsync, rename, folder fsync. The
/// folder is made if missing. A failed write leaves the old file and no temporary behind.
pub fn replace(path: &Path, bytes: &[u8], access: Access) -> std::io::Result<()> {
    let dir = parent(path);
    fs::create_dir_all(dir)?;
    let tmp = temporary(dir, path);
    let written = write_new(&tmp, bytes, access).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Reads `dir/name`, or, if it does not exist, publishes `make()`'s bytes there durably and
/// returns them. Two callers racing on a first run agree: the loser reads the bytes the
/// winner published.
pub fn create_once(dir: &Path, name: &str, access: Access, make: impl FnOnce() -> Vec<u8>) -> std::io::Result<Vec<u8>> {
    let path = dir.join(name);
    match fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    fs::create_dir_all(dir)?;
    let bytes = make();
    let tmp = temporary(dir, &path);
    // A hard link, unlike a rename, fails if the name exists: the first to publish wins.
    let published = write_new(&tmp, &bytes, access).and_then(|()| fs::hard_link(&tmp, &path));
    let _ = fs::remove_file(&tmp);
    match published {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => fs::read(&path),
        Err(e) => Err(e),
    }
}

/// The first bytes of a key file of format 1 and later.
pub const KEY_MAGIC: [u8; 4] = *b"KKEY";

/// The format of the key files this build writes.
pub const KEY_FORMAT: u8 = 1;

/// A key file's bytes for `key`: [`KEY_MAGIC`], [`KEY_FORMAT`], then the key.
pub fn encode_key(key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(key.len() + 5);
    bytes.extend_from_slice(&KEY_MAGIC);
    bytes.push(KEY_FORMAT);
    bytes.extend_from_slice(key);
    bytes
}

/// The key a key file holds: format 1 (see [`encode_key`]), or format 0, the bare key earlier
/// builds wrote (no key of ours starts with the magic: a 32-byte seed does so once in 2^32,
/// and then reads as a key of the wrong length, an error, never another key).
pub fn decode_key(bytes: &[u8]) -> Result<Vec<u8>, String> {
    match bytes.strip_prefix(&KEY_MAGIC[..]) {
        Some([KEY_FORMAT, key @ ..]) => Ok(key.to_vec()),
        Some([format, ..]) => Err(format!("key file format {format} (this build reads {KEY_FORMAT} and the bare keys before it)")),
        Some([]) => Err("a key file with a header and no key".into()),
        None => Ok(bytes.to_vec()),
    }
}

/// Reads the key file `dir/name`, or creates it once ([`create_once`], owner-only) holding
/// `make()`'s key; returns the key, whichever format the file has.
pub fn key_once(dir: &Path, name: &str, make: impl FnOnce() -> Vec<u8>) -> std::io::Result<Vec<u8>> {
    let bytes = create_once(dir, name, Access::Private, || encode_key(&make()))?;
    decode_key(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", dir.join(name).display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replace_writes_whole_with_its_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("key");
        replace(&path, b"one", Access::Private).unwrap();
        replace(&path, b"two", Access::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        let shared = dir.path().join("state.json");
        replace(&shared, b"{}", Access::Shared).unwrap();
        assert_eq!(mode(&shared) & 0o600, 0o600);
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("key")]);
    }

    #[test]
    fn a_failed_replace_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        replace(&path, b"old", Access::Shared).unwrap();
        // A folder where the file should go: the rename fails.
        let blocked = dir.path().join("d");
        fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(replace(&blocked, b"new", Access::Shared).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary left behind");
    }

    #[test]
    fn create_once_keeps_the_first_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let first = create_once(dir.path(), "id", Access::Private, || b"first".to_vec()).unwrap();
        let second = create_once(dir.path(), "id", Access::Private, || b"second".to_vec()).unwrap();
        assert_eq!((first.as_slice(), second.as_slice()), (&b"first"[..], &b"first"[..]));
        assert_eq!(mode(&dir.path().join("id")), 0o600);
    }

    #[test]
    fn key_files_carry_a_format_and_bare_keys_of_earlier_builds_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_once(dir.path(), "k", || vec![7; 32]).unwrap();
        assert_eq!(key, vec![7; 32]);
        let on_disk = fs::read(dir.path().join("k")).unwrap();
        assert_eq!(&on_disk[..5], b"KKEY\x01");
        assert_eq!(mode(&dir.path().join("k")), 0o600);
        assert_eq!(key_once(dir.path(), "k", || vec![8; 32]).unwrap(), vec![7; 32], "made once");
        // Format 0: the bare key.
        fs::write(dir.path().join("old"), [9u8; 32]).unwrap();
        assert_eq!(key_once(dir.path(), "old", || unreachable!()).unwrap(), vec![9; 32]);
        // A format this build does not know is an error, not a key.
        assert!(decode_key(b"KKEY\x02abc").unwrap_err().contains("format 2"));
        assert!(decode_key(b"KKEY").is_err());
    }
}
