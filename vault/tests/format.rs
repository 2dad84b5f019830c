//! The disk format: a vault directory written by the first format (committed as a fixture,
//! written by the vault before records of many kinds) opens and serves every shard in it; a
//! store of a newer format is refused; an unreadable record is moved aside, never deleted.

use std::path::Path;

use kura_node::wire::{Request, Response};
use kura_node::{spawn, stored, Keypair, NodeConfig, Record, RecordKey, Shard};
use kura_vault::{Storage, Vault, VaultConfig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every shard file of a format-1 vault directory, read as the first format.
fn format1_shards(root: &Path) -> Vec<Shard> {
    let mut out = Vec::new();
    for prefix in std::fs::read_dir(root.join("records/shard")).unwrap() {
        for file in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            match stored::decode(&bytes).unwrap() {
                Record::Shard(s) => out.push(s),
                other => panic!("format 1 held only shards, found {other:?}"),
            }
        }
    }
    out
}

fn config(root: &Path) -> VaultConfig {
    let mut cfg = VaultConfig::local(root.to_path_buf());
    cfg.storage = Storage::Disk;
    cfg.repair = false;
    cfg.audit = false;
    cfg
}

#[tokio::test]
async fn a_format_1_vault_opens_and_serves_every_shard() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1-vault");
    let expected = format1_shards(&fixture);
    assert_eq!(expected.len(), 4, "the fixture holds one shard of each of four chunks");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    copy_dir(&fixture, &root);

    let vault = Vault::start(config(&root)).await.unwrap();
    assert_eq!(vault.store().usage().records, 4);
    assert!(!root.join("records").exists(), "format-1 files are migrated, not left behind");
    assert_eq!(std::fs::read_to_string(root.join("FORMAT")).unwrap().trim(), "kura-store 2");

    // Served over the network, at the addresses their coding commits to.
    let addr = vault.node().listen_addrs().await.unwrap()[0].clone();
    let (client, _inbound) = spawn(NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(vec![addr])).await.unwrap();
    let peer = vault.node().peer_id();
    client.add_address(peer, vault.node().listen_addrs().await.unwrap()[0].clone()).await.unwrap();
    for shard in &expected {
        let chunk = shard.header.address();
        let answer = client.request(peer, Request::GetShards { chunk }).await.unwrap();
        assert_eq!(answer, Response::Shards(vec![shard.clone()]), "shard {} of {chunk}", shard.header.index);
    }
    client.shutdown().await;
    vault.shutdown().await;

    // Opened again (now format 2, index clean): the same records.
    let vault = Vault::start(config(&root)).await.unwrap();
    let mut keys = vault.store().keys();
    keys.sort();
    let mut want: Vec<RecordKey> = expected.iter().map(Shard::key).collect();
    want.sort();
    assert_eq!(keys, want);
    vault.shutdown().await;
}

#[tokio::test]
async fn a_newer_store_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "kura-store 99\n").unwrap();
    let err = Vault::start(config(dir.path())).await.unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(), "kura-store 99\n");
    assert!(!dir.path().join("store").exists(), "nothing is written into a newer store");
}

#[tokio::test]
async fn an_unreadable_record_is_moved_aside_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let shard = kura_node::erasure::Coding::default().encode(b"chunk content here").unwrap().remove(1);
    let key = shard.key();
    let vault = Vault::start(config(dir.path())).await.unwrap();
    vault.store().put(&key, &stored::encode(&Record::Shard(shard.clone()))).unwrap();
    // Damaged on disk behind the vault's back.
    let mut damaged = stored::encode(&Record::Shard(shard));
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    vault.store().put(&key, &damaged).unwrap();
    let addr = vault.node().listen_addrs().await.unwrap()[0].clone();
    let (client, _inbound) = spawn(NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(vec![addr])).await.unwrap();
    let peer = vault.node().peer_id();
    client.add_address(peer, vault.node().listen_addrs().await.unwrap()[0].clone()).await.unwrap();
    let answer = client.request(peer, Request::GetShards { chunk: key.address }).await.unwrap();
    assert_eq!(answer, Response::Shards(vec![]), "a damaged shard is never served");
    let status = vault.status().await.unwrap();
    assert_eq!(status.corrupt_records, 1);
    assert_eq!(status.records_stored, 0);
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("quarantine")).unwrap().collect();
    assert_eq!(aside.len(), 1, "kept for the operator");
    client.shutdown().await;
    vault.shutdown().await;
}
