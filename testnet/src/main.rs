//! `kura-testnet`: run a local Kura network of real vault processes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kura_testnet::health::HealthConfig;
use kura_testnet::{process, HealthReport, Testnet};

/// Launch, inspect, churn and tear down a local Kura network of kura-vault processes.
#[derive(Parser, Debug)]
#[command(name = "kura-testnet", version, about)]
struct Cli {
    /// Directory holding the testnet's state, peers file, and each vault's data and log.
    /// Defaults to a per-user data directory (~/.local/share/kura/testnet).
    #[arg(long, global = true, value_name = "DIR", env = "KURA_TESTNET_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a new network and wait until it is healthy.
    Up {
        /// How many vaults.
        #[arg(long, default_value_t = 25)]
        nodes: usize,
        /// Capacity quota of each vault.
        #[arg(long, default_value = "1GiB")]
        capacity: bytesize::ByteSize,
        /// Seconds to wait for health before giving up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Run the vaults without repair and handover (to see what erasure coding alone
        /// survives).
        #[arg(long)]
        no_repair: bool,
        /// Vaults store for free (by default they ask to be paid, as on a real network, and
        /// `kura put` draws from the testnet's faucet).
        #[arg(long)]
        free_storage: bool,
    },
    /// Print one row per vault; exit non-zero when the network is not healthy.
    Status {
        /// Random addresses whose close groups are checked.
        #[arg(long, default_value_t = 100)]
        probes: usize,
    },
    /// Stop vaults.
    Kill {
        /// Stop this many random running vaults.
        #[arg(long, conflicts_with = "node", required_unless_present = "node")]
        count: Option<usize>,
        /// Stop this vault.
        #[arg(long)]
        node: Option<usize>,
        /// Use SIGKILL instead of SIGTERM.
        #[arg(long)]
        hard: bool,
    },
    /// Bring a stopped vault back with its data, identity and port.
    Restart {
        /// The vault's index.
        #[arg(long)]
        node: usize,
        /// Seconds to wait for health (0: do not wait).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Add vaults that join the running network.
    Add {
        /// How many.
        #[arg(long)]
        nodes: usize,
        /// Capacity quota of each new vault.
        #[arg(long, default_value = "1GiB")]
        capacity: bytesize::ByteSize,
        /// Seconds to wait for health (0: do not wait).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Stop every vault (data stays in DIR unless --clean).
    Down {
        /// Also delete DIR.
        #[arg(long)]
        clean: bool,
    },
}

fn main() -> ExitCode {
    if let Some(code) = kura_testnet::process::run_as_vault_if_invoked_so() {
        return code;
    }
    kura_node::init_logging("warn");
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dir = cli.dir.unwrap_or_else(Testnet::default_dir);
    let net = Testnet::new(dir.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Command::Up { nodes, capacity, timeout, no_repair, free_storage } => {
            let start = Instant::now();
            let mut args = if no_repair { vec!["--no-repair".to_string()] } else { Vec::new() };
            if !free_storage {
                args.push("--paid-storage".to_string());
            }
            net.up_with(nodes, capacity.as_u64(), args)?;
            let code = wait(&rt, &net, timeout, start)?;
            println!("data and logs: {}/vault-<i>/ (log: {}/vault-<i>/log)", dir.display(), dir.display());
            println!("peers file:    {}", net.layout().peers_file().display());
            Ok(code)
        }
        Command::Status { probes } => {
            let report = rt.block_on(net.health(HealthConfig { probes, ..Default::default() }))?;
            print_status(&net, &report)?;
            Ok(verdict(&report))
        }
        Command::Kill { count, node, hard } => {
            let targets = match (count, node) {
                (_, Some(i)) => vec![i],
                (Some(k), None) => net.pick_running(k)?,
                (None, None) => anyhow::bail!("give --count or --node"),
            };
            let stopped = net.kill(&targets, hard)?;
            for i in &targets {
                let how = if hard { "killed (SIGKILL)" } else { "stopped" };
                let what = if stopped.contains(i) { how } else { "was not running" };
                println!("vault {i} {what}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { node, timeout } => {
            let start = Instant::now();
            net.restart(node)?;
            println!("vault {node} restarted");
            wait(&rt, &net, timeout, start)
        }
        Command::Add { nodes, capacity, timeout } => {
            let start = Instant::now();
            let added = net.add(nodes, capacity.as_u64())?;
            println!("added vaults {added:?}");
            wait(&rt, &net, timeout, start)
        }
        Command::Down { clean } => {
            let n = net.down()?;
            println!("stopped {n} vaults");
            if clean && dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn wait(rt: &tokio::runtime::Runtime, net: &Testnet, timeout: u64, start: Instant) -> Result<ExitCode> {
    if timeout == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let report = rt.block_on(net.wait_healthy(Duration::from_secs(timeout), HealthConfig::default()))?;
    let running = net.running(&net.state()?).len();
    if report.healthy() {
        println!(
            "{running} vaults healthy after {:.1} s ({} close-group lookups agree)",
            start.elapsed().as_secs_f64(),
            report.lookups
        );
    } else {
        eprintln!("network not healthy after {timeout} s:");
        for p in report.problems() {
            eprintln!("  {p}");
        }
        eprintln!("vaults are left running for inspection; `kura-testnet down` stops them");
    }
    Ok(verdict(&report))
}

fn verdict(report: &HealthReport) -> ExitCode {
    if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_status(net: &Testnet, report: &HealthReport) -> Result<()> {
    let state = net.state()?;
    let running = net.running(&state);
    let statuses: std::collections::HashMap<usize, &kura_node::wire::VaultStatus> =
        report.vaults.iter().filter_map(|v| v.status.as_ref().ok().map(|s| (v.index, s))).collect();
    println!(
        "{:>3}  {:<52}  {:<32}  {:>7}  {:<4}  {:>5}  {:>7}  {:>21}  {:>7}  {:>8}  {:>7}  {:>9}  {:>7}  {:>10}",
        "#", "peer id", "listen", "pid", "up", "table", "records", "used / capacity", "pending", "repaired", "handed", "moved",
        "audited", "audit-fail"
    );
    for v in &state.vaults {
        let up = running.contains(&v.index);
        let listen = v.addr.split("/p2p/").next().unwrap_or(&v.addr);
        let (table, records, used, repair) = match statuses.get(&v.index) {
            Some(s) => (
                s.routing_table_size.to_string(),
                s.records_stored.to_string(),
                format!("{} / {}", bytesize::ByteSize(s.bytes_used).to_string_as(true), bytesize::ByteSize(s.capacity).to_string_as(true)),
                format!(
                    "{:>7}  {:>8}  {:>7}  {:>9}  {:>7}  {:>10}",
                    s.pending_repairs,
                    s.shards_repaired,
                    s.shards_handed_over,
                    bytesize::ByteSize(s.repair_bytes).to_string_as(true),
                    s.audits_passed,
                    s.audit_failures
                ),
            ),
            None => (
                "-".into(),
                "-".into(),
                format!("- / {}", bytesize::ByteSize(v.capacity).to_string_as(true)),
                format!("{:>7}  {:>8}  {:>7}  {:>9}  {:>7}  {:>10}", "-", "-", "-", "-", "-", "-"),
            ),
        };
        let rss = if up { process::rss_bytes(v.pid).map(|b| format!(" rss {}", bytesize::ByteSize(b).to_string_as(true))) } else { None };
        println!(
            "{:>3}  {:<52}  {:<32}  {:>7}  {:<4}  {:>5}  {:>7}  {:>21}  {}{}",
            v.index,
            v.peer_id,
            listen,
            v.pid,
            if up { "up" } else { "down" },
            table,
            records,
            used,
            repair,
            rss.unwrap_or_default()
        );
        if let Some(s) = statuses.get(&v.index) {
            let workers: Vec<String> = s
                .workers
                .iter()
                .map(|w| {
                    let counters: Vec<String> = w.counters.iter().map(|(k, n)| format!("{k}={n}")).collect();
                    format!("{} {} ({})", w.name, w.state, counters.join(" "))
                })
                .collect();
            let kinds: Vec<String> = s.records_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let balance = s.balance.map_or("?".to_string(), kura_node::ledger::format_amount);
            println!(
                "       records: {}  workers: {}  earned: {}  balance: {balance}  (account {})",
                if kinds.is_empty() { "none".into() } else { kinds.join(", ") },
                workers.join("; "),
                kura_node::ledger::format_amount(i128::from(s.earned)),
                s.account
            );
            let shown = ["paid_storage", "storage_price", "payment_grace_secs", "handover_probation_secs", "age_epoch_secs", "repair_sweep_secs", "audit_interval_secs", "id_difficulty"];
            let settings: Vec<String> = shown
                .iter()
                .filter_map(|name| s.settings.iter().find(|(k, _)| k == name).map(|(k, v)| format!("{k}={v}")))
                .collect();
            if !settings.is_empty() {
                println!("       settings: {}", settings.join(" "));
            }
            if s.ledger_evidence > 0 {
                println!("       ledger evidence: {} (double spends or unowned certificates; see evidence/ in its folder)", s.ledger_evidence);
            }
        }
    }
    if report.healthy() {
        println!("healthy: {} vaults up, {} close-group lookups agree", running.len(), report.lookups);
    } else {
        println!("NOT healthy:");
        for p in report.problems() {
            println!("  {p}");
        }
    }
    Ok(())
}
