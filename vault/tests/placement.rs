//! Placement over real QUIC with 24 in-process vaults: a vault stores a shard only when it is
//! among the vaults responsible for the chunk, and a stored shard comes back verified.

use std::time::{Duration, Instant};

use kura_node::erasure::Coding;
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{close_group, Keypair, Multiaddr, NodeConfig, NodeError, PeerId};
use kura_vault::{Storage, Vault, VaultConfig, PLACEMENT_WINDOW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_responsible_vaults_accept_shards() {
    let dirs: Vec<_> = (0..24).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut vaults = Vec::new();
    let mut seed: Option<Multiaddr> = None;
    for dir in &dirs {
        let mut cfg = VaultConfig::local(dir.path().to_path_buf());
        cfg.storage = Storage::Memory;
        cfg.bootstrap = seed.iter().cloned().collect();
        let v = Vault::start(cfg).await.unwrap();
        if seed.is_none() {
            let addr = v.node().listen_addrs().await.unwrap()[0].clone();
            seed = Some(format!("{addr}/p2p/{}", v.node().peer_id()).parse().unwrap());
        }
        vaults.push(v);
    }
    let start = Instant::now();
    loop {
        let mut ok = true;
        for v in &vaults {
            ok &= v.node().routing_table().await.unwrap().len() >= 20;
        }
        if ok {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "routing tables did not fill");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (client, _) = kura_node::spawn(
        NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(vec![seed.unwrap()]),
    )
    .await
    .unwrap();

    for v in &vaults {
        client.add_address(v.node().peer_id(), v.node().listen_addrs().await.unwrap()[0].clone()).await.unwrap();
    }
    let ids: Vec<PeerId> = vaults.iter().map(|v| v.node().peer_id()).collect();
    let shard = Coding::default().encode(b"a chunk of some content").unwrap().remove(3);
    let chunk = shard.header.address();
    let order = close_group(&chunk, ids.clone(), ids.len());
    let far = order[PLACEMENT_WINDOW..].to_vec();
    assert!(!far.is_empty());

    for peer in &far {
        let err = client.request(*peer, Request::PutShard(shard.clone())).await.unwrap_err();
        assert!(
            matches!(err, NodeError::Remote { error: RemoteError::NotResponsible(c), .. } if c == chunk),
            "{peer}: {err}"
        );
    }
    let holder = order[3];
    assert_eq!(client.request(holder, Request::PutShard(shard.clone())).await.unwrap(), Response::Stored);
    assert_eq!(
        client.request(holder, Request::GetShards { chunk }).await.unwrap(),
        Response::Shards(vec![shard.clone()])
    );
    // The far vaults stored nothing.
    for peer in &far {
        let v = vaults.iter().find(|v| v.node().peer_id() == *peer).unwrap();
        assert_eq!(v.store().usage().records, 0);
    }
    for v in &vaults {
        v.shutdown().await;
    }
}
