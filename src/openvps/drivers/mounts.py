"""Is this path a mount point? One statx(2) (STATX_ATTR_MOUNT_ROOT, Linux 5.8+) instead of reading
/proc/self/mountinfo, which grows with every instance (two mounts each) and was read several times
per create. Bind mounts of the same filesystem (the idmapped template) count too, unlike st_dev checks."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
AT_FDCWD = -100
AT_NO_AUTOMOUNT = 0x800
STATX_BASIC_STATS = 0x7FF
STATX_ATTR_MOUNT_ROOT = 0x2000
_ATTRS, _ATTRS_MASK = 8, 56          # offsets of stx_attributes and stx_attributes_mask in struct statx


def _statx_mount_root(path: str) -> bool | None:
    """True/False, or None when statx cannot tell (old kernel or libc)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statx(AT_FDCWD, os.fsencode(path), AT_NO_AUTOMOUNT, STATX_BASIC_STATS, buf) != 0:
        e = ctypes.get_errno()
        if e in (errno.ENOENT, errno.ENOTDIR):
            return False
        return None
    mask = int.from_bytes(buf.raw[_ATTRS_MASK:_ATTRS_MASK + 8], "little")
    if not mask & STATX_ATTR_MOUNT_ROOT:
        return None
    return bool(int.from_bytes(buf.raw[_ATTRS:_ATTRS + 8], "little") & STATX_ATTR_MOUNT_ROOT)


def _in_mountinfo(target: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def mounted(path) -> bool:
    target = os.path.realpath(path)
    found = _statx_mount_root(target) if hasattr(_libc, "statx") else None
    return _in_mountinfo(target) if found is None else found


FUSE_SUPER_MAGIC = 0x65735546


def fuse_mounted(path) -> bool:
    """A FUSE filesystem (lxcfs) is mounted right at path (also when its server died: ENOTCONN)."""
    target = os.path.realpath(path)
    buf = ctypes.create_string_buffer(256)       # struct statfs: f_type is its first field
    if _libc.statfs(os.fsencode(target), buf) != 0:
        e = ctypes.get_errno()
        if e == errno.ENOENT:
            return False
        if e != errno.ENOTCONN:
            return _fuse_in_mountinfo(target)
        return mounted(target)
    f_type = int.from_bytes(buf.raw[:ctypes.sizeof(ctypes.c_long)], "little", signed=True)
    return f_type == FUSE_SUPER_MAGIC and mounted(target)


def _fuse_in_mountinfo(target: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == target and parts[parts.index("-") + 1].startswith("fuse"):
                return True
    return False
