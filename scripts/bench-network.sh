#!/usr/bin/env bash
# What networking costs, measured side by side in one run, inside a network namespace this
# script makes (nothing is sent outside it):
#   - start-up: `run --rm busybox true` with --network none vs bridge vs bridge -p, per isolation,
#     and the same with docker (dockerd started inside the same namespace);
#   - throughput: iperf3 host -> container over a published port, and container -> container
#     on one network, per isolation and with docker;
#   - latency: one HTTP request (curl) to busybox httpd over a published port.
# The containers get the host's /usr read-only for iperf3 (a volume: virtio-fs in a VM).
#
# Usage: scripts/bench-network.sh [--runs N] [--seconds S]   (as root, after scripts/setup.sh)
# HUSK_VMM picks the VM monitor (default: husk on hardware KVM, else qemu).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10 seconds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--seconds S]" >&2; exit 2 ;;
  esac
done
for tool in hyperfine iperf3 jq curl nft; do
  command -v "$tool" >/dev/null || { echo "bench-network: $tool is not installed (scripts/setup.sh)" >&2; exit 1; }
done
husk=$PWD/target/release/husk
[ -x "$husk" ] || cargo build --release -q
if [ -z "${HUSK_VMM:-}" ]; then
  grep -qwE 'vmx|svm' /proc/cpuinfo && export HUSK_VMM=husk || export HUSK_VMM=qemu
fi
export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
export HUSK_AGENT=${HUSK_AGENT:-$(./rootfs-agent/build-static.sh)}

ns=husk-bench-$$
work=$(mktemp -d /tmp/husk-bench-net.XXXXXX)
dockerd_pid=
cleanup() {
  in_ns "$husk" --root "$work/root" rm -f $(in_ns "$husk" --root "$work/root" ps -a -q 2>/dev/null) >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then
    docker_ns rm -f $(docker_ns ps -a -q) >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  ip netns del "$ns" 2>/dev/null || true
  # dockerd's overlay and netns mounts, innermost first.
  grep -F "$work" /proc/mounts | awk '{ print $2 }' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
in_ns() { nsenter --net=/run/netns/"$ns" "$@"; }
in_ns ip link set lo up
h() { in_ns "$husk" --root "$work/root" "$@"; }

# The image: busybox, with /lib and /lib64 pointing into the /usr the containers get.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,usr,proc,sys,dev,www}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"; done
ln -s usr/lib "$rootfs/lib"; ln -s usr/lib64 "$rootfs/lib64"
echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
echo "root:x:0:" > "$rootfs/etc/group"
# glibc programs (iperf3) read /etc/hosts first, as in Debian's images (without the file glibc
# asks DNS first and gives up when the name server cannot be reached).
echo "hosts: files dns" > "$rootfs/etc/nsswitch.conf"
echo "a small page" > "$rootfs/www/index.html"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$work/image.tar" .
h import --change 'ENV PATH=/usr/bin:/bin' "$work/image.tar" netbench:latest >/dev/null
h network create benchnet >/dev/null
# One container first, so husk's bridge exists and has turned IP forwarding on before dockerd
# starts: a dockerd that has to turn it on itself sets iptables' FORWARD policy to drop, which
# (with br_netfilter) drops traffic between husk's containers too (ARCHITECTURE.md, Networks).
h run --rm --network benchnet netbench true

# dockerd inside the same namespace, with its own state, bridge and iptables rules there.
docker_ns() { in_ns docker -H "unix://$work/docker.sock" "$@"; }
if command -v dockerd >/dev/null; then
  mkdir -p "$work/docker" "$work/docker-exec"
  in_ns dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" \
    -H "unix://$work/docker.sock" --pidfile "$work/docker.pid" >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 100); do docker_ns info >/dev/null 2>&1 && break; sleep 0.2; done
  if docker_ns info >/dev/null 2>&1; then
    docker_ns import --change 'ENV PATH=/usr/bin:/bin' "$work/image.tar" netbench:latest >/dev/null
    docker_ns network create benchnet >/dev/null
  else
    echo "bench-network: dockerd did not start in the namespace ($(tail -n1 "$work/dockerd.log")); docker left out" >&2
    kill "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=
  fi
fi
engines=("husk-process" "husk-vm")
[ -n "$dockerd_pid" ] && engines+=("docker")
run_cmd() { # engine -> the command that runs a container
  case "$1" in
    husk-process) echo "nsenter --net=/run/netns/$ns $husk --root $work/root run --isolation process" ;;
    husk-vm) echo "nsenter --net=/run/netns/$ns $husk --root $work/root run --isolation vm" ;;
    docker) echo "nsenter --net=/run/netns/$ns docker -H unix://$work/docker.sock run" ;;
  esac
}

echo "== start-up: run --rm netbench true ($runs runs each; VM monitor: $HUSK_VMM)"
for engine in "${engines[@]}"; do
  cmd=$(run_cmd "$engine")
  hyperfine -N -w 1 -r "$runs" --export-json "$work/start-$engine.json" \
    -n "$engine none" "$cmd --rm --network none netbench true" \
    -n "$engine bridge" "$cmd --rm --network bridge netbench true" \
    -n "$engine bridge -p" "$cmd --rm --network bridge -p 18080:80 netbench true" >/dev/null
  jq -r --arg e "$engine" '.results as $r | $r[0].mean as $base | $r[] |
    "\(.command)\t\(.mean * 1000 | . * 10 | floor / 10) ms\t(x\(.mean / $base | . * 100 | floor / 100) of none)"' \
    "$work/start-$engine.json"
done

iperf_server() { # engine name extra-flags... -> starts `iperf3 -s` detached
  local engine=$1 name=$2; shift 2
  $(run_cmd "$engine") -d --name "$name" -v /usr:/usr:ro "$@" netbench iperf3 -s -p 5201 >/dev/null
}
remove() { # engine name
  case "$1" in
    docker) docker_ns rm -f "$2" >/dev/null ;;
    *) h rm -f "$2" >/dev/null ;;
  esac
}
wait_port() { # host port
  for _ in $(seq 1 150); do
    in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
gbits() { jq -r 'if .end.sum_received then (.end.sum_received.bits_per_second / 1e9 | . * 100 | floor / 100 | tostring) + " Gbit/s" else "failed: \(.error)" end'; }

echo "== throughput: iperf3 -t $seconds, host -> container over a published port"
for engine in "${engines[@]}"; do
  iperf_server "$engine" "ip-$engine" --network bridge -p 15201:5201
  # The client retries while the server comes up (a bare probe connection would count as a
  # failed test to iperf3, and docker-proxy accepts before the server listens anyway).
  for _ in $(seq 1 100); do
    in_ns iperf3 -c 127.0.0.1 -p 15201 -t "$seconds" -J > "$work/h2c-$engine.json" 2>/dev/null && break
    sleep 0.2
  done
  echo "$engine $(gbits < "$work/h2c-$engine.json")"
  remove "$engine" "ip-$engine"
done

echo "== throughput: iperf3 -t $seconds, container -> container on one user network"
for engine in "${engines[@]}"; do
  iperf_server "$engine" "srv-$engine" --network benchnet
  sleep 2
  $(run_cmd "$engine") --rm -v /usr:/usr:ro --network benchnet netbench sh -c \
    "for i in \$(seq 1 100); do iperf3 -c srv-$engine -p 5201 -t $seconds -J > /tmp/r.json 2>/dev/null && cat /tmp/r.json && exit 0; sleep 0.2; done; exit 1" \
    > "$work/c2c-$engine.json" || { echo "$engine: no result" >&2; remove "$engine" "srv-$engine"; continue; }
  echo "$engine $(gbits < "$work/c2c-$engine.json")"
  remove "$engine" "srv-$engine"
done

echo "== latency: one HTTP GET of a small page over a published port (curl, $((runs * 5)) runs)"
for engine in "${engines[@]}"; do
  $(run_cmd "$engine") -d --name "web-$engine" --network bridge -p 18081:80 netbench httpd -f -p 80 -h /www >/dev/null
  wait_port 18081 || { echo "$engine: httpd never listened" >&2; remove "$engine" "web-$engine"; continue; }
  hyperfine -N -w 3 -r $((runs * 5)) --export-json "$work/lat-$engine.json" \
    "nsenter --net=/run/netns/$ns curl -s -o /dev/null http://127.0.0.1:18081/" >/dev/null
  echo "$engine $(jq -r '.results[0].mean * 1e6 | floor / 1000' "$work/lat-$engine.json") ms per request (curl included)"
  remove "$engine" "web-$engine"
done
