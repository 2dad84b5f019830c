//! Fake vaults cannot drain a chunk: on a real 16-vault testnet, 8 attacker vaults whose ids
//! were ground to be closer to a stored file's root record than any honest vault join, take
//! part (the honest holders hand them the record's shards), wait out the handover probation
//! twice over, audits and all, then all vanish at once: SIGKILL, and their data deleted. They
//! are newcomers (issue 19): the honest holders keep their copies until a newcomer has aged,
//! not merely for the probation, so the file still fetches byte-identical and its redundancy
//! comes back.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kura_client::{UserKey, Visibility};
use kura_node::wire::{Request, Response};
use kura_node::{close_group, Address, Keypair, NodeConfig, PeerId};

mod common;
use common::{rt, running_ids, wait_full, Net};

const MIB: usize = 1 << 20;

/// A key whose peer id carries the testnet's work and is closer to `target` than every one of
/// `honest`: the attacker pays the work about once per honest vault for each such id.
fn ground_key(target: &Address, honest: &[PeerId]) -> Keypair {
    loop {
        let key = kura_node::puzzle::generate(kura_testnet::process::TESTNET_ID_DIFFICULTY);
        let id = key.public().to_peer_id();
        if close_group(target, honest.iter().copied().chain([id]), 1) == vec![id] {
            return key;
        }
    }
}

#[test]
fn attackers_closest_to_a_chunk_cannot_drain_it() {
    let net = Net::up(16, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let rt = rt();
    let key = UserKey::generate();
    let content: Vec<u8> = (0..3 * MIB).map(|_| rand::random::<u8>()).collect();
    let src = work.path().join("f");
    std::fs::write(&src, &content).unwrap();
    let bar = ProgressBar::hidden();
    let address = rt.block_on(async {
        let client = net.connect().await;
        let a = client.put_path(&src, Visibility::Private, &key, &bar).await.unwrap();
        client.close().await;
        a
    });
    let mut chunks = kura_client::chunk_addresses(&content, Visibility::Private, &key, Default::default()).unwrap();
    chunks.push(address);
    rt.block_on(wait_full(&net, &chunks, "after upload"));

    // An id made for free (no work) is kept out of every routing table, however close it is.
    let honest = running_ids(&net);
    let cheap = loop {
        let k = Keypair::generate_ed25519();
        let id = k.public().to_peer_id();
        if kura_node::puzzle::work(&id) < u32::from(kura_testnet::process::TESTNET_ID_DIFFICULTY)
            && close_group(&address, honest.iter().copied().chain([id]), 1) == vec![id]
        {
            break k;
        }
    };
    let cheap_id = cheap.public().to_peer_id();
    let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
    let (cheap_node, _inbound) = rt.block_on(kura_node::spawn(NodeConfig::vault(cheap).with_bootstrap(peers))).unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let client = net.connect().await;
        for &p in &honest {
            match client.node().request(p, Request::FindClosest { target: address, n: 8 }).await.unwrap() {
                Response::Closest(found) => assert!(!found.contains(&cheap_id), "{p} took an id without work"),
                other => panic!("{other:?}"),
            }
        }
        client.close().await;
        cheap_node.shutdown().await;
    });

    // Eight ids, with the work, closer to the root record (the file's address) than any honest
    // vault, written where the next eight vaults will find their identity.
    let first = net.net.state().unwrap().vaults.len();
    let mut attackers = Vec::new();
    for i in first..first + 8 {
        let k = ground_key(&address, &honest);
        attackers.push(k.public().to_peer_id());
        let root = net.net.layout().vault_root(i);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(kura_node::identity::KEY_FILE), k.to_protobuf_encoding().unwrap()).unwrap();
    }
    let added = net.net.add(8, 1 << 30).unwrap();
    let state = net.net.state().unwrap();
    assert!(added.iter().all(|i| attackers.contains(&state.vaults[*i].peer_id.parse().unwrap())));
    let group = close_group(&address, running_ids(&net), 8);
    assert!(group.iter().all(|p| attackers.contains(p)), "the attackers are the root record's whole close group");

    // They take part: the honest holders hand them every shard of the root record.
    rt.block_on(async {
        let client = net.connect().await;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut held = 0;
            for &a in &attackers {
                if let Ok(Response::Indices(i)) = client.node().request(a, Request::ShardIndices { chunk: address }).await {
                    held += usize::from(!i.is_empty());
                }
            }
            if held == 8 {
                break;
            }
            assert!(Instant::now() < deadline, "the attackers received only {held} of the 8 shards");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        client.close().await;
    });

    // They wait out the probation (twice over) before they leave: the honest holders still
    // hold every shard of the root record, since the vaults that took them are newcomers.
    std::thread::sleep(Duration::from_secs(2 * kura_testnet::process::TESTNET_PROBATION_SECS + 5));
    rt.block_on(async {
        let client = net.connect().await;
        let mut indices = std::collections::BTreeSet::new();
        for &p in &honest {
            if let Ok(Response::Indices(i)) = client.node().request(p, Request::ShardIndices { chunk: address }).await {
                indices.extend(i);
            }
        }
        assert_eq!(indices.len(), 8, "after the probation the honest vaults hold shards {indices:?} of the root record");
        client.close().await;
    });

    // Then vanish at once, data and all.
    net.net.kill(&added, true).unwrap();
    for &i in &added {
        std::fs::remove_dir_all(net.net.layout().vault_root(i)).unwrap();
    }
    rt.block_on(async {
        let client = net.connect().await;
        let out = work.path().join("out");
        client.get_path(address, &out, &key, &bar).await.expect("the file survives the attackers' exit");
        assert!(std::fs::read(&out).unwrap() == content, "byte-identical");
        client.close().await;
    });
    rt.block_on(wait_full(&net, &chunks, "after the attackers vanished"));
}
