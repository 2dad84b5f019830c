//! Network formation, idle RSS and lookup latency.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kura_node::Address;
use kura_testnet::{process, Testnet};

use crate::{healthy_testnet, load};

/// Runs the network benchmark.
pub fn run(nodes: Vec<usize>, lookups: usize, idle: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let largest = nodes.iter().copied().max().context("no sizes")?;
    println!("| vaults | up → healthy (s) | idle RSS per vault, median / max (MiB) |");
    println!("|---|---|---|");
    for &n in &nodes {
        let start = Instant::now();
        let (net, guard) = healthy_testnet(&rt, n, 1 << 30)?;
        let healthy = start.elapsed();
        std::thread::sleep(Duration::from_secs(idle));
        let state = net.state()?;
        let mut rss: Vec<f64> =
            state.vaults.iter().filter_map(|v| process::rss_bytes(v.pid)).map(|b| b as f64 / 1048576.0).collect();
        rss.sort_by(f64::total_cmp);
        println!(
            "| {n} | {:.2} | {:.1} / {:.1} |",
            healthy.as_secs_f64(),
            rss[rss.len() / 2],
            rss[rss.len() - 1]
        );
        if n == largest {
            rt.block_on(lookup_latency(&net, lookups))?;
        }
        drop(guard);
    }
    Ok(())
}

async fn lookup_latency(net: &Testnet, count: usize) -> Result<()> {
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    let client = kura_client::Client::connect(peers).await?;
    // Warm up: the first lookups also open QUIC connections to the vaults they reach.
    let mut cold = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        client.node().lookup(Address::random(), 8).await?;
        cold.push(t.elapsed());
    }
    let mut times = Vec::with_capacity(count);
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let l = client.node().lookup(Address::random(), 8).await?;
        times.push(t.elapsed());
        requests.push(l.requests);
    }
    client.close().await;
    times.sort();
    requests.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = net.running(&net.state()?).len();
    println!();
    println!("closest_vaults(addr, 8) from a client on {n} vaults, {count} sequential lookups after 20 warm-up:");
    println!("| p50 (ms) | p99 (ms) | max (ms) | first warm-up lookup (ms) | requests per lookup p50 / p99 |");
    println!("|---|---|---|---|---|");
    println!(
        "| {:.2} | {:.2} | {:.2} | {:.2} | {} / {} |",
        ms(times[count / 2]),
        ms(times[count * 99 / 100]),
        ms(times[count - 1]),
        ms(cold[0]),
        requests[count / 2],
        requests[count * 99 / 100]
    );
    Ok(())
}

/// Lookup latency and file fetches around a vault's death. One long-lived client looks up
/// random addresses back to back, and another fetches stored 64 MiB files back to back, from
/// 3 s before a vault is SIGKILLed until 25 s after; each second's lookups and every fetch are
/// printed.
pub fn death(nodes: usize, files: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (net, guard) = healthy_testnet(&rt, nodes, 1 << 30)?;
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    let key = kura_client::UserKey::generate();
    let (addresses, _) = rt.block_on(async {
        let client = kura_client::Client::connect(peers.clone()).await?;
        let stored = load::store_random_files(&client, &guard.1, files, 64, &key).await;
        client.close().await;
        stored
    })?;
    let victim = *net.running(&net.state()?).first().context("no vault")?;
    let start = Instant::now();
    let kill_at = Duration::from_secs(3);
    let end = kill_at + Duration::from_secs(25);
    // Seconds from the kill to `t`.
    let since_kill = move |t: Instant| t.duration_since(start).as_secs_f64() - kill_at.as_secs_f64();
    let fetcher = load::Fetcher::start(&rt, peers.clone(), addresses, key, guard.1.join("fetched"));
    let lookups = rt.block_on(async {
        let client = kura_client::Client::connect(peers).await?;
        let mut killed = false;
        let mut samples = Vec::new();
        while start.elapsed() < end {
            if !killed && start.elapsed() >= kill_at {
                net.kill(&[victim], true)?;
                killed = true;
            }
            let t = Instant::now();
            let ok = client.node().lookup(Address::random(), 8).await.is_ok();
            samples.push((since_kill(t), t.elapsed(), ok));
        }
        client.close().await;
        Ok::<_, anyhow::Error>(samples)
    })?;
    let fetches = fetcher.finish(&rt)?;
    drop(guard);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("lookups from one client on {nodes} vaults around a SIGKILL at t = 0 (another client fetching meanwhile):");
    println!("| second | lookups | failed | p50 (ms) | max (ms) |");
    println!("|---|---|---|---|---|");
    for second in -3i64..25 {
        let at = |t: f64| t.floor() as i64 == second;
        let mut times: Vec<Duration> = lookups.iter().filter(|(t, _, _)| at(*t)).map(|(_, d, _)| *d).collect();
        let failed = lookups.iter().filter(|(t, _, ok)| at(*t) && !ok).count();
        times.sort();
        match times.last() {
            Some(max) => println!("| {second} | {} | {failed} | {:.0} | {:.0} |", times.len(), ms(times[times.len() / 2]), ms(*max)),
            None => println!("| {second} | 0 | 0 | – | – |"),
        }
    }
    println!();
    println!("64 MiB fetches:");
    println!("| start (s from the kill) | took (s) | MiB/s | ok |");
    println!("|---|---|---|---|");
    for (t, d, ok) in fetches {
        println!("| {:.1} | {:.2} | {:.1} | {ok} |", since_kill(t), d.as_secs_f64(), 64.0 / d.as_secs_f64());
    }
    Ok(())
}
