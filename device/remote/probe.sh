#!/bin/sh
# One round trip before a deploy, eval-npu or bench: prepare ROOT, find ax_run_model (is it the EMULATOR?),
# is bundle ID installed (and, with CHECK=1, intact against its SHA256SUMS), free space, host facts.
#   sh probe.sh ROOT ID MKDIR(0|1) CHECK(0|1) MARKER SUMS   -> key=value lines
root=$1 id=$2 mk=$3 check=$4 marker=$5 sums=$6
if [ -d "$root" ] && [ -n "$(find "$root" -maxdepth 0 -perm -0002 2>/dev/null)" ]; then
  echo "$root is writable by every user of the board: any of them could replace what the board runs; use a" \
       "directory only its owner can write (--remote-root /opt/kws, the default) or chmod o-w it" >&2
  exit 4
fi
if [ -d "$root" ] && [ "$(stat -c %u "$root")" != "$(id -u)" ]; then
  echo "$root belongs to another user of the board; use a directory of your own (--remote-root)" >&2
  exit 4
fi
if [ "$mk" = 1 ]; then
  mkdir -p "$root/.incoming" || exit 3
  find "$root/.incoming" -maxdepth 1 -type f -mmin +60 -exec rm -f {} + 2>/dev/null  # uploads cut off long ago
fi
ax=$(command -v ax_run_model 2>/dev/null || true)
if [ -z "$ax" ] && [ -x /opt/bin/ax_run_model ]; then ax=/opt/bin/ax_run_model; fi
echo "ax_run_model=$ax"
emu=0
if [ -n "$ax" ] && "$ax" --help 2>&1 | grep -q EMULATOR; then emu=1; fi
echo "emulator=$emu"
if [ ! -f "$root/$id/$marker" ]; then
  echo "bundle=absent"
elif [ "$check" != 1 ] || bad=$(cd "$root/$id" && sha256sum -c --quiet --strict "$sums" 2>&1); then
  echo "bundle=present"
else  # the board's copy changed since it was installed: it will be replaced
  echo "bundle=damaged"
  echo "damaged=$(printf '%s' "$bad" | grep -v '^sha256sum:' | tr '\n' ';')"
fi
echo "current=$(readlink "$root/current" 2>/dev/null || true)"
echo "avail_kb=$(df -Pk "$root" 2>/dev/null | awk 'NR==2 {print $4}')"
echo "hostname=$(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null)"
echo "arch=$(uname -m)"
