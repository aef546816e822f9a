"""API v1 on the fakes: auth, 404-not-403, quotas, ETag/412, pagination + filters, tags, events
(SSE resume), operation cancel, metrics."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from openvps.api.app import create_app
from openvps.api.auth import tcp_app

from test_api import assert_error, finish

G = 1 << 30


@pytest.fixture
def app(node):
    return create_app(node)


@pytest.fixture
def sock(app):
    """The Unix socket's view: no token, acts as admin."""
    with TestClient(app) as c:
        yield c


@pytest.fixture
def tcp(app):
    """tcp(token=None) -> a client that comes in over TCP (needs a bearer token)."""
    made = []

    def make(token: str | None = None) -> TestClient:
        c = TestClient(tcp_app(app), headers={"Authorization": f"Bearer {token}"} if token else {})
        c.__enter__()
        made.append(c)
        return c
    yield make
    for c in made:
        c.__exit__(None, None, None)


@pytest.fixture
def user(sock, tcp):
    """user(name, **quotas) -> a TCP client authenticated as a new (non-admin) user."""
    def make(name: str, admin: bool = False, **quotas) -> TestClient:
        r = sock.post("/1.0/users", json={"name": name, "admin": admin, "quotas": quotas})
        assert r.status_code == 201, r.text
        t = sock.post("/1.0/tokens", json={"user": name, "description": "test"})
        assert t.status_code == 201, t.text
        return tcp(t.json()["token"])
    return make


def create(c, name, **body) -> dict:
    return finish(c, c.post("/1.0/instances", json={"name": name, "template": "minimal", **body}))


# ------------------------------------------------------------------ auth
def test_tcp_needs_a_token(tcp, sock):
    assert_error(tcp().get("/1.0/instances"), 401, "unauthenticated")
    assert_error(tcp("ovps_wrong").get("/1.0/instances"), 401, "unauthenticated")
    assert_error(tcp().get("/metrics"), 401, "unauthenticated")
    r = TestClient(tcp_app(sock.app), headers={"Authorization": "Basic abc"}).get("/1.0")
    assert_error(r, 401, "unauthenticated")
    # the socket acts as the built-in admin
    assert sock.get("/1.0").json()["auth"] == {"user": "admin", "admin": True}


def test_tokens_are_hashed_shown_once_and_revocable(sock, tcp, node):
    sock.post("/1.0/users", json={"name": "alice"})
    t = sock.post("/1.0/tokens", json={"user": "alice", "description": "ci"}).json()
    secret = t["token"]
    assert secret.startswith("ovps_") and secret.startswith(t["prefix"]) and len(t["prefix"]) < 16
    listed = sock.get("/1.0/tokens").json()
    assert [x["id"] for x in listed] == [t["id"]] and "token" not in listed[0] and "hash" not in listed[0]
    stored = node.store.list_tokens("alice")[0]
    assert stored["hash"] != secret and secret not in json.dumps(stored, default=str)
    alice = tcp(secret)
    assert alice.get("/1.0").json()["auth"] == {"user": "alice", "admin": False}
    # alice may make her own token, not bob's; she sees only hers
    assert alice.post("/1.0/tokens", json={}).status_code == 201
    sock.post("/1.0/users", json={"name": "bob"})
    assert_error(alice.post("/1.0/tokens", json={"user": "bob"}), 403, "forbidden")
    assert {x["user"] for x in alice.get("/1.0/tokens").json()} == {"alice"}
    assert sock.delete(f"/1.0/tokens/{t['id']}").status_code == 200
    assert_error(alice.get("/1.0/instances"), 401, "unauthenticated")
    assert_error(sock.delete(f"/1.0/tokens/{t['id']}"), 404, "not_found")


def test_users_admin_only_and_etag(sock, user):
    alice = user("alice")
    assert_error(alice.get("/1.0/users"), 403, "forbidden")
    assert_error(alice.post("/1.0/users", json={"name": "eve"}), 403, "forbidden")
    assert alice.get("/1.0/users/alice").json()["name"] == "alice"
    assert_error(alice.get("/1.0/users/admin"), 404, "not_found")
    r = sock.get("/1.0/users/alice")
    tag = r.headers["etag"]
    ok = sock.patch("/1.0/users/alice", json={"quotas": {"max_ram": "2G"}}, headers={"If-Match": tag})
    assert ok.status_code == 200 and ok.json()["quotas"]["max_ram"] == 2 * G and ok.headers["etag"] != tag
    assert_error(sock.patch("/1.0/users/alice", json={"quotas": {"max_instances": 1}}, headers={"If-Match": tag}),
                 412, "precondition_failed")
    assert_error(sock.post("/1.0/users", json={"name": "alice"}), 409, "conflict")
    assert_error(sock.post("/1.0/users", json={"name": "Bad Name"}), 400, "invalid_argument")
    assert_error(sock.delete("/1.0/users/admin"), 409, "conflict")
    assert [u["name"] for u in sock.get("/1.0/users").json()] == ["admin", "alice"]


# ------------------------------------------------------------------ ownership: 404, not 403
def test_other_users_instances_are_invisible(sock, user):
    alice, bob = user("alice"), user("bob")
    op = create(alice, "a1")
    assert op["owner"] == "alice" and op["result"]["instance"]["owner"] == "alice"
    create(sock, "adm1")
    for ident in ("a1", str(op["result"]["instance"]["ctid"])):
        assert_error(bob.get(f"/1.0/instances/{ident}"), 404, "not_found")
        assert_error(bob.patch(f"/1.0/instances/{ident}", json={"description": "x"}), 404, "not_found")
        assert_error(bob.post(f"/1.0/instances/{ident}/start"), 404, "not_found")
        assert_error(bob.delete(f"/1.0/instances/{ident}"), 404, "not_found")
    # the same answer as for an instance that does not exist at all
    assert bob.get("/1.0/instances/a1").json()["error"]["message"].startswith("no instance")
    assert_error(bob.get(f"/1.0/operations/{op['id']}"), 404, "not_found")
    assert bob.get("/1.0/instances").json()["items"] == []
    assert bob.get("/1.0/instances", params={"owner": "alice"}).json()["items"] == []
    assert bob.get("/1.0/operations").json() == []
    assert [i["name"] for i in alice.get("/1.0/instances").json()["items"]] == ["a1"]
    assert {i["name"] for i in sock.get("/1.0/instances").json()["items"]} == {"a1", "adm1"}
    assert [i["name"] for i in sock.get("/1.0/instances", params={"owner": "alice"}).json()["items"]] == ["a1"]
    assert alice.get("/1.0/instances/a1").status_code == 200
    # non-admins cannot build or remove templates, but may read them
    assert alice.get("/1.0/templates/minimal").status_code == 200
    assert_error(alice.post("/1.0/templates", json={"name": "minimal"}), 403, "forbidden")
    assert_error(alice.delete("/1.0/templates/minimal"), 403, "forbidden")
    assert_error(sock.delete("/1.0/users/alice"), 409, "conflict")   # she owns an instance


# ------------------------------------------------------------------ quotas
def test_quota_instances_and_ram(sock, user):
    alice = user("alice", max_instances=2, max_ram=3 * G)
    create(alice, "a1", limits={"ram": "1G"})
    err = assert_error(alice.post("/1.0/instances", json={"name": "a2", "template": "minimal",
                                                          "limits": {"ram": "4G"}}), 403, "quota_exceeded")
    assert err["details"]["quota"] == "max_ram" and "raise max_ram" in err["message"]
    create(alice, "a2", limits={"ram": "1G"})
    err = assert_error(alice.post("/1.0/instances", json={"name": "a3", "template": "minimal",
                                                          "limits": {"ram": "16M"}}), 403, "quota_exceeded")
    assert err["details"]["quota"] == "max_instances"
    # a saved RAM increase counts too
    assert_error(alice.patch("/1.0/instances/a1", json={"limits": {"ram": "3G"}, "save": True}), 403, "quota_exceeded")
    assert {i["name"] for i in alice.get("/1.0/instances").json()["items"]} == {"a1", "a2"}
    # the admin has no quota
    for n in range(3):
        create(sock, f"adm{n}")


# ------------------------------------------------------------------ ETag / If-Match
def test_etag_and_lost_update(sock):
    create(sock, "web1")
    r = sock.get("/1.0/instances/web1")
    tag = r.headers["etag"]
    assert tag.startswith('"') and sock.get("/1.0/instances/web1").headers["etag"] == tag
    assert sock.get("/1.0/instances/web1", headers={"If-None-Match": tag}).status_code == 304
    # two writers read the same tag; the first wins, the second gets 412
    finish(sock, sock.patch("/1.0/instances/web1", json={"description": "first"}, headers={"If-Match": tag}))
    assert_error(sock.patch("/1.0/instances/web1", json={"description": "second"}, headers={"If-Match": tag}),
                 412, "precondition_failed")
    assert sock.get("/1.0/instances/web1").json()["description"] == "first"
    new = sock.get("/1.0/instances/web1").headers["etag"]
    assert new != tag
    finish(sock, sock.patch("/1.0/instances/web1", json={"description": "third"}, headers={"If-Match": new}))
    finish(sock, sock.patch("/1.0/instances/web1", json={"description": "any"}, headers={"If-Match": "*"}))
    op = finish(sock, sock.post("/1.0/instances/web1/start"))
    assert sock.get(f"/1.0/operations/{op['id']}").headers["etag"]
    assert sock.get("/1.0/templates/minimal").headers["etag"]


# ------------------------------------------------------------------ tags and descriptions
def test_tags_and_description(sock):
    op = create(sock, "web1", tags={"env": "prod", "team": "a"}, description="front end")
    inst = op["result"]["instance"]
    assert inst["tags"] == {"env": "prod", "team": "a"} and inst["description"] == "front end"
    finish(sock, sock.patch("/1.0/instances/web1", json={"tags": {"env": "dev", "x": "1"}, "untag": ["team"]}))
    got = sock.get("/1.0/instances/web1").json()
    assert got["tags"] == {"env": "dev", "x": "1"} and got["description"] == "front end"
    assert_error(sock.post("/1.0/instances", json={"name": "w2", "template": "minimal", "tags": {"bad key": "v"}}),
                 400, "invalid_argument")
    assert_error(sock.patch("/1.0/instances/web1", json={"tags": {"": "v"}}), 400, "invalid_argument")


# ------------------------------------------------------------------ lists at scale
def test_pagination_filters_and_fields(sock, node):
    for i in range(7):
        create(sock, f"web{i}" if i < 5 else f"db{i}", ctid=200 + i, tags={"tier": "web" if i < 5 else "db"})
    finish(sock, sock.post("/1.0/instances/web1/start"))
    seen, cursor, pages = [], None, 0
    while True:
        page = sock.get("/1.0/instances", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [i["ctid"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(range(200, 207)) and pages == 3
    q = lambda **p: [i["name"] for i in sock.get("/1.0/instances", params=p).json()["items"]]  # noqa: E731
    assert q(state="running") == ["web1"]
    assert q(name_prefix="db") == ["db5", "db6"]
    assert q(tag="tier=db") == ["db5", "db6"]
    assert q(tag=["tier=web", "tier=db"]) == []
    assert q(template="minimal", limit=2) == ["web0", "web1"]
    assert q(template="nope") == []
    assert q(name_prefix="w_b") == []          # LIKE wildcards are literal
    page = sock.get("/1.0/instances", params={"fields": "ctid,name,state", "limit": 2}).json()
    assert page["items"] == [{"ctid": 200, "name": "web0", "state": "stopped"},
                             {"ctid": 201, "name": "web1", "state": "running"}]
    assert_error(sock.get("/1.0/instances", params={"fields": "ctid,nope"}), 400, "invalid_argument")
    assert_error(sock.get("/1.0/instances", params={"cursor": "garbage!"}), 400, "invalid_argument")
    assert_error(sock.get("/1.0/instances", params={"state": "sleeping"}), 400, "invalid_argument")
    assert_error(sock.get("/1.0/instances", params={"tag": "novalue"}), 400, "invalid_argument")
    assert_error(sock.get("/1.0/instances", params={"limit": 0}), 400, "invalid_argument")


def test_list_path_makes_no_runtime_or_cgroup_calls(sock, node, monkeypatch):
    create(sock, "web1", start=True)
    monkeypatch.setattr(node.runtime, "state", lambda *a, **k: pytest.fail("runtime.state on the list path"))
    monkeypatch.setattr(node.cgroups, "read", lambda *a, **k: pytest.fail("cgroup read on the list path"))
    assert sock.get("/1.0/instances").json()["items"][0]["state"] == "running"


# ------------------------------------------------------------------ events
def _sse(text: str) -> list[dict]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in fields:
            out.append({"id": int(fields["id"]), "type": fields["event"], **json.loads(fields["data"])})
    return out


def test_events_poll_filter_and_sse_resume(sock, user):
    create(sock, "web1", start=True)
    finish(sock, sock.post("/1.0/instances/web1/stop", json={"force": True}))
    everything = sock.get("/1.0/events", params={"after": 0, "format": "json"}).json()
    types = [e["type"] for e in everything["items"]]
    for t in ("operation.created", "instance.created", "instance.started", "instance.stopped", "operation.finished"):
        assert t in types, types
    ids = [e["id"] for e in everything["items"]]
    assert ids == sorted(ids) and everything["last_id"] == ids[-1]
    lifecycle = sock.get("/1.0/events", params={"after": 0, "format": "json", "type": "instance.*"}).json()["items"]
    assert [e["type"] for e in lifecycle] == ["instance.created", "instance.started", "instance.stopped"]
    assert all(e["data"]["name"] == "web1" for e in lifecycle)
    assert sock.get("/1.0/events", params={"after": 0, "format": "json", "instance": "nope"}).json()["items"] == []
    by_name = sock.get("/1.0/events", params={"after": 0, "format": "json", "instance": "web1"}).json()["items"]
    assert len(by_name) == len(everything["items"])
    # a client that saw up to the 2nd event reconnects with Last-Event-ID and gets exactly the rest
    mark = ids[1]
    with sock.stream("GET", "/1.0/events", params={"timeout": 0.5}, headers={"Last-Event-ID": str(mark)}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        got = _sse(r.read().decode())
    assert [e["id"] for e in got] == ids[2:]
    # events that happen while nobody listens are delivered on the next reconnect
    finish(sock, sock.post("/1.0/instances/web1/start"))
    with sock.stream("GET", "/1.0/events", params={"timeout": 0.5, "type": "instance.started"},
                     headers={"Last-Event-ID": str(ids[-1])}) as r:
        assert [e["type"] for e in _sse(r.read().decode())] == ["instance.started"]
    assert_error(sock.get("/1.0/events", headers={"Last-Event-ID": "x"}), 400, "invalid_argument")
    # another user sees none of the admin's events
    bob = user("bob")
    assert bob.get("/1.0/events", params={"after": 0, "format": "json"}).json()["items"] == []


def test_events_history_is_bounded(node, monkeypatch):
    import openvps.store.accounts as acc
    monkeypatch.setattr(acc, "EVENTS_KEPT", 600)
    for i in range(1000):
        node.store.add_event("test.tick", None, {"i": i})
    rows = node.store.events_after(0, limit=5000)
    assert len(rows) < 1000 and rows[-1]["data"]["i"] == 999


# ------------------------------------------------------------------ operations
def test_cancel_a_pending_operation(sock, node):
    create(sock, "web1", ctid=300)
    lock = node.runner.lock("instance:300")
    lock.acquire()                     # something else holds the instance: the start waits, pending
    try:
        op = sock.post("/1.0/instances/web1/start").json()
        assert op["may_cancel"] is True and op["resources"] == {"instances": ["/1.0/instances/300"]}
        r = sock.delete(f"/1.0/operations/{op['id']}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["may_cancel"] is False
        # a create cancelled while waiting leaves no row behind
        cop = sock.post("/1.0/instances", json={"name": "web2", "template": "minimal", "ctid": 300 + 0}).json()
        assert cop.get("error", {}).get("code") == "conflict"   # ctid taken: checked before any work
        lock2 = node.runner.lock("instance:301")
        lock2.acquire()
        try:
            cop = sock.post("/1.0/instances", json={"name": "web2", "template": "minimal", "ctid": 301}).json()
            assert sock.delete(f"/1.0/operations/{cop['id']}").json()["status"] == "cancelled"
        finally:
            lock2.release()
    finally:
        lock.release()
    done = sock.get(f"/1.0/operations/{op['id']}/wait", params={"timeout": 2}).json()
    assert done["status"] == "cancelled"
    assert sock.get(f"/1.0/operations/{cop['id']}/wait", params={"timeout": 2}).json()["status"] == "cancelled"
    assert sock.get("/1.0/instances/web1").json()["state"] == "stopped"
    assert_error(sock.get("/1.0/instances/web2"), 404, "not_found")
    assert_error(sock.delete(f"/1.0/operations/{op['id']}"), 409, "invalid_state")
    assert_error(sock.delete("/1.0/operations/nope"), 404, "not_found")


# ------------------------------------------------------------------ metrics
def test_metrics_text(sock, node, user, cgroot):
    op = create(sock, "web1", start=True)
    ctid = op["result"]["instance"]["ctid"]
    d = cgroot / node.cgroups.path("", str(ctid)).relative_to(cgroot)
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.current").write_text("1048576\n")
    (d / "memory.swap.current").write_text("0\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    (d / "cpu.stat").write_text("usage_usec 2500000\n")
    sock.get("/1.0/instances")
    r = sock.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert f'openvps_instance_memory_bytes{{ctid="{ctid}",name="web1",owner="admin"}} 1048576' in text
    assert f'openvps_instance_memory_failcnt_total{{ctid="{ctid}",name="web1",owner="admin"}} 7' in text
    assert f'openvps_instance_cpu_seconds_total{{ctid="{ctid}",name="web1",owner="admin"}} 2.5' in text
    assert 'openvps_instances{state="running"} 1' in text and "openvps_node_ram_bytes 8589934592" in text
    assert 'openvps_api_requests_total{method="GET",route="/1.0/instances",status="200"} 1' in text
    assert 'openvps_api_request_duration_seconds_bucket{method="GET",route="/1.0/instances",le="+Inf"} 1' in text
    for line in text.splitlines():      # every sample line is name{labels} value
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
    assert_error(user("alice").get("/metrics"), 403, "forbidden")


def test_templates_do_not_leak_other_users_instances(sock, user):
    alice, bob = user("alice"), user("bob")
    create(alice, "a1")
    create(sock, "adm1")
    assert bob.get("/1.0/templates/minimal").json()["in_use_by"] == []
    assert alice.get("/1.0/templates").json()[0]["in_use_by"] == ["a1"]
    assert sorted(sock.get("/1.0/templates/minimal").json()["in_use_by"]) == ["a1", "adm1"]


def test_quota_holds_under_concurrent_creates(svc, node, wait):
    from concurrent.futures import ThreadPoolExecutor

    from openvps.domain.errors import QuotaExceeded
    from openvps.service.users import Actor
    node.store.add_user("carol", max_instances=3)
    carol = Actor("carol", False)

    def one(i):
        try:
            return wait(svc.create(name=f"c{i}", template="minimal", actor=carol))["status"]
        except QuotaExceeded:
            return "refused"
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(8)))
    assert outcomes.count("success") == 3 and outcomes.count("refused") == 5
    assert len(svc.list(carol)) == 3


def test_migration_0005_upgrades_an_existing_store(tmp_path):
    """A store at revision 0004 with an instance keeps it, owned by admin, with no tags."""
    import sqlalchemy as sa

    from conftest import migrated
    from openvps.store.db import Store
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with migrated(url, "0004") as conn:
        conn.execute(sa.text("INSERT INTO instances (ctid, name, template, state, hostname, init, stop_signal, "
                             "limits, live, privileged) VALUES (150, 'old', 'minimal', 'stopped', 'old', 'busybox', "
                             "'SIGTERM', '{\"ram\": 1024}', '{}', 0)"))
    store = Store(url)
    try:
        row = store.get_instance(150)
        assert row["owner"] == "admin" and row["tags"] == {} and row["description"] == ""
        assert store.list_instances_page(owner="admin")[0]["ctid"] == 150
        assert store.add_event("x.y", "150", {"name": "old"})["id"] == 1
        assert store.get_operation is not None and store.list_users() == []
    finally:
        store.close()
