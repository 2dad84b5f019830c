#!/usr/bin/env bash
# The main job on one machine: build, start a local testnet of real vault processes, use it,
# and tear it down. Usage: scripts/demo.sh [NODES]
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:-25}"
dir="$(mktemp -d "${TMPDIR:-/tmp}/kura-demo.XXXXXX")"
cleanup() { ./target/release/kura-testnet --dir "$dir" down >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== building (release)"
cargo build --release --locked -p kura-vault -p kura-testnet -p kura-client

echo "== starting $nodes vaults in $dir"
./target/release/kura-testnet --dir "$dir" up --nodes "$nodes"
export KURA_PEERS="$dir/peers"

echo "== network status"
./target/release/kura-testnet --dir "$dir" status --probes 20

target="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "== the close group (8 vaults) of address $target"
./target/release/kura closest "$target" -n 8

echo "== stopping 3 vaults, restarting one"
./target/release/kura-testnet --dir "$dir" kill --count 3
victim="$(./target/release/kura-testnet --dir "$dir" status --probes 1 2>/dev/null | awk '$5 == "down" {print $1; exit}' || true)"
if [ -n "$victim" ]; then ./target/release/kura-testnet --dir "$dir" restart --node "$victim"; fi
./target/release/kura closest "$target" -n 8

echo "== done; stopping the testnet"
