"""Storage for unit tests: real directories on the test's tmp filesystem, no mounts.

create makes bundle/upper and bundle/rootfs; mount only records the mounted flag (and makes sure
bundle/rootfs is a plain directory, so instance setup can write into it); destroy removes the
bundle. `fail_mount=True` makes mount fail the way a refused overlay mount does."""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from ...domain.errors import DriverError
from .base import Storage


class FakeStorage(Storage):
    name = "fake"
    capabilities = frozenset()

    def __init__(self, *, fail_mount: bool = False):
        self.fail_mount = fail_mount
        self.mounted: set[Path] = set()
        self.calls: list[tuple[str, Path]] = []
        self.idmaps: dict[Path, tuple[int, int] | None] = {}
        self.quotas: dict[Path, int] = {}          # bundle -> diskspace given at create
        self._lock = threading.Lock()

    def create(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None,
               quota: int = 0) -> None:
        with self._lock:
            self.calls.append(("create", bundle))
            self.idmaps[bundle] = idmap
            if quota:
                self.quotas[bundle] = quota
            for d in ("upper", "rootfs"):
                (bundle / d).mkdir(parents=True, exist_ok=True)

    def mount(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None) -> Path:
        with self._lock:
            self.calls.append(("mount", bundle))
            if idmap != self.idmaps.get(bundle, idmap):
                raise DriverError(f"{bundle} was created for idmap {self.idmaps[bundle]}, mounted with {idmap}")
            if self.fail_mount:
                raise DriverError(f"mount overlay on {bundle / 'rootfs'} failed: fake storage told to fail")
            if not template_rootfs.is_dir():
                raise DriverError(f"template tree {template_rootfs} is missing; rebuild the template")
            if not (bundle / "upper").is_dir():
                raise DriverError(f"{bundle} has no private layer; it was never created")
            (bundle / "rootfs").mkdir(exist_ok=True)
            self.mounted.add(bundle)
            return bundle / "rootfs"

    def unmount(self, bundle: Path) -> None:
        with self._lock:
            self.calls.append(("unmount", bundle))
            self.mounted.discard(bundle)

    def is_mounted(self, bundle: Path) -> bool:
        with self._lock:
            return bundle in self.mounted

    def destroy(self, bundle: Path) -> None:
        with self._lock:
            self.calls.append(("destroy", bundle))
            self.mounted.discard(bundle)
            if bundle.exists():
                shutil.rmtree(bundle)

    def usage(self, bundle: Path) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(bundle):
            for name in files:
                total += os.lstat(os.path.join(dirpath, name)).st_size
        return total
