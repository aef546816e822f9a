"""The CLI's fast path (cli/fast.py) against the Typer commands: both talk to the same stand-in
daemon on a Unix socket, and must send the same requests and print the same output and exit code."""
from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

import openvps.cli.main as cli
from openvps.cli import fast
from openvps.domain.limits import defaults, render_all


def inst(name: str, ctid: int = 101, state: str = "running") -> dict:
    lim = defaults()
    return {"ctid": ctid, "name": name, "state": state, "template": "minimal", "hostname": name, "init": "busybox",
            "limits": lim, "limits_display": render_all(lim), "ip": ["10.88.0.2"], "created_at": "2024-05-01T10:00:00Z",
            "started_at": None}


def error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "details": {}}}


class FakeDaemon:
    """Answers like the daemon: 202 + an operation, then its outcome on /wait. Names steer it:
    'taken' -> 409 at once, 'boom' -> the operation fails, 'gone' -> 404."""

    def __init__(self, path: str):
        self.requests: list[tuple] = []
        self.ops: dict[str, dict] = {}
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                daemon.requests.append((self.command, self.path, body))
                status, payload = daemon.route(self.command, self.path, body)
                self._answer(status, payload)

            do_GET = do_POST = do_DELETE = _handle

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def op(self, result: dict | None, error_: dict | None = None) -> dict:
        op_id = f"op-{len(self.ops) + 1}"
        done = {"id": op_id, "status": "failure" if error_ else "success", "progress": 1.0, "message": "",
                "result": result, "error": error_}
        self.ops[op_id] = done
        return {**done, "status": "running", "result": None, "error": None, "progress": 0.0}

    def route(self, method: str, target: str, body):
        path = urlsplit(target).path
        parts = path.strip("/").split("/")
        if method == "GET" and parts[:2] == ["1.0", "operations"] and parts[-1] == "wait":
            return 200, self.ops[parts[2]]
        if method == "POST" and path == "/1.0/instances":
            name = body["name"]
            if name == "taken":
                return 409, error("conflict", "an instance named 'taken' exists already; pick another name")
            if name == "boom":
                return 202, self.op(None, {"code": "driver_error", "message": "runc could not start 101: boom",
                                           "details": {}})
            return 202, self.op({"instance": inst(name, body.get("ctid") or 101,
                                                  "running" if body["start"] else "stopped")})
        ident = parts[2] if len(parts) > 2 else ""
        if ident == "gone":
            return 404, error("not_found", "no instance 'gone'; `openvps list` shows the instances")
        if method == "POST" and len(parts) == 4:
            return 202, self.op({"instance": inst(ident, state="running" if parts[3] == "start" else "stopped")})
        if method == "DELETE":
            return 202, self.op({})
        return 404, error("not_found", f"no route {method} {path}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    for k in ("OPENVPS_URL", "OPENVPS_SOCKET", "OPENVPS_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OPENVPS_HOME", str(tmp_path))
    d = FakeDaemon(str(tmp_path / "openvps.sock"))
    yield d
    d.close()


def both(daemon: FakeDaemon, capsys, argv: list[str]) -> tuple[tuple, tuple]:
    """(code, stdout, stderr, requests) from the fast path, then from the Typer CLI."""
    daemon.requests.clear()
    daemon.ops.clear()            # the same operation ids for both runs
    code = fast.main(argv)
    out = capsys.readouterr()
    got_fast = (code, out.out, out.err, list(daemon.requests))
    daemon.requests.clear()
    daemon.ops.clear()
    res = CliRunner().invoke(cli.app, argv)
    return got_fast, (res.exit_code, res.stdout, res.stderr, list(daemon.requests))


CASES = [
    ["create", "--name", "web1"],
    ["create", "--name", "web1", "--start"],
    ["create", "150", "-n", "web1", "-t", "debian-12", "--hostname", "h.example", "--start", "--json"],
    ["create", "-n", "web1", "--cpus", "2", "--ram", "1G", "--swap", "2G", "--privileged", "--description", "d e"],
    ["create", "--start", "--name", "web1", "--name", "web2"],           # the last one wins in both
    ["create", "--name", "taken"],
    ["create", "--name", "boom", "--start"],
    ["create", "--name", "boom", "--json"],
    ["start", "web1"], ["start", "web1", "--json"], ["start", "gone"],
    ["stop", "web1"], ["stop", "101", "--timeout", "5", "--force"], ["stop", "--force", "web1", "--json"],
    ["stop", "gone"],
    ["destroy", "web1"], ["destroy", "web1", "--force", "--json"], ["destroy", "gone"],
]


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(a) for a in CASES])
def test_fast_path_matches_the_typer_cli(daemon, capsys, argv):
    got_fast, got_typer = both(daemon, capsys, argv)
    assert got_fast == got_typer
    assert got_fast[3], "no request reached the daemon"


def test_the_outputs_are_what_a_user_expects(daemon, capsys):
    assert fast.main(["create", "--name", "web1", "--start"]) == 0
    assert capsys.readouterr().out == "instance web1 (CTID 101) created and started\n"
    assert fast.main(["start", "gone"]) == 1
    assert capsys.readouterr().err == "error: no instance 'gone'; `openvps list` shows the instances\n"
    assert fast.main(["destroy", "web1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"destroyed": "web1"}


@pytest.mark.parametrize("argv", [
    [], ["list"], ["status", "web1"], ["create"], ["create", "--name"], ["create", "abc", "--name", "x"],
    ["create", "--name", "x", "--ssh-key", "k.pub"], ["create", "--name=x"], ["create", "--name", "x", "--bogus", "1"],
    ["create", "--name", "x", "--ram", "-1"], ["start"], ["start", "a", "b"], ["start", "--help"], ["stop", "-h", "x"],
    ["stop", "x", "--timeout", "soon"], ["destroy", "--", "x"], ["create", "--name", "x", "--tag", "a=b"],
])
def test_anything_else_goes_to_the_full_cli(daemon, argv):
    with pytest.raises(fast.Fallback):
        fast.main(argv)
    assert daemon.requests == []


def test_tcp_and_terminals_go_to_the_full_cli(daemon, monkeypatch):
    monkeypatch.setenv("OPENVPS_URL", "http://127.0.0.1:1")
    with pytest.raises(fast.Fallback):
        fast.main(["start", "web1", "--json"])
    monkeypatch.delenv("OPENVPS_URL")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)   # the full CLI draws a progress bar
    with pytest.raises(fast.Fallback):
        fast.main(["start", "web1"])
    assert daemon.requests == []


def entry(args: list[str], env: dict, code: str = "") -> subprocess.CompletedProcess:
    """The console script's entry point in a fresh interpreter (what `openvps ...` runs)."""
    prog = f"import sys; sys.argv = ['openvps'] + {args!r}\nfrom openvps.cli.fast import run\ntry:\n    run()\n" \
           f"finally:\n{code or '    pass'}\n"
    return subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_the_fast_path_imports_neither_typer_nor_http_client(daemon, tmp_path):
    env = {**os.environ, "OPENVPS_HOME": str(tmp_path)}
    probe = "    sys.stderr.write(' '.join(m for m in ('typer', 'rich', 'pydantic', 'http.client', 'ssl') " \
            "if m in sys.modules))"
    p = entry(["start", "web1"], env, probe)
    assert (p.returncode, p.stdout, p.stderr) == (0, "instance web1 started\n", "")


def test_no_daemon_gives_the_full_clis_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENVPS_")}
    env["OPENVPS_HOME"] = str(tmp_path)
    p = entry(["start", "web1"], env)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith(f"error: cannot reach the openvps daemon at {tmp_path}/openvps.sock")
