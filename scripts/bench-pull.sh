#!/usr/bin/env bash
# Pull + unpack of a multi-layer image from a local registry: husk against `skopeo copy` +
# `umoci unpack` of the same image, same machine, same run (hyperfine). Prints both means and
# the ratio (husk / skopeo+umoci; below 1.0 means husk is faster), then husk's second pull
# of the same image, which fetches only the manifest.
#
# Needs: docker-registry, skopeo, umoci, hyperfine, busybox-static, python3 (image content).
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

hyperfine --runs "$RUNS" --warmup 1 --export-json "$work/result.json" \
  --prepare "rm -rf $work/husk-root" \
  -n husk "$HUSK --root $work/husk-root pull -q $image" \
  --prepare "rm -rf $work/oci $work/unpacked" \
  -n skopeo+umoci "skopeo --insecure-policy copy --quiet --src-tls-verify=false docker://$image oci:$work/oci:latest && umoci unpack --image $work/oci:latest $work/unpacked"

rm -rf "$work/husk-root"
"$HUSK" --root "$work/husk-root" pull -q "$image" >/dev/null
hyperfine --runs "$RUNS" --export-json "$work/second.json" \
  -n "husk second pull" "$HUSK --root $work/husk-root pull -q $image"

husk_mean=$(jq '.results[] | select(.command=="husk") | .mean' "$work/result.json")
peer_mean=$(jq '.results[] | select(.command=="skopeo+umoci") | .mean' "$work/result.json")
second_mean=$(jq '.results[0].mean' "$work/second.json")
python3 - "$husk_mean" "$peer_mean" "$second_mean" <<'PY'
import sys
husk, peer, second = map(float, sys.argv[1:])
print(f"husk pull+unpack:      {husk*1000:8.1f} ms")
print(f"skopeo copy + umoci:   {peer*1000:8.1f} ms")
print(f"ratio husk/peer:       {husk/peer:8.2f}  ({'husk faster' if husk < peer else 'husk slower'})")
print(f"husk second pull:      {second*1000:8.1f} ms (manifest only)")
PY
