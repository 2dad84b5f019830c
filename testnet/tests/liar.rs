//! Clients trust no single vault: a fake vault joins a real 10-vault testnet, takes its share
//! of a file's shards like an honest one (and passes audits with them), but serves every shard
//! tampered. A download comes back byte-identical, and the fake is asked for shards only until
//! its first lie, not once per chunk. Repair is not fooled either: when two honest vaults vanish,
//! the vaults that rebuild their shards skip the liar's lies and report them, and redundancy
//! comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use kura_client::{UserKey, Visibility};
use kura_node::wire::{RemoteError, Request, Response};
use kura_node::{audit, Address, NodeConfig, Shard};

mod common;
use common::{rt, running_ids, Net};

const MIB: usize = 1 << 20;

#[test]
fn a_vault_serving_bad_shards_is_skipped_for_the_rest_of_the_download() {
    // Ten, so that the eight left after two vanish are a whole close group without the liar.
    let net = Net::up(10, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let rt = rt();
    let peers = kura_client::peers::read_peers_file(&net.peers_file()).unwrap();
    let asked = Arc::new(AtomicU64::new(0));
    let held: Arc<Mutex<HashMap<Address, Vec<Shard>>>> = Arc::default();

    // The liar: a real node in vault mode, in every routing table, answering from memory on
    // its own threads (so that it answers as fast as it can; a lie that arrives after the
    // honest shards that decode the chunk is never read).
    let liar_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (liar, mut inbound) =
        liar_rt.block_on(kura_node::spawn(
            NodeConfig::vault(kura_node::puzzle::generate(kura_testnet::process::TESTNET_ID_DIFFICULTY)).with_bootstrap(peers),
        )).unwrap();
    {
        let (asked, held, liar) = (asked.clone(), held.clone(), liar.clone());
        liar_rt.spawn(async move {
            while let Some(req) = inbound.recv().await {
                let (_, request, responder) = req.into_parts();
                let mut held = held.lock().unwrap();
                let response = match request {
                    Request::Ping => Response::Pong,
                    Request::PutShard(s) => {
                        held.entry(s.header.address()).or_default().push(s);
                        Response::Stored
                    }
                    Request::ShardIndices { chunk } => {
                        Response::Indices(held.get(&chunk).map(|v| v.iter().map(|s| s.header.index).collect()).unwrap_or_default())
                    }
                    Request::Audit { chunk, index, challenge } => {
                        match held.get(&chunk).and_then(|v| v.iter().find(|s| s.header.index == index)) {
                            Some(s) => Response::Proof(audit::prove(&s.data, &challenge).unwrap()),
                            None => Response::Error(RemoteError::NotHeld { chunk, index }),
                        }
                    }
                    Request::GetShards { chunk } => {
                        asked.fetch_add(1, Ordering::Relaxed);
                        // Its own shards of the chunk, tampered; for a chunk it does not hold,
                        // a shard of another chunk.
                        let mut lies = held.get(&chunk).or_else(|| held.values().next()).cloned().unwrap_or_default();
                        for s in &mut lies {
                            s.data[0] ^= 0xff;
                        }
                        Response::Shards(lies)
                    }
                    Request::FindClosest { target, n } => {
                        drop(held);
                        match liar.closest_vaults(target, usize::from(n)).await {
                            Ok(found) => Response::Closest(found),
                            Err(e) => Response::Error(RemoteError::Internal(e.to_string())),
                        }
                    }
                    _ => Response::Error(RemoteError::Invalid("not served".into())),
                };
                responder.respond(response);
            }
        });
    }
    let key = UserKey::generate();
    let content: Vec<u8> = (0..40 * MIB).map(|_| rand::random::<u8>()).collect();
    let address = rt.block_on(async {
        // Wait until the vaults know the liar, so it takes its share of the file.
        let client = net.connect().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !client.closest_vaults(Address::random(), 20).await.unwrap().contains(&liar.peer_id()) {
            assert!(std::time::Instant::now() < deadline, "the liar never joined");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let src = work.path().join("f");
        std::fs::write(&src, &content).unwrap();
        let address = client.put_path(&src, Visibility::Private, &key, &ProgressBar::hidden()).await.unwrap();
        let chunks_with_liar = held.lock().unwrap().len();
        assert!(chunks_with_liar >= 1, "the liar holds no shard to lie with");
        client.close().await;

        let client = net.connect().await;
        let before = asked.load(Ordering::Relaxed);
        let out = work.path().join("out");
        client.get_path(address, &out, &key, &ProgressBar::hidden()).await.expect("the download routes around the liar");
        assert!(std::fs::read(&out).unwrap() == content, "byte-identical");
        let asked_in_download = asked.load(Ordering::Relaxed) - before;
        eprintln!("liar held shards of {chunks_with_liar} chunks; asked {asked_in_download} times in the download");
        // The root record's fetch is its own download; the file's chunks are fetched a few
        // at a time, so some requests are in flight when the first lie arrives. Without
        // skipping, it is asked for every chunk whose close group it is in (most of 41).
        assert!(asked_in_download <= 12, "the liar was asked {asked_in_download} times: not skipped after lying");
        client.close().await;
        address
    });

    // Repair trusts no single vault either. Two honest vaults vanish with their data, so the
    // chunks they held are rebuilt, and the liar, a holder in most close groups, serves its
    // tampered shards to the vaults that rebuild. Without checking each shard as it arrives, a
    // rebuild that counted the liar's shard failed every time it was tried.
    let victims = [1, 2];
    net.net.kill(&victims, true).unwrap();
    for i in victims {
        std::fs::remove_dir_all(net.net.layout().vault_root(i)).unwrap();
    }
    let mut chunks = kura_client::chunk_addresses(&content, Visibility::Private, &key, Default::default()).unwrap();
    chunks.push(address);
    let asked_before_repair = asked.load(Ordering::Relaxed);
    rt.block_on(async {
        // "Full" here is: the 8 shards of every chunk are held by 8 different vaults, the
        // liar's proven copy included (the liar's holdings are read from its memory: a
        // client's request to it is not what this test is about, and one sometimes failed).
        let start = std::time::Instant::now();
        let everyone = running_ids(&net);
        loop {
            let client = net.connect().await;
            let mut short = Vec::new();
            for &chunk in &chunks {
                let mut holdings = Vec::new();
                for &peer in &everyone {
                    if let Ok(Response::Indices(i)) = client.node().request(peer, Request::ShardIndices { chunk }).await {
                        holdings.push(i);
                    }
                }
                let liars = held.lock().unwrap().get(&chunk).map(|v| v.iter().map(|s| s.header.index).collect());
                holdings.push(liars.unwrap_or_default());
                if distinct_holders(&holdings) < 8 {
                    short.push(format!("{chunk}: {holdings:?}"));
                }
            }
            client.close().await;
            if short.is_empty() {
                eprintln!("full redundancy after {:.1} s", start.elapsed().as_secs_f64());
                break;
            }
            assert!(start.elapsed().as_secs() < 120, "{} chunks still short, e.g. {} (vaults asked: {everyone:?})", short.len(), short[0]);
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let client = net.connect().await;
        let mut reported = 0;
        for peer in running_ids(&net) {
            let status = client.vault_status(peer).await.unwrap();
            assert_eq!(status.audit_failures, 0, "{peer} penalized an honest vault");
            reported += status.bad_shards_served;
        }
        // Every shard fetch a repairing vault made of the liar got a lie back, and each lie
        // must have been caught. (Which vaults ask the liar depends on the order of the
        // holders, so the count varies from run to run.)
        let asked_in_repair = asked.load(Ordering::Relaxed) - asked_before_repair;
        eprintln!("repairing vaults asked the liar {asked_in_repair} times and reported {reported} bad answers");
        assert!(reported <= asked_in_repair, "{reported} reports for {asked_in_repair} answers");
        assert!(asked_in_repair == 0 || reported >= 1, "the liar's answers to repair went unnoticed");
        let out = work.path().join("out-after-repair");
        client.get_path(address, &out, &key, &ProgressBar::hidden()).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == content, "byte-identical after repair");
        client.close().await;
    });
    liar_rt.block_on(liar.shutdown());
}

/// How many of the shard indices `holdings` (one list per vault) can be held by different
/// vaults: a maximum matching of indices to vaults, by augmenting paths.
fn distinct_holders(holdings: &[Vec<u8>]) -> usize {
    fn assign(v: usize, holdings: &[Vec<u8>], owner: &mut HashMap<u8, usize>, seen: &mut Vec<u8>) -> bool {
        for &i in &holdings[v] {
            if seen.contains(&i) {
                continue;
            }
            seen.push(i);
            let free = match owner.get(&i) {
                None => true,
                Some(&other) => assign(other, holdings, owner, seen),
            };
            if free {
                owner.insert(i, v);
                return true;
            }
        }
        false
    }
    let mut owner = HashMap::new();
    (0..holdings.len()).filter(|&v| assign(v, holdings, &mut owner, &mut Vec::new())).count()
}

#[test]
fn distinct_holders_counts_a_matching() {
    assert_eq!(distinct_holders(&[vec![0, 1], vec![0], vec![]]), 2);
    assert_eq!(distinct_holders(&[vec![0], vec![0], vec![1]]), 2);
    assert_eq!(distinct_holders(&[vec![0, 1, 2]]), 1);
}
