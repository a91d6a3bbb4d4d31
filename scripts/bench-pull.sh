#!/usr/bin/env bash
# Pull + unpack of a multi-layer image from a local registry: husk against `skopeo copy` +
# `umoci unpack` of the same image, same machine, same run, in interleaved rounds. Prints
# both medians and the ratio (husk / skopeo+umoci; below 1.0 means husk is faster), then husk's second pull
# of the same image, which fetches only the manifest.
#
# Needs: docker-registry, skopeo, umoci, hyperfine, jq, busybox-static, python3 (the image
# content is busybox plus the host's Python 3.11 and Perl libraries).
# Env: HUSK=path to a husk binary (default: target/release/husk, built if missing),
#      RUNS=hyperfine runs per command (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker-registry skopeo umoci hyperfine jq; do
  command -v "$tool" >/dev/null || { echo "bench-pull: $tool is not installed" >&2; exit 1; }
done
if [ -z "${HUSK:-}" ]; then
  [ -x target/release/husk ] || cargo build --release --bin husk
  HUSK=$PWD/target/release/husk
fi
RUNS=${RUNS:-5}
work=$(mktemp -d /tmp/husk-bench-pull.XXXXXX)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# A four-layer image: busybox, Python's stdlib (many small files), Perl's, and a config layer.
layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:bench"
add_layer() { # SOURCE-DIR DEST-INSIDE-ROOTFS
  rm -rf "$work/bundle"
  umoci unpack --image "$layout:bench" "$work/bundle" >/dev/null
  mkdir -p "$work/bundle/rootfs/$2"
  cp -a "$1/." "$work/bundle/rootfs/$2/"
  umoci repack --image "$layout:bench" "$work/bundle" >/dev/null
}
mkdir -p "$work/src/bin" "$work/src/etc"
cp /bin/busybox "$work/src/bin/busybox"
add_layer "$work/src/bin" /bin
add_layer /usr/lib/python3.11 /usr/lib/python3.11
add_layer /usr/share/perl /usr/share/perl
echo "bench" >"$work/src/etc/hostname"
add_layer "$work/src/etc" /etc
rm -rf "$work/bundle"
image=127.0.0.1:$port/bench:latest
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$layout:bench" "docker://$image"
echo "image: $image, $(du -sh "$work/registry" | cut -f1) in the registry, 4 layers"

# Interleaved rounds (husk, peer, husk, peer, ...) so that load from other work on the
# machine weighs on both sides alike; medians of wall time.
python3 - "$RUNS" "$HUSK" "$image" "$work" >"$work/result.txt" <<'PY'
import shutil, statistics, subprocess, sys, time
runs, husk, image, work = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
commands = {
    "husk": [[husk, "--root", f"{work}/husk-root", "pull", "-q", image]],
    "skopeo+umoci": [
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
         f"docker://{image}", f"oci:{work}/oci:latest"],
        ["umoci", "unpack", "--image", f"{work}/oci:latest", f"{work}/unpacked"],
    ],
}
def clean():
    for d in ("husk-root", "oci", "unpacked"):
        shutil.rmtree(f"{work}/{d}", ignore_errors=True)
    subprocess.run(["sync"], check=True)
times = {name: [] for name in commands}
for round in range(runs + 1):  # round 0 warms caches and is not counted
    for name, steps in commands.items():
        clean()
        start = time.monotonic()
        for step in steps:
            subprocess.run(step, check=True, stdout=subprocess.DEVNULL)
        if round:
            times[name].append(time.monotonic() - start)
for name, values in times.items():
    print(name, statistics.median(values), min(values), max(values))
PY
rm -rf "$work/husk-root"
"$HUSK" --root "$work/husk-root" pull -q "$image" >/dev/null
hyperfine -N --runs "$RUNS" --export-json "$work/second.json" \
  -n "husk second pull" "$HUSK --root $work/husk-root pull -q $image"

second_mean=$(jq '.results[0].mean' "$work/second.json")
python3 - "$work/result.txt" "$second_mean" "$RUNS" <<'PY'
import sys
rows = {line.split()[0]: list(map(float, line.split()[1:])) for line in open(sys.argv[1])}
second, runs = float(sys.argv[2]), sys.argv[3]
husk, peer = rows["husk"], rows["skopeo+umoci"]
print(f"{runs} interleaved rounds, wall time median (min..max):")
print(f"husk pull+unpack:      {husk[0]*1000:8.1f} ms ({husk[1]*1000:.0f}..{husk[2]*1000:.0f})")
print(f"skopeo copy + umoci:   {peer[0]*1000:8.1f} ms ({peer[1]*1000:.0f}..{peer[2]*1000:.0f})")
print(f"ratio husk/peer:       {husk[0]/peer[0]:8.2f}  ({'husk faster' if husk[0] < peer[0] else 'husk slower'})")
print(f"husk second pull:      {second*1000:8.1f} ms (manifest only)")
PY
