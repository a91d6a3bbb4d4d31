#!/bin/sh
# Build husk's guest kernel from Debian's linux-source package: tinyconfig + fragment.config,
# no modules. The result is cached under guest-kernel/cache/<hash>/ keyed by the source package
# version, the fragment and this script, so a second run is instant. Prints the path of the
# cached vmlinux on stdout (build logs go to stderr); bzImage, .config, kernel.release and
# config.sha256 sit next to it.
#
# Environment: HUSK_KERNEL_SOURCE (tarball, default Debian's linux-source-6.1),
#              HUSK_KERNEL_JOBS (default: nproc), HUSK_KERNEL_CACHE_DIR (default: ./cache).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src_tar=${HUSK_KERNEL_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
jobs=${HUSK_KERNEL_JOBS:-$(nproc)}

if [ ! -r "$src_tar" ]; then
    echo "guest-kernel: $src_tar not found: install Debian's linux-source-6.1 (apt-get install linux-source-6.1)" >&2
    exit 1
fi

pkg=$(dpkg -S "$src_tar" 2>/dev/null | cut -d: -f1 || true)
if [ -n "$pkg" ]; then
    src_version="$pkg $(dpkg-query -W -f='${Version}' "$pkg")"
else
    src_version="$(basename "$src_tar") $(stat -c %s "$src_tar")"
fi

key=$( { echo "$src_version"; cat "$here/fragment.config" "$here/build.sh"; } | sha256sum | cut -c1-16)
# HUSK_KERNEL_CACHE_DIR lets every clone on a machine share one build (scripts/setup.sh points
# it at /var/cache/husk/kernel-builds); the default keeps the cache inside this checkout.
cache=${HUSK_KERNEL_CACHE_DIR:-$here/cache}
out="$cache/$key"
if [ -f "$out/vmlinux" ] && [ -f "$out/config.sha256" ]; then
    echo "$out/vmlinux"
    exit 0
fi

mkdir -p "$cache"
# One build at a time per cache key: parallel test binaries all call this script.
exec 9>"$cache/.lock-$key"
flock 9
if [ -f "$out/vmlinux" ] && [ -f "$out/config.sha256" ]; then
    echo "$out/vmlinux"
    exit 0
fi

work="$cache/build-$key"
stage="$cache/stage-$key"
# A failed or interrupted build leaves no half-extracted tree behind.
trap 'rm -rf "$work" "$stage"' EXIT
rm -rf "$work"
mkdir -p "$work"
echo "guest-kernel: extracting $src_tar ($src_version)" >&2
tar -xf "$src_tar" -C "$work" --strip-components=1
cd "$work"
make -s ARCH=x86_64 tinyconfig >&2
./scripts/kconfig/merge_config.sh -m .config "$here/fragment.config" >&2
make -s ARCH=x86_64 olddefconfig >&2

# Every option the fragment sets must have survived olddefconfig: a silently dropped
# dependency would give a kernel that boots but cannot see its disks, and a =n that came back
# would bring probing (PCI, ACPI) the boot does not need.
bad=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$here/fragment.config" | while IFS= read -r want; do
    name=${want%%=*}
    case "$want" in
        *=n) if grep -q "^$name=" .config; then echo "$want"; fi ;;
        *) if ! grep -qx "$want" .config; then echo "$want"; fi ;;
    esac
done)
if [ -n "$bad" ]; then
    echo "guest-kernel: these fragment options did not survive olddefconfig (missing dependency?):" >&2
    echo "$bad" >&2
    exit 1
fi

echo "guest-kernel: building vmlinux + bzImage with -j$jobs" >&2
make -s ARCH=x86_64 -j"$jobs" vmlinux bzImage >&2

rm -rf "$stage"
mkdir -p "$stage"
cp vmlinux "$stage/vmlinux"
cp arch/x86/boot/bzImage "$stage/bzImage"
cp .config "$stage/config"
make -s ARCH=x86_64 kernelrelease > "$stage/kernel.release"
sha256sum .config | cut -d' ' -f1 > "$stage/config.sha256"
echo "$src_version" > "$stage/source.version"
rm -rf "$out"
mv "$stage" "$out"
cd "$here"
rm -rf "$work"
echo "$out/vmlinux"
