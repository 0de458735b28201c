#!/bin/sh
# Board-emulator image installer (run once at image build time by docker/board-emulator.Dockerfile).
#
# Expects, in the directory of this script: ax_run_model.py, entrypoint.sh and axmodel.py (the Dockerfile
# copies pulsar2/axmodel.py there). Installs:
#   /opt/ax-emulator/{ax_run_model.py,axmodel.py,entrypoint.sh}
#   /opt/bin/ax_run_model            wrapper: exec $PYTHON /opt/ax-emulator/ax_run_model.py "$@"  (the board's path)
#   /usr/local/bin/ax_run_model      symlink, so a non-interactive ssh session finds it on the default PATH
#   /opt/bin/arecord, /usr/local/bin/{systemctl,journalctl}   the microphone and systemd EMULATORS
#   /opt/ax-emulator/axengine        pyaxengine's session API over ONNX Runtime (on the venv's path)
#   /usr/local/bin/python3           the venv's python (numpy, onnxruntime, axengine): a provisioned board
#   /etc/ax-board-emulator           marker file for people ("this is the AX630C board EMULATOR")
#   /etc/ssh/sshd_config.d/kws-board-emulator.conf   key-only root login, internal-sftp, StrictModes no
#   /root/.ssh (0700)                authorized_keys is provided at run time (mounted or $AUTHORIZED_KEYS)
# Host keys are NOT generated here (an image must not ship one key to every container): entrypoint.sh
# makes them at start unless one is mounted.
#
#   sh setup.sh [PYTHON]      PYTHON: interpreter with numpy + onnxruntime (default: python3 on PATH)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${1:-$(command -v python3)}
for f in ax_run_model.py axmodel.py entrypoint.sh arecord.py systemctl.py axengine/__init__.py; do
  [ -f "$here/$f" ] || { echo "setup.sh: $here/$f missing (copy pulsar2/axmodel.py beside setup.sh)" >&2; exit 2; }
done
"$python" -c "import numpy, onnxruntime" || { echo "setup.sh: $python lacks numpy/onnxruntime" >&2; exit 2; }
install -d -m 755 /opt/ax-emulator /opt/bin /usr/local/bin /etc/ssh/sshd_config.d /run/sshd
install -m 755 "$here/ax_run_model.py" /opt/ax-emulator/ax_run_model.py
install -m 644 "$here/axmodel.py" /opt/ax-emulator/axmodel.py
install -m 755 "$here/entrypoint.sh" /opt/ax-emulator/entrypoint.sh
install -m 755 "$here/arecord.py" /opt/ax-emulator/arecord.py
install -m 755 "$here/systemctl.py" /opt/ax-emulator/systemctl.py
install -d -m 755 /opt/ax-emulator/axengine /var/lib/ax-emulator /etc/systemd/system
install -m 644 "$here/axengine/__init__.py" /opt/ax-emulator/axengine/__init__.py
"$python" -c 'import site, sys; print(site.getsitepackages()[0])' | {
  read -r sp; echo /opt/ax-emulator > "$sp/ax-emulator.pth"; }
printf '#!/bin/sh\nexec %s /opt/ax-emulator/arecord.py "$@"\n' "$python" > /opt/bin/arecord
printf '#!/bin/sh\nexec %s /opt/ax-emulator/systemctl.py "$@"\n' "$python" > /usr/local/bin/systemctl
printf '#!/bin/sh\nexec %s /opt/ax-emulator/systemctl.py --journalctl "$@"\n' "$python" > /usr/local/bin/journalctl
chmod 755 /opt/bin/arecord /usr/local/bin/systemctl /usr/local/bin/journalctl
ln -sf /opt/bin/arecord /usr/local/bin/arecord
# A wrapper, not a symlink: a symlink to a venv's python resolves to the system python and loses the venv.
printf '#!/bin/sh\nexec %s "$@"\n' "$python" > /usr/local/bin/python3
chmod 755 /usr/local/bin/python3
printf '#!/bin/sh\nexec %s /opt/ax-emulator/ax_run_model.py "$@"\n' "$python" > /opt/bin/ax_run_model
chmod 755 /opt/bin/ax_run_model
ln -sf /opt/bin/ax_run_model /usr/local/bin/ax_run_model
printf 'AX630C board EMULATOR: ax_run_model runs EMULATED axmodels with ONNX Runtime on the CPU; no NPU.\n' > /etc/ax-board-emulator
cat > /etc/ssh/sshd_config.d/kws-board-emulator.conf <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
PrintLastLog no
Subsystem sftp internal-sftp
CONF
# Debian's sshd_config has its own "Subsystem sftp" line; two Subsystem lines are an error.
sed -i 's/^Subsystem[[:space:]]\+sftp.*$/# &  (replaced by sshd_config.d\/kws-board-emulator.conf)/' /etc/ssh/sshd_config
rm -f /etc/ssh/ssh_host_*
: > /var/log/lastlog  # sshd records pty logins there and complains on every `invoke listen` without it
install -d -m 700 /root/.ssh
"$python" /opt/ax-emulator/ax_run_model.py --help | grep -q EMULATOR
"$python" -c 'import axengine; assert axengine.EMULATOR'
/usr/local/bin/python3 -c 'import numpy, axengine' || { echo "setup.sh: python3 on PATH lacks numpy/axengine" >&2; exit 2; }
echo "board emulator installed: /opt/bin/ax_run_model ($python)"
