"""Storage drivers by name."""
from __future__ import annotations

from .base import Storage


def get_storage(name: str) -> Storage:
    if name == "overlay":
        from .overlay import OverlayStorage
        return OverlayStorage()
    if name == "fake":
        from .fake import FakeStorage
        return FakeStorage()
    raise ValueError(f"unknown storage driver {name!r}; known: overlay, fake")


__all__ = ["Storage", "get_storage"]
