#!/usr/bin/env bash
# Build a local Debian bookworm base image for machines that cannot pull from a registry:
# debootstrap (minbase + python3, python3-venv, ca-certificates) -> `docker import`.
#
#   bash docker/base-image.sh [NAME:TAG]        (default kws-base:bookworm; run as root)
#   make all BASE_IMAGE=kws-base:bookworm        then build the project images on it
#
# The image has no CMD/ENV beyond what `docker import --change` sets below, and nothing from this host
# (no CA files, no pip config): debootstrap writes a plain Debian root file system.
# Environment: MIRROR (default http://deb.debian.org/debian), DOCKER (default docker).
set -euo pipefail

name="${1:-kws-base:bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
docker_bin="${DOCKER:-docker}"

if [ "$(id -u)" -ne 0 ]; then
  echo "error: base-image.sh: debootstrap needs root; run it as root (sudo bash docker/base-image.sh)" >&2
  exit 2
fi
if ! command -v debootstrap >/dev/null; then
  echo "error: base-image.sh: debootstrap not found; apt-get install -y debootstrap" >&2
  exit 2
fi

work="$(mktemp -d /tmp/kws-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "base-image.sh: debootstrap bookworm ($mirror) -> $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  echo "error: base-image.sh: debootstrap failed (log above); check that $mirror is reachable" >&2
  exit 1
}
# Smaller and more reproducible: no apt lists or caches, no logs from the bootstrap itself.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/* "$rootfs"/tmp/*

echo "base-image.sh: docker import -> $name"
tar --numeric-owner -C "$rootfs" -c . | "$docker_bin" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap bookworm minbase + python3, python3-venv, ca-certificates (docker/base-image.sh)" \
  - "$name" >/dev/null
"$docker_bin" run --rm "$name" python3 -c 'import sys, venv; print("base-image.sh: smoke test: python", sys.version.split()[0])'
echo "base-image.sh: built $name"
