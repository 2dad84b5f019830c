//! `netbench`: end-to-end figures of a real local Kura network (release build).
//!
//! `cargo run --release -p kura-benches --bin netbench -- network --nodes 10,25,50`
//! prints, per network size: time from `up` to healthy, idle vault RSS; and on the largest,
//! `closest_vaults` latency (p50/p99) and requests per lookup from a client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kura_node::Address;
use kura_testnet::{process, HealthConfig, Testnet};

/// Kura's end-to-end benchmarks.
#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Network formation, idle RSS and lookup latency.
    Network {
        /// Network sizes to measure, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "10,25,50")]
        nodes: Vec<usize>,
        /// Lookups timed on the largest network.
        #[arg(long, default_value_t = 500)]
        lookups: usize,
        /// Seconds the network idles before RSS is read.
        #[arg(long, default_value_t = 10)]
        idle: u64,
    },
}

fn main() -> Result<()> {
    if let Some(code) = process::run_as_vault_if_invoked_so() {
        std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
    }
    let Cli { command: Command::Network { nodes, lookups, idle } } = Cli::parse();
    // Keep the benchmark's testnets out of the user's latest-testnet pointer.
    std::env::set_var("XDG_DATA_HOME", std::env::temp_dir().join("kura-netbench-xdg"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let largest = nodes.iter().copied().max().context("no sizes")?;
    println!("| vaults | up → healthy (s) | idle RSS per vault, median / max (MiB) |");
    println!("|---|---|---|");
    for &n in &nodes {
        let tmp = tempdir()?;
        let net = Testnet::new(tmp.clone());
        let guard = Down(net.clone(), tmp);
        let start = Instant::now();
        net.up(n, 1 << 30)?;
        let report = rt.block_on(net.wait_healthy(Duration::from_secs(120), HealthConfig::default()))?;
        let healthy = start.elapsed();
        if !report.healthy() {
            bail!("{n} vaults not healthy after 120 s: {:?}", report.problems());
        }
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

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kura-netbench-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Stops the testnet and removes its directory, also on error.
struct Down(Testnet, PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = self.0.down();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}
