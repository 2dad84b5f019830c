//! File put/get throughput, client and vault memory, and storage overhead on a real testnet.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use kura_client::{Client, UserKey, Visibility};
use kura_testnet::process;

use crate::healthy_testnet;

use crate::MIB;

fn write_random(path: &Path, mib: usize) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut buf);
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

fn file_hash(path: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize())
}

/// `stream_encrypt` alone over the file, the way the client reads it: the client's own limit.
fn self_encryption_mibs(path: &Path) -> Result<f64> {
    let size = std::fs::metadata(path)?.len() as usize;
    let mut file = std::fs::File::open(path)?;
    let pieces = std::iter::from_fn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let n = file.read(&mut buf).ok()?;
        (n > 0).then(|| {
            buf.truncate(n);
            bytes::Bytes::from(buf)
        })
    });
    let t = Instant::now();
    let mut stream = self_encryption::stream_encrypt(size, pieces)?;
    for chunk in stream.chunks() {
        chunk?;
    }
    Ok(size as f64 / MIB / t.elapsed().as_secs_f64())
}

/// Runs one client operation in a child process; returns its stdout and peak RSS in bytes.
fn child_op(args: &[&str], home: &Path) -> Result<(String, u64)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("client")
        .args(args)
        .env("KURA_HOME", home)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = String::new();
    child.stdout.take().context("child stdout")?.read_to_string(&mut out)?;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for the child we spawned; `status` and `usage` outlive the call.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("client {args:?} failed (status {status})");
    }
    Ok((out, usage.ru_maxrss as u64 * 1024))
}

/// The child side of [`child_op`]: the same library calls `kura put` / `kura get` make.
pub fn client_op(op: &str, peers: &Path, what: &str, out: Option<PathBuf>) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = Client::connect(kura_client::peers::read_peers_file(peers)?).await?;
        let key = UserKey::load_or_create(&UserKey::home())?;
        let bar = ProgressBar::hidden();
        match (op, out) {
            ("put", None) => println!("{}", client.put_path(Path::new(what), Visibility::Private, &key, &bar).await?),
            ("get", Some(out)) => {
                client.get_path(what.parse()?, &out, &key, &bar).await?;
            }
            _ => bail!("usage: client put PEERS FILE | client get PEERS ADDRESS OUT"),
        }
        client.close().await;
        Ok(())
    })
}

/// Runs the file benchmark and prints its tables.
pub fn run(size_mib: usize, rss_mib: usize, nodes: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (net, down) = healthy_testnet(&rt, nodes, 8 << 30)?;
    let tmp = down.1.clone();
    let peers = net.layout().peers_file();
    let home = tmp.join("home");
    let src = tmp.join("file");
    write_random(&src, size_mib)?;
    let src_hash = file_hash(&src)?;

    let se = self_encryption_mibs(&src)?;
    let (put, get, stored) = rt.block_on(async {
        let client = Client::connect(kura_client::peers::read_peers_file(&peers)?).await?;
        let key = UserKey::load_or_create(&home)?;
        let bar = ProgressBar::hidden();
        let t = Instant::now();
        let address = client.put_path(&src, Visibility::Private, &key, &bar).await?;
        let put = size_mib as f64 / t.elapsed().as_secs_f64();
        let out = tmp.join("file.out");
        let t = Instant::now();
        client.get_path(address, &out, &key, &bar).await?;
        let get = size_mib as f64 / t.elapsed().as_secs_f64();
        if file_hash(&out)? != src_hash {
            bail!("the fetched file differs");
        }
        std::fs::remove_file(&out)?;
        let mut stored = 0u64;
        for (_, peer) in net.running_peers(&net.state()?) {
            stored += client.vault_status(peer).await?.bytes_used;
        }
        client.close().await;
        Ok::<_, anyhow::Error>((put, get, stored))
    })?;
    let mut vault_rss: Vec<f64> =
        net.state()?.vaults.iter().filter_map(|v| process::rss_bytes(v.pid)).map(|b| b as f64 / MIB).collect();
    vault_rss.sort_by(f64::total_cmp);
    std::fs::remove_file(&src)?;

    println!("{size_mib} MiB random file, {nodes} vaults, k = 4, m = 4, private:");
    println!("| self_encryption stream_encrypt (MiB/s) | put (MiB/s) | put / self_encryption | get (MiB/s) | stored on vaults per byte of file | vault RSS after, median / max (MiB) |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {se:.1} | {put:.1} | {:.0}% | {get:.1} | {:.3} | {:.1} / {:.1} |",
        100.0 * put / se,
        stored as f64 / (size_mib as f64 * MIB),
        vault_rss[vault_rss.len() / 2],
        vault_rss[vault_rss.len() - 1]
    );

    let big = tmp.join("big");
    write_random(&big, rss_mib)?;
    let big_hash = file_hash(&big)?;
    let t = Instant::now();
    let (out, put_rss) = child_op(&["put", peers.to_str().context("path")?, big.to_str().context("path")?], &home)?;
    let put_secs = t.elapsed().as_secs_f64();
    let address = out.lines().last().ok_or_else(|| anyhow!("no address printed"))?.trim().to_string();
    let back = tmp.join("big.out");
    let t = Instant::now();
    let (_, get_rss) = child_op(&["get", peers.to_str().context("path")?, &address, back.to_str().context("path")?], &home)?;
    let get_secs = t.elapsed().as_secs_f64();
    if file_hash(&back)? != big_hash {
        bail!("the fetched big file differs");
    }
    println!();
    println!("{rss_mib} MiB random file, client in its own process (connect included):");
    println!("| op | peak RSS (MiB) | MiB/s |");
    println!("|---|---|---|");
    println!("| put | {:.1} | {:.1} |", put_rss as f64 / MIB, rss_mib as f64 / put_secs);
    println!("| get | {:.1} | {:.1} |", get_rss as f64 / MIB, rss_mib as f64 / get_secs);
    Ok(())
}

/// A private put of `size_mib` on `nodes` vaults that store free, then on `nodes` vaults that
/// ask to be paid (the wallet funded from the testnet's faucet first, so the put pays and
/// does not draw).
pub fn paid(size_mib: usize, nodes: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let src = crate::tempdir()?.join("file");
    write_random(&src, size_mib)?;
    let mut rows = Vec::new();
    for paid in [false, true] {
        let args = if paid { vec!["--paid-storage".to_string()] } else { Vec::new() };
        let (net, down) = crate::healthy_testnet_with(&rt, nodes, 8 << 30, args)?;
        let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
        let row = rt.block_on(async {
            let mut config = kura_client::ClientConfig::default();
            if paid {
                let wallet = kura_client::Wallet::open(&down.1.join("wallet"), kura_node::ledger::WalletKey::random())?;
                config.wallet = Some(std::sync::Arc::new(wallet));
            }
            let client = Client::connect_with(peers, config).await?;
            if let (true, Some(w)) = (paid, &client.config().wallet) {
                let faucet = kura_client::Wallet::faucet(&net.layout().dir)?.ok_or_else(|| anyhow!("no faucet"))?;
                let units = 1_000 * kura_node::ledger::UNITS_PER_TOKEN;
                client.pay(&faucet, vec![kura_node::ledger::Output { to: w.address(), amount: units, memo: [0; 32] }]).await?;
            }
            let key = UserKey::load_or_create(&down.1.join("home"))?;
            let t = Instant::now();
            client.put_path(&src, Visibility::Private, &key, &ProgressBar::hidden()).await?;
            let secs = t.elapsed().as_secs_f64();
            let cost = client.storage_paid();
            client.close().await;
            Ok::<_, anyhow::Error>((paid, size_mib as f64 / secs, cost))
        })?;
        rows.push(row);
    }
    println!("{size_mib} MiB random file, {nodes} vaults, private put (one run each, free first):");
    println!("| storage | put (MiB/s) | paid | relative |");
    println!("|---|---|---|---|");
    let free = rows[0].1;
    for (paid, mibs, cost) in rows {
        println!(
            "| {} | {mibs:.1} | {} | {:.0}% |",
            if paid { "paid" } else { "free" },
            kura_node::ledger::format_amount(i128::from(cost)),
            100.0 * mibs / free
        );
    }
    Ok(())
}
