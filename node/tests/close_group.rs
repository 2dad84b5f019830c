//! In-process network: at least 20 vault nodes over real QUIC sockets on loopback agree on
//! close groups, and clients stay out of routing tables.

use std::time::{Duration, Instant};

use kura_node::{close_group, spawn, Address, Keypair, Multiaddr, NodeConfig, NodeHandle, PeerId};
use rand::seq::SliceRandom;

const NODES: usize = 24;

async fn start_network(n: usize) -> Vec<NodeHandle> {
    let (seed, _) = spawn(NodeConfig::vault(Keypair::generate_ed25519())).await.unwrap();
    let seed_addr: Multiaddr = format!("{}/p2p/{}", seed.listen_addrs().await.unwrap()[0], seed.peer_id())
        .parse()
        .unwrap();
    let mut nodes = vec![seed];
    for _ in 1..n {
        let cfg = NodeConfig::vault(Keypair::generate_ed25519()).with_bootstrap(vec![seed_addr.clone()]);
        nodes.push(spawn(cfg).await.unwrap().0);
    }
    nodes
}

async fn wait_for_tables(nodes: &[NodeHandle], want: usize, timeout: Duration) {
    let start = Instant::now();
    loop {
        let mut sizes = Vec::new();
        for n in nodes {
            sizes.push(n.routing_table().await.unwrap().len());
        }
        if sizes.iter().all(|&s| s >= want) {
            return;
        }
        assert!(start.elapsed() < timeout, "routing tables still too small after {timeout:?}: {sizes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_four_nodes_agree_on_close_groups() {
    let nodes = start_network(NODES).await;
    wait_for_tables(&nodes, (NODES - 1).min(20), Duration::from_secs(60)).await;

    let ids: Vec<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
    let mut rng = rand::thread_rng();
    let mut lookups = Vec::new();
    for _ in 0..100 {
        let target = Address::random();
        let truth = close_group(&target, ids.iter().copied(), 8);
        for from in nodes.choose_multiple(&mut rng, 3) {
            let from = from.clone();
            let truth = truth.clone();
            lookups.push(async move {
                let got = from.closest_vaults(target, 8).await.expect("lookup");
                (target, from.peer_id(), truth, got)
            });
        }
    }
    let results = futures::future::join_all(lookups).await;
    let wrong: Vec<_> = results.iter().filter(|(_, _, truth, got)| truth != got).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} lookups disagreed with the true close group; first: {:?}",
        wrong.len(),
        results.len(),
        wrong.first()
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_never_in_routing_tables() {
    let nodes = start_network(6).await;
    let addr: Multiaddr =
        format!("{}/p2p/{}", nodes[0].listen_addrs().await.unwrap()[0], nodes[0].peer_id()).parse().unwrap();
    let (client, _) = spawn(NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(vec![addr]))
        .await
        .unwrap();
    wait_for_tables(&nodes, 5, Duration::from_secs(30)).await;
    // The client looks things up, which connects it to vaults...
    let target = Address::random();
    let group = client.closest_vaults(target, 4).await.unwrap();
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
    assert_eq!(group, close_group(&target, ids, 4));
    assert!(!group.contains(&client.peer_id()), "a client never counts itself");
    // ...yet no vault puts it in its routing table.
    for n in &nodes {
        assert!(!n.routing_table().await.unwrap().contains(&client.peer_id()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_peer_leaves_routing_tables() {
    let nodes = start_network(5).await;
    wait_for_tables(&nodes, 4, Duration::from_secs(30)).await;
    let mut events = nodes[0].subscribe();
    let gone = nodes[4].peer_id();
    nodes[4].shutdown().await;
    // QUIC keep-alives notice a silent peer within 10 s; a clean close is seen at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("departure not noticed in 15 s").unwrap();
        if ev == kura_node::NodeEvent::PeerRemoved(gone) {
            break;
        }
    }
    assert!(!nodes[0].routing_table().await.unwrap().contains(&gone));
}
