//! Pointers: set-to-visible latency (one client sets, another reads until it sees the new
//! version) and the RSS vaults spend holding pointers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kura_client::{Client, UserKey};
use kura_node::Address;
use kura_testnet::process;

use crate::healthy_testnet;

use crate::MIB;

fn median_rss(net: &kura_testnet::Testnet) -> Result<f64> {
    let mut rss: Vec<f64> =
        net.state()?.vaults.iter().filter_map(|v| process::rss_bytes(v.pid)).map(|b| b as f64 / MIB).collect();
    rss.sort_by(f64::total_cmp);
    rss.get(rss.len() / 2).copied().context("no vault RSS")
}

/// Runs the pointer benchmark on `nodes` vaults: `sets` timed updates, then enough pointers
/// that each vault holds `per_vault` of them.
pub fn run(nodes: usize, sets: usize, per_vault: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (net, _down) = healthy_testnet(&rt, nodes, 1 << 30)?;
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    rt.block_on(async {
        let writer = Client::connect(peers.clone()).await?;
        let reader = Client::connect(peers).await?;
        let key = UserKey::generate();
        let address = writer.create_pointer(&key, "bench", None).await?.address();
        let mut visible = Vec::with_capacity(sets);
        let mut set_only = Vec::with_capacity(sets);
        for _ in 0..sets {
            let start = Instant::now();
            let p = writer.set_pointer(&key, address, Address::random()).await?;
            set_only.push(start.elapsed());
            loop {
                if reader.get_pointer(address).await?.is_some_and(|seen| seen.version >= p.version) {
                    break;
                }
                anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "version {} never became visible", p.version);
            }
            visible.push(start.elapsed());
        }
        visible.sort();
        set_only.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("| pointer, {nodes} vaults, {sets} updates | p50 (ms) | p99 (ms) |");
        println!("|---|---|---|");
        println!("| set (read newest, sign, store on a majority) | {:.1} | {:.1} |", ms(set_only[sets / 2]), ms(set_only[sets * 99 / 100]));
        println!("| set → visible to another client | {:.1} | {:.1} |", ms(visible[sets / 2]), ms(visible[sets * 99 / 100]));

        // Each pointer is held by 8 vaults: this many give every vault `per_vault` on average.
        let count = per_vault * nodes / usize::from(kura_node::record::REPLICAS);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = median_rss(&net)?;
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..count {
            let (writer, key) = (writer.clone(), key.clone());
            tasks.spawn(async move { writer.create_pointer(&key, &format!("p{i}"), Some(Address::random())).await });
            while tasks.len() >= 32 {
                tasks.join_next().await.context("task")???;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let took = start.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = median_rss(&net)?;
        let held: u64 = {
            let mut total = 0;
            for v in net.state()?.vaults {
                let status = writer.vault_status(v.peer_id.parse()?).await?;
                total += status.records_by_kind.iter().find(|(k, _)| k == "pointer").map_or(0, |(_, n)| *n);
            }
            total
        };
        println!();
        println!("| {count} pointers created ({:.0}/s) | pointers per vault (mean) | vault RSS median before → after (MiB) | per 1,000 pointers (MiB) |", count as f64 / took.as_secs_f64());
        println!("|---|---|---|---|");
        let per_vault_held = held as f64 / nodes as f64;
        println!(
            "| | {per_vault_held:.0} | {before:.1} → {after:.1} | {:.2} |",
            (after - before) / per_vault_held * 1000.0
        );
        writer.close().await;
        reader.close().await;
        Ok(())
    })
}
