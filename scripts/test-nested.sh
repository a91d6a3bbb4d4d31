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
  "conformance ::vm:: a_named_volume_is_shared_between_the_isolations a_killed_vm_monitor_or_supervisor_leaves_no_daemon_behind"
  "network vm_"
  "oci_runtime vm_"
  "engine_api"
)
# Each binary's bound in L1, about four times what it takes on a 2-core CI machine: a binary
# that passes it has hung, and is listed (with what every process in L1 was doing) and run once
# more, since TCG's emulated SVM has been seen to stall a run that passes when repeated.
# Tests at a time in L1. One: two gained a fifth on cli_vm and lost on oci_runtime (its
# podman and containerd runs), and a test failed under contention reruns alone anyway.
threads=${HUSK_NESTED_TEST_THREADS:-1}
declare -A bound_s=([vmm_kvm]=120 [vmm_cli]=120 [vmm_guest_boot]=180 [cli_vm]=900
  [cost_ledger]=300 [cost_compare]=600 [conformance]=2400 [network]=900
  [oci_runtime]=900 [engine_api]=600)

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

# The job L1 runs: the given tier entries, each bounded; what L1 may use of $l1_timeout_s
# (the rest is for its boot and shutdown). Each finished binary is noted in $job/done.
write_job() {
budget_s=$((l1_timeout_s - 300))
: > "$job/done"
{
  echo "set -u"
  echo "export HUSK_VMM=husk HUSK_KERNEL=$kernel HUSK_AGENT=$agent"
  echo "export HUSK_SKIP_LOG=$PWD/$job/skips.log RUST_BACKTRACE=1"
  echo 'status=0'
  # Each binary is bounded by what is left of L1's own time (less a margin for the
  # shutdown), at most 900 s: a hang fails by name, and L1 still reports its status.
  echo "deadline=\$((\$(date +%s) + $budget_s))"
  echo 'elapsed() { echo "$(( $(date +%s) - deadline + '"$budget_s"' ))s"; }'
  # A binary that overruns its bound: what every process is doing (state, kernel wait
  # channel, and the kernel stack of those stuck in the kernel) before it is killed. A binary
  # whose tests fail: the failed tests run once more on their own, since TCG's emulated SVM
  # has been seen to break a guest's boot (a triple fault at the reset vector) that passes
  # when repeated; both runs are in the output.
  # Each binary's output goes to the share as well: after a stalled L1 the host reads which
  # tests had passed, and a fresh L1 runs only the rest.
  echo "jobdir=$PWD/$job"
  cat <<'EOF'
bounded() {
  name=$1 limit=$2; shift 2
  out=$jobdir/out.$name
  failed_tests=
  rm -f "$out" "$out.rc"
  setsid sh -c '{ "$@" 2>&1; echo $? > "$0.rc"; } | tee "$0"' "$out" "$@" &
  pid=$!
  waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    echo "test-nested: $name still running after ${limit}s; the processes in L1:"
    ps -eo pid,ppid,pgid,stat,wchan:32,etime,args | grep -v ' \[' | cut -c1-200
    for p in /proc/[0-9]*; do
      case "$(cut -d' ' -f3 "$p/stat" 2>/dev/null)" in
        D|R) echo "-- $(cat "$p/comm" 2>/dev/null) ${p#/proc/} ($(cut -d' ' -f3 "$p/stat")):"; cat "$p/stack" 2>/dev/null | head -n 12 ;;
      esac
    done
    # The guests' own view: the end of each container's console and monitor log.
    for log in /tmp/.tmp*/containers/*/serial.log /tmp/.tmp*/containers/*/monitor.log; do
      [ -s "$log" ] && { echo "-- $log:"; tail -n 15 "$log" | cut -c1-200; }
    done
    kill -KILL "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 124
  fi
  wait "$pid"
  [ "$(cat "$out.rc" 2>/dev/null)" = 0 ] && return 0
  echo "test-nested: $name failed"
  # The names libtest lists under its second "failures:" heading.
  failed_tests=$(awk '/^failures:$/ { n++; next } n == 2 && /^    [^ ]/ { print $1 } /^test result:/ && n == 2 { exit }' "$out" | tr '\n' ' ')
  return 1
}
EOF
  echo 'echo "nested: L1 $(uname -r), $(nproc) vCPUs, /dev/kvm: $(ls /dev/kvm), $(husk_cpu=$(grep -m1 -o -w svm /proc/cpuinfo); echo ${husk_cpu:-no svm})"'
  for entry in "$@"; do
    name=${entry%% *}
    filters=
    [ "$name" != "$entry" ] && filters=${entry#* }
    exe=
    for b in "${built[@]}"; do [ "${b%% *}" = "$name" ] && exe=${b#* }; done
    [ -n "$exe" ] || { echo "test-nested: no test binary for $name" >&2; exit 1; }
    echo "echo; echo \"== T3 on husk's monitor: $name $filters (at \$(elapsed))\""
    run="bounded $name \"\$limit\" $exe --test-threads=$threads $filters"
    echo "limit=${bound_s[$name]:-600} capped=0"
    echo 'left=$(( deadline - $(date +%s) )); if [ "$left" -lt "$limit" ]; then limit=$left capped=1; fi'
    # Out of time (the tier's bound is what the run's budget left it): said as a skip with
    # its reason; a binary that overran its own bound has already failed by name.
    echo "if [ \"\$limit\" -lt 30 ]; then echo \"SKIP $name $filters: not run, the tier's time ran out\" | tee -a \"\$HUSK_SKIP_LOG\"; else"
    echo "  $run; rc=\$?"
    # Stopped by the tier's deadline rather than its own bound: out of time, said as a skip.
    echo "  if [ \"\$rc\" = 124 ] && [ \"\$capped\" = 1 ]; then echo \"SKIP $name: stopped at the tier's deadline after \${limit}s\" | tee -a \"\$HUSK_SKIP_LOG\"; rc=0; fi"
    echo '  left=$(( deadline - $(date +%s) ))'
    echo "  if [ \"\$rc\" = 124 ] && [ \"\$left\" -ge \"\$limit\" ]; then"
    echo "    echo \"test-nested: $name hung (its processes are listed above); running it once more\""
    echo "    $run; rc=\$?"
    echo "    [ \"\$rc\" = 0 ] && echo \"test-nested: $name passed on its second run, after a hang\""
    # A few failed tests need far less than the binary's bound: what is left will do.
    echo "  elif [ \"\$rc\" = 1 ] && [ -n \"\$failed_tests\" ] && [ \"\$left\" -ge 120 ]; then"
    echo "    first=\$failed_tests"
    echo '    [ "$left" -lt "$limit" ] && limit=$left'
    echo "    echo \"test-nested: $name: running \$first once more\""
    echo "    bounded $name \"\$limit\" $exe --test-threads=1 --exact \$first; rc=\$?"
    echo "    [ \"\$rc\" = 0 ] && echo \"test-nested: $name: \$first failed, then passed when run again (the first failure is above)\""
    echo "  fi"
    echo "  [ \"\$rc\" = 0 ] || status=1"
    echo "  echo \"$name \$rc\" >> $PWD/$job/done"
    echo "fi"
  done
  echo 'echo "== T3 on husk'"'"'s monitor: done at $(elapsed)"'
  echo 'exit $status'
} > "$job/run.sh"
}

# An L1 that stops making progress or whose kernel panics (scripts/nested.sh exits 99) is replaced by a fresh one for what it had
# not finished (down to the test: see below), up to five L1s, all within one bound of
# $HUSK_NESTED_TIMEOUT seconds.
status=0
tier_deadline=$(( $(date +%s) + ${HUSK_NESTED_TIMEOUT:-3000} ))
remaining=("${tier[@]}")
for l1 in 1 2 3 4 5; do
  l1_timeout_s=$(( tier_deadline - $(date +%s) ))
  if [ "$l1_timeout_s" -lt 400 ]; then
    for entry in "${remaining[@]}"; do
      echo "SKIP (T3, nested) $entry: not run, no time left for a fresh L1" | tee -a target/tmp/skips.log
    done
    break
  fi
  write_job "${remaining[@]}"
  rc=0
  ./scripts/nested.sh --timeout "$l1_timeout_s" --rw "$PWD/$job" -- sh "$PWD/$job/run.sh" || rc=$?
  if [ "$rc" != 99 ]; then
    awk '$2 != 0 { failed = 1 } END { exit failed }' "$job/done" || status=1
    if [ "$rc" != 0 ] && [ "$(date +%s)" -ge $(( tier_deadline - 120 )) ]; then
      # L1 itself was stopped at the tier's deadline: what it had not finished ran out of time.
      for entry in "${remaining[@]}"; do
        awk -v n="${entry%% *}" '$1 == n { found = 1 } END { exit !found }' "$job/done" ||
          echo "SKIP (T3, nested) ${entry%% *}: not finished, the tier's time ran out" | tee -a target/tmp/skips.log
      done
    else
      [ "$rc" = 0 ] || status=1
    fi
    break
  fi
  awk '$2 != 0 { failed = 1 } END { exit failed }' "$job/done" || status=1
  left=()
  for entry in "${remaining[@]}"; do
    awk -v n="${entry%% *}" '$1 == n { found = 1 } END { exit !found }' "$job/done" || left+=("$entry")
  done
  # The binary L1 was in when it stopped runs on from where it was: the tests it had not
  # passed (a test that failed there runs again, as failed tests do).
  if [ ${#left[@]} -gt 0 ] && [ -s "$job/out.${left[0]%% *}" ]; then
    name=${left[0]%% *} filters=
    [ "$name" != "${left[0]}" ] && filters=${left[0]#* }
    exe=
    for b in "${built[@]}"; do [ "${b%% *}" = "$name" ] && exe=${b#* }; done
    passed=$(awk '/^test .* \.\.\. ok$/ { print $2 }' "$job/out.$name" | sort -u)
    failed=$(awk '/^test .* \.\.\. FAILED$/ { print $2 }' "$job/out.$name" | tr '\n' ' ')
    # shellcheck disable=SC2086 # the filters are words
    rest=$("$exe" --list $filters 2>/dev/null | sed -n 's/: test$//p' | sort -u | comm -23 - <(echo "$passed"))
    if [ -n "$passed" ] && [ -n "$rest" ]; then
      echo "test-nested: $name had passed $(echo "$passed" | wc -l) tests in the stopped L1${failed:+ (failed there: $failed)}; the next runs the other $(echo "$rest" | wc -l)"
      left[0]="$name --exact $(echo "$rest" | tr '\n' ' ')"
    fi
  fi
  remaining=("${left[@]}")
  [ ${#remaining[@]} -gt 0 ] || break
  if [ "$l1" = 5 ]; then
    echo "test-nested: five L1s stopped making progress; not run: ${remaining[*]%% *}"
    status=1
    break
  fi
  echo "test-nested: L1 stopped making progress during ${remaining[0]%% *}; a fresh L1 runs what is left"
done
if [ -s "$job/skips.log" ]; then
  sed 's/^SKIP /SKIP (T3, nested) /' "$job/skips.log" >> target/tmp/skips.log
fi
exit $status
