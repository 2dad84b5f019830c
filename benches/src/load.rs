//! Client load shared by the benchmarks that watch a network under stress: storing random
//! files, and fetching them back to back while something else happens.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::ProgressBar;
use kura_client::{Client, UserKey, Visibility};
use kura_node::{Address, Multiaddr};

/// Stores `count` random private files of `mib` MiB through `client`, staging each in `dir`;
/// returns each file's address, and every chunk address they stored (data chunks and roots).
pub async fn store_random_files(client: &Client, dir: &Path, count: usize, mib: usize, key: &UserKey) -> Result<(Vec<Address>, Vec<Address>)> {
    let mut addresses = Vec::new();
    let mut chunks = Vec::new();
    for i in 0..count {
        let content: Vec<u8> = (0..mib << 20).map(|_| rand::random::<u8>()).collect();
        let path = dir.join(format!("f{i}"));
        std::fs::write(&path, &content)?;
        let address = client.put_path(&path, Visibility::Private, key, &ProgressBar::hidden()).await?;
        chunks.extend(kura_client::chunk_addresses(&content, Visibility::Private, key, Default::default())?);
        chunks.push(address);
        addresses.push(address);
        std::fs::remove_file(&path)?;
    }
    Ok((addresses, chunks))
}

/// When a fetch started, how long it took, and whether it worked.
pub type Fetch = (Instant, Duration, bool);

/// A client fetching files back to back on its own task until stopped.
pub struct Fetcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<Fetch>>>,
}

impl Fetcher {
    /// Starts a new client (joined through `peers`) fetching `addresses` in turn into `out`.
    pub fn start(rt: &tokio::runtime::Runtime, peers: Vec<Multiaddr>, addresses: Vec<Address>, key: UserKey, out: std::path::PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = rt.spawn(async move {
            let client = Client::connect(peers).await?;
            let mut fetches = Vec::new();
            for address in addresses.iter().cycle() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let ok = client.get_path(*address, &out, &key, &ProgressBar::hidden()).await.is_ok();
                fetches.push((t, t.elapsed(), ok));
            }
            client.close().await;
            Ok(fetches)
        });
        Fetcher { stop, task }
    }

    /// Stops after the fetch under way, and returns every fetch.
    pub fn finish(self, rt: &tokio::runtime::Runtime) -> Result<Vec<Fetch>> {
        self.stop.store(true, Ordering::Relaxed);
        rt.block_on(self.task)?
    }
}
