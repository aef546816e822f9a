"""A small HTTP client for the openvps API over the daemon's Unix socket (or TCP)."""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
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
    def __init__(self, socket_path: str | None = None, url: str | None = None, timeout: float = 3700,
                 token: str | None = None, cafile: str | None = None):
        """Over the Unix socket by default (acting as admin); with `url` (or OPENVPS_URL), over TCP with
        `token` (or OPENVPS_TOKEN) as `Authorization: Bearer`. https:// URLs verify the server against
        `cafile` (or OPENVPS_CACERT) or the system's CAs."""
        self.url = url or (None if socket_path else os.environ.get("OPENVPS_URL")) or None
        self.token = token or (os.environ.get("OPENVPS_TOKEN") if self.url else None) or None
        self.cafile = cafile or os.environ.get("OPENVPS_CACERT") or None
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    # ---- transport
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.url:
                scheme, _, rest = self.url.partition("://")
                host = (rest or scheme).rstrip("/")
                if scheme == "https":
                    ctx = ssl.create_default_context(cafile=self.cafile)
                    self._conn = http.client.HTTPSConnection(host, timeout=self.timeout, context=ctx)
                else:
                    self._conn = http.client.HTTPConnection(host, timeout=self.timeout)
            else:
                self._conn = _UnixConnection(self.socket_path, self.timeout)
        return self._conn

    def where(self) -> str:
        return self.url or self.socket_path

    def auth_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None,
                headers: dict | None = None, with_headers: bool = False, text: bool = False) -> Any:
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        data = json.dumps(body).encode() if body is not None else None
        headers = {**({"Content-Type": "application/json"} if data is not None else {}), **self.auth_headers(),
                   **(headers or {})}
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
        if text and resp.status < 400:
            return raw.decode()
        payload = json.loads(raw) if raw else None
        if resp.status >= 400:
            err = (payload or {}).get("error") if isinstance(payload, dict) else None
            raise from_dict(err or {"code": "http_error", "message": f"HTTP {resp.status}"})
        if with_headers:
            return payload, {k.lower(): v for k, v in resp.getheaders()}
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

    def instances_page(self, *, limit: int = 500, cursor: str | None = None, **filters) -> dict:
        """One page: {"items", "next_cursor"}. Filters: state, template, name_prefix, owner,
        tag (list of "k=v"), fields (list of names)."""
        q = {"limit": limit, "cursor": cursor, **filters}
        if isinstance(q.get("fields"), (list, tuple)):
            q["fields"] = ",".join(q["fields"])
        return self.request("GET", "/1.0/instances", query=q)

    def instances(self, **filters) -> list[dict]:
        """Every instance (walks the pages)."""
        items, cursor = [], None
        while True:
            page = self.instances_page(cursor=cursor, **filters)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def instance(self, ident: str | int) -> dict:
        return self.request("GET", f"/1.0/instances/{quote(str(ident))}")

    def instance_etag(self, ident: str | int) -> tuple[dict, str]:
        body, headers = self.request("GET", f"/1.0/instances/{quote(str(ident))}", with_headers=True)
        return body, headers.get("etag", "")

    def create(self, **body) -> dict:
        return self.request("POST", "/1.0/instances", body)

    def action(self, ident: str | int, action: str, body: dict | None = None) -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/{action}", body or {})

    def set(self, ident: str | int, if_match: str | None = None, **body) -> dict:
        return self.request("PATCH", f"/1.0/instances/{quote(str(ident))}", body,
                            headers={"If-Match": if_match} if if_match else None)

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

    def operation(self, op_id: str) -> dict:
        return self.request("GET", f"/1.0/operations/{quote(op_id)}")

    def cancel(self, op_id: str) -> dict:
        return self.request("DELETE", f"/1.0/operations/{quote(op_id)}")

    # ---- images: publish, snapshots
    def publish(self, ident: str | int, name: str, description: str = "") -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/publish",
                            {"name": name, "description": description})

    def snapshots(self, ident: str | int) -> list[dict]:
        return self.request("GET", f"/1.0/instances/{quote(str(ident))}/snapshots")

    def create_snapshot(self, ident: str | int, name: str, description: str = "") -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/snapshots",
                            {"name": name, "description": description})

    def restore_snapshot(self, ident: str | int, name: str, start: bool = False) -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/snapshots/{quote(name)}/restore",
                            {"start": start})

    def delete_snapshot(self, ident: str | int, name: str) -> dict:
        return self.request("DELETE", f"/1.0/instances/{quote(str(ident))}/snapshots/{quote(name)}")

    def backup(self, ident: str | int, to: str, mode: str = "snapshot") -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/backups", {"mode": mode, "to": to})

    def restore(self, archive: str, ctid: int | None = None, name: str | None = None) -> dict:
        return self.request("POST", "/1.0/backups/restore", {"archive": archive, "ctid": ctid, "name": name})

    def volumes(self) -> list[dict]:
        return self.request("GET", "/1.0/volumes")

    def create_volume(self, name: str) -> dict:
        return self.request("POST", "/1.0/volumes", {"name": name})

    def delete_volume(self, name: str) -> dict:
        return self.request("DELETE", f"/1.0/volumes/{quote(name)}")

    def rebase(self, ident: str | int, template: str) -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/rebase", {"template": template})

    def update_template(self, name: str, script: str | None = None) -> dict:
        return self.request("POST", f"/1.0/templates/{quote(name)}/update", {"script": script})

    def template_versions(self, name: str) -> list[dict]:
        return self.request("GET", f"/1.0/templates/{quote(name)}/versions")

    def sync(self, ident: str | int, to: int | None = None, exclude: list[str] | None = None,
             dry_run: bool = False) -> dict:
        return self.request("POST", f"/1.0/instances/{quote(str(ident))}/sync",
                            {"to": to, "exclude": list(exclude or []), "dry_run": dry_run})

    def export_template(self, name: str, to: str, base: str | None = None) -> dict:
        return self.request("POST", f"/1.0/templates/{quote(name)}/export", {"to": to, "base": base})

    def import_template(self, file: str) -> dict:
        return self.request("POST", "/1.0/templates/import", {"file": file})

    # ---- users and tokens
    def users(self) -> list[dict]:
        return self.request("GET", "/1.0/users")

    def user(self, name: str) -> dict:
        return self.request("GET", f"/1.0/users/{quote(name)}")

    def create_user(self, name: str, admin: bool = False, quotas: dict | None = None) -> dict:
        return self.request("POST", "/1.0/users", {"name": name, "admin": admin, "quotas": quotas or {}})

    def update_user(self, name: str, if_match: str | None = None, **body) -> dict:
        return self.request("PATCH", f"/1.0/users/{quote(name)}", body,
                            headers={"If-Match": if_match} if if_match else None)

    def delete_user(self, name: str) -> dict:
        return self.request("DELETE", f"/1.0/users/{quote(name)}")

    def set_password(self, name: str, password: str | None) -> dict:
        return self.request("PUT", f"/1.0/users/{quote(name)}/password", {"password": password})

    def tokens(self, user: str | None = None) -> list[dict]:
        return self.request("GET", "/1.0/tokens", query={"user": user})

    def create_token(self, user: str | None = None, description: str = "") -> dict:
        return self.request("POST", "/1.0/tokens", {"user": user, "description": description})

    def revoke_token(self, token_id: str) -> dict:
        return self.request("DELETE", f"/1.0/tokens/{quote(token_id)}")

    # ---- EC2 access keys
    def create_access_key(self, user: str) -> dict:
        return self.request("POST", f"/1.0/users/{quote(user)}/keys")

    def access_keys(self, user: str) -> list[dict]:
        return self.request("GET", f"/1.0/users/{quote(user)}/keys")

    def delete_access_key(self, user: str, key_id: str) -> dict:
        return self.request("DELETE", f"/1.0/users/{quote(user)}/keys/{quote(key_id)}")

    # ---- events and metrics
    def events(self, after: int = 0, type: str | None = None, instance: str | None = None,
               timeout: float = 0, limit: int = 1000) -> dict:
        """Poll: {"items": [...], "last_id": N}; pass last_id back as `after`."""
        return self.request("GET", "/1.0/events", query={"after": after, "type": type, "instance": instance,
                                                         "format": "json", "timeout": timeout, "limit": limit})

    def metrics(self) -> str:
        return self.request("GET", "/metrics", text=True)

    def limits(self) -> dict:
        return self.request("GET", "/1.0/limits")

    def exec(self, ident, argv, **kw) -> int:
        from .exec import run_exec
        return run_exec(self, ident, argv, **kw)
