#!/bin/sh
# Run the board runtime of the active bundle in the foreground (events on stdout), then remove the WAV
# that `invoke listen --wav` uploaded. A signal (Ctrl-C forwarded through the pty, a dropped connection's
# SIGHUP) reaches the runtime, which stops its capture and exits; this shell cleans up after it.
#   sh listen.sh ROOT WAV|"" [listen.py options...]
root=$1 wav=$2
shift 2
rt="$root/current/runtime"
if [ ! -f "$rt/runtime.json" ]; then
  echo "error: $rt/runtime.json not found: the active bundle has no board runtime; run \`make all\`, then \`invoke deploy\`" >&2
  exit 3
fi
py=$(command -v python3) || { echo "error: python3 not found on the board: apt-get install python3 python3-numpy" >&2; exit 3; }
trap 'if [ -n "$wav" ]; then rm -f "$wav"; fi' EXIT
trap 'stopped=1' INT TERM HUP
if [ -n "$wav" ]; then set -- --wav "$wav" "$@"; fi
"$py" "$rt/listen.py" --bundle "$root/current" "$@"
rc=$?
if [ "${stopped:-0}" = 1 ] && [ "$rc" -eq 0 ]; then rc=130; fi
exit "$rc"
