//! The `kura-vault` command line, shared by the `kura-vault` binary and `kura-testnet` (which
//! runs it when invoked under the name `kura-vault`, so a testnet needs no second build).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kura_node::Multiaddr;

use crate::{Vault, VaultConfig, VaultError};

/// Run a Kura vault: lend disk and bandwidth to a Kura storage network.
#[derive(Parser, Debug)]
#[command(name = "kura-vault", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a vault until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Print the effective configuration (preset, then --config file, then flags) as TOML,
    /// every setting with its value.
    Config(RunArgs),
    /// Print the peer id of the vault rooted at DIR (creating its key if needed).
    Id {
        /// The vault's root directory.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
    },
}

/// Settings for `run` and `config`. Flags have no defaults of their own: what a flag leaves
/// out comes from the --config file, and what that leaves out from the preset. A flag given
/// twice takes its last value (a testnet's flags, then a test's).
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
struct RunArgs {
    /// A TOML file of settings (any field `kura-vault config` prints; `preset = "local"` picks
    /// the local preset as the base).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The base preset when no --config file names one: production (default) or local.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Directory for the vault's identity key, records and status file (vault.json).
    /// The identity persists here across restarts.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Address to listen on, e.g. /ip4/0.0.0.0/udp/12000/quic-v1; port 0 picks a free port.
    /// May be repeated. [production preset: /ip4/0.0.0.0/udp/12000/quic-v1]
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// A bootstrap peer to join through, e.g. /ip4/203.0.113.5/udp/12000/quic-v1/p2p/12D3Koo...
    /// May be repeated. Without any, the vault starts a new network.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<Multiaddr>,
    /// Read bootstrap peers from FILE too, one multiaddr a line (a kura-testnet peers file).
    #[arg(long, value_name = "FILE")]
    peers_file: Option<PathBuf>,
    /// Most bytes of records to store, e.g. 10GiB or 500MB; the vault refuses new records
    /// beyond it. [production preset: 50GiB]
    #[arg(long, value_name = "SIZE")]
    max_capacity: Option<bytesize::ByteSize>,
    /// Requests served at once, a quarter of them kept for clients. [presets: 64]
    #[arg(long, value_name = "N")]
    max_concurrent_requests: Option<usize>,
    /// Turn off repair, handover and storage audits (for tests of what erasure coding alone
    /// survives).
    #[arg(long)]
    no_repair: bool,
    /// Seconds between the repair worker's full sweeps. A sweep reads every record the vault
    /// holds, so it is rare; the worker also wakes on every routing change and retries failed
    /// repairs soon. [production preset: 600]
    #[arg(long, value_name = "SECS")]
    repair_sweep: Option<u64>,
    /// Most repair and handover traffic per second, e.g. 16MiB: a vault rebuilding after a
    /// loss leaves the rest of its disk and uplink to clients. [production preset: 32MiB]
    #[arg(long, value_name = "SIZE")]
    repair_rate: Option<bytesize::ByteSize>,
    /// Seconds between storage audit rounds. Each round challenges the other holders of up to
    /// 32 of this vault's chunks to prove, with a few KiB of Bao proof each, that they still
    /// hold their shards. [production preset: 300]
    #[arg(long, value_name = "SECS")]
    audit_interval: Option<u64>,
    /// Seconds a vault keeps its copy of a shard after another member of the close group
    /// holds it, until that member has held it this long and proves it. [production preset:
    /// 600]
    #[arg(long, value_name = "SECS")]
    handover_probation: Option<u64>,
    /// Seconds in an age epoch: once an epoch the vault asks its group's elders to sign its
    /// ticket, which may relocate it, one step older; 0 for never. [production preset: 3600]
    #[arg(long, value_name = "SECS")]
    age_epoch: Option<u64>,
    /// Bits of work a vault id must carry (S/Kademlia's static puzzle), this vault's own and
    /// every vault's it puts in its routing table; the same on every vault of a network.
    /// [production preset: 16, about a second of one core to make an id]
    #[arg(long, value_name = "BITS")]
    id_difficulty: Option<u8>,
    /// The genesis account's BLS public key, in hex: it holds the whole token supply when
    /// the network starts (a local testnet makes one). The same on every vault.
    #[arg(long, value_name = "HEX")]
    genesis_key: Option<String>,
    /// Units the genesis account starts with (10⁹ units are one KURA).
    #[arg(long, value_name = "UNITS")]
    genesis_supply: Option<u64>,
    /// Store clients' shards only when paid for. [production preset: on; local: off]
    #[arg(long, conflicts_with = "free_storage")]
    paid_storage: bool,
    /// Store clients' shards for free (a test network).
    #[arg(long)]
    free_storage: bool,
    /// Seconds a client has to pay for the shards it stored before they are dropped.
    /// [production preset: 600; local: 60]
    #[arg(long, value_name = "SECS")]
    payment_grace: Option<u64>,
    /// Worker threads (a local testnet runs many vaults on few cores, and gives each one).
    /// [presets: 2]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

impl RunArgs {
    /// The preset, overlaid with the --config file, overlaid with the flags given.
    fn effective(&self) -> Result<VaultConfig, VaultError> {
        let root = self.root.clone().unwrap_or_default();
        let mut c = match &self.config {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| VaultError::Io { path: file.clone(), source })?;
                let text = match &self.preset {
                    Some(p) if !text.lines().any(|l| l.trim_start().starts_with("preset")) => format!("preset = {p:?}\n{text}"),
                    _ => text,
                };
                VaultConfig::from_toml(&text, root)?
            }
            None => VaultConfig::preset(self.preset.as_deref().unwrap_or("production"), root)?,
        };
        if let Some(root) = &self.root {
            c.root = root.clone();
        }
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        c.bootstrap.extend(self.peers.iter().cloned());
        if self.peers_file.is_some() {
            c.peers_file = self.peers_file.clone();
        }
        if let Some(v) = self.max_capacity {
            c.capacity = v.as_u64();
        }
        if let Some(v) = self.handover_probation {
            c.handover_probation_secs = v;
        }
        if let Some(v) = self.age_epoch {
            c.age_epoch_secs = v;
        }
        if let Some(v) = self.id_difficulty {
            c.id_difficulty = v;
        }
        if let Some(v) = self.max_concurrent_requests {
            c.max_concurrent_requests = v;
        }
        if self.no_repair {
            c.repair = false;
            c.audit = false;
        }
        if let Some(v) = self.repair_sweep {
            c.repair_sweep_secs = v;
        }
        if let Some(v) = self.repair_rate {
            c.repair_rate = v.as_u64();
        }
        if let Some(v) = self.audit_interval {
            c.audit_interval_secs = v;
        }
        if let Some(v) = self.threads {
            c.threads = v;
        }
        if let Some(v) = &self.genesis_key {
            c.genesis_key = Some(v.clone());
        }
        if let Some(v) = self.genesis_supply {
            c.genesis_supply = v;
        }
        if self.paid_storage {
            c.paid_storage = true;
        }
        if self.free_storage {
            c.paid_storage = false;
        }
        if let Some(v) = self.payment_grace {
            c.payment_grace_secs = v;
        }
        c.genesis()?;
        if c.root.as_os_str().is_empty() {
            return Err(VaultError::Config("no vault root: pass --root DIR or set root in the --config file".into()));
        }
        Ok(c)
    }
}

/// Runs the `kura-vault` command line on this process's arguments.
pub fn main() -> ExitCode {
    match run_cli() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kura-vault: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli() -> Result<(), VaultError> {
    kura_node::init_logging("warn,kura_vault=info");
    let cli = Cli::parse();
    let config = match &cli.command {
        Command::Run(args) => Some(args.effective()?),
        Command::Config(args) => {
            print!("{}", args.effective()?.to_toml()?);
            return Ok(());
        }
        Command::Id { .. } => None,
    };
    let threads = config.as_ref().map_or(1, |c| c.threads.max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|source| VaultError::Io { path: "tokio runtime".into(), source })?;
    runtime.block_on(async move {
        match (cli.command, config) {
            (Command::Run(_), Some(config)) => run(config).await,
            (Command::Id { root }, _) => {
                let key = kura_node::identity::load_or_create(&root)?;
                println!("{}", key.public().to_peer_id());
                Ok(())
            }
            _ => Ok(()),
        }
    })
}

/// The multiaddrs in a peers file, one a line (`#` starts a comment).
fn read_peers(file: &std::path::Path) -> Result<Vec<kura_node::Multiaddr>, VaultError> {
    let text = std::fs::read_to_string(file).map_err(|source| VaultError::Io { path: file.to_path_buf(), source })?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| line.parse().map_err(|e| VaultError::Config(format!("bad multiaddr {line:?} in {}: {e}", file.display()))))
        .collect()
}

/// How often a vault re-reads its peers file for vaults it has lost touch with.
const PEERS_FILE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How often freed memory is handed back to the system.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Hands memory freed since the last call back to the system. glibc keeps what a burst freed
/// in its per-thread arenas for reuse: after a flood of 8 MiB frames a vault that held 200 MiB
/// at the peak stayed near that for good, idle. Trimming costs a few milliseconds.
fn trim_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn run(mut config: VaultConfig) -> Result<(), VaultError> {
    if let Some(file) = &config.peers_file {
        config.bootstrap.extend(read_peers(file)?);
    }
    let peers_file = config.peers_file.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| VaultError::Io { path: "SIGTERM handler".into(), source })?;
    let listen = config.listen.clone();
    let mut restarts = 0u32;
    tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(trim_memory).await;
        }
    });
    loop {
        let vault = match Vault::start(config.clone()).await {
            Ok(v) => v,
            // Starting again after a relocation: the old socket may take a moment to close.
            Err(e) if restarts > 0 && restarts < 20 => {
                tracing::warn!(error = %e, "starting again after relocating failed; retrying");
                restarts += 1;
                if restarts > 10 {
                    config.listen = listen.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut relocated = vault.relocated();
        let mut reread = tokio::time::interval_at(tokio::time::Instant::now() + PEERS_FILE_EVERY, PEERS_FILE_EVERY);
        let again = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break false,
                _ = term.recv() => break false,
                // Relocated: the new identity and its age proof are on disk.
                Ok(()) = relocated.changed() => if *relocated.borrow() { break true },
                // A vault that restarted on a new address is found again through the file (a
                // testnet rewrites it), whatever this vault's routing table forgot.
                _ = reread.tick(), if peers_file.is_some() => {
                    let Some(file) = &peers_file else { continue };
                    let Ok(addrs) = read_peers(file) else { continue };
                    let known = vault.node().routing_table().await.unwrap_or_default();
                    for addr in addrs {
                        let listed = match addr.iter().last() {
                            Some(kura_node::Protocol::P2p(peer)) => Some(peer),
                            _ => None,
                        };
                        if listed.is_some_and(|p| p != vault.node().peer_id() && !known.contains(&p)) {
                            let _ = vault.node().dial(addr).await;
                        }
                    }
                }
            }
        };
        if !again {
            tracing::info!("shutting down");
            vault.shutdown().await;
            return Ok(());
        }
        // The new id listens where the old one did, so peers that knew the address find it.
        if let Ok(addrs) = vault.node().listen_addrs().await {
            if !addrs.is_empty() {
                config.listen = addrs;
            }
        }
        tracing::info!("relocated: shutting down to start again as the new id");
        vault.shutdown().await;
        restarts = 1;
    }
}
