//! Repair after a vault dies: time to full redundancy per GiB it held, repair traffic per byte
//! lost, vault RSS while repairing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kura_client::{Client, UserKey};
use kura_node::wire::{Request, Response};
use kura_node::{close_group, Address, PeerId};
use kura_testnet::process;

use crate::{healthy_testnet, load};

use crate::MIB;

/// Chunks whose close group lacks an index. Every group of every chunk is asked at once, so a
/// pass takes well under a second and the time to full redundancy is not the poll's.
async fn short_chunks(client: &Client, ids: &[PeerId], chunks: &[Address]) -> usize {
    use futures::StreamExt;
    futures::stream::iter(chunks)
        .map(|chunk| async move {
            let asks = close_group(chunk, ids.iter().copied(), 8)
                .into_iter()
                .map(|peer| client.node().request(peer, Request::ShardIndices { chunk: *chunk }));
            let mut held = BTreeSet::new();
            for answer in futures::future::join_all(asks).await {
                if let Ok(Response::Indices(i)) = answer {
                    held.extend(i);
                }
            }
            usize::from(held.len() < 8)
        })
        .buffer_unordered(64)
        .fold(0, |sum, short| async move { sum + short })
        .await
}

/// Runs the repair benchmark: `files` random files of `file_mib` MiB on `nodes` vaults.
pub fn run(nodes: usize, files: usize, file_mib: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (net, down) = healthy_testnet(&rt, nodes, 8 << 30)?;
    let tmp = down.1.clone();
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    let client = rt.block_on(Client::connect(peers))?;
    let key = UserKey::generate();
    let (addresses, chunks) = rt.block_on(load::store_random_files(&client, &tmp, files, file_mib, &key))?;
    let state = net.state()?;
    let victim = state.vaults[nodes / 2].clone();
    let victim_peer: PeerId = victim.peer_id.parse()?;
    let (lost, moved_before) = rt.block_on(async {
        let lost = client.vault_status(victim_peer).await?.bytes_used;
        let mut moved = 0;
        for (_, p) in net.running_peers(&state) {
            moved += client.vault_status(p).await?.repair_bytes;
        }
        Ok::<_, anyhow::Error>((lost, moved))
    })?;

    // Client downloads go on throughout the repair, timed, to see whether repair starves them.
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    let fetcher = load::Fetcher::start(&rt, peers, addresses, key.clone(), tmp.join("fetched"));
    // Let a few fetches run before the kill, as the baseline.
    std::thread::sleep(Duration::from_secs(5));
    let killed = Instant::now();
    net.kill(&[victim.index], true)?;
    let ids: Vec<PeerId> = net.running_peers(&net.state()?).into_iter().map(|(_, p)| p).collect();
    let mut peak_rss = 0u64;
    let healed = rt.block_on(async {
        loop {
            for v in net.state()?.vaults.iter().filter(|v| v.index != victim.index) {
                peak_rss = peak_rss.max(process::rss_bytes(v.pid).unwrap_or(0));
            }
            if short_chunks(&client, &ids, &chunks).await == 0 {
                return Ok::<_, anyhow::Error>(killed.elapsed());
            }
            if killed.elapsed() > Duration::from_secs(600) {
                bail!("no full redundancy 600 s after the kill");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })?;
    let fetches = fetcher.finish(&rt)?;
    if fetches.iter().any(|(_, _, ok)| !ok) {
        bail!("a client fetch failed during the repair");
    }
    let fetches: Vec<(Instant, Duration)> = fetches.into_iter().map(|(t, d, _)| (t, d)).collect();
    let rate = |d: Duration| (file_mib as f64) / d.as_secs_f64();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let before: Vec<f64> = fetches.iter().filter(|(t, d)| *t + *d <= killed).map(|(_, d)| rate(*d)).collect();
    // Fetches overlapping the time before the vaults notice the death (their keep-alives give
    // up after 10 s), and fetches started after that while repair runs.
    let notice = killed + Duration::from_secs(10);
    let dying: Vec<f64> =
        fetches.iter().filter(|(t, d)| *t + *d > killed && *t < notice).map(|(_, d)| rate(*d)).collect();
    let during: Vec<f64> =
        fetches.iter().filter(|(t, _)| *t >= notice && *t < killed + healed).map(|(_, d)| rate(*d)).collect();
    let moved_after = rt.block_on(async {
        let mut moved = 0;
        for (_, p) in net.running_peers(&net.state()?) {
            moved += client.vault_status(p).await?.repair_bytes;
        }
        Ok::<_, anyhow::Error>(moved)
    })?;
    let gib = lost as f64 / (1024.0 * MIB);
    println!(
        "{nodes} vaults, {files} × {file_mib} MiB stored; one vault SIGKILLed holding {:.1} MiB of shards:",
        lost as f64 / MIB
    );
    println!("| kill → full redundancy (s) | per GiB lost (s) | repair traffic per byte lost | peak vault RSS while repairing (MiB) |");
    println!("|---|---|---|---|");
    println!(
        "| {:.1} | {:.1} | {:.2} | {:.1} |",
        healed.as_secs_f64(),
        healed.as_secs_f64() / gib,
        (moved_after - moved_before) as f64 / lost as f64,
        peak_rss as f64 / MIB
    );
    println!(
        "client get of {file_mib} MiB files, median MiB/s: {:.1} before the kill ({} fetches), {:.1} until the vaults \
         notice ({}), {:.1} during repair ({})",
        median(before.clone()),
        before.len(),
        median(dying.clone()),
        dying.len(),
        median(during.clone()),
        during.len()
    );
    let since = |t: Instant| t.checked_duration_since(killed).map_or_else(|| -(killed - t).as_secs_f64(), |d| d.as_secs_f64());
    let each: Vec<String> = fetches.iter().map(|(t, d)| format!("{:.1} s: {:.1}", since(*t), rate(*d))).collect();
    println!("each fetch (start from the kill: MiB/s): {}", each.join(", "));
    Ok(())
}
