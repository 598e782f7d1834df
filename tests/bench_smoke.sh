#!/usr/bin/env bash
# CI smoke test of the benchmark (services/bench): a tiny run against the debug build of
# cloudpop that checks correctness only, not speed. Every retrieved byte is verified; the
# last line reads `bench smoke: N passed, 0 failed`, and any failure exits non-zero.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build -p cloudpop
cargo run -p cloudpop-bench -- --smoke --target cloudpop --cloudpop-bin target/debug/cloudpop
