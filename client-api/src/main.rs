//! `kura`: the Kura command-line client.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kura_client::{peers, Client, UserKey, Visibility};
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
    /// Store a file or directory tree; prints its address as the last line.
    Put {
        /// The file or directory.
        path: PathBuf,
        /// Store a data map anyone holding the address can open (default: private, sealed to
        /// your key in $KURA_HOME).
        #[arg(long)]
        public: bool,
        /// Also point your pointer NAME at what was stored (creating it if needed), and print
        /// the pointer's address as the last line: an address that never changes.
        #[arg(long, value_name = "NAME")]
        pointer: Option<String>,
    },
    /// Mutable pointers: an address you own that you can point at any other address.
    #[command(subcommand)]
    Pointer(PointerCommand),
    /// Fetch ADDRESS into OUT (a file, or a directory for a stored tree); a pointer's address
    /// fetches what it points at.
    Get {
        /// The address `kura put` or `kura pointer create` printed.
        address: Address,
        /// Where to write it.
        out: PathBuf,
    },
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

#[derive(Subcommand, Debug)]
enum PointerCommand {
    /// Create your pointer NAME (version 1); prints its address as the last line. The address
    /// follows from your key and NAME.
    Create {
        /// The pointer's name (yours: another user's pointer of the same name is another
        /// pointer).
        name: String,
        /// What it points at (default: nothing yet).
        target: Option<Address>,
    },
    /// Point your pointer at ADDRESS to TARGET; prints the new version.
    Set {
        /// The pointer's address.
        address: Address,
        /// What it should point at: a file, a tree, another pointer.
        target: Address,
    },
    /// Print a pointer's target and version.
    Get {
        /// The pointer's address.
        address: Address,
    },
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_inner()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_inner() -> Result<()> {
    kura_node::init_logging("warn");
    let cli = Cli::parse();
    let bootstrap = peers::resolve(cli.peers.as_deref())?;
    let client = Client::connect(bootstrap).await.context("joining the network")?;
    let result = run(&client, cli.command).await;
    client.close().await;
    result
}

async fn run(client: &Client, command: Command) -> Result<()> {
    match command {
        Command::Put { path, public, pointer } => {
            let key = UserKey::load_or_create(&UserKey::home())?;
            let visibility = if public { Visibility::Public } else { Visibility::Private };
            let bar = progress_bar();
            let address = client.put_path(&path, visibility, &key, &bar).await?;
            bar.finish_and_clear();
            println!("{address}");
            if let Some(name) = pointer {
                let p = client.publish_pointer(&key, &name, address).await.context("moving the pointer")?;
                eprintln!("pointer {name} is at version {}", p.version);
                println!("{}", p.address());
            }
        }
        Command::Get { address, out } => {
            let key = UserKey::load_or_create(&UserKey::home())?;
            let target = client.resolve(address).await?;
            let bar = progress_bar();
            client.get_path(target, &out, &key, &bar).await?;
            bar.finish_and_clear();
        }
        Command::Pointer(PointerCommand::Create { name, target }) => {
            let key = UserKey::load_or_create(&UserKey::home())?;
            let p = client.create_pointer(&key, &name, target).await?;
            println!("{}", p.address());
        }
        Command::Pointer(PointerCommand::Set { address, target }) => {
            let key = UserKey::load_or_create(&UserKey::home())?;
            let p = client.set_pointer(&key, address, target).await?;
            println!("{}", p.version);
        }
        Command::Pointer(PointerCommand::Get { address }) => {
            let p = client.get_pointer(address).await?.ok_or(kura_client::ClientError::NoPointer(address))?;
            println!("{} {}", p.target, p.version);
        }
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
    Ok(())
}

/// A bytes/rate/ETA bar on a terminal; nothing when stderr is not one.
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn serde_json_like(s: &kura_node::wire::VaultStatus) -> String {
    let kinds: Vec<String> = s.records_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut out = format!(
        "peer {}\nlisten {:?}\nrouting table {}\nrecords {} ({})\nbytes {} / {}\nuptime {} s\nversion {}\nworkers:",
        s.peer_id,
        s.listen_addrs,
        s.routing_table_size,
        s.records_stored,
        kinds.join(", "),
        s.bytes_used,
        s.capacity,
        s.uptime_secs,
        s.version
    );
    for w in &s.workers {
        let counters: Vec<String> = w.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("\n  {:<9} {:<9} {}", w.name, w.state, counters.join(" ")));
    }
    out
}
