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


def _tcp(listen: str, tls: bool = False) -> tuple[str, int]:
    """TCP always needs a bearer token; beyond loopback it also needs TLS (tls_cert + tls_key),
    or tokens would cross the network in clear text."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
        p = int(port)
    except ValueError:
        raise InvalidArgument(f"listen={listen!r}: write it as 127.0.0.1:8443 (or 0.0.0.0:8443 with TLS)") from None
    if not addr.is_loopback and not tls:
        raise InvalidArgument(f"listen={listen}: a non-loopback address needs TLS — set tls_cert and tls_key "
                              "(config.toml or OPENVPS_TLS_CERT/OPENVPS_TLS_KEY), or listen on 127.0.0.1")
    if not 0 < p < 65536:
        raise InvalidArgument(f"listen={listen}: port from 1 to 65535")
    return host, p


def _tls(cfg: Config) -> dict:
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise InvalidArgument("TLS needs both tls_cert and tls_key")
    for f in (cfg.tls_cert, cfg.tls_key):
        if f and not Path(f).is_file():
            raise InvalidArgument(f"TLS file {f} does not exist")
    return {"ssl_certfile": cfg.tls_cert, "ssl_keyfile": cfg.tls_key} if cfg.tls_cert else {}


async def _optional(server) -> None:
    """A server the daemon can live without (the EC2 port, on by default): if its port is taken, say so
    and keep serving the rest, rather than exit (uvicorn exits when it cannot bind)."""
    try:
        await server.serve()
    except SystemExit:
        log.error("the EC2 API could not listen on %s:%s (port in use?); set ec2_listen to another port, or "
                  "empty to turn it off", server.config.host, server.config.port)


def serve(cfg: Config) -> None:
    from .api.app import create_app
    from .api.auth import tcp_app
    from .service.node import Node

    tls = _tls(cfg)
    tcp = _tcp(cfg.listen, tls=bool(tls)) if cfg.listen else None
    ec2 = _tcp(cfg.ec2_listen, tls=bool(tls)) if cfg.ec2_listen else None
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
    # open event streams and long-polls must not hold a stopping daemon: cut them after 5 s
    servers = [uvicorn.Server(uvicorn.Config(app, uds=str(sock), log_level="warning", access_log=False,
                                             ws_max_size=1 << 20, timeout_graceful_shutdown=5))]
    if tcp:
        servers.append(uvicorn.Server(uvicorn.Config(tcp_app(app), host=tcp[0], port=tcp[1], log_level="warning",
                                                     access_log=False, ws_max_size=1 << 20,
                                                     timeout_graceful_shutdown=5, **tls)))
    optional = []
    if ec2:     # the EC2-compatible API: its own app and port, same process and event loop
        from .api.ec2.app import create_ec2_app
        optional.append(len(servers))
        servers.append(uvicorn.Server(uvicorn.Config(create_ec2_app(node, cfg.ec2_region), host=ec2[0], port=ec2[1],
                                                     log_level="warning", access_log=False,
                                                     timeout_graceful_shutdown=5, **tls)))
    try:
        async def main():
            tasks = [asyncio.create_task(_optional(s) if i in optional else s.serve()) for i, s in enumerate(servers)]
            await asyncio.sleep(0)
            os.umask(old_umask)
            scheme = "https" if tls else "http"
            log.info("serving on %s%s", sock, f" and {scheme}://{tcp[0]}:{tcp[1]} (bearer tokens)" if tcp else "")
            if ec2:
                log.info("EC2 API on %s://%s:%s (SigV4 access keys)", scheme, ec2[0], ec2[1])
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
