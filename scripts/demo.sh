#!/usr/bin/env bash
# husk's main job, start to finish: set up the machine, then walk through Docker's getting-
# started steps with both isolations, printing each command before running it.
#
# Usage (as root, on Debian 12): scripts/demo.sh
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || exit 1
husk_bin=$PWD/target/release/husk
husk() { "$husk_bin" "$@"; }
say() { printf '\n\033[1m$ husk %s\033[0m\n' "$*"; }
step() { say "$@"; husk "$@"; echo "(exit $?)"; }

echo
echo "== images"
if husk pull -q hello-world >/dev/null 2>&1 && husk pull -q busybox >/dev/null 2>&1; then
  echo "pulled hello-world and busybox from Docker Hub"
else
  echo "Docker Hub is not reachable from here: building local hello-world and busybox images"
  echo "from the host's busybox-static (scripts/local-images.sh)"
  ./scripts/local-images.sh "$husk_bin"
fi
step images

for isolation in process vm; do
  echo
  echo "== --isolation $isolation"
  if [ "$isolation" = vm ] && ! husk info | grep -q "^VM isolation: *available"; then
    husk info | grep "^VM isolation"
    echo "husk's own monitor cannot boot the guest on this host, so this walkthrough runs the"
    echo "same guest kernel, agent and disks under QEMU instead (HUSK_VMM=qemu)."
    export HUSK_VMM=qemu
  fi
  export HUSK_ISOLATION=$isolation
  step run hello-world
  step run busybox
  step run busybox echo "hello from busybox"
  step ps
  step ps -a
  say 'run -i busybox sh   (typing: uname -r; exit; -it needs a terminal, this script has none)'
  printf 'uname -r\nexit\n' | husk run -i busybox sh; echo "(exit $?)"
  id=$(husk ps -a -q -n 1)
  step rm "$id"
  say 'rm $(husk ps -a -q -f status=exited)'
  husk rm $(husk ps -a -q -f status=exited); echo "(exit $?)"
  step ps -a
done

echo
echo "== cleaning up"
step rmi busybox
step rmi hello-world
