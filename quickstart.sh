#!/usr/bin/env bash
# The main job on one node: install what is missing, build the minimal template, start the daemon
# (SQLite store under OPENVPS_HOME, default /var/lib/openvps), create and start an instance.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-host.sh
export OPENVPS_HOME=${OPENVPS_HOME:-/var/lib/openvps}
O="$PWD/.venv/bin/openvps"
NAME=${1:-demo}

# The node's network lives in a namespace of its own, with an uplink into an "upstream" namespace
# standing in for the internet; the host's own network is never changed. (On a real server, point
# node_netns at a namespace holding the real uplink, or at "host".)
UP=ovps-demo-up NODE=ovps-demo-node
if ! ip netns list | grep -qw "$NODE"; then
  echo ">> creating the network namespaces $NODE (the node) and $UP (upstream)"
  ip netns add "$UP"; ip netns add "$NODE"
  ip -n "$UP" link add up0 type veth peer name uplink0 netns "$NODE"
  ip -n "$UP" addr add 192.0.2.1/24 dev up0; ip -n "$UP" link set up0 up; ip -n "$UP" link set lo up
  ip -n "$NODE" addr add 192.0.2.2/24 dev uplink0; ip -n "$NODE" link set uplink0 up; ip -n "$NODE" link set lo up
  ip -n "$NODE" route add default via 192.0.2.1
fi
export OPENVPS_NODE_NETNS=$NODE OPENVPS_UPLINK=uplink0 OPENVPS_PUBLIC_POOL=192.0.2.100-192.0.2.109
# the REST API and dashboard on loopback TCP (tokens or passwords), the EC2 API on its own port
export OPENVPS_LISTEN=${OPENVPS_LISTEN:-127.0.0.1:8443} OPENVPS_EC2_LISTEN=${OPENVPS_EC2_LISTEN:-127.0.0.1:8773}

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
# a web server in the instance, reachable through a port forward of the node
"$O" exec "$NAME" -- sh -c 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html &&
  (pidof httpd >/dev/null || busybox httpd -p 80 -h /www)'
"$O" forward list --json | grep -q '"port": 8080' || "$O" forward add "$NAME" tcp 8080:80
"$O" list
echo ">> from upstream: $(ip netns exec "$UP" wget -qO- -T 3 http://192.0.2.2:8080/ || echo 'no answer?')"
cat <<MSG

Instance '$NAME' is running. Reach it with:
  $O enter $NAME                  # an interactive shell (a real pty)
  $O exec $NAME -- ps             # one command, exit code passed through
  ip netns exec $UP wget -qO- http://192.0.2.2:8080/     # its web server, through the forward, from "upstream"
More: $O --help    (OPENVPS_HOME=$OPENVPS_HOME; the node network is in namespace $NODE)
A Debian 12 instance with systemd and sshd, reachable with ssh through a forward:
  $O template build debian-12
  $O create --name deb1 --template debian-12 --ssh-key ~/.ssh/id_ed25519.pub --start
  $O forward add deb1 tcp 2222:22
  ip netns exec $UP ssh -p 2222 -i ~/.ssh/id_ed25519 root@192.0.2.2
The web dashboard: http://$OPENVPS_LISTEN/  (log in as admin with a token: $O token create admin,
  or give a user a password: $O user create alice --password)
The EC2 API for boto3 / the AWS CLI: $O user keys create admin, then
  aws --endpoint-url http://$OPENVPS_EC2_LISTEN --region openvps-1 ec2 describe-instances
Clean up: destroy the instances, stop the daemon (kill \$(cat $OPENVPS_HOME/daemon.pid)), then
  ip netns del $NODE; ip netns del $UP
MSG
