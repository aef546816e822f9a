"""Storage interface: an instance's root filesystem as a clone of a template tree."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class Storage(ABC):
    name = "base"
    capabilities: frozenset[str] = frozenset()   # "cow_clone"

    @abstractmethod
    def create(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None,
               quota: int = 0) -> None:
        """Make the instance's private layer under bundle (nothing mounted yet). With idmap
        (host base uid, size) its root belongs to the instance's own (shifted) root; quota (bytes,
        0 = none) caps the space that layer may use."""

    @abstractmethod
    def mount(self, bundle: Path, template_rootfs: Path, idmap: tuple[int, int] | None = None) -> Path:
        """Mount the instance root at bundle/rootfs (idempotent); return it. With idmap the
        shared template shows up owned by the instance's uid range (no copy, no chown)."""

    @abstractmethod
    def unmount(self, bundle: Path) -> None:
        """Unmount bundle/rootfs (idempotent)."""

    @abstractmethod
    def is_mounted(self, bundle: Path) -> bool: ...

    @abstractmethod
    def destroy(self, bundle: Path) -> None:
        """Unmount and remove everything under bundle."""

    def upper_dir(self, bundle: Path) -> Path:
        """The instance's own layer (its changes over the template); valid while mounted."""
        from ...domain.errors import DriverError
        raise DriverError(f"storage {self.name} has no upper layer to copy (snapshots, publish, backups)")

    def open_layer(self, bundle: Path) -> Path:
        """Make the upper dir of a stopped instance reachable (no overlay mounted); unmount() closes it."""
        return self.upper_dir(bundle)

    @abstractmethod
    def usage(self, bundle: Path) -> int:
        """Bytes the instance's own layer uses."""
