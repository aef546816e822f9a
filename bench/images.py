#!/usr/bin/env python3
"""Backups and template deltas against plain tools, in the same run on the same tree.

Starts its own daemon in a fresh temporary home (as bench/create_start.py does), fills one running
minimal instance with --size MiB (half random, half compressible text), then over --rounds rounds:

  backup    `openvps backup --mode suspend` through the API (frozen for the archive, sha256 included)
  floor     `tar -c upper | zstd -T0 -3 > file` of the same layer (no freeze, no checksum)
  restore   `openvps restore` of that archive on a new CTID (checksum, create, unpack, uid shift)
  floor     `zstd -d < file | tar -x` into an empty directory

and prints MB/s (layer bytes / seconds) with medians and the ratio ours/floor (target >= 0.8).
Then publishes the instance as template v1, changes 1% of it, publishes v2, and prints the size of
`template export v2 --base v1` against the full export. Everything it made is removed in a finally
block (instances, templates, its home), Ctrl-C included.

    sudo .venv/bin/python bench/images.py [--size 256] [--rounds 3] [--json]
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from create_start import Daemon, log, run_bench  # noqa: E402

from openvps.drivers.templates.cache import TemplateCache  # noqa: E402

TARGET = 0.8
now = time.perf_counter


def sh(cmd: str) -> None:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed: {p.stderr[-500:]}")


def layer_bytes(upper: Path) -> int:
    total = 0
    for d, _dirs, files in os.walk(upper):
        for f in files:
            total += os.lstat(os.path.join(d, f)).st_size
    return total


def bench(args, root: Path, daemon: Daemon, made: dict) -> dict:
    cache = TemplateCache(Path(args.template_dir))
    cache.build("minimal")
    daemon.start()
    c = daemon.client
    inst = c.wait(c.create(name="data", template="minimal", start=True))["result"]["instance"]
    ctid = inst["ctid"]
    half = max(1, args.size // 2)
    log(f"filling the instance with {args.size} MiB")
    script = (f"mkdir -p /srv/r /srv/t && for i in $(seq 1 {half}); do head -c 1048576 /dev/urandom > /srv/r/$i; "
              f"done && i=0; while [ $i -lt {half} ]; do i=$((i+1)); seq 1 150000 | head -c 1048576 > /srv/t/$i; done")
    daemon.cli("exec", "data", "--", "sh", "-c", script)
    upper = daemon.home / "instances" / str(ctid) / "upper"
    size = layer_bytes(upper)
    out = root / "out"
    out.mkdir()
    res = {k: [] for k in ("backup", "backup_floor", "restore", "restore_floor")}
    for r in range(args.rounds):
        for f in out.iterdir():
            f.unlink()
        t = now()
        b = c.wait(c.backup("data", str(out), "suspend"), timeout=3600)["result"]["backup"]
        res["backup"].append(now() - t)
        floor_file = root / "floor.tar.zst"
        t = now()
        sh(f"tar -c -f - --numeric-owner --xattrs --xattrs-include='*' -C {upper.parent} upper | zstd -T0 -3 -q -c "
           f"> {floor_file}")
        res["backup_floor"].append(now() - t)
        t = now()
        rest = c.wait(c.restore(b["archive"], name=f"r{r}"), timeout=3600)["result"]["instance"]
        res["restore"].append(now() - t)
        c.wait(c.destroy(rest["ctid"], force=True), timeout=600)
        target = root / "floor-x"
        target.mkdir()
        t = now()
        sh(f"zstd -d -q -c < {floor_file} | tar -x -f - --numeric-owner --xattrs --xattrs-include='*' -C {target}")
        res["restore_floor"].append(now() - t)
        shutil.rmtree(target)
        floor_file.unlink()
        log(f"round {r + 1}: backup {res['backup'][-1]:.2f} s (floor {res['backup_floor'][-1]:.2f} s), "
            f"restore {res['restore'][-1]:.2f} s (floor {res['restore_floor'][-1]:.2f} s)")
    med = {k: statistics.median(v) for k, v in res.items()}
    mbs = {k: size / 1e6 / v for k, v in med.items()}
    log("publishing v1, changing 1%, publishing v2, exporting")
    v1, v2 = f"bench-{secrets.token_hex(3)}", f"bench-{secrets.token_hex(3)}"
    made["templates"] = [v1, v2]
    c.wait(c.publish("data", v1), timeout=3600)
    changed = max(1, args.size // 100)
    daemon.cli("exec", "data", "--", "sh", "-c", f"for i in $(seq 1 {changed}); do head -c 1048576 /dev/urandom "
               f"> /srv/r/$i; done; echo v2 > /etc/motd")
    c.wait(c.publish("data", v2), timeout=3600)
    full = c.wait(c.export_template(v2, str(out / "full.ovt")), timeout=3600)["result"]["export"]
    delta = c.wait(c.export_template(v2, str(out / "delta.ovt"), base=v1), timeout=3600)["result"]["export"]
    return {"layer_bytes": size, "rounds": args.rounds, "median_s": med, "mb_per_s": mbs,
            "backup_ratio": mbs["backup"] / mbs["backup_floor"], "restore_ratio": mbs["restore"] / mbs["restore_floor"],
            "export_full_bytes": full["bytes"], "export_delta_bytes": delta["bytes"], "tree_bytes": full["tree_bytes"],
            "delta_over_full": delta["bytes"] / full["bytes"]}


def report(r: dict) -> None:
    ok = lambda x: "PASS" if x >= TARGET else "MISS"   # noqa: E731
    m = r["mb_per_s"]
    print(f"\nlayer: {r['layer_bytes'] / 1e6:.1f} MB, medians of {r['rounds']} rounds")
    print(f"backup  (suspend) {m['backup']:8.1f} MB/s   tar|zstd  {m['backup_floor']:8.1f} MB/s   "
          f"ratio {r['backup_ratio']:.2f}  target >= {TARGET}  {ok(r['backup_ratio'])}")
    print(f"restore           {m['restore']:8.1f} MB/s   zstd|tar  {m['restore_floor']:8.1f} MB/s   "
          f"ratio {r['restore_ratio']:.2f}  target >= {TARGET}  {ok(r['restore_ratio'])}")
    print(f"template export: full {r['export_full_bytes'] / 1e6:.2f} MB, delta against v1 "
          f"{r['export_delta_bytes'] / 1e6:.2f} MB  -> delta/full {r['delta_over_full']:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="MiB written into the instance (default 256)")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    ap.add_argument("--template-dir", default="/var/cache/openvps-bench/templates", help="shared template cache")
    ap.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = ap.parse_args()
    if args.size < 2 or args.rounds < 1:
        ap.error("--size at least 2, --rounds at least 1")
    if os.geteuid() != 0:
        ap.error("needs root (mounts, runc, cgroups)")

    def drop_templates(made: dict) -> None:
        for t in made.get("templates", []):
            TemplateCache(Path(args.template_dir)).remove(t)
    return run_bench(args, "openvps-bench-", lambda root, daemon, made: bench(args, root, daemon, made), report,
                     lambda made: [("templates", lambda: drop_templates(made))])


if __name__ == "__main__":
    sys.exit(main())
