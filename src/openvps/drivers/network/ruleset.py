"""The whole nftables ruleset of a node, rendered from a store snapshot. Pure: no I/O.

Only tables of our own (`inet openvps`, `bridge openvps`). The text is ONE `nft -f` transaction:
each table is declared (so it exists), deleted and defined again, so the kernel swaps the old rules
for the new ones atomically and nothing that is not ours is touched.

  inet openvps   nat:    1:1 DNAT of public addresses (and a drop of flows still DNATed to an instance
                         the address no longer maps to), port forwards (prerouting AND output, so the
                         node itself reaches them), SNAT of public addresses, hairpin and NAT masquerade
                 filter: inbound from the uplink is dropped unless established, a port forward, or
                         allowed by a firewall rule (security group)
  bridge openvps         anti-spoofing: a port (instance veth) may only send with its MAC and addresses
"""
from __future__ import annotations

import ipaddress

FWD_MARK = "0x0000f0a1"     # conntrack mark of connections that came in through a port forward


def _q(name: str) -> str:
    return f'"{name}"'


def _set(items) -> str:
    items = list(items)
    return "{ " + ", ".join(items) + " }"


def ruleset(snap: dict, uplink: str) -> str:
    nics = snap.get("nics", [])
    networks = snap.get("networks", [])
    forwards = snap.get("forwards", [])
    public = snap.get("public", [])
    rules = snap.get("rules", [])
    up = _q(uplink)

    primary: dict[int, str] = {}              # ctid -> address forwards/public addresses point at
    by_ct: dict[int, list[str]] = {}
    for n in nics:
        if n["addresses"]:
            by_ct.setdefault(n["ctid"], []).extend(n["addresses"])
            primary.setdefault(n["ctid"], n["addresses"][0])

    out = ["table inet openvps", "delete table inet openvps",
           "table bridge openvps", "delete table bridge openvps", ""]

    # ------------------------------------------------------------------ inet
    out.append("table inet openvps {")
    pubs = [p["address"] for p in public]
    out.append("  set public_addrs {")
    out.append("    type ipv4_addr")
    if pubs:
        out.append(f"    elements = {_set(pubs)}")
    out.append("  }")
    # public address -> the instance it maps to now: flows DNATed to any other (an old association)
    # are dropped at the moment of the ruleset swap, so a moved address never reaches the old one
    flows = [f"{p['address']} . {primary[p['ctid']]}" for p in public
             if p["ctid"] is not None and p["ctid"] in primary]
    out += ["  set public_flow {", "    type ipv4_addr . ipv4_addr"]
    if flows:
        out.append(f"    elements = {_set(flows)}")
    out.append("  }")

    out += ["  chain dnat_rules {"]
    for p in public:
        if p["ctid"] is not None and p["ctid"] in primary:
            out.append(f"    ip daddr {p['address']} dnat ip to {primary[p['ctid']]} comment \"public {p['instance']}\"")
    for f in forwards:
        target = primary.get(f["ctid"])
        if target is None:
            continue
        out.append(f"    ip daddr != @public_addrs fib daddr type local meta l4proto {f['proto']} th dport {f['port']} "
                   f"ct mark set {FWD_MARK} dnat ip to {target}:{f['target_port']} comment \"forward {f['instance']}\"")
    out.append("  }")
    out += ["  chain prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
            "    jump dnat_rules", "  }",
            "  chain output {", "    type nat hook output priority -100; policy accept;",
            "    jump dnat_rules", "  }"]

    out += ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;"]
    for p in public:
        if p["ctid"] is not None and p["ctid"] in primary:
            out.append(f"    oifname {up} ip saddr {primary[p['ctid']]} snat ip to {p['address']}")
    for net in networks:
        sub = net["subnet"]
        # hairpin: an instance reaching a forward of its own network gets the answer through us
        out.append(f"    ct status dnat ip saddr {sub} ip daddr {sub} masquerade")
        if net["nat"]:
            out.append(f"    oifname {up} ip saddr {sub} masquerade")
    out.append("  }")

    out += ["  chain forward {", "    type filter hook forward priority filter; policy accept;",
            "    ct direction original ct status dnat ct original ip daddr @public_addrs "
            "ct original ip daddr . ip daddr != @public_flow drop",
            "    ct direction reply ct status dnat ct original ip daddr @public_addrs "
            "ct original ip daddr . ip saddr != @public_flow drop",
            "    ct state established,related accept",
            f"    iifname != {up} accept",
            f"    ct mark {FWD_MARK} accept"]
    for r in rules:
        addrs = by_ct.get(r["ctid"])
        if not addrs:
            continue
        out.append(f"    ip saddr {r['source']} ip daddr {_set(addrs)} meta l4proto {r['proto']} "
                   f"th dport {r['port']} accept comment \"firewall {r['id']} {r['instance']}\"")
    out += ["    ct state invalid drop",
            f"    iifname {up} drop", "  }"]
    out.append("}")
    out.append("")

    # ------------------------------------------------------------------ bridge: anti-spoofing
    ports = [n["host_ifname"] for n in nics]
    port_mac = [f"{_q(n['host_ifname'])} . {n['mac']}" for n in nics]
    port_ip = [f"{_q(n['host_ifname'])} . {a}" for n in nics for a in n["addresses"]]
    out.append("table bridge openvps {")
    for name, typ, elems in (("ports", "ifname", [_q(p) for p in ports]),
                             ("port_mac", "ifname . ether_addr", port_mac),
                             ("port_ip", "ifname . ipv4_addr", port_ip)):
        out += [f"  set {name} {{", f"    type {typ}"]
        if elems:
            out.append(f"    elements = {_set(elems)}")
        out.append("  }")
    out += ["  chain prerouting {", "    type filter hook prerouting priority -200; policy accept;",
            "    iifname != @ports accept",
            "    iifname . ether saddr != @port_mac drop",
            "    ether type arp iifname . arp saddr ether != @port_mac drop",
            "    ether type arp iifname . arp saddr ip != @port_ip drop",
            "    ether type ip iifname . ip saddr != @port_ip drop",
            "  }", "}", ""]
    return "\n".join(out)


def empty() -> str:
    """Remove our tables (and only ours), in one transaction."""
    return "table inet openvps\ndelete table inet openvps\ntable bridge openvps\ndelete table bridge openvps\n"


def check_pool_against_networks(pool: list[str], networks: list[dict]) -> None:
    for net in networks:
        n = ipaddress.IPv4Network(net["subnet"])
        if any(ipaddress.IPv4Address(a) in n for a in pool[:1] + pool[-1:]):
            raise ValueError(f"public_pool overlaps network {net['name']}")
