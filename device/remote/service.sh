#!/bin/sh
# The board runtime as a systemd service.
#   sh service.sh probe ROOT NAME          python3 path, unit folder, whether the runtime is deployed
#   sh service.sh enable ROOT NAME UNIT    write the unit file (text UNIT), enable it, start it now
#   sh service.sh status ROOT NAME         systemctl status + the last journal lines
#   sh service.sh disable ROOT NAME        stop it, disable it, remove the unit file
action=$1 root=$2 name=$3
unit_dir=${KWS_UNIT_DIR:-/etc/systemd/system}
unit="$unit_dir/$name.service"
fail() { echo "error: $*" >&2; exit 3; }
command -v systemctl >/dev/null 2>&1 || fail "systemctl not found: the board runs no systemd"
case $action in
  probe)
    echo "python3=$(command -v python3 || true)"
    echo "unit_dir=$unit_dir"
    if [ -f "$root/current/runtime/runtime.json" ]; then echo "runtime=present"; else echo "runtime=absent"; fi
    ;;
  enable)
    mkdir -p "$unit_dir" || fail "cannot create $unit_dir"
    printf '%s\n' "$4" > "$unit.tmp.$$" || fail "cannot write $unit.tmp.$$"
    mv -f "$unit.tmp.$$" "$unit" || fail "cannot write $unit"
    systemctl daemon-reload || fail "systemctl daemon-reload failed"
    systemctl enable --now "$name.service" || fail "systemctl enable --now $name.service failed"
    sleep 1
    systemctl is-active "$name.service" >/dev/null || {
      journalctl -u "$name.service" -n 20 --no-pager >&2
      fail "$name.service did not stay active (journal above)"; }
    echo "enabled $unit"
    ;;
  status)
    systemctl status "$name.service" --no-pager --lines=0  # the journal follows, once
    rc=$?
    echo
    journalctl -u "$name.service" -n 20 --no-pager
    exit "$rc"
    ;;
  disable)
    systemctl disable --now "$name.service" || fail "systemctl disable --now $name.service failed"
    rm -f "$unit"
    systemctl daemon-reload
    echo "disabled and removed $unit"
    ;;
  *)
    fail "unknown action $action"
    ;;
esac
