#!/usr/bin/env bash
# Install what the toolchain needs on a Debian/Ubuntu host (run as root or with sudo available).
#   bash install.sh            Python packages + espeak-ng, sox, openssh-server
#   bash install.sh --docker   also Docker (docker.io) and start its daemon, for RUNNER=docker
set -euo pipefail
cd "$(dirname "$0")"
with_docker=0
for arg in "$@"; do
  case "$arg" in
    --docker) with_docker=1 ;;
    *) echo "install.sh: unknown option $arg (known: --docker)" >&2; exit 2 ;;
  esac
done
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
pkgs=(espeak-ng sox openssh-server make)
[ "$with_docker" -eq 1 ] && pkgs+=(docker.io debootstrap)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "install.sh: pip install -r requirements.txt"
python3 -m pip install -q -r requirements.txt
if [ "$with_docker" -eq 1 ]; then
  python3 -m invoke docker.start
fi
echo "install.sh: done. Next: make all"
