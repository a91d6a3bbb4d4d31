#!/usr/bin/env bash
# The nested tier's machine: boots an L1 Linux (Debian's stock linux-image-6.1.0-*-amd64) under
# QEMU TCG with `-cpu max`, whose emulated AMD SVM with nested paging gives L1 a hardware-style
# /dev/kvm (kvm_amd), runs one command inside it and exits with that command's status.
#
#   scripts/nested.sh [--rw DIR]... [--mem MiB] [--timeout SECONDS] [--] COMMAND [ARG...]
#
# Inside L1 the host's root is mounted read-only over 9p (so the host's build, kernel cache and
# tools are all there), with tmpfs on /tmp, /run, /var/lib and /var/tmp, cgroup2 on
# /sys/fs/cgroup (pure v2, unlike this hybrid host), devtmpfs and devpts. COMMAND runs as root
# in the caller's working directory with the caller's PATH; its stdout and stderr come back as
# this script's output; an L1 that locks up (see below) is stopped and the status is 99.
# Each --rw DIR (an absolute host path) is shared writable at the same path. The L1 kernel
# and its initramfs are cached per kernel package under $HUSK_L1_CACHE_DIR (default
# /var/cache/husk/l1).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${HUSK_L1_CACHE_DIR:-/var/cache/husk/l1}
mem_mib=3072
timeout_s=2400
rw_dirs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rw) rw_dirs+=("$(cd "$2" && pwd)"); shift 2 ;;
    --mem) mem_mib=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "nested: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "usage: scripts/nested.sh [--rw DIR]... [--mem MiB] [--timeout SECONDS] [--] COMMAND [ARG...]" >&2
  exit 2
fi
command -v qemu-system-x86_64 >/dev/null || { echo "nested: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)" >&2; exit 1; }
busybox=/bin/busybox
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || { echo "nested: $busybox is not static (apt-get install busybox-static)" >&2; exit 1; }

# The modules L1 needs, each after what it depends on (read from the module's own .modinfo).
# Then container networks: bridges, veth pairs, taps, and the nftables expressions husk's tables
# use (NAT, masquerade, fib; meta in the bridge family, for the port guards); crc32c_generic is
# what libcrc32c (for conntrack) asks the crypto API for at run time, which modinfo does not
# list. The ingress qdisc, u32 filter and mirred action join a pod namespace's interface to a
# VM container's tap (src/network/netns_link.rs). podman's CNI plugins (bridge, portmap,
# firewall) write iptables rules, which iptables-nft turns into nft_compat matches and targets:
# comment, tcp/udp ports, addrtype, mark, conntrack, DNAT and MASQUERADE. (L1 has no modprobe:
# what the kernel would load on demand must be here.)
wanted=(virtio_pci 9pnet_virtio 9p overlay kvm-amd
  bridge veth tun crc32c_generic nf_tables nft_chain_nat nft_nat nft_masq nft_fib_ipv4 nft_ct
  nft_meta_bridge sch_ingress cls_u32 act_mirred
  nft_compat xt_comment xt_tcpudp xt_addrtype xt_mark xt_conntrack xt_nat xt_MASQUERADE
  xt_multiport)

# --- the L1 kernel: Debian's current linux-image-6.1.0-*-amd64, extracted, not installed ---
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6/ { print $2; exit }')
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6/ { print $2; exit }')
fi
[ -n "$pkg" ] || { echo "nested: apt knows no linux-image-6.*-amd64 package" >&2; exit 1; }
version=$(apt-cache policy "$pkg" | awk '/Candidate:/ { print $2 }')
key=$( { echo "$pkg $version ${wanted[*]}"; sed -n '/^# --- initramfs init ---$/,/^# --- end init ---$/p' "$0"; } | sha256sum | cut -c1-12)
cache="$cache_root/$pkg-$key"
if [ ! -f "$cache/initramfs.cpio.gz" ]; then
  mkdir -p "$cache_root"
  exec 8>"$cache_root/.lock"
  flock 8
fi
if [ ! -f "$cache/initramfs.cpio.gz" ]; then
  echo "nested: preparing the L1 kernel $pkg $version (cached in $cache)" >&2
  work=$(mktemp -d "$cache_root/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q "$pkg=$version" >/dev/null 2>&1 || apt-get download "$pkg=$version")
  dpkg-deb -x "$work"/"$pkg"_*.deb "$work/pkg"
  kver=${pkg#linux-image-}
  moddir="$work/pkg/lib/modules/$kver/kernel"
  ordered=()
  add_module() {
    local name=$1 file dep
    for done_name in "${ordered[@]:-}"; do [ "$done_name" = "$name" ] && return 0; done
    file=$(find "$moddir" \( -name "$name.ko" -o -name "${name//_/-}.ko" -o -name "${name//-/_}.ko" \) | head -n1)
    [ -n "$file" ] || { echo "nested: module $name not found in $pkg" >&2; exit 1; }
    for dep in $(grep -a -o 'depends=[^[:cntrl:]]*' "$file" | head -n1 | cut -d= -f2 | tr ',' ' '); do
      add_module "$dep"
    done
    ordered+=("$name")
    cp "$file" "$work/root/lib/modules/$name.ko"
  }
  mkdir -p "$work/root/lib/modules" "$work/root/bin" "$work/root/dev" "$work/root/proc" \
    "$work/root/sys" "$work/root/host" "$work/root/job"
  for m in "${wanted[@]}"; do add_module "$m"; done
  printf '%s\n' "${ordered[@]}" > "$work/root/lib/modules/order"
  cp "$busybox" "$work/root/bin/busybox"
  sed -n '/^# --- initramfs init ---$/,/^# --- end init ---$/p' "$0" | sed '1d;$d' > "$work/root/init"
  chmod 755 "$work/root/init"
  (cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.cpio.gz"
  stage="$cache.stage"
  rm -rf "$stage" && mkdir -p "$stage"
  cp "$work/pkg/boot/vmlinuz-$kver" "$stage/vmlinuz"
  cp "$work/initramfs.cpio.gz" "$stage/"
  echo "$pkg $version" > "$stage/version"
  rm -rf "$cache" && mv "$stage" "$cache"
  rm -rf "$work"
  trap - EXIT
fi

# --- the job: what L1 runs, and where its output and status come back ---
job=$(mktemp -d /tmp/husk-nested.XXXXXX)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$job"
}
trap cleanup EXIT
{
  echo "cd $(printf %q "$PWD") || exit 125"
  echo "export PATH=$(printf %q "$PATH") HOME=/root TERM=dumb"
  for v in $(compgen -e); do
    case "$v" in HUSK_*|CARGO_TERM_COLOR|RUST_BACKTRACE|CI) echo "export $v=$(printf %q "${!v}")" ;; esac
  done
  printf 'exec'; printf ' %q' "$@"; echo
} > "$job/job.sh"
: > "$job/output"
virtfs=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
        -virtfs "local,path=$job,mount_tag=job,security_model=none,multidevs=remap")
# The working directory is shared again on its own, read-only: under /tmp (where CI may
# clone) L1's tmpfs would hide it. Then the --rw directories, each at its own path.
virtfs+=(-virtfs "local,path=$PWD,mount_tag=cwd,security_model=none,readonly=on,multidevs=remap")
echo "cwd ro $PWD" > "$job/mounts"
i=0
for d in "${rw_dirs[@]:-}"; do
  [ -n "$d" ] || continue
  virtfs+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
  echo "rw$i rw $d" >> "$job/mounts"
  i=$((i + 1))
done

# The first lockup of a minute or more that L1's console reports, if any.
locked_up() {
  grep -s -oE 'soft lockup - CPU#[0-9]+ stuck for [0-9]+s' "$1" |
    awk '{ n = $NF; sub(/s$/, "", n) } n + 0 >= 60 { print; found = 1; exit } END { exit !found }'
}
locked=
# Stop the running L1: QEMU (the child of `timeout`) gets SIGTERM, then SIGKILL.
stop_l1() {
  pkill -TERM -P "$qemu_pid" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do pgrep -P "$qemu_pid" >/dev/null || return 0; sleep 1; done
  pkill -KILL -P "$qemu_pid" 2>/dev/null || true
}

# A hung L1 must not hold CI: `timeout` stops it after --timeout seconds. L1 itself boots in
# seconds, but TCG has been seen to lock up during the boot (soft lockups on every vCPU before
# the job starts): an L1 that has not started the job after $start_limit seconds is stopped and
# booted once more, and says so.
start_limit=${HUSK_NESTED_START_LIMIT:-240}
qemu_status=0
for attempt in 1 2; do
  rm -f "$job/started"
  timeout "$timeout_s" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m "$mem_mib" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$job/serial.log" \
    -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off" \
    "${virtfs[@]}" </dev/null &
  qemu_pid=$!
  waited=0
  while [ ! -e "$job/started" ] && kill -0 "$qemu_pid" 2>/dev/null && [ "$waited" -lt "$start_limit" ]; do
    sleep 1; waited=$((waited + 1))
  done
  if [ ! -e "$job/started" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    echo "nested: L1 did not start the job within ${start_limit}s (attempt $attempt); its console:" >&2
    tail -n 5 "$job/serial.log" >&2 || true
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=
    qemu_status=125
    continue
  fi
  tail -n +1 -f --pid="$qemu_pid" "$job/output" &
  tail_pid=$!
  qemu_status=0
  # TCG has been seen to stop L1 for good mid-run, two ways: every vCPU in a soft lockup, or
  # every vCPU idle with no timer ever waking one. Such an L1 is stopped as soon as its
  # console shows a lockup of a minute, or its heartbeat (written every 5 s) is two minutes
  # old, and this script says so with its own status.
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if locked=$(locked_up "$job/serial.log"); then
      stop_l1
      break
    fi
    beat=$(stat -c %Y "$job/heartbeat" 2>/dev/null || stat -c %Y "$job/started")
    if [ $(( $(date +%s) - beat )) -gt 120 ]; then
      # The same loop beats on L1's console too: whether that went on says if L1 itself
      # stopped, or only its 9p share (where the heartbeat, the job's output and the test
      # binaries all are).
      console_beat=$(grep -a -o 'husk-l1-beat [0-9]*' "$job/serial.log" 2>/dev/null | tail -n 1 | cut -d' ' -f2)
      locked="no heartbeat for $(( $(date +%s) - beat ))s; L1's console last beat ${console_beat:+$(( $(date +%s) - console_beat ))s ago}${console_beat:-never}"
      stop_l1
      break
    fi
    sleep 2
  done
  wait "$qemu_pid" || qemu_status=$?
  qemu_pid=
  wait "$tail_pid" 2>/dev/null || true
  break
done
if [ -n "$locked" ]; then
  echo "nested: L1 stopped making progress ($locked); stopped it" >&2
  exit 99
fi
[ "$qemu_status" = 124 ] && echo "nested: L1 timed out after ${timeout_s}s" >&2
if [ ! -s "$job/status" ]; then
  echo "nested: L1 gave no exit status; its serial console said:" >&2
  tail -n 40 "$job/serial.log" >&2 || true
  # A panicked L1 kernel (seen under TCG's emulated SVM) is a dead L1 like a stalled one: the
  # caller may replace it (test-nested.sh runs what was left in a fresh L1).
  if grep -q "Kernel panic - not syncing" "$job/serial.log" 2>/dev/null; then
    echo "nested: L1's kernel panicked; stopped" >&2
    exit 99
  fi
  exit 125
fi
exit "$(cat "$job/status")"

# --- initramfs init ---
#!/bin/busybox sh
# PID 1 of L1: load the modules, mount the host's root read-only with scratch space on top,
# run the job chrooted into it, leave its status and power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "L1: insmod $m failed" > /dev/console
done
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts" job /job
mount -t 9p -o "ro,$opts,cache=loose" hostroot /host || { echo "L1: no host root" > /dev/console; poweroff -f; }
for d in tmp run var/lib var/tmp; do mount -t tmpfs -o mode=1777 tmpfs "/host/$d"; done
chmod 755 /host/run /host/var/lib
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
while read -r tag mode path; do
  mkdir -p "/host$path" 2>/dev/null
  extra=
  [ "$mode" = ro ] && extra=,cache=loose
  mount -t 9p -o "$mode,$opts$extra" "$tag" "/host$path" || echo "L1: cannot mount $path" > /dev/console
done < /job/mounts
mkdir -p /host/tmp/nested-job
mount --bind /job /host/tmp/nested-job
ip link set lo up 2>/dev/null
hostname husk-l1
: > /job/started
# A heartbeat the host watches: an L1 that stops writing it has stopped making progress.
(while :; do echo "husk-l1-beat $(date +%s)" > /dev/console; date +%s > /job/heartbeat; sleep 5; done) &
chroot /host /bin/sh /tmp/nested-job/job.sh > /job/output 2>&1 < /dev/null
echo $? > /job/status
sync
poweroff -f
# --- end init ---
