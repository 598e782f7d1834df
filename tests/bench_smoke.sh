#!/usr/bin/env bash
# CI smoke test of the benchmark (services/bench): a tiny run against the debug build of
# cloudpop that checks correctness only, not speed. Every retrieved byte is verified; the
# last line reads `bench smoke: N passed, 0 failed`, and any failure exits non-zero.
# When s3s-fs and redis-server are installed (tests/run.sh installs them), the cloud setup
# (S3 store, Redis lock, gRPC auth service) gets the same smoke run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build -p cloudpop
cargo run -p cloudpop-bench -- --smoke --target cloudpop --cloudpop-bin target/debug/cloudpop
if command -v s3s-fs >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; then
  cargo run -p cloudpop-bench -- --smoke --target cloudpop-cloud --cloudpop-bin target/debug/cloudpop
else
  echo "bench_smoke.sh: s3s-fs or redis-server not installed; skipping the cloudpop-cloud smoke" >&2
fi
