//! Storage audit cost: proof size, and the time to prove (holder) and verify (auditor) one
//! challenge, for shards of 256 KiB and 1 MiB (the shards of 1 MiB and 4 MiB chunks at k = 4).

use std::time::Instant;

use anyhow::Result;
use kura_node::audit::{prove, verify, Challenge};

const ROUNDS: u32 = 500;

/// Runs the measurement and prints a table.
pub fn run() -> Result<()> {
    println!("| shard | proof bytes (4 slices) | prove (µs) | verify (µs) | fetching the shard instead |");
    println!("|---|---|---|---|---|");
    let mut rng = rand::thread_rng();
    for len in [256 * 1024usize, 1024 * 1024] {
        let data: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let hash = *blake3::hash(&data).as_bytes();
        let challenges: Vec<Challenge> = (0..ROUNDS).map(|_| Challenge::random(len as u64, &mut rng)).collect();
        let t = Instant::now();
        let proofs = challenges.iter().map(|c| prove(&data, c)).collect::<Result<Vec<_>, _>>()?;
        let prove_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
        let t = Instant::now();
        for (c, p) in challenges.iter().zip(&proofs) {
            verify(&hash, len as u64, c, p)?;
        }
        let verify_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
        let mean = proofs.iter().map(Vec::len).sum::<usize>() / proofs.len();
        println!("| {} KiB | {mean} | {prove_us:.0} | {verify_us:.1} | {len} bytes |", len / 1024);
    }
    Ok(())
}
