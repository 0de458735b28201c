#!/bin/sh
# A damaged (or, with --force, any) installed copy loses its completion marker, so the install replaces it.
#   sh unmark.sh ROOT ID MARKER
root=$1 id=$2 marker=$3
rm -f "$root/$id/$marker"
