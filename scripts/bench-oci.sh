#!/usr/bin/env bash
# husk-runc beside runc through the runc contract, measured side by side in one run (hyperfine):
#   - create + start + delete of /bin/true on one bundle (runc's own `runc spec`), as youki's
#     README measures runtimes;
#   - `podman run --rm --network none` of the same busybox root, with --runtime husk-runc and
#     with --runtime runc;
#   - with --vm, husk-runc's VM isolation too (the bundle annotation io.husk.isolation=vm) for
#     both: the cost of the microVM behind the same contract.
# No bridge is used (podman --network none), so nothing leaves the host's own namespaces.
#
# Usage: scripts/bench-oci.sh [--runs N] [--vm]   (as root, after scripts/setup.sh)
# HUSK_VMM picks the VM monitor (default: husk on hardware KVM, else qemu); HUSK_BIN the husk.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=30 vm=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --vm) vm=1; shift ;;
    *) echo "usage: $0 [--runs N] [--vm]" >&2; exit 2 ;;
  esac
done
for tool in hyperfine runc podman jq; do
  command -v "$tool" >/dev/null || { echo "bench-oci: $tool is not installed (scripts/setup.sh)" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "bench-oci: busybox-static is not installed (scripts/setup.sh)" >&2; exit 1; }
# HUSK_BIN measures another build (a debug one, an older husk).
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

work=$(mktemp -d /tmp/husk-bench-oci.XXXXXX)
runtime=$work/husk-runc
podman_base="podman --root $work/podman --runroot $work/podman-run --cgroup-manager cgroupfs --events-backend none"
cleanup() {
  for id in $("$runtime" --root "$work/husk-state" list -q 2>/dev/null); do
    "$runtime" --root "$work/husk-state" delete --force "$id" >/dev/null 2>&1 || true
  done
  runc --root "$work/runc-state" delete --force b >/dev/null 2>&1 || true
  $podman_base rm -af >/dev/null 2>&1 || true
  grep -F "$work" /proc/mounts | awk '{ print $2 }' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ln -s "$husk" "$runtime"

# One busybox root: the bundle's, and the image podman imports.
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh true; do ln -s busybox "$rootfs/bin/$applet"; done
echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
echo "root:x:0:" > "$rootfs/etc/group"
(cd "$work/bundle" && runc spec)
# runc's default spec raises RLIMIT_NOFILE to 1024, which an unprivileged sandbox's lower hard
# limit refuses (EPERM) to runc and husk-runc alike: both run without the spec's rlimits.
jq '.process.args = ["/bin/true"] | .process.terminal = false | del(.process.rlimits)' \
  "$work/bundle/config.json" > "$work/config.json"
mv "$work/config.json" "$work/bundle/config.json"
if [ "$vm" = 1 ]; then
  mkdir -p "$work/vm-bundle"
  cp -a "$rootfs" "$work/vm-bundle/rootfs"
  jq '.annotations["io.husk.isolation"] = "vm"' "$work/bundle/config.json" > "$work/vm-bundle/config.json"
  # podman hands its runtime no environment: a wrapper carries the VM settings, as an
  # operator's would (README, husk-runc).
  cat > "$work/husk-runc-vm" <<EOF
#!/bin/sh
export HUSK_VMM=$HUSK_VMM HUSK_KERNEL=$HUSK_KERNEL HUSK_AGENT=$HUSK_AGENT
exec $runtime "\$@"
EOF
  chmod +x "$work/husk-runc-vm"
fi
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$work/image.tar" .
$podman_base import "$work/image.tar" localhost/bench-oci:1 >/dev/null

lifecycle() { # RUNTIME STATE BUNDLE
  echo "$1 --root $2 create --bundle $3 b && $1 --root $2 start b && $1 --root $2 delete --force b"
}
echo "== create + start + delete of /bin/true ($runs runs)"
cmds=(-n husk-runc "$(lifecycle "$runtime" "$work/husk-state" "$work/bundle")"
      -n runc "$(lifecycle runc "$work/runc-state" "$work/bundle")")
if [ "$vm" = 1 ]; then
  cmds+=(-n "husk-runc vm ($HUSK_VMM)" "$(lifecycle "$runtime" "$work/husk-state" "$work/vm-bundle")")
fi
hyperfine --warmup 3 --runs "$runs" --export-json "$work/lifecycle.json" "${cmds[@]}"

echo "== podman run --rm --network none ($runs runs)"
podman_run() { # RUNTIME [RUN ARGS]
  local rt=$1; shift
  echo "$podman_base --runtime $rt run --rm --network none $* localhost/bench-oci:1 true"
}
# podman puts RLIMIT_NOFILE and RLIMIT_NPROC (1048576, 4194304 for root) into every spec;
# where the host's hard limits are lower, runc fails (EPERM) where husk-runc clamps. Then both
# runtimes get lower limits (--ulimit), so that they are measured on one spec.
ulimit_args=()
if ! $(podman_run "$(command -v runc)") >/dev/null 2>&1; then
  # The hard RLIMIT_NPROC is refused here too (EPERM from runc's setrlimit); 1024 is what a
  # non-root login gets on Debian and is allowed everywhere.
  nofile=$(ulimit -Hn) nproc=1024
  ulimit_args=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  echo "bench-oci: podman's rlimits are above this host's hard limits: both runtimes run with ${ulimit_args[*]}"
fi
cmds=(-n "podman husk-runc" "$(podman_run "$runtime" "${ulimit_args[@]}")")
if why=$($(podman_run "$(command -v runc)" "${ulimit_args[@]}") 2>&1 >/dev/null); then
  cmds+=(-n "podman runc" "$(podman_run "$(command -v runc)" "${ulimit_args[@]}")")
else
  echo "bench-oci: podman with runc fails on this host, measuring husk-runc alone: $(echo "$why" | tail -1)"
fi
if [ "$vm" = 1 ]; then
  cmds+=(-n "podman husk-runc vm ($HUSK_VMM)" "$(podman_run "$work/husk-runc-vm" "${ulimit_args[@]}" --annotation io.husk.isolation=vm)")
fi
hyperfine --warmup 2 --runs "$runs" --export-json "$work/podman.json" "${cmds[@]}"
