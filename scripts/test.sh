#!/usr/bin/env bash
# Runs every test tier. Tiers that cannot run on this host print SKIP with the reason.
# Afterwards, checks that the suite left no husk cgroups and no mounts below temp roots.
set -euo pipefail
cd "$(dirname "$0")/.."
# One kernel build per machine, shared by setup and the tests that call build.sh.
export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
./scripts/setup.sh

status=0
cargo test --workspace -- --test-threads=2 2>&1 || status=$?

leftover_cgroups=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -path '*/husk/*' -type d 2>/dev/null | wc -l)
leftover_mounts=$(grep -cE ' /tmp/\.tmp[^ ]*/(containers|volumes)/' /proc/self/mountinfo || true)
echo "after the suite: husk cgroups left: $leftover_cgroups, mounts left under test roots: $leftover_mounts"
if [ "$leftover_cgroups" != 0 ] || [ "$leftover_mounts" != 0 ]; then
  echo "the test suite left cgroups or mounts behind" >&2
  status=1
fi
exit $status
