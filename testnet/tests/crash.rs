//! A vault SIGKILLed in the middle of an upload: the upload still completes (its shards go to
//! other vaults), and the vault restarts with every shard it had on disk, none corrupt.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kura_client::{UserKey, Visibility};
use kura_node::wire::{Request, Response};
use kura_node::{close_group, Address, PeerId};

mod common;
use common::Net;

/// (chunk, index) of every complete shard file under a vault's root (temporary files excluded).
fn shard_files(root: &std::path::Path) -> BTreeSet<(Address, u8)> {
    let mut out = BTreeSet::new();
    let Ok(prefixes) = std::fs::read_dir(root.join("store/shard")) else { return out };
    for prefix in prefixes.flatten() {
        for file in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp") {
                continue;
            }
            let (hex, id) = name.split_once('.').unwrap();
            let id = hex::decode(id).unwrap();
            out.insert((hex.parse().unwrap(), id[31]));
        }
    }
    out
}

#[test]
fn a_vault_killed_mid_upload_restarts_whole() {
    let net = Net::up(10, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let rt = common::rt();
    let content: Vec<u8> = (0..48 << 20).map(|_| rand::random::<u8>()).collect();
    let src = work.path().join("big");
    std::fs::write(&src, &content).unwrap();
    let key = UserKey::generate();
    let victim = 3;

    let address = rt.block_on(async {
        let client = net.connect().await;
        let uploader = client.clone();
        let (src2, key2) = (src.clone(), key.clone());
        let upload = tokio::spawn(async move {
            uploader.put_path(&src2, Visibility::Private, &key2, &ProgressBar::hidden()).await
        });
        // Kill the vault once it has started receiving shards of this upload.
        let root = net.net.layout().vault_root(victim);
        let start = Instant::now();
        while shard_files(&root).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(60), "the victim never received a shard");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let net2 = net.net.clone();
        tokio::task::spawn_blocking(move || net2.kill(&[victim], true)).await.unwrap().unwrap();
        let address = upload.await.unwrap().expect("the upload completes despite the crash");
        client.close().await;
        address
    });

    let root = net.net.layout().vault_root(victim);
    let on_disk = shard_files(&root);
    assert!(!on_disk.is_empty());
    net.net.restart(victim).unwrap();
    // Temporary files of writes the crash cut short are gone; no shard went missing.
    let tmp_left = std::fs::read_dir(root.join("store/shard"))
        .unwrap()
        .flatten()
        .flat_map(|p| std::fs::read_dir(p.path()).unwrap().flatten())
        .filter(|f| f.file_name().to_string_lossy().contains(".tmp"))
        .count();
    assert_eq!(tmp_left, 0, "temporary files survive the restart");

    rt.block_on(async {
        net.assert_healthy().await;
        let client = net.connect().await;
        let peer: PeerId = net.net.state().unwrap().vaults[victim].peer_id.parse().unwrap();
        // Every shard that was on its disk is served, and verifies.
        let chunks: BTreeSet<Address> = on_disk.iter().map(|(c, _)| *c).collect();
        for chunk in &chunks {
            let served = match client.node().request(peer, Request::GetShards { chunk: *chunk }).await.unwrap() {
                Response::Shards(s) => s,
                other => panic!("{other:?}"),
            };
            for s in &served {
                s.verify().expect("a served shard verifies");
            }
            let served: BTreeSet<u8> = served.iter().map(|s| s.header.index).collect();
            for (c, i) in on_disk.iter().filter(|(c, _)| c == chunk) {
                assert!(served.contains(i), "shard {i} of {c} was on disk before the crash but is not served");
            }
        }
        let status = client.vault_status(peer).await.unwrap();
        assert_eq!(status.corrupt_records, 0);

        // The file is whole, and every chunk has its 8 shards on its close group again.
        let out = work.path().join("big.out");
        client.get_path(address, &out, &key, &ProgressBar::hidden()).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == content);
        let all: Vec<Address> = kura_client::chunk_addresses(&content, Visibility::Private, &key, Default::default())
            .unwrap()
            .into_iter()
            .chain(std::iter::once(address))
            .collect();
        let ids: Vec<PeerId> = net.net.running_peers(&net.net.state().unwrap()).into_iter().map(|(_, p)| p).collect();
        let start = Instant::now();
        loop {
            let mut short = 0;
            for chunk in &all {
                let mut held = BTreeSet::new();
                for peer in close_group(chunk, ids.iter().copied(), 8) {
                    if let Ok(Response::Indices(i)) = client.node().request(peer, Request::ShardIndices { chunk: *chunk }).await {
                        held.extend(i);
                    }
                }
                short += usize::from(held.len() < 8);
            }
            if short == 0 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(90), "{short} chunks short of 8 shards");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        client.close().await;
    });
}
