//! The one ticket an elder signs for each vault and age epoch, kept on disk.
//!
//! A vault that asked twice in one epoch with different tickets would get two signatures, so
//! two churn events, and could choose where it goes among them. An elder that restarted
//! mid-epoch and forgot what it signed would sign a second one; so each promise is appended
//! to the epoch's file, and synced, before the signature leaves. Files of epochs before the
//! last are deleted (a ticket older than that is refused anyway), so what is kept is bounded
//! by the vaults an elder signs for in two epochs (and [`MAX_PROMISES`] in all).
//!
//! Record: `[peer id length: u8][peer id bytes][ticket hash: 32 bytes]`. A record cut short
//! by a crash is ignored on load: its signature never left.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kura_node::PeerId;

use crate::context::lock;
use crate::error::VaultError;

/// The folder in a vault's root holding its promises, a file per epoch.
pub const PROMISES_DIR: &str = "tickets";

/// Most promises kept (this epoch's and the last's).
pub const MAX_PROMISES: usize = 1 << 16;

/// Why a ticket was not promised.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Another ticket of this vault was signed this epoch.
    Another,
    /// [`MAX_PROMISES`] are kept already.
    Full,
    /// The promise could not be written.
    Io(String),
}

/// The promises of one elder.
pub(crate) struct Promises {
    dir: PathBuf,
    signed: Mutex<HashMap<(PeerId, u64), [u8; 32]>>,
}

impl Promises {
    /// Loads the promises under `root` of epochs `current - 1` and later, deleting older ones.
    pub(crate) fn open(root: &Path, current: Option<u64>) -> Result<Promises, VaultError> {
        let dir = root.join(PROMISES_DIR);
        let io = |path: &Path, source| VaultError::Io { path: path.to_path_buf(), source };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut signed = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let path = entry.map_err(|e| io(&dir, e))?.path();
            let Some(epoch) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok()) else { continue };
            if current.is_some_and(|c| epoch + 1 < c) {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            for (peer, hash) in decode(&bytes) {
                if signed.len() < MAX_PROMISES {
                    signed.insert((peer, epoch), hash);
                }
            }
        }
        Ok(Promises { dir, signed: Mutex::new(signed) })
    }

    /// Promises `hash` as `peer`'s one ticket of `epoch` (`current` is this epoch), kept on
    /// disk before it returns. The same ticket again is promised already.
    pub(crate) async fn promise(&self, peer: PeerId, epoch: u64, current: u64, hash: [u8; 32]) -> Result<(), Refused> {
        {
            let mut signed = lock(&self.signed);
            if signed.len() >= MAX_PROMISES {
                // Only this epoch's and the last's can be asked for again.
                signed.retain(|(_, e), _| *e + 1 >= current);
                if signed.len() >= MAX_PROMISES {
                    return Err(Refused::Full);
                }
            }
            match signed.get(&(peer, epoch)) {
                Some(h) if *h == hash => return Ok(()),
                Some(_) => return Err(Refused::Another),
                None => {
                    signed.insert((peer, epoch), hash);
                }
            }
        }
        let path = self.dir.join(epoch.to_string());
        let record = encode(&peer, &hash);
        let written = tokio::task::spawn_blocking(move || append(&path, &record)).await;
        let error = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // Not kept: not promised either (the signature does not leave).
        lock(&self.signed).remove(&(peer, epoch));
        Err(Refused::Io(error))
    }
}

fn encode(peer: &PeerId, hash: &[u8; 32]) -> Vec<u8> {
    let id = peer.to_bytes();
    let mut record = Vec::with_capacity(1 + id.len() + 32);
    record.push(id.len() as u8);
    record.extend_from_slice(&id);
    record.extend_from_slice(hash);
    record
}

fn decode(mut bytes: &[u8]) -> Vec<(PeerId, [u8; 32])> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let len = usize::from(len);
        if rest.len() < len + 32 {
            break;
        }
        let (id, rest) = rest.split_at(len);
        let (hash, rest) = rest.split_at(32);
        if let (Ok(peer), Ok(hash)) = (PeerId::from_bytes(id), <[u8; 32]>::try_from(hash)) {
            out.push((peer, hash));
        }
        bytes = rest;
    }
    out
}

fn append(path: &Path, record: &[u8]) -> std::io::Result<()> {
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(record)?;
    file.sync_data()?;
    if new {
        // The file's name must survive a crash as well as its bytes.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_promise_survives_a_restart_and_old_epochs_go() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (PeerId::random(), PeerId::random());
        let promises = Promises::open(root.path(), Some(10)).unwrap();
        promises.promise(a, 10, 10, [1; 32]).await.unwrap();
        promises.promise(a, 10, 10, [1; 32]).await.unwrap();
        assert_eq!(promises.promise(a, 10, 10, [2; 32]).await, Err(Refused::Another));
        promises.promise(b, 9, 10, [3; 32]).await.unwrap();
        promises.promise(b, 7, 10, [4; 32]).await.unwrap();
        drop(promises);
        // A crash mid-append leaves a record cut short: ignored.
        let mut file = std::fs::OpenOptions::new().append(true).open(root.path().join(PROMISES_DIR).join("10")).unwrap();
        file.write_all(&[38, 0, 1, 2]).unwrap();
        drop(file);
        let again = Promises::open(root.path(), Some(10)).unwrap();
        assert_eq!(again.promise(a, 10, 10, [2; 32]).await, Err(Refused::Another), "remembered after a restart");
        assert_eq!(again.promise(b, 9, 10, [5; 32]).await, Err(Refused::Another));
        assert!(!root.path().join(PROMISES_DIR).join("7").exists(), "an old epoch's file is deleted");
        again.promise(b, 11, 11, [6; 32]).await.unwrap();
    }
}
