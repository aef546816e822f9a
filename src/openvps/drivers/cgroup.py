"""cgroup v1 and v2 behind one small read/write interface (the Incus habit).

runc creates each instance's cgroup; we read counters, tidy the daemon's subtree, and never
create anything at a hierarchy root of our own accord."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class Cgroups:
    def __init__(self, parent: str, root: Path = ROOT):
        self.parent = "/" + parent.strip("/")
        self.root = root
        self.version = 2 if (root / "cgroup.controllers").exists() else 1

    def hierarchies(self) -> list[Path]:
        """Mounted v1 hierarchies (named ones like systemd excluded) or the v2 root."""
        if self.version == 2:
            return [self.root]
        out = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and not d.is_symlink() and d.name not in ("systemd", "unified") and (d / "cgroup.procs").exists():
                out.append(d)
        return out

    def path(self, controller: str, rel: str = "") -> Path:
        sub = (self.parent + "/" + rel.strip("/")).rstrip("/") if rel else self.parent
        base = self.root if self.version == 2 else self.root / controller
        return base / sub.lstrip("/")

    def instance_path(self, name: str) -> str:
        return f"{self.parent}/{name}"

    def read(self, controller: str, rel: str, key: str) -> str | None:
        try:
            return (self.path(controller, rel) / key).read_text().strip()
        except OSError:
            return None

    def write(self, controller: str, rel: str, key: str, value: str) -> None:
        (self.path(controller, rel) / key).write_text(value)

    # ---- counters (beancounters and events); every value an int, None meaning "no limit".
    # Read with raw os calls on string paths: 200 instances x ~20 files must stay well under 100 ms.
    def _dir(self, controller: str, rel: str) -> str:
        base = str(self.root) if self.version == 2 else f"{self.root}/{controller}"
        return f"{base}{self.parent}/{rel}".replace("//", "/")

    @staticmethod
    def _raw(d: str, key: str) -> bytes | None:
        try:
            fd = os.open(f"{d}/{key}", os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, 65536)
        except OSError:
            return None
        finally:
            os.close(fd)

    @classmethod
    def _n(cls, d: str, key: str) -> int | None:
        v = cls._raw(d, key)
        if not v:
            return None
        v = v.split(None, 1)[0]
        return None if v == b"max" or not v.isdigit() else int(v)

    @classmethod
    def _kv(cls, d: str, key: str) -> dict[str, int]:
        """A flat keyed file ('oom_kill 2', 'max 5') as a dict."""
        out = {}
        for line in (cls._raw(d, key) or b"").splitlines():
            k, _, v = line.partition(b" ")
            if v.strip().isdigit():
                out[k.decode()] = int(v)
        return out

    # kept for callers that name the controller (views.usage style)
    def _num(self, controller: str, rel: str, key: str) -> int | None:
        return self._n(self._dir(controller, rel), key)

    def _keyed(self, controller: str, rel: str, key: str) -> dict[str, int]:
        return self._kv(self._dir(controller, rel), key)

    _V1_MEMORY = (("mem_usage", "memory.usage_in_bytes"), ("mem_max_usage", "memory.max_usage_in_bytes"),
                  ("mem_limit", "memory.limit_in_bytes"), ("mem_soft_limit", "memory.soft_limit_in_bytes"),
                  ("mem_failcnt", "memory.failcnt"), ("memsw_usage", "memory.memsw.usage_in_bytes"),
                  ("memsw_max_usage", "memory.memsw.max_usage_in_bytes"),
                  ("memsw_limit", "memory.memsw.limit_in_bytes"), ("memsw_failcnt", "memory.memsw.failcnt"),
                  ("kmem_usage", "memory.kmem.usage_in_bytes"), ("kmem_max_usage", "memory.kmem.max_usage_in_bytes"),
                  ("kmem_limit", "memory.kmem.limit_in_bytes"), ("kmem_failcnt", "memory.kmem.failcnt"))

    def counters(self, rel: str) -> dict:
        """The raw counters behind the beancounters of the cgroup `rel` below our subtree, named as
        domain/accounting.py expects (bytes or counts). Keys whose file is missing are left out;
        limits are None when unlimited. Returns {} when the cgroup does not exist."""
        n, kv = self._n, self._kv
        out: dict = {}
        if self.version == 1:
            d = self._dir("memory", rel)
            usage = n(d, "memory.usage_in_bytes")
            if usage is None:
                return {}
            for key, f in self._V1_MEMORY:
                v = usage if key == "mem_usage" else n(d, f)
                if v is not None or key.endswith("limit"):
                    out[key] = v
            out["oom_kill"] = kv(d, "memory.oom_control").get("oom_kill", 0)
            pd, cd = self._dir("pids", rel), self._dir("cpu", rel)
        else:
            d = pd = cd = self._dir("", rel)
            cur = n(d, "memory.current")
            if cur is None:
                return {}
            out["mem_usage"] = cur
            out["mem_max_usage"] = n(d, "memory.peak") or 0
            out["mem_limit"] = n(d, "memory.max")
            out["mem_soft_limit"] = n(d, "memory.high")
            ev = kv(d, "memory.events")
            out["mem_failcnt"], out["oom_kill"] = ev.get("max", 0), ev.get("oom_kill", 0)
            sw = n(d, "memory.swap.current")
            if sw is not None:
                out["swap_usage"] = sw
                out["swap_max_usage"] = n(d, "memory.swap.peak") or 0
                out["swap_limit"] = n(d, "memory.swap.max")
                out["swap_failcnt"] = kv(d, "memory.swap.events").get("max", 0)
            stat = kv(d, "memory.stat")
            if "kernel" in stat:
                out["kmem_usage"] = stat["kernel"]
        cur = n(pd, "pids.current")
        if cur is not None:
            out["pids_current"] = cur
            out["pids_limit"] = n(pd, "pids.max")
            out["pids_max_events"] = kv(pd, "pids.events").get("max", 0)
            peak = n(pd, "pids.peak")
            if peak is not None:
                out["pids_peak"] = peak
        st = kv(cd, "cpu.stat")
        if "nr_throttled" in st:
            out["nr_throttled"] = st["nr_throttled"]
        return out

    def watch(self, rel: str) -> dict:
        """The cheap subset of counters() the daemon polls every second for limit and OOM events."""
        if self.version == 1:
            out = {"mem_failcnt": self._num("memory", rel, "memory.failcnt"),
                   "memsw_failcnt": self._num("memory", rel, "memory.memsw.failcnt"),
                   "oom_kill": self._keyed("memory", rel, "memory.oom_control").get("oom_kill")}
            pids = "pids"
        else:
            ev = self._keyed("", rel, "memory.events")
            out = {"mem_failcnt": ev.get("max"), "oom_kill": ev.get("oom_kill"),
                   "swap_failcnt": self._keyed("", rel, "memory.swap.events").get("max")}
            pids = ""
        out["pids_max_events"] = self._keyed(pids, rel, "pids.events").get("max")
        return {k: v for k, v in out.items() if v is not None}

    # what `beancounters --reset` may zero: cgroup v1 takes a 0 in these files; v2 keeps no resettable
    # global peak or failure counter (memory.peak resets only for the writer's own file descriptor)
    RESETTABLE_V1 = ("memory.max_usage_in_bytes", "memory.memsw.max_usage_in_bytes", "memory.kmem.max_usage_in_bytes",
                     "memory.failcnt", "memory.memsw.failcnt", "memory.kmem.failcnt")

    def reset(self, rel: str) -> list[str]:
        """Zero maxheld and failcnt where the kernel allows; returns the files that were reset."""
        done = []
        if self.version == 1:
            for f in self.RESETTABLE_V1:
                try:
                    self.write("memory", rel, f, "0")
                    done.append(f)
                except OSError:
                    pass
        return done

    def has(self, controller: str, key: str) -> bool:
        base = self.root if self.version == 2 else self.root / controller
        return (base / key).exists() or any(base.glob(f"*/{key}"))

    def leftovers(self) -> list[Path]:
        """Every cgroup dir under our subtree in any hierarchy (for tests and reconcile)."""
        found = []
        for h in self.hierarchies() + [p for p in (self.root / "unified", self.root / "systemd") if p.is_dir()]:
            top = h / self.parent.lstrip("/")
            if top.is_dir():
                found += [Path(d) for d, _s, _f in os.walk(top, topdown=False) if Path(d) != top]
        return found

    def prune(self, ancestors: str = "") -> list[Path]:
        """Remove empty cgroups below our subtree and the subtree itself where empty; with ancestors
        (our own memory cgroup path), also the empty dirs up to that path that runc made for us in the
        other hierarchies — never above it, so shared parents stay."""
        removed = []
        for h in self.hierarchies() + [p for p in (self.root / "unified", self.root / "systemd") if p.is_dir()]:
            top = h / self.parent.lstrip("/")
            if not top.is_dir():
                continue
            for d, _subdirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(d)
                    removed.append(Path(d))
                except OSError:
                    pass
            up, floor = top.parent, h / ancestors.strip("/")
            while ancestors.strip("/") and up.is_relative_to(floor):
                try:
                    os.rmdir(up)   # fails harmlessly while anything lives there (our own memory cgroup)
                except OSError:
                    break
                removed.append(up)
                up = up.parent
        return removed
