//! Storage audits on real vault processes: shard files deleted on one vault's disk behind its
//! back are noticed by the other holders' audits, the vault is reported, and repair restores
//! full redundancy; every file still fetches byte-identical.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kura_client::{Client, UserKey};
use kura_node::wire::{Request, Response};
use kura_node::{Address, PeerId};

mod common;
use common::{running_ids, wait_full, wait_full_within, Net};

const MIB: usize = 1 << 20;

/// Sum of every running vault's audit failure counter.
async fn audit_failures(client: &Client, ids: &[PeerId]) -> u64 {
    let mut sum = 0;
    for &peer in ids {
        sum += client.vault_status(peer).await.map(|s| s.audit_failures).unwrap_or(0);
    }
    sum
}

/// Chunks that do not have all 8 shard indices verified somewhere among `ids`.
async fn short_anywhere(client: &Client, ids: &[PeerId], chunks: &[Address]) -> Vec<String> {
    let mut short = Vec::new();
    for &chunk in chunks {
        let mut held = BTreeSet::new();
        for &peer in ids {
            if let Ok(Response::Shards(shards)) = client.node().request(peer, Request::GetShards { chunk }).await {
                held.extend(shards.into_iter().filter(|s| s.verify().is_ok()).map(|s| s.header.index));
            }
        }
        if held.len() < 8 {
            short.push(format!("{chunk}: {held:?}"));
        }
    }
    short
}

/// Deletes every shard file under a vault's root; returns how many.
fn delete_shard_files(dir: &Path) -> usize {
    let mut deleted = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            deleted += delete_shard_files(&path);
        } else {
            std::fs::remove_file(&path).unwrap();
            deleted += 1;
        }
    }
    deleted
}

#[test]
fn audits_notice_shards_deleted_behind_a_vaults_back_and_repair_restores_them() {
    let net = Net::up_with(12, 1 << 30, &["--audit-interval", "2"]);
    let work = tempfile::tempdir().unwrap();
    let rt = common::rt();
    let key = UserKey::generate();
    let bar = ProgressBar::hidden();

    let sizes = [3 * MIB, 5 * MIB + 3, MIB, 7 * MIB];
    let (files, chunks) = rt.block_on(common::store_random_files(&net, work.path(), &sizes, &key));
    rt.block_on(async {
        wait_full(&net, &chunks, "after upload").await;
        // Several audit rounds pass over a whole network: nobody is accused.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let client = net.connect().await;
        assert_eq!(audit_failures(&client, &running_ids(&net)).await, 0, "an honest vault failed an audit");
        client.close().await;
    });

    // The vault holding the most shards loses all of them on disk while it keeps running.
    let (victim, victim_peer) = rt.block_on(async {
        let client = net.connect().await;
        let mut best = None;
        for (index, peer) in net.net.running_peers(&net.net.state().unwrap()) {
            let records = client.vault_status(peer).await.unwrap().records_stored;
            if best.is_none_or(|(_, _, r)| records > r) {
                best = Some((index, peer, records));
            }
        }
        client.close().await;
        let (index, peer, _) = best.unwrap();
        (index, peer)
    });
    let deleted = delete_shard_files(&net.net.layout().vault_root(victim).join("store"));
    assert!(deleted > 0, "vault {victim} held no shard files");
    eprintln!("deleted {deleted} shard files of vault {victim} ({victim_peer})");

    rt.block_on(async {
        let start = Instant::now();
        let ids = running_ids(&net);
        // Audits notice.
        loop {
            let client = net.connect().await;
            let failures = audit_failures(&client, &ids).await;
            client.close().await;
            if failures > 0 {
                eprintln!("{failures} audit failures after {:.1} s", start.elapsed().as_secs_f64());
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no audit noticed the deleted shards");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Repair restores every lost shard somewhere in the network.
        loop {
            let client = net.connect().await;
            let short = short_anywhere(&client, &ids, &chunks).await;
            client.close().await;
            if short.is_empty() {
                eprintln!("all shards verified again after {:.1} s", start.elapsed().as_secs_f64());
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "{} chunks still short: {:?}", short.len(), &short[..short.len().min(3)]);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let client = net.connect().await;
        for (i, (path, address)) in files.iter().enumerate() {
            let out = work.path().join(format!("got-{i}"));
            client.get_path(*address, &out, &key, &bar).await.unwrap_or_else(|e| panic!("file {i}: {e}"));
            assert!(std::fs::read(&out).unwrap() == std::fs::read(path).unwrap(), "file {i} differs");
        }
        client.close().await;
        // Once the vault's penalty ends it takes its place again, and every close group is whole.
        wait_full_within(&net, &chunks, "after the penalty", Duration::from_secs(180)).await;
    });
}
