"""API v1 with a real daemon and real runc: the whole lifecycle through the SDK over TCP with a
token, another user's instance invisible, lost update 412, events, metrics, TLS, and operations
that survive a daemon restart."""
from __future__ import annotations

import io
import socket
import subprocess

import pytest

from openvps.client import Client
from openvps.domain.errors import NotFound, PreconditionFailed, QuotaExceeded, Unauthenticated


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_daemon(make_daemon):
    port = free_port()
    d = make_daemon(env={"OPENVPS_LISTEN": f"127.0.0.1:{port}"})
    d.start()
    d.url = f"http://127.0.0.1:{port}"
    return d


def token_for(d, name: str, **quotas) -> str:
    d.client.create_user(name, quotas=quotas)
    return d.client.create_token(name, "test")["token"]


def test_lifecycle_over_tcp_with_a_token(tcp_daemon):
    d = tcp_daemon
    with pytest.raises(Unauthenticated):
        Client(url=d.url).instances()
    alice = Client(url=d.url, token=token_for(d, "alice", max_instances=2))
    bob = Client(url=d.url, token=token_for(d, "bob"))
    assert alice.info()["auth"] == {"user": "alice", "admin": False}

    op = alice.wait(alice.create(name="a1", template="minimal", start=True, tags={"env": "test"},
                                 description="alice's box", limits={"ram": "64M"}))
    inst = op["result"]["instance"]
    assert inst["state"] == "running" and inst["owner"] == "alice" and inst["tags"] == {"env": "test"}
    out = io.BytesIO()
    assert alice.exec("a1", ["sh", "-c", "echo hi; exit 3"], stdout=out, stderr=io.BytesIO(),
                      forward_stdin=False) == 3
    assert out.getvalue() == b"hi\n"

    # another user: invisible (404), in lists too, and cannot exec into it
    with pytest.raises(NotFound):
        bob.instance("a1")
    with pytest.raises(NotFound):
        bob.wait(bob.action("a1", "stop"))
    assert bob.instances() == []
    with pytest.raises(NotFound):
        bob.exec("a1", ["true"], stdout=io.BytesIO(), stderr=io.BytesIO(), forward_stdin=False)

    # lost update: two readers, one writer wins, the other gets 412
    body, tag = alice.instance_etag("a1")
    assert body["usage"]["memory"] and tag
    alice.wait(alice.set("a1", if_match=tag, description="first"))
    with pytest.raises(PreconditionFailed):
        alice.set("a1", if_match=tag, description="second")
    alice.wait(alice.set("a1", limits={"ram": "128M"}, save=True, tags={"role": "web"}))
    got = alice.instance("a1")
    assert got["description"] == "first" and got["limits_display"]["ram"] == "128M"
    assert got["tags"] == {"env": "test", "role": "web"}
    assert [i["name"] for i in alice.instances(tag=["role=web"], state="running")] == ["a1"]

    # quota
    alice.wait(alice.create(name="a2", template="minimal"))
    with pytest.raises(QuotaExceeded):
        alice.create(name="a3", template="minimal")

    # metrics see the real container (admin over the socket)
    text = d.client.metrics()
    assert f'openvps_instance_memory_bytes{{ctid="{inst["ctid"]}",name="a1",owner="alice"}}' in text

    alice.wait(alice.action("a1", "stop", {"force": True}))
    alice.wait(alice.destroy("a1"))
    alice.wait(alice.destroy("a2"))
    types = [e["type"] for e in alice.events(after=0, instance=str(inst["ctid"]))["items"]]
    for t in ("instance.created", "instance.started", "instance.updated", "instance.stopped", "instance.destroyed"):
        assert t in types, types
    assert alice.instances() == [] and d.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


def test_operations_survive_a_daemon_restart(tcp_daemon):
    d = tcp_daemon
    c = d.client
    created = c.wait(c.create(name="keep", template="minimal", start=True))
    d.stop()
    d.start()
    again = c.operation(created["id"])
    assert again["status"] == "success" and again["result"]["instance"]["name"] == "keep"
    assert created["id"] in [o["id"] for o in c.operations()]
    assert c.instance("keep")["state"] == "running"             # the instance kept running
    events = c.events(after=0, type="instance.started")["items"]
    assert [e["data"]["name"] for e in events] == ["keep"]
    c.wait(c.destroy("keep", force=True))


def test_listen_rules_and_tls(make_daemon, tmp_path):
    d = make_daemon()
    p = d.cli("serve", "--listen", f"0.0.0.0:{free_port()}")
    assert p.returncode != 0 and "needs TLS" in p.stderr
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    d.start(env={"OPENVPS_LISTEN": f"127.0.0.1:{port}", "OPENVPS_TLS_CERT": str(cert),
                 "OPENVPS_TLS_KEY": str(key)})
    secret = token_for(d, "carol")
    c = Client(url=f"https://127.0.0.1:{port}", token=secret, cafile=str(cert))
    assert c.info()["auth"]["user"] == "carol"
    with pytest.raises(Exception):     # a client that does not trust the certificate refuses it
        Client(url=f"https://127.0.0.1:{port}", token=secret).info()


def _read_sse(url: str, token: str, headers: dict, query: str, want: int, timeout: float = 30) -> list[tuple[int, str]]:
    """Read `want` events from the SSE stream (then hang up)."""
    import http.client
    host = url.split("://", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=timeout)
    conn.request("GET", "/1.0/events?" + query, headers={"Authorization": f"Bearer {token}", **headers})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    got, cur = [], {}
    while len(got) < want:
        line = resp.fp.readline().decode().rstrip("\n")
        if not line:
            if "id" in cur:
                got.append((int(cur["id"]), cur["event"]))
            cur = {}
            continue
        k, _, v = line.partition(": ")
        cur[k] = v
    conn.close()
    return got


def test_event_stream_resume_and_stop_with_a_stream_open(tcp_daemon):
    import threading
    import time
    d = tcp_daemon
    alice_token = token_for(d, "alice")
    alice = Client(url=d.url, token=alice_token)
    start = alice.events()["last_id"]
    alice.wait(alice.create(name="ev1", template="minimal", start=True))
    seen = _read_sse(d.url, alice_token, {"Last-Event-ID": str(start)}, "type=instance.*", want=2)
    assert [t for _, t in seen] == ["instance.created", "instance.started"]
    # while nobody listens, more happens; the reconnect with Last-Event-ID gets exactly that
    alice.wait(alice.action("ev1", "stop", {"force": True}))
    alice.wait(alice.destroy("ev1"))
    missed = _read_sse(d.url, alice_token, {"Last-Event-ID": str(seen[-1][0])}, "type=instance.*", want=2)
    assert [t for _, t in missed] == ["instance.stopped", "instance.destroyed"]
    assert missed[0][0] > seen[-1][0]
    # an open stream does not hold a stopping daemon
    t = threading.Thread(target=lambda: _read_sse(d.url, alice_token, {}, "", want=10**6, timeout=60), daemon=True)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    d.stop()
    assert time.monotonic() - t0 < 15
