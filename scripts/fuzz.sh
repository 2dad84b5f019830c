#!/usr/bin/env bash
# Fuzzes every decoder of untrusted bytes (fuzz/src/lib.rs) with libFuzzer, SECONDS each
# (default 60), growing fuzz/corpus/<target> and keeping any crash in fuzz/artifacts/<target>.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The corpus and the
# crashes are replayed by `cargo test` (fuzz/tests/replay.rs) on stable: commit them.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(wire_request wire_response stored_record root_record tree_manifest letter certificate)
fi
# Seeds: valid inputs of each kind, so the fuzzer starts past the decoders' front doors.
cargo test -q -p kura-fuzz --test seed -- --ignored >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "fuzz/artifacts/$t"
  echo "== $t: ${secs}s"
  cargo +nightly fuzz run --fuzz-dir fuzz/harness "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -max_len=8192 -artifact_prefix="fuzz/artifacts/$t/" 2>&1 \
    | grep -E "^#[0-9]+ *DONE|Done [0-9]+ runs|SUMMARY|panicked|ERROR" || true
  # Keep the corpus small: only inputs that add coverage.
  cargo +nightly fuzz cmin --fuzz-dir fuzz/harness "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
done
