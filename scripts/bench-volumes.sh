#!/usr/bin/env bash
# Volume I/O, measured side by side in one run: the same workloads on one named volume from a
# process container (a bind mount of the volume's directory), from a VM container (virtio-fs,
# virtiofsd with cache=auto) and on the volume's host directory itself:
#   write     64 MiB in 1 MiB writes + fsync
#   read      the 64 MiB file in 1 MiB reads (a new container: the guest's cache is cold;
#             the host's page cache is dropped first, on a disk-backed store)
#   randread  4096 reads of 4 KiB at random aligned offsets (a new container again)
# Each workload is timed inside the container by a static helper (scripts/bench-volumes/
# volbench.c), so a VM's boot is not counted. Medians over the runs, then ratios.
#
# Usage: scripts/bench-volumes.sh [--runs N] [--nested]
#   --nested  run inside the nested tier's L1 (scripts/nested.sh), VMs on husk's own monitor.
#             L1's writable storage is tmpfs, so there the host directory is memory and
#             fsync is free: the ratios show what the virtio-fs path itself costs.
# Without --nested the VM runs on HUSK_VMM (QEMU on hosts whose KVM is PVM).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 nested=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --nested) nested=1; shift ;;
    *) echo "usage: $0 [--runs N] [--nested]" >&2; exit 2 ;;
  esac
done
export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
if [ -n "$nested" ]; then
  cargo build --release -q --workspace
  HUSK_KERNEL=$(guest-kernel/build.sh) HUSK_AGENT=$(rootfs-agent/build-static.sh)
  export HUSK_KERNEL HUSK_AGENT HUSK_VMM=husk
  exec scripts/nested.sh -- "$PWD/scripts/bench-volumes.sh" --runs "$runs"
fi

husk=$PWD/target/release/husk
[ -x "$husk" ] || cargo build --release -q
export HUSK_KERNEL=${HUSK_KERNEL:-$(guest-kernel/build.sh)}
export HUSK_AGENT=${HUSK_AGENT:-$(rootfs-agent/build-static.sh)}
if [ -z "${HUSK_VMM:-}" ]; then
  if grep -qwE 'vmx|svm' /proc/cpuinfo; then HUSK_VMM=husk; else HUSK_VMM=qemu; fi
fi
export HUSK_VMM
work=$(mktemp -d /tmp/husk-bench-volumes.XXXXXX)
trap '"$husk" --root "$work/root" rm -f $("$husk" --root "$work/root" ps -aq 2>/dev/null) >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "== machine"
echo "cpu:    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cpus)"
echo "kernel: $(uname -srm)$(grep -qw hypervisor /proc/cpuinfo && echo ', itself a guest')"
echo "husk:   $(git describe --always --dirty 2>/dev/null || echo unknown), VM monitor: $HUSK_VMM"
echo "store:  $(df -T "$work" | awk 'NR == 2 { print $2 }') under $work"

img=$work/img
mkdir -p "$img"/{bin,proc,sys,dev,etc,tmp}
cp /bin/busybox "$img/bin/busybox"
ln -s busybox "$img/bin/sh"
gcc -static -O2 -o "$img/volbench" scripts/bench-volumes/volbench.c
tar -C "$img" -cf "$work/img.tar" .
root=$work/root
"$husk" --root "$root" import "$work/img.tar" volbench >/dev/null
"$husk" --root "$root" volume create bench >/dev/null
dir=$("$husk" --root "$root" volume inspect -f '{{.Mountpoint}}' bench)

# Cold reads from the host's disk; not on tmpfs (L1), where there is no disk and dropping the
# page cache of L1's 9p root only makes every binary a slow re-read (and has stalled L1).
if [ "$(df -T "$work" | awk 'NR == 2 { print $2 }')" = tmpfs ]; then
  drop_caches() { :; }
else
  drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
fi
# One workload in one place; its nanoseconds on stdout. Bounded: a hang fails the benchmark.
one() {
  local where=$1 workload=$2
  [ "$workload" = write ] || drop_caches
  case $where in
    host) timeout 300 "$img/volbench" "$workload" "$dir/f" ;;
    *) timeout -k 10 300 "$husk" --root "$root" run --rm --isolation "$where" --network none \
         -v bench:/v volbench /volbench "$workload" /v/f ;;
  esac
}

places=(host process vm)
workloads=(write read randread)
results=$work/results
: > "$results"
for run in $(seq 1 "$runs"); do
  for where in "${places[@]}"; do
    for workload in "${workloads[@]}"; do
      ns=$(one "$where" "$workload" 2>"$work/err") || {
        echo "bench-volumes: $workload in $where failed (status $?):"; cat "$work/err"; exit 1; }
      echo "$where $workload $ns" >> "$results"
    done
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A med
for where in "${places[@]}"; do
  for workload in "${workloads[@]}"; do
    med[$where.$workload]=$(awk -v w="$where" -v l="$workload" '$1 == w && $2 == l { print $3 }' "$results" | median)
  done
done
echo
echo "== medians of $runs runs (64 MiB sequential, 4096 random 4 KiB reads)"
printf '%-10s %16s %16s %18s\n' "" "write+fsync" "read" "random 4 KiB read"
for where in "${places[@]}"; do
  printf '%-10s %11.1f MB/s %11.1f MB/s %15.1f us\n' "$where" \
    "$(awk -v ns="${med[$where.write]}" 'BEGIN { print 67.108864 / (ns / 1e9) }')" \
    "$(awk -v ns="${med[$where.read]}" 'BEGIN { print 67.108864 / (ns / 1e9) }')" \
    "$(awk -v ns="${med[$where.randread]}" 'BEGIN { print ns / 4096 / 1000 }')"
done
echo
echo "== time ratios (lower is better for the first)"
for workload in "${workloads[@]}"; do
  printf '%-9s vm/process %6.2f   process/host %6.2f   vm/host %6.2f\n' "$workload" \
    "$(awk -v a="${med[vm.$workload]}" -v b="${med[process.$workload]}" 'BEGIN { print a / b }')" \
    "$(awk -v a="${med[process.$workload]}" -v b="${med[host.$workload]}" 'BEGIN { print a / b }')" \
    "$(awk -v a="${med[vm.$workload]}" -v b="${med[host.$workload]}" 'BEGIN { print a / b }')"
done
