"""The runtime interface: what the service asks of a container runtime. Real: runc. Tests: fake."""
from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Spec:
    """Everything the runtime needs to run one instance."""
    cid: str                      # runtime container id
    bundle: Path                  # dir holding config.json; rootfs is bundle/"rootfs"
    hostname: str
    limits: dict[str, int]
    cgroup_path: str              # absolute cgroup path below the daemon's subtree
    init: str = "busybox"         # "busybox" | "systemd"
    cpuset: str = ""              # "" = all CPUs
    log_path: Path | None = None  # the instance's console output
    env: dict[str, str] = field(default_factory=dict)
    idmap: tuple[int, int] | None = None   # (host base uid, size): own user namespace; None = privileged
    netns: str | None = None      # join this network namespace (a path) instead of a new, empty one
    mounts: list[dict] = field(default_factory=list)   # extra OCI mounts after the defaults (e.g. lxcfs files)
    cpu_shares: int | None = None  # cpu.shares when a CPU guarantee raises it above cpuunits (None: from cpuunits)

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"


class Runtime(ABC):
    name = "base"
    capabilities: frozenset[str] = frozenset()   # "freeze", "live_update", "exec", "tty"

    @abstractmethod
    def run(self, spec: Spec, before_start: Callable[[int], None] | None = None,
            meanwhile: Callable[[], None] | None = None) -> int:
        """Create and start detached; return the init's host PID. before_start(pid) runs once the
        container's namespaces exist and before its init runs (e.g. to wire its network).
        meanwhile() runs while the runtime creates the container: work that must be done before the
        init runs but not before creation (files in the mounted root, store rows). If it raises, the
        container is removed and the error goes on."""

    @abstractmethod
    def state(self, cid: str) -> dict | None:
        """{"status": running|paused|stopped|created, "pid": int} or None if the runtime has no such container."""

    @abstractmethod
    def list(self) -> dict[str, dict]:
        """cid -> state for every container in this runtime root."""

    @abstractmethod
    def kill(self, cid: str, signal: str) -> None: ...

    @abstractmethod
    def wait_stopped(self, cid: str, timeout: float, pid: int | None = None) -> bool:
        """True once the init has exited (within timeout). pid: the init's, if the caller knows it."""

    @abstractmethod
    def delete(self, cid: str, force: bool = False) -> None:
        """Remove runtime state and cgroups; no error when already gone."""

    @abstractmethod
    def pause(self, cid: str) -> None: ...

    @abstractmethod
    def resume(self, cid: str) -> None: ...

    @abstractmethod
    def update(self, cid: str, spec: Spec) -> None:
        """Apply spec.limits (and cpuset) to a running container."""

    @abstractmethod
    def exec(self, cid: str, argv: list[str], *, tty: bool, env: dict[str, str] | None = None,
             cwd: str | None = None, stdin=None, stdout=None, stderr=None,
             preexec_fn=None) -> subprocess.Popen:
        """Start argv inside the container; the caller owns the returned process and its pipes."""
