#!/usr/bin/env bash
# The main job on one node: install what is missing, build the minimal template, start the daemon
# (SQLite store under OPENVPS_HOME, default /var/lib/openvps), create and start an instance.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-host.sh
export OPENVPS_HOME=${OPENVPS_HOME:-/var/lib/openvps}
O="$PWD/.venv/bin/openvps"
NAME=${1:-demo}

if [ -f "$OPENVPS_HOME/daemon.pid" ] && kill -0 "$(cat "$OPENVPS_HOME/daemon.pid")" 2>/dev/null; then
  echo ">> daemon already running (pid $(cat "$OPENVPS_HOME/daemon.pid"))"
else
  mkdir -p "$OPENVPS_HOME/log"
  echo ">> starting the daemon (log: $OPENVPS_HOME/log/daemon.log)"
  setsid "$O" serve >>"$OPENVPS_HOME/log/serve.out" 2>&1 < /dev/null &
  for _ in $(seq 100); do [ -S "$OPENVPS_HOME/openvps.sock" ] && "$O" node --json >/dev/null 2>&1 && break; sleep 0.1; done
fi
"$O" template list --json | grep -q '"name": "minimal"' || "$O" template build minimal
if ! "$O" status "$NAME" --json >/dev/null 2>&1; then
  "$O" create --name "$NAME" --template minimal --ram 256M --swap 256M --start
else
  "$O" status "$NAME" --json | grep -q '"state": "running"' || "$O" start "$NAME"
fi
"$O" list
cat <<MSG

Instance '$NAME' is running. Reach it with:
  $O enter $NAME                  # an interactive shell (a real pty)
  $O exec $NAME -- ps             # one command, exit code passed through
More: $O --help    (OPENVPS_HOME=$OPENVPS_HOME)
A Debian 12 instance with systemd and sshd:
  $O template build debian-12 && $O create --name deb1 --template debian-12 --ssh-key ~/.ssh/id_ed25519.pub --start
MSG
