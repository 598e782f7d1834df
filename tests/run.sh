#!/usr/bin/env bash
# The test command of the README: installs what the tests need and is missing, then runs
# the format check, clippy with warnings as errors, every test of the workspace, the Helm
# chart checks, the benchmark's smoke run and a short run of each fuzz target.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

# Debian packages of the programs the end-to-end tests drive: program=package.
needed=(
  curl=curl
  fetchmail=fetchmail
  python3=python3
  openssl=openssl
  haproxy=haproxy
  swaks=swaks
  redis-server=redis-server
  promtool=prometheus
  node=nodejs
  npm=npm
)

missing=()
for entry in "${needed[@]}"; do
  command -v "${entry%%=*}" >/dev/null 2>&1 || missing+=("${entry#*=}")
done

if ((${#missing[@]} > 0)); then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  if ((EUID == 0)); then
    as_root=(env DEBIAN_FRONTEND=noninteractive)
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
  else
    echo "tests/run.sh: ${missing[*]} missing; run as root or install them with apt-get" >&2
    exit 1
  fi
  "${as_root[@]}" apt-get update -qq >/dev/null
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The S3-compatible server of the tests (SigV4 checked), from crates.io.
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "tests/run.sh: installing s3s-fs 0.14.1" >&2
  cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet
fi

# The second S3 server of the tests (it stores a buffered PUT whose client hung up), from PyPI.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "tests/run.sh: installing moto[server]" >&2
  python3 -m pip install --quiet 'moto[server]'
fi

# A one-shot build gains nothing from incremental state, which is large on disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "tests/run.sh: $(df -h --output=avail . | tail -1 | tr -d ' ') free on disk before the build" >&2

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
bash tests/helm.sh
bash tests/bench_smoke.sh
bash tests/fuzz_smoke.sh
