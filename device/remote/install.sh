#!/bin/sh
# Install an uploaded bundle archive atomically: check its sha256, unpack into a staging dir, check every file
# against SUMS, mark it complete, rename it into place, point ROOT/current at it.
#   sh install.sh ROOT ID ARCHIVE SHA256 MARKER SUMS
set -u
root=$1 id=$2 archive=$3 want=$4 marker=$5 sums=$6
stage="$root/.staging-$id-$$"
fail() { echo "error: $*" >&2; rm -rf "$stage" "$archive"; exit 3; }
got=$(sha256sum "$archive" | cut -d' ' -f1) || fail "cannot read the uploaded archive $archive"
[ "$got" = "$want" ] || fail "uploaded archive sha256 $got differs from the local $want (damaged in transfer)"
mkdir -p "$stage" || fail "cannot create $stage"
tar -xzf "$archive" -C "$stage" || fail "cannot unpack $archive"
bad=$(cd "$stage/$id" && sha256sum -c --quiet --strict "$sums" 2>&1) || fail "sha256 check failed on the board: $bad"
: > "$stage/$id/$marker" || fail "cannot write the completion marker"
if [ -f "$root/$id/$marker" ]; then
  echo "already present (installed concurrently)"
else
  if [ -e "$root/$id" ]; then
    mv -T "$root/$id" "$stage/replaced" || fail "cannot move the incomplete $root/$id aside"
  fi
  # a concurrent installer of the same bundle (two names for one board) may have moved its copy in first
  mv -T "$stage/$id" "$root/$id" || [ -f "$root/$id/$marker" ] || fail "cannot move the bundle into place"
fi
ln -sfn "$id" "$root/.current-$$" || fail "cannot write $root/.current-$$"
mv -T "$root/.current-$$" "$root/current" || fail "cannot update $root/current"
rm -rf "$stage" "$archive"
echo "installed $root/$id"
