"""Idmapped mounts: show a shared template tree to one instance with its own uid range, without
copying or chowning it (kernel >= 5.12; overlayfs accepts an idmapped lower layer since 5.19).

runc 1.1 cannot do this itself, so we make the mount before runc sees the rootfs."""
from __future__ import annotations

import ctypes
import os
import platform

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


CLONE_NEWUSER = 0x10000000
_unshare = _libc.unshare   # resolved once: the forked child below only calls it


def userns_fd(base: int, size: int) -> int:
    """An fd of a user namespace mapping 0..size-1 to base..base+size-1, made by a forked child
    that unshares and waits while we write its maps (no `unshare` binary to exec: ~1 ms, not ~4).
    The child runs no Python beyond a few syscalls, so forking our threaded daemon is safe."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: unshare, report, wait until the parent closes its end, exit
        try:
            os.close(r)
            os.close(w2)
            os.write(w, b"1" if _unshare(CLONE_NEWUSER) == 0 else b"0")
            os.read(r2, 1)
        finally:
            os._exit(0)
    os.close(w)
    os.close(r2)
    try:
        if os.read(r, 1) != b"1":
            raise DriverError("could not create a user namespace (unshare(CLONE_NEWUSER) failed; are user "
                              "namespaces enabled?)")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {base} {size}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w2)
        os.close(r)
        os.waitpid(pid, 0)


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
