#!/bin/sh
# Point ROOT/current at bundle ID (rename of a new symlink: atomic).
#   sh activate.sh ROOT ID
root=$1 id=$2
ln -sfn "$id" "$root/.current-$$" && mv -T "$root/.current-$$" "$root/current"
