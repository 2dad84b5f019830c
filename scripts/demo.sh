#!/usr/bin/env bash
# The main job on one machine: build, start a local testnet of real vault processes, store and
# fetch a private file and a public directory tree, deliver a message to an offline account,
# move tokens on the reward ledger,
# lose vaults, fetch again, tear down.
# Usage: scripts/demo.sh [NODES]
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:-25}"
dir="$(mktemp -d "${TMPDIR:-/tmp}/kura-demo.XXXXXX")"
bin=./target/release
cleanup() { "$bin/kura-testnet" --dir "$dir/net" down >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

echo "== building (release)"
cargo build --release --locked -p kura-vault -p kura-testnet -p kura-client

echo "== starting $nodes vaults"
"$bin/kura-testnet" --dir "$dir/net" up --nodes "$nodes"
export KURA_PEERS="$dir/net/peers" KURA_HOME="$dir/home"

echo "== storing a private 64 MiB file (vaults ask to be paid; the wallet draws from the testnet's faucet)"
head -c $((64 << 20)) /dev/urandom > "$dir/file"
address="$("$bin/kura" put "$dir/file" | tail -n 1)"
echo "address: $address"
echo "== what the vaults earned for it (their balances follow within a few seconds)"
sleep 3
"$bin/kura-testnet" --dir "$dir/net" status --probes 5 | grep -o 'earned: [^(]*' | head -n 8 || true
echo "your wallet now holds: $("$bin/kura" wallet balance 2>/dev/null)"
"$bin/kura" get "$address" "$dir/file.back"
cmp "$dir/file" "$dir/file.back" && echo "fetched back byte-identical"

echo "== storing a public directory tree"
mkdir -p "$dir/tree/docs" && echo "hello from kura" > "$dir/tree/docs/hello.txt"
head -c 3000000 /dev/urandom > "$dir/tree/blob.bin"
tree_address="$("$bin/kura" put --public "$dir/tree" | tail -n 1)"
"$bin/kura" get "$tree_address" "$dir/tree.back"
diff -r "$dir/tree" "$dir/tree.back" && echo "tree fetched back identical"

echo "== publishing the tree under a pointer, then a new version under the same address"
pointer="$("$bin/kura" put --public "$dir/tree" --pointer demo | tail -n 1)"
echo "pointer: $pointer"
echo "second version" > "$dir/tree/docs/hello.txt"
"$bin/kura" put --public "$dir/tree" --pointer demo >/dev/null
"$bin/kura" pointer get "$pointer"
"$bin/kura" get "$pointer" "$dir/tree.v2"
diff -r "$dir/tree" "$dir/tree.v2" && echo "the pointer leads to the new version"

echo "== two accounts; Alice writes to Bob, who is offline (no process of his runs)"
alice="$dir/alice" bob="$dir/bob"
KURA_HOME="$alice" "$bin/kura" account create | tail -n 1
bob_id="$(KURA_HOME="$bob" "$bin/kura" account create | tail -n 1 | awk '{print $3}')"
KURA_HOME="$alice" "$bin/kura" msg send "$bob_id" "Hello Bob, the tree is at $tree_address" >/dev/null
KURA_HOME="$alice" "$bin/kura" msg send "$bob_id" "And the file is attached" --attach "$dir/tree/docs/hello.txt" >/dev/null
echo "sent two messages to $bob_id"
echo "== Bob comes back and reads his inbox"
KURA_HOME="$bob" "$bin/kura" msg inbox
echo "== Alice's inbox: Bob's receipts"
KURA_HOME="$alice" "$bin/kura" msg inbox

echo "== tokens: Alice takes 100 KURA from the testnet's faucet and pays Bob 12.5"
KURA_HOME="$alice" "$bin/kura" wallet faucet 100
bob_wallet="$(KURA_HOME="$bob" "$bin/kura" wallet address)"
KURA_HOME="$alice" "$bin/kura" wallet send "$bob_wallet" 12.5
echo "Bob's balance: $(KURA_HOME="$bob" "$bin/kura" wallet balance)"
KURA_HOME="$alice" "$bin/kura" wallet history

echo "== stopping 4 vaults; the file still comes back"
"$bin/kura-testnet" --dir "$dir/net" kill --count 4
"$bin/kura" get "$address" "$dir/file.again"
cmp "$dir/file" "$dir/file.again" && echo "fetched back byte-identical with 4 vaults down"
"$bin/kura-testnet" --dir "$dir/net" status --probes 10 || true

echo "== done; stopping the testnet"
