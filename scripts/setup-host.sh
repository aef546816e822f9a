#!/usr/bin/env bash
# Install what openvps needs on a Debian 12 host (as root), and the Python package into .venv.
# Idempotent: only installs what is missing. Usage: scripts/setup-host.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "openvps needs root (runc, mounts, cgroups): run as root" >&2
  exit 1
fi

need=()
# command:package
for pair in runc:runc debootstrap:debootstrap zstd:zstd ssh-keygen:openssh-client ssh:openssh-client \
            ip:iproute2 nft:nftables nsenter:util-linux ps:procps tar:tar lxcfs:lxcfs; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# the minimal template copies the host's busybox into instances: it must be the static build
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need+=(busybox-static)
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then need+=(python3 python3-venv); fi
if command -v "$PY" >/dev/null 2>&1 && ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then need+=(python3-venv); fi
# the web dashboard's browser libraries come from the npm registry at build time (below)
for pair in node:nodejs npm:npm; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# browser tests drive the machine's Chromium (never a downloaded browser build)
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then need+=(chromium); fi
if [ ${#need[@]} -gt 0 ]; then
  echo ">> installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "openvps needs Python >= 3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv"
  "$PY" -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
stamp=".venv/.installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo ">> installing openvps$extra into .venv"
  # (filter the machine-wide pip config's noise about missing local indexes)
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra" 2> >(grep -v '^WARNING: Location' >&2)
  touch "$stamp"
fi

# the dashboard's vendored browser libraries (xterm.js): npm ci from web/package-lock.json, then
# copied where the daemon serves them (src/openvps/web/static/vendor, not committed)
vendor=src/openvps/web/static/vendor
if [ ! -f "$vendor/xterm.js" ] || [ web/package-lock.json -nt "$vendor/xterm.js" ]; then
  echo ">> installing the dashboard's browser libraries (npm ci)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  mkdir -p "$vendor"
  cp web/node_modules/@xterm/xterm/lib/xterm.js web/node_modules/@xterm/xterm/css/xterm.css \
     web/node_modules/@xterm/addon-fit/lib/addon-fit.js "$vendor/"
fi
