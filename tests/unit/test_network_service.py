"""The network service on fake drivers: store-first changes, 4xx before any work, undo on failure."""
import threading

import pytest

from openvps.domain.errors import Conflict, InsufficientResources, InvalidArgument, NotFound


@pytest.fixture
def net(node):
    node.reconcile()          # the daemon's start: node namespace, the default network, rules
    return node.networks


def ok(wait, op):
    row = wait(op)
    assert row["status"] == "success", row["error"]
    return row["result"]


def test_setup_makes_the_default_network_and_rules(node, net, network):
    assert network.node_ready
    assert [(n["name"], n["subnet"], n["gateway"], n["nat"]) for n in net.list_networks()] == \
        [("default", "10.88.0.0/24", "10.88.0.1", True)]
    assert "ovbr1" in network.bridges
    assert network.current_rules.startswith("table inet openvps\ndelete table inet openvps")
    # a second start does not make another default network
    node.reconcile()
    assert len(net.list_networks()) == 1


def test_create_gets_next_free_address_and_start_attaches(node, net, network, make, svc, wait):
    a = make("a", start=True)
    b = make("b", ipadd=["10.88.0.50"])
    c = make("c")
    assert (a["ip"], b["ip"], c["ip"]) == (["10.88.0.2"], ["10.88.0.50"], ["10.88.0.3"])
    assert network.attached() == [a["ctid"]]
    assert network.netns[a["ctid"]][0]["addresses"] == ["10.88.0.2"]
    assert "vh%d_0" % a["ctid"] in network.current_rules
    # runc made the namespace (owned by the instance's user namespace); it was wired before the init ran
    assert node.runtime.runs[-1].netns is None
    assert network.attached_pids[a["ctid"]] == node.runtime.state(str(a["ctid"]))["pid"]
    ok(wait, svc.stop(a["ctid"], force=True))
    assert network.attached() == []
    ok(wait, svc.destroy("b"))
    assert "10.88.0.50" not in network.current_rules
    assert make("d")["ip"] == ["10.88.0.4"]


def test_no_networks_means_no_interface(node, make, network):
    inst = make("plain", start=True)             # no reconcile: no default network
    assert inst["ip"] == [] and network.attached() == []
    assert node.runtime.runs[-1].netns is None


def test_bad_addresses_answer_at_once_and_leave_no_instance(net, svc, make):
    make("x", ipadd=["10.88.0.10"])
    with pytest.raises(Conflict, match="taken"):
        svc.create(name="y", template="minimal", ipadd=["10.88.0.10"])
    with pytest.raises(InvalidArgument, match="outside"):
        svc.create(name="y", template="minimal", nets=["default"], ipadd=["10.99.0.1"])
    with pytest.raises(InvalidArgument, match="gateway"):
        svc.create(name="y", template="minimal", ipadd=["10.88.0.1"])
    with pytest.raises(NotFound, match="no network 'lan9'"):
        svc.create(name="y", template="minimal", nets=["lan9"])
    with pytest.raises(InvalidArgument, match="each --net once"):
        svc.create(name="y", template="minimal", nets=["default", "default"])
    with pytest.raises(InvalidArgument, match="nameserver"):
        svc.create(name="y", template="minimal", nameservers=["dns.example"])
    assert [i["name"] for i in svc.list()] == ["x"]
    assert [a for n in net.store.nics() for a in n["addresses"]] == ["10.88.0.10"]


def test_networks_overlap_delete_in_use_and_exhaustion(net, svc, make, wait, network):
    with pytest.raises(Conflict, match="overlaps"):
        net.create_network("lan1", "10.88.0.0/16")
    with pytest.raises(InvalidArgument):
        net.create_network("Bad", "10.89.0.0/24")
    ok(wait, net.create_network("tiny", "10.90.0.0/30", nat=False))
    assert "ovbr2" in network.bridges
    make("t1", nets=["tiny"])
    with pytest.raises(InsufficientResources, match="no free address"):
        svc.create(name="t2", template="minimal", nets=["tiny"])
    with pytest.raises(Conflict, match="in use by t1"):
        net.delete_network("tiny")
    ok(wait, svc.destroy("t1"))
    ok(wait, net.delete_network("tiny"))
    assert "ovbr2" not in network.bridges and [n["name"] for n in net.list_networks()] == ["default"]


def test_a_failed_rule_load_undoes_the_store_change(net, make, network, wait):
    make("web1")
    network.fail_rules = True
    row = wait(net.add_forward("web1", "tcp", "2222:22"))
    assert row["status"] == "failure" and "nft" in row["error"]["message"]
    assert net.list_forwards() == []
    row = wait(net.create_network("lan0", "10.89.0.0/24"))
    assert row["status"] == "failure" and [n["name"] for n in net.list_networks()] == ["default"]
    assert "ovbr2" not in network.bridges


def test_forwards(net, make, wait, network):
    make("web1")
    ok(wait, net.add_forward("web1", "tcp", "2222:22"))
    assert "th dport 2222" in network.current_rules and "dnat ip to 10.88.0.2:22" in network.current_rules
    with pytest.raises(Conflict, match="already forwarded to web1:22"):
        net.add_forward("web1", "tcp", "2222:80")
    ok(wait, net.add_forward("web1", "udp", "2222:53"))          # another protocol is another port
    with pytest.raises(NotFound):
        net.add_forward("ghost", "tcp", "1:1")
    with pytest.raises(InvalidArgument):
        net.add_forward("web1", "sctp", "1:1")
    ok(wait, net.remove_forward("tcp", 2222))
    with pytest.raises(NotFound):
        net.remove_forward("tcp", 2222)
    assert [(f["proto"], f["port"]) for f in net.list_forwards()] == [("udp", 2222)]


def test_public_addresses(node, net, make, wait, network):
    net.pool = ["192.0.2.100", "192.0.2.101"]
    make("a")
    make("b")
    p = ok(wait, net.allocate_address())["address"]["address"]
    assert p == "192.0.2.100" and network.public == ["192.0.2.100"]
    ok(wait, net.allocate_address())
    with pytest.raises(InsufficientResources, match="exhausted"):
        net.allocate_address()
    ok(wait, net.associate(p, "a"))
    assert "ip daddr 192.0.2.100 dnat ip to 10.88.0.2" in network.current_rules
    applied = len(network.rules)
    ok(wait, net.associate(p, "b"))                     # the move: exactly one new ruleset
    assert len(network.rules) == applied + 1
    assert "dnat ip to 10.88.0.3" in network.current_rules and "dnat ip to 10.88.0.2 " not in network.current_rules
    with pytest.raises(Conflict, match="disassociate it first"):
        net.release(p)
    ok(wait, net.disassociate(p))
    ok(wait, net.release(p))
    assert network.public == ["192.0.2.101"]


def test_firewall_rules(net, make, wait, network):
    make("web1")
    r = ok(wait, net.allow("web1", "tcp", 22, "203.0.113.9/24"))["rule"]
    assert r["source"] == "203.0.113.0/24"
    assert "ip saddr 203.0.113.0/24 ip daddr { 10.88.0.2 } meta l4proto tcp th dport 22 accept" in network.current_rules
    with pytest.raises(Conflict):
        net.allow("web1", "tcp", 22, "203.0.113.0/24")
    with pytest.raises(InvalidArgument):
        net.allow("web1", "tcp", 0)
    ok(wait, net.remove_rule(r["id"]))
    assert net.list_rules() == []


def test_set_ipadd_ipdel_live_and_dns(node, net, make, svc, wait, network):
    a = make("a", start=True, nameservers=["192.0.2.53"], searchdomain="example.net")
    rootfs = node.bundle(a["ctid"]) / "rootfs"
    assert (rootfs / "etc" / "resolv.conf").read_text().splitlines()[1:] == ["search example.net",
                                                                             "nameserver 192.0.2.53"]
    ok(wait, svc.set("a", ipadd=["10.88.0.60"]))
    assert network.netns[a["ctid"]][0]["addresses"] == ["10.88.0.2", "10.88.0.60"]
    assert svc.get("a")["ip"] == ["10.88.0.2", "10.88.0.60"]
    with pytest.raises(Conflict, match="taken"):
        svc.set("a", ipadd=["10.88.0.60"])
    with pytest.raises(NotFound):
        svc.set("a", ipdel=["10.88.0.99"])
    ok(wait, svc.set("a", ipdel=["10.88.0.60"]))
    assert svc.get("a")["ip"] == ["10.88.0.2"]
    ok(wait, svc.set("a", nameservers=["192.0.2.1"]))
    assert "nameserver 192.0.2.1" in (rootfs / "etc" / "resolv.conf").read_text()
    # a failed live apply restores the store
    network.fail_attach = True
    row = wait(svc.set("a", ipadd=["10.88.0.61"]))
    assert row["status"] == "failure" and svc.get("a")["ip"] == ["10.88.0.2"]


def test_concurrent_creates_never_share_an_address(net, svc, wait):
    ops, errors = [], []

    def go(i):
        try:
            ops.append(svc.create(name=f"c{i}", template="minimal"))
        except Exception as e:       # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=go, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for op in ops:
        assert wait(op)["status"] == "success"
    ips = [i["ip"][0] for i in svc.list()]
    assert len(ips) == 12 and len(set(ips)) == 12


def test_start_failure_removes_the_namespace(node, net, make, svc, wait, network, runtime):
    inst = make("f")
    runtime.fail_run = True
    assert wait(svc.start("f"))["status"] == "failure"
    assert network.attached() == []
    runtime.fail_run = False


def test_reconcile_repairs_running_and_removes_stale(node, net, make, network):
    a = make("a", start=True)
    network.netns.clear()                 # lost while the daemon was away
    network.netns[4242] = []              # a namespace nobody owns
    node.reconcile()
    assert network.attached() == [a["ctid"]]


def test_api_routes(node, net):
    from fastapi.testclient import TestClient
    from openvps.api.app import create_app
    c = TestClient(create_app(node))
    r = c.post("/1.0/networks", json={"name": "lan0", "subnet": "10.88.0.0/25"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = c.post("/1.0/networks", json={"name": "lan0", "subnet": "10.89.0.0/24"})
    assert r.status_code == 202 and r.headers["Location"].startswith("/1.0/operations/")
    node.runner.wait(r.json()["id"], 5)
    assert [n["name"] for n in c.get("/1.0/networks").json()] == ["default", "lan0"]
    assert c.get("/1.0/networks/nope").status_code == 404
    r = c.post("/1.0/forwards", json={"instance": "ghost", "ports": "2222:22"})
    assert r.status_code == 404
    r = c.post("/1.0/instances", json={"name": "z", "template": "minimal", "ipadd": ["10.77.0.1"]})
    assert r.status_code == 400 and "in no network" in r.json()["error"]["message"]
    assert c.get("/1.0/addresses").json() == [] and c.get("/1.0/firewall").json() == []
    assert "/1.0/forwards" in c.get("/openapi.json").json()["paths"]
