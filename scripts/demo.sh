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

# Containers join husk's default network, `bridge`, as with Docker. Its bridge, addresses and
# NAT rules live in a network namespace made for this demo (deleted at the end), never in the
# machine's own; the commands below run husk inside it, and curl reaches published ports on
# 127.0.0.1 there.
netns=husk-demo-$$
ip netns add "$netns" || exit 1
trap 'ip netns delete "$netns" 2>/dev/null' EXIT
ip -n "$netns" link set lo up
husk() { nsenter --net="/run/netns/$netns" -- "$husk_bin" "$@"; }
echo
echo "(containers run in network namespace $netns)"

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
  # Docker's next step: a server on a published port, reached from the host.
  say "run -d --name web -p 8080:80 busybox sh -c '... httpd -f -p 80 -h /www'"
  husk run -d --name web -p 8080:80 busybox \
    sh -c 'mkdir -p /www && echo "hello from a container on kernel $(uname -r)" > /www/index.html && exec httpd -f -p 80 -h /www'
  echo "(exit $?)"
  step port web
  printf '\n\033[1m$ curl http://127.0.0.1:8080/\033[0m\n'
  for _ in $(seq 1 60); do
    page=$(nsenter --net="/run/netns/$netns" -- curl -s --max-time 2 http://127.0.0.1:8080/) && break
    sleep 1
  done
  echo "${page:-(no answer)}"
  step rm -f web
done

echo
echo "== cleaning up"
step rmi busybox
step rmi hello-world
