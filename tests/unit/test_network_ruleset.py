"""The nftables ruleset is a pure function of the store snapshot: golden lines and one transaction."""
from openvps.drivers.network.ruleset import FWD_MARK, empty, ruleset

SNAP = {
    "networks": [{"name": "default", "subnet": "10.88.0.0/24", "nat": True},
                 {"name": "db0", "subnet": "10.89.0.0/24", "nat": False}],
    "nics": [{"ctid": 101, "idx": 0, "host_ifname": "vh101_0", "mac": "02:0f:00:00:00:65",
              "addresses": ["10.88.0.2", "10.88.0.9"]},
             {"ctid": 101, "idx": 1, "host_ifname": "vh101_1", "mac": "12:0f:00:00:00:65", "addresses": ["10.89.0.2"]},
             {"ctid": 102, "idx": 0, "host_ifname": "vh102_0", "mac": "02:0f:00:00:00:66", "addresses": ["10.88.0.3"]}],
    "forwards": [{"ctid": 101, "proto": "tcp", "port": 2222, "target_port": 22, "instance": "web1"}],
    "public": [{"address": "192.0.2.100", "ctid": 102, "instance": "web2"},
               {"address": "192.0.2.101", "ctid": None, "instance": None}],
    "rules": [{"id": 7, "ctid": 101, "proto": "tcp", "port": 22, "source": "0.0.0.0/0", "instance": "web1"}],
}


def lines(text):
    return [ln.strip() for ln in text.splitlines()]


def test_one_transaction_of_our_own_tables_only():
    text = ruleset(SNAP, "uplink0")
    ls = lines(text)
    # the standard idiom: declare, delete, define -- in one file, so one atomic transaction
    assert ls[:4] == ["table inet openvps", "delete table inet openvps", "table bridge openvps",
                      "delete table bridge openvps"]
    tables = [ln for ln in ls if ln.startswith("table ")]
    assert set(tables) == {"table inet openvps", "table bridge openvps", "table inet openvps {",
                           "table bridge openvps {"}
    assert "flush ruleset" not in text and "iptables" not in text
    assert empty() == "\n".join(ls[:4]) + "\n"


def test_forwards_prerouting_and_output_with_hairpin():
    ls = lines(ruleset(SNAP, "uplink0"))
    assert (f"ip daddr != @public_addrs fib daddr type local meta l4proto tcp th dport 2222 ct mark set {FWD_MARK} "
            'dnat ip to 10.88.0.2:22 comment "forward web1"') in ls
    i = ls.index("chain prerouting {")
    assert ls[i + 1:i + 3] == ["type nat hook prerouting priority dstnat; policy accept;", "jump dnat_rules"]
    i = ls.index("chain output {")
    assert ls[i + 1:i + 3] == ["type nat hook output priority -100; policy accept;", "jump dnat_rules"]
    assert "ct status dnat ip saddr 10.88.0.0/24 ip daddr 10.88.0.0/24 masquerade" in ls


def test_nat_only_for_nat_networks_and_public_addresses_one_to_one():
    ls = lines(ruleset(SNAP, "uplink0"))
    assert 'oifname "uplink0" ip saddr 10.88.0.0/24 masquerade' in ls
    assert 'oifname "uplink0" ip saddr 10.89.0.0/24 masquerade' not in ls
    assert 'ip daddr 192.0.2.100 dnat ip to 10.88.0.3 comment "public web2"' in ls
    assert 'oifname "uplink0" ip saddr 10.88.0.3 snat ip to 192.0.2.100' in ls
    # SNAT of the public address comes before the network's masquerade
    assert ls.index('oifname "uplink0" ip saddr 10.88.0.3 snat ip to 192.0.2.100') < \
        ls.index('oifname "uplink0" ip saddr 10.88.0.0/24 masquerade')
    assert "elements = { 192.0.2.100, 192.0.2.101 }" in ls
    assert not any("192.0.2.101 dnat" in ln for ln in ls)          # allocated, not associated
    # flows to a public address that reach another instance than its current one are dropped
    assert "elements = { 192.0.2.100 . 10.88.0.3 }" in ls
    i = ls.index("chain forward {")
    assert ls[i + 2] == ("ct direction original ct status dnat ct original ip daddr @public_addrs "
                         "ct original ip daddr . ip daddr != @public_flow drop")


def test_inbound_default_deny_with_firewall_allows():
    ls = lines(ruleset(SNAP, "uplink0"))
    i = ls.index("chain forward {")
    chain = ls[i + 1:ls.index("}", i)]
    assert chain[0] == "type filter hook forward priority filter; policy accept;"
    assert chain[3] == "ct state established,related accept"
    assert chain[-1] == 'iifname "uplink0" drop'
    assert ('ip saddr 0.0.0.0/0 ip daddr { 10.88.0.2, 10.88.0.9, 10.89.0.2 } meta l4proto tcp th dport 22 accept '
            'comment "firewall 7 web1"') in chain
    assert f"ct mark {FWD_MARK} accept" in chain


def test_antispoofing_sets():
    text = ruleset(SNAP, "uplink0")
    assert 'elements = { "vh101_0", "vh101_1", "vh102_0" }' in text
    assert '"vh101_0" . 02:0f:00:00:00:65' in text and '"vh101_1" . 12:0f:00:00:00:65' in text
    assert '"vh101_0" . 10.88.0.9' in text and '"vh101_1" . 10.89.0.2' in text
    ls = lines(text)
    for rule in ("iifname != @ports accept", "iifname . ether saddr != @port_mac drop",
                 "ether type arp iifname . arp saddr ether != @port_mac drop",
                 "ether type arp iifname . arp saddr ip != @port_ip drop",
                 "ether type ip iifname . ip saddr != @port_ip drop"):
        assert rule in ls


def test_empty_store_renders_valid_skeleton():
    text = ruleset({}, "eth0")
    assert "elements" not in text
    assert 'iifname "eth0" drop' in text


def test_scales_to_a_thousand_instances():
    import time
    nics = [{"ctid": 1000 + i, "idx": 0, "host_ifname": f"vh{1000 + i}_0", "mac": f"02:0f:00:00:{i >> 8:02x}:{i & 255:02x}",
             "addresses": [f"10.{88 + (i >> 8)}.{i & 255}.2"]} for i in range(1000)]
    fwd = [{"ctid": 1000 + i, "proto": "tcp", "port": 10000 + i, "target_port": 22, "instance": f"i{i}"}
           for i in range(1000)]
    t = time.perf_counter()
    text = ruleset({"networks": [], "nics": nics, "forwards": fwd, "public": [], "rules": []}, "eth0")
    assert time.perf_counter() - t < 0.5
    assert text.count("dnat ip to") == 1000
