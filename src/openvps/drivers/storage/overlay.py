"""overlayfs clone: the template tree is the read-only lower layer, each instance has its own upper.

Cloning costs the same whatever the template's size (measured 5.6 ms vs 1.16 s for `cp -a`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import subprocess
from pathlib import Path

from ...domain.errors import DriverError
from ..idmap import idmapped_mount
from ..mounts import mounted
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


DISK_IMAGE = "disk.img"      # with a diskspace quota: an ext4 image holding upper+work, mounted on bundle/disk


def _layer(bundle: Path) -> Path:
    """Where upper and work live: bundle itself, or the quota image's mountpoint."""
    return bundle / "disk" if (bundle / DISK_IMAGE).exists() else bundle


class OverlayStorage(Storage):
    name = "overlay"
    capabilities = frozenset({"cow_clone", "quota", "idmap"})

    def create(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None,
               quota: int = 0) -> None:
        # the merged / takes its owner from upper's root: with idmap, make it the instance's root
        owner = None
        if idmap:
            st = os.stat(template_rootfs)
            owner = (idmap[0] + st.st_uid, idmap[0] + st.st_gid)
        if quota:
            self._make_image(bundle, quota, owner)
            (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
        else:
            for d in ("upper", "work", "rootfs"):
                (bundle / d).mkdir(parents=True, exist_ok=True)
            os.chmod(bundle / "upper", 0o755)
            if owner:
                os.chown(bundle / "upper", *owner)
        (bundle / "lower").mkdir(exist_ok=True)
        if idmap:
            # the bundle is private to the instance's root (runc mounts the rootfs as it) and the node's
            os.chown(bundle, idmap[0], idmap[0])
            os.chmod(bundle, 0o700)

    @staticmethod
    def _make_image(bundle: Path, quota: int, owner: tuple[int, int] | None) -> None:
        """A sparse file of `quota` bytes with ext4 on it, made with upper/ and work/ inside (mke2fs -d):
        no mount needed to create it. Costs ~60 ms whatever the size (lazy inode tables)."""
        bundle.mkdir(parents=True, exist_ok=True)
        seed = bundle / ".seed"
        for d in ("upper", "work"):
            (seed / d).mkdir(parents=True, exist_ok=True)
        os.chmod(seed / "upper", 0o755)
        if owner:
            os.chown(seed / "upper", *owner)     # mke2fs -d keeps owners
        img = bundle / DISK_IMAGE
        try:
            with open(img, "wb") as f:
                f.truncate(quota)
            p = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                                "-d", str(seed), str(img)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if p.returncode != 0:
                img.unlink(missing_ok=True)
                raise DriverError(f"mkfs.ext4 for the diskspace image failed: {p.stderr.strip()[-300:]}")
        finally:
            shutil.rmtree(seed, ignore_errors=True)
        (bundle / "disk").mkdir(exist_ok=True)

    def mount(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None) -> Path:
        target = bundle / "rootfs"
        if not template_rootfs.is_dir():
            raise DriverError(f"template tree {template_rootfs} is missing; rebuild the template")
        if mounted(target):
            return target
        try:
            layer = self._mount_layer(bundle)
            lower = template_rootfs
            if idmap:
                lower = bundle / "lower"
                lower.mkdir(exist_ok=True)
                if not mounted(lower):
                    idmapped_mount(str(template_rootfs), str(lower), *idmap)
            opts = f"lowerdir={lower},upperdir={layer / 'upper'},workdir={layer / 'work'}"
            _mount("overlay", str(target), "overlay", opts)
        except DriverError:
            self.unmount(bundle)
            raise
        return target

    def unmount(self, bundle: Path) -> None:
        # the overlay first, then what it stands on (the idmapped template, the quota image)
        for target in (bundle / "rootfs", bundle / "lower", bundle / "disk"):
            while target.exists() and mounted(target):
                _umount(str(target))      # a loop device goes with its mount (autoclear)

    def is_mounted(self, bundle: Path) -> bool:
        return any(mounted(bundle / m) for m in ("rootfs", "lower", "disk"))

    def destroy(self, bundle: Path) -> None:
        if not bundle.exists():
            return
        self.unmount(bundle)
        for m in ("rootfs", "lower", "disk"):
            if mounted(bundle / m):     # never rmtree through a mount: "lower" shows the shared template
                raise DriverError(f"{bundle / m} is still mounted; not removing it")
        shutil.rmtree(bundle)

    def upper_dir(self, bundle: Path) -> Path:
        return _layer(bundle) / "upper"

    def open_layer(self, bundle: Path) -> Path:
        """Make the upper dir reachable without mounting the overlay (the quota image only)."""
        return self._mount_layer(bundle) / "upper"

    @staticmethod
    def _mount_layer(bundle: Path) -> Path:
        layer = _layer(bundle)
        if layer != bundle and not mounted(layer):
            p = subprocess.run(["mount", "-t", "ext4", "-o", "loop,nodev,nosuid", str(bundle / DISK_IMAGE),
                                str(layer)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if p.returncode != 0:
                raise DriverError(f"mounting the diskspace image of {bundle.name} failed: {p.stderr.strip()}")
        return layer

    def usage(self, bundle: Path) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(_layer(bundle) / "upper"):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
        return total
