#!/usr/bin/env bash
# T3 on these machines: the VM tests on husk's own monitor, inside an L1 Linux whose /dev/kvm
# is QEMU TCG's emulated AMD SVM (scripts/nested.sh). The test binaries are built here on the
# host and run inside L1 with HUSK_VMM=husk; their own output and exit status come back.
#
#   scripts/test-nested.sh [TEST BINARY...]    (default: every binary of the tier)
#
# Every VM test belongs in the list below, so that each VM behaviour is proven both under QEMU
# on the host (T2, the main suite) and on husk's monitor (here).
set -euo pipefail
cd "$(dirname "$0")/.."
export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}

# test binary, then the names (filters) of its VM tests; no filter: the whole binary.
tier=(
  "vmm_kvm"
  "vmm_cli"
  "vmm_guest_boot"
  "cli_vm"
  "cost_ledger vm_ledger_has_boot_phases_and_guest_memory"
  "cost_compare json_has_every_field_for_both_isolations vm_runs_killed_mid_way_are_reported_not_averaged"
)

if [ $# -gt 0 ]; then
  chosen=()
  for entry in "${tier[@]}"; do
    for want in "$@"; do [ "${entry%% *}" = "$want" ] && chosen+=("$entry"); done
  done
  [ ${#chosen[@]} -gt 0 ] || { echo "test-nested: none of $* is in the tier" >&2; exit 2; }
  tier=("${chosen[@]}")
fi

kernel=$(./guest-kernel/build.sh)
agent=$(./rootfs-agent/build-static.sh)
targets=()
for entry in "${tier[@]}"; do targets+=(--test "${entry%% *}"); done
mapfile -t built < <(cargo test -q --no-run --message-format=json "${targets[@]}" |
  jq -r 'select(.reason == "compiler-artifact" and .profile.test == true) | "\(.target.name) \(.executable)"')

mkdir -p target/tmp
job=target/tmp/nested
rm -rf "$job" && mkdir -p "$job"
{
  echo "set -u"
  echo "export HUSK_VMM=husk HUSK_KERNEL=$kernel HUSK_AGENT=$agent"
  echo "export HUSK_SKIP_LOG=$PWD/$job/skips.log RUST_BACKTRACE=1"
  echo 'status=0'
  echo 'echo "nested: L1 $(uname -r), $(nproc) vCPUs, /dev/kvm: $(ls /dev/kvm), $(husk_cpu=$(grep -m1 -o -w svm /proc/cpuinfo); echo ${husk_cpu:-no svm})"'
  for entry in "${tier[@]}"; do
    name=${entry%% *}
    filters=
    [ "$name" != "$entry" ] && filters=${entry#* }
    exe=
    for b in "${built[@]}"; do [ "${b%% *}" = "$name" ] && exe=${b#* }; done
    [ -n "$exe" ] || { echo "test-nested: no test binary for $name" >&2; exit 1; }
    echo "echo; echo \"== T3 on husk's monitor: $name $filters\""
    # A hang fails its binary, by name, instead of holding L1 until its own timeout.
    echo "timeout 900 $exe --test-threads=1 $filters || { echo \"test-nested: $name failed or timed out (900 s)\"; status=1; }"
  done
  echo 'exit $status'
} > "$job/run.sh"

status=0
./scripts/nested.sh --rw "$PWD/$job" -- sh "$PWD/$job/run.sh" || status=$?
if [ -s "$job/skips.log" ]; then
  sed 's/^SKIP /SKIP (T3, nested) /' "$job/skips.log" >> target/tmp/skips.log
fi
exit $status
