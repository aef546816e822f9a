"""API v1 on the fakes: a user manages the forwards, firewall rules, public addresses and
beancounters of their own instances only (another user's are missing: 404); max_public_ips is
enforced; networks are the admin's; per-user rate limiting (429 + Retry-After); network bytes in
/metrics."""
from __future__ import annotations

import pytest

from openvps.service.ratelimit import RateLimiter
from openvps.domain.errors import RateLimited

from test_api import assert_error, finish
from test_api_v1_fakes import app, create, sock, tcp, user  # noqa: F401  (fixtures)


@pytest.fixture
def pooled(node, sock):
    """A network `lan` and a public pool of three addresses."""
    node.networks.pool = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    finish(sock, sock.post("/1.0/networks", json={"name": "lan", "subnet": "10.77.0.0/24"}))
    return node


def test_user_manages_only_own_forwards_rules_and_addresses(pooled, sock, user):
    alice, bob = user("alice", max_instances=5), user("bob", max_instances=5)
    create(alice, "a1", nets=["lan"])
    create(bob, "b1", nets=["lan"])

    # forwards: on your own instance yes, on another's 404 (not 403: no existence leak)
    finish(alice, alice.post("/1.0/forwards", json={"instance": "a1", "ports": "8080:80"}))
    assert_error(alice.post("/1.0/forwards", json={"instance": "b1", "ports": "8081:80"}), 404, "not_found")
    finish(bob, bob.post("/1.0/forwards", json={"instance": "b1", "ports": "8082:80"}))
    assert [f["instance"] for f in alice.get("/1.0/forwards").json()] == ["a1"]
    assert {f["instance"] for f in sock.get("/1.0/forwards").json()} == {"a1", "b1"}
    assert_error(alice.delete("/1.0/forwards/tcp/8082"), 404, "not_found")
    assert len(sock.get("/1.0/forwards").json()) == 2          # bob's forward survived alice's try

    # firewall rules likewise
    rule = finish(bob, bob.post("/1.0/firewall", json={"instance": "b1", "port": 22}))["result"]["rule"]
    assert alice.get("/1.0/firewall").json() == []
    assert_error(alice.delete(f"/1.0/firewall/{rule['id']}"), 404, "not_found")
    assert_error(alice.post("/1.0/firewall", json={"instance": "b1", "port": 23}), 404, "not_found")
    finish(bob, bob.delete(f"/1.0/firewall/{rule['id']}"))

    # public addresses: owned by who allocated them; the operation is the caller's to follow
    r = alice.post("/1.0/addresses", json={})
    op = finish(alice, r)
    addr = op["result"]["address"]["address"]
    assert op["owner"] == "alice"          # alice can follow (GET /wait) her own operation
    assert alice.get("/1.0/addresses").json() == [{"address": addr, "instance": None, "owner": "alice"}]
    assert bob.get("/1.0/addresses").json() == []
    assert_error(bob.post(f"/1.0/addresses/{addr}/associate", json={"instance": "b1"}), 404, "not_found")
    assert_error(alice.post(f"/1.0/addresses/{addr}/associate", json={"instance": "b1"}), 404, "not_found")
    assert_error(bob.delete(f"/1.0/addresses/{addr}"), 404, "not_found")
    finish(alice, alice.post(f"/1.0/addresses/{addr}/associate", json={"instance": "a1"}))
    assert pooled.network.public == [addr]
    assert sock.get("/1.0/addresses").json() == [{"address": addr, "instance": "a1", "owner": "alice"}]
    finish(alice, alice.post(f"/1.0/addresses/{addr}/disassociate"))
    finish(alice, alice.delete(f"/1.0/addresses/{addr}"))
    assert sock.get("/1.0/addresses").json() == []

    # networks: listed for everybody (they may attach to them), showing only their own instances
    nets = {n["name"]: n for n in alice.get("/1.0/networks").json()}
    assert nets["lan"]["instances"] == ["a1"]
    leases = alice.get("/1.0/networks/lan").json()["leases"]
    assert [x["instance"] for x in leases] == ["a1"]
    assert_error(alice.post("/1.0/networks", json={"name": "mine", "subnet": "10.78.0.0/24"}), 403, "forbidden")
    assert_error(alice.delete("/1.0/networks/lan"), 403, "forbidden")


def test_max_public_ips_quota(pooled, sock, user):
    alice = user("alice", max_public_ips=1)
    finish(alice, alice.post("/1.0/addresses", json={}))
    r = alice.post("/1.0/addresses", json={})
    assert_error(r, 403, "quota_exceeded")
    assert r.json()["error"]["details"] == {"quota": "max_public_ips", "limit": 1, "used": 1}
    assert len(sock.get("/1.0/addresses").json()) == 1        # nothing half-allocated
    # the admin is not bound by alice's quota, and raising it lets alice go on
    finish(sock, sock.post("/1.0/addresses", json={}))
    assert sock.patch("/1.0/users/alice", json={"quotas": {"max_public_ips": 2}}).status_code == 200
    finish(alice, alice.post("/1.0/addresses", json={}))
    assert len(alice.get("/1.0/addresses").json()) == 2


def test_user_reads_own_beancounters_and_events_only(sock, user):
    alice, bob = user("alice"), user("bob")
    create(alice, "a1", start=True)
    create(bob, "b1", start=True)
    assert alice.get("/1.0/instances/a1/beancounters").json()["name"] == "a1"
    assert_error(alice.get("/1.0/instances/b1/beancounters"), 404, "not_found")
    assert_error(alice.post("/1.0/instances/b1/beancounters/reset"), 404, "not_found")
    assert [b["name"] for b in alice.get("/1.0/beancounters").json()] == ["a1"]
    assert {b["name"] for b in sock.get("/1.0/beancounters").json()} == {"a1", "b1"}
    assert_error(alice.get("/1.0/instances/b1/events"), 404, "not_found")
    assert alice.get("/1.0/limit-events").status_code == 200
    assert_error(alice.get("/1.0/node/capacity"), 403, "forbidden")
    assert_error(alice.get("/1.0/node/split", params={"n": 4}), 403, "forbidden")


def test_rate_limit_answers_429_with_retry_after(app, sock, user):
    app.state.rate_limiter = RateLimiter(rate=1, burst=3)
    alice, bob = user("alice"), user("bob")
    assert [alice.get("/1.0/instances").status_code for _ in range(3)] == [200, 200, 200]
    r = alice.get("/1.0/instances")
    assert_error(r, 429, "too_many_requests")
    assert int(r.headers["retry-after"]) >= 1
    assert bob.get("/1.0/instances").status_code == 200     # one user's bucket is not another's
    assert all(sock.get("/1.0/instances").status_code == 200 for _ in range(10))   # the socket: never limited


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    rl = RateLimiter(rate=2, burst=2, clock=lambda: now[0])
    rl.take("u")
    rl.take("u")
    with pytest.raises(RateLimited) as e:
        rl.take("u")
    assert e.value.details == {"retry_after": 1}
    now[0] += 0.5            # one token back
    rl.take("u")
    with pytest.raises(RateLimited):
        rl.take("u")
    RateLimiter(rate=0, burst=1).take("u")      # 0 = no limit
    for _ in range(5):
        RateLimiter(rate=0, burst=1).take("u")


def test_metrics_have_network_bytes(pooled, sock, network):
    op = create(sock, "web1", nets=["lan"], start=True)
    ctid = op["result"]["instance"]["ctid"]
    network.counters[ctid] = {"rx_bytes": 1500, "tx_bytes": 700, "rx_packets": 3, "tx_packets": 2}
    text = sock.get("/metrics").text
    assert f'openvps_instance_network_rx_bytes_total{{ctid="{ctid}",name="web1",owner="admin"}} 1500' in text
    assert f'openvps_instance_network_tx_packets_total{{ctid="{ctid}",name="web1",owner="admin"}} 2' in text
    assert "openvps_node_instances_network_tx_bytes_total 700" in text


def test_network_has_an_etag(pooled, sock):
    r = sock.get("/1.0/networks/lan")
    tag = r.headers["etag"]
    assert r.status_code == 200 and r.json()["name"] == "lan"
    assert sock.get("/1.0/networks/lan", headers={"If-None-Match": tag}).status_code == 304
    create(sock, "web1", nets=["lan"])           # a new lease changes the network's view, so its tag
    r2 = sock.get("/1.0/networks/lan", headers={"If-None-Match": tag})
    assert r2.status_code == 200 and r2.headers["etag"] != tag


def test_openapi_documents_429_on_every_route(app):
    spec = app.openapi()
    ops = [(path, m, op) for path, item in spec["paths"].items() for m, op in item.items()]
    assert len(ops) > 40
    assert all("429" in op["responses"] for _p, _m, op in ops), [(p, m) for p, m, op in ops if "429" not in op["responses"]]


def test_served_openapi_document_has_429(sock):
    spec = sock.get("/openapi.json").json()
    assert "429" in spec["paths"]["/1.0/instances"]["post"]["responses"]
