#!/usr/bin/env bash
# Runs every test tier. Tiers that cannot run on this host say why (the SKIP lines printed
# after the suite). Afterwards, checks that the suite left no husk cgroups, no mounts and no
# network state in the machine's own namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole run has a budget (CI stops a run at 90 minutes): the nested tier, last, gets what is
# left of it, so that a slow machine ends with its results, the time of each phase and a SKIP
# line for each nested binary there was no time for, instead of being cut off mid-test. A
# binary that overruns its own bound still fails by name.
run_started=$(date +%s)
budget_s=${HUSK_TEST_BUDGET:-4800}
phase_started=$run_started
phase_times=
phase_done() {
  phase_times="$phase_times $1 $(( $(date +%s) - phase_started ))s,"
  phase_started=$(date +%s)
}
# One kernel build per machine, shared by setup and the tests that call build.sh.
export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
./scripts/setup.sh --tests
phase_done setup

# A Docker engine for tests/cli_docker_formats.rs (husk's output against Docker's own). No
# bridge or iptables: the tests run containers with --network none.
if command -v dockerd >/dev/null && ! /usr/bin/docker info >/dev/null 2>&1; then
  dockerd --bridge=none --iptables=false --ip6tables=false >/tmp/husk-test-dockerd.log 2>&1 &
  for _ in $(seq 1 30); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 1; done
fi

mkdir -p target/tmp
rm -f target/tmp/skips.log target/tmp/leftovers.log
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=$?
phase_done "host suite"

# T3 on husk's own monitor: the VM tests again, inside an L1 Linux with emulated SVM.
if [ "${HUSK_SKIP_NESTED:-}" = 1 ]; then
  echo "SKIP nested tier (T3 on husk's monitor): HUSK_SKIP_NESTED=1" >> target/tmp/skips.log
else
  echo; echo "== nested tier: the VM tests on husk's own monitor in an L1 with emulated SVM"
  # What is left of the budget, less five minutes for the checks below.
  left_s=$(( budget_s - ($(date +%s) - run_started) - 300 ))
  nested_s=${HUSK_NESTED_TIMEOUT:-3000}
  [ "$left_s" -lt "$nested_s" ] && nested_s=$left_s
  if [ "$nested_s" -lt 600 ]; then
    echo "SKIP nested tier (T3 on husk's monitor): not run, ${left_s}s of the run's ${budget_s}s budget left (it needs 600s)" >> target/tmp/skips.log
  else
    HUSK_NESTED_TIMEOUT=$nested_s ./scripts/test-nested.sh 2>&1 | tee -a "$log" || status=1
  fi
  phase_done "nested tier"
fi

echo
echo "== skipped (with the reason):"
if [ -s target/tmp/skips.log ]; then sort -u target/tmp/skips.log; else echo "nothing"; fi

# Networks: every test that uses one runs in a namespace of its own, so the machine's own
# namespace must hold no husk bridge, veth, tap or nft table afterwards (and no test netns).
leftover_links=$(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | grep -cE '^(husk[0-9-]|veth[0-9a-f]{11}(@|$)|tap[0-9a-f]{11}$)' || true)
leftover_nft=$(nft list tables 2>/dev/null | grep -c 'ip husk' || true)
leftover_netns=$(ip netns list 2>/dev/null | grep -c '^husk-t' || true)
echo "== after the suite: husk links in the machine's namespace: $leftover_links, nft tables: $leftover_nft, test namespaces: $leftover_netns"
if [ "$leftover_links" != 0 ] || [ "$leftover_nft" != 0 ] || [ "$leftover_netns" != 0 ]; then
  echo "the test suite left network state behind (or made it outside a test namespace):" \
    $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | grep -E '^(husk[0-9-]|veth[0-9a-f]{11}(@|$)|tap[0-9a-f]{11}$)') \
    $(ip netns list 2>/dev/null | grep '^husk-t' | cut -d' ' -f1) >&2
  status=1
fi
leftover_cgroups=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 \( -path '*/husk/*' -o -path '*/husk-runc/*' \) -type d 2>/dev/null | wc -l)
leftover_mounts=$(grep -cE ' /tmp/\.tmp[^ ]*/(containers|volumes)/' /proc/self/mountinfo || true)
echo "== after the suite: husk cgroups left: $leftover_cgroups, mounts left under test roots: $leftover_mounts"
if [ "$leftover_cgroups" != 0 ] || [ "$leftover_mounts" != 0 ]; then
  echo "the test suite left cgroups or mounts behind:" \
    $(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 \( -path '*/husk/*' -o -path '*/husk-runc/*' \) -type d 2>/dev/null) \
    $(grep -oE ' /tmp/\.tmp[^ ]*/(containers|volumes)/[^ ]*' /proc/self/mountinfo) >&2
  # What still runs in them says which test made them.
  for dir in $(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 \( -path '*/husk/*' -o -path '*/husk-runc/*' \) -type d 2>/dev/null); do
    for pid in $(cat "$dir/cgroup.procs" 2>/dev/null); do
      echo "  $dir: $pid $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)" >&2
    done
  done
  status=1
fi
if [ -s target/tmp/leftovers.log ]; then
  echo "== cleanups that failed in the tests (tests/common note_leftover):"
  cat target/tmp/leftovers.log
fi

echo "== time:${phase_times} total $(( $(date +%s) - run_started ))s (budget ${budget_s}s)"
# One closing line over every test binary ("skipped": tests that said why they could not run).
# A nested test that failed and then passed on its own is counted in both runs; it is named
# above, and counted here apart from the failures that stood.
skipped=$(sort -u target/tmp/skips.log 2>/dev/null | wc -l)
recovered=$(sed -n 's/^test-nested: [^:]*: \(.*\) failed, then passed when run again.*/\1/p' "$log" | wc -w)
awk -v skipped="$skipped" -v recovered="$recovered" '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed, %d skipped", p, f - recovered, skipped
           if (recovered) printf " (%d nested tests failed once, then passed when run again: above)", recovered
           printf "\n" }' "$log"
exit $status
