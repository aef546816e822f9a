#!/usr/bin/env bash
# The whole test suite: unit tests (fakes) and integration tests (root, real runc, overlayfs,
# cgroups, systemd in Debian 12, real OpenSSH). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-host.sh --test
exec .venv/bin/python -m pytest tests "$@"
