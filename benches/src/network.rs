//! Network formation, idle RSS and lookup latency.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kura_node::Address;
use kura_testnet::{process, Testnet};

use crate::healthy_testnet;

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

