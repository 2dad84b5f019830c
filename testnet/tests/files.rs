//! Files on a real 10-vault testnet: round trips of every size, losing holders, corrupt and
//! full vaults, private keys, malformed input.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::ProgressBar;
use kura_client::root::{RootRecord, Visibility};
use kura_client::{Client, ClientError, UserKey};
use kura_node::erasure::Coding;
use kura_node::wire::{RemoteError, Request};
use kura_node::{close_group, Address, NodeError, PeerId};

mod common;
use common::{kura_bin, rt, Net};

const MIB: usize = 1 << 20;

fn random(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn compressible(n: usize) -> Vec<u8> {
    b"the storehouse keeps what it is given; "
        .iter()
        .cycle()
        .take(n)
        .copied()
        .collect()
}

async fn round_trip(client: &Client, dir: &Path, name: &str, content: &[u8], vis: Visibility, key: &UserKey) {
    let src = dir.join(name);
    std::fs::write(&src, content).unwrap();
    let bar = ProgressBar::hidden();
    let address = client.put_path(&src, vis, key, &bar).await.unwrap_or_else(|e| panic!("put {name}: {e}"));
    let out = dir.join(format!("{name}.out"));
    let (_, got_vis) = client.get_path(address, &out, key, &bar).await.unwrap_or_else(|e| panic!("get {name}: {e}"));
    assert_eq!(got_vis, vis);
    let back = std::fs::read(&out).unwrap();
    assert!(back == content, "{name}: {} bytes back for {} stored, differ", back.len(), content.len());
}

/// Addresses of every chunk a file becomes (self-encryption is convergent, so re-encrypting
/// the same bytes names the same chunks).
fn chunk_addresses(content: &[u8]) -> Vec<Address> {
    let (_, chunks) = self_encryption::encrypt(Bytes::copy_from_slice(content)).unwrap();
    // Where each is stored: the address its coding commits to.
    chunks.iter().map(|c| Coding::default().address_of(&c.content).unwrap()).collect()
}

fn vault_ids(net: &Net) -> Vec<(usize, PeerId)> {
    net.net.running_peers(&net.net.state().unwrap())
}

#[test]
fn files_of_every_size_round_trip_and_bad_input_is_refused() {
    let net = Net::up(10, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let client = net.connect().await;
        let key = UserKey::generate();
        let sizes = [0, 1, 2, 3, 4096, MIB, 4 * MIB + 1, 64 * MIB];
        for size in sizes {
            for (kind, content) in [("random", random(size)), ("compressible", compressible(size))] {
                for vis in [Visibility::Public, Visibility::Private] {
                    let name = format!("{kind}-{size}-{vis:?}");
                    round_trip(&client, work.path(), &name, &content, vis, &key).await;
                }
            }
        }

        // A private address opens only with its owner's key; a public one with any.
        let content = random(100_000);
        let src = work.path().join("secret");
        std::fs::write(&src, &content).unwrap();
        let bar = ProgressBar::hidden();
        let private = client.put_path(&src, Visibility::Private, &key, &bar).await.unwrap();
        let other = UserKey::generate();
        let err = client.get_path(private, &work.path().join("stolen"), &other, &bar).await.unwrap_err();
        assert!(matches!(err, ClientError::NotYourKey), "{err}");
        assert!(!work.path().join("stolen").exists(), "nothing is written on failure");
        let public = client.put_path(&src, Visibility::Public, &key, &bar).await.unwrap();
        client.get_path(public, &work.path().join("shared"), &other, &bar).await.unwrap();
        assert_eq!(std::fs::read(work.path().join("shared")).unwrap(), content);

        // A chunk that is not a root record, and a root record whose data map is garbage.
        let not_root = client.put_chunk(Bytes::from(random(5000)), Coding::default()).await.unwrap();
        let err = client.get_path(not_root, &work.path().join("x"), &key, &bar).await.unwrap_err();
        assert!(matches!(err, ClientError::Malformed(_)), "{err}");
        let bad_map = RootRecord::File { data_map: random(300), size: 1000, chunks: vec![] }.seal(Visibility::Public, &key).unwrap();
        let bad_map = client.put_chunk(Bytes::from(bad_map), Coding::default()).await.unwrap();
        let err = client.get_path(bad_map, &work.path().join("y"), &key, &bar).await.unwrap_err();
        assert!(matches!(err, ClientError::Malformed(_)), "{err}");

        // A shard record whose data does not match its hash is refused by the vault.
        let mut shard = Coding::default().encode(&random(10_000)).unwrap().remove(0);
        shard.data[0] ^= 0xff;
        let holder = client.closest_vaults(shard.header.address(), 1).await.unwrap()[0];
        let err = client.node().request(holder, Request::PutShard(shard)).await.unwrap_err();
        assert!(matches!(err, NodeError::Remote { error: RemoteError::Invalid(_), .. }), "{err}");

        // A corrupted shard on a vault's disk is detected, dropped and skipped.
        let content = random(3 * MIB);
        let src = work.path().join("victim");
        std::fs::write(&src, &content).unwrap();
        let address = client.put_path(&src, Visibility::Public, &key, &bar).await.unwrap();
        let chunk = chunk_addresses(&content)[0];
        let hex = chunk.to_string();
        let (vault, shard_file) = (0..10)
            .find_map(|i| {
                let dir = net.net.layout().vault_root(i).join("store/shard").join(&hex[..2]);
                std::fs::read_dir(&dir).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                    p.file_name().unwrap().to_string_lossy().starts_with(&hex)
                }).map(|p| (i, p))
            })
            .expect("some vault holds a shard of the chunk");
        let mut bytes = std::fs::read(&shard_file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&shard_file, &bytes).unwrap();
        client.get_path(address, &work.path().join("victim.out"), &key, &bar).await.unwrap();
        assert_eq!(std::fs::read(work.path().join("victim.out")).unwrap(), content);
        let peer: PeerId = net.net.state().unwrap().vaults[vault].peer_id.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = client.vault_status(peer).await.unwrap();
            if status.corrupt_records >= 1 {
                break;
            }
            assert!(Instant::now() < deadline, "vault {vault} never noticed its corrupt shard");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!shard_file.exists(), "the corrupt shard is moved aside, never served");
        let aside = net.net.layout().vault_root(vault).join("quarantine");
        assert_eq!(std::fs::read_dir(&aside).unwrap().count(), 1, "and kept in {}", aside.display());
        client.close().await;
    });

    // The CLI: the address is the last line of `kura put`; KURA_PEERS finds the network.
    let src = work.path().join("cli-file");
    std::fs::write(&src, random(300_000)).unwrap();
    let kura = |args: &[&str]| {
        let out = Command::new(kura_bin())
            .args(args)
            .env("KURA_PEERS", net.peers_file())
            .env("KURA_HOME", work.path().join("home"))
            .output()
            .unwrap();
        assert!(out.status.success(), "kura {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let put = kura(&["put", src.to_str().unwrap()]);
    let address = put.lines().last().unwrap().trim().to_string();
    assert_eq!(address.len(), 64, "{put}");
    let out = work.path().join("cli-file.out");
    kura(&["get", &address, out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    assert!(work.path().join("home/user.key").exists(), "the key is created on first use");
    let bad = Command::new(kura_bin()).args(["get", "not-an-address", "x"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("hexadecimal"));
}

#[test]
fn a_file_survives_four_lost_holders_and_names_the_chunk_lost_with_five() {
    // What erasure coding alone survives: repair would rebuild lost shards between stops.
    let net = Net::up_with(10, 1 << 30, &["--no-repair"]);
    let work = tempfile::tempdir().unwrap();
    let content = random(2 * MIB);
    let src = work.path().join("f");
    std::fs::write(&src, &content).unwrap();
    let key = UserKey::generate();
    let bar = ProgressBar::hidden();
    let rt = rt();
    let address = rt.block_on(async {
        let client = net.connect().await;
        let a = client.put_path(&src, Visibility::Private, &key, &bar).await.unwrap();
        client.close().await;
        a
    });
    let vaults = vault_ids(&net);
    let ids: Vec<PeerId> = vaults.iter().map(|(_, p)| *p).collect();
    let chunks = kura_client::chunk_addresses(&content, Visibility::Private, &key, Coding::default()).unwrap();
    let target = chunks[1];
    let group = close_group(&target, ids.clone(), 8);
    let index_of = |p: &PeerId| vaults.iter().find(|(_, q)| q == p).unwrap().0;

    // Stop 4 of the 8 holders of `target`: no chunk can lose more than 4 of its 8 holders.
    let four: Vec<usize> = group.iter().take(4).map(index_of).collect();
    net.net.kill(&four, false).unwrap();
    rt.block_on(async {
        let client = net.connect().await;
        let out = work.path().join("after4");
        client.get_path(address, &out, &key, &bar).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content);
        client.close().await;
    });

    // A fifth: `target` has 3 shards left, fewer than k = 4.
    net.net.kill(&[index_of(&group[4])], false).unwrap();
    let stopped: Vec<PeerId> = group.iter().take(5).copied().collect();
    let lost: Vec<String> = chunks
        .iter()
        .chain(std::iter::once(&address))
        .filter(|c| close_group(c, ids.clone(), 8).iter().filter(|p| stopped.contains(p)).count() >= 5)
        .map(|c| c.to_string())
        .collect();
    assert!(lost.contains(&target.to_string()));
    rt.block_on(async {
        let client = net.connect().await;
        let out = work.path().join("after5");
        let err = client.get_path(address, &out, &key, &bar).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ClientError::ChunkUnavailable { needed: 4, .. }), "{msg}");
        assert!(lost.iter().any(|c| msg.contains(c)), "error names a lost chunk: {msg}");
        assert!(!out.exists());
        client.close().await;
    });
}

#[test]
fn a_full_vault_refuses_and_puts_still_succeed() {
    let net = Net::up(10, 1 << 30);
    // One tiny vault joins: it is in most close groups of a 11-vault network.
    let tiny = net.net.add(1, 600 * 1024).unwrap()[0];
    let rt = rt();
    rt.block_on(async {
        net.assert_healthy().await;
        let client = net.connect().await;
        let work = tempfile::tempdir().unwrap();
        let key = UserKey::generate();
        for i in 0..3 {
            round_trip(&client, work.path(), &format!("f{i}"), &random(6 * MIB), Visibility::Public, &key).await;
        }
        let peer: PeerId = net.net.state().unwrap().vaults[tiny].peer_id.parse().unwrap();
        let status = client.vault_status(peer).await.unwrap();
        assert!(status.refused_full > 0, "the tiny vault never refused: {status:?}");
        assert!(status.bytes_used <= status.capacity);
        // The shards it refused sit on vaults past their groups, which would hand them to it;
        // once refused, they stop offering (rather than retrying, a rebuild or a shard's bytes
        // each time, every few seconds).
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = client.vault_status(peer).await.unwrap().refused_full;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = client.vault_status(peer).await.unwrap().refused_full;
        eprintln!("refused_full: {} at the end of the uploads, {before} 10 s later, {after} 10 s after that", status.refused_full);
        assert!(after - before <= 2, "vaults keep offering shards to a full vault: {before} → {after} refusals in 10 s");
        client.close().await;
    });
}

/// Shards stored across the running vaults.
async fn records_stored(client: &Client, net: &Net) -> u64 {
    let mut sum = 0;
    for (_, peer) in vault_ids(net) {
        sum += client.vault_status(peer).await.unwrap().records_stored;
    }
    sum
}

#[test]
fn private_files_cannot_be_confirmed_by_others_and_public_files_deduplicate() {
    let net = Net::up(8, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let rt = rt();
    let content = random(3 * MIB);
    let src = work.path().join("guessable");
    std::fs::write(&src, &content).unwrap();
    let (alice, bob) = (UserKey::generate(), UserKey::generate());
    let bar = ProgressBar::hidden();
    rt.block_on(async {
        let client = net.connect().await;
        let private = client.put_path(&src, Visibility::Private, &alice, &bar).await.unwrap();
        // Bob guesses the file: none of the chunks plain convergent encryption gives it is
        // stored, so he cannot confirm Alice has it.
        for chunk in chunk_addresses(&content) {
            assert!(client.get_chunk(chunk).await.is_err(), "a guessed chunk of a private file is stored");
        }
        let out = work.path().join("back");
        client.get_path(private, &out, &alice, &bar).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == content);
        // Alice storing it again adds only a new root record (sealed with a fresh nonce).
        let before = records_stored(&client, &net).await;
        client.put_path(&src, Visibility::Private, &alice, &bar).await.unwrap();
        let added = records_stored(&client, &net).await - before;
        assert!(added <= 8, "a private re-upload by its owner stored {added} shards: not deduplicated");

        // Public files keep network-wide deduplication: Alice's public copy of Bob's public
        // file stores nothing new, and its chunks are the convergent ones.
        let public = client.put_path(&src, Visibility::Public, &bob, &bar).await.unwrap();
        for chunk in chunk_addresses(&content) {
            client.get_chunk(chunk).await.expect("a public file's chunks are the convergent ones");
        }
        let before = records_stored(&client, &net).await;
        assert_eq!(client.put_path(&src, Visibility::Public, &alice, &bar).await.unwrap(), public);
        assert_eq!(records_stored(&client, &net).await, before, "a second public copy stored shards");
        client.close().await;
    });
}
