"""Crash points for tests: OPENVPS_FAULT=<name> makes the daemon SIGKILL itself there, so tests can
prove that a real `kill -9` in the middle of an operation loses nothing (crash-only design)."""
from __future__ import annotations

import os
import signal

_ACTIVE = os.environ.get("OPENVPS_FAULT", "")


def point(name: str) -> None:
    if _ACTIVE and _ACTIVE == name:
        os.kill(os.getpid(), signal.SIGKILL)
