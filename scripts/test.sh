#!/usr/bin/env bash
# Runs every test tier. Tiers that cannot run on this host print SKIP with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace -- --test-threads=2 2>&1
