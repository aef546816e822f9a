"""The dashboard's logic on the fakes: passwords, sessions and CSRF (cookie auth for /1.0 too),
bookmarks (validation, owner scope, gone with the instance) and the round-robin sample store."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from openvps.api.auth import tcp_app
from openvps.service.samples import SampleService, rings, series
from openvps.service.webauth import COOKIE, csrf_ok, hash_password, verify_password
from openvps.store.webmodels import SampleRow, WebSessionRow
from openvps.store.webstore import WebStore, secret_hash

from test_api import finish
from test_api_v1_fakes import app, sock  # noqa: F401  (fixtures)


@pytest.fixture
def browser(app):
    """browser() -> a fresh TCP client with its own cookie jar (like a browser)."""
    made = []

    def make() -> TestClient:
        c = TestClient(tcp_app(app), follow_redirects=False)
        c.__enter__()
        made.append(c)
        return c
    yield make
    for c in made:
        c.__exit__(None, None, None)


def add_user(sock, name, password="correct horse", admin=False):
    assert sock.post("/1.0/users", json={"name": name, "admin": admin}).status_code == 201
    r = sock.put(f"/1.0/users/{name}/password", json={"password": password})
    assert r.status_code == 200, r.text


def login(c, user, password="correct horse") -> str:
    r = c.post("/ui/login", data={"user": user, "password": password})
    assert r.status_code == 303, r.text
    page = c.get("/ui/")
    assert page.status_code == 200
    return page.text.split('name="csrf-token" content="')[1].split('"')[0]


# ---------------------------------------------------------------- passwords and CSRF, pure
def test_password_hash_is_salted_scrypt_and_verifies():
    a, b = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert a != b and a.startswith("scrypt$") and "s3cret" not in a
    assert verify_password("s3cret-pass", a) and verify_password("s3cret-pass", b)
    assert not verify_password("s3cret-pasS", a)
    assert not verify_password("x", None) and not verify_password("x", "garbage")


def test_csrf_rule():
    s = {"csrf": "tok"}
    assert csrf_ok(s, "GET", None) and csrf_ok(s, "head", None)
    assert not csrf_ok(s, "POST", None) and not csrf_ok(s, "DELETE", "nope") and not csrf_ok(s, "PATCH", "")
    assert csrf_ok(s, "PUT", "tok")


# ---------------------------------------------------------------- sessions over HTTP
def test_login_sets_a_strict_httponly_cookie_stored_hashed(sock, browser, node):
    add_user(sock, "alice")
    c = browser()
    r = c.post("/ui/login", data={"user": "alice", "password": "correct horse"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    secret = c.cookies[COOKIE]
    with node.store._sessions() as s:
        hashes = list(s.scalars(select(WebSessionRow.hash)))
    assert hashes == [secret_hash(secret)] and secret not in hashes
    assert c.get("/1.0").json()["auth"] == {"user": "alice", "admin": False}


def test_wrong_password_and_no_password(sock, browser):
    add_user(sock, "alice")
    assert sock.post("/1.0/users", json={"name": "bob"}).status_code == 201      # bob has no password
    c = browser()
    for user, pw in (("alice", "wrong password"), ("bob", "anything at all"), ("nobody", "correct horse")):
        r = c.post("/ui/login", data={"user": user, "password": pw})
        assert r.status_code == 401 and "wrong user name or password" in r.text
        assert COOKIE not in c.cookies
    assert c.get("/ui/").status_code == 303          # pages send you to the login


def test_failed_logins_are_throttled_per_user_and_per_address(sock, browser, app):
    from openvps.service.webauth import ADDRESS_FAILURES, LOGIN_FAILURES, LOGIN_REFILL
    add_user(sock, "alice")
    add_user(sock, "dave")
    now = [1000.0]
    web = app.state.webauth
    web.user_failures.clock = web.address_failures.clock = lambda: now[0]
    c = browser()
    for _ in range(LOGIN_FAILURES):
        assert c.post("/ui/login", data={"user": "alice", "password": "guess guess"}).status_code == 401
    r = c.post("/ui/login", data={"user": "alice", "password": "correct horse"})   # even the right one waits
    assert r.status_code == 429 and "too many failed logins for user alice" in r.text
    assert int(r.headers["Retry-After"]) == LOGIN_REFILL and COOKIE not in c.cookies
    login(browser(), "dave")                      # another name from the same address is not locked out
    now[0] += LOGIN_REFILL
    login(c, "alice")                             # one attempt back per LOGIN_REFILL seconds
    # one address guessing many names is stopped too (a token login counts against its address)
    guesser = browser()
    for i in range(ADDRESS_FAILURES - LOGIN_FAILURES + 1):    # alice's 5 count too; 30 s gave one back
        assert guesser.post("/ui/login", data={"token": f"ovps_wrong{i}"}).status_code == 401
    r = guesser.post("/ui/login", data={"user": "dave", "password": "correct horse"})
    assert r.status_code == 429 and "too many failed logins for address" in r.text


def test_token_login(sock, browser):
    assert sock.post("/1.0/users", json={"name": "carol"}).status_code == 201
    token = sock.post("/1.0/tokens", json={"user": "carol"}).json()["token"]
    c = browser()
    assert c.post("/ui/login", data={"token": "ovps_wrong"}).status_code == 401
    assert c.post("/ui/login", data={"token": token}).status_code == 303
    assert c.get("/1.0").json()["auth"]["user"] == "carol"


def test_unsafe_calls_need_the_csrf_token(sock, browser):
    add_user(sock, "alice")
    c = browser()
    csrf = login(c, "alice")
    body = {"name": "web1", "template": "minimal"}
    r = c.post("/1.0/instances", json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert c.post("/1.0/instances", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    r = c.post("/1.0/instances", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202, r.text
    assert finish(sock, r)["status"] == "success"
    assert c.get("/1.0/instances/web1").json()["owner"] == "alice"
    # logout needs it too (no logging people out from other sites)
    assert c.post("/ui/logout", data={"csrf": "wrong"}).status_code == 403
    assert c.get("/1.0").status_code == 200
    assert c.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    c.cookies.clear()


def test_logout_and_expiry_end_the_session(sock, browser, node):
    add_user(sock, "alice")
    c = browser()
    csrf = login(c, "alice")
    secret = c.cookies[COOKIE]
    with node.store._tx() as s:
        s.execute(update(WebSessionRow).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    r = c.get("/1.0")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    csrf = login(c, "alice")
    assert c.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    # the old cookie value is dead on the server, not only deleted in the browser
    c.cookies.set(COOKIE, secret)
    assert c.get("/1.0").status_code == 401


def test_login_from_another_site_is_refused(sock, browser):
    add_user(sock, "alice")
    c = browser()
    r = c.post("/ui/login", data={"user": "alice", "password": "correct horse"},
               headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and COOKIE not in c.cookies


def test_password_rest_rules(sock, browser):
    add_user(sock, "alice")
    add_user(sock, "bob")
    c = browser()
    csrf = login(c, "alice")
    h = {"X-CSRF-Token": csrf}
    r = c.put("/1.0/users/bob/password", json={"password": "hijacked!!"}, headers=h)
    assert r.status_code == 404
    for bad in ("short", "long enough\ud800", "two\nlines here"):
        r = c.put("/1.0/users/alice/password", content=json.dumps({"password": bad}),
                  headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "password", bad
    assert c.put("/1.0/users/alice/password", json={"password": "a new password"}, headers=h).status_code == 200
    assert c.get("/1.0").status_code == 401            # a new password ends the sessions
    assert browser().post("/ui/login", data={"user": "alice", "password": "a new password"}).status_code == 303


# ---------------------------------------------------------------- bookmarks
def test_bookmarks_validated_scoped_and_gone_with_the_instance(sock, browser, node):
    add_user(sock, "alice")
    add_user(sock, "bob")
    a, b = browser(), browser()
    ha, hb = {"X-CSRF-Token": login(a, "alice")}, {"X-CSRF-Token": login(b, "bob")}
    assert finish(sock, a.post("/1.0/instances", json={"name": "web1", "template": "minimal"}, headers=ha))["status"] \
        == "success"
    for bad in ("javascript:alert(1)", "data:text/html,x", "http://", "ftp://x/", "http://x/\ud800", "http://x/\na"):
        r = a.put("/1.0/instances/web1/bookmarks", content=json.dumps({"bookmarks": [{"label": "x", "url": bad}]}),
                  headers={**ha, "Content-Type": "application/json"})     # (json.dumps escapes lone surrogates)
        assert r.status_code == 400, bad
    marks = [{"label": "site", "url": "http://198.51.100.7/"}, {"label": "admin", "url": "https://x.test:8443/a"}]
    r = a.put("/1.0/instances/web1/bookmarks", json={"bookmarks": marks}, headers=ha)
    assert r.status_code == 200 and r.json()["bookmarks"] == marks
    assert a.get("/1.0/instances/web1/bookmarks").json()["bookmarks"] == marks
    assert b.get("/1.0/instances/web1/bookmarks").status_code == 404
    assert b.put("/1.0/instances/web1/bookmarks", json={"bookmarks": []}, headers=hb).status_code == 404
    inv = a.get("/ui/inventory.json").json()["items"]
    assert [i["bookmarks"] for i in inv] == [marks]
    assert b.get("/ui/inventory.json").json()["items"] == []
    ctid = inv[0]["ctid"]
    assert finish(sock, sock.delete("/1.0/instances/web1"))["status"] == "success"
    assert WebStore(node.store).bookmarks([ctid]) == {}


# ---------------------------------------------------------------- the round-robin store
def test_rings():
    assert rings(10) == [(10, 360), (300, 288)]
    assert rings(1) == [(1, 3600), (300, 288)]
    assert rings(600) == [(600, 6)]


def test_ring_holds_a_fixed_number_of_slots_and_queries_by_range(sock, node):
    assert finish(sock, sock.post("/1.0/instances", json={"name": "s1", "template": "minimal"}))["status"] == "success"
    ctid = sock.get("/1.0/instances/s1").json()["ctid"]
    web = WebStore(node.store)
    t0 = 1_700_000_100.0              # on a 5-minute boundary
    for i in range(500):             # more than an hour at 10 s: the hour ring wraps
        web.put_sample(ctid, t0 + 10 * i, rings(10), {"cpu_ns": i * 5_000_000_000, "memory": 1000 + i, "swap": 0,
                                                      "rx": i * 100, "tx": i * 50})
    with node.store._sessions() as s:
        n10 = s.scalar(select(func.count()).select_from(SampleRow).where(SampleRow.res == 10))
        n300 = s.scalar(select(func.count()).select_from(SampleRow).where(SampleRow.res == 300))
    assert n10 == 360 and n300 == 17       # 4990 s of samples = 17 five-minute windows
    svc = SampleService(node)
    now = t0 + 10 * 499
    hour = svc.query(ctid, "1h", now=now)
    assert hour["resolution"] == 10 and len(hour["points"]) == 360    # the hour ring: 360 slots
    assert hour["points"][-1]["memory"] == 1499
    assert hour["points"][-1]["cpu"] == pytest.approx(50.0)              # 5 s of CPU per 10 s
    assert hour["points"][-1]["rx"] == pytest.approx(10.0)
    day = svc.query(ctid, "1d", now=now)
    assert day["resolution"] == 300 and len(day["points"]) == 17
    # the REST view checks the range and the owner
    assert sock.get(f"/1.0/instances/{ctid}/samples?range=2w").status_code == 400
    assert finish(sock, sock.delete("/1.0/instances/s1"))["status"] == "success"
    with node.store._sessions() as s:
        assert s.scalar(select(func.count()).select_from(SampleRow)) == 0    # gone with the instance


def test_series_skips_counter_resets():
    rows = [{"time": 0, "cpu_ns": 0, "memory": 1, "swap": 0, "rx": 0, "tx": 0},
            {"time": 10, "cpu_ns": 10**9, "memory": 2, "swap": 0, "rx": 1000, "tx": 500},
            {"time": 20, "cpu_ns": 10, "memory": 3, "swap": 0, "rx": 5, "tx": 5}]     # restarted
    pts = series(rows)
    assert pts[0]["cpu"] is None and pts[1]["cpu"] == pytest.approx(10.0) and pts[1]["rx"] == 100
    assert pts[2]["cpu"] is None and pts[2]["rx"] is None and pts[2]["memory"] == 3


def test_migration_0008_upgrades_and_downgrades_a_store(tmp_path):
    """A store at 0005 with a user keeps it (no password yet); the dashboard tables come and go."""
    import sqlalchemy as sa

    from conftest import migrated
    from openvps.store.db import Store
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with migrated(url, "0005") as conn:
        conn.execute(sa.text("INSERT INTO users (name, admin) VALUES ('alice', 0)"))
    store = Store(url)
    try:
        web = WebStore(store)
        assert store.get_user("alice")["password_hash"] is None and web.password_hash("alice") is None
        assert web.set_password_hash("alice", hash_password("long password"))
        assert verify_password("long password", web.password_hash("alice"))
        secret, _csrf = web.add_session("alice", 60)
        assert web.session(secret)["user"] == "alice"
        store.delete_user("alice")                  # sessions go with their user
        assert web.session(secret) is None
    finally:
        store.close()
    with migrated(url, "0005", down=True) as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert not {"web_sessions", "bookmarks", "samples"} & tables
        assert "password_hash" not in {c["name"] for c in sa.inspect(conn).get_columns("users")}


def test_console_websocket_refuses_other_sites(sock, browser):
    """The cookie rides along on a cross-site WebSocket too: the Origin must be ours."""
    add_user(sock, "alice")
    c = browser()
    h = {"X-CSRF-Token": login(c, "alice")}
    assert finish(sock, c.post("/1.0/instances", json={"name": "web1", "template": "minimal"}, headers=h))["status"] \
        == "success"
    with c.websocket_connect("/1.0/instances/web1/exec", headers={"Origin": "http://evil.example"}) as ws:
        ws.send_text(json.dumps({"argv": ["true"], "tty": False}))
        msg = json.loads(ws.receive_text())
    assert msg["type"] == "error" and msg["code"] == "forbidden"
    # and without a session there is no way in either
    with browser().websocket_connect("/1.0/instances/web1/exec") as ws:
        ws.send_text(json.dumps({"argv": ["true"], "tty": False}))
        assert json.loads(ws.receive_text())["code"] == "unauthenticated"


def test_pages_load_nothing_from_elsewhere(sock, browser):
    """No CDN: every script, style and link on the pages points at the daemon itself."""
    import re
    token = sock.post("/1.0/tokens", json={"user": "admin"}).json()["token"]
    c = browser()
    assert c.post("/ui/login", data={"token": token}).status_code == 303
    assert finish(sock, sock.post("/1.0/instances", json={"name": "web1", "template": "minimal"}))["status"] \
        == "success"
    for path in ("/ui/", "/ui/new", "/ui/instances/web1", "/ui/instances/web1/console", "/ui/node", "/ui/login"):
        r = c.get(path)
        assert r.status_code == 200, path
        assert "default-src 'self'" in r.headers["content-security-policy"]
        refs = re.findall(r'(?:src|href)="([^"]*)"', r.text)
        assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), (path, refs)
    for asset in ("/ui/static/app.js", "/ui/static/app.css", "/ui/static/console.js"):
        assert c.get(asset).status_code == 200
    assert c.get("/", follow_redirects=False).headers["location"] == "/ui/"


def test_a_sampling_round_is_one_write_and_skips_the_destroyed(sock, node, cgroot, network):
    for name in ("a1", "a2"):
        assert finish(sock, sock.post("/1.0/instances", json={"name": name, "template": "minimal", "start": True})
                      )["status"] == "success"
    ctids = [sock.get(f"/1.0/instances/{n}").json()["ctid"] for n in ("a1", "a2")]
    for i, ctid in enumerate(ctids):      # what the kernel would show in their cgroups and veths
        d = cgroot / node.cgroups.path("", str(ctid)).relative_to(cgroot)
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.current").write_text(f"{(i + 1) << 20}\n")
        (d / "memory.swap.current").write_text("0\n")
        (d / "cpu.stat").write_text("usage_usec 1500000\n")
        network.counters[ctid] = {"rx_bytes": 100 * (i + 1), "tx_bytes": 50, "rx_packets": 1, "tx_packets": 1}
    svc = SampleService(node)
    assert svc.sample_once(now=1_700_000_100.0) == 2
    first = WebStore(node.store).samples(ctids[1], 10, 0)[-1]
    assert (first["memory"], first["cpu_ns"], first["rx"], first["tx"]) == (2 << 20, 1_500_000_000, 200, 50)
    web = WebStore(node.store)
    vals = {"cpu_ns": 1, "memory": 2, "swap": 0, "rx": None, "tx": None}
    # a2 is gone by the time the round is written: a1's sample still lands
    assert web.put_samples(1_700_000_110.0, rings(10), {ctids[0]: vals, 999_999: vals}) == 1
    assert [r["memory"] for r in web.samples(ctids[0], 10, 0)][-1] == 2
    assert svc.query(ctids[0], "1h", now=1_700_000_120.0)["points"][-1]["memory"] == 2
