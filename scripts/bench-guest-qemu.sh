#!/bin/sh
# Guest-side phase timings (disks, initramfs, boot to agent, process start/exit, teardown)
# under QEMU TCG: the part of `husk run --isolation vm` this host can measure without
# hardware KVM. Usage: scripts/bench-guest-qemu.sh [ROUNDS]   (default 5)
set -eu
cd "$(dirname "$0")/.."
exec cargo bench -q --profile dev --bench guest_qemu_boot -- "${1:-5}"
