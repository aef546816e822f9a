"""Accounting the OpenVZ way, as pure arithmetic (no I/O):

- beancounters: rows of /proc/user_beancounters (held, maxheld, barrier, limit, failcnt) computed from
  the kernel's raw cgroup counters (a flat dict the cgroup driver reads, v1 or v2 alike);
- events: what changed between two readings of the cheap counters (OOM kills, limit hits);
- overcommit: guarantees against the node's RAM+swap, admission control, and vzsplit.

Units: physpages and swappages in 4 KiB pages, kmemsize in bytes, numproc in processes."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import InsufficientResources
from .sizes import format_size

UNLIMITED = 9223372036854775807          # what OpenVZ prints for "no limit" (LONG_MAX)
PAGE = 4096
# cgroup v1 prints "no limit" as LONG_MAX rounded down to a page (9223372036854771712); v2 as "max"
_UNLIMITED_FLOOR = 1 << 62
VERSION = "2.5"
COLUMNS = ("uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt")


@dataclass(frozen=True)
class Row:
    resource: str
    held: int
    maxheld: int
    barrier: int
    limit: int
    failcnt: int

    def to_dict(self) -> dict:
        return {"resource": self.resource, "held": self.held, "maxheld": self.maxheld, "barrier": self.barrier,
                "limit": self.limit, "failcnt": self.failcnt}


def is_unlimited(v: int | None) -> bool:
    return v is None or v >= _UNLIMITED_FLOOR


def pages(nbytes: int | None) -> int:
    """Bytes -> 4 KiB pages; unlimited stays unlimited."""
    if is_unlimited(nbytes):
        return UNLIMITED
    return max(0, int(nbytes)) // PAGE


def _lim(v: int | None) -> int:
    return UNLIMITED if is_unlimited(v) else int(v)


def _g(raw: dict, key: str, default: int = 0) -> int:
    v = raw.get(key)
    return default if v is None else int(v)


def beancounters(raw: dict, guarantee: int | None = None, cpulimit: int = 0) -> list[Row]:
    """Beancounter rows from raw counters (keys as the cgroup driver names them; missing keys are 0,
    missing limits unlimited). `guarantee` (bytes) is the instance's promised memory (oomguarpages
    barrier); `cpulimit` (percent) the CPU cap shown in the cputhrottle row."""
    rows = []
    mem, mem_max, mem_lim = _g(raw, "mem_usage"), _g(raw, "mem_max_usage"), raw.get("mem_limit")
    soft = raw.get("mem_soft_limit")
    barrier = soft if not is_unlimited(soft) else mem_lim
    rows.append(Row("physpages", pages(mem), pages(max(mem, mem_max)), pages(barrier), pages(mem_lim),
                    _g(raw, "mem_failcnt")))

    # swap: v1 accounts mem+swap together (memsw); v2 has swap on its own
    if "swap_usage" in raw or "swap_limit" in raw:
        sw = _g(raw, "swap_usage")
        sw_max = max(sw, _g(raw, "swap_max_usage"))
        sw_lim = raw.get("swap_limit")
        sw_fail = _g(raw, "swap_failcnt")
    else:
        memsw, memsw_max, memsw_lim = _g(raw, "memsw_usage"), _g(raw, "memsw_max_usage"), raw.get("memsw_limit")
        sw = max(0, memsw - mem)
        # the kernel keeps no swap peak in v1: RAM never exceeds its limit, so at the mem+swap peak
        # at least (peak - RAM limit) was in swap; that lower bound is what we show
        floor = memsw_max - mem_lim if not is_unlimited(mem_lim) else 0
        sw_max = max(sw, floor, 0)
        sw_lim = None if is_unlimited(memsw_lim) or is_unlimited(mem_lim) else max(0, memsw_lim - mem_lim)
        sw_fail = _g(raw, "memsw_failcnt")
    rows.append(Row("swappages", pages(sw), pages(sw_max), pages(sw_lim), pages(sw_lim), sw_fail))

    if "kmem_usage" in raw:
        k = _g(raw, "kmem_usage")
        rows.append(Row("kmemsize", k, max(k, _g(raw, "kmem_max_usage")), _lim(raw.get("kmem_limit")),
                        _lim(raw.get("kmem_limit")), _g(raw, "kmem_failcnt")))

    # OpenVZ's oomguarpages: RAM+swap held against the guarantee; its failcnt counts OOM kills
    held_total = pages(mem) + pages(sw)
    rows.append(Row("oomguarpages", held_total, max(held_total, pages(max(mem, mem_max)) + pages(sw_max)),
                    pages(guarantee) if guarantee else UNLIMITED, UNLIMITED, _g(raw, "oom_kill")))

    if "pids_current" in raw:
        n = _g(raw, "pids_current")
        lim = _lim(raw.get("pids_limit"))
        rows.append(Row("numproc", n, max(n, _g(raw, "pids_peak")), lim, lim, _g(raw, "pids_max_events")))

    if "nr_throttled" in raw:
        t = _g(raw, "nr_throttled")
        cap = cpulimit if cpulimit else UNLIMITED
        rows.append(Row("cputhrottle", t, t, cap, cap, t))
    return rows


def render_table(tables: list[tuple[int, list[Row]]]) -> str:
    """The /proc/user_beancounters text for one or more instances (uid = CTID)."""
    out = [f"Version: {VERSION}",
           f"{'uid':>10}  {'resource':<16}{'held':>20} {'maxheld':>20} {'barrier':>20} {'limit':>20} {'failcnt':>20}"]
    for uid, rows in tables:
        for i, r in enumerate(rows):
            first = f"{str(uid) + ':':>10}" if i == 0 else " " * 10
            out.append(f"{first}  {r.resource:<16}{r.held:>20} {r.maxheld:>20} {r.barrier:>20} "
                       f"{r.limit:>20} {r.failcnt:>20}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- events
# the counters the daemon polls every second (cheap reads), and what an increase means
WATCHED = {
    "oom_kill": ("oomguarpages", "oom_kill",
                 "the OOM killer killed {process} in {name}: its RAM+swap ({ram} + {swap}) was used up",
                 "raise --ram or --swap (openvps set {name} --ram ... --swap ... --save), "
                 "or make the program use less memory"),
    "mem_failcnt": ("physpages", "limit_hit",
                    "{name} hit its RAM limit ({ram}) {count} time(s); the kernel reclaimed or swapped pages",
                    "raise --ram if this keeps happening"),
    "memsw_failcnt": ("swappages", "limit_hit",
                      "{name} hit its RAM+swap limit ({ram} + {swap}) {count} time(s)",
                      "raise --swap or --ram"),
    "swap_failcnt": ("swappages", "limit_hit",
                     "{name} hit its swap limit ({swap}) {count} time(s)", "raise --swap or --ram"),
    "pids_max_events": ("numproc", "limit_hit",
                        "{name} could not fork {count} time(s): its process limit ({pids}) was reached",
                        "raise --pids, or find the process that forks without end"),
}


@dataclass(frozen=True)
class Event:
    resource: str
    kind: str          # "oom_kill" | "limit_hit"
    count: int         # how many times since the last reading
    message: str
    advice: str
    process: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def detect(prev: dict, cur: dict, *, name: str, limits: dict, processes: list[str] | None = None) -> list[Event]:
    """Events from two readings of the watched counters. A counter that went down (a reset, or a new
    cgroup after a restart) starts again from its new value without an event. When both an OOM kill
    and the RAM limit hits it caused are seen, the OOM kill says it all (the failcnt row is dropped)."""
    out = []
    for key, (resource, kind, text, advice) in WATCHED.items():
        if key not in cur:
            continue
        delta = int(cur[key]) - int(prev.get(key, 0))
        if delta <= 0:
            continue
        procs = ", ".join(processes or []) if key == "oom_kill" else ""
        fields = {"name": name, "count": delta, "process": procs or "a process (name unknown: kernel log not readable)",
                  "ram": format_size(limits.get("ram")), "swap": format_size(limits.get("swap")),
                  "pids": limits.get("pids") or "unlimited"}
        if key == "oom_kill" and delta > 1:
            fields["process"] = procs or f"{delta} processes (names unknown: kernel log not readable)"
        out.append(Event(resource, kind, delta, text.format(**fields), advice.format(**fields),
                         procs if key == "oom_kill" else ""))
    if any(e.kind == "oom_kill" for e in out):
        out = [e for e in out if not (e.kind == "limit_hit" and e.resource in ("physpages", "swappages"))]
    return out


def parse_oom_kill_line(line: str) -> dict | None:
    """A kernel log line 'oom-kill:constraint=...,oom_memcg=/a/b,task_memcg=/a/b,task=dd,pid=2729,uid=0'."""
    i = line.find("oom-kill:")
    if i < 0:
        return None
    fields = {}
    for part in line[i + len("oom-kill:"):].strip().split(","):
        k, sep, v = part.partition("=")
        if sep:
            fields[k] = v
    if "task" not in fields:
        return None
    return {"memcg": fields.get("task_memcg", ""), "oom_memcg": fields.get("oom_memcg", ""),
            "task": fields["task"], "pid": int(fields["pid"]) if fields.get("pid", "").isdigit() else None}


def kills_in(lines: list[str], cgroup_path: str) -> list[str]:
    """'name (pid N)' for each OOM kill the kernel logged inside cgroup_path (or below it)."""
    out = []
    want = "/" + cgroup_path.strip("/")
    for line in lines:
        k = parse_oom_kill_line(line)
        if k and (k["memcg"] == want or k["memcg"].startswith(want + "/")):
            out.append(f"{k['task']} (pid {k['pid']})" if k["pid"] is not None else k["task"])
    return out


# ---------------------------------------------------------------- overcommit
def guarantee_of(limits: dict) -> int:
    """What an instance is promised: its `guarantee`, or its ram when that is 0 (the default)."""
    return int(limits.get("guarantee") or limits.get("ram") or 0)


def limit_of(limits: dict) -> int:
    return int(limits.get("ram", 0)) + int(limits.get("swap", 0))


def capacity(ram: int, swap: int, ratio: float, instances: list[dict]) -> dict:
    """instances: [{"name", "limits"}]. Promises are counted for every instance the node holds
    (a stopped instance may be started at any time)."""
    total = ram + swap
    budget = int(total * ratio)
    g = sum(guarantee_of(i["limits"]) for i in instances)
    lim = sum(limit_of(i["limits"]) for i in instances)
    return {"ram": ram, "swap": swap, "overcommit_ratio": ratio, "promisable": budget,
            "guarantees": g, "limits": lim, "instances": len(instances),
            "free_to_promise": max(0, budget - g),
            "guarantee_ratio": round(g / total, 4) if total else 0.0,
            "limit_ratio": round(lim / total, 4) if total else 0.0}


def admit(cap: dict, new_guarantee: int, old_guarantee: int = 0, name: str = "") -> None:
    """Refuse a create (old_guarantee=0) or a change that would push the sum of guarantees over what
    the node may promise ((RAM+swap) x overcommit_ratio)."""
    after = cap["guarantees"] - old_guarantee + new_guarantee
    if new_guarantee <= old_guarantee or after <= cap["promisable"]:
        return
    free = max(0, cap["promisable"] - (cap["guarantees"] - old_guarantee))
    raise InsufficientResources(
        f"cannot promise {format_size(new_guarantee)} to {name or 'the instance'}: guarantees would total "
        f"{format_size(after)}, more than this node may promise ({format_size(cap['promisable'])} = "
        f"(RAM {format_size(cap['ram'])} + swap {format_size(cap['swap'])}) x overcommit_ratio "
        f"{cap['overcommit_ratio']}); {format_size(free)} is free to promise. Choose a smaller --ram or "
        "--guarantee, destroy an instance you no longer need, or raise overcommit_ratio in the config",
        needed=new_guarantee, free=free, promisable=cap["promisable"])


MIB = 1 << 20


def split(n: int, ram: int, swap: int, cpus: int, ratio: float = 1.0) -> dict:
    """vzsplit: the sizes of n equal instances that fill this node. The node keeps a reserve for itself
    (max(256M, 5% of RAM)); RAM and swap are shared out evenly (RAM x overcommit_ratio), each instance
    is guaranteed its RAM and an even share of the CPUs, and may burst to all of them."""
    if n < 1:
        raise ValueError("split needs at least 1 instance")
    reserve = max(256 * MIB, ram // 20)
    per_ram = int((ram - reserve) * ratio / n) // MIB * MIB
    per_swap = int(swap * ratio / n) // MIB * MIB
    if per_ram < 16 * MIB:
        raise InsufficientResources(f"{n} instances would get {format_size(per_ram)} of RAM each, less than "
                                    "the 16M minimum; split into fewer instances", n=n)
    guarantee_pct = max(1, 100 * cpus // n)
    return {"instances": n, "ram": per_ram, "swap": per_swap, "guarantee": per_ram,
            "cpuguarantee": min(guarantee_pct, 100 * cpus), "cpuunits": 1000,
            "pids": max(16, min(4194304, 32768 // max(1, n) * 4)), "node_reserve": reserve}


# ---------------------------------------------------------------- CPU
SHARES_SCALE = 262144   # cgroup v1 cpu.shares range top


def cpu_shares(cpuunits: int, cpuguarantee: int, cpus: int) -> int:
    """cpu.shares for an instance: its cpuunits (x1024/1000), raised so that a guaranteed g% of one CPU
    holds under contention: g% of the node's CPUs as a fraction of the whole shares range. Instances
    whose guarantees add up to at most the node get at least their share against default-weight ones."""
    base = max(2, cpuunits * 1024 // 1000)
    if not cpuguarantee:
        return base
    frac = cpuguarantee / (100 * max(1, cpus))
    return max(base, min(SHARES_SCALE, int(frac * SHARES_SCALE)))
