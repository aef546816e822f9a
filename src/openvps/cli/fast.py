"""The `openvps` entry point: a standard-library-only fast path for the hot commands.

Importing Typer, Rich and pydantic (and http.client, which pulls in email and ssl) costs a few
hundred milliseconds per invocation, more than creating and starting an instance takes. For
`create`, `start`, `stop` and `destroy` with their common flags, over the Unix socket and without
a progress bar, this module talks HTTP itself and prints exactly what the Typer commands in
cli/main.py print (same messages, exit codes and --json). Anything it does not handle exactly
(another command, an unknown or repeated-list flag, --help, a terminal wanting a progress bar,
OPENVPS_URL, a daemon it cannot connect to) goes to the full CLI unchanged."""
from __future__ import annotations

import json
import os
import re
import socket
import sys

_DIGITS = re.compile(r"[0-9]+\Z")


class Fallback(Exception):
    """This invocation is not ours: let the Typer CLI handle it (nothing was sent yet)."""


class Failed(Exception):
    """An error to print as `error: ...` with exit code 1 (what cli.main.handled does)."""


# ------------------------------------------------------------------ argument parsing
# per command: option -> (destination, takes a value); positionals: how many at most
_COMMON = {"--json": ("json", False)}
SPECS: dict[str, dict] = {
    "create": {"--name": ("name", True), "-n": ("name", True), "--template": ("template", True),
               "-t": ("template", True), "--hostname": ("hostname", True), "--start": ("start", False),
               "--privileged": ("privileged", False), "--description": ("description", True), **_COMMON},
    "start": dict(_COMMON),
    "stop": {"--timeout": ("timeout", True), "--force": ("force", False), **_COMMON},
    "destroy": {"--force": ("force", False), **_COMMON},
}


def parse(argv: list[str]) -> tuple[str, str | None, dict, dict]:
    """(command, positional, options, limits) or Fallback for anything not handled exactly."""
    if not argv or argv[0] not in SPECS:
        raise Fallback
    cmd, spec = argv[0], SPECS[argv[0]]
    opts: dict = {}
    limits: dict = {}
    positional: list[str] = []
    rest = argv[1:]
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("-"):
            if tok in spec:
                dest, takes = spec[tok]
            elif cmd == "create" and tok.startswith("--") and tok[2:] in _limit_keys():
                dest, takes = "limit:" + tok[2:], True
            else:       # unknown flags, --opt=value, -h/--help, "--": the full CLI decides
                raise Fallback
            if takes:
                if i + 1 >= len(rest) or rest[i + 1].startswith("-"):
                    raise Fallback
                value = rest[i + 1]
                i += 2
            else:
                value = True
                i += 1
            if dest.startswith("limit:"):
                limits[dest[6:]] = value
            else:
                opts[dest] = value
        else:
            positional.append(tok)
            i += 1
    if len(positional) > 1:
        raise Fallback
    arg = positional[0] if positional else None
    if cmd == "create":
        if "name" not in opts or (arg is not None and not _DIGITS.match(arg)):
            raise Fallback
    elif arg is None:
        raise Fallback
    if "timeout" in opts and not _DIGITS.match(opts["timeout"]):
        raise Fallback
    return cmd, arg, opts, limits


def _limit_keys():
    from ..domain.limits import LIMITS   # only when a limit flag is given
    return LIMITS


# ------------------------------------------------------------------ HTTP over the Unix socket
class Http:
    """One request per connection (Connection: close): the daemon is local, connecting is cheap."""

    def __init__(self, path: str):
        self.path = path
        self.sent = False

    def request(self, method: str, target: str, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: identity\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                s.connect(self.path)
            except OSError:
                if not self.sent:   # nothing reached the daemon: the full CLI gives its usual message
                    raise Fallback from None
                raise
            self.sent = True
            s.sendall(head.encode() + b"\r\n" + data)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        finally:
            s.close()
        status, payload = _response(b"".join(chunks))
        if status >= 400:
            err = payload.get("error") if isinstance(payload, dict) else None
            raise Failed((err or {}).get("message", "unknown error") if err else f"HTTP {status}")
        return payload


def _response(raw: bytes):
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise Failed("the daemon closed the connection mid-answer; see its log")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    elif "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return status, (json.loads(body) if body else None)


def wait(http: Http, op: dict) -> dict:
    """As Client.wait without a progress callback: long-polls of 60 s until the operation ends."""
    while op["status"] not in ("success", "failure", "cancelled"):
        op = http.request("GET", f"/1.0/operations/{op['id']}/wait?timeout=60")
    if op["status"] != "success":
        err = op.get("error") or {"message": op.get("message") or "operation failed"}
        raise Failed(err.get("message", "unknown error"))
    return op


# ------------------------------------------------------------------ the commands (as cli/main.py)
def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def execute(http: Http, cmd: str, arg: str | None, o: dict, limits: dict) -> None:
    from urllib.parse import quote
    as_json = o.get("json", False)
    if cmd == "create":
        limits = {k: limits[k] for k in _limit_keys() if k in limits} if limits else {}   # the table's order
        body = {"name": o["name"], "template": o.get("template", "minimal"), "ctid": int(arg) if arg else None,
                "hostname": o.get("hostname"), "limits": limits, "ssh_keys": [], "root_password": None,
                "start": o.get("start", False), "privileged": o.get("privileged", False)}
        if o.get("description"):
            body["description"] = o["description"]
        inst = wait(http, http.request("POST", "/1.0/instances", body))["result"]["instance"]
        if as_json:
            return print_json(inst)
        verb = "created and started" if inst["state"] == "running" else "created"
        print(f"instance {inst['name']} (CTID {inst['ctid']}) {verb}")
    elif cmd in ("start", "stop"):
        body = {"timeout": int(o["timeout"]) if "timeout" in o else None, "force": o.get("force", False)} \
            if cmd == "stop" else {}
        done = wait(http, http.request("POST", f"/1.0/instances/{quote(arg)}/{cmd}", body))
        inst = (done.get("result") or {}).get("instance") or {}
        if as_json:
            return print_json(inst)
        print(f"instance {inst.get('name', arg)} {'started' if cmd == 'start' else 'stopped'}")
    elif cmd == "destroy":
        force = "true" if o.get("force") else "false"
        wait(http, http.request("DELETE", f"/1.0/instances/{quote(arg)}?force={force}"))
        if as_json:
            return print_json({"destroyed": arg})
        print(f"instance {arg} destroyed")


def main(argv: list[str]) -> int:
    """Exit code of the fast path; raises Fallback when the full CLI must handle it."""
    if os.environ.get("OPENVPS_URL"):
        raise Fallback
    cmd, arg, opts, limits = parse(argv)
    if not opts.get("json") and sys.stderr.isatty():   # the full CLI shows a progress bar
        raise Fallback
    path = os.environ.get("OPENVPS_SOCKET") or os.path.join(os.environ.get("OPENVPS_HOME", "/var/lib/openvps"),
                                                            "openvps.sock")
    try:
        execute(Http(path), cmd, arg, opts, limits)
    except Failed as e:
        sys.stdout.flush()
        sys.stderr.write(f"error: {e}\n")
        return 1
    except OSError as e:   # the daemon went away after we sent the request
        sys.stderr.write(f"error: cannot reach the openvps daemon at {path} ({e.__class__.__name__}); "
                         "start it with `openvps serve` (and check OPENVPS_HOME)\n")
        return 1
    return 0


def run() -> None:
    try:
        code = main(sys.argv[1:])
    except Fallback:
        from .main import run as full
        return full()
    sys.exit(code)
