"""Template builder interface: the manifest, the builder protocol and the registry.

A builder fills an empty directory with an OS root filesystem; TemplateCache
(cache.py) owns locking, packing and atomic publication around it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

ProgressFn = Callable[[float, str], None]  # fraction 0..1, short human message

MANIFEST_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def noop_progress(fraction: float, message: str) -> None:
    """Default progress callback: ignore."""


def scaled_progress(progress: ProgressFn, start: float, end: float) -> ProgressFn:
    """Map a sub-task's 0..1 onto start..end of the caller's bar, never going backwards."""
    last = [start]

    def report(fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        value = max(last[0], start + (end - start) * fraction)
        last[0] = value
        progress(value, message)

    return report


class BuildError(Exception):
    """A template could not be built; the message says what went wrong and what to do."""


class UnknownBuilder(BuildError, KeyError):
    """No builder is registered under that template name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown template"


class InvalidTemplateName(BuildError, ValueError):
    """The template name does not match NAME_RE."""


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidTemplateName(
            f"invalid template name {name!r}: use 1-63 characters from a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


@dataclass
class Manifest:
    name: str  # template name, e.g. "minimal", "debian-12"
    os: str  # "busybox", "debian", "ubuntu"
    release: str  # "1.35", "12", "24.04"
    init: str  # "busybox" or "systemd"
    stop_signal: str  # "SIGTERM" (busybox) or "SIGRTMIN+3" (systemd)
    has_sshd: bool
    size_bytes: int  # apparent size of the unpacked rootfs (du -sb)
    archive_bytes: int  # size of the .tar.zst
    created_at: str  # ISO 8601 UTC
    builder: str  # builder name
    version: int = MANIFEST_VERSION
    # published templates (`openvps publish`): where they came from and whose they are
    parent: str = ""  # "name@revision" of the template the instance was cloned from
    revision: int = 1  # the template's own version, counting from 1
    owner: str = ""  # the user who published it ("" for built templates)
    description: str = ""
    base: str = ""  # versions (`template update`): the first version's name; "" = this is the first

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        # Ignore unknown keys so an older daemon can read a newer template.json.
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in d and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"template manifest lacks fields: {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in known})


@runtime_checkable
class Builder(Protocol):
    name: str
    os: str
    release: str
    init: str
    stop_signal: str
    has_sshd: bool

    def check(self) -> None:
        """Raise BuildError saying what to install if a host tool is missing."""
        ...

    def build(self, rootfs: Path, progress: ProgressFn) -> None:
        """Fill the empty directory rootfs with the template's files."""
        ...


BUILDERS: dict[str, Builder] = {}


def register(builder: Builder) -> Builder:
    validate_name(builder.name)
    BUILDERS[builder.name] = builder
    return builder


def get_builder(name: str) -> Builder:
    try:
        return BUILDERS[name]
    except KeyError:
        known = ", ".join(sorted(BUILDERS)) or "(none)"
        raise UnknownBuilder(f"unknown template {name!r}; known templates: {known}") from None
