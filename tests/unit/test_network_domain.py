"""Pure networking rules: subnets, overlap, address validation, IPAM, pools, ports, names."""
import pytest

from openvps.domain import network as N
from openvps.domain.errors import Conflict, InsufficientResources, InvalidArgument


def test_subnet_parsing_and_gateway():
    net = N.parse_subnet("10.88.0.0/24")
    assert str(N.gateway_of(net)) == "10.88.0.1"
    for bad in ("10.88.0.1/24", "10.88.0.0/31", "10.0.0.0/7", "nope", "fd00::/64"):
        with pytest.raises(InvalidArgument):
            N.parse_subnet(bad)


@pytest.mark.parametrize("sub,overlaps", [("10.88.0.128/25", True), ("10.0.0.0/8", True), ("10.88.1.0/24", False),
                                          ("10.88.0.0/24", True), ("192.168.0.0/16", False)])
def test_overlap(sub, overlaps):
    existing = {"default": "10.88.0.0/24"}
    if overlaps:
        with pytest.raises(Conflict, match="overlaps 10.88.0.0/24 of network 'default'"):
            N.check_overlap(N.parse_subnet(sub), existing)
    else:
        N.check_overlap(N.parse_subnet(sub), existing)


def test_validate_address():
    assert N.validate_address("10.88.0.50", "10.88.0.0/24") == "10.88.0.50"
    with pytest.raises(InvalidArgument, match="outside"):
        N.validate_address("10.89.0.5", "10.88.0.0/24")
    with pytest.raises(InvalidArgument, match="gateway"):
        N.validate_address("10.88.0.1", "10.88.0.0/24")
    with pytest.raises(InvalidArgument, match="network or broadcast"):
        N.validate_address("10.88.0.0", "10.88.0.0/24")
    with pytest.raises(InvalidArgument, match="network or broadcast"):
        N.validate_address("10.88.0.255", "10.88.0.0/24")
    with pytest.raises(Conflict, match="taken"):
        N.validate_address("10.88.0.9", "10.88.0.0/24", ["10.88.0.9"])
    with pytest.raises(InvalidArgument, match="not an IPv4"):
        N.validate_address("10.88.0.x", "10.88.0.0/24")


def test_next_free_fills_holes_and_exhausts():
    assert N.next_free("10.88.0.0/24", []) == "10.88.0.2"
    assert N.next_free("10.88.0.0/24", ["10.88.0.2", "10.88.0.4"]) == "10.88.0.3"
    assert N.next_free("10.90.0.0/30", []) == "10.90.0.2"
    with pytest.raises(InsufficientResources, match="no free address"):
        N.next_free("10.90.0.0/30", ["10.90.0.2"], "tiny")


def test_pools():
    assert N.parse_pool("") == []
    assert N.parse_pool("192.0.2.100-192.0.2.102") == ["192.0.2.100", "192.0.2.101", "192.0.2.102"]
    assert N.parse_pool("198.51.100.0/30") == ["198.51.100.1", "198.51.100.2"]
    assert N.parse_pool("198.51.100.7/32") == ["198.51.100.7"]
    assert N.parse_pool("192.0.2.5, 192.0.2.9") == ["192.0.2.5", "192.0.2.9"]
    for bad in ("192.0.2.9-192.0.2.1", "x/24", "1.2.3"):
        with pytest.raises(InvalidArgument):
            N.parse_pool(bad)


def test_ports_protocols_sources_dns():
    assert N.parse_ports("2222:22") == (2222, 22)
    assert N.parse_ports("8080") == (8080, 8080)
    for bad in ("0:22", "22:70000", "a:b", ""):
        with pytest.raises(InvalidArgument):
            N.parse_ports(bad)
    with pytest.raises(InvalidArgument):
        N.validate_proto("icmp")
    assert N.validate_source("203.0.113.7/24") == "203.0.113.0/24"
    with pytest.raises(InvalidArgument):
        N.validate_source("everyone")
    with pytest.raises(InvalidArgument):
        N.validate_nameserver("dns.example")
    with pytest.raises(InvalidArgument):
        N.validate_searchdomain("bad domain")
    assert N.resolv_conf(["1.1.1.1"], "example.com") == "# written by openvps\nsearch example.com\nnameserver 1.1.1.1\n"


def test_names_and_macs():
    assert N.validate_network_name("lan0") == "lan0"
    for bad in ("Lan0", "0lan", "a" * 16, "lan_0", ""):
        with pytest.raises(InvalidArgument):
            N.validate_network_name(bad)
    assert len(N.host_ifname(999999999, 7)) <= 15
    assert N.bridge_name(12) == "ovbr12"
    macs = {N.mac_for(ct, i) for ct in (100, 101, 999999999) for i in range(8)}
    assert len(macs) == 24
    for m in macs:
        first = int(m.split(":")[0], 16)
        assert first & 1 == 0 and first & 2       # unicast, locally administered
