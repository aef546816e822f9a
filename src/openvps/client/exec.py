"""Client side of exec/enter over the daemon's WebSocket (see api/exec_ws.py for the protocol)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import termios
import threading
import tty as ttymod
from urllib.parse import quote

from ..domain.errors import from_dict


def _connect(client, path: str):
    from websockets.sync.client import connect, unix_connect
    if client.url:
        base = client.url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
        kw = {}
        if base.startswith("wss://"):
            import ssl
            kw["ssl"] = ssl.create_default_context(cafile=client.cafile)
        return connect(base + path, max_size=1 << 22, additional_headers=client.auth_headers() or None, **kw)
    return unix_connect(client.socket_path, "ws://localhost" + path, max_size=1 << 22)


def run_exec(client, ident, argv: list[str], *, tty: bool = False, env: dict | None = None,
             stdin=None, stdout=None, stderr=None, forward_stdin: bool | None = None) -> int:
    """Run argv inside the instance, streaming stdio; return its exit code."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr.buffer
    if forward_stdin is None:
        forward_stdin = tty or not _isatty(stdin)
    cols, rows = shutil.get_terminal_size((80, 24))
    try:
        ws = _connect(client, f"/1.0/instances/{quote(str(ident))}/exec")
    except (OSError, Exception) as e:
        if e.__class__.__name__ in ("InvalidStatus", "InvalidHandshake"):
            raise
        raise client._unreachable(e) from None
    saved = None
    with ws:
        ws.send(json.dumps({"argv": argv, "tty": tty, "env": env or {}, "cols": cols, "rows": rows}))
        if tty and _isatty(stdin):
            saved = termios.tcgetattr(stdin.fileno())
            ttymod.setraw(stdin.fileno())
            signal.signal(signal.SIGWINCH, lambda *_: _send_resize(ws))
        if forward_stdin:
            threading.Thread(target=_pump_stdin, args=(ws, stdin, tty), daemon=True).start()
        else:
            ws.send(json.dumps({"type": "eof"}))
        try:
            for msg in ws:
                if isinstance(msg, bytes):
                    out = stdout if msg[:1] == b"\x01" else stderr
                    out.write(msg[1:])
                    out.flush()
                    continue
                ctl = json.loads(msg)
                if ctl.get("type") == "exit":
                    return int(ctl.get("code", 1))
                if ctl.get("type") == "error":
                    raise from_dict(ctl)
        finally:
            if saved is not None:
                termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, saved)
                signal.signal(signal.SIGWINCH, signal.SIG_DFL)
    return 255   # the daemon went away without an exit code


def _isatty(f) -> bool:
    try:
        return os.isatty(f.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def _send_resize(ws) -> None:
    cols, rows = shutil.get_terminal_size((80, 24))
    with contextlib.suppress(Exception):
        ws.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))


def _pump_stdin(ws, stdin, tty: bool) -> None:
    fd = stdin.fileno()
    with contextlib.suppress(Exception):
        while True:
            data = os.read(fd, 65536)
            if not data:
                ws.send(json.dumps({"type": "eof"}))
                return
            ws.send(b"\x00" + data)
