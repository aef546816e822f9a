"""Networking on the real stack, inside test-made namespaces: a node namespace with an uplink into an
"upstream" namespace (the internet). Port forwards, NAT, IPAM, public addresses, security groups,
anti-spoofing, and nothing left behind."""
import json
import subprocess
import time

import pytest

from daemon import Daemon, netns_list

UP, NODE = "192.0.2.1", "192.0.2.2"


def httpd(d, name: str, text: str, port: int = 80) -> None:
    d.sh(name, f"mkdir -p /www && echo {text} > /www/index.html && busybox httpd -p {port} -h /www")


def nc_get(d, name: str, host: str, port: int, timeout: int = 3) -> str:
    """From inside an instance (busybox nc; the static busybox wget cannot resolve)."""
    p = d.cli("exec", name, "--", "sh", "-c",
              f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {host} {port} | tail -1")
    return p.stdout.strip()


def err(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    return p.stderr


def test_forward_answers_from_upstream_node_and_another_instance_and_egress_is_natted(netd):
    d, up = netd, netd.up
    nets = json.loads(d.ok("network", "list", "--json"))
    assert [(n["name"], n["subnet"], n["nat"]) for n in nets] == [("default", "10.88.0.0/24", True)]
    d.ok("create", "--name", "web1", "--start")
    d.ok("create", "--name", "web2", "--start")
    ips = {i["name"]: i["ip"] for i in json.loads(d.ok("list", "--json"))}
    assert ips == {"web1": ["10.88.0.2"], "web2": ["10.88.0.3"]}
    # inside: eth0 with its address and a default route via the gateway
    assert "inet 10.88.0.2/24" in d.sh("web1", "ip addr show eth0")
    assert d.sh("web1", "ip route | grep default").startswith("default via 10.88.0.1 dev eth0")

    httpd(d, "web1", "hello-web1")
    assert "forwarding tcp port 8080 -> web1:80" in d.ok("forward", "add", "web1", "tcp", "8080:80")
    assert up.http(up.up, f"http://{NODE}:8080/") == "hello-web1"            # from upstream
    assert up.http(up.node, f"http://{NODE}:8080/") == "hello-web1"          # from the node itself
    assert nc_get(d, "web2", NODE, 8080) == "hello-web1"                     # hairpin, from another instance
    fw = json.loads(d.ok("forward", "list", "--json"))
    assert fw == [{"instance": "web1", "proto": "tcp", "port": 8080, "target_port": 80}]

    # egress: reaches upstream, which sees the node's uplink address
    up.serve_peer(9000)
    assert d.sh("web2", f"nc -w 3 {UP} 9000 </dev/null") == NODE

    # remove: gone at once
    d.ok("forward", "remove", "tcp", "8080")
    assert up.http(up.up, f"http://{NODE}:8080/", timeout=2) is None
    st = json.loads(d.ok("status", "web1", "--json"))
    assert st["network"]["interfaces"][0]["addresses"] == ["10.88.0.2"] and st["network"]["forwards"] == []


def test_ipadd_ipam_set_and_nameservers(netd):
    d = netd
    d.ok("network", "create", "lan0", "--subnet", "10.89.0.0/24", "--nat")
    d.ok("create", "--name", "a", "--ipadd", "10.88.0.50", "--nameserver", "192.0.2.53",
         "--nameserver", "192.0.2.54", "--searchdomain", "example.net", "--start")
    d.ok("create", "--name", "b", "--net", "default", "--net", "lan0", "--start")
    a, b = (json.loads(d.ok("status", n, "--json")) for n in ("a", "b"))
    assert a["ip"] == ["10.88.0.50"]
    assert b["ip"] == ["10.88.0.2", "10.89.0.2"]
    assert [x["ifname"] for x in b["network"]["interfaces"]] == ["eth0", "eth1"]
    assert "inet 10.89.0.2/24" in d.sh("b", "ip addr show eth1")
    assert d.sh("a", "cat /etc/resolv.conf").splitlines()[1:] == [
        "search example.net", "nameserver 192.0.2.53", "nameserver 192.0.2.54"]
    # live: add and remove an address on a running instance
    d.ok("set", "a", "--ipadd", "10.88.0.60")
    assert "10.88.0.60/24" in d.sh("a", "ip addr show eth0")
    assert "1 packets received" in d.sh("b", "ping -c1 -W2 10.88.0.60")
    # /metrics counts each instance's traffic from its veths (ping: 84-byte packets, plus ARP)
    counters = {}
    for line in d.client.metrics().splitlines():
        if line.startswith("openvps_instance_network_"):
            name, value = line.rsplit(" ", 1)
            counters[name] = int(value)
    def net(metric, inst):
        return counters[f'openvps_instance_network_{metric}_total{{ctid="{inst["ctid"]}",name="{inst["name"]}",owner="admin"}}']
    assert net("rx_bytes", a) >= 84 and net("rx_packets", a) >= 1 and net("tx_packets", a) >= 1
    assert net("tx_bytes", b) >= 84
    d.ok("set", "a", "--ipdel", "10.88.0.60")
    assert "10.88.0.60" not in d.sh("a", "ip addr show eth0")
    # a stopped instance keeps its address; after a restart it is there again
    d.ok("stop", "b")
    d.ok("start", "b")
    assert "inet 10.89.0.2/24" in d.sh("b", "ip addr show eth1")
    show = json.loads(d.ok("network", "show", "lan0", "--json"))
    assert show["leases"] == [{"address": "10.89.0.2", "instance": "b", "ifname": "eth1", "mac": show["leases"][0]["mac"]}]
    # delete refused while in use; fine once free
    assert "in use by b" in err(d.cli("network", "delete", "lan0"))
    d.ok("destroy", "b", "--force")
    d.ok("network", "delete", "lan0")
    assert "ovbr2" not in d.up.links()


def test_bad_input_is_4xx_and_leaves_nothing(netd):
    d, c = netd, netd.client
    d.ok("create", "--name", "x", "--ipadd", "10.88.0.10")
    before = (d.ok("list", "--json"), d.ok("network", "list", "--json"))
    assert "overlaps 10.88.0.0/24" in err(d.cli("network", "create", "lan1", "--subnet", "10.88.0.128/25"))
    assert "host bits set" in err(d.cli("network", "create", "lan1", "--subnet", "10.77.0.1/24"))
    assert "is taken" in err(d.cli("create", "--name", "y", "--ipadd", "10.88.0.10"))
    assert "outside" in err(d.cli("create", "--name", "y", "--net", "default", "--ipadd", "10.99.0.5"))
    assert "in no network" in err(d.cli("create", "--name", "y", "--ipadd", "10.99.0.5"))
    assert "gateway" in err(d.cli("create", "--name", "y", "--ipadd", "10.88.0.1"))
    assert "broadcast" in err(d.cli("create", "--name", "y", "--ipadd", "10.88.0.255"))
    assert "no network 'nope'" in err(d.cli("create", "--name", "y", "--net", "nope"))
    assert "no instance 'ghost'" in err(d.cli("forward", "add", "ghost", "tcp", "2222:22"))
    d.ok("forward", "add", "x", "tcp", "2222:22")
    assert "already forwarded to x:22" in err(d.cli("forward", "add", "x", "tcp", "2222:80"))
    assert "NODE_PORT:INSTANCE_PORT" in err(d.cli("forward", "add", "x", "tcp", "22x"))
    assert "1..65535" in err(d.cli("forward", "add", "x", "tcp", "70000:22"))
    d.ok("forward", "remove", "tcp", "2222")
    after = (d.ok("list", "--json"), d.ok("network", "list", "--json"))
    assert after == before
    # HTTP status codes
    from openvps.domain.errors import Conflict, InvalidArgument, NotFound
    with pytest.raises(Conflict):
        c.request("POST", "/1.0/networks", {"name": "lan1", "subnet": "10.88.0.0/16"})
    with pytest.raises(InvalidArgument):
        c.create(name="y", template="minimal", ipadd=["10.99.0.5"], nets=["default"])
    with pytest.raises(NotFound):
        c.request("POST", "/1.0/forwards", {"instance": "ghost", "ports": "1:1"})
    # an exhausted pool: a /30 holds one instance
    d.ok("network", "create", "tiny", "--subnet", "10.90.0.0/30")
    d.ok("create", "--name", "t1", "--net", "tiny")
    assert "no free address left" in err(d.cli("create", "--name", "t2", "--net", "tiny"))
    names = [i["name"] for i in json.loads(d.ok("list", "--json"))]
    assert sorted(names) == ["t1", "x"]


def test_public_address_moves_atomically_and_answers_from_the_new_instance_only(netd):
    d, up = netd, netd.up
    for n in ("p1", "p2"):
        d.ok("create", "--name", n, "--start")
        httpd(d, n, f"hello-{n}")
    pub = json.loads(d.ok("address", "allocate", "--json"))["address"]
    assert pub == "192.0.2.100"
    assert "192.0.2.100/32" in up.run(up.node, "ip", "addr", "show", "uplink0").stdout
    d.ok("firewall", "allow", "p1", "tcp", "80")
    d.ok("firewall", "allow", "p2", "tcp", "80")
    d.ok("address", "associate", pub, "p1")
    assert up.http(up.up, f"http://{pub}/") == "hello-p1"
    # a connection opened before the move (an echo server on p1)...
    d.cli("firewall", "allow", "p1", "tcp", "7000")
    d.sh("p1", "(nc -ll -p 7000 -e cat >/dev/null 2>&1 &) ; sleep 0.2")
    client = subprocess.Popen(["ip", "netns", "exec", up.up, "python3", "-c",
                               "import socket,sys\n"
                               f"s=socket.create_connection(('{pub}',7000),timeout=3)\n"
                               "for line in sys.stdin:\n"
                               " s.sendall(line.encode())\n"
                               " try: print(s.recv(100).decode().strip(),flush=True)\n"
                               " except OSError: print('timeout',flush=True)\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    up.procs.append(client)
    client.stdin.write("before\n")
    client.stdin.flush()
    assert client.stdout.readline().strip() == "before"
    # out: the instance leaves with its public address (1:1 SNAT), the others with the node's
    up.serve_peer(9000)
    assert d.sh("p1", f"nc -w 3 {UP} 9000 </dev/null") == pub
    assert d.sh("p2", f"nc -w 3 {UP} 9000 </dev/null") == NODE
    d.ok("address", "associate", pub, "p2")        # the move: one ruleset swap
    for _ in range(3):
        assert up.http(up.up, f"http://{pub}/") == "hello-p2"
    # ...never reaches the old instance after the move
    client.stdin.write("after\n")
    client.stdin.flush()
    assert client.stdout.readline().strip() == "timeout"
    assert d.sh("p2", f"nc -w 3 {UP} 9000 </dev/null") == pub
    assert json.loads(d.ok("address", "list", "--json")) == [{"address": pub, "instance": "p2", "owner": "admin"}]
    assert "disassociate it first" in err(d.cli("address", "release", pub))
    d.ok("address", "disassociate", pub)
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None
    d.ok("address", "release", pub)
    assert "192.0.2.100" not in up.run(up.node, "ip", "addr", "show", "uplink0").stdout
    assert json.loads(d.ok("address", "list", "--json")) == []


def test_security_group_blocks_then_allows(netd):
    d, up = netd, netd.up
    d.ok("create", "--name", "fw", "--start")
    httpd(d, "fw", "hello-fw")
    pub = json.loads(d.ok("address", "allocate", "--json"))["address"]
    d.ok("address", "associate", pub, "fw")
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None           # denied by default
    rule = json.loads(d.ok("firewall", "allow", "fw", "tcp", "80", "--from", "192.0.2.0/24", "--json"))
    assert up.http(up.up, f"http://{pub}/") == "hello-fw"
    assert [r["port"] for r in json.loads(d.ok("firewall", "list", "--json"))] == [80]
    d.ok("firewall", "remove", str(rule["id"]))
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None
    # a rule for another source does not open it
    d.ok("firewall", "allow", "fw", "tcp", "80", "--from", "203.0.113.0/24")
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None
    # the instance itself still reaches out (established replies come back)
    up.serve_peer(9000)
    assert d.sh("fw", f"nc -w 3 {UP} 9000 </dev/null") == pub


def test_ip_and_mac_spoofing_are_dropped(netd):
    d = netd
    d.ok("create", "--name", "victim", "--start")        # 10.88.0.2
    d.ok("create", "--name", "evil", "--start")          # 10.88.0.3
    assert "1 packets received" in d.sh("evil", "ping -c1 -W2 10.88.0.1")
    # another source address (the victim's): dropped before it reaches the node
    d.sh("evil", "ip addr add 10.88.0.2/32 dev eth0")

    def send(src):
        return lambda: d.cli("exec", "evil", "--", "ping", "-c", "2", "-W", "1", "-I", src, "10.88.0.1")
    assert d.up.ping_sources(d.up.node, 2.5, send("10.88.0.3")) == ["10.88.0.3"]     # its own: arrives
    assert d.up.ping_sources(d.up.node, 2.5, send("10.88.0.2")) == []               # spoofed: dropped
    # ARP claiming the victim's address (gratuitous, with evil's own MAC): dropped, the node's
    # neighbour entry for the victim keeps the victim's MAC
    assert "1 packets received" in d.sh("victim", "ping -c1 -W2 10.88.0.1")
    d.cli("exec", "evil", "--", "arping", "-c", "2", "-U", "-s", "10.88.0.2", "-I", "eth0", "10.88.0.1")
    d.cli("exec", "evil", "--", "arping", "-c", "2", "-A", "-s", "10.88.0.2", "-I", "eth0", "10.88.0.1")
    evil_mac = d.sh("evil", "cat /sys/class/net/eth0/address")
    neigh = d.up.run(d.up.node, "ip", "neigh", "show", "10.88.0.2").stdout
    assert "lladdr" in neigh and evil_mac not in neigh
    d.sh("evil", "ip addr del 10.88.0.2/32 dev eth0")
    # another MAC: dropped (ARP and IP)
    d.sh("evil", "ip link set eth0 down; ip link set eth0 address 02:0f:00:00:00:64; ip link set eth0 up;"
                 " ip route add default via 10.88.0.1 2>/dev/null; true")
    p = d.cli("exec", "evil", "--", "ping", "-c1", "-W2", "10.88.0.1")
    assert p.returncode != 0
    # the victim is unaffected
    assert "1 packets received" in d.sh("victim", "ping -c1 -W2 10.88.0.1")


def test_daemon_restart_keeps_and_repairs_the_network(netd):
    d, up = netd, netd.up
    d.ok("create", "--name", "keep", "--start")
    httpd(d, "keep", "hello-keep")
    d.ok("forward", "add", "keep", "tcp", "8081:80")
    d.kill9()
    assert up.http(up.up, f"http://{NODE}:8081/") == "hello-keep"       # the daemon is not in the data path
    up.run(up.node, "nft", "delete", "table", "inet", "openvps")            # someone broke our rules
    assert up.http(up.up, f"http://{NODE}:8081/", timeout=2) is None
    d.start()
    assert up.http(up.up, f"http://{NODE}:8081/") == "hello-keep"       # rebuilt from the store


def test_everything_destroyed_and_daemon_stopped_leaves_nothing(netd):
    d, up = netd, netd.up
    d.ok("network", "create", "lan0", "--subnet", "10.89.0.0/24")
    d.ok("create", "--name", "g1", "--net", "lan0", "--net", "default", "--start")
    d.ok("create", "--name", "g2")
    d.ok("forward", "add", "g1", "udp", "5353:53")
    pub = json.loads(d.ok("address", "allocate", "--json"))["address"]
    d.ok("address", "associate", pub, "g1")
    ns = d.netns()
    assert ns == [f"ovps-{d.home_id}-{json.loads(d.ok('status', 'g1', '--json'))['ctid']}"]
    for n in ("g1", "g2"):
        d.ok("destroy", n, "--force")
    d.ok("address", "release", pub)
    assert d.netns() == []
    d.stop()
    assert d.netns() == []
    assert sorted(up.links()) == ["lo", "uplink0"]                         # no bridge, no port
    assert up.nft_tables() == ""                                           # no table of ours
    assert pub not in up.run(up.node, "ip", "addr").stdout
    assert [n for n in netns_list() if n.startswith("ovps-") and d.home_id in n] == []


def test_default_node_namespace_is_made_and_removed(template_dir, minimal):
    d = Daemon(template_dir)
    try:
        d.start()
        assert d.netns() == [f"ovps-{d.home_id}"]
        d.ok("create", "--name", "solo", "--start")
        assert "inet 10.88.0.2/24" in d.sh("solo", "ip addr show eth0")
        d.ok("destroy", "solo", "--force")
        d.stop()
        assert d.netns() == []
    finally:
        d.cleanup()


@pytest.mark.slow
def test_debian_reachable_with_ssh_through_its_forward(netd, tmp_path, template_dir):
    from openvps.drivers.templates.cache import TemplateCache
    TemplateCache(template_dir).build("debian-12")
    d, up = netd, netd.up
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    d.ok("create", "--name", "deb", "--template", "debian-12", "--ssh-key", f"{key}.pub", "--start")
    d.ok("forward", "add", "deb", "tcp", "2222:22")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if d.cli("exec", "deb", "--", "systemctl", "is-system-running").stdout.strip() in ("running", "degraded"):
            break
        time.sleep(0.25)
    # ifupdown did not fight us: eth0 kept its address after boot
    assert "inet 10.88.0.2/24" in d.sh("deb", "ip addr show eth0")
    p = up.run(up.up, "ssh", "-i", str(key), "-p", "2222", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", f"root@{NODE}", "hostname; ip -4 -o addr show eth0",
               timeout=40)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "deb" and "10.88.0.2/24" in p.stdout
