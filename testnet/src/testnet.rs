//! Lifecycle of a local testnet: up, add, kill, restart, down, health.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kura_client::Client;
use kura_node::PeerId;
use rand::seq::SliceRandom;

use crate::error::TestnetError;
use crate::health::{self, HealthConfig, HealthReport};
use crate::process::{self, Launch};
use crate::state::{Layout, TestnetState, VaultEntry};

/// How long a vault may take to publish its address after being started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a vault has to shut down cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A local testnet rooted at a directory.
#[derive(Debug, Clone)]
pub struct Testnet {
    layout: Layout,
}

/// Units a testnet's genesis account (its faucet) starts with: a million KURA.
pub const GENESIS_SUPPLY: u64 = 1_000_000 * kura_node::ledger::UNITS_PER_TOKEN;

impl Testnet {
    /// The testnet in `dir` (which need not exist yet).
    pub fn new(dir: PathBuf) -> Self {
        Testnet { layout: Layout::new(dir) }
    }

    /// The default testnet directory: `<per-user data dir>/kura/testnet`.
    pub fn default_dir() -> PathBuf {
        kura_client::peers::data_dir().join("testnet")
    }

    /// Its paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Its saved state.
    pub fn state(&self) -> Result<TestnetState, TestnetError> {
        let mut state = self.layout.load()?;
        // A relocated vault runs on as a new id (same process, same address): its status file
        // says which. The state and the peers file follow it.
        let mut moved = false;
        for v in state.vaults.iter_mut().filter(|v| process::is_alive(v.pid)) {
            let Ok(info) = kura_vault::VaultInfo::read(&self.layout.vault_root(v.index)) else { continue };
            if info.pid == v.pid && info.peer_id != v.peer_id {
                if let Some(listen) = info.listen_addrs.first() {
                    v.addr = format!("{listen}/p2p/{}", info.peer_id);
                }
                v.peer_id = info.peer_id;
                moved = true;
            }
        }
        if moved {
            self.save(&state)?;
        }
        Ok(state)
    }

    /// Indices of the vaults whose processes are alive.
    pub fn running(&self, state: &TestnetState) -> Vec<usize> {
        state.vaults.iter().filter(|v| process::is_alive(v.pid)).map(|v| v.index).collect()
    }

    /// `(index, peer id)` of the running vaults.
    pub fn running_peers(&self, state: &TestnetState) -> Vec<(usize, PeerId)> {
        let running = self.running(state);
        state
            .vaults
            .iter()
            .filter(|v| running.contains(&v.index))
            .filter_map(|v| v.peer_id.parse().ok().map(|p| (v.index, p)))
            .collect()
    }

    /// Starts a new network of `nodes` vaults, each with `capacity` bytes. Any earlier
    /// stopped testnet in the directory is wiped; a running one is an error.
    pub fn up(&self, nodes: usize, capacity: u64) -> Result<(), TestnetError> {
        self.up_with(nodes, capacity, Vec::new())
    }

    /// [`Testnet::up`], giving every vault (also those added or restarted later) the extra
    /// `kura-vault run` flags `vault_args` (`--paid-storage` makes vaults ask to be paid; they
    /// store for free otherwise).
    pub fn up_with(&self, nodes: usize, capacity: u64, vault_args: Vec<String>) -> Result<(), TestnetError> {
        if nodes == 0 {
            return Err(TestnetError::Usage("--nodes must be at least 1".into()));
        }
        let old = self.state()?;
        let running = self.running(&old);
        if !running.is_empty() {
            return Err(TestnetError::Usage(format!(
                "a testnet with {} running vaults is already in {}; run `kura-testnet down` first",
                running.len(),
                self.layout.dir.display()
            )));
        }
        for v in &old.vaults {
            let root = self.layout.vault_root(v.index);
            std::fs::remove_dir_all(&root).map_err(|e| TestnetError::io(&root, e))?;
        }
        std::fs::create_dir_all(&self.layout.dir).map_err(|e| TestnetError::io(&self.layout.dir, e))?;
        let bin = process::vault_binary(&self.layout.dir)?;
        let mut vault_args = vault_args;
        let (flags, genesis) = self.mint_genesis()?;
        vault_args.extend(flags);
        // The vaults a testnet starts with are its first elders, by its genesis key's grant;
        // vaults added later are newcomers, as on any network.
        for index in 0..nodes {
            self.found_elder(index, &genesis)?;
        }
        // Storage is free on a testnet unless asked for (`kura-testnet up` asks).
        if !vault_args.iter().any(|a| a == "--paid-storage") {
            vault_args.push("--free-storage".into());
        }
        let mut state = TestnetState { vault_args, ..TestnetState::default() };
        // The first vault founds the network; the rest join through it all at once.
        let seed = self.start(&bin, &state.vault_args, 0, 0, capacity, None, vec![])?;
        let seed_addr = seed.addr.clone();
        let seed_pid = seed.pid;
        state.vaults.push(seed);
        let more = self
            .start_many(&bin, &state.vault_args, 1..nodes, capacity, None, vec![seed_addr])
            .inspect_err(|_| {
                process::stop(seed_pid, true, STOP_GRACE);
            })?;
        state.vaults.extend(more);
        self.save(&state)?;
        let pointer = kura_client::peers::latest_testnet_pointer();
        if let Some(parent) = pointer.parent() {
            std::fs::create_dir_all(parent).map_err(|e| TestnetError::io(parent, e))?;
        }
        let dir = std::fs::canonicalize(&self.layout.dir).map_err(|e| TestnetError::io(&self.layout.dir, e))?;
        crate::state::write_atomic(&pointer, dir.to_string_lossy().as_bytes(), crate::state::Access::Shared)
    }

    /// Gives founding vault `index` its identity and the genesis key's grant of an elder's
    /// age ([`kura_vault::age::AGE_FILE`]), before it first starts.
    fn found_elder(&self, index: usize, genesis: &kura_node::ledger::WalletKey) -> Result<(), TestnetError> {
        let root = self.layout.vault_root(index);
        std::fs::create_dir_all(&root).map_err(|e| TestnetError::io(&root, e))?;
        let key = kura_node::identity::load_or_create_with_work(&root, process::TESTNET_ID_DIFFICULTY)
            .map_err(|e| TestnetError::Usage(format!("vault {index}'s identity: {e}")))?;
        let proof = kura_node::age::AgeProof::genesis(genesis, key.public().to_peer_id(), process::FOUNDER_AGE);
        let path = root.join(kura_vault::age::AGE_FILE);
        kura_node::durable::replace(&path, &kura_vault::age::encode(&proof), kura_node::durable::Access::Shared).map_err(|e| TestnetError::io(&path, e))
    }

    /// Makes a new genesis key for a new network (its faucet) and returns the vault flags
    /// that name it, and the key; a faucet payment left pending from an earlier network is
    /// dropped.
    fn mint_genesis(&self) -> Result<(Vec<String>, kura_node::ledger::WalletKey), TestnetError> {
        let seed: [u8; 32] = rand::random();
        let path = self.layout.dir.join(kura_client::wallet::GENESIS_KEY_FILE);
        // The faucet's secret: owner-only from its first byte.
        crate::state::write_atomic(&path, &kura_node::durable::encode_key(&seed), crate::state::Access::Private)?;
        let faucet = self.layout.dir.join("faucet");
        if faucet.exists() {
            std::fs::remove_dir_all(&faucet).map_err(|e| TestnetError::io(&faucet, e))?;
        }
        let key = kura_node::ledger::WalletKey::from_seed(&seed);
        let flags = vec![
            "--genesis-key".into(),
            hex::encode(key.public_key()),
            "--genesis-supply".into(),
            GENESIS_SUPPLY.to_string(),
        ];
        Ok((flags, key))
    }

    /// Adds `nodes` vaults that join through the running ones.
    pub fn add(&self, nodes: usize, capacity: u64) -> Result<Vec<usize>, TestnetError> {
        let mut state = self.state()?;
        if self.running(&state).is_empty() {
            return Err(TestnetError::Usage("no running vault to join; run `kura-testnet up` first".into()));
        }
        let bin = process::vault_binary(&self.layout.dir)?;
        let first = state.vaults.len();
        let peers = Some(self.layout.peers_file());
        let added = self.start_many(&bin, &state.vault_args, first..first + nodes, capacity, peers, vec![])?;
        let indices = added.iter().map(|v| v.index).collect();
        state.vaults.extend(added);
        self.save(&state)?;
        Ok(indices)
    }

    /// Restarts a stopped vault with its data, identity and port.
    pub fn restart(&self, index: usize) -> Result<(), TestnetError> {
        let mut state = self.state()?;
        let entry = self.entry(&state, index)?.clone();
        if process::is_alive(entry.pid) {
            return Err(TestnetError::Usage(format!("vault {index} is running (pid {})", entry.pid)));
        }
        let bin = process::vault_binary(&self.layout.dir)?;
        let peers = (!self.running(&state).is_empty()).then(|| self.layout.peers_file());
        let restarted = self.start(&bin, &state.vault_args, index, entry.port, entry.capacity, peers, vec![])?;
        state.vaults[index] = restarted;
        self.save(&state)
    }

    /// Stops the given vaults (SIGTERM, or SIGKILL when `hard`). Returns those that were running.
    pub fn kill(&self, indices: &[usize], hard: bool) -> Result<Vec<usize>, TestnetError> {
        let state = self.state()?;
        let mut stopped = Vec::new();
        for &i in indices {
            if process::stop(self.entry(&state, i)?.pid, hard, STOP_GRACE) {
                stopped.push(i);
            }
        }
        self.save(&state)?;
        Ok(stopped)
    }

    /// Picks `count` running vaults at random.
    pub fn pick_running(&self, count: usize) -> Result<Vec<usize>, TestnetError> {
        let state = self.state()?;
        let running = self.running(&state);
        if count > running.len() {
            return Err(TestnetError::Usage(format!("only {} vaults are running", running.len())));
        }
        Ok(running.choose_multiple(&mut rand::thread_rng(), count).copied().collect())
    }

    /// Stops every vault. Returns how many were running.
    pub fn down(&self) -> Result<usize, TestnetError> {
        let state = self.state()?;
        let all: Vec<usize> = state.vaults.iter().map(|v| v.index).collect();
        Ok(self.kill(&all, false)?.len())
    }

    /// Checks the network's health once.
    pub async fn health(&self, cfg: HealthConfig) -> Result<HealthReport, TestnetError> {
        let state = self.state()?;
        let vaults = self.running_peers(&state);
        if vaults.is_empty() {
            return Ok(HealthReport::default());
        }
        let client = Client::connect(kura_client::peers::read_peers_file(&self.layout.peers_file())?).await?;
        let report = health::check(&client, &vaults, cfg).await;
        client.close().await;
        Ok(report)
    }

    /// Polls health until the network is healthy or `timeout` passes; returns the last report.
    pub async fn wait_healthy(&self, timeout: Duration, cfg: HealthConfig) -> Result<HealthReport, TestnetError> {
        let start = Instant::now();
        let state = self.state()?;
        let vaults = self.running_peers(&state);
        let client = Client::connect(kura_client::peers::read_peers_file(&self.layout.peers_file())?).await?;
        let mut report;
        loop {
            report = health::check(&client, &vaults, cfg).await;
            if report.healthy() || start.elapsed() > timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        client.close().await;
        Ok(report)
    }

    fn entry<'a>(&self, state: &'a TestnetState, index: usize) -> Result<&'a VaultEntry, TestnetError> {
        state
            .vaults
            .get(index)
            .ok_or_else(|| TestnetError::Usage(format!("no vault {index}; this testnet has {}", state.vaults.len())))
    }

    fn save(&self, state: &TestnetState) -> Result<(), TestnetError> {
        self.layout.save(state, &self.running(state))
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(&self, bin: &std::path::Path, extra: &[String], index: usize, port: u16, capacity: u64, peers_file: Option<PathBuf>, peers: Vec<String>) -> Launch {
        Launch { bin: bin.to_path_buf(), index, root: self.layout.vault_root(index), port, capacity, peers_file, peers, extra: extra.to_vec() }
    }

    #[allow(clippy::too_many_arguments)]
    fn start(&self, bin: &std::path::Path, extra: &[String], index: usize, port: u16, capacity: u64, peers_file: Option<PathBuf>, peers: Vec<String>) -> Result<VaultEntry, TestnetError> {
        let launch = self.launch(bin, extra, index, port, capacity, peers_file, peers);
        let pid = process::spawn(&launch)?;
        started_or_stopped(&launch, pid)
    }

    fn start_many(&self, bin: &std::path::Path, extra: &[String], indices: std::ops::Range<usize>, capacity: u64, peers_file: Option<PathBuf>, peers: Vec<String>) -> Result<Vec<VaultEntry>, TestnetError> {
        let mut launched = Vec::new();
        for index in indices {
            let launch = self.launch(bin, extra, index, 0, capacity, peers_file.clone(), peers.clone());
            let pid = process::spawn(&launch)?;
            launched.push((launch, pid));
        }
        let results: Vec<_> = launched.iter().map(|(launch, pid)| started_or_stopped(launch, *pid)).collect();
        if results.iter().any(Result::is_err) {
            // All or nothing: a half-started batch would be running but not in the state file.
            for (_, pid) in &launched {
                process::stop(*pid, true, STOP_GRACE);
            }
        }
        results.into_iter().collect()
    }
}

/// Waits for a spawned vault to publish its address; stops it if it does not, so no process
/// outlives the state that tracks it.
fn started_or_stopped(launch: &Launch, pid: u32) -> Result<VaultEntry, TestnetError> {
    let started = process::wait_started(launch.index, &launch.root, pid, START_TIMEOUT)
        .and_then(|started| entry_of(launch, started));
    if started.is_err() {
        process::stop(pid, true, STOP_GRACE);
    }
    started
}

fn entry_of(launch: &Launch, started: process::Started) -> Result<VaultEntry, TestnetError> {
    let bad = |reason: String| TestnetError::VaultStart { index: launch.index, reason, log: launch.root.join("log") };
    let listen = started.info.listen_addrs.first().ok_or_else(|| bad("published no listen address".into()))?;
    let addr: kura_node::Multiaddr = listen.parse().map_err(|e| bad(format!("bad listen address {listen}: {e}")))?;
    let port = addr
        .iter()
        .find_map(|p| match p {
            kura_node::Protocol::Udp(port) => Some(port),
            _ => None,
        })
        .ok_or_else(|| bad(format!("listen address {listen} has no UDP port")))?;
    Ok(VaultEntry {
        index: launch.index,
        peer_id: started.info.peer_id.clone(),
        addr: format!("{listen}/p2p/{}", started.info.peer_id),
        port,
        pid: started.pid,
        capacity: launch.capacity,
    })
}
