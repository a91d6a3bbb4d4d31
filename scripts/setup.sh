#!/usr/bin/env bash
# Installs what husk and its tests need on a fresh Debian 12 machine (run as root), then
# builds husk. Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
# --tests: what the test suite needs, without the release build of husk (the tests run the
# debug build cargo test makes; the walkthrough and the benchmarks run the release one).
for_tests=
[ "${1:-}" = --tests ] && for_tests=1
# Each step's wall time, so a slow machine shows where its time went.
step_started=$(date +%s)
took() {
  echo "setup: $1 took $(( $(date +%s) - step_started ))s"
  step_started=$(date +%s)
}

packages=(
  busybox-static          # the local busybox and hello-world images
  docker-registry skopeo  # a real registry for pull/push tests, and a client we did not write
  umoci runc              # benchmark peers
  apache2-utils           # htpasswd for the registry's auth tests
  qemu-system-x86         # T2: our guest kernel + agent under QEMU TCG
  erofs-utils e2fsprogs   # VM image and writable disks
  linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio  # the guest kernel
  make gcc libc6-dev xz-utils  # the guest kernel and the static hello-world image
  file iproute2 procps util-linux
  nftables iperf3 curl    # container networks (NAT, published ports) and their tests
  hyperfine jq            # benchmark scripts
  docker.io               # Docker itself: output formats compared, a benchmark peer
  docker-compose          # a client of husk's Engine API (tests/engine_api.rs)
  podman containerd       # OCI runtime clients that drive husk-runc (tests/oci_runtime.rs)
  chromium                # renders husk compare's HTML report in a test
  libseccomp-dev libcap-ng-dev  # virtiofsd, built below
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
took "the Debian packages"

if [ -z "$for_tests" ]; then
  cargo build --release --workspace
  took "the release build of husk"
fi

# virtiofsd serves volumes to VM containers (virtio-fs). Debian 12 does not package it: it is
# built once per machine from crates.io at this version (about 3 minutes on 2 cores), into the
# place husk looks first (src/vm/virtiofs.rs).
virtiofsd_version=1.14.0
virtiofsd_root=/var/cache/husk/virtiofsd
if [ "$(cat "$virtiofsd_root/version" 2>/dev/null)" != "$virtiofsd_version" ]; then
  echo "setup: building virtiofsd $virtiofsd_version (cached in $virtiofsd_root)"
  cargo install --quiet --locked --force --root "$virtiofsd_root" "virtiofsd@$virtiofsd_version" 2>&1 |
    grep -v 'to your PATH' || true
  [ -x "$virtiofsd_root/bin/virtiofsd" ] || { echo "setup: virtiofsd did not build" >&2; exit 1; }
  echo "$virtiofsd_version" > "$virtiofsd_root/version"
fi
took "virtiofsd"

# The guest side of VM isolation: our kernel (built once per machine and cached; about 5
# minutes on 2 cores the first time) and the static guest agent.
export HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
kernel=$(./guest-kernel/build.sh)
took "the guest kernel"
agent=$(./rootfs-agent/build-static.sh)
took "the guest agent"
# husk finds the kernel at /var/cache/husk/guest-kernel/vmlinux (HUSK_KERNEL overrides it).
mkdir -p /var/cache/husk/guest-kernel
for f in vmlinux kernel.release config.sha256; do
  cp "$(dirname "$kernel")/$f" "/var/cache/husk/guest-kernel/.$f.new"
  mv "/var/cache/husk/guest-kernel/.$f.new" "/var/cache/husk/guest-kernel/$f"
done
if [ -z "$for_tests" ]; then
  echo "setup: husk $(target/release/husk --version | cut -d' ' -f2), guest kernel $kernel, agent $agent"
else
  echo "setup: guest kernel $kernel, agent $agent"
fi
