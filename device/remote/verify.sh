#!/bin/sh
# Re-hash the active bundle on the board against its SHA256SUMS.
#   sh verify.sh ROOT SUMS_NAME MARKER   -> "intact ID N" (exit 0), or the damaged files (exit 1)
root=$1 sums=$2 marker=$3
id=$(readlink "$root/current") || { echo "error: nothing deployed: $root/current does not exist; run invoke deploy" >&2; exit 3; }
cd "$root/$id" || { echo "error: $root/current points at $id, which is missing; run invoke deploy" >&2; exit 3; }
[ -f "$marker" ] || { echo "error: $root/$id is an unfinished install (no $marker); run invoke deploy" >&2; exit 3; }
if out=$(sha256sum -c --strict "$sums" 2>&1); then
  echo "intact $id $(wc -l < "$sums")"
else
  printf '%s\n' "$out" | grep -v -e ': OK$' -e '^sha256sum:'
  exit 1
fi
