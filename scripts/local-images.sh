#!/usr/bin/env bash
# Builds local `busybox:latest` and `hello-world:latest` images for hosts that cannot reach
# Docker Hub, from the host's busybox-static and a static hello program, with `husk import`.
#
# Usage: scripts/local-images.sh HUSK_BINARY [husk global flags...]
set -euo pipefail
husk=$1; shift
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/husk-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# busybox: the static binary plus one symlink per applet, as the official image has.
rootfs=$work/busybox
mkdir -p "$rootfs"/{bin,etc,tmp,root,home,var/spool/mail,proc,sys,dev}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$work/busybox.tar" .
"$husk" "$@" import --change 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null

# hello-world: one static program, like Docker's.
mkdir -p "$work/hello"
gcc -static -Os -s -o "$work/hello/hello" "$here/images/hello.c"
tar --numeric-owner --owner=0 --group=0 -C "$work/hello" -cf "$work/hello.tar" hello
"$husk" "$@" import --change 'CMD ["/hello"]' "$work/hello.tar" hello-world:latest >/dev/null
echo "built local images busybox:latest and hello-world:latest"
