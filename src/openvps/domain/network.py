"""Networking rules without I/O: network names, subnets and their overlap, address validation and
IPAM (next free address), public pools, port forwards, firewall rules, interface names and MACs."""
from __future__ import annotations

import ipaddress
import re
from typing import Iterable

from .errors import Conflict, InsufficientResources, InvalidArgument

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
PROTOCOLS = ("tcp", "udp")
MAX_NICS = 8


def validate_network_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgument(f"network name {name!r}: use 1-15 lowercase letters, digits or '-', starting "
                              "with a letter (e.g. lan0)", field="name")
    return name


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """An IPv4 subnet with room for a gateway and at least one instance (/8 .. /30)."""
    try:
        net = ipaddress.IPv4Network(str(text), strict=True)
    except ValueError as e:
        raise InvalidArgument(f"subnet {text!r}: {e}; write it as 10.88.0.0/24", field="subnet") from None
    if not 8 <= net.prefixlen <= 30:
        raise InvalidArgument(f"subnet {text}: the prefix must be /8 to /30", field="subnet")
    return net


def gateway_of(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return net.network_address + 1


def check_overlap(net: ipaddress.IPv4Network, existing: dict[str, str], what: str = "subnet") -> None:
    """existing: name -> subnet. Raise Conflict if `net` overlaps any of them."""
    for name, sub in existing.items():
        if net.overlaps(ipaddress.IPv4Network(sub)):
            raise Conflict(f"{what} {net} overlaps {sub} of network {name!r}; pick a subnet that does not",
                           subnet=str(net), network=name)


def validate_address(addr: str, subnet: str, used: Iterable[str] = (), network: str = "") -> str:
    """A given instance address: inside the subnet, not network/gateway/broadcast, not taken."""
    net = ipaddress.IPv4Network(subnet)
    try:
        ip = ipaddress.IPv4Address(str(addr))
    except ValueError:
        raise InvalidArgument(f"address {addr!r} is not an IPv4 address (e.g. {gateway_of(net) + 49})",
                              field="ipadd") from None
    where = f"network {network!r} ({subnet})" if network else subnet
    if ip not in net:
        raise InvalidArgument(f"address {ip} is outside {where}; pick one in "
                              f"{gateway_of(net) + 1}..{net.broadcast_address - 1}", field="ipadd", address=str(ip))
    if ip == net.network_address or ip == net.broadcast_address:
        raise InvalidArgument(f"address {ip} is the network or broadcast address of {where}", field="ipadd",
                              address=str(ip))
    if ip == gateway_of(net):
        raise InvalidArgument(f"address {ip} is the gateway of {where}", field="ipadd", address=str(ip))
    if str(ip) in set(used):
        raise Conflict(f"address {ip} is taken in {where}; pick another or omit it for the next free one",
                       address=str(ip))
    return str(ip)


def next_free(subnet: str, used: Iterable[str], network: str = "") -> str:
    """The lowest free host address after the gateway."""
    net = ipaddress.IPv4Network(subnet)
    taken = {int(ipaddress.IPv4Address(a)) for a in used}
    first, last = int(gateway_of(net)) + 1, int(net.broadcast_address) - 1
    for n in range(first, last + 1):
        if n not in taken:
            return str(ipaddress.IPv4Address(n))
    raise InsufficientResources(f"network {network or subnet} has no free address left ({last - first + 1} in use); "
                                "free one (`openvps set CT --ipdel ADDR`) or create another network",
                                network=network, subnet=subnet)


def parse_pool(text: str) -> list[str]:
    """A public pool: CIDR (every address of it, as in a routed block) or 'first-last' or 'a,b,c'."""
    text = (text or "").strip()
    if not text:
        return []
    try:
        if "/" in text:
            net = ipaddress.IPv4Network(text, strict=False)
            return [str(a) for a in (net if net.prefixlen >= 31 else net.hosts())]
        if "-" in text:
            a, b = (ipaddress.IPv4Address(x.strip()) for x in text.split("-", 1))
            if int(b) < int(a) or int(b) - int(a) > 65535:
                raise ValueError("the range is reversed or larger than 65536 addresses")
            return [str(ipaddress.IPv4Address(n)) for n in range(int(a), int(b) + 1)]
        return [str(ipaddress.IPv4Address(x.strip())) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise InvalidArgument(f"public_pool {text!r}: {e}; write it as 198.51.100.0/28 or "
                              "198.51.100.10-198.51.100.20", field="public_pool") from None


def parse_ports(spec: str) -> tuple[int, int]:
    """'2222:22' -> (2222, 22); '8080' -> (8080, 8080)."""
    try:
        outer, _, inner = str(spec).partition(":")
        ports = (int(outer), int(inner or outer))
    except ValueError:
        raise InvalidArgument(f"ports {spec!r}: write NODE_PORT:INSTANCE_PORT, e.g. 2222:22", field="ports") from None
    for p in ports:
        validate_port(p)
    return ports


def validate_port(p: int) -> int:
    if not isinstance(p, int) or not 1 <= p <= 65535:
        raise InvalidArgument(f"port {p!r}: use 1..65535", field="port")
    return p


def validate_proto(proto: str) -> str:
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"protocol {proto!r}: use tcp or udp", field="proto")
    return proto


def validate_source(cidr: str) -> str:
    try:
        return str(ipaddress.IPv4Network(str(cidr), strict=False))
    except ValueError:
        raise InvalidArgument(f"source {cidr!r}: write a CIDR such as 0.0.0.0/0 or 203.0.113.0/24",
                              field="source") from None


def validate_nameserver(ns: str) -> str:
    try:
        return str(ipaddress.ip_address(str(ns)))
    except ValueError:
        raise InvalidArgument(f"nameserver {ns!r} is not an IP address", field="nameserver") from None


def validate_searchdomain(d: str) -> str:
    if not isinstance(d, str) or not re.match(r"^[A-Za-z0-9.-]{1,253}$", d) or ".." in d:
        raise InvalidArgument(f"search domain {d!r}: use a DNS name such as example.com", field="searchdomain")
    return d


def resolv_conf(nameservers: list[str], searchdomain: str | None) -> str:
    lines = ["# written by openvps"]
    if searchdomain:
        lines.append(f"search {searchdomain}")
    lines += [f"nameserver {ns}" for ns in nameservers]
    return "\n".join(lines) + "\n"


def host_ifname(ctid: int, nic: int) -> str:
    """The node-side end of an instance's veth (15 characters at most)."""
    return f"vh{ctid}_{nic}"


def bridge_name(network_id: int) -> str:
    return f"ovbr{network_id}"


def mac_for(ctid: int, nic: int) -> str:
    """A stable, locally administered unicast MAC per instance interface."""
    first = 0x02 | ((nic & 0x0F) << 4)
    b = ctid.to_bytes(4, "big")
    return ":".join(f"{x:02x}" for x in (first, 0x0f, *b))
