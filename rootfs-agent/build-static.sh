#!/bin/sh
# Build the guest agent as a static x86_64 binary (glibc, crt-static: no musl target is
# needed) and print its path. Only the agent is built for the explicit --target, so RUSTFLAGS
# do not touch the host build's artifacts. Environment: HUSK_AGENT_PROFILE (default release).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
profile=${HUSK_AGENT_PROFILE:-release}
target=x86_64-unknown-linux-gnu
cd "$here/.."
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
    cargo build -q -p rootfs-agent --bin rootfs-agent --target "$target" --profile "$profile" >&2
dir=$profile
[ "$profile" = dev ] && dir=debug
bin="${CARGO_TARGET_DIR:-$here/../target}/$target/$dir/rootfs-agent"
if ! file -L "$bin" | grep -qE 'statically linked|static-pie linked'; then
    echo "rootfs-agent: $bin is not statically linked" >&2
    exit 1
fi
echo "$(cd "$(dirname "$bin")" && pwd)/rootfs-agent"
