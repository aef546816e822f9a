"""openvps: an open, self-hosted VPS cloud."""
__version__ = "0.1.0"
