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
from ..idmap import idmapped_mount
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

    def create(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None) -> None:
        for d in ("upper", "work", "rootfs", "lower"):
            (bundle / d).mkdir(parents=True, exist_ok=True)
        os.chmod(bundle / "upper", 0o755)
        if idmap:
            # the merged / takes its owner from upper's root: make it the instance's root; the bundle
            # is private to that root (runc mounts the rootfs as it) and to the node's root
            st = os.stat(template_rootfs)
            os.chown(bundle / "upper", idmap[0] + st.st_uid, idmap[0] + st.st_gid)
            os.chown(bundle, idmap[0], idmap[0])
            os.chmod(bundle, 0o700)

    def mount(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None) -> Path:
        target = bundle / "rootfs"
        if not template_rootfs.is_dir():
            raise DriverError(f"template tree {template_rootfs} is missing; rebuild the template")
        if not mounted(target):
            lower = template_rootfs
            if idmap:
                lower = bundle / "lower"
                lower.mkdir(exist_ok=True)
                if not mounted(lower):
                    idmapped_mount(str(template_rootfs), str(lower), *idmap)
            opts = f"lowerdir={lower},upperdir={bundle / 'upper'},workdir={bundle / 'work'}"
            try:
                _mount("overlay", str(target), "overlay", opts)
            except DriverError:
                self.unmount(bundle)
                raise
        return target

    def unmount(self, bundle: Path) -> None:
        for target in (bundle / "rootfs", bundle / "lower"):
            while target.exists() and mounted(target):
                _umount(str(target))

    def is_mounted(self, bundle: Path) -> bool:
        return mounted(bundle / "rootfs") or mounted(bundle / "lower")

    def destroy(self, bundle: Path) -> None:
        if not bundle.exists():
            return
        self.unmount(bundle)
        for target in (bundle / "rootfs", bundle / "lower"):
            if mounted(target):
                raise DriverError(f"{target} is still mounted; not removing it")
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
