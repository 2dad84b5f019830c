#!/usr/bin/env bash
# Long tests kept out of `cargo test --workspace`: 100 vaults through `kura-testnet up`, on a
# release build (debug vaults are too slow for 100 on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p kura-vault -p kura-testnet
cargo test --release --locked -p kura-testnet --test hundred -- --ignored --nocapture
