//! Churn on real vault processes: 30 files (150 MiB) on 20 vaults; vaults leave one at a
//! time until 10 are gone, and repair restores full redundancy after each; then 10 new vaults
//! join, shards move to them, and every file still fetches byte-identical; then 4 vaults stop
//! at the same instant, every file still fetches, and redundancy comes back.

use indicatif::ProgressBar;
use kura_client::UserKey;

mod common;
use common::{running_ids, under_replicated, wait_full, Net};

const MIB: usize = 1 << 20;

#[test]
fn data_survives_vaults_leaving_one_by_one_and_moves_to_new_vaults() {
    let net = Net::up(20, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let rt = common::rt();
    let key = UserKey::generate();
    let bar = ProgressBar::hidden();

    // 30 files of mixed sizes, 150 MiB in all.
    let sizes: Vec<usize> = (0..30).map(|i| [MIB, 3 * MIB, 6 * MIB + 17, 11 * MIB][i % 4]).collect();
    let total: usize = sizes.iter().sum();
    assert!(total >= 150 * MIB, "{total}");
    let (files, chunks) = rt.block_on(common::store_random_files(&net, work.path(), &sizes, &key));
    rt.block_on(wait_full(&net, &chunks, "after upload"));

    // Ten vaults leave, one at a time; repair restores every chunk in between.
    for round in 1..=10 {
        let victim = net.net.pick_running(1).unwrap();
        net.net.kill(&victim, false).unwrap();
        rt.block_on(wait_full(&net, &chunks, &format!("after departure {round} (vault {})", victim[0])));
    }
    let fetch_all = |label: &str| {
        let started = std::time::Instant::now();
        rt.block_on(async {
            let client = net.connect().await;
            for (i, (path, address)) in files.iter().enumerate() {
                let out = work.path().join(format!("{label}-{i}"));
                client.get_path(*address, &out, &key, &bar).await.unwrap_or_else(|e| panic!("{label} file {i}: {e}"));
                assert!(std::fs::read(&out).unwrap() == std::fs::read(path).unwrap(), "{label} file {i} differs");
                std::fs::remove_file(&out).unwrap();
            }
            eprintln!("{label}: {} files fetched in {:.1} s", files.len(), started.elapsed().as_secs_f64());
            let bad = under_replicated(&client, &running_ids(&net), &chunks, true).await;
            assert!(bad.is_empty(), "{label}: chunks without 8 verified shards: {bad:?}");
            eprintln!("{label}: every shard verified after {:.1} s", started.elapsed().as_secs_f64());
            client.close().await;
        })
    };
    fetch_all("after churn");

    // Ten new vaults join: shards move onto the new close-group members.
    net.net.add(10, 1 << 30).unwrap();
    let stats = rt.block_on(async {
        wait_full(&net, &chunks, "after 10 joined").await;
        let client = net.connect().await;
        let mut handed = 0;
        for (_, peer) in net.net.running_peers(&net.net.state().unwrap()) {
            handed += client.vault_status(peer).await.unwrap().shards_handed_over;
        }
        client.close().await;
        handed
    });
    assert!(stats > 0, "no shard was handed over to the new vaults");
    fetch_all("after joins");

    // Four vaults stop at the same instant: no time to repair in between. Every file still
    // fetches at once, and redundancy comes back.
    let four = net.net.pick_running(4).unwrap();
    net.net.kill(&four, false).unwrap();
    rt.block_on(async {
        let client = net.connect().await;
        for (i, (path, address)) in files.iter().enumerate() {
            let out = work.path().join(format!("four-{i}"));
            client.get_path(*address, &out, &key, &bar).await.unwrap_or_else(|e| panic!("file {i} with 4 down: {e}"));
            assert!(std::fs::read(&out).unwrap() == std::fs::read(path).unwrap());
        }
        client.close().await;
        wait_full(&net, &chunks, "after 4 stopped at once").await;
    });
}
