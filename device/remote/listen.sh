#!/bin/sh
# Run the board runtime of the active bundle (events on stdout), then remove the WAV that `invoke listen --wav`
# uploaded. Ctrl-C (forwarded through the pty) and a dropped connection (SIGHUP to this shell, the session
# leader) are passed on to the runtime as SIGTERM, so it stops its capture and exits: nothing is left running.
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
if [ -n "$wav" ]; then set -- --wav "$wav" "$@"; fi
# the trap is set before the runtime starts: a signal in between would end this shell and orphan the runtime
# (a background job of a non-interactive shell ignores SIGINT), leaving the connection open
child=
trap 'stopped=1; if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi' INT TERM HUP
"$py" "$rt/listen.py" --bundle "$root/current" "$@" &
child=$!
if [ "${stopped:-0}" = 1 ]; then kill -TERM "$child" 2>/dev/null; fi
rc=0
wait "$child" || rc=$?
while kill -0 "$child" 2>/dev/null; do  # a trapped signal ended the wait, not the runtime
  rc=0
  wait "$child" || rc=$?
done
if [ "${stopped:-0}" = 1 ] && [ "$rc" -eq 0 ]; then rc=130; fi
exit "$rc"
