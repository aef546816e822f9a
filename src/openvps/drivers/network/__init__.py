"""Network drivers by name: netns (pyroute2 + nftables inside the node namespace), fake (unit tests)."""
from __future__ import annotations

from .base import NetworkDriver


def get_network(name: str, **kwargs) -> NetworkDriver:
    if name == "netns":
        from .netns import NetnsNetwork
        return NetnsNetwork(**kwargs)
    if name == "fake":
        from .fake import FakeNetwork
        return FakeNetwork(**kwargs)
    raise ValueError(f"unknown network driver {name!r}; known: netns, fake")


__all__ = ["NetworkDriver", "get_network"]
