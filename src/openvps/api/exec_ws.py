"""exec / enter over a WebSocket.

Protocol: the client's first message is JSON {"argv": [...], "tty": bool, "env": {}, "cols": n, "rows": n}.
Then binary frames carry data with a one-byte channel prefix: 0 stdin (client->daemon), 1 stdout,
2 stderr (daemon->client). Text frames are JSON control messages: {"type": "resize", "cols", "rows"}
and {"type": "eof"} from the client; {"type": "exit", "code": n} or {"type": "error", ...} from us."""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
import tty as tty_mod

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..domain.errors import InvalidArgument, OpenVPSError
from .auth import actor_for

router = APIRouter()

ENTER_ARGV = ["/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"]


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(1, rows), max(1, cols), 0, 0))


def _controlling_tty() -> None:
    # child side: the pty becomes the controlling terminal so runc gets SIGWINCH on resize
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@router.websocket("/1.0/instances/{ident}/exec")
async def exec_session(ws: WebSocket, ident: str):
    await ws.accept()
    try:
        req = json.loads(await ws.receive_text())
        argv = req.get("argv") or (ENTER_ARGV if req.get("tty") else [])
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise InvalidArgument("argv must be a list of strings")
        actor = actor_for(ws.scope, ws.headers, ws.app.state.users)
        await _run(ws, ident, argv, bool(req.get("tty")), dict(req.get("env") or {}),
                   int(req.get("rows") or 24), int(req.get("cols") or 80), actor)
    except OpenVPSError as e:
        await _send_json(ws, {"type": "error", **e.to_dict()})
    except (WebSocketDisconnect, json.JSONDecodeError):
        pass
    with contextlib.suppress(Exception):
        await ws.close()


async def _send_json(ws: WebSocket, msg: dict) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps(msg))


async def _run(ws: WebSocket, ident: str, argv: list[str], tty: bool, env: dict, rows: int, cols: int,
               actor) -> None:
    svc = ws.app.state.instances
    loop = asyncio.get_running_loop()
    if tty:
        master, slave = pty.openpty()
        # our pty is only a pipe to runc's own console: raw, or both would echo and cook the input
        tty_mod.setraw(slave)
        _set_winsize(master, rows, cols)
        try:
            proc = svc.exec_process(ident, argv, tty=True, env=env, actor=actor, stdin=slave, stdout=slave, stderr=slave,
                                    preexec_fn=_controlling_tty)
        finally:
            os.close(slave)
        outputs = {master: 1}
        stdin_fd = master
    else:
        proc = svc.exec_process(ident, argv, tty=False, env=env, actor=actor, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        outputs = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
        stdin_fd = proc.stdin.fileno()
    queue: asyncio.Queue = asyncio.Queue()
    open_fds = set(outputs)

    def readable(fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:          # EIO on a pty once the last writer is gone
            data = b""
        if data:
            queue.put_nowait(bytes([outputs[fd]]) + data)
        else:
            loop.remove_reader(fd)
            open_fds.discard(fd)
            if not open_fds:
                queue.put_nowait(None)

    for fd in outputs:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable, fd)

    async def from_client() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect()
            if msg.get("bytes") is not None:
                data = msg["bytes"][1:]
                await asyncio.to_thread(_write_all, stdin_fd, data)
            elif msg.get("text"):
                ctl = json.loads(msg["text"])
                if ctl.get("type") == "resize" and tty:
                    _set_winsize(master, int(ctl.get("rows", 24)), int(ctl.get("cols", 80)))
                elif ctl.get("type") == "eof":
                    if tty:
                        await asyncio.to_thread(_write_all, stdin_fd, b"\x04")
                    elif proc.stdin:
                        proc.stdin.close()

    reader = asyncio.create_task(from_client())
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            await ws.send_bytes(item)
        code = await asyncio.to_thread(proc.wait)
        await _send_json(ws, {"type": "exit", "code": code})
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        for fd in list(open_fds):
            loop.remove_reader(fd)
        if proc.poll() is None:     # the client went away: do not leave the command running
            proc.terminate()        # runc exec forwards SIGTERM to the process inside
            try:
                await asyncio.to_thread(proc.wait, 3)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f:
                with contextlib.suppress(OSError):
                    f.close()
        if tty:
            with contextlib.suppress(OSError):
                os.close(master)


def _write_all(fd: int, data: bytes) -> None:
    import select
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
        except OSError:
            return
