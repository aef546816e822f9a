#!/usr/bin/env python3
"""Networking costs on the real driver (pyroute2 + nftables), in a throwaway node namespace made
here and removed afterwards (the host's own namespace is never touched):

  attach   p50/p90 time to give an instance its network: create its namespace, a veth pair, rename
           + MAC + address + up inside, port on the bridge, default route (what `start` adds)
  detach   p50 time to take it away again
  rules    time to render and to apply (ONE `nft -f` transaction) the ruleset for 1,000 instances
           with 1,000 port forwards (plus 100 public addresses and 100 firewall rules); the apply is
           done repeatedly, replacing the previous ruleset each time. Target: render+apply < 200 ms.

    sudo .venv/bin/python bench/network.py [-n 50] [--instances 1000] [--json]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
import statistics
import subprocess
import sys
import time

from pyroute2 import netns

from openvps.domain import network as N
from openvps.drivers.network.netns import NetnsNetwork
from openvps.drivers.network.ruleset import ruleset

TARGET_RULES_MS = 200.0
now = time.perf_counter


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def nic(ctid: int, i: int, net_id: int, subnet: ipaddress.IPv4Network) -> dict:
    addr = str(subnet.network_address + 2 + i)
    return {"ctid": ctid, "idx": 0, "ifname": "eth0", "mac": N.mac_for(ctid, 0), "network": "bench",
            "network_id": net_id, "bridge": N.bridge_name(net_id), "subnet": str(subnet),
            "gateway": str(subnet.network_address + 1), "prefixlen": subnet.prefixlen,
            "host_ifname": N.host_ifname(ctid, 0), "addresses": [addr]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=50, help="instances to attach (default 50)")
    ap.add_argument("--instances", type=int, default=1000, help="instances (and forwards) in the ruleset")
    ap.add_argument("--rounds", type=int, default=7, help="ruleset applies to time")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    tag = secrets.token_hex(3)
    node_ns = f"ovps-bench-{tag}"
    drv = NetnsNetwork(node_netns=node_ns, home_id=f"bench{tag}", uplink="uplink0")
    subnet = ipaddress.IPv4Network("10.88.0.0/16")
    net = {"id": 1, "name": "bench", "subnet": str(subnet), "gateway": "10.88.0.1", "nat": True}
    attached: list[int] = []
    out: dict = {}
    try:
        drv.setup_node()
        drv.ensure_bridge(net)
        # ---- attach / detach
        att, det = [], []
        for i in range(a.n):
            ctid = 100 + i
            t = now()
            drv.attach(ctid, [nic(ctid, i, 1, subnet)])
            att.append(now() - t)
            attached.append(ctid)
        # sanity: the last one has its address inside
        p = subprocess.run(["ip", "-n", drv.instance_netns(attached[-1]), "-4", "-o", "addr", "show", "eth0"],
                           capture_output=True, text=True)
        if str(subnet.network_address + 2 + a.n - 1) not in p.stdout:
            raise SystemExit(f"attach did not work: {p.stdout}{p.stderr}")
        for ctid in list(attached):
            t = now()
            drv.detach(ctid)
            det.append(now() - t)
            attached.remove(ctid)
        out["attach_ms"] = {"p50": pct(att, 50) * 1e3, "p90": pct(att, 90) * 1e3, "n": a.n}
        out["detach_ms"] = {"p50": pct(det, 50) * 1e3, "p90": pct(det, 90) * 1e3}

        # ---- the ruleset for --instances instances with as many forwards
        k = a.instances
        nics = [nic(10000 + i, i, 1, subnet) for i in range(k)]
        snap = {"networks": [net],
                "nics": nics,
                "forwards": [{"ctid": 10000 + i, "proto": "tcp", "port": 20000 + i, "target_port": 22,
                              "instance": f"i{i}"} for i in range(k)],
                "public": [{"address": f"192.0.2.{i + 1}", "ctid": 10000 + i, "instance": f"i{i}"}
                           for i in range(min(100, k))],
                "rules": [{"id": i, "ctid": 10000 + i, "proto": "tcp", "port": 80, "source": "0.0.0.0/0",
                           "instance": f"i{i}"} for i in range(min(100, k))]}
        render, apply, total = [], [], []
        for _ in range(a.rounds):
            t0 = now()
            text = ruleset(snap, "uplink0")
            t1 = now()
            drv.apply_rules(text)
            t2 = now()
            render.append(t1 - t0)
            apply.append(t2 - t1)
            total.append(t2 - t0)
        listed = subprocess.run(["ip", "netns", "exec", node_ns, "nft", "list", "table", "inet", "openvps"],
                                capture_output=True, text=True).stdout
        if listed.count("dnat ip to") != k + min(100, k):
            raise SystemExit("the ruleset did not load as expected")
        out["rules"] = {"instances": k, "forwards": k, "lines": text.count("\n"),
                        "render_ms_p50": statistics.median(render) * 1e3,
                        "apply_ms_p50": statistics.median(apply) * 1e3,
                        "total_ms_p50": statistics.median(total) * 1e3,
                        "total_ms_max": max(total) * 1e3, "transactions_per_rebuild": 1,
                        "target_ms": TARGET_RULES_MS}
        out["rules"]["verdict"] = "PASS" if out["rules"]["total_ms_p50"] < TARGET_RULES_MS else "MISS"
    finally:
        for ctid in attached:
            drv.detach(ctid)
        if node_ns in netns.listnetns():
            netns.remove(node_ns)
        left = [n for n in netns.listnetns() if tag in n]
        if left:
            sys.stderr.write(f"[bench] left behind: {left}\n")
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        r = out["rules"]
        print(f"attach  p50 {out['attach_ms']['p50']:.1f} ms  p90 {out['attach_ms']['p90']:.1f} ms  (n={a.n})")
        print(f"detach  p50 {out['detach_ms']['p50']:.1f} ms  p90 {out['detach_ms']['p90']:.1f} ms")
        print(f"rules   {r['instances']} instances + {r['forwards']} forwards ({r['lines']} lines, one nft transaction): "
              f"render {r['render_ms_p50']:.1f} ms + apply {r['apply_ms_p50']:.1f} ms = {r['total_ms_p50']:.1f} ms p50 "
              f"(max {r['total_ms_max']:.1f}) -> {r['verdict']} (target < {TARGET_RULES_MS:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
