"""Idmapped mounts: show a shared template tree to one instance with its own uid range, without
copying or chowning it (kernel >= 5.12; overlayfs accepts an idmapped lower layer since 5.19).

runc 1.1 cannot do this itself, so we make the mount before runc sees the rootfs."""
from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import time

from ..domain.errors import DriverError

_libc = ctypes.CDLL(None, use_errno=True)
# syscall numbers are the same on x86_64 and aarch64 for these new-mount-API calls
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _fail(what: str) -> DriverError:
    e = ctypes.get_errno()
    return DriverError(f"{what} failed: {os.strerror(e)}; this kernel may lack idmapped mounts — "
                       "create the instance with --privileged (unsafe) or upgrade the kernel", errno=e)


def userns_fd(base: int, size: int) -> int:
    """An fd of a user namespace mapping 0..size-1 to base..base+size-1 (made by a short-lived child)."""
    child = subprocess.Popen(["unshare", "--user", "sleep", "30"], stdin=subprocess.DEVNULL)
    try:
        own = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{child.pid}/ns/user") == own or _comm(child.pid) != "sleep":
            if time.monotonic() > deadline or child.poll() is not None:
                raise DriverError("could not create a user namespace (is `unshare` from util-linux installed?)")
            time.sleep(0.0005)
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{child.pid}/{name}", "w") as f:
                f.write(f"0 {base} {size}\n")
        return os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        child.kill()
        child.wait()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def idmapped_mount(source: str, target: str, base: int, size: int) -> None:
    """Bind source at target, with ids shifted by base for everyone who looks through target."""
    ufd = userns_fd(base, size)
    try:
        fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
        if fd < 0:
            raise _fail(f"open_tree {source}")
        try:
            attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ufd)
            if _libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
                raise _fail(f"idmapping {source}")
            if _libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH) < 0:
                raise _fail(f"mounting {source} at {target}")
        finally:
            os.close(fd)
    finally:
        os.close(ufd)


def supported() -> bool:
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return (major, minor) >= (5, 19)
