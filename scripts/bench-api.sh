#!/usr/bin/env bash
# The Engine API beside dockerd's, measured side by side in one run (hyperfine): the same
# docker CLI (Debian's docker.io client) runs `docker run --rm --network none busybox true`
# through `husk system service` and through dockerd, then with --isolation vm through husk
# (with --vm); and the service's resident memory when idle. No bridge: --network none, and
# the dockerd this starts (when none answers) has --bridge=none --iptables=false.
#
# Usage: scripts/bench-api.sh [--runs N] [--vm]   (as root, after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20 vm=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --vm) vm=1; shift ;;
    *) echo "usage: $0 [--runs N] [--vm]" >&2; exit 2 ;;
  esac
done
for tool in hyperfine dockerd /usr/bin/docker; do
  command -v "$tool" >/dev/null || { echo "bench-api: $tool is not installed (scripts/setup.sh)" >&2; exit 1; }
done
docker=/usr/bin/docker
husk=${HUSK_BIN:-$PWD/target/release/husk}
[ -x "$husk" ] || cargo build --release -q
if [ "$vm" = 1 ]; then
  if [ -z "${HUSK_VMM:-}" ]; then
    grep -qwE 'vmx|svm' /proc/cpuinfo && export HUSK_VMM=husk || export HUSK_VMM=qemu
  fi
  export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
  HUSK_KERNEL=${HUSK_KERNEL:-$(guest-kernel/build.sh)}
  HUSK_AGENT=${HUSK_AGENT:-$(rootfs-agent/build-static.sh)}
  export HUSK_KERNEL HUSK_AGENT
fi

work=$(mktemp -d /tmp/husk-bench-api.XXXXXX)
service_pid= dockerd_pid=
cleanup() {
  [ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null || true
  for id in $("$husk" --root "$work/husk" ps -a -q 2>/dev/null); do
    "$husk" --root "$work/husk" rm -f "$id" >/dev/null 2>&1 || true
  done
  $docker rmi -f husk-bench-api:1 >/dev/null 2>&1 || true
  [ -n "$dockerd_pid" ] && kill "$dockerd_pid" 2>/dev/null || true
  grep -F "$work" /proc/mounts | awk '{ print $2 }' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# dockerd on its default socket (the test suite's, or one started here).
if ! $docker info >/dev/null 2>&1; then
  dockerd --bridge=none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 30); do $docker info >/dev/null 2>&1 && break; sleep 1; done
fi

# One busybox root: the image both engines run.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh true; do ln -s busybox "$rootfs/bin/$applet"; done
echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$work/image.tar" .
"$husk" --root "$work/husk" import "$work/image.tar" husk-bench-api:1 >/dev/null
$docker import "$work/image.tar" husk-bench-api:1 >/dev/null

socket=$work/husk.sock
"$husk" --root "$work/husk" system service --socket "unix://$socket" 2>"$work/service.log" &
service_pid=$!
for _ in $(seq 1 50); do DOCKER_HOST=unix://$socket $docker version >/dev/null 2>&1 && break; sleep 0.1; done
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
echo "== husk system service, idle after its first requests: $(rss_kib "$service_pid") KiB resident"
[ -n "$dockerd_pid" ] && echo "== dockerd started here, idle: $(rss_kib "$dockerd_pid") KiB resident (its containerd not counted)"

run() { # DOCKER_HOST [RUN ARGS]
  local host=$1; shift
  echo "DOCKER_HOST=$host $docker run --rm --network none $* husk-bench-api:1 true"
}
echo "== docker run --rm --network none busybox true ($runs runs)"
cmds=(-n "docker → husk service" "$(run "unix://$socket")"
      -n "docker → dockerd" "$(run unix:///var/run/docker.sock)")
if [ "$vm" = 1 ]; then
  cmds+=(-n "docker → husk service, --isolation vm ($HUSK_VMM)" "$(run "unix://$socket" --isolation vm)")
fi
for c in "${cmds[@]}"; do case "$c" in -n) ;; DOCKER_HOST=*) eval "$c" || { echo "bench-api: failed: $c" >&2; exit 1; } ;; esac; done
hyperfine --warmup 3 --runs "$runs" "${cmds[@]}"
echo "== husk system service after the runs: $(rss_kib "$service_pid") KiB resident"
