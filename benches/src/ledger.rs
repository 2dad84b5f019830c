//! The reward ledger: the CPU cost of signing and of verifying a certificate (blst against the
//! default pairing backend is in RESULTS.md), and certified transfers per second with their
//! latency on a local testnet, from many payers at once.

use std::time::{Duration, Instant};

use anyhow::Result;
use kura_client::{Client, Wallet};
use kura_node::ledger::{verify_batch, BindingCache, Certificate, Output, WalletKey, QUORUM};

use crate::healthy_testnet;

fn pct(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn per_op(n: u32, f: impl FnMut()) -> f64 {
    let mut f = f;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
}

/// Micro-costs, then `payers` wallets each paying `each` times on `nodes` vaults.
pub fn run(nodes: usize, payers: usize, each: usize) -> Result<()> {
    let owner = WalletKey::random();
    let to = WalletKey::random().address();
    let signed = owner.sign(1, vec![Output { to, amount: 5, memo: [0; 32] }]);
    let replicas: Vec<WalletKey> = (0..kura_node::age::VOTERS).map(|_| WalletKey::random()).collect();
    let shares: Vec<_> = replicas
        .iter()
        .map(|k| (k.bind(&kura_node::Keypair::generate_ed25519()), k.sign_replica(&signed)))
        .collect();
    let cert = Certificate::aggregate(signed.clone(), shares[..QUORUM].to_vec())?;
    // Another certificate by the same signers teaches a cache their bindings.
    let other = owner.sign(2, vec![Output { to, amount: 6, memo: [0; 32] }]);
    let other_shares = replicas[..QUORUM].iter().zip(&shares).map(|(k, (b, _))| (b.clone(), k.sign_replica(&other))).collect();
    let mut warm = BindingCache::default();
    Certificate::aggregate(other, other_shares)?.verify(&mut warm)?;
    let sign = per_op(200, || {
        std::hint::black_box(replicas[0].sign_replica(&signed));
    });
    let owner_verify = per_op(200, || {
        std::hint::black_box(signed.verify().is_ok());
    });
    let cert_warm = per_op(200, || {

        // A cache that knows the signers' bindings but not this certificate.
        let mut c = warm.clone();
        std::hint::black_box(cert.verify(&mut c).is_ok());
    });
    let cold = per_op(50, || {
        std::hint::black_box(cert.verify(&mut BindingCache::default()).is_ok());
    });
    // Owners' signatures checked together, as a busy vault's verifier thread does.
    let many: Vec<_> = (0..16)
        .map(|i| WalletKey::random().sign(1, vec![Output { to, amount: i + 1, memo: [0; 32] }]).prepare().map(|p| p.1))
        .collect::<Result<_, _>>()?;
    let batched = |n: usize| per_op(20, || {
        std::hint::black_box(verify_batch(&many[..n]));
    }) / n as f64;
    let (b2, b4, b16) = (batched(2), batched(4), batched(16));
    println!("One core, blst backend ({QUORUM}-signer certificates):");
    println!("| operation | ms |");
    println!("|---|---|");
    println!("| replica signs a transfer id | {sign:.2} |");
    println!("| owner's signature verified | {owner_verify:.2} |");
    println!("| certificate verified, signers' bindings not yet known ({QUORUM} proofs of possession) | {cold:.2} |");
    println!("| certificate verified, bindings known (as at a vault) | {cert_warm:.2} |");
    println!("| one signature of a batch of 2 / 4 / 16 | {b2:.2} / {b4:.2} / {b16:.2} |");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (net, _down) = healthy_testnet(&rt, nodes, 1 << 30)?;
    let peers = kura_client::peers::read_peers_file(&net.layout().peers_file())?;
    let dir = crate::tempdir()?;
    let faucet = Wallet::faucet(&net.layout().dir)?.ok_or_else(|| anyhow::anyhow!("no faucet"))?;
    rt.block_on(async {
        let client = Client::connect(peers).await?;
        let wallets: Vec<Wallet> =
            (0..payers).map(|i| Wallet::open(&dir.join(format!("w{i}")), WalletKey::random())).collect::<Result<_, _>>()?;
        client
            .pay(&faucet, wallets.iter().map(|w| Output { to: w.address(), amount: 1_000_000, memo: [0; 32] }).collect())
            .await?;
        let payee = WalletKey::random().address();
        let started = Instant::now();
        let runs = wallets.iter().map(|w| {
            let client = client.clone();
            async move {
                let mut times = Vec::new();
                for _ in 0..each {
                    let t = Instant::now();
                    client.pay(w, vec![Output { to: payee, amount: 1, memo: [0; 32] }]).await?;
                    times.push(t.elapsed());
                }
                Ok::<_, kura_client::ClientError>(times)
            }
        });
        let mut times = Vec::new();
        for r in futures::future::join_all(runs).await {
            times.extend(r?);
        }
        let secs = started.elapsed().as_secs_f64();
        times.sort();
        println!();
        println!("{nodes} vaults, {payers} payers at once, {each} transfers each (one client process):");
        println!("| transfers | seconds | certified transfers/s | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|");
        println!(
            "| {} | {secs:.1} | {:.0} | {:.0} | {:.0} |",
            times.len(),
            times.len() as f64 / secs,
            pct(&times, 50),
            pct(&times, 99)
        );
        let got = client.balance(payee).await?.balance;
        anyhow::ensure!(got == (payers * each) as i128, "payee holds {got}, not {}", payers * each);
        client.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
