"""Samples behind the dashboard's graphs: every `sample_interval` seconds the daemon reads each
running instance's CPU time, RAM, swap (its cgroup files) and network bytes (its veths, one netlink
dump for all) into a small round-robin store (two rings
per instance: one hour at the sample interval, one day at 5 minutes). Fixed slots: the table never
grows; the rows go with the instance (ON DELETE CASCADE)."""
from __future__ import annotations

import logging
import threading
import time

from ..domain.errors import InvalidArgument
from ..store.webstore import WebStore
from .metrics import instance_counters

log = logging.getLogger("openvps.samples")

LIVE = ("running", "suspended")
DAY_RES = 300
RANGES = {"1h": 3600, "1d": 86400}


def rings(interval: int) -> list[tuple[int, int]]:
    """(resolution seconds, slots): an hour at the sample interval, a day at 5 minutes."""
    interval = max(1, int(interval))
    out = [(interval, max(1, -(-3600 // interval)))]
    if interval < DAY_RES:
        out.append((DAY_RES, 86400 // DAY_RES))
    return out


def series(rows: list[dict]) -> list[dict]:
    """Points for the graphs: RAM and swap as sampled; CPU (percent of one CPU) and network
    (bytes/s) as rates between neighbouring samples (none across a restart, where counters drop)."""
    out = []
    prev = None
    for r in rows:
        p = {"t": r["time"], "memory": r["memory"], "swap": r["swap"], "cpu": None, "rx": None, "tx": None}
        if prev is not None:
            dt = r["time"] - prev["time"]
            if dt > 0:
                for key, out_key, scale in (("cpu_ns", "cpu", 100 / 1e9), ("rx", "rx", 1), ("tx", "tx", 1)):
                    a, b = prev[key], r[key]
                    if a is not None and b is not None and b >= a:
                        p[out_key] = round((b - a) / dt * scale, 3)
        out.append(p)
        prev = r
    return out


class SampleService:
    def __init__(self, node):
        self.node = node
        self.store = WebStore(node.store)
        self.interval = max(1, int(float(getattr(node.config, "sample_interval", 10) or 10)))

    def sample_once(self, now: float | None = None) -> int:
        """Read every running instance once; returns how many were sampled."""
        now = time.time() if now is None else now
        batch = {}
        try:
            traffic = self.node.network.traffic()     # one netlink dump for every instance
        except Exception:
            traffic = {}
        for row in self.node.store.list_instances():
            if row["state"] not in LIVE:
                continue
            try:     # the cgroup files only: no runc call per instance
                c = instance_counters(self.node, row["ctid"])
            except Exception:       # it stopped while we read
                continue
            if c.get("memory_bytes") is None:
                continue
            t = traffic.get(row["ctid"]) or {}
            batch[row["ctid"]] = {"cpu_ns": int(c["cpu_seconds"] * 1e9), "memory": c["memory_bytes"],
                                  "swap": c["swap_bytes"], "rx": t.get("rx_bytes"), "tx": t.get("tx_bytes")}
        # one write transaction per round, whatever the number of instances
        return self.store.put_samples(now, rings(self.interval), batch)

    def query(self, ctid: int, range_: str, now: float | None = None) -> dict:
        if range_ not in RANGES:
            raise InvalidArgument(f"range: one of {', '.join(RANGES)}", field="range")
        now = time.time() if now is None else now
        res = self.interval if range_ == "1h" or self.interval >= DAY_RES else DAY_RES
        rows = self.store.samples(ctid, res, now - RANGES[range_])
        return {"range": range_, "resolution": res, "points": series(rows)}


class Sampler:
    """The background thread (started by Node.start_background, stopped by Node.close)."""

    def __init__(self, node):
        self.svc = SampleService(node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openvps-samples", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.svc.interval):
            try:
                self.svc.sample_once()
            except Exception:
                log.exception("sampling failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
