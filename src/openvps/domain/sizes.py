"""Sizes as users write them: 512M, 1.5G, 1024K, 2T or plain bytes (binary units, like vzctl)."""
from __future__ import annotations

import math
import re

from .errors import InvalidArgument

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(value: str | int | float, what: str = "size") -> int:
    if isinstance(value, bool):
        raise InvalidArgument(f"{what}: expected a size like 512M or 1.5G, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"{what}: {value!r} is not a size; write it like 512M, 1.5G, 1024K or plain bytes")
        if value < 0:
            raise InvalidArgument(f"{what}: a size cannot be negative")
        return int(value)
    m = _RE.match(str(value))
    if not m:
        raise InvalidArgument(f"{what}: {value!r} is not a size; write it like 512M, 1.5G, 1024K or plain bytes")
    number, unit = m.groups()
    return int(float(number) * _UNITS[unit.upper()])


def format_size(n: int | None) -> str:
    """Shortest exact-ish form: 536870912 -> 512M, 1610612736 -> 1.5G."""
    if n is None:
        return "-"
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if n >= scale:
            v = n / scale
            text = f"{v:.1f}".rstrip("0").rstrip(".") if v < 100 else f"{v:.0f}"
            return f"{text}{unit}"
    return str(n)
