"""Prometheus text exposition: per-instance counters straight from the cgroup files (no runc call),
node totals, and the API's request counts and latencies (recorded by api/metrics.py)."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from ..domain.instance import State

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


class RequestStats:
    """API request counts and a latency histogram per (method, route template)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.hist: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.counts[(method, route, status)] += 1
            h = self.hist.get((method, route))
            if h is None:
                h = self.hist[(method, route)] = [0.0] * (len(BUCKETS) + 2)   # buckets..., count, sum
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += 1
            h[-1] += seconds

    def render(self) -> list[str]:
        out = ["# HELP openvps_api_requests_total API requests by method, route and status",
               "# TYPE openvps_api_requests_total counter"]
        with self._lock:
            counts = dict(self.counts)
            hist = {k: list(v) for k, v in self.hist.items()}
        for (m, r, s), n in sorted(counts.items()):
            out.append(f"openvps_api_requests_total{_labels(method=m, route=r, status=s)} {n}")
        out += ["# HELP openvps_api_request_duration_seconds API request latency",
                "# TYPE openvps_api_request_duration_seconds histogram"]
        for (m, r), h in sorted(hist.items()):
            for i, b in enumerate(BUCKETS):
                out.append(f"openvps_api_request_duration_seconds_bucket{_labels(method=m, route=r, le=b)} {int(h[i])}")
            out.append(f"openvps_api_request_duration_seconds_bucket{_labels(method=m, route=r, le='+Inf')} {int(h[-2])}")
            out.append(f"openvps_api_request_duration_seconds_count{_labels(method=m, route=r)} {int(h[-2])}")
            out.append(f"openvps_api_request_duration_seconds_sum{_labels(method=m, route=r)} {h[-1]:.6f}")
        return out


def _int(v) -> int | None:
    try:
        return int(v) if v is not None and str(v).strip() not in ("", "max") else None
    except ValueError:
        return None


def instance_counters(node, ctid: int) -> dict[str, int | None]:
    cg, rel = node.cgroups, str(ctid)
    if cg.version == 1:
        mem = _int(cg.read("memory", rel, "memory.usage_in_bytes"))
        memsw = _int(cg.read("memory", rel, "memory.memsw.usage_in_bytes"))
        return {"cpu_seconds": (_int(cg.read("cpuacct", rel, "cpuacct.usage")) or 0) / 1e9,
                "memory_bytes": mem, "swap_bytes": memsw - mem if memsw is not None and mem is not None else None,
                "memory_limit_bytes": _int(cg.read("memory", rel, "memory.limit_in_bytes")),
                "memory_failcnt": _int(cg.read("memory", rel, "memory.failcnt")),
                "pids": _int(cg.read("pids", rel, "pids.current"))}
    stat = cg.read("", rel, "cpu.stat") or ""
    usec = next((_int(x.split()[1]) for x in stat.splitlines() if x.startswith("usage_usec")), None)
    events = cg.read("", rel, "memory.events") or ""
    failcnt = next((_int(x.split()[1]) for x in events.splitlines() if x.startswith("max ")), None)
    return {"cpu_seconds": (usec or 0) / 1e6, "memory_bytes": _int(cg.read("", rel, "memory.current")),
            "swap_bytes": _int(cg.read("", rel, "memory.swap.current")),
            "memory_limit_bytes": _int(cg.read("", rel, "memory.max")), "memory_failcnt": failcnt,
            "pids": _int(cg.read("pids", rel, "pids.current"))}


METRICS = {   # name: (type, help)
    "cpu_seconds": ("counter", "CPU time used by the instance"),
    "memory_bytes": ("gauge", "memory in use (RAM)"),
    "swap_bytes": ("gauge", "swap in use"),
    "memory_limit_bytes": ("gauge", "memory limit in effect"),
    "memory_failcnt": ("counter", "times the memory limit was hit (beancounter failcnt)"),
    "pids": ("gauge", "processes and threads"),
}


NET_METRICS = {   # from the instance's point of view (its veths, read in the node's namespace)
    "rx_bytes": "bytes the instance received",
    "tx_bytes": "bytes the instance sent",
    "rx_packets": "packets the instance received",
    "tx_packets": "packets the instance sent",
}


def render(node, stats: RequestStats | None = None) -> str:
    t0 = time.monotonic()
    rows, after = [], None
    while True:
        page = node.store.list_instances_page(after=after, limit=1000)
        rows += page
        if len(page) < 1000:
            break
        after = page[-1]["ctid"]
    by_state: dict[str, int] = defaultdict(int)
    for r in rows:
        by_state[r["state"]] += 1
    out = ["# HELP openvps_node_ram_bytes node RAM", "# TYPE openvps_node_ram_bytes gauge",
           f"openvps_node_ram_bytes {node.facts.ram_bytes}",
           "# HELP openvps_node_swap_bytes node swap", "# TYPE openvps_node_swap_bytes gauge",
           f"openvps_node_swap_bytes {node.facts.swap_bytes}",
           "# HELP openvps_node_cpus node CPUs", "# TYPE openvps_node_cpus gauge",
           f"openvps_node_cpus {node.facts.cpus}",
           "# HELP openvps_instances instances by state", "# TYPE openvps_instances gauge"]
    for st in State:
        out.append(f"openvps_instances{_labels(state=st.value)} {by_state.get(st.value, 0)}")
    running = [r for r in rows if r["state"] in (State.RUNNING, State.SUSPENDED)]
    values = {r["ctid"]: instance_counters(node, r["ctid"]) for r in running}
    totals: dict[str, float] = defaultdict(float)
    for key, (kind, help_text) in METRICS.items():
        name = f"openvps_instance_{key}" + ("_total" if kind == "counter" and not key.endswith("seconds") else "")
        if key == "cpu_seconds":
            name = "openvps_instance_cpu_seconds_total"
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for r in running:
            v = values[r["ctid"]].get(key)
            if v is not None:
                out.append(f"{name}{_labels(ctid=r['ctid'], name=r['name'], owner=r.get('owner') or 'admin')} {v}")
                totals[key] += v
    try:
        traffic = node.network.traffic()
    except Exception:       # a scrape never fails for want of network counters
        traffic = {}
    for key, help_text in NET_METRICS.items():
        name = f"openvps_instance_network_{key}_total"
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for r in running:
            t = traffic.get(r["ctid"])
            if t is not None:
                out.append(f"{name}{_labels(ctid=r['ctid'], name=r['name'], owner=r.get('owner') or 'admin')} {t[key]}")
                totals[f"network_{key}"] += t[key]
    for key in ("network_rx_bytes", "network_tx_bytes"):
        name = f"openvps_node_instances_{key}_total"
        out += [f"# HELP {name} sum over running instances", f"# TYPE {name} counter", f"{name} {int(totals[key])}"]
    for key in ("memory_bytes", "swap_bytes", "cpu_seconds"):
        name = f"openvps_node_instances_{key}" + ("_total" if key == "cpu_seconds" else "")
        kind = "counter" if key == "cpu_seconds" else "gauge"
        out += [f"# HELP {name} sum over running instances", f"# TYPE {name} {kind}", f"{name} {totals[key]}"]
    if stats is not None:
        out += stats.render()
    out += ["# HELP openvps_metrics_scrape_seconds time to build this page",
            "# TYPE openvps_metrics_scrape_seconds gauge", f"openvps_metrics_scrape_seconds {time.monotonic() - t0:.6f}"]
    return "\n".join(out) + "\n"
