//! Messaging: proof-of-work time by message size, send-to-visible latency with the recipient
//! watching (as `kura msg watch` polls), and the messages per second one inbox accepts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kura_client::messages::{seal, Body, Letter};
use kura_client::{Account, Client};
use kura_node::message::{Difficulty, Message, DEFAULT_TTL_SECS};
use kura_node::Record;

use crate::healthy_testnet;

fn unix_now() -> u64 {
    kura_node::message::unix_now().as_secs()
}

/// A sealed letter of `text_len` bytes of text from `from` to `to`, with its work done.
fn mined(from: &Account, to: &Account, seq: u64, text_len: usize, ttl: u64) -> Result<Message> {
    let letter = Letter {
        from: from.id(),
        to: to.id(),
        seq,
        sent_ms: unix_now() * 1000 + seq,
        body: Body::Text { text: "x".repeat(text_len), attachments: vec![] },
    };
    let sealed = seal(from, &letter)?;
    let now = unix_now();
    Ok(Message::new(to.id().inbox(), now, now + ttl, sealed, Difficulty::DEFAULT))
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Runs the messaging benchmark on `nodes` vaults: `latency` timed messages, then `burst`
/// messages sent to one inbox by `senders` clients at once.
pub fn run(nodes: usize, latency: usize, burst: usize, senders: usize, poll_ms: u64) -> Result<()> {
    let (alice, bob) = (Account::generate(), Account::generate());

    // One core's trial rate, from two million trials.
    let id = [7u8; 32];
    let t = Instant::now();
    let mut fold = 0u64;
    for n in 0..2_000_000u64 {
        fold ^= kura_node::message::trial(n, &id);
    }
    let rate = 2e6 / t.elapsed().as_secs_f64();
    std::hint::black_box(fold);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("Proof of work at the default difficulty, {DEFAULT_TTL_SECS} s (14 days) lifetime; one core tries {:.1} M nonces/s:", rate / 1e6);
    println!("| text (bytes) | sealed (bytes) | expected trials | expected on one core (ms) | measured on {cores} cores, mean of n (ms) |");
    println!("|---|---|---|---|---|");
    for (text_len, n) in [(100, 20), (900, 20), (3_500, 20), (15_000, 10), (60_000, 5)] {
        let mut total = Duration::ZERO;
        let mut sealed_len = 0;
        for seq in 0..n {
            let t = Instant::now();
            let m = mined(&alice, &bob, seq, text_len, DEFAULT_TTL_SECS)?;
            total += t.elapsed();
            sealed_len = m.sealed.len();
        }
        let trials = Difficulty::DEFAULT.trials(sealed_len, DEFAULT_TTL_SECS);
        println!(
            "| {text_len} | {sealed_len} | {trials} | {:.0} | {:.0} (n = {n}) |",
            trials as f64 / rate * 1000.0,
            total.as_secs_f64() * 1000.0 / n as f64
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (net, _down) = healthy_testnet(&rt, nodes, 1 << 30)?;
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    rt.block_on(async {
        let sender = Client::connect(peers.clone()).await?;
        let reader = Client::connect(peers.clone()).await?;
        // Mined before the clock starts: the target is send-to-visible without the work.
        let mut messages = Vec::new();
        for seq in 0..latency as u64 {
            messages.push(mined(&alice, &bob, seq, 200, 3600)?);
        }
        let sent_at: std::sync::Arc<std::sync::Mutex<HashMap<[u8; 32], Instant>>> = Default::default();
        let watcher = {
            let (reader, bob, sent_at) = (reader.clone(), bob.clone(), sent_at.clone());
            tokio::spawn(async move {
                let mut seen = HashMap::new();
                let start = Instant::now();
                while seen.len() < latency && start.elapsed() < Duration::from_secs(600) {
                    if let Ok(list) = reader.list_inbox(&bob).await {
                        let now = Instant::now();
                        for m in list {
                            if let Some(t0) = sent_at.lock().map_or(None, |s| s.get(&m.id()).copied()) {
                                seen.entry(m.id()).or_insert(now - t0);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(poll_ms)).await;
                }
                seen.into_values().collect::<Vec<Duration>>()
            })
        };
        let mut store_times = Vec::new();
        for m in messages {
            let t0 = Instant::now();
            sent_at.lock().map_err(|_| anyhow::anyhow!("lock"))?.insert(m.id(), t0);
            sender.replicate(Record::Message(m), "bench message").await?;
            store_times.push(t0.elapsed());
            // Spread over the poll interval, so the latencies sample every phase of it.
            tokio::time::sleep(Duration::from_millis(poll_ms * 7 / 5)).await;
        }
        let mut visible = watcher.await.context("watcher")?;
        anyhow::ensure!(visible.len() == latency, "only {} of {latency} messages became visible", visible.len());
        visible.sort();
        store_times.sort();
        println!();
        println!("| {nodes} vaults, {latency} messages of 200 B, recipient polling every {poll_ms} ms | p50 (ms) | p99 (ms) |");
        println!("|---|---|---|");
        println!("| store on a majority of the inbox's group | {:.1} | {:.1} |", pct(&store_times, 50), pct(&store_times, 99));
        println!("| send → seen by the watching recipient | {:.1} | {:.1} |", pct(&visible, 50), pct(&visible, 99));

        // Throughput into one inbox: messages mined first (1 hour lifetime), then sent by
        // `senders` clients at once, 8 in flight each.
        let carol = Account::generate();
        let mut batches: Vec<Vec<Message>> = vec![Vec::new(); senders];
        let from = Account::generate();
        for i in 0..burst {
            batches[i % senders].push(mined(&from, &carol, i as u64, 200, 3600)?);
        }
        let mut clients = Vec::new();
        for _ in 0..senders {
            clients.push(Client::connect(peers.clone()).await?);
        }
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (client, batch) in clients.iter().cloned().zip(batches) {
            tasks.spawn(async move {
                use futures::StreamExt;
                let results: Vec<_> = futures::stream::iter(batch)
                    .map(|m| {
                        let client = client.clone();
                        async move { client.replicate(Record::Message(m), "burst").await }
                    })
                    .buffer_unordered(8)
                    .collect()
                    .await;
                results.into_iter().filter(|r| r.is_ok()).count()
            });
        }
        let mut stored = 0;
        while let Some(n) = tasks.join_next().await {
            stored += n?;
        }
        let took = start.elapsed().as_secs_f64();
        let listed = reader.list_inbox(&carol).await?.len();
        println!();
        println!("| one inbox, {burst} messages from {senders} clients | stored | listed after | messages/s |");
        println!("|---|---|---|---|");
        println!("| {nodes} vaults | {stored} | {listed} | {:.0} |", stored as f64 / took);
        for c in clients {
            c.close().await;
        }
        sender.close().await;
        reader.close().await;
        Ok(())
    })
}
