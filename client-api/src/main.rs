//! `kura`: the Kura command-line client.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kura_client::{peers, Client};
use kura_node::Address;

/// Use a Kura storage network.
#[derive(Parser, Debug)]
#[command(name = "kura", version, about)]
struct Cli {
    /// Peers file to join through (one multiaddr a line). Defaults to $KURA_PEERS, then the
    /// most recent local testnet.
    #[arg(long, global = true, value_name = "FILE")]
    peers: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the N vaults closest to an address (64 hex characters), closest first.
    Closest {
        /// The address.
        address: Address,
        /// How many vaults.
        #[arg(short, default_value_t = 8)]
        n: usize,
    },
    /// Print the status of a vault.
    Status {
        /// The vault's peer id.
        peer: kura_node::PeerId,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let bootstrap = peers::resolve(cli.peers.as_deref())?;
    let client = Client::connect(bootstrap).await.context("joining the network")?;
    match cli.command {
        Command::Closest { address, n } => {
            for peer in client.closest_vaults(address, n).await? {
                println!("{peer}");
            }
        }
        Command::Status { peer } => {
            let s = client.vault_status(peer).await?;
            println!("{}", serde_json_like(&s));
        }
    }
    client.close().await;
    Ok(())
}

fn serde_json_like(s: &kura_node::wire::VaultStatus) -> String {
    format!(
        "peer {}\nlisten {:?}\nrouting table {}\nrecords {}\nbytes {} / {}\nuptime {} s\nversion {}",
        s.peer_id, s.listen_addrs, s.routing_table_size, s.records_stored, s.bytes_used, s.capacity, s.uptime_secs, s.version
    )
}
