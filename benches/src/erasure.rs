//! reed-solomon-erasure (simd-accel) against reed-solomon-simd, 4 + 4 shards of 1 MiB (one
//! full 4 MiB self_encryption chunk), encode and worst-case decode (all 4 data shards lost).

use std::time::Instant;

use anyhow::{anyhow, Result};

const SHARD: usize = 1 << 20;
const K: usize = 4;
const M: usize = 4;
const ROUNDS: usize = 200;

/// Runs the comparison and prints a table.
pub fn run() -> Result<()> {
    let data: Vec<Vec<u8>> = (0..K).map(|i| (0..SHARD).map(|j| (i * 7 + j * 13) as u8).collect()).collect();
    let chunk_mib = (K * SHARD) as f64 / 1048576.0;
    println!("| crate | encode (MiB of chunk/s) | decode, 4 data shards lost (MiB/s) |");
    println!("|---|---|---|");

    // reed-solomon-erasure
    let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(K, M).map_err(|e| anyhow!("{e:?}"))?;
    let mut shards: Vec<Vec<u8>> = data.iter().cloned().chain((0..M).map(|_| vec![0u8; SHARD])).collect();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        rs.encode(&mut shards).map_err(|e| anyhow!("{e:?}"))?;
    }
    let enc = chunk_mib * ROUNDS as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        let mut slots: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        for s in slots.iter_mut().take(K) {
            *s = None;
        }
        rs.reconstruct_data(&mut slots).map_err(|e| anyhow!("{e:?}"))?;
        if slots[0].as_deref() != Some(&data[0][..]) {
            return Err(anyhow!("reed-solomon-erasure decoded wrong bytes"));
        }
    }
    let dec = chunk_mib * ROUNDS as f64 / t.elapsed().as_secs_f64();
    println!("| reed-solomon-erasure 6 (simd-accel) | {enc:.0} | {dec:.0} |");

    // reed-solomon-simd
    let t = Instant::now();
    let mut parity = Vec::new();
    for _ in 0..ROUNDS {
        parity = reed_solomon_simd::encode(K, M, &data).map_err(|e| anyhow!("{e}"))?;
    }
    let enc = chunk_mib * ROUNDS as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        let recovered = reed_solomon_simd::decode(K, M, std::iter::empty::<(usize, &Vec<u8>)>(), parity.iter().enumerate())
            .map_err(|e| anyhow!("{e}"))?;
        if recovered.get(&0).map(|v| v.as_slice()) != Some(&data[0][..]) {
            return Err(anyhow!("reed-solomon-simd decoded wrong bytes"));
        }
    }
    let dec = chunk_mib * ROUNDS as f64 / t.elapsed().as_secs_f64();
    println!("| reed-solomon-simd 3.1 | {enc:.0} | {dec:.0} |");
    Ok(())
}
