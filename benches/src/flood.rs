//! A flood of maximal frames: fresh identities, each on its own connection, sending complete
//! 8 MiB requests to one vault as fast as it takes them. Prints the vault's RSS before, at its
//! peak during and after the flood, how long pings and 256 KiB requests to it take during the
//! flood, and the time of a 10 MiB put and get before and during it (on 8 vaults every vault
//! holds a shard of every chunk, so both go through the flooded one). The flood runs for
//! `secs` plus however long the measurements in its middle take.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use kura_client::{Client, UserKey, Visibility};
use kura_node::wire::{Request, MAX_FRAME_LEN};
use kura_testnet::process;

use crate::{healthy_testnet, MIB};

/// A request as large as a frame may be: a shard whose bytes do not match its header (the
/// vault reads, decodes and refuses it).
fn maximal_request() -> Result<Request> {
    let mut shard = kura_node::erasure::Coding::default().encode(b"flood")?.remove(0);
    shard.data = vec![7u8; MAX_FRAME_LEN - (64 << 10)];
    Ok(Request::PutShard(shard))
}

async fn put_get(client: &Client, dir: &std::path::Path, key: &UserKey, mib: usize) -> Result<(f64, f64)> {
    let src = dir.join(format!("put-{}", rand::random::<u32>()));
    std::fs::write(&src, (0..mib << 20).map(|_| rand::random::<u8>()).collect::<Vec<u8>>())?;
    let bar = ProgressBar::hidden();
    let t = Instant::now();
    let address = client.put_path(&src, Visibility::Private, key, &bar).await?;
    let put = t.elapsed().as_secs_f64();
    let out = dir.join("out");
    let t = Instant::now();
    client.get_path(address, &out, key, &bar).await?;
    let get = t.elapsed().as_secs_f64();
    if std::fs::read(&out)? != std::fs::read(&src)? {
        anyhow::bail!("the fetched file differs");
    }
    std::fs::remove_file(&out)?;
    std::fs::remove_file(&src)?;
    Ok((put, get))
}

/// Runs the flood: `identities` connections of `streams` streams each for `secs` seconds.
pub fn run(nodes: usize, identities: usize, streams: usize, secs: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (net, down) = healthy_testnet(&rt, nodes, 8 << 30)?;
    let tmp = down.1.clone();
    let state = net.state()?;
    let target = state.vaults.first().context("no vault")?;
    let (pid, target_id): (u32, kura_node::PeerId) = (target.pid, target.peer_id.parse()?);
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    let rss = || process::rss_bytes(pid).unwrap_or(0) as f64 / MIB;
    rt.block_on(async {
        let client = Client::connect(peers.clone()).await?;
        let key = UserKey::load_or_create(&tmp.join("home"))?;
        let idle = rss();
        let before = put_get(&client, &tmp, &key, 10).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let request = maximal_request()?;
        let mut flooders = Vec::new();
        for _ in 0..identities {
            let config = kura_node::NodeConfig::client(kura_node::Keypair::generate_ed25519()).with_bootstrap(peers.clone());
            let (node, _inbound) = kura_node::spawn(config).await?;
            for _ in 0..streams {
                let (node, stop, sent, refused, request) = (node.clone(), stop.clone(), sent.clone(), refused.clone(), request.clone());
                flooders.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match node.request(target_id, request.clone()).await {
                            Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                            Err(kura_node::NodeError::Remote { error, .. }) => {
                                if sent.fetch_add(1, Ordering::Relaxed) % 100 == 0 {
                                    eprintln!("a flood request was refused: {error}");
                                }
                                0
                            }
                            Err(e) => {
                                if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("a flood request failed: {e}");
                                }
                                0
                            }
                        };
                    }
                }));
            }
            flooders.push(tokio::spawn(async move {
                // Keeps the node alive for its streams.
                let _node = node;
                std::future::pending::<()>().await
            }));
        }
        let peak = Arc::new(AtomicU64::new(0));
        let watcher = {
            let (peak, stop) = (peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(process::rss_bytes(pid).unwrap_or(0), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(secs / 2)).await;
        let mut pings = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let ok = client.node().request(target_id, Request::Ping).await.is_ok();
            pings.push((t.elapsed().as_secs_f64() * 1000.0, ok));
        }
        pings.sort_by(|a, b| a.0.total_cmp(&b.0));
        // A shard's worth (256 KiB) each: the path a put's shards take.
        let mut shard = kura_node::erasure::Coding::default().encode(b"honest")?.remove(0);
        shard.data = vec![1u8; 256 << 10];
        let mut sends = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let _ = client.node().request(target_id, Request::PutShard(shard.clone())).await;
            sends.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        sends.sort_by(f64::total_cmp);
        let during = put_get(&client, &tmp, &key, 10).await;
        tokio::time::sleep(Duration::from_secs(secs / 2)).await;
        stop.store(true, Ordering::Relaxed);
        for f in flooders {
            f.abort();
        }
        watcher.await?;
        let frames = sent.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
        let at_end = rss();
        tokio::time::sleep(Duration::from_secs(15)).await;
        let after = rss();
        client.close().await;
        println!("flood requests answered {}, failed {}", sent.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
        println!("{identities} identities x {streams} streams of {} MiB frames for {secs} s at one of {nodes} vaults:", MAX_FRAME_LEN >> 20);
        println!("| frames answered | vault RSS idle | peak during | at the end | 15 s after |");
        println!("|---|---|---|---|---|");
        println!(
            "| {frames} ({} MiB) | {idle:.0} MiB | {:.0} MiB | {at_end:.0} MiB | {after:.0} MiB |",
            frames * (MAX_FRAME_LEN as u64 >> 20),
            peak.load(Ordering::Relaxed) as f64 / MIB
        );
        println!("pings to the flooded vault during the flood: median {:.1} ms, slowest {:.1} ms, {} of 20 answered", pings[10].0, pings[19].0, pings.iter().filter(|p| p.1).count());
        println!("256 KiB requests to the flooded vault during the flood: median {:.1} ms, slowest {:.1} ms", sends[10], sends[19]);
        println!("| 10 MiB | put s | get s |");
        println!("|---|---|---|");
        println!("| before | {:.2} | {:.2} |", before.0, before.1);
        match during {
            Ok((p, g)) => println!("| during | {p:.2} | {g:.2} |"),
            Err(e) => println!("| during | failed: {e} | |"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    drop(down);
    Ok(())
}
