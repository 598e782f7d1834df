#!/usr/bin/env bash
# Builds the fuzz targets of tests/fuzz (POP3 commands, SASL, LMTP, PROXY protocol) and runs
# each for a bounded time, FUZZ_SECONDS (default 15) seconds, from the committed seeds.
# A crash or a failed property stops the script with libFuzzer's report and the input
# saved under tests/fuzz/artifacts/. README.md ("Fuzzing") shows how to run longer.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:$HOME/.cargo/bin"
seconds="${FUZZ_SECONDS:-15}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "tests/fuzz_smoke.sh: installing cargo-fuzz 0.13.2" >&2
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi

# cargo-fuzz passes options to rustc that only nightly accepts; this lets the stable
# toolchain take them. No sanitizer: the code forbids `unsafe`, and the build stays quick.
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fuzz=(--fuzz-dir tests/fuzz --sanitizer none --dev)

# The fuzz crate is outside the workspace, so `cargo fmt --all` does not see it.
cargo fmt --manifest-path tests/fuzz/Cargo.toml --check

# cargo-fuzz has no --locked: fail here if tests/fuzz/Cargo.lock is out of date.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo fetch --locked --quiet --manifest-path tests/fuzz/Cargo.toml --target "$host"

start=$SECONDS
cargo fuzz build "${fuzz[@]}"
echo "tests/fuzz_smoke.sh: built in $((SECONDS - start)) s;" \
  "tests/fuzz/target holds $(du -sh tests/fuzz/target | cut -f1)" >&2

declare -A dictionary=(
  [pop3_commands]=pop3
  [sasl]=pop3
  [lmtp_session]=lmtp
  [proxy_header]=proxy
)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in $(cargo fuzz list --fuzz-dir tests/fuzz); do
  corpus="tests/fuzz/corpus/$target"
  mkdir -p "$corpus"
  # The first folder receives new inputs; the seeds folder is only read.
  if ! cargo fuzz run "${fuzz[@]}" "$target" "$corpus" "tests/fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -dict="tests/fuzz/dict/${dictionary[$target]}.dict" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "tests/fuzz_smoke.sh: $target failed; the input is under tests/fuzz/artifacts/$target" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  echo "tests/fuzz_smoke.sh: $target: $runs runs in ${seconds} s, no failure, peak RSS ${rss} MB" >&2
done
