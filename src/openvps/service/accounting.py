"""Accounting: beancounters, limit/OOM events, overcommit (capacity, admission, split), and the
daemon's background helpers (the event watcher, the node's lxcfs and its supervisor)."""
from __future__ import annotations

import errno
import logging
import os
import threading
from datetime import datetime, timezone

from ..domain import accounting as A
from ..domain.errors import InvalidArgument, NotFound
from ..domain.instance import State, parse_ident
from ..drivers.lxcfs import Lxcfs
from .ops import Operation, Progress
from .users import ROOT, Actor
from .views import iso

log = logging.getLogger("openvps.accounting")

LIVE = (State.RUNNING.value, State.SUSPENDED.value)


def effective_limits(row: dict) -> dict:
    """The limits in effect: the live ones while running, else the saved ones (old rows may lack keys)."""
    live = {k: v for k, v in (row.get("live") or {}).items() if k in row["limits"] or k in ("guarantee", "cpuguarantee")}
    base = dict(row["limits"])
    if row["state"] in LIVE and live:
        base.update(live)
    return base


class AccountingService:
    def __init__(self, node):
        self.node = node
        self.store = node.store

    # ---------------------------------------------------------------- beancounters
    def _table(self, row: dict) -> dict:
        raw = self.node.cgroups.counters(str(row["ctid"])) if row["state"] in LIVE else {}
        limits = effective_limits(row)
        rows = A.beancounters(raw, guarantee=A.guarantee_of(limits), cpulimit=limits.get("cpulimit", 0)) if raw else []
        return {"ctid": row["ctid"], "name": row["name"], "state": row["state"], "version": A.VERSION,
                "rows": [r.to_dict() for r in rows]}

    def _row(self, ident, actor: Actor) -> dict:
        key = parse_ident(ident)
        row = self.store.find_instance(key)
        if row is None or not actor.owns(row):   # another user's: missing, like everywhere
            raise NotFound(f"no instance {key!r}; `openvps list` shows the instances", instance=str(key))
        return row

    def beancounters(self, ident, actor: Actor = ROOT) -> dict:
        return self._table(self._row(ident, actor))

    def beancounters_all(self, actor: Actor = ROOT) -> list[dict]:
        return [self._table(r) for r in self.store.list_instances() if r["state"] in LIVE and actor.owns(r)]

    def reset(self, ident, actor: Actor = ROOT) -> dict:
        row = self._row(ident, actor)
        if row["state"] not in LIVE:
            raise InvalidArgument(f"instance {row['name']} is {row['state']}: its counters start from zero at "
                                  "the next start; nothing to reset")
        op = Operation(kind="instance.beancounters_reset", target=row["name"], args={"ctid": row["ctid"]},
                       lock=f"instance:{row['ctid']}", owner=row.get("owner") or ROOT.name)

        def run(o: Operation, _p: Progress) -> dict:
            done = self.node.cgroups.reset(str(o.args["ctid"]))
            kept = ["numproc failcnt (pids.events)", "oomguarpages failcnt (oom_kill)", "cputhrottle"]
            if not done:
                kept = ["all: this kernel (cgroup v2) keeps no resettable peak or failure counters"]
            cur = self.store.get_instance(o.args["ctid"])
            return {"reset": done, "not_resettable": kept, "beancounters": self._table(cur)}
        return self.node.runner.submit(op, run)

    # ---------------------------------------------------------------- events
    def events(self, ident=None, limit: int = 100, actor: Actor = ROOT) -> list[dict]:
        ctid = self._row(ident, actor)["ctid"] if ident is not None else None
        if ctid is not None or actor.admin:
            return [event_view(e) for e in self.store.list_limit_events(ctid=ctid, limit=limit)]
        mine = {r["ctid"] for r in self.store.list_instances() if actor.owns(r)}
        return [event_view(e) for e in self.store.list_limit_events(limit=10_000) if e["ctid"] in mine][:limit]

    # ---------------------------------------------------------------- overcommit
    def capacity(self) -> dict:
        f = self.node.facts
        rows = self.store.list_instances()
        cap = A.capacity(f.ram_bytes, f.swap_bytes, float(self.node.config.overcommit_ratio),
                         [{"name": r["name"], "limits": r["limits"]} for r in rows])
        cap["per_instance"] = [{"ctid": r["ctid"], "name": r["name"], "state": r["state"],
                                "guarantee": A.guarantee_of(r["limits"]), "limit": A.limit_of(r["limits"])}
                               for r in rows]
        return cap

    def admit(self, name: str, values: dict, old: dict | None = None) -> None:
        """Admission control for a create (old None) or a change of an existing instance's limits
        (old: its limits as counted now): the sum of guarantees must fit what the node may promise.
        A change that does not raise the guarantee is always allowed."""
        f = self.node.facts       # only the sums: not capacity()'s per-instance table
        cap = A.capacity(f.ram_bytes, f.swap_bytes, float(self.node.config.overcommit_ratio),
                         [{"limits": lim} for lim in self.store.instance_limits()])
        A.admit(cap, A.guarantee_of(values), A.guarantee_of(old) if old else 0, name=name)

    def split(self, n: int) -> dict:
        f = self.node.facts
        try:
            return A.split(n, f.ram_bytes, f.swap_bytes, f.cpus, float(self.node.config.overcommit_ratio))
        except ValueError as e:
            raise InvalidArgument(str(e)) from None


def event_view(e: dict) -> dict:
    return {"id": e["id"], "time": iso(e["time"]), "ctid": e["ctid"], "instance": e["instance"],
            "resource": e["resource"], "kind": e["kind"], "count": e["count"], "process": e["process"],
            "message": e["message"], "advice": e["advice"]}


# ---------------------------------------------------------------- the kernel log
class KernelLog:
    """OOM-kill lines from /dev/kmsg, each read once. If the log is not readable, names stay unknown."""

    def __init__(self, path: str = "/dev/kmsg"):
        self.path = path
        self.last_seq = -1
        self.readable = True
        self.new_lines()            # skip what was logged before we started

    def new_lines(self) -> list[str]:
        if not self.readable:
            return []
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            self.readable = False
            return []
        out = []
        try:
            while True:
                try:
                    rec = os.read(fd, 8192).decode(errors="replace")
                except BlockingIOError:
                    break
                except BrokenPipeError:     # a record was overwritten while we read: go on
                    continue
                except OSError as e:
                    if e.errno == errno.EPIPE:
                        continue
                    self.readable = False
                    break
                if not rec:
                    break
                head, _, msg = rec.partition(";")
                parts = head.split(",")
                seq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
                if seq > self.last_seq:
                    self.last_seq = seq
                    out.append(msg.split("\n", 1)[0])
        finally:
            os.close(fd)
        return out


def _aware(t: datetime | None) -> datetime | None:
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=timezone.utc)
    return t


class EventWatcher:
    """Polls the cheap counters of running instances every interval and records what increased."""

    def __init__(self, node, interval: float = 1.0, kernel_log: KernelLog | None = None):
        self.node = node
        self.interval = interval
        self.kmsg = kernel_log if kernel_log is not None else KernelLog()
        self.since = datetime.now(timezone.utc)
        self.prev: dict[int, tuple] = {}        # ctid -> (started_at, counters)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openvps-events", daemon=True)

    def start(self) -> "EventWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:
                log.exception("event poll failed")

    def poll(self) -> list[dict]:
        recorded = []
        seen = set()
        for row in self.node.store.list_instances():
            if row["state"] not in LIVE:
                continue
            ctid, started = row["ctid"], _aware(row["started_at"])
            seen.add(ctid)
            cur = self.node.cgroups.watch(str(ctid))
            if not cur:
                continue
            prev = self.prev.get(ctid)
            if prev is None or prev[0] != started:
                # first sight: a cgroup made after we started counts from zero, an older one from now
                prev = (started, {} if started and started >= self.since else cur)
            self.prev[ctid] = (started, cur)
            limits = effective_limits(row)
            events = A.detect(prev[1], cur, name=row["name"], limits=limits)
            if any(e.kind == "oom_kill" for e in events):
                names = A.kills_in(self.kmsg.new_lines(), self.node.cgroups.instance_path(str(ctid)))
                events = A.detect(prev[1], cur, name=row["name"], limits=limits, processes=names[-10:])
            for e in events:
                recorded.append(self.node.store.add_limit_event(ctid=ctid, instance=row["name"], **e.to_dict()))
                # and into the one event stream (GET /1.0/events, SSE) beside lifecycle events
                self.node.event("instance.limit", row, **e.to_dict())
                log.warning("instance %s: %s; %s", row["name"], e.message, e.advice)
        for gone in set(self.prev) - seen:
            del self.prev[gone]
        return recorded


# ---------------------------------------------------------------- lxcfs supervision
class LxcfsSupervisor:
    """Keeps the node's lxcfs alive: restarts it when it dies and re-mounts its files into every
    running instance (their old bind mounts point at the dead FUSE connection)."""

    def __init__(self, node, lxcfs: Lxcfs, interval: float = 1.0):
        self.node, self.lxcfs, self.interval = node, lxcfs, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openvps-lxcfs", daemon=True)

    def start(self) -> "LxcfsSupervisor":
        self.lxcfs.start()
        self.remount_all()          # instances that kept running while the daemon was away
        self._thread.start()
        return self

    def _running_pids(self) -> list[int]:
        pids = []
        for row in self.node.store.list_instances():
            if row["state"] in LIVE:
                st = self.node.runtime.state(self.node.cid(row["ctid"]))
                if st and st.get("pid"):
                    pids.append(st["pid"])
        return pids

    def remount_all(self) -> int:
        return sum(1 for pid in self._running_pids() if self.lxcfs.remount(pid))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.lxcfs.running():
                continue
            log.warning("lxcfs is not running (exit code %s): restarting it",
                        self.lxcfs.proc.returncode if self.lxcfs.proc else None)
            try:
                self.lxcfs.stop()
                self.lxcfs.start()
                self.lxcfs.restarts += 1
                n = self.remount_all()
                log.info("lxcfs restarted; re-mounted its files in %d running instance(s)", n)
            except Exception:
                log.exception("could not restart lxcfs; will try again")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for pid in self._running_pids():      # instances fall back to the kernel's own /proc files
            self.lxcfs.detach(pid)
        self.lxcfs.stop()


def start_background(node) -> list:
    """Start the daemon's helpers; returns them in start order (Node.close stops them in reverse)."""
    out = []
    cfg = node.config
    if cfg.lxcfs:
        lx = Lxcfs(cfg.home_path / "lxcfs", binary=cfg.lxcfs_binary, log_path=cfg.log_dir / "lxcfs.log")
        if not lx.available():
            log.warning("lxcfs is enabled but %r is not installed: instances will see the node's /proc/meminfo; "
                        "install the Debian package lxcfs or set lxcfs = false", cfg.lxcfs_binary)
        else:
            try:
                out.append(LxcfsSupervisor(node, lx).start())
                node.lxcfs = lx
            except Exception as e:
                log.warning("lxcfs did not start (%s): instances will see the node's /proc/meminfo", e)
    out.append(EventWatcher(node, interval=float(cfg.events_interval)).start())
    return out
