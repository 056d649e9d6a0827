#!/usr/bin/env bash
# Builds the image `warren:local` on a machine that cannot pull base images:
# builds `warren` with cargo here, assembles a root filesystem from the
# binary and the shared libraries `ldd` lists (plus /tmp, a data directory
# and a passwd entry for the non-root user), and `docker build`s it FROM
# scratch (Dockerfile.local). The image is the one partition-test.sh runs.
#
#   deploy/docker/build-local-image.sh             debug build (fast to compile; fine for tests)
#   deploy/docker/build-local-image.sh --release   release build
#
# CARGO_TARGET_DIR is honoured (default: ./target); IMAGE overrides the tag.
# The image for users is deploy/docker/Dockerfile (multi-stage, needs a registry).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=debug
cargo_flags=()
if [ "${1:-}" = --release ]; then profile=release; cargo_flags=(--release); fi
image=${IMAGE:-warren:local}
target=${CARGO_TARGET_DIR:-target}

cargo build -q "${cargo_flags[@]}" -p warren-server --bin warren
bin=$target/$profile/warren

ctx=$target/docker-context
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc" "$ctx/data"
chmod 1777 "$ctx/rootfs/tmp"
# The image carries the binary without its debug info (a debug build's is
# ~300 MB of it); a release build's debug info is kept beside the target
# directory for symbolising a core or a perf profile taken in a container.
strip --strip-debug -o "$ctx/rootfs/usr/local/bin/warren" "$bin"
if [ "$profile" = release ]; then
  objcopy --only-keep-debug "$bin" "$target/$profile/warren.debug"
  echo "debug info of the image's binary: $target/$profile/warren.debug"
fi
# Each library at the path the dynamic loader looks for it (the loader itself included).
ldd "$bin" | awk '$3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
# glibc >= 2.34 has the files and dns NSS modules built in: with no
# nsswitch.conf it reads /etc/hosts and /etc/resolv.conf (both provided by
# docker), which is all `warren` needs to resolve peer names.
# The same user as the distroless image of ./Dockerfile and the Kubernetes
# manifest: nonroot, 65532.
printf 'root:x:0:0:root:/:/nonexistent\nnonroot:x:65532:65532:nonroot:/home/nonroot:/nonexistent\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ctx/rootfs/etc/group"
cp deploy/docker/Dockerfile.local "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx" >/dev/null
echo "built $image from $bin ($(du -sh "$ctx/rootfs" | cut -f1) rootfs)"
