"""`openvps serve`: the single writer. Serves the API on a root-only Unix socket (and optionally
loopback TCP). Containers do not depend on it: stop or kill it and they keep running; on start it
reconciles the store with what runc reports."""
from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import os
import signal
from pathlib import Path

import uvicorn

from .config import Config
from .domain.errors import InvalidArgument

log = logging.getLogger("openvps.daemon")


def _setup_logging(cfg: Config) -> None:
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("openvps")
    root.setLevel(logging.INFO)
    for h in (logging.FileHandler(cfg.log_dir / "daemon.log"), logging.StreamHandler()):
        h.setFormatter(fmt)
        root.addHandler(h)


def _tcp(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise InvalidArgument(f"listen={listen}: only loopback addresses for now — the API has no "
                                  "authentication over TCP yet (tokens come with the REST API issue)")
        return host, int(port)
    except ValueError:
        raise InvalidArgument(f"listen={listen!r}: write it as 127.0.0.1:8443") from None


def serve(cfg: Config) -> None:
    from .api.app import create_app
    from .service.node import Node

    tcp = _tcp(cfg.listen) if cfg.listen else None
    cfg.home_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = open(cfg.home_path / "daemon.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another openvps daemon is already serving {cfg.home}") from None
    _setup_logging(cfg)
    (cfg.home_path / "daemon.pid").write_text(f"{os.getpid()}\n")
    node = Node(cfg)
    report = node.reconcile()
    log.info("reconciled: %s", report)
    node.start_background()
    app = create_app(node)
    sock = Path(cfg.socket)
    sock.unlink(missing_ok=True)
    old_umask = os.umask(0o077)     # the socket acts as admin: root only
    servers = [uvicorn.Server(uvicorn.Config(app, uds=str(sock), log_level="warning", access_log=False,
                                             ws_max_size=1 << 20))]
    if tcp:
        servers.append(uvicorn.Server(uvicorn.Config(app, host=tcp[0], port=tcp[1], log_level="warning",
                                                     access_log=False)))
    try:
        async def main():
            tasks = [asyncio.create_task(s.serve()) for s in servers]
            await asyncio.sleep(0)
            os.umask(old_umask)
            log.info("serving on %s%s", sock, f" and http://{tcp[0]}:{tcp[1]}" if tcp else "")
            await asyncio.gather(*tasks)

        for s in servers[1:]:
            s.install_signal_handlers = lambda: None   # the first server handles signals for all
        orig = servers[0].handle_exit

        def handle_exit(sig, frame):
            orig(sig, frame)
            for s in servers[1:]:
                s.handle_exit(sig, frame)
        servers[0].handle_exit = handle_exit
        # uvicorn re-raises the caught signal after its graceful shutdown, with the handler it found
        # installed: a no-op one lets our `finally` (node.close: network teardown, cgroup prune) run
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        asyncio.run(main())
    finally:
        sock.unlink(missing_ok=True)
        node.close()
        (cfg.home_path / "daemon.pid").unlink(missing_ok=True)
        log.info("stopped; instances keep running")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
