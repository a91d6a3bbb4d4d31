#!/usr/bin/env bash
# Startup cost of process isolation: `husk run --rm --isolation process busybox true` against
# `runc run` of the same rootfs as an OCI bundle, and `docker run --rm --network none busybox
# true` when dockerd is running, all measured in this one run with hyperfine. Prints medians and
# ratios, then checks that the runs left no mounts, cgroups or records behind.
#
# Usage: scripts/bench-run.sh [RUNS]   (default 100; HUSK_BIN=path to use an existing binary;
#        HUSK_BASELINE=path to an older husk adds it, on a root of its own: before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
command -v hyperfine >/dev/null || { apt-get install -y -qq hyperfine >/dev/null; }
[ -n "${HUSK_BIN:-}" ] || cargo build --release -q
husk=${HUSK_BIN:-$PWD/target/release/husk}
work=$(mktemp -d /tmp/husk-bench.XXXXXX)
root=$work/root
trap 'rm -rf "$work"' EXIT

# One rootfs for everyone: the host's busybox-static.
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in sh true echo; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
mkdir -p "$work/bundle/rootfs/"{proc,sys,dev,etc,tmp}
tar -C "$work/bundle/rootfs" -cf "$work/rootfs.tar" .
"$husk" --root "$root" import "$work/rootfs.tar" bench-busybox:latest >/dev/null

(cd "$work/bundle" && runc spec && python3 - <<'PY'
import json
spec = json.load(open("config.json"))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/bin/true"]
spec["root"]["readonly"] = False
json.dump(spec, open("config.json", "w"))
PY
)

cmds=("$husk --root $root run --rm --network none --isolation process bench-busybox true"
      "runc run -b $work/bundle husk-bench-runc")
names=("husk process" "runc run")
if [ -n "${HUSK_BASELINE:-}" ]; then
  "$HUSK_BASELINE" --root "$work/root-baseline" import "$work/rootfs.tar" bench-busybox:latest >/dev/null
  cmds+=("$HUSK_BASELINE --root $work/root-baseline run --rm --network none --isolation process bench-busybox true")
  names+=("husk baseline")
fi
if docker info >/dev/null 2>&1; then
  docker image inspect busybox >/dev/null 2>&1 || docker import "$work/rootfs.tar" busybox >/dev/null
  cmds+=("docker run --rm --network none busybox true"); names+=("docker run")
else
  echo "bench: dockerd is not running, docker run is not measured (start it with: dockerd &)"
fi

args=()
for i in "${!cmds[@]}"; do args+=(--command-name "${names[$i]}" "${cmds[$i]}"); done
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/result.json" "${args[@]}" >/dev/null 2>&1

python3 - "$work/result.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
husk = results["husk process"]["median"]
print(f"{'command':<16}{'median ms':>10}{'min ms':>9}{'max ms':>9}{'vs husk':>9}")
for name, r in results.items():
    print(f"{name:<16}{r['median']*1e3:>10.2f}{r['min']*1e3:>9.2f}{r['max']*1e3:>9.2f}{r['median']/husk:>9.2f}")
runc = results["runc run"]["median"]
print(f"husk/runc median ratio: {husk/runc:.2f} (target <= 0.5)")
if "husk baseline" in results:
    base = results["husk baseline"]["median"]
    print(f"husk baseline/runc median ratio: {base/runc:.2f}; husk/baseline: {husk/base:.2f}")
PY

left=$("$husk" --root "$root" ps -a -q | wc -l)
mounts=$(grep -c "$root" /proc/self/mountinfo || true)
cgroups=$(find /sys/fs/cgroup -maxdepth 3 -path '*/husk/*' -type d 2>/dev/null | wc -l)
echo "left behind after $((runs + 5)) runs: records=$left mounts=$mounts cgroups=$cgroups"
[ "$left" = 0 ] && [ "$mounts" = 0 ] && [ "$cgroups" = 0 ]
