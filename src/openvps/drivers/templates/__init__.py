"""OS templates: builders (busybox, debootstrap), the on-disk cache and per-instance setup."""

from .base import (
    BUILDERS,
    BuildError,
    Builder,
    InvalidTemplateName,
    Manifest,
    ProgressFn,
    UnknownBuilder,
    get_builder,
    noop_progress,
    validate_name,
)

# Importing the builder modules registers them in BUILDERS.
from . import busybox as _busybox  # noqa: E402,F401
from . import debootstrap as _debootstrap  # noqa: E402,F401
from .cache import TemplateCache  # noqa: E402
from .setup import (  # noqa: E402
    SetupError,
    UnsafePath,
    safe_read,
    safe_write,
    set_hostname,
    setup_instance,
)

__all__ = [
    "BUILDERS", "BuildError", "Builder", "InvalidTemplateName", "Manifest", "ProgressFn",
    "UnknownBuilder", "get_builder", "noop_progress", "validate_name", "TemplateCache",
    "SetupError", "UnsafePath", "safe_read", "safe_write", "set_hostname", "setup_instance",
]
