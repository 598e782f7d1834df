#!/usr/bin/env bash
# The test command of the README: installs what the tests need and is missing, then runs
# the format check, clippy with warnings as errors, and every test of the workspace.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages of the programs the end-to-end tests drive: program=package.
needed=(curl=curl fetchmail=fetchmail python3=python3)

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

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
