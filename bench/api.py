#!/usr/bin/env python3
"""REST API latency: GET one instance, list 10,000 instances (one page of 500 and the full walk),
and create 100 real instances concurrently.

Part 1 (no containers): a temporary home whose store gets N (10,000) instance rows inserted
directly; the real API app is served by uvicorn on a Unix socket in this process (fake runtime and
storage drivers, so no runc is involved and the list path is what is measured) and driven through
the SDK (openvps.client.Client), like the CLI does. Targets: GET p50 < 5 ms, a page of 500 < 50 ms,
the full walk < 1 s.

Part 2 (root, real runc; skip with --no-real): a real `openvps serve` in another temporary home
on the shared template cache; 100 threads each POST a create {start: true} of a `minimal` instance
and follow its operation; then all are destroyed. Prints wall time and p50/p99 per create.

Everything it made is removed in a finally block.

    sudo .venv/bin/python bench/api.py [-n 10000] [--rounds 200] [--concurrent 100] [--no-real] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openvps.client import Client

now = time.perf_counter
OPENVPS = str(Path(sys.executable).parent / "openvps")
TARGETS = {"get_p50_ms": 5.0, "page500_p50_ms": 50.0, "walk_ms": 1000.0}


def log(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def stats_ms(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": round(pct(xs, 50) * 1000, 2), "p99_ms": round(pct(xs, 99) * 1000, 2),
            "mean_ms": round(statistics.mean(xs) * 1000, 2)}


def part_list(n: int, rounds: int) -> dict:
    import uvicorn
    from sqlalchemy import insert

    from openvps.api.app import create_app
    from openvps.config import Config
    from openvps.domain.limits import NodeFacts, defaults
    from openvps.drivers.cgroup import Cgroups
    from openvps.drivers.runtime.fake import FakeRuntime
    from openvps.drivers.storage.fake import FakeStorage
    from openvps.service.node import Node
    from openvps.store.models import InstanceRow, utcnow

    home = Path(tempfile.mkdtemp(prefix="ovps-bench-api-"))
    server = thread = node = None
    try:
        cfg = Config(home=str(home)).finish()
        cgroot = home / "cg"
        cgroot.mkdir()
        (cgroot / "cgroup.controllers").write_text("memory\n")
        node = Node(cfg, runtime=FakeRuntime(), storage=FakeStorage(),
                    cgroups=Cgroups(cfg.cgroup_parent, root=cgroot), facts=NodeFacts(8 << 30, 0, 4))
        t0 = now()
        lim, ts = defaults(), utcnow()
        rows = [dict(ctid=100 + i, name=f"vm{i}", template="minimal", state="running" if i % 3 else "stopped",
                     hostname=f"vm{i}.example", init="busybox", stop_signal="SIGTERM", limits=lim, live={},
                     created_at=ts, updated_at=ts, started_at=None, privileged=False, uid_base=None,
                     owner="admin" if i % 2 else "alice", description="", tags={"n": str(i % 10)})
                for i in range(n)]
        with node.store._write_lock, node.store.engine.begin() as conn:
            conn.execute(insert(InstanceRow.__table__), rows)
        log(f"inserted {n} rows in {now() - t0:.2f}s")
        sock = home / "api.sock"
        server = uvicorn.Server(uvicorn.Config(create_app(node), uds=str(sock), log_level="warning",
                                               access_log=False))
        server.install_signal_handlers = lambda: None
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        c = Client(socket_path=str(sock))
        for _ in range(20):   # warm up
            c.instance(100 + n // 2)
            c.instances_page(limit=500)
        get = []
        for i in range(rounds):
            t = now()
            c.instance(100 + (i * 7919) % n)
            get.append(now() - t)
        page = []
        for i in range(max(20, rounds // 10)):
            t = now()
            got = c.instances_page(limit=500)
            page.append(now() - t)
            assert len(got["items"]) == 500
        walk = []
        for _ in range(5):
            t = now()
            items = c.instances()
            walk.append(now() - t)
            assert len(items) == n
        filtered = []
        for _ in range(20):
            t = now()
            c.instances_page(limit=500, state="running", tag=["n=3"], fields=["ctid", "name", "state"])
            filtered.append(now() - t)
        c.close()
        return {"rows": n, "get_one": stats_ms(get), "page_500": stats_ms(page), "full_walk": stats_ms(walk),
                "page_500_filtered_fields": stats_ms(filtered)}
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(10)
        if node is not None:
            node.runner.shutdown()
            node.store.close()
        shutil.rmtree(home, ignore_errors=True)


def part_create(count: int, template_dir: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix="ovps-bench-api-real-"))
    env = {**os.environ, "OPENVPS_HOME": str(home), "OPENVPS_TEMPLATE_DIR": template_dir,
           "OPENVPS_WORKERS": str(min(32, count)), "OPENVPS_STOP_TIMEOUT": "5"}
    env.pop("OPENVPS_URL", None)
    proc = subprocess.Popen([OPENVPS, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = Client(socket_path=str(home / "openvps.sock"))
    made: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c.info()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the daemon did not come up")
                time.sleep(0.05)
        from openvps.drivers.templates.cache import TemplateCache
        TemplateCache(Path(template_dir)).build("minimal")

        def one(i: int) -> float:
            cl = Client(socket_path=str(home / "openvps.sock"))
            t = now()
            cl.wait(cl.create(name=f"b{i}", template="minimal", start=True, limits={"ram": "32M"}))
            made.append(f"b{i}")
            cl.close()
            return now() - t
        t0 = now()
        with ThreadPoolExecutor(count) as pool:
            lat = list(pool.map(one, range(count)))
        wall = now() - t0
        running = sum(1 for i in c.instances() if i["state"] == "running")
        t1 = now()
        with ThreadPoolExecutor(min(32, count)) as pool:
            list(pool.map(lambda name: Client(socket_path=str(home / "openvps.sock")).wait(
                Client(socket_path=str(home / "openvps.sock")).destroy(name, force=True)), list(made)))
        destroy_wall = now() - t1
        made.clear()
        return {"count": count, "running": running, "wall_s": round(wall, 2), "per_create": stats_ms(lat),
                "destroy_all_s": round(destroy_wall, 2)}
    finally:
        try:
            for inst in c.instances():
                try:
                    c.wait(c.destroy(inst["ctid"], force=True), timeout=60)
                except Exception:
                    pass
        except Exception:
            pass
        c.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # the cgroup dirs runc made for this home in every hierarchy (as the tests do)
        from openvps.config import Config, own_memory_cgroup
        from openvps.drivers.cgroup import Cgroups
        Cgroups(Config(home=str(home)).finish().cgroup_parent).prune(ancestors=own_memory_cgroup())
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="instance rows for the list bench")
    ap.add_argument("--rounds", type=int, default=300, help="GETs of one instance")
    ap.add_argument("--concurrent", type=int, default=100, help="real instances created at once")
    ap.add_argument("--no-real", action="store_true", help="skip the real-container part")
    ap.add_argument("--template-dir", default=os.environ.get("OPENVPS_TEST_TEMPLATE_DIR",
                                                             "/var/cache/openvps-test/templates"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = {"list": part_list(a.n, a.rounds)}
    if not a.no_real:
        if os.geteuid() != 0:
            log("not root: skipping the real-container part")
        else:
            out["create"] = part_create(a.concurrent, a.template_dir)
    L = out["list"]
    checks = {"get_p50_ms": L["get_one"]["p50_ms"], "page500_p50_ms": L["page_500"]["p50_ms"],
              "walk_ms": L["full_walk"]["p50_ms"]}
    out["targets"] = {k: {"value": v, "target": TARGETS[k], "ok": v < TARGETS[k]} for k, v in checks.items()}
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"rows: {L['rows']}")
        for k in ("get_one", "page_500", "page_500_filtered_fields", "full_walk"):
            s = L[k]
            print(f"{k:26s} p50 {s['p50_ms']:8.2f} ms   p99 {s['p99_ms']:8.2f} ms   (n={s['n']})")
        if "create" in out:
            cr = out["create"]
            print(f"create {cr['count']} concurrently (start: true): wall {cr['wall_s']} s, per create "
                  f"p50 {cr['per_create']['p50_ms']} ms p99 {cr['per_create']['p99_ms']} ms, running {cr['running']}; "
                  f"destroy all {cr['destroy_all_s']} s")
        for k, t in out["targets"].items():
            print(f"{'PASS' if t['ok'] else 'MISS'} {k}: {t['value']} < {t['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
