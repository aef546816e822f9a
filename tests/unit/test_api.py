"""The REST API and the exec WebSocket on the fakes (FastAPI TestClient, no socket)."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from openvps.api.app import create_app
from openvps.domain.limits import LIMITS, defaults

G = 1 << 30


@pytest.fixture
def client(node):
    with TestClient(create_app(node)) as c:
        yield c


def finish(client, resp, status="success") -> dict:
    """Follow a 202 to the end of its operation."""
    assert resp.status_code == 202, resp.text
    loc = resp.headers["location"]
    assert loc == f"/1.0/operations/{resp.json()['id']}"
    op = client.get(loc + "/wait", params={"timeout": 10}).json()
    assert op["status"] == status, op
    return op


def create(client, name="web1", **body) -> dict:
    return finish(client, client.post("/1.0/instances", json={"name": name, "template": "minimal", **body}))


def assert_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


# ------------------------------------------------------------------ long work: 202 + operation
def test_create_202_location_and_wait(client):
    resp = client.post("/1.0/instances", json={"name": "web1", "template": "minimal", "limits": {"ram": "1G"},
                                               "start": True})
    assert resp.status_code == 202
    assert resp.json()["kind"] == "instance.create" and resp.json()["status"] in ("pending", "running", "success")
    op = finish(client, resp)
    inst = op["result"]["instance"]
    assert inst["state"] == "running" and inst["limits"]["ram"] == G and inst["limits_display"]["ram"] == "1G"
    assert op["progress"] == 1.0 and op["error"] is None and op["created_at"].endswith("Z")
    assert client.get(f"/1.0/operations/{op['id']}").json()["status"] == "success"
    assert op["id"] in [o["id"] for o in client.get("/1.0/operations", params={"status": "success"}).json()]


def test_instance_queries(client):
    create(client, "web1", ctid=150)
    listed = client.get("/1.0/instances").json()["items"]
    assert [(i["ctid"], i["name"], i["state"]) for i in listed] == [(150, "web1", "stopped")]
    by_name, by_ctid = client.get("/1.0/instances/web1").json(), client.get("/1.0/instances/150").json()
    assert by_name == by_ctid and by_name["console_log"].endswith("150.console.log")


def test_lifecycle_over_http(client, runtime):
    create(client)
    assert finish(client, client.post("/1.0/instances/web1/start"))["result"]["instance"]["state"] == "running"
    finish(client, client.post("/1.0/instances/web1/suspend"))
    finish(client, client.post("/1.0/instances/web1/resume"))
    finish(client, client.post("/1.0/instances/web1/restart", json={"timeout": 5}))
    stopped = finish(client, client.post("/1.0/instances/web1/stop", json={"timeout": 5, "force": True}))
    assert stopped["result"]["instance"]["state"] == "stopped" and runtime.kills[-1] == ("100", "SIGKILL")
    finish(client, client.post("/1.0/instances/web1/start"))
    finish(client, client.delete("/1.0/instances/web1", params={"force": "true"}))
    assert client.get("/1.0/instances").json()["items"] == []


def test_set_over_http(client, runtime):
    create(client, start=True)
    op = finish(client, client.patch("/1.0/instances/web1", json={"limits": {"ram": "2G", "cpus": 2}}))
    assert op["result"]["instance"]["live"]["ram"] == 2 * G and op["result"]["instance"]["limits"] == defaults()
    assert runtime.updates[-1][1]["cpus"] == 2
    op = finish(client, client.patch("/1.0/instances/web1", json={"limits": {"ram": "2G"}, "save": True}))
    assert op["result"]["instance"]["limits"]["ram"] == 2 * G


def test_failed_operation_carries_the_error(client, runtime):
    create(client)
    runtime.fail_run = True
    op = finish(client, client.post("/1.0/instances/web1/start"), status="failure")
    assert op["error"]["code"] == "driver_error" and op["message"] == op["error"]["message"]


# ------------------------------------------------------------------ 400: one error shape, never 422
@pytest.mark.parametrize("body,where", [
    ({"template": "minimal"}, "name"),                                      # missing field
    ({"name": "web1", "template": "minimal", "colour": "red"}, "colour"),    # unknown field
    ({"name": "web1", "template": "minimal", "limits": {"memory": "1G"}}, "memory"),
    ({"name": "web1", "template": "minimal", "ctid": "abc"}, "ctid"),
    ({"name": "web1", "template": "minimal", "limits": {"ram": [1]}}, "ram"),
    ({"name": "web1", "template": "minimal", "start": "perhaps"}, "start"),
])
def test_bad_bodies_are_400(client, body, where):
    err = assert_error(client.post("/1.0/instances", json=body), 400, "invalid_argument")
    assert where in err["message"] and err["details"]["errors"]
    assert client.get("/1.0/instances").json()["items"] == []


@pytest.mark.parametrize("limits,text", [
    ({"ram": "lots"}, "ram: 'lots' is not a size"), ({"ram": "1.5X"}, "ram"), ({"ram": "8M"}, "below the minimum"),
    ({"ram": "1T"}, "more than this node has"), ({"cpus": 9}, "more than this node has"),
    ({"pids": "many"}, "whole number"),
])
def test_bad_sizes_and_limits_are_400(client, limits, text):
    err = assert_error(client.post("/1.0/instances", json={"name": "web1", "template": "minimal",
                                                           "limits": limits}), 400, "invalid_argument")
    assert text in err["message"]
    assert client.get("/1.0/instances").json()["items"] == []


def test_other_400s(client):
    assert_error(client.post("/1.0/instances", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "invalid_argument")
    assert_error(client.post("/1.0/instances", json={"name": "Web_1", "template": "minimal"}), 400, "invalid_argument")
    create(client)
    assert_error(client.post("/1.0/instances/web1/stop", json={"timeout": -1}), 400, "invalid_argument")
    assert_error(client.patch("/1.0/instances/web1", json={"limits": {"ram": "1G"}}), 400, "invalid_argument")
    assert_error(client.patch("/1.0/instances/web1", json={}), 400, "invalid_argument")
    assert_error(client.post("/1.0/templates", json={"name": "no-such-builder"}), 400, "invalid_argument")
    assert_error(client.get("/1.0/operations", params={"limit": 0}), 400, "invalid_argument")


# ------------------------------------------------------------------ 404 / 409
@pytest.mark.parametrize("method,path", [
    ("get", "/1.0/instances/nope"), ("get", "/1.0/instances/4242"), ("post", "/1.0/instances/nope/start"),
    ("delete", "/1.0/instances/nope"), ("patch", "/1.0/instances/nope"), ("get", "/1.0/templates/nope"),
    ("delete", "/1.0/templates/nope"), ("get", "/1.0/operations/nope"), ("get", "/1.0/operations/nope/wait"),
    ("get", "/1.0/no-such-route"),
])
def test_404(client, method, path):
    kw = {"json": {"limits": {"ram": "1G"}, "save": True}} if method == "patch" else {}
    assert_error(getattr(client, method)(path, **kw), 404, "not_found")


def test_unknown_template_is_404(client):
    err = assert_error(client.post("/1.0/instances", json={"name": "web1", "template": "nope"}), 404, "not_found")
    assert err["details"] == {"template": "nope"}


@pytest.mark.parametrize("method,path,body", [("post", "/1.0/instances", {"name": "web1", "template": "BAD"}),
                                              ("get", "/1.0/templates/BAD", None)])
def test_invalid_template_name_is_4xx(node, method, path, body):
    with TestClient(create_app(node), raise_server_exceptions=False) as c:
        resp = getattr(c, method)(path, **({"json": body} if body else {}))
    assert resp.status_code in (400, 404)


def test_unicode_digit_ident_is_404(node):
    with TestClient(create_app(node), raise_server_exceptions=False) as c:
        assert c.get("/1.0/instances/²").status_code == 404


def test_409(client):
    create(client, start=True)
    err = assert_error(client.post("/1.0/instances/web1/start"), 409, "invalid_state")
    assert "already running" in err["message"] and err["details"] == {"action": "start", "state": "running"}
    assert_error(client.delete("/1.0/instances/web1"), 409, "invalid_state")
    assert_error(client.post("/1.0/instances/web1/resume"), 409, "invalid_state")
    err = assert_error(client.post("/1.0/instances", json={"name": "web1", "template": "minimal"}), 409, "conflict")
    assert err["details"] == {"name": "web1"}
    assert_error(client.post("/1.0/instances", json={"name": "web2", "template": "minimal", "ctid": 100}),
                 409, "conflict")
    err = assert_error(client.delete("/1.0/templates/minimal"), 409, "conflict")
    assert err["details"] == {"in_use_by": ["web1"]}
    assert len(client.get("/1.0/instances").json()["items"]) == 1


# ------------------------------------------------------------------ reference documents
def test_openapi_limits_from_the_table(client):
    doc = client.get("/openapi.json").json()
    props = doc["components"]["schemas"]["Limits"]["properties"]
    assert set(props) == set(LIMITS)
    for key, lim in LIMITS.items():
        assert props[key]["description"].startswith(lim.help), key
        assert lim.cgroup in props[key]["description"] and lim.alias in props[key]["description"]
    assert "Sizes: 512M" in props["ram"]["description"] and "0 = unlimited" in props["pids"]["description"]
    assert props["ram"]["examples"] == ["512M", "1.5G"]
    assert "/1.0/instances/{ident}/start" in doc["paths"]


def test_limits_node_and_templates(client, template_dir):
    assert client.get("/1.0/limits").json()["ram"]["description"] == LIMITS["ram"].help
    info = client.get("/1.0").json()
    assert info["api_version"] == "1.0" and info["node"]["cpus"] == 4 and info["node"]["runtime"] == "fake"
    assert client.get("/1.0/node").json()["ram"] == 8 * G
    templates = client.get("/1.0/templates").json()
    assert [t["name"] for t in templates] == ["minimal"] and templates[0]["in_use_by"] == []
    assert client.get("/1.0/templates/minimal").json()["init"] == "busybox"
    assert "minimal" in client.get("/1.0/templates/builders").json()
    finish(client, client.delete("/1.0/templates/minimal"))
    assert client.get("/1.0/templates").json() == [] and not (template_dir / "minimal").exists()


# ------------------------------------------------------------------ exec over the WebSocket
def run_exec(client, header: dict, stdin: list | None = None, ident="web1"):
    out, err = b"", b""
    with client.websocket_connect(f"/1.0/instances/{ident}/exec") as ws:
        ws.send_text(json.dumps(header))
        for frame in stdin or []:
            ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_text(json.dumps(frame))
        while True:
            msg = ws.receive()
            assert msg["type"] == "websocket.send", msg
            if msg.get("bytes") is not None:
                channel, data = msg["bytes"][0], msg["bytes"][1:]
                assert channel in (1, 2)
                if channel == 1:
                    out += data
                else:
                    err += data
                continue
            ctl = json.loads(msg["text"])
            return ctl, out, err


def test_exec_streams_and_exit_code(client):
    create(client, start=True)
    ctl, out, err = run_exec(client, {"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    assert ctl == {"type": "exit", "code": 3} and out == b"out\n" and err == b"err\n"


def test_exec_stdin_and_eof(client):
    create(client, start=True)
    ctl, out, _ = run_exec(client, {"argv": ["cat"]}, [b"\x00hello ", b"\x00world\n", {"type": "eof"}])
    assert ctl == {"type": "exit", "code": 0} and out == b"hello world\n"


def test_exec_env_and_tty(client):
    create(client, start=True)
    ctl, out, _ = run_exec(client, {"argv": ["sh", "-c", 'echo "$GREETING"'], "env": {"GREETING": "hi"}})
    assert ctl["code"] == 0 and out == b"hi\n"
    ctl, out, err = run_exec(client, {"argv": ["sh", "-c", "test -t 0 && test -t 1 && echo a-tty"], "tty": True,
                                      "rows": 30, "cols": 100})
    assert ctl == {"type": "exit", "code": 0} and b"a-tty" in out and err == b""


@pytest.mark.parametrize("start,header,code", [
    (False, {"argv": ["true"]}, "invalid_state"),
    (True, {"argv": []}, "invalid_argument"),
    (True, {"argv": "true"}, "invalid_argument"),
])
def test_exec_errors(client, start, header, code):
    create(client, start=start)
    ctl, out, err = run_exec(client, header)
    assert ctl["type"] == "error" and ctl["code"] == code and ctl["message"] and out == err == b""


def test_exec_unknown_instance(client):
    ctl, _, _ = run_exec(client, {"argv": ["true"]}, ident="nope")
    assert ctl["type"] == "error" and ctl["code"] == "not_found"
