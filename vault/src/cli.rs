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
    /// Print the peer id of the vault rooted at DIR (creating its key if needed).
    Id {
        /// The vault's root directory.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Directory for the vault's identity key, records and status file (vault.json).
    /// The identity persists here across restarts.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Address to listen on, e.g. /ip4/0.0.0.0/udp/12000/quic-v1; port 0 picks a free port.
    /// May be repeated.
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/0.0.0.0/udp/12000/quic-v1")]
    listen: Vec<Multiaddr>,
    /// A bootstrap peer to join through, e.g. /ip4/203.0.113.5/udp/12000/quic-v1/p2p/12D3Koo...
    /// May be repeated. Without any, the vault starts a new network.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<Multiaddr>,
    /// Read bootstrap peers from FILE too, one multiaddr a line (a kura-testnet peers file).
    #[arg(long, value_name = "FILE")]
    peers_file: Option<PathBuf>,
    /// Most bytes of records to store, e.g. 10GiB or 500MB; the vault refuses new records
    /// beyond it.
    #[arg(long, value_name = "SIZE", default_value = "50GiB")]
    max_capacity: bytesize::ByteSize,
    /// Requests served at once, a quarter of them kept for clients.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_concurrent_requests: usize,
    /// Turn off repair, handover and storage audits (for tests of what erasure coding alone
    /// survives).
    #[arg(long)]
    no_repair: bool,
    /// Seconds between the repair worker's full sweeps. A sweep reads every shard the vault
    /// holds, so it is rare; the worker also wakes on every routing change and retries
    /// failed repairs after 2 s.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    repair_sweep: u64,
    /// Most repair and handover traffic per second, e.g. 16MiB: a vault rebuilding after a
    /// loss leaves the rest of its disk and uplink to clients.
    #[arg(long, value_name = "SIZE", default_value = "32MiB")]
    repair_rate: bytesize::ByteSize,
    /// Seconds between storage audit rounds. Each round challenges the other holders of up to
    /// 32 of this vault's chunks to prove, with a few KiB of Bao proof each, that they still
    /// hold their shards.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    audit_interval: u64,
    /// Worker threads (a local testnet runs many vaults on few cores, and gives each one).
    #[arg(long, value_name = "N", default_value_t = 2)]
    threads: usize,
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
    let threads = match &cli.command {
        Command::Run(args) => args.threads.max(1),
        Command::Id { .. } => 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|source| VaultError::Io { path: "tokio runtime".into(), source })?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Id { root } => {
                let key = kura_node::identity::load_or_create(&root)?;
                println!("{}", key.public().to_peer_id());
                Ok(())
            }
        }
    })
}

async fn run(args: RunArgs) -> Result<(), VaultError> {
    let mut bootstrap = args.peers;
    if let Some(file) = &args.peers_file {
        let text = std::fs::read_to_string(file).map_err(|source| VaultError::Io { path: file.clone(), source })?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let addr = line
                .parse()
                .map_err(|e| VaultError::Config(format!("bad multiaddr {line:?} in {}: {e}", file.display())))?;
            bootstrap.push(addr);
        }
    }
    let config = VaultConfig {
        listen: args.listen,
        bootstrap,
        capacity: args.max_capacity.as_u64(),
        max_concurrent_requests: args.max_concurrent_requests,
        repair_sweep: (!args.no_repair).then(|| std::time::Duration::from_secs(args.repair_sweep.max(1))),
        repair_rate: args.repair_rate.as_u64(),
        audit_interval: (!args.no_repair).then(|| std::time::Duration::from_secs(args.audit_interval.max(1))),
        ..VaultConfig::local(args.root)
    };
    let vault = Vault::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| VaultError::Io { path: "SIGTERM handler".into(), source })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    vault.shutdown().await;
    Ok(())
}
