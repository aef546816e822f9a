"""Runtime drivers by name."""
from __future__ import annotations

from .base import Runtime, Spec


def get_runtime(name: str, **kwargs) -> Runtime:
    if name == "runc":
        from .runc import RuncRuntime
        return RuncRuntime(**kwargs)
    if name == "fake":
        from .fake import FakeRuntime
        return FakeRuntime(**kwargs)
    raise ValueError(f"unknown runtime driver {name!r}; known: runc, fake")


__all__ = ["Runtime", "Spec", "get_runtime"]
