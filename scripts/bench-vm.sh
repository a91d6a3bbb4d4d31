#!/usr/bin/env bash
# VM isolation on a KVM with VMX/SVM, measured side by side in one run:
#   1. bare boot: husk's monitor (`husk vm boot`) vs QEMU's microvm machine (-accel kvm), the
#      same guest kernel and the same busybox initramfs whose init runs `true` and reboots;
#      plus the VM exits of one husk boot, by reason.
#   2. `husk run --rm busybox true` end to end: VM on husk's monitor, VM on QEMU (the same
#      kernel, initramfs, disks and agent), and process isolation.
#   3. one `--cost` ledger of each: monitor build, boot, agent ready, and the machinery's
#      peak RSS and PSS outside guest memory.
#
# Usage: scripts/bench-vm.sh [--runs N] [--nested]
#   --nested  run all of it inside the nested tier's L1 (scripts/nested.sh), whose /dev/kvm is
#             QEMU TCG's emulated SVM: absolute times there mean nothing, ratios do.
# HUSK_BASELINE=/path/to/an/older/husk adds that binary to 2. (before/after a change, one run).
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
  # L1 sees this tree read-only: it is handed the built kernel and agent.
  HUSK_KERNEL=$(guest-kernel/build.sh) HUSK_AGENT=$(rootfs-agent/build-static.sh)
  export HUSK_KERNEL HUSK_AGENT
  exec scripts/nested.sh -- "$PWD/scripts/bench-vm.sh" --runs "$runs"
fi

grep -qwE 'vmx|svm' /proc/cpuinfo && [ -c /dev/kvm ] || {
  echo "bench-vm: needs a KVM with VMX/SVM (this host has none); try --nested"; exit 0; }
husk=$PWD/target/release/husk
[ -x "$husk" ] || cargo build --release -q
kernel=${HUSK_KERNEL:-$(guest-kernel/build.sh)}
agent=${HUSK_AGENT:-$(rootfs-agent/build-static.sh)}
work=$(mktemp -d /tmp/husk-bench-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== machine"
echo "cpu:    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cpus)"
echo "kernel: $(uname -srm)$(grep -qw hypervisor /proc/cpuinfo && echo ', itself a guest (nested virtualization)')"
echo "guest:  $(cat "$(dirname "$kernel")/kernel.release") ($kernel)"
echo "husk:   $(git describe --always --dirty 2>/dev/null || echo unknown)"
echo "qemu:   $(qemu-system-x86_64 --version | head -1)"

# The same initramfs for both monitors: busybox, an init that runs `true` and reboots.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,proc,sys,dev}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh true reboot; do ln -s busybox "$rootfs/bin/$applet"; done
printf '#!/bin/sh\n/bin/true\nexec /bin/reboot -f\n' > "$rootfs/init"
chmod +x "$rootfs/init"
(cd "$rootfs" && find . | cpio -o -H newc --quiet) > "$work/init.cpio"

# husk boots with its own quiet command line (reboot through the i8042, which ends the VM);
# QEMU's microvm has no i8042, so it reboots by triple fault, which -no-reboot turns into exit.
cmdline="console=ttyS0 quiet panic=-1 no_timer_check pci=off nomodule i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable rdinit=/init"
# Every measured command is bounded (SIGTERM, then SIGKILL: husk relays a SIGTERM to its
# container and goes on waiting): a run that hangs fails the benchmark.
limit="timeout -k 10 300"
husk_boot="$limit $husk vm boot --kernel $kernel --initrd $work/init.cpio --memory 256M --cmdline '$cmdline reboot=k'"
qemu_boot="$limit qemu-system-x86_64 -M microvm,acpi=off -accel kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config -display none -serial null -no-reboot -kernel $kernel -initrd $work/init.cpio -append '$cmdline reboot=t'"
eval "$husk_boot" </dev/null 2>"$work/husk-boot.err" || { cat "$work/husk-boot.err"; exit 1; }
eval "$qemu_boot" </dev/null >/dev/null
echo; echo "== 1. bare boot to init and reset, $runs runs each (same kernel and initramfs)"
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/boot.json" \
  --command-name "husk vm boot" "$husk_boot" \
  --command-name "husk vm boot --no-jail" "$husk_boot --no-jail" \
  --command-name "qemu microvm -accel kvm" "$qemu_boot" --style none >/dev/null ||
  { echo "bench-vm: a bare boot failed or passed 300 s"; exit 1; }
sed -n 's/^husk: //p' "$work/husk-boot.err"

# Containers: one root, one image; VM on either monitor, and process isolation.
root=$work/root
mkdir -p "$work/img"/{bin,proc,sys,dev,etc,tmp}
cp /bin/busybox "$work/img/bin/busybox"
for applet in sh true echo; do ln -s busybox "$work/img/bin/$applet"; done
tar -C "$work/img" -cf "$work/img.tar" .
"$husk" --root "$root" import "$work/img.tar" bench-busybox:latest >/dev/null
env_vm="env HUSK_KERNEL=$kernel HUSK_AGENT=$agent"
run_husk="$limit $env_vm HUSK_VMM=husk $husk --root $root run --rm --network none --isolation vm bench-busybox true"
run_qemu="$limit $env_vm HUSK_VMM=qemu $husk --root $root run --rm --network none --isolation vm bench-busybox true"
run_proc="$limit $husk --root $root run --rm --network none --isolation process bench-busybox true"
baseline=()
if [ -n "${HUSK_BASELINE:-}" ]; then
  run_base="$limit $env_vm HUSK_VMM=husk $HUSK_BASELINE --root $root run --rm --network none --isolation vm bench-busybox true"
  eval "$run_base" </dev/null >/dev/null
  baseline=(--command-name "vm on husk's monitor, baseline" "$run_base")
  echo "baseline: $("$HUSK_BASELINE" --version 2>/dev/null || echo "$HUSK_BASELINE")"
fi
for c in "$run_husk" "$run_qemu" "$run_proc"; do eval "$c" </dev/null >/dev/null; done
echo; echo "== 2. husk run --rm busybox true, end to end, $runs runs each"
echo "bench-vm: hyperfine, VM on husk, VM on QEMU, process" >&2
hyperfine --warmup 1 --runs "$runs" --export-json "$work/run.json" \
  --command-name "vm on husk's monitor" "$run_husk" \
  "${baseline[@]}" \
  --command-name "vm on qemu microvm (kvm)" "$run_qemu" \
  --command-name "process" "$run_proc" --style none >/dev/null ||
  { echo "bench-vm: a run failed or passed 300 s"; exit 1; }

for m in husk qemu; do
  echo "bench-vm: one --cost run on $m" >&2
  $env_vm HUSK_VMM=$m "$husk" --root "$root" run --cost --network none --name "cost-$m" --isolation vm bench-busybox true >/dev/null
  "$husk" --root "$root" inspect -f '{{json .Cost}}' "cost-$m" > "$work/cost-$m.json"
  "$husk" --root "$root" rm "cost-$m" >/dev/null
done
"$husk" --root "$root" run --cost --network none --name cost-proc --isolation process bench-busybox true >/dev/null
"$husk" --root "$root" inspect -f '{{json .Cost}}' cost-proc > "$work/cost-proc.json"
"$husk" --root "$root" rm cost-proc >/dev/null

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def results(name):
    return {r["command"]: r for r in json.load(open(f"{work}/{name}.json"))["results"]}
boot = results("boot")
print(f"{'bare boot':<32}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
for name, r in boot.items():
    print(f"{name:<32}{r['median']*1e3:>10.1f}{r['min']*1e3:>9.1f}{r['max']*1e3:>9.1f}")
h, q = boot["husk vm boot"], boot["qemu microvm -accel kvm"]
print(f"husk / qemu (bare boot, median): {h['median']/q['median']:.2f}")
print(f"jailed / unjailed husk (bare boot, median): {h['median']/boot['husk vm boot --no-jail']['median']:.2f}")
run = results("run")
print()
print(f"{'run --rm true':<32}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
for name, r in run.items():
    print(f"{name:<32}{r['median']*1e3:>10.1f}{r['min']*1e3:>9.1f}{r['max']*1e3:>9.1f}")
vh, vq, p = (run[k]["median"] for k in ("vm on husk's monitor", "vm on qemu microvm (kvm)", "process"))
print(f"husk monitor / qemu (run end to end): {vh/vq:.2f}")
print(f"vm (husk monitor) / process: {vh/p:.1f}")
base = run.get("vm on husk's monitor, baseline")
if base:
    print(f"husk monitor / baseline (run end to end): {vh/base['median']:.2f}")
print()
costs = {m: json.load(open(f"{work}/cost-{m}.json")) for m in ("husk", "qemu", "proc")}
print("== 3. one --cost ledger each (ms; KiB outside guest memory)")
phases = ["prepare", "monitor_build", "setup", "boot", "agent_ready", "process_start", "process_run", "teardown"]
print(f"{'':<22}" + "".join(f"{m:>12}" for m in costs))
for ph in phases:
    vals = [next((x["ms"] for x in c["phases"] if x["phase"] == ph), None) for c in costs.values()]
    if any(v is not None for v in vals):
        print(f"{ph:<22}" + "".join(f"{v:>12.1f}" if v is not None else f"{'-':>12}" for v in vals))
for key in ("total_ms", "machinery_peak_rss_kib", "machinery_peak_pss_kib"):
    print(f"{key:<22}" + "".join(f"{c[key]:>12.0f}" for c in costs.values()))
hc, qc = costs["husk"], costs["qemu"]
def p(c, name): return next((x["ms"] for x in c["phases"] if x["phase"] == name), 0.0)
print(f"husk / qemu: monitor build {p(hc,'monitor_build')/max(p(qc,'monitor_build'),1e-9):.2f}, "
      f"boot to agent ready {(p(hc,'boot')+p(hc,'agent_ready'))/max(p(qc,'boot')+p(qc,'agent_ready'),1e-9):.2f}, "
      f"machinery pss {hc['machinery_peak_pss_kib']/max(qc['machinery_peak_pss_kib'],1):.2f}, "
      f"rss {hc['machinery_peak_rss_kib']/max(qc['machinery_peak_rss_kib'],1):.2f}")
ex = hc.get("vm_exits")
if ex:
    print(f"vm exits of the container run on husk's monitor: {ex.get('total')} in all; to the monitor: "
          + ", ".join(f"{k} {v}" for k, v in ex["monitor"].items()))
PY
left=$("$husk" --root "$root" ps -a -q | wc -l)
echo "left behind: records=$left"
[ "$left" = 0 ]
