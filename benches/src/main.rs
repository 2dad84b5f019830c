//! `netbench`: end-to-end figures of a real local Kura network (release build).
//!
//! - `netbench network --nodes 10,25,50`: time from `up` to healthy, idle vault RSS, and
//!   `closest_vaults` latency from a client on the largest network.
//! - `netbench files --size 256 --rss-size 1024`: put/get throughput on 10 vaults beside the
//!   same run's self_encryption throughput, client peak RSS, vault RSS, storage overhead.
//! - `netbench erasure`: reed-solomon-erasure against reed-solomon-simd at Kura's shard sizes.
//! - `netbench audit`: storage audit proof size, prove and verify time.
//! - `netbench repair`: time from a vault's death to full redundancy, repair traffic, RSS.
//! - `netbench pointers`: pointer set-to-visible latency and the RSS of held pointers.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use kura_testnet::{process, Testnet};

mod audit;
mod erasure;
mod files;
mod flood;
mod ledger;
mod load;
mod messaging;
mod network;
mod pointers;
mod repair;

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
    /// Lookup latency and file fetches around a vault's death.
    Death {
        /// Vaults.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// 64 MiB files stored, then fetched in turn.
        #[arg(long, default_value_t = 4)]
        files: usize,
    },
    /// File put/get throughput, memory and storage overhead on 10 vaults.
    Files {
        /// MiB of the throughput file.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// MiB of the file whose client peak RSS is measured.
        #[arg(long, default_value_t = 1024)]
        rss_size: usize,
        /// Vaults.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
    },
    /// A put to vaults that ask to be paid against the same put to vaults that store free.
    Paid {
        /// MiB of the file.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Vaults.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
    },
    /// Reed-Solomon crates compared.
    Erasure,
    /// Storage audit proof size and cost.
    Audit,
    /// Repair after a vault dies.
    Repair {
        /// Vaults.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// Files stored.
        #[arg(long, default_value_t = 16)]
        files: usize,
        /// MiB per file.
        #[arg(long, default_value_t = 64)]
        file_mib: usize,
    },
    /// Pointer set-to-visible latency and the vault RSS of held pointers.
    Pointers {
        /// Vaults.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Timed updates.
        #[arg(long, default_value_t = 200)]
        sets: usize,
        /// Pointers each vault should end up holding.
        #[arg(long, default_value_t = 1000)]
        per_vault: usize,
    },
    /// Messaging: proof-of-work time by size, send-to-visible latency, one inbox's intake.
    Messaging {
        /// Vaults.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Timed messages.
        #[arg(long, default_value_t = 50)]
        latency: usize,
        /// Messages sent to one inbox at once.
        #[arg(long, default_value_t = 400)]
        burst: usize,
        /// Clients sending them.
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// How often the recipient looks, in milliseconds (`kura msg watch`'s default).
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
    },
    /// Ledger: signing and certificate costs, certified transfers per second and latency.
    Ledger {
        /// Vaults.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Wallets paying at once.
        #[arg(long, default_value_t = 16)]
        payers: usize,
        /// Transfers each.
        #[arg(long, default_value_t = 25)]
        each: usize,
    },
    /// A vault's memory under a flood of maximal frames from fresh identities.
    Flood {
        /// Vaults (8: every vault holds a shard of every chunk).
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Flooding identities, a connection each.
        #[arg(long, default_value_t = 32)]
        identities: usize,
        /// Streams of each.
        #[arg(long, default_value_t = 8)]
        streams: usize,
        /// Seconds of flood.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// (internal) Run one client operation in this process, for RSS measurement.
    #[command(hide = true)]
    Client {
        /// put or get.
        op: String,
        /// Peers file.
        peers: PathBuf,
        /// File to put, or address to get.
        what: String,
        /// Output file for get.
        out: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    if let Some(code) = process::run_as_vault_if_invoked_so() {
        std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
    }
    // Keep the benchmark's testnets out of the user's latest-testnet pointer.
    std::env::set_var("XDG_DATA_HOME", std::env::temp_dir().join("kura-netbench-xdg"));
    kura_node::init_logging("warn");
    match Cli::parse().command {
        Command::Network { nodes, lookups, idle } => network::run(nodes, lookups, idle),
        Command::Death { nodes, files } => network::death(nodes, files),
        Command::Files { size, rss_size, nodes } => files::run(size, rss_size, nodes),
        Command::Paid { size, nodes } => files::paid(size, nodes),
        Command::Erasure => erasure::run(),
        Command::Audit => audit::run(),
        Command::Repair { nodes, files, file_mib } => repair::run(nodes, files, file_mib),
        Command::Pointers { nodes, sets, per_vault } => pointers::run(nodes, sets, per_vault),
        Command::Messaging { nodes, latency, burst, senders, poll_ms } => messaging::run(nodes, latency, burst, senders, poll_ms),
        Command::Ledger { nodes, payers, each } => ledger::run(nodes, payers, each),
        Command::Flood { nodes, identities, streams, secs } => flood::run(nodes, identities, streams, secs),
        Command::Client { op, peers, what, out } => files::client_op(&op, &peers, &what, out),
    }
}

/// Bytes in a MiB, for figures.
pub const MIB: f64 = 1048576.0;

/// A fresh directory for one benchmark's testnet.
pub fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kura-netbench-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Starts `nodes` vaults of `capacity` bytes in a fresh directory and waits until the network
/// is healthy. The returned guard stops it and removes the directory.
pub fn healthy_testnet(rt: &tokio::runtime::Runtime, nodes: usize, capacity: u64) -> Result<(Testnet, Down)> {
    healthy_testnet_with(rt, nodes, capacity, Vec::new())
}

/// [`healthy_testnet`] with extra `kura-vault run` flags.
pub fn healthy_testnet_with(rt: &tokio::runtime::Runtime, nodes: usize, capacity: u64, args: Vec<String>) -> Result<(Testnet, Down)> {
    let tmp = tempdir()?;
    let net = Testnet::new(tmp.join("net"));
    let down = Down(net.clone(), tmp);
    net.up_with(nodes, capacity, args)?;
    let report = rt.block_on(net.wait_healthy(std::time::Duration::from_secs(120), kura_testnet::HealthConfig::default()))?;
    if !report.healthy() {
        anyhow::bail!("{nodes} vaults not healthy after 120 s: {:?}", report.problems());
    }
    Ok((net, down))
}

/// Stops the testnet and removes its directory, also on error.
pub struct Down(pub Testnet, pub PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = self.0.down();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}
