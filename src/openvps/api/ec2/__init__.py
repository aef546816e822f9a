"""The EC2-compatible API (query protocol, SigV4) on its own port: see app.py."""
