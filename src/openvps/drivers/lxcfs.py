"""One lxcfs (FUSE) for the node, run and supervised by the daemon, so that /proc/meminfo, cpuinfo,
stat, uptime, loadavg, diskstats and swaps inside an instance show the instance's own limits.

- The daemon starts lxcfs as its own child (never a host-wide service) on <home>/lxcfs, with its
  pidfile in the home; it stops it and unmounts the mountpoint when it stops.
- Instances bind-mount the files over /proc/... in their OCI config (Spec.mounts).
- A bind mount of a FUSE file belongs to the FUSE connection that existed when it was made: when lxcfs
  dies and starts again, the bind mounts in running instances go stale ("Transport endpoint is not
  connected"). So after every (re)start the daemon re-mounts the files into each running instance
  with the new mount API: open_tree(OPEN_TREE_CLONE) on the host, setns into the instance's mount
  namespace, umount the stale file, move_mount the fresh clone. This runs in a short-lived helper
  process (setns needs a single-threaded caller) and never executes a binary from the instance.
  When the daemon stops, it detaches those mounts instead, so instances see the kernel's own /proc
  files (the node's numbers) rather than errors until the daemon is back."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .mounts import fuse_mounted

log = logging.getLogger("openvps.lxcfs")

PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "diskstats", "swaps")
SYS_FILES = ("devices/system/cpu/online",)


def targets() -> list[str]:
    return [f"/proc/{f}" for f in PROC_FILES] + [f"/sys/{f}" for f in SYS_FILES]


def _umount(path: str) -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc.umount2(path.encode(), 2) == 0   # MNT_DETACH


class Lxcfs:
    """The node's lxcfs process: start, alive, stop, and the mounts instances need."""

    def __init__(self, mountpoint: Path, binary: str = "lxcfs", log_path: Path | None = None):
        self.mountpoint = Path(mountpoint)
        self.binary = binary
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and fuse_mounted(self.mountpoint)

    @property
    def pidfile(self) -> Path:
        return self.mountpoint.parent / "lxcfs.pid"

    def _ours(self, pid: int) -> bool:
        """Is pid an lxcfs serving our mountpoint (i.e. one this home's daemon started)?"""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return any(a.endswith(b"lxcfs") for a in argv[:1]) and str(self.mountpoint).encode() in argv

    def _retire_previous(self) -> None:
        """An lxcfs left by a daemon that was killed keeps serving our mountpoint: unmounting ends it.
        Wait for it to exit (it removes its pidfile and releases its lock on the way out)."""
        try:
            old = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            old = 0
        if fuse_mounted(self.mountpoint):
            _umount(str(self.mountpoint))
        if old and self._ours(old):
            end = time.monotonic() + 3
            while time.monotonic() < end and self._ours(old):
                time.sleep(0.02)
            if self._ours(old):
                os.kill(old, 9)
                end = time.monotonic() + 2
                while time.monotonic() < end and self._ours(old):
                    time.sleep(0.02)
        self.pidfile.unlink(missing_ok=True)

    def start(self, timeout: float = 10) -> None:
        self._retire_previous()
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [self.binary, "--foreground", "--enable-loadavg", "--enable-cfs", "--enable-pidfd",
                 "--pidfile", str(self.pidfile), str(self.mountpoint)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lxcfs exited with {self.proc.returncode} (see {self.log_path})")
            if fuse_mounted(self.mountpoint) and (self.mountpoint / "proc" / "meminfo").exists():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"lxcfs did not mount {self.mountpoint} within {timeout}s")

    def stop(self) -> None:
        # lxcfs does not leave its FUSE loop on SIGTERM; unmounting ends the session and it exits
        if fuse_mounted(self.mountpoint):
            _umount(str(self.mountpoint))
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if fuse_mounted(self.mountpoint):
            _umount(str(self.mountpoint))
        self.pidfile.unlink(missing_ok=True)

    def sources(self) -> list[tuple[str, str]]:
        """(host file, destination inside) for every file this lxcfs serves."""
        out = []
        for dest in targets():
            src = self.mountpoint / dest.lstrip("/")
            try:
                os.stat(src)
            except OSError:         # missing, or a dead FUSE connection (ENOTCONN)
                continue
            out.append((str(src), dest))
        return out

    def oci_mounts(self) -> list[dict]:
        return [{"destination": dest, "type": "bind", "source": src, "options": ["bind", "rprivate"]}
                for src, dest in self.sources()]

    # ---- into a running instance's mount namespace
    def remount(self, pid: int) -> bool:
        """Bind the current lxcfs files over the instance's (stale or missing) ones."""
        pairs = self.sources()
        return _helper("mount", pid, [a for p in pairs for a in p])

    def detach(self, pid: int) -> bool:
        """Remove the lxcfs files from a running instance (it sees the kernel's own /proc files)."""
        return _helper("umount", pid, targets())


def _helper(mode: str, pid: int, args: list[str]) -> bool:
    p = subprocess.run([sys.executable, "-m", "openvps.drivers.lxcfs", mode, str(pid), *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        log.warning("lxcfs %s in pid %s failed: %s", mode, pid, p.stderr.strip()[-500:])
    return p.returncode == 0


# ---------------------------------------------------------------- helper process (single-threaded)
_NR_OPEN_TREE, _NR_MOVE_MOUNT = 428, 429     # the same on x86_64 and aarch64
_OPEN_TREE_CLONE, _O_CLOEXEC, _MOVE_MOUNT_F_EMPTY_PATH, _AT_FDCWD = 1, 0o2000000, 4, -100
_CLONE_NEWNS = 0x00020000


def _main(argv: list[str]) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.syscall.restype = ctypes.c_long
    mode, pid, rest = argv[0], int(argv[1]), argv[2:]
    fds = []
    if mode == "mount":
        for src, dest in zip(rest[0::2], rest[1::2]):
            fd = libc.syscall(_NR_OPEN_TREE, _AT_FDCWD, src.encode(), _OPEN_TREE_CLONE | _O_CLOEXEC)
            if fd < 0:
                e = ctypes.get_errno()
                sys.stderr.write(f"open_tree {src}: {os.strerror(e)}\n")
                return 1
            fds.append((fd, dest))
        dests = [d for _f, d in fds]
    else:
        dests = rest
    # count the lxcfs layers on each destination now: after setns, /proc is the instance's own procfs
    # where this (host) process has no /proc/self
    layers = {d: 0 for d in dests}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] in layers and parts[parts.index("-") + 1].startswith("fuse"):
                layers[parts[4]] += 1
    ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    if libc.setns(ns, _CLONE_NEWNS) != 0:
        sys.stderr.write(f"setns: {os.strerror(ctypes.get_errno())}\n")
        return 1
    failed = 0
    for dest in dests:
        # drop every lxcfs layer there (stale ones included) down to the kernel's own file
        for _ in range(layers[dest]):
            if libc.umount2(dest.encode(), 2) != 0:
                break
    for fd, dest in fds:
        if not os.path.exists(dest):
            continue
        if libc.syscall(_NR_MOVE_MOUNT, fd, b"", _AT_FDCWD, dest.encode(), _MOVE_MOUNT_F_EMPTY_PATH) != 0:
            sys.stderr.write(f"move_mount {dest}: {os.strerror(ctypes.get_errno())}\n")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
