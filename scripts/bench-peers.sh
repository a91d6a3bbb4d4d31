#!/usr/bin/env bash
# Peers: what husk's isolation costs next to the runtimes it resembles, measured in one run
# with hyperfine and printed as ratios, with the machine, kernel and versions named.
#
#   process isolation: husk run --isolation process  vs  runc run (same rootfs as an OCI
#                      bundle)  vs  docker run (when dockerd runs). This part is
#                      scripts/bench-run.sh, reused as is.
#   VM isolation:      husk run --isolation vm (husk's own monitor)  vs  QEMU's microvm machine
#                      booting the same guest kernel with the same busybox rootfs as initramfs,
#                      each running `true` and powering off. Needs hardware KVM (VMX/SVM);
#                      elsewhere it says why it cannot be measured. --tcg runs both under QEMU
#                      TCG emulation instead (exercises the harness; not a fair measurement).
#
# Usage: scripts/bench-peers.sh [--runs N] [--only process|vm] [--tcg] [--nested]
#   --nested  run it inside the nested tier's L1 (scripts/nested.sh), whose KVM is emulated
#             SVM: husk's monitor then boots there; ratios in one run mean something, times
#             do not.
#   HUSK_BIN=path  use this husk binary for the VM part (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20 only= tcg=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --tcg) tcg=1; shift ;;
    --nested) nested=1; shift ;;
    *) echo "usage: $0 [--runs N] [--only process|vm] [--tcg] [--nested]" >&2; exit 2 ;;
  esac
done
if [ -n "${nested:-}" ]; then
  cargo build --release -q --workspace
  kc=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds}
  HUSK_KERNEL=$(HUSK_KERNEL_CACHE_DIR=$kc guest-kernel/build.sh) HUSK_AGENT=$(rootfs-agent/build-static.sh)
  export HUSK_KERNEL HUSK_AGENT HUSK_BIN=$PWD/target/release/husk
  args=(--runs "$runs")
  [ -n "$only" ] && args+=(--only "$only")
  exec scripts/nested.sh -- "$PWD/scripts/bench-peers.sh" "${args[@]}"
fi
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null

echo "== machine"
echo "cpu:    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cpus)"
echo "kernel: $(uname -srm)"
echo "husk:   $(git describe --always --dirty 2>/dev/null || echo unknown) ($(grep -m1 '^version' Cargo.toml | cut -d'"' -f2))"
echo "runc:   $(runc --version 2>/dev/null | head -1 || echo missing)"
echo "qemu:   $(qemu-system-x86_64 --version 2>/dev/null | head -1 || echo missing)"
if docker info >/dev/null 2>&1; then
  echo "docker: $(docker info --format '{{.ServerVersion}}')"
else
  echo "docker: dockerd not running"
fi
hw_kvm=
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -c /dev/kvm ]; then hw_kvm=1; fi
if [ -n "$hw_kvm" ]; then echo "kvm:    hardware (VMX/SVM)"
elif [ -c /dev/kvm ]; then echo "kvm:    /dev/kvm without VMX/SVM (software virtualization, e.g. PVM)"
else echo "kvm:    none"; fi

if [ "$only" != vm ]; then
  echo; echo "== process isolation: husk vs runc (and docker), startup of \`true\`, $runs runs"
  scripts/bench-run.sh "$runs"
fi
[ "$only" = process ] && exit 0

echo; echo "== VM isolation: husk vm vs QEMU microvm, boot + \`true\` + power-off, $runs runs"
if [ -z "$hw_kvm" ] && [ -z "$tcg" ]; then
  echo "cannot be measured here: no hardware KVM (the CPU shows no VMX/SVM), and husk's own monitor needs it to boot a stock guest kernel; run on a KVM host, or pass --tcg to exercise the harness under QEMU emulation"
  exit 0
fi
husk=${HUSK_BIN:-}
if [ -z "$husk" ]; then cargo build --release -q; husk=$PWD/target/release/husk; fi
kernel=${HUSK_KERNEL:-$(guest-kernel/build.sh | tail -1)}
agent=${HUSK_AGENT:-$(rootfs-agent/build-static.sh | tail -1)}
work=$(mktemp -d /tmp/husk-peers.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

# One rootfs for both: the host's busybox-static, as scripts/bench-run.sh builds it.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,proc,sys,dev,etc,tmp}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh true echo mount reboot; do ln -s busybox "$rootfs/bin/$applet"; done
tar -C "$rootfs" -cf "$work/rootfs.tar" .
"$husk" --root "$root" import "$work/rootfs.tar" bench-busybox:latest >/dev/null
# QEMU side: the same rootfs as the initramfs, whose init runs `true` and resets the VM
# (reboot=t + -no-reboot make QEMU exit, the way husk's agent ends a VM).
printf '#!/bin/sh\n/bin/true\nexec /bin/reboot -f\n' > "$rootfs/init"
chmod +x "$rootfs/init"
(cd "$rootfs" && find . | cpio -o -H newc --quiet) > "$work/initramfs.cpio"

if [ -n "$hw_kvm" ] && [ -z "$tcg" ]; then accel=kvm vmm=husk; else accel=tcg vmm=qemu; fi
qemu="qemu-system-x86_64 -M microvm,acpi=off -accel $accel -m 256 -smp 1 -nodefaults -no-user-config -nographic -no-reboot -kernel $kernel -initrd $work/initramfs.cpio -append 'console=ttyS0 quiet panic=-1 reboot=t rdinit=/init'"
huskvm="env HUSK_VMM=$vmm HUSK_KERNEL=$kernel HUSK_AGENT=$agent $husk --root $root run --rm --network none --isolation vm bench-busybox true"
# Both must work once before they are timed.
eval "$qemu" </dev/null >/dev/null
eval "$huskvm" </dev/null >/dev/null
hyperfine --warmup 1 --runs "$runs" --export-json "$work/vm.json" \
  --command-name "husk vm ($vmm, $accel)" "$huskvm" \
  --command-name "qemu microvm ($accel)" "$qemu" >/dev/null 2>&1

python3 - "$work/vm.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
husk, qemu = results[0], results[1]
print(f"{'command':<26}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
for r in results:
    print(f"{r['command']:<26}{r['median']*1e3:>10.1f}{r['min']*1e3:>9.1f}{r['max']*1e3:>9.1f}")
print(f"husk vm / qemu microvm median ratio: {husk['median']/qemu['median']:.2f} "
      "(husk adds the image disk, the agent handshake and container setup inside the guest)")
PY
left=$("$husk" --root "$root" ps -a -q | wc -l)
echo "left behind: records=$left"
[ "$left" = 0 ]
