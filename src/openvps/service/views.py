"""How instances look to the faces: plain JSON-able dicts."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from ..domain import limits as L
from ..domain.instance import State


def iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.isoformat().replace("+00:00", "Z")


@lru_cache(maxsize=4096)
def _display_cached(items: tuple) -> dict:
    return L.render_all(dict(items))


def _display(limits: dict) -> dict:
    """limits_display, cached: most instances share a few limit sets, and rendering sizes is slow."""
    try:
        return dict(_display_cached(tuple(sorted(limits.items()))))
    except TypeError:   # an unhashable value: render it directly
        return L.render_all(limits)


def instance_view(node, row: dict, detail: bool = False, ips: dict | None = None) -> dict:
    out = {
        "ctid": row["ctid"], "name": row["name"], "state": row["state"], "template": row["template"],
        "hostname": row["hostname"], "init": row["init"], "privileged": bool(row.get("privileged")),
        "uid_base": row.get("uid_base"),
        "limits": row["limits"], "limits_display": _display(row["limits"]),
        "ip": (ips.get(row["ctid"], []) if ips is not None
               else node.netstore.addresses_of(row["ctid"]) if hasattr(node, "netstore") else []),
        "created_at": iso(row["created_at"]), "started_at": iso(row["started_at"]),
        "updated_at": iso(row["updated_at"]),
        "owner": row.get("owner", "admin"), "description": row.get("description") or "",
        "tags": row.get("tags") or {},
    }
    running = row["state"] in (State.RUNNING, State.SUSPENDED)
    if running and row.get("live"):
        out["live"] = {k: v for k, v in row["live"].items()}
    if detail:
        if hasattr(node, "networks"):
            out["network"] = node.networks.instance_info(row["ctid"])
        out["usage"] = usage(node, row) if running else {}
        out["console_log"] = str(node.config.log_dir / f"{row['ctid']}.console.log")
    return out


def usage(node, row: dict) -> dict:
    cg, rel = node.cgroups, str(row["ctid"])
    if cg.version == 1:
        mem = cg.read("memory", rel, "memory.usage_in_bytes")
        memsw = cg.read("memory", rel, "memory.memsw.usage_in_bytes")
        cpu = cg.read("cpuacct", rel, "cpuacct.usage")
        swap = int(memsw) - int(mem) if memsw and mem else None
    else:
        mem = cg.read("", rel, "memory.current")
        sw = cg.read("", rel, "memory.swap.current")
        stat = cg.read("", rel, "cpu.stat") or ""
        usec = next((int(x.split()[1]) for x in stat.splitlines() if x.startswith("usage_usec")), None)
        cpu = usec * 1000 if usec is not None else None
        swap = int(sw) if sw else None
    pids = cg.read("pids", rel, "pids.current")
    st = node.runtime.state(node.cid(row["ctid"]))
    return {
        "memory": int(mem) if mem else None, "swap": swap,
        "cpu_ns": int(cpu) if cpu else None, "pids": int(pids) if pids else None,
        "pid": st["pid"] if st else None,
    }


def instance_etag(row: dict) -> str:
    """Changes whenever the row does (every store update bumps updated_at)."""
    import hashlib
    return '"' + hashlib.sha1(f"instance|{row['ctid']}|{iso(row['updated_at'])}|{row['state']}".encode()).hexdigest()[:20] + '"'
