"""Python SDK over the REST API. Standard library only, so the CLI starts fast."""
from .api import Client, DaemonUnreachable

__all__ = ["Client", "DaemonUnreachable"]
