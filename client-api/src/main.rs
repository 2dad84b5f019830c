//! `kura`: the Kura command-line client.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kura_client::messages::{Attachment, Mailbox, Received, DEFAULT_TTL};
use kura_client::{peers, Account, AccountId, Client, UserKey, Visibility};
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
        /// Store nothing if storing would cost more than this, in KURA (e.g. 0.5).
        #[arg(long, value_name = "AMOUNT")]
        max_cost: Option<String>,
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
    /// Your account: one recovery phrase for every key, and the ID others write to.
    #[command(subcommand)]
    Account(AccountCommand),
    /// End-to-end encrypted messages, delivered even when the recipient is offline.
    #[command(subcommand)]
    Msg(MsgCommand),
    /// The accounts you know: named, or blocked.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Your tokens on the network's reward ledger: pay for storage, pay others.
    #[command(subcommand)]
    Wallet(WalletCommand),
}

#[derive(Subcommand, Debug)]
enum WalletCommand {
    /// Print your wallet's address (what others pay to).
    Address,
    /// Print your balance, as the replicas of your account agree on it.
    Balance {
        /// Another account's address instead of yours.
        address: Option<Address>,
    },
    /// Pay AMOUNT KURA (e.g. 1.5) to the wallet address TO.
    Send {
        /// The payee's wallet address (64 hex characters).
        to: Address,
        /// How much, in KURA (up to 9 decimals).
        amount: String,
    },
    /// List the transfers into and out of your wallet.
    History {
        /// Another account's address instead of yours.
        address: Option<Address>,
    },
    /// Take test tokens from the local testnet's faucet (only on a testnet you started).
    Faucet {
        /// How much, in KURA.
        #[arg(default_value = "100")]
        amount: String,
    },
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Make an account from a new 24-word recovery phrase; prints the phrase (write it down),
    /// the account ID and its QR code.
    Create,
    /// Print the account ID and its QR code.
    Show,
    /// Restore an account from its recovery phrase (read from standard input, or --phrase).
    Recover {
        /// The 24 words (else read from standard input).
        #[arg(long)]
        phrase: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum MsgCommand {
    /// Send TEXT to the account ID; prints the message's id.
    Send {
        /// The recipient's account ID (`kura account show` prints it).
        to: String,
        /// The text.
        text: String,
        /// Files to attach (stored in the network under a key only the recipient receives).
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// How long the message waits for the recipient, in seconds (default 14 days, at
        /// most 28).
        #[arg(long, default_value_t = DEFAULT_TTL.as_secs())]
        ttl: u64,
    },
    /// Read new messages (message requests from strangers listed apart), and what you sent
    /// with whether it was delivered.
    Inbox,
    /// Print messages as they arrive, until interrupted (or until --count have arrived).
    Watch {
        /// How often to look, in milliseconds.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Ask more work of messages sent to you (Bitmessage's trials per byte; the network's
    /// default is the floor). Senders look it up; your inbox refuses messages with less.
    Difficulty {
        /// Trials per byte.
        trials_per_byte: u64,
    },
    /// Fetch an attachment (`ADDRESS:KEY`, as the inbox prints it) into OUT.
    Fetch {
        /// The attachment's reference.
        reference: String,
        /// Where to write it.
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ContactsCommand {
    /// Add an account (or rename it); its messages are no longer requests.
    Add {
        /// The account ID.
        id: String,
        /// A name to show instead of the ID.
        #[arg(long)]
        name: Option<String>,
    },
    /// Block an account: its messages are dropped unseen and get no receipt.
    Block {
        /// The account ID.
        id: String,
    },
    /// List contacts.
    List,
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
    // These need no network.
    let command = match cli.command {
        Command::Account(command) => return account(command),
        Command::Contacts(command) => return contacts(command),
        other => other,
    };
    let cli = Cli { command, ..cli };
    let bootstrap = peers::resolve(cli.peers.as_deref())?;
    let mut config = kura_client::ClientConfig::default();
    if matches!(&cli.command, Command::Put { .. } | Command::Msg(MsgCommand::Send { .. })) {
        // Storage (files, attachments) is paid from the home's wallet; on a local testnet its
        // faucet tops it up.
        config.wallet = Some(std::sync::Arc::new(kura_client::Wallet::of_home(&UserKey::home())?));
        config.faucet = peers::testnet_dir().map(|d| kura_client::Wallet::faucet(&d)).transpose()?.flatten().map(std::sync::Arc::new);
    }
    if let Command::Put { max_cost: Some(max), .. } = &cli.command {
        config.max_cost = Some(kura_node::ledger::parse_amount(max).map_err(anyhow::Error::msg)?);
    }
    let client = Client::connect_with(bootstrap, config).await.context("joining the network")?;
    let result = run(&client, cli.command).await;
    client.close().await;
    result
}

async fn run(client: &Client, command: Command) -> Result<()> {
    match command {
        Command::Put { path, public, pointer, .. } => {
            use kura_node::ledger::format_amount;
            let key = UserKey::load_or_create(&UserKey::home())?;
            let visibility = if public { Visibility::Public } else { Visibility::Private };
            let size = tree_bytes(&path)?;
            let estimate = client.estimate(size).await?;
            if estimate.cost > 0 {
                eprintln!(
                    "storing {} will cost at most {} ({} per MiB stored, the highest of {} vaults' quotes)",
                    format!("{:.1} MiB", size as f64 / 1048576.0),
                    format_amount(estimate.cost.into()),
                    format_amount(estimate.price_per_mib.into()),
                    estimate.quotes
                );
                if let Some(max) = client.config().max_cost {
                    if estimate.cost > max {
                        anyhow::bail!(kura_client::ClientError::TooExpensive { cost: estimate.cost, max });
                    }
                }
                let drawn = client.ensure_funds(estimate.cost).await?;
                if drawn > 0 {
                    eprintln!("the wallet was short: drew {} from the local testnet's faucet", format_amount(drawn.into()));
                }
            }
            let bar = progress_bar();
            let address = client.put_path(&path, visibility, &key, &bar).await?;
            bar.finish_and_clear();
            if client.storage_paid() > 0 {
                eprintln!("paid {} for storage", format_amount(client.storage_paid().into()));
            }
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
        Command::Msg(command) => msg(client, command).await?,
        Command::Wallet(command) => wallet(client, command).await?,
        Command::Account(_) | Command::Contacts(_) => unreachable!("handled without the network"),
    }
    Ok(())
}

fn account(command: AccountCommand) -> Result<()> {
    let home = UserKey::home();
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let print_id = |a: &Account| -> Result<()> {
        println!("{}", a.id().qr()?);
        println!("account ID: {}", a.id());
        Ok(())
    };
    match command {
        AccountCommand::Create => {
            if let Some(existing) = Account::load(&home)? {
                anyhow::bail!("{} already has an account: {}", home.display(), existing.id());
            }
            let a = Account::generate();
            let kept_key = a.install(&home)?;
            println!("Recovery phrase (write it down; it restores this account anywhere):\n\n  {}\n", a.phrase());
            if kept_key {
                println!("Note: this home had a user key already; it stays the key of your files.\n");
            }
            print_id(&a)?;
        }
        AccountCommand::Show => print_id(&Account::require(&home)?)?,
        AccountCommand::Recover { phrase } => {
            let phrase = match phrase {
                Some(p) => p,
                None => {
                    eprintln!("Type the 24 words of the recovery phrase, then Enter:");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line
                }
            };
            let a = Account::from_phrase(&phrase)?;
            a.install(&home)?;
            print_id(&a)?;
        }
    }
    Ok(())
}

fn contacts(command: ContactsCommand) -> Result<()> {
    let home = UserKey::home();
    let mut mailbox = Mailbox::open(&home)?;
    match command {
        ContactsCommand::Add { id, name } => mailbox.add_contact(id.parse()?, name)?,
        ContactsCommand::Block { id } => mailbox.block(id.parse()?)?,
        ContactsCommand::List => {
            for c in mailbox.contacts() {
                let state = if c.blocked { " (blocked)" } else { "" };
                println!("{} {}{state}", c.name.as_deref().unwrap_or("-"), c.id);
            }
        }
    }
    Ok(())
}

async fn wallet(client: &Client, command: WalletCommand) -> Result<()> {
    use kura_node::ledger::{format_amount, parse_amount, Output};
    let home = UserKey::home();
    let mine = kura_client::wallet::Wallet::of_home(&home)?;
    match command {
        WalletCommand::Address => println!("{}", mine.address()),
        WalletCommand::Balance { address } => {
            let b = client.balance(address.unwrap_or(mine.address())).await?;
            println!("{}", format_amount(b.balance));
            eprintln!("({} transfers out; {} replicas agree)", b.nonce, b.agreeing);
        }
        WalletCommand::Send { to, amount } => {
            let units = parse_amount(&amount).map_err(anyhow::Error::msg)?;
            let cert = client.pay(&mine, vec![Output { to, amount: units, memo: [0; 32] }]).await?;
            eprintln!("paid {} to {to} (transfer {} certified by {} replicas)", format_amount(units.into()), hex::encode(&cert.id()[..8]), cert.signers.len());
            let b = client.balance(mine.address()).await?;
            println!("{}", format_amount(b.balance));
        }
        WalletCommand::History { address } => {
            let account = address.unwrap_or(mine.address());
            for e in client.history(account).await? {
                let t = &e.certificate.transfer.transfer;
                if e.is_debit() {
                    for o in &t.outputs {
                        println!("#{:<5} out {:>22}  to {}", t.nonce, format_amount(o.amount.into()), o.to);
                    }
                } else {
                    println!("       in  {:>22}  from {}", format_amount(t.paid_to(&account).into()), t.from_address());
                }
            }
        }
        WalletCommand::Faucet { amount } => {
            let units = parse_amount(&amount).map_err(anyhow::Error::msg)?;
            let dir = peers::testnet_dir().context("no local testnet: the faucet is a testnet's")?;
            let faucet = kura_client::wallet::Wallet::faucet(&dir)?
                .with_context(|| format!("{} has no genesis key: is it a testnet?", dir.display()))?;
            client.pay(&faucet, vec![Output { to: mine.address(), amount: units, memo: [0; 32] }]).await?;
            let b = client.balance(mine.address()).await?;
            println!("{}", format_amount(b.balance));
        }
    }
    Ok(())
}

/// Bytes of a file, or of every file under a directory.
fn tree_bytes(path: &std::path::Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        total += tree_bytes(&entry?.path())?;
    }
    Ok(total)
}

/// The local testnet joined: the folder of the peers file given ($KURA_PEERS), if it is a
/// testnet's, else the most recent testnet.

async fn msg(client: &Client, command: MsgCommand) -> Result<()> {
    let home = UserKey::home();
    match command {
        MsgCommand::Send { to, text, attach, ttl } => {
            let to: AccountId = to.parse()?;
            let mut attachments = Vec::new();
            for path in attach {
                // Each attachment under a key of its own, which only the letter carries.
                let key = UserKey::generate();
                let size = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
                let bar = progress_bar();
                let address = client.put_path(&path, Visibility::Private, &key, &bar).await?;
                bar.finish_and_clear();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                attachments.push(Attachment { name, size, address, key: key.to_bytes() });
            }
            let mut mailbox = Mailbox::open(&home)?;
            let sent = mailbox.send(client, to, text, attachments, std::time::Duration::from_secs(ttl)).await?;
            println!("{}", sent.id);
        }
        MsgCommand::Inbox => {
            let mut mailbox = Mailbox::open(&home)?;
            let delivery = mailbox.sync(client).await?;
            let (requests, known): (Vec<&Received>, Vec<&Received>) = delivery.new.iter().partition(|r| r.request);
            if delivery.new.is_empty() {
                println!("No new messages.");
            }
            if !known.is_empty() {
                println!("New messages:");
                known.iter().for_each(|r| print_received(&mailbox, r));
            }
            if !requests.is_empty() {
                println!("Message requests (not in your contacts; `kura contacts add ID` to accept):");
                requests.iter().for_each(|r| print_received(&mailbox, r));
            }
            if delivery.rejected > 0 {
                println!("{} message(s) refused: forged, malformed or not for you.", delivery.rejected);
            }
            let sent = mailbox.sent();
            if !sent.is_empty() {
                println!("Sent:");
                for s in &sent[sent.len().saturating_sub(20)..] {
                    let state = if s.delivered { "delivered" } else { "sent" };
                    println!("  [{}] to {}: {} ({state})", time(s.sent_ms), mailbox.name_of(&s.to), s.text);
                }
            }
        }
        MsgCommand::Watch { interval_ms, count } => {
            let mut shown = 0;
            loop {
                // Locked only while reading, so `kura msg send` and `inbox` run meanwhile.
                let mut mailbox = Mailbox::open(&home)?;
                match mailbox.sync(client).await {
                    Ok(delivery) => {
                        for r in &delivery.new {
                            print_received(&mailbox, r);
                            shown += 1;
                        }
                        for s in &delivery.delivered {
                            println!("  delivered to {}: {}", mailbox.name_of(&s.to), s.text);
                        }
                        use std::io::Write;
                        std::io::stdout().flush()?;
                    }
                    Err(e) => eprintln!("reading the inbox: {e}"),
                }
                if count.is_some_and(|c| shown >= c) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(interval_ms)).await;
            }
        }
        MsgCommand::Difficulty { trials_per_byte } => {
            let mut mailbox = Mailbox::open(&home)?;
            let asked = kura_node::message::Difficulty { trials_per_byte, ..kura_node::message::Difficulty::DEFAULT };
            mailbox.ask_difficulty(client, asked).await?;
            println!("messages to you now need {trials_per_byte} trials per byte");
        }
        MsgCommand::Fetch { reference, out } => {
            let (address, key) = Attachment::parse_reference(&reference)?;
            let bar = progress_bar();
            client.get_path(address, &out, &UserKey::from_bytes(key), &bar).await?;
            bar.finish_and_clear();
        }
    }
    Ok(())
}

fn print_received(mailbox: &Mailbox, r: &Received) {
    println!("  [{}] {} #{}: {}", time(r.sent_ms), mailbox.name_of(&r.from), r.seq, r.text);
    for a in &r.attachments {
        println!("      attachment {} ({} bytes): kura msg fetch {} OUT", a.name, a.size, a.reference());
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` UTC.
fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
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
    out.push_str("\nsettings:");
    for (k, v) in &s.settings {
        out.push_str(&format!("\n  {k} = {v}"));
    }
    out
}
