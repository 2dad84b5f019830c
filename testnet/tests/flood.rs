//! Floods cost the flooder: on a real 10-vault testnet, for a minute, one client keeps many
//! streams of maximal (8 MiB) frames going to one vault, another sends it up to 100,000 tiny
//! records, and a third asks it cheap questions as fast as it answers. The vault's RSS stays
//! under 256 MiB, it answers the flooders "rate limited" all minute, a fourth client's 10 MiB
//! put and get through it succeed, and afterwards no vault has failed it, dropped it, or
//! rebuilt any of its data elsewhere.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use indicatif::ProgressBar;
use kura_client::{UserKey, Visibility};
use kura_node::wire::{Request, Response, MAX_FRAME_LEN, REQUEST_PROTOCOL};
use kura_node::{close_group, Address, Keypair, Multiaddr, NodeConfig, PeerId, Pointer, Record};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, SwarmBuilder};

mod common;
use common::{rt, running_ids, Net};

const MIB: usize = 1 << 20;
const FLOOD: Duration = Duration::from_secs(60);

/// Sends a frame announcing its full length followed by that many bytes of garbage; reads
/// nothing back but the stream's end.
#[derive(Clone, Default)]
struct GarbageCodec;

#[async_trait::async_trait]
impl request_response::Codec for GarbageCodec {
    type Protocol = StreamProtocol;
    type Request = Arc<Vec<u8>>;
    type Response = ();

    async fn read_request<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<Self::Request> {
        Err(std::io::Error::other("serves nothing"))
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<()> {
        let mut sink = Vec::new();
        futures::AsyncReadExt::read_to_end(&mut futures::AsyncReadExt::take(io, 1 << 20), &mut sink).await?;
        Ok(())
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T, req: Arc<Vec<u8>>) -> std::io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(&mut self, _: &StreamProtocol, _: &mut T, _: ()) -> std::io::Result<()> {
        Err(std::io::Error::other("serves nothing"))
    }
}

/// Keeps `streams` maximal frames in flight to `target` until `stop`; counts frames sent.
async fn frame_flood(target: Multiaddr, streams: usize, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                GarbageCodec,
                [(StreamProtocol::new(REQUEST_PROTOCOL), ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(streams),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let peer = match target.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("{target} has no peer id"),
    };
    swarm.dial(target).unwrap();
    let mut frame = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
    frame.extend((0..MAX_FRAME_LEN).map(|i| (i * 7919 % 251) as u8));
    let frame = Arc::new(frame);
    let mut in_flight = 0;
    while !stop.load(Ordering::Relaxed) {
        while in_flight < streams {
            swarm.behaviour_mut().send_request(&peer, frame.clone());
            in_flight += 1;
        }
        let tick = tokio::time::sleep(Duration::from_millis(200));
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(request_response::Event::Message { .. })
                | SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                    in_flight -= 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            },
            _ = tick => {}
        }
    }
}

/// Sends `count` tiny (but valid) pointer records to `target`, 64 at a time; counts each
/// answer by kind.
async fn record_flood(peers: Vec<Multiaddr>, target: PeerId, count: usize, answers: Arc<[AtomicU64; 3]>) {
    let (node, _inbound) = kura_node::spawn(NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(peers)).await.unwrap();
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    futures::stream::iter(0..count)
        .for_each_concurrent(64, |i| {
            let (node, answers) = (node.clone(), answers.clone());
            let mut name = [0u8; 32];
            name[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let record = Record::Pointer(Pointer::sign(&key, name, 1, Address::of_content(&name)));
            async move {
                let which = match node.request(target, Request::PutRecord(record)).await {
                    Ok(Response::Stored) => 0,
                    Err(kura_node::NodeError::Remote { error, .. }) if error.is_load() => 1,
                    _ => 2,
                };
                answers[which].fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    node.shutdown().await;
}

/// Asks `target` which shards of random chunks it holds, 64 at a time, until `stop`; counts the
/// answers that were "rate limited".
async fn query_flood(peers: Vec<Multiaddr>, target: PeerId, stop: Arc<AtomicBool>, limited: Arc<AtomicU64>) {
    let (node, _inbound) = kura_node::spawn(NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(peers)).await.unwrap();
    futures::stream::iter(std::iter::from_fn(|| (!stop.load(Ordering::Relaxed)).then(Address::random)))
        .for_each_concurrent(64, |chunk| {
            let (node, limited) = (node.clone(), limited.clone());
            async move {
                if let Err(kura_node::NodeError::Remote { error, .. }) = node.request(target, Request::ShardIndices { chunk }).await {
                    if error.is_load() {
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    node.shutdown().await;
}

/// The vault's resident set size, from /proc.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

#[test]
fn floods_leave_the_vault_bounded_serving_and_unpunished() {
    // This machine's flooders, sharing two cores with ten vaults, reach a few hundred requests
    // per second, under the default client budget (400/s): the vaults run with a budget they
    // can exceed, so that the refusals are seen.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("vault.toml");
    std::fs::write(&config, "client_requests_per_sec = 50\nclient_writes_per_sec = 20\n").unwrap();
    let net = Net::up_with(10, 1 << 30, &["--config", config.to_str().unwrap()]);
    let rt = rt();
    let state = net.net.state().unwrap();
    let target_pid = state.vaults[0].pid;
    let target: PeerId = state.vaults[0].peer_id.parse().unwrap();
    let target_addr: Multiaddr = std::fs::read_to_string(net.peers_file())
        .unwrap()
        .lines()
        .find(|l| l.ends_with(&target.to_string()))
        .expect("the target is in the peers file")
        .parse()
        .unwrap();
    let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
    let key = UserKey::generate();
    let bar = ProgressBar::hidden();

    // Data on the target before the flood, and every vault's repair counters.
    let client = rt.block_on(net.connect());
    let before = work.path().join("before");
    std::fs::write(&before, (0..4 * MIB).map(|_| rand::random::<u8>()).collect::<Vec<u8>>()).unwrap();
    rt.block_on(client.put_path(&before, Visibility::Public, &key, &bar)).unwrap();
    let ids = running_ids(&net);
    let repaired = |client: &kura_client::Client| {
        rt.block_on(async {
            let mut sum = 0;
            for &p in &ids {
                sum += client.vault_status(p).await.unwrap().shards_repaired;
            }
            sum
        })
    };
    let repaired_before = repaired(&client);
    let limited_before = rt.block_on(client.vault_status(target)).unwrap().rate_limited;

    // The flood, on its own runtime so the test's own clients are not starved of threads.
    let flood_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let answers: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let frame_task = flood_rt.spawn(frame_flood(target_addr, 64, stop.clone(), frames.clone()));
    let record_task = flood_rt.spawn(record_flood(peers.clone(), target, 100_000, answers.clone()));
    let queries_limited = Arc::new(AtomicU64::new(0));
    let query_task = flood_rt.spawn(query_flood(peers, target, stop.clone(), queries_limited.clone()));
    let started = Instant::now();
    let mut max_rss = 0;
    let mut sample = || max_rss = max_rss.max(rss_mib(target_pid));

    // A 10 MiB put and get through the flooded vault: it is in the close group of nearly every
    // chunk of a 10-vault network.
    std::thread::sleep(Duration::from_secs(5));
    sample();
    let content: Vec<u8> = (0..10 * MIB).map(|_| rand::random::<u8>()).collect();
    let src = work.path().join("during");
    std::fs::write(&src, &content).unwrap();
    let address = rt.block_on(client.put_path(&src, Visibility::Private, &key, &bar)).expect("put during the flood");
    sample();
    let out = work.path().join("during.out");
    rt.block_on(client.get_path(address, &out, &key, &bar)).expect("get during the flood");
    assert!(std::fs::read(&out).unwrap() == content, "the file fetched during the flood differs");
    let served_at = started.elapsed();
    while started.elapsed() < FLOOD / 2 {
        sample();
        std::thread::sleep(Duration::from_millis(250));
    }
    let limited_at_half = queries_limited.load(Ordering::Relaxed);
    while started.elapsed() < FLOOD {
        sample();
        std::thread::sleep(Duration::from_millis(250));
    }
    let limited = rt.block_on(client.vault_status(target)).expect("the target answers during the flood").rate_limited;
    let limited_late = queries_limited.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = flood_rt.block_on(frame_task);
    let _ = flood_rt.block_on(query_task);
    record_task.abort();
    let _ = flood_rt.block_on(record_task);
    drop(flood_rt);
    let [stored, refused, other] = [0, 1, 2].map(|i| answers[i].load(Ordering::Relaxed));
    eprintln!(
        "flood: {} frames of 8 MiB; records stored {stored} / rate limited {refused} / other {other}; \
         queries rate limited {}; 10 MiB put+get done after {:.1} s; target RSS max {max_rss} MiB; \
         {} requests refused by the target",
        frames.load(Ordering::Relaxed),
        queries_limited.load(Ordering::Relaxed),
        served_at.as_secs_f64(),
        limited - limited_before
    );
    assert!(limited_at_half > 0 && limited_late > limited_at_half, "the flood was refused all minute: {limited_at_half} then {limited_late}");
    assert!(max_rss > 0 && max_rss <= 256, "target RSS reached {max_rss} MiB");
    assert!(limited - limited_before > 1000, "the flooders were rate limited: {}", limited - limited_before);
    assert!(stored < 100_000 && stored + refused > 0, "records stored {stored}, refused {refused}");

    // Nobody failed the target, dropped it, or rebuilt its data: every vault still finds it as
    // the closest vault to an address it is closest to.
    std::thread::sleep(Duration::from_secs(5));
    let probe = loop {
        let a = Address::random();
        if close_group(&a, ids.iter().copied(), 1) == vec![target] {
            break a;
        }
    };
    rt.block_on(async {
        for &p in ids.iter().filter(|p| **p != target) {
            let s = client.vault_status(p).await.unwrap();
            assert_eq!(s.audit_failures, 0, "{p} failed an audit during the flood");
            match client.node().request(p, Request::FindClosest { target: probe, n: 1 }).await.unwrap() {
                Response::Closest(found) => assert_eq!(found, vec![target], "{p} lost the flooded vault"),
                other => panic!("{other:?}"),
            }
        }
    });
    assert_eq!(repaired(&client), repaired_before, "data of the flooded vault was rebuilt elsewhere");
    rt.block_on(client.close());
}

/// Fresh identities (free to make), a connection each, keep 8 streams of complete maximal
/// frames going to one vault. What QUIC buffers for them is bounded by its windows, what the
/// vault reads by its inbound budget (shared fairly, so an honest client's requests are read
/// first), and what it freed is handed back: RSS stays under 256 MiB during the flood and
/// comes back near idle after, and a put and a get through the vault succeed meanwhile.
#[test]
fn fresh_identities_flooding_maximal_frames_leave_memory_bounded() {
    const IDENTITIES: usize = 32;
    const STREAMS: usize = 8;
    let net = Net::up(8, 1 << 30);
    let rt = rt();
    let state = net.net.state().unwrap();
    let (pid, target): (u32, PeerId) = (state.vaults[0].pid, state.vaults[0].peer_id.parse().unwrap());
    let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
    let client = rt.block_on(net.connect());
    let idle = rss_mib(pid);
    let mut shard = kura_node::erasure::Coding::default().encode(b"flood").unwrap().remove(0);
    shard.data = vec![7u8; MAX_FRAME_LEN - (64 << 10)];
    let request = Request::PutShard(shard);
    let flood_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IDENTITIES {
        let config = NodeConfig::client(Keypair::generate_ed25519()).with_bootstrap(peers.clone());
        let (node, _inbound) = flood_rt.block_on(kura_node::spawn(config)).unwrap();
        for _ in 0..STREAMS {
            let (node, stop, answered, request) = (node.clone(), stop.clone(), answered.clone(), request.clone());
            tasks.push(flood_rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = node.request(target, request.clone()).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let started = Instant::now();
    let mut peak = 0;
    std::thread::sleep(Duration::from_secs(5));
    peak = peak.max(rss_mib(pid));
    let key = UserKey::generate();
    let bar = ProgressBar::hidden();
    let content: Vec<u8> = (0..2 * MIB).map(|_| rand::random::<u8>()).collect();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("during");
    std::fs::write(&src, &content).unwrap();
    let address = rt.block_on(client.put_path(&src, Visibility::Private, &key, &bar)).expect("put during the flood");
    let out = work.path().join("during.out");
    rt.block_on(client.get_path(address, &out, &key, &bar)).expect("get during the flood");
    assert!(std::fs::read(&out).unwrap() == content, "the file fetched during the flood differs");
    while started.elapsed() < Duration::from_secs(25) {
        peak = peak.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    drop(flood_rt);
    let frames = answered.load(Ordering::Relaxed);
    // The flooders' connections time out (they went without closing) and freed memory is
    // handed back every 10 s: RSS comes back near idle within 40 s.
    let quiet = Instant::now();
    let mut after = rss_mib(pid);
    while after > idle + 48 && quiet.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_secs(1));
        after = rss_mib(pid);
    }
    eprintln!("{frames} frames of 8 MiB answered; target RSS idle {idle} MiB, peak {peak} MiB, after {after} MiB");
    assert!(frames >= 10, "the flood reached the vault: {frames} frames");
    assert!(peak <= 256, "target RSS reached {peak} MiB during the flood");
    assert!(after <= idle + 48, "target RSS {after} MiB after the flood, {idle} MiB idle before it");
    rt.block_on(client.close());
}
