#!/bin/sh
# Board-emulator container entry: host key (mounted, or made now), authorized_keys (mounted at
# /root/.ssh/authorized_keys, or from $AUTHORIZED_KEYS), enabled services, then sshd in the foreground on port 22.
set -eu
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
if [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
  ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
if [ -n "${AUTHORIZED_KEYS:-}" ]; then
  printf '%s\n' "$AUTHORIZED_KEYS" > /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
fi
[ -s /root/.ssh/authorized_keys ] || echo "entrypoint: no authorized_keys (mount one or set AUTHORIZED_KEYS)" >&2
systemctl --boot  # the enabled services start, as at boot (the systemd EMULATOR's supervisor)
exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key
