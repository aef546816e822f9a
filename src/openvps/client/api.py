"""A small HTTP client for the openvps API over the daemon's Unix socket (or TCP)."""
from __future__ import annotations

import http.client
import json
import os
import socket
import time
from typing import Any, Callable
from urllib.parse import quote, urlencode

from ..domain.errors import OpenVPSError, from_dict

DEFAULT_HOME = "/var/lib/openvps"


class DaemonUnreachable(OpenVPSError):
    code = "daemon_unreachable"
    status = 503


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def default_socket() -> str:
    if os.environ.get("OPENVPS_SOCKET"):
        return os.environ["OPENVPS_SOCKET"]
    return os.path.join(os.environ.get("OPENVPS_HOME", DEFAULT_HOME), "openvps.sock")


class Client:
    def __init__(self, socket_path: str | None = None, url: str | None = None, timeout: float = 3700):
        self.url = url or os.environ.get("OPENVPS_URL") or None
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    # ---- transport
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.url:
                host = self.url.split("://", 1)[-1].rstrip("/")
                self._conn = http.client.HTTPConnection(host, timeout=self.timeout)
            else:
                self._conn = _UnixConnection(self.socket_path, self.timeout)
        return self._conn

    def where(self) -> str:
        return self.url or self.socket_path

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest) as e:
                self.close()
                if attempt == 2 or isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
                    raise self._unreachable(e) from None
            except (FileNotFoundError, PermissionError) as e:
                self.close()
                raise self._unreachable(e) from None
        payload = json.loads(raw) if raw else None
        if resp.status >= 400:
            err = (payload or {}).get("error") if isinstance(payload, dict) else None
            raise from_dict(err or {"code": "http_error", "message": f"HTTP {resp.status}"})
        return payload

    def _unreachable(self, e: Exception) -> DaemonUnreachable:
        return DaemonUnreachable(f"cannot reach the openvps daemon at {self.where()} ({e.__class__.__name__}); "
                                 "start it with `openvps serve` (and check OPENVPS_HOME)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- operations
    def wait(self, op: dict, on_progress: Callable[[dict], None] | None = None, timeout: float | None = None) -> dict:
        """Follow an operation to its end; raise its error if it failed."""
        deadline = time.monotonic() + timeout if timeout else None
        while op["status"] not in ("success", "failure", "cancelled"):
            step = 0.25 if on_progress else 60
            if deadline:
                step = max(0.0, min(step, deadline - time.monotonic()))
            op = self.request("GET", f"/1.0/operations/{op['id']}/wait", query={"timeout": step})
            if on_progress:
                on_progress(op)
            if deadline and time.monotonic() >= deadline and op["status"] not in ("success", "failure"):
                raise OpenVPSError(f"operation {op['id']} still {op['status']} after {timeout}s")
        if op["status"] != "success":
            raise from_dict(op.get("error") or {"message": op.get("message") or "operation failed"})
        return op

    # ---- resources
    def info(self) -> dict:
        return self.request("GET", "/1.0")

    def instances(self) -> list[dict]:
        return self.request("GET", "/1.0/instances")

    def instance(self, ident: str | int) -> dict:
        return self.request("GET", f"/1.0/instances/{quote(str(ident))}")

    def create(self, **body) -> dict:
        return self.request("POST", "/1.0/instances", body)

    def action(self, ident: str | int, action: str, body: dict | None = None) -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/{action}", body or {})

    def set(self, ident: str | int, **body) -> dict:
        return self.request("PATCH", f"/1.0/instances/{quote(str(ident))}", body)

    def destroy(self, ident: str | int, force: bool = False) -> dict:
        return self.request("DELETE", f"/1.0/instances/{quote(str(ident))}", query={"force": str(force).lower()})

    def templates(self) -> list[dict]:
        return self.request("GET", "/1.0/templates")

    def build_template(self, name: str, force: bool = False) -> dict:
        return self.request("POST", "/1.0/templates", {"name": name, "force": force})

    def remove_template(self, name: str) -> dict:
        return self.request("DELETE", f"/1.0/templates/{quote(name)}")

    def operations(self, status: str | None = None) -> list[dict]:
        return self.request("GET", "/1.0/operations", query={"status": status})

    def limits(self) -> dict:
        return self.request("GET", "/1.0/limits")

    def exec(self, ident, argv, **kw) -> int:
        from .exec import run_exec
        return run_exec(self, ident, argv, **kw)
