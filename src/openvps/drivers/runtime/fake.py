"""An in-memory runtime for unit tests: the Runtime interface without runc, namespaces or cgroups.

It keeps the same rules runc does (one container per id, no delete of a running container
without force, pause/resume only from the right state, no exec in a paused or stopped
container) so the service's use of the interface is checked, not just exercised.

Knobs (constructor arguments or attributes, changeable during a test):
  ignore_term  the init ignores its stop signal; only SIGKILL stops it (the kill-after-timeout path)
  fail_run     `run` fails the way `runc run` does (DriverError, no state left behind)

`exec` starts a real, harmless host process: argv through `/bin/sh -c 'exec "$@"'` with the
container's rootfs as working directory. `hostname NAME` is emulated (it would rename the host).
"""
from __future__ import annotations

import copy
import itertools
import os
import subprocess
import threading
from pathlib import Path

from ...domain.errors import DriverError
from .base import Runtime, Spec

KILL = {"SIGKILL", "KILL", "9"}


class FakeRuntime(Runtime):
    name = "fake"
    capabilities = frozenset({"freeze", "live_update", "exec", "tty"})

    def __init__(self, root: Path | str | None = None, binary: str | None = None, *,
                 ignore_term: bool = False, fail_run: bool = False):
        self.ignore_term = ignore_term
        self.fail_run = fail_run
        self.containers: dict[str, dict] = {}      # cid -> {status, pid, spec, limits, cpuset, hostname}
        self.runs: list[Spec] = []                 # every successful run, in order
        self.kills: list[tuple[str, str]] = []     # (cid, signal)
        self.waits: list[tuple[str, float]] = []   # (cid, timeout)
        self.updates: list[tuple[str, dict, str]] = []   # (cid, limits, cpuset)
        self.execs: list[tuple[str, list[str], bool]] = []
        self._pids = itertools.count(40000)
        self._lock = threading.Lock()

    # ---- helpers for tests
    def crash(self, cid: str) -> None:
        """The init died on its own (the container stays known to the runtime as stopped)."""
        with self._lock:
            self.containers[cid]["status"] = "stopped"
            self.containers[cid]["pid"] = 0

    def _get(self, cid: str, what: str) -> dict:
        c = self.containers.get(cid)
        if c is None:
            raise DriverError(f"runc {what} failed: container {cid} does not exist", runc=[what, cid])
        return c

    # ---- the interface
    def run(self, spec: Spec, before_start=None, meanwhile=None) -> int:
        if meanwhile:
            meanwhile()
        with self._lock:
            if spec.cid in self.containers:
                raise DriverError(f"runc could not start {spec.cid}: container with id exists: {spec.cid}")
            if self.fail_run:
                raise DriverError(f"runc could not start {spec.cid}: fake runtime told to fail")
            if not spec.rootfs.is_dir():
                raise DriverError(f"runc could not start {spec.cid}: rootfs {spec.rootfs} does not exist")
            pid = next(self._pids)
            self.containers[spec.cid] = {"status": "running", "pid": pid, "spec": copy.deepcopy(spec),
                                         "limits": dict(spec.limits), "cpuset": spec.cpuset,
                                         "hostname": spec.hostname}
            self.runs.append(copy.deepcopy(spec))
        if before_start:
            try:
                before_start(pid)
            except Exception:
                with self._lock:
                    self.containers.pop(spec.cid, None)
                raise
        return pid

    def state(self, cid: str) -> dict | None:
        with self._lock:
            c = self.containers.get(cid)
            return {"status": c["status"], "pid": c["pid"]} if c else None

    def list(self) -> dict[str, dict]:
        with self._lock:
            return {cid: {"status": c["status"], "pid": c["pid"]} for cid, c in self.containers.items()}

    def kill(self, cid: str, signal: str) -> None:
        with self._lock:
            self.kills.append((cid, signal))
            c = self.containers.get(cid)
            if c is None or c["status"] == "stopped":
                return   # runc: "not running" / "does not exist" are not errors for kill
            if signal in KILL:
                c["status"], c["pid"] = "stopped", 0
            elif c["status"] == "paused" or self.ignore_term:
                return   # a frozen init cannot handle its stop signal; a stubborn one ignores it
            else:
                c["status"], c["pid"] = "stopped", 0

    def wait_stopped(self, cid: str, timeout: float, pid: int | None = None) -> bool:
        with self._lock:
            self.waits.append((cid, timeout))
            c = self.containers.get(cid)
            return c is None or c["status"] == "stopped"

    def delete(self, cid: str, force: bool = False) -> None:
        with self._lock:
            c = self.containers.get(cid)
            if c is None:
                return
            if c["status"] != "stopped" and not force:
                raise DriverError(f"runc delete {cid} failed: cannot delete container {cid} that is not stopped: "
                                  f"{c['status']}")
            del self.containers[cid]

    def pause(self, cid: str) -> None:
        with self._lock:
            c = self._get(cid, "pause")
            if c["status"] != "running":
                raise DriverError(f"runc pause failed: container not running ({c['status']})")
            c["status"] = "paused"

    def resume(self, cid: str) -> None:
        with self._lock:
            c = self._get(cid, "resume")
            if c["status"] != "paused":
                raise DriverError(f"runc resume failed: container not paused ({c['status']})")
            c["status"] = "running"

    def update(self, cid: str, spec: Spec) -> None:
        with self._lock:
            c = self._get(cid, "update")
            if c["status"] not in ("running", "paused"):
                raise DriverError(f"runc update failed: container {cid} is {c['status']}")
            c["limits"], c["cpuset"] = dict(spec.limits), spec.cpuset
            self.updates.append((cid, dict(spec.limits), spec.cpuset))

    def exec(self, cid, argv, *, tty, env=None, cwd=None, stdin=None, stdout=None, stderr=None, preexec_fn=None):
        with self._lock:
            self.execs.append((cid, list(argv), tty))
            c = self.containers.get(cid)
            status = c["status"] if c else None
            if status == "running" and argv[:1] == ["hostname"]:
                if len(argv) > 1:
                    c["hostname"] = argv[1]
                    argv = ["true"]
                else:
                    argv = ["echo", c["hostname"]]
        if status != "running":
            # like `runc exec`: the process starts, prints runc's complaint and fails
            why = {None: f"container {cid} does not exist", "paused": "cannot exec in a paused container",
                   }.get(status, f"cannot exec in a {status} container")
            argv = ["sh", "-c", 'echo "$1" >&2; exit 1', "sh", why]
        rootfs = c["spec"].rootfs if c else Path("/")
        workdir = rootfs / cwd.lstrip("/") if cwd else rootfs
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm", "HOME": str(rootfs),
                    "OPENVPS_FAKE_CID": cid, **(env or {})}
        return subprocess.Popen(["/bin/sh", "-c", 'exec "$@"', "sh", *argv], stdin=stdin, stdout=stdout,
                                stderr=stderr, env=full_env, cwd=workdir if workdir.is_dir() else "/",
                                preexec_fn=preexec_fn, start_new_session=preexec_fn is None)
