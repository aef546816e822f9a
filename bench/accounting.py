#!/usr/bin/env python3
"""Time to produce beancounters for N running instances (default 200; target: under 100 ms).

Starts its own daemon in a fresh temporary home (as bench/create_start.py does), starts N minimal
instances (64M each, submitted in parallel), then measures, interleaved over --rounds rounds:

  read   the kernel counters behind every instance's beancounters, in this process (the driver alone)
  API    GET /1.0/beancounters (every running instance: store + cgroup reads + JSON)
  CLI    `openvps beancounters --all` as a subprocess (Python start-up included)

and the cost of one poll of the event watcher's counters. Prints p50/p90 and PASS/MISS for the API
p50 against the target. Everything it made is removed in a finally block, Ctrl-C included.

    sudo .venv/bin/python bench/accounting.py [-n 200] [--rounds 20] [--json]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from create_start import OPENVPS, Daemon, log, pct, run_bench  # noqa: E402

from openvps.config import Config, own_memory_cgroup  # noqa: E402
from openvps.drivers.cgroup import Cgroups  # noqa: E402

TARGET_MS = 100.0
now = time.perf_counter


def bench(args, daemon: Daemon) -> dict:
    daemon.env["OPENVPS_LXCFS"] = "false" if args.no_lxcfs else "true"
    daemon.start()
    c = daemon.client
    log(f"starting {args.n} instances ({args.template}, 64M each)")
    t0 = now()
    ops = []
    for i in range(args.n):
        ops.append(c.create(name=f"bc-{i}", template=args.template, start=True,
                            limits={"ram": "64M", "swap": "0", "pids": 256}))
        if len(ops) >= 16:
            c.wait(ops.pop(0), timeout=120)
    for op in ops:
        c.wait(op, timeout=120)
    started = now() - t0
    ctids = [str(i["ctid"]) for i in c.instances() if i["state"] == "running"]
    if len(ctids) != args.n:
        raise RuntimeError(f"only {len(ctids)} of {args.n} instances are running")
    log(f"{args.n} running after {started:.1f} s; measuring {args.rounds} rounds")
    cg = Cgroups(f"{own_memory_cgroup().rstrip('/')}/openvps-{Config(home=str(daemon.home)).home_id}")
    samples: dict[str, list[float]] = {"read": [], "api": [], "cli": [], "watch": []}
    rows = 0
    for _ in range(args.rounds):
        t = now()
        for ctid in ctids:
            cg.counters(ctid)
        samples["read"].append(now() - t)
        t = now()
        tables = c.request("GET", "/1.0/beancounters")
        samples["api"].append(now() - t)
        rows = sum(len(x["rows"]) for x in tables)
        t = now()
        for ctid in ctids:
            cg.watch(ctid)
        samples["watch"].append(now() - t)
        t = now()
        p = subprocess.run([OPENVPS, "beancounters", "--all"], env=daemon.env, capture_output=True, text=True)
        samples["cli"].append(now() - t)
        if p.returncode != 0 or not p.stdout.startswith("Version: 2.5"):
            raise RuntimeError(f"beancounters --all failed: {p.stderr[-500:]}")
    ms = {k: {"p50": pct(v, 0.5) * 1000, "p90": pct(v, 0.9) * 1000, "n": len(v)} for k, v in samples.items()}
    return {"instances": args.n, "rows": rows, "start_all_s": started, "phases_ms": ms,
            "pass": ms["api"]["p50"] <= TARGET_MS}


def report(res: dict) -> None:
    print(f"openvps beancounters bench: {res['instances']} running instances, {res['rows']} rows "
          f"(started in {res['start_all_s']:.1f} s)")
    print(f"{'phase':<52} {'p50 ms':>9} {'p90 ms':>9} {'n':>4}")
    labels = {"read": "kernel counters of all (driver, in-process)", "api": "GET /1.0/beancounters (all)",
              "cli": "openvps beancounters --all (subprocess)", "watch": "event watcher poll (cheap counters)"}
    for k, label in labels.items():
        m = res["phases_ms"][k]
        print(f"{label:<52} {m['p50']:>9.1f} {m['p90']:>9.1f} {m['n']:>4}")
    print(f"API p50 {res['phases_ms']['api']['p50']:.1f} ms   target < {TARGET_MS:.0f} ms   "
          f"{'PASS' if res['pass'] else 'MISS'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="running instances (default 200)")
    ap.add_argument("--rounds", type=int, default=20, help="measured rounds (default 20)")
    ap.add_argument("--template", default="minimal")
    ap.add_argument("--template-dir", default="/var/cache/openvps-test/templates", help="shared template cache")
    ap.add_argument("--no-lxcfs", action="store_true", help="run the daemon without lxcfs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("needs root (mounts, runc, cgroups)")

    tdir = Path(args.template_dir)
    if not (tdir / args.template / "template.json").exists():
        from openvps.drivers.templates.cache import TemplateCache
        TemplateCache(tdir).build(args.template)
    return run_bench(args, "openvps-bench-acct-", lambda root, daemon, state: bench(args, daemon), report)


if __name__ == "__main__":
    sys.exit(main())
