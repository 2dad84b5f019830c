//! Shared by the process-level tests: a testnet whose vaults are stopped by pid however the
//! test ends.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kura_client::Client;
use kura_node::wire::{Request, Response};
use kura_node::{close_group, Address, PeerId};

use kura_testnet::state::Layout;
use kura_testnet::{HealthConfig, Testnet};

/// The `kura-vault` binary cargo built beside the test's `kura-testnet`.
pub fn vault_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_kura-testnet")).with_file_name("kura-vault");
    assert!(bin.is_file(), "{} missing: run the tests with --workspace", bin.display());
    bin
}

/// The `kura` CLI binary cargo built beside the test's `kura-testnet`.
pub fn kura_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_kura-testnet")).with_file_name("kura");
    assert!(bin.is_file(), "{} missing: run the tests with --workspace", bin.display());
    bin
}

/// A two-thread runtime for a test's client side.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Stops every vault the testnet in `dir` ever started, whatever happened to the test.
pub struct Guard {
    pub dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(state) = Layout::new(self.dir.clone()).load() {
            for v in state.vaults {
                kura_testnet::process::stop(v.pid, true, Duration::from_secs(5));
            }
        }
    }
}

/// A running testnet in a temporary directory.
pub struct Net {
    pub net: Testnet,
    pub guard: Guard,
    pub tmp: tempfile::TempDir,
}

impl Net {
    /// Starts `nodes` vaults of `capacity` bytes and waits until healthy.
    pub fn up(nodes: usize, capacity: u64) -> Net {
        Self::up_with(nodes, capacity, &[])
    }

    /// [`Net::up`] with extra `kura-vault run` flags.
    pub fn up_with(nodes: usize, capacity: u64, vault_args: &[&str]) -> Net {
        // SAFETY-free: every test in this process sets the same values.
        std::env::set_var(kura_testnet::process::VAULT_BIN_ENV, vault_bin());
        let mut tmp = tempfile::tempdir().unwrap();
        // For a post-mortem: the vaults' roots and logs stay behind.
        if std::env::var_os("KURA_TEST_KEEP").is_some() {
            tmp.disable_cleanup(true);
            eprintln!("keeping {}", tmp.path().display());
        }
        std::env::set_var("XDG_DATA_HOME", std::env::temp_dir().join("kura-test-xdg"));
        let dir = tmp.path().join("net");
        let net = Testnet::new(dir.clone());
        let guard = Guard { dir };
        net.up_with(nodes, capacity, vault_args.iter().map(|a| a.to_string()).collect()).unwrap();
        let net = Net { net, guard, tmp };
        tokio::runtime::Runtime::new().unwrap().block_on(net.assert_healthy());
        net
    }

    /// Waits (up to 60 s) until the network is healthy; fails the test if it never is.
    pub async fn assert_healthy(&self) {
        let report = self
            .net
            .wait_healthy(Duration::from_secs(60), HealthConfig { probes: 20, ..Default::default() })
            .await
            .unwrap();
        assert!(report.healthy(), "testnet not healthy: {:?}", report.problems());
    }

    /// A client joined through the running vaults.
    pub async fn connect(&self) -> kura_client::Client {
        kura_client::Client::connect(kura_client::peers::read_peers_file(&self.peers_file()).unwrap()).await.unwrap()
    }

    /// The testnet's faucet: its genesis account.
    #[allow(dead_code)]
    pub fn faucet(&self) -> kura_client::Wallet {
        kura_client::Wallet::faucet(&self.net.layout().dir).unwrap().expect("a testnet has a genesis key")
    }

    /// The peers file.
    pub fn peers_file(&self) -> PathBuf {
        self.net.layout().peers_file()
    }
}

pub fn running_ids(net: &Net) -> Vec<PeerId> {
    net.net.running_peers(&net.net.state().unwrap()).into_iter().map(|(_, p)| p).collect()
}

/// Chunks whose current close group does not hold all 8 shard indices, one per member.
/// With `verified`, members are asked for the shards themselves (which vaults verify before
/// serving); otherwise only for the indices they hold.
pub async fn under_replicated(client: &Client, ids: &[PeerId], chunks: &[Address], verified: bool) -> Vec<String> {
    let mut bad = Vec::new();
    for &chunk in chunks {
        let group = close_group(&chunk, ids.iter().copied(), 8);
        let mut held = BTreeSet::new();
        let mut empty = 0;
        for &peer in &group {
            let answer = if verified {
                client.node().request(peer, Request::GetShards { chunk }).await.map(|r| match r {
                    Response::Shards(s) => s.into_iter().filter(|s| s.verify().is_ok()).map(|s| s.header.index).collect(),
                    _ => Vec::new(),
                })
            } else {
                client.node().request(peer, Request::ShardIndices { chunk }).await.map(|r| match r {
                    Response::Indices(i) => i,
                    _ => Vec::new(),
                })
            };
            let indices = answer.unwrap_or_default();
            if indices.is_empty() {
                empty += 1;
            }
            held.extend(indices);
        }
        if held.len() < 8 || empty > 0 {
            bad.push(format!("{chunk}: indices {held:?}, {empty} members empty"));
        }
    }
    bad
}

/// Waits (up to 90 s) until every chunk's current close group holds all 8 indices.
pub async fn wait_full(net: &Net, chunks: &[Address], what: &str) {
    wait_full_within(net, chunks, what, Duration::from_secs(90)).await
}

/// [`wait_full`] with another time limit.
pub async fn wait_full_within(net: &Net, chunks: &[Address], what: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let client = net.connect().await;
        let ids = running_ids(net);
        let bad = under_replicated(&client, &ids, chunks, false).await;
        client.close().await;
        if bad.is_empty() {
            eprintln!("{what}: full redundancy after {:.1} s", start.elapsed().as_secs_f64());
            return;
        }
        assert!(start.elapsed() < limit, "{what}: {} chunks still short: {:?}", bad.len(), &bad[..bad.len().min(3)]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Stores random private files of `sizes` bytes from `dir`; returns each file's path and
/// address, and every chunk address (data chunks and root records) they stored.
pub async fn store_random_files(
    net: &Net,
    dir: &Path,
    sizes: &[usize],
    key: &kura_client::UserKey,
) -> (Vec<(PathBuf, Address)>, Vec<Address>) {
    let bar = indicatif::ProgressBar::hidden();
    let client = net.connect().await;
    let mut files = Vec::new();
    let mut chunks = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let content: Vec<u8> = (0..*size).map(|_| rand::random::<u8>()).collect();
        let path = dir.join(format!("f{i}"));
        std::fs::write(&path, &content).unwrap();
        let address = client.put_path(&path, kura_client::Visibility::Private, key, &bar).await.unwrap();
        chunks.extend(kura_client::chunk_addresses(&content, kura_client::Visibility::Private, key, Default::default()).unwrap());
        chunks.push(address);
        files.push((path, address));
    }
    client.close().await;
    (files, chunks)
}

/// What one vault answered, as a ledger refusal if it was one.
pub fn refusal(answer: &Result<Response, kura_node::NodeError>) -> Option<kura_node::ledger::LedgerError> {
    match answer {
        Err(kura_node::NodeError::Remote {
            error: kura_node::wire::RemoteError::Refused(kura_node::RecordError::Ledger(e)),
            ..
        }) => Some(e.clone()),
        _ => None,
    }
}

/// Asks each of `vaults` to sign; returns the shares of those that did.
pub async fn ask_signatures(
    client: &Client,
    vaults: &[PeerId],
    signed: &kura_node::ledger::SignedTransfer,
) -> Vec<(kura_node::ledger::Binding, Vec<u8>)> {
    let asks = vaults.iter().map(|&v| client.node().request(v, Request::Sign(signed.clone())));
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|a| match a {
            Ok(Response::Signed(s)) => Some((s.binding, s.signature)),
            _ => None,
        })
        .collect()
}
