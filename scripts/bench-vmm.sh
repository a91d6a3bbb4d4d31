#!/usr/bin/env bash
# Benchmarks husk's microVM monitor:
#   1. monitor start to first guest instruction: a guest whose first instructions are
#      `mov al,0xfe; out 0x64,al` (an exit to the monitor, then reset). Reports the monitor's
#      own measurement (run_vm entry to first exit) and the whole `husk vm boot` process wall
#      time (exec to exit, including KVM setup and teardown).
#   2. monitor RSS excluding guest memory: a guest that halts forever; /proc/PID/smaps Rss
#      summed over every mapping except the guest RAM mapping, then SIGTERM (must exit 143).
#   3. boot to init and reset of our guest kernel (an initramfs whose init reboots at once),
#      with the VM exits of one boot by reason: only with hardware KVM (or a PVM-capable kernel
#      in HUSK_KERNEL); on PVM hosts a stock kernel cannot boot, so it says so. --nested runs
#      the whole script in the nested tier's L1 (emulated SVM), where it can.
#
# Usage: scripts/bench-vmm.sh [--nested] [runs]   (HUSK_BIN=path to use an existing binary)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == --nested ]]; then
    shift
    cargo build --release --bin husk >&2
    HUSK_KERNEL=$(HUSK_KERNEL_CACHE_DIR=${HUSK_KERNEL_CACHE_DIR:-/var/cache/husk/kernel-builds} guest-kernel/build.sh)
    export HUSK_KERNEL HUSK_BIN=$PWD/target/release/husk
    exec scripts/nested.sh -- "$PWD/scripts/bench-vmm.sh" "$@"
fi
RUNS=${1:-20}
if [[ -z "${HUSK_BIN:-}" ]]; then
    cargo build --release --bin husk >&2
    HUSK_BIN=target/release/husk
fi
[[ -e /dev/kvm ]] || { echo "SKIP bench-vmm: /dev/kvm is missing"; exit 0; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A minimal ELF64 with one PT_LOAD at 1 MiB whose entry point runs $2 (hex bytes).
make_elf() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
path, code = sys.argv[1], bytes.fromhex(sys.argv[2])
load = 0x100000
ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 0x3e, 1, load, 64, 0, 0, 64, 56, 1, 64, 0, 0)
phdr = struct.pack("<IIQQQQQQ", 1, 7, 120, load, load, len(code), len(code), 0x1000)
open(path, "wb").write(ehdr + phdr + code)
PY
}

make_elf "$work/reset.elf" "b0fee664f4"          # mov al,0xfe; out 0x64,al; hlt
make_elf "$work/halt.elf" "faf4ebfd"             # cli; hlt; jmp hlt

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "== monitor start to first guest instruction ($RUNS runs, 128 MiB, 1 vCPU)"
: > "$work/first"; : > "$work/wall"
for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    "$HUSK_BIN" vm boot --kernel "$work/reset.elf" --memory 128M 2> "$work/err" || true
    t1=$(date +%s%N)
    grep -q "Reset" "$work/err" || { echo "unexpected exit: $(cat "$work/err")"; exit 1; }
    sed -n 's/.*first guest exit at \([0-9.]*\)s.*/\1/p' "$work/err" | awk '{printf "%.3f\n", $1*1000}' >> "$work/first"
    echo "$(( (t1 - t0) / 1000 ))" | awk '{printf "%.3f\n", $1/1000}' >> "$work/wall"
done
echo "run_vm entry -> first guest exit: median $(median < "$work/first") ms"
echo "husk process exec -> exit:        median $(median < "$work/wall") ms"

echo "== monitor RSS excluding guest memory (128 MiB guest, halted)"
"$HUSK_BIN" vm boot --kernel "$work/halt.elf" --memory 128M 2> "$work/err" &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
guest_kib=$((128 * 1024))
rss_total=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
# smaps lists each mapping's Size; the guest RAM is the one anonymous mapping of exactly the
# guest's size (mawk has no hex parsing, so use Size rather than the address range).
rss_excl=$(awk -v guest="$guest_kib" '
    /^Size:/ { skip = ($2 == guest) }
    /^Rss:/ { if (!skip) sum += $2 }
    END { print sum }' "/proc/$pid/smaps")
kill -TERM "$pid"
set +e; wait "$pid"; status=$?; set -e
trap 'rm -rf "$work"' EXIT
echo "VmRSS total: ${rss_total} KiB; excluding guest RAM: ${rss_excl} KiB ($(awk -v k="$rss_excl" 'BEGIN{printf "%.2f", k/1024}') MiB; Firecracker's bar: 5 MiB)"
echo "SIGTERM -> exit status $status (expected 143)"

echo "== boot to init and reset of our guest kernel ($RUNS runs, 256 MiB, 1 vCPU)"
info=$("$HUSK_BIN" info)
kernel=${HUSK_KERNEL:-$(sed -n 's/^Guest kernel: *//p' <<< "$info")}
if grep -q "PVM" <<< "$info" && [[ -z "${HUSK_KERNEL:-}" ]]; then
    echo "SKIP boot-to-init: $(sed -n 's/^VM isolation: *unavailable: //p' <<< "$info")"
    echo "     PVM cannot measure: kernel boot time, boot-to-init (Firecracker: 125 ms, 1 vCPU, 128 MiB)."
    echo "     Start-to-first-instruction and RSS above are measured on PVM and are indicative only."
    echo "     scripts/bench-vmm.sh --nested measures it on emulated SVM."
elif [[ ! -f "$kernel" ]]; then
    echo "SKIP boot-to-init: no guest kernel ($kernel)"
else
    mkdir -p "$work/rootfs/bin" "$work/rootfs/dev"
    cp /bin/busybox "$work/rootfs/bin/busybox"
    ln -s busybox "$work/rootfs/bin/sh"
    printf '#!/bin/sh\n/bin/busybox reboot -f\n' > "$work/rootfs/init"
    chmod +x "$work/rootfs/init"
    (cd "$work/rootfs" && find . | cpio -o -H newc --quiet) > "$work/init.cpio"
    : > "$work/boot"
    for _ in $(seq "$RUNS"); do
        t0=$(date +%s%N)
        "$HUSK_BIN" vm boot --kernel "$kernel" --initrd "$work/init.cpio" --memory 256M 2> "$work/err"
        t1=$(date +%s%N)
        echo "$(( (t1 - t0) / 1000 ))" | awk '{printf "%.3f\n", $1/1000}' >> "$work/boot"
    done
    echo "husk vm boot exec -> guest reset:  median $(median < "$work/boot") ms"
    sed -n 's/^husk: exits/VM exits of one boot/p' "$work/err"
fi
