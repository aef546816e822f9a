"""CLI for networking: `network`, `forward`, `address`, `firewall` (thin over the REST API)."""
from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import typer

from . import render

network_app = typer.Typer(help="Networks: a bridge with a gateway (and NAT) on the node.", no_args_is_help=True)
forward_app = typer.Typer(help="Port forwards: node port -> instance port.", no_args_is_help=True)
address_app = typer.Typer(help="Public (elastic) addresses from the node's public pool.", no_args_is_help=True)
firewall_app = typer.Typer(help="Security groups: inbound from outside is denied unless allowed here.",
                           no_args_is_help=True)

JSON = typer.Option(False, "--json", help="print JSON")


def _main():
    from . import main
    return main


def _req(method: str, path: str, body=None):
    return _main().client().request(method, path, body)


def _follow(op: dict, title: str) -> dict:
    return _main().follow(op, title, quiet=True)


def register(app: typer.Typer) -> None:
    app.add_typer(network_app, name="network")
    app.add_typer(forward_app, name="forward")
    app.add_typer(address_app, name="address")
    app.add_typer(firewall_app, name="firewall")


def handled(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return _main().handled(fn)(*a, **kw)
    return wrapper


# ------------------------------------------------------------------ networks
def _net_rows(items):
    return [[n["name"], n["subnet"], n["gateway"], "yes" if n["nat"] else "no", n["bridge"],
             f"{n['addresses_used']}/{n['addresses_total']}", ", ".join(n["instances"]) or "-"] for n in items]


NET_HEAD = ["NAME", "SUBNET", "GATEWAY", "NAT", "BRIDGE", "USED", "INSTANCES"]


@network_app.command("create")
@handled
def network_create(name: str = typer.Argument(..., help="e.g. lan0"),
                   subnet: str = typer.Option(..., "--subnet", help="e.g. 10.89.0.0/24; the gateway is .1"),
                   nat: bool = typer.Option(True, "--nat/--no-nat", help="masquerade out of the node's uplink"),
                   json_out: bool = JSON):
    """Create a network: a bridge in the node namespace, the gateway address and NAT."""
    done = _follow(_req("POST", "/1.0/networks", {"name": name, "subnet": subnet, "nat": nat}), f"creating {name}")
    net = done["result"]["network"]
    if json_out:
        return render.print_json(net)
    print(f"network {net['name']} created: {net['subnet']}, gateway {net['gateway']}"
          + (", NAT" if net["nat"] else ""))


@network_app.command("list")
@handled
def network_list(json_out: bool = JSON):
    """List networks."""
    items = _req("GET", "/1.0/networks")
    if json_out:
        return render.print_json(items)
    render.table(NET_HEAD, _net_rows(items))


@network_app.command("show")
@handled
def network_show(name: str = typer.Argument(...), json_out: bool = JSON):
    """Show a network and its leases."""
    net = _req("GET", f"/1.0/networks/{quote(name)}")
    if json_out:
        return render.print_json(net)
    render.table(NET_HEAD, _net_rows([net]))
    if net.get("leases"):
        print()
        render.table(["ADDRESS", "INSTANCE", "IF", "MAC"],
                     [[x["address"], x["instance"] or "-", x["ifname"], x["mac"]] for x in net["leases"]])


@network_app.command("delete")
@handled
def network_delete(name: str = typer.Argument(...), json_out: bool = JSON):
    """Delete a network (refused while instances use it)."""
    _follow(_req("DELETE", f"/1.0/networks/{quote(name)}"), f"deleting {name}")
    if json_out:
        return render.print_json({"deleted": name})
    print(f"network {name} deleted")


# ------------------------------------------------------------------ forwards
@forward_app.command("add")
@handled
def forward_add(ident: str = typer.Argument(..., help="CTID or name"),
                proto: str = typer.Argument(..., help="tcp or udp"),
                ports: str = typer.Argument(..., help="NODE_PORT:INSTANCE_PORT, e.g. 2222:22"),
                json_out: bool = JSON):
    """Forward a port of the node to a port of an instance (from upstream, the node and other instances)."""
    done = _follow(_req("POST", "/1.0/forwards", {"instance": ident, "proto": proto, "ports": ports}),
                   f"forwarding {ports}")
    f = done["result"]["forward"]
    if json_out:
        return render.print_json(f)
    print(f"forwarding {f['proto']} port {f['port']} -> {f['instance']}:{f['target_port']}")


@forward_app.command("list")
@handled
def forward_list(json_out: bool = JSON):
    """List port forwards."""
    items = _req("GET", "/1.0/forwards")
    if json_out:
        return render.print_json(items)
    render.table(["PROTO", "PORT", "INSTANCE", "TO PORT"],
                 [[f["proto"], str(f["port"]), f["instance"], str(f["target_port"])] for f in items])


@forward_app.command("remove")
@handled
def forward_remove(proto: str = typer.Argument(..., help="tcp or udp"),
                   port: int = typer.Argument(..., help="the node port"), json_out: bool = JSON):
    """Remove a port forward."""
    _follow(_req("DELETE", f"/1.0/forwards/{quote(proto)}/{port}"), f"removing {proto}/{port}")
    if json_out:
        return render.print_json({"removed": {"proto": proto, "port": port}})
    print(f"forward {proto} {port} removed")


# ------------------------------------------------------------------ public addresses
@address_app.command("allocate")
@handled
def address_allocate(address: Optional[str] = typer.Argument(None, help="a given address of the pool"),
                     json_out: bool = JSON):
    """Allocate a public address from the pool (it goes on the node's uplink)."""
    done = _follow(_req("POST", "/1.0/addresses", {"address": address}), "allocating")
    a = done["result"]["address"]
    if json_out:
        return render.print_json(a)
    print(f"public address {a['address']} allocated")


@address_app.command("list")
@handled
def address_list(json_out: bool = JSON):
    """List public addresses and what they map to."""
    items = _req("GET", "/1.0/addresses")
    if json_out:
        return render.print_json(items)
    render.table(["ADDRESS", "INSTANCE", "OWNER"], [[a["address"], a["instance"] or "-", a.get("owner", "-")]
                                                   for a in items])


@address_app.command("associate")
@handled
def address_associate(address: str = typer.Argument(...), ident: str = typer.Argument(..., help="CTID or name"),
                      json_out: bool = JSON):
    """Map a public address 1:1 to an instance (moving it is one atomic rule change)."""
    done = _follow(_req("POST", f"/1.0/addresses/{quote(address)}/associate", {"instance": ident}), "associating")
    if json_out:
        return render.print_json(done["result"]["address"])
    print(f"public address {address} -> {ident}")


@address_app.command("disassociate")
@handled
def address_disassociate(address: str = typer.Argument(...), json_out: bool = JSON):
    """Unmap a public address (it stays allocated)."""
    _follow(_req("POST", f"/1.0/addresses/{quote(address)}/disassociate", {}), "disassociating")
    if json_out:
        return render.print_json({"address": address, "instance": None})
    print(f"public address {address} disassociated")


@address_app.command("release")
@handled
def address_release(address: str = typer.Argument(...), json_out: bool = JSON):
    """Give a public address back to the pool."""
    _follow(_req("DELETE", f"/1.0/addresses/{quote(address)}"), "releasing")
    if json_out:
        return render.print_json({"released": address})
    print(f"public address {address} released")


# ------------------------------------------------------------------ firewall
@firewall_app.command("allow")
@handled
def firewall_allow(ident: str = typer.Argument(..., help="CTID or name"),
                   proto: str = typer.Argument(..., help="tcp or udp"),
                   port: int = typer.Argument(..., help="port in the instance"),
                   source: str = typer.Option("0.0.0.0/0", "--from", help="source CIDR"),
                   json_out: bool = JSON):
    """Allow inbound traffic from outside the node to an instance port."""
    done = _follow(_req("POST", "/1.0/firewall", {"instance": ident, "proto": proto, "port": port, "source": source}),
                   "allowing")
    r = done["result"]["rule"]
    if json_out:
        return render.print_json(r)
    print(f"rule {r['id']}: allow {r['proto']} {r['port']} to {r['instance']} from {r['source']}")


@firewall_app.command("list")
@handled
def firewall_list(json_out: bool = JSON):
    """List firewall rules."""
    items = _req("GET", "/1.0/firewall")
    if json_out:
        return render.print_json(items)
    render.table(["ID", "INSTANCE", "PROTO", "PORT", "FROM"],
                 [[str(r["id"]), r["instance"], r["proto"], str(r["port"]), r["source"]] for r in items])


@firewall_app.command("remove")
@handled
def firewall_remove(rule_id: int = typer.Argument(..., help="rule id from `firewall list`"), json_out: bool = JSON):
    """Remove a firewall rule."""
    _follow(_req("DELETE", f"/1.0/firewall/{rule_id}"), "removing")
    if json_out:
        return render.print_json({"removed": rule_id})
    print(f"rule {rule_id} removed")
