#!/usr/bin/env bash
# Runs every test tier. Tiers that cannot run on this host print SKIP with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
# One kernel build per machine, shared by setup and the tests that call build.sh.
export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
./scripts/setup.sh
cargo test --workspace -- --test-threads=2 2>&1
