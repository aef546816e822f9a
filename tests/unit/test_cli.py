"""The CLI's argument handling (against a stub client) and cli/render.py."""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import openvps.cli.main as cli
from openvps.cli import render
from openvps.client.api import DaemonUnreachable
from openvps.domain.errors import InvalidState, NotFound, OpenVPSError
from openvps.domain.limits import defaults, render_all

G, M = 1 << 30, 1 << 20


def inst(name="web1", ctid=101, state="stopped", **over) -> dict:
    limits = {**defaults(), **over.pop("limits", {})}
    return {"ctid": ctid, "name": name, "state": state, "template": "minimal", "hostname": name, "init": "busybox",
            "limits": limits, "limits_display": render_all(limits), "ip": [], "created_at": "2024-05-01T10:00:00Z",
            "started_at": None, **over}


class Stub:
    """Stands in for openvps.client.Client: records calls, returns canned operations."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.fail: OpenVPSError | None = None        # raised by the next call
        self.op_error: dict | None = None             # the operation fails with this error
        self.exec_code = 0
        self.items = [inst("b", 101, "running"), inst("a", 102, limits={"ram": 2 * G})]

    def _call(self, what, *args, result=None, **kw):
        self.calls.append((what, args, kw))
        if self.fail:
            raise self.fail
        return {"id": f"op-{len(self.calls)}", "status": "pending", "result": result}

    def names(self):
        return [c[0] for c in self.calls]

    def wait(self, op, on_progress=None, timeout=None):
        self.calls.append(("wait", (op["id"],), {}))
        if self.op_error:
            from openvps.domain.errors import from_dict
            raise from_dict(self.op_error)
        return {**op, "status": "success", "progress": 1.0}

    def create(self, **body):
        state = "running" if body.get("start") else "stopped"
        return self._call("create", result={"instance": inst(body["name"], body.get("ctid") or 101, state)}, **body)

    def action(self, ident, action, body=None):
        state = {"start": "running", "stop": "stopped"}.get(action, "running")
        return self._call("action", ident, action, body, result={"instance": inst(ident, state=state)})

    def set(self, ident, **body):
        return self._call("set", ident, result={"instance": inst(ident)}, **body)

    def destroy(self, ident, force=False):
        return self._call("destroy", ident, force=force, result={})

    def instance(self, ident):
        self._call("instance", ident)
        return inst(ident, state="running", live={**defaults(), "ram": G, "cpuset": "0"},
                    usage={"memory": 300 * M, "pids": 12, "pid": 4242})

    def instances(self):
        self._call("instances")
        return self.items

    def exec(self, ident, argv, tty=False):
        self._call("exec", ident, argv, tty=tty)
        return self.exec_code

    def build_template(self, name, force=False):
        t = {"name": name, "os": "busybox", "release": "1.36", "size_bytes": 3 * M}
        return self._call("build_template", name, force=force, result={"template": t})

    def remove_template(self, name):
        return self._call("remove_template", name, result={})


@pytest.fixture
def stub(monkeypatch) -> Stub:
    s = Stub()
    monkeypatch.setattr(cli, "client", lambda: s)
    return s


def run(*args):
    return CliRunner().invoke(cli.app, list(args))


# ------------------------------------------------------------------ create
def test_create_sends_limits_and_start(stub):
    res = run("create", "--name", "web1", "--ram", "512M", "--start")
    assert res.exit_code == 0, res.output
    assert stub.calls[0] == ("create", (), {"name": "web1", "template": "minimal", "ctid": None, "hostname": None,
                                            "limits": {"ram": "512M"}, "ssh_keys": [], "root_password": None,
                                            "start": True, "privileged": False})
    assert stub.names() == ["create", "wait"]
    assert res.stdout == "instance web1 (CTID 101) created and started\n"


def test_create_every_option(stub):
    res = run("create", "150", "-n", "web1", "-t", "debian-12", "--hostname", "web1.example", "--swap", "1G",
              "--cpus", "2", "--cpuunits", "500", "--cpulimit", "50", "--pids", "100", "--userpasswd", "root:pa:ss",
              "--json")
    assert res.exit_code == 0, res.output
    body = stub.calls[0][2]
    assert body["ctid"] == 150 and body["template"] == "debian-12" and body["hostname"] == "web1.example"
    assert body["limits"] == {"swap": "1G", "cpus": "2", "cpuunits": "500", "cpulimit": "50", "pids": "100"}
    assert body["root_password"] == "pa:ss" and body["start"] is False
    assert json.loads(res.stdout)["ctid"] == 150


@pytest.mark.parametrize("value", ["bob:x", "root:", "root", ":x"])
def test_userpasswd_refused(stub, value):
    res = run("create", "--name", "web1", "--userpasswd", value)
    assert res.exit_code == 1
    assert res.stderr == "error: --userpasswd takes root:PASSWORD\n"
    assert stub.calls == []


def test_ssh_key_files(stub, tmp_path):
    f = tmp_path / "keys.pub"
    f.write_text("# my keys\nssh-ed25519 AAAA one\n\n  ssh-rsa BBBB two  \n")
    assert run("create", "-n", "web1", "--ssh-key", str(f)).exit_code == 0
    assert stub.calls[0][2]["ssh_keys"] == ["ssh-ed25519 AAAA one", "ssh-rsa BBBB two"]
    res = run("create", "-n", "web2", "--ssh-key", str(tmp_path / "missing.pub"))
    assert res.exit_code == 1 and res.stderr.startswith("error: cannot read ssh key file")
    assert [c[2]["name"] for c in stub.calls if c[0] == "create"] == ["web1"]


@pytest.mark.parametrize("args", [["create"], ["create", "abc", "-n", "web1"], ["create", "-n", "web1", "--bogus", "1"]])
def test_create_usage_errors(stub, args):
    res = run(*args)
    assert res.exit_code == 2 and stub.calls == []


def test_help_lists_limits_from_the_table():
    res = run("create", "--help")
    assert res.exit_code == 0
    for flag in ("--ram", "--swap", "--cpus", "--cpuunits", "--cpulimit", "--pids"):
        assert flag in res.stdout
    assert "like vzctl --numproc" in res.stdout


# ------------------------------------------------------------------ errors
def test_service_error_is_printed(stub):
    stub.fail = InvalidState("cannot start instance web1: it is running; it is already running")
    res = run("start", "web1")
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == "error: cannot start instance web1: it is running; it is already running\n"


def test_operation_failure_is_printed(stub):
    stub.op_error = {"code": "driver_error", "message": "runc could not start 101: boom", "details": {}}
    res = run("start", "web1")
    assert res.exit_code == 1 and res.stderr == "error: runc could not start 101: boom\n"


def test_daemon_unreachable(stub):
    stub.fail = DaemonUnreachable("cannot reach the openvps daemon at /x.sock; start it with `openvps serve`")
    res = run("list")
    assert res.exit_code == 1 and "error: cannot reach the openvps daemon" in res.stderr


# ------------------------------------------------------------------ lifecycle and set
@pytest.mark.parametrize("args,call,out", [
    (["start", "web1"], ("web1", "start", None), "instance web1 started\n"),
    (["stop", "web1"], ("web1", "stop", {"timeout": None, "force": False}), "instance web1 stopped\n"),
    (["stop", "101", "--timeout", "5", "--force"], ("101", "stop", {"timeout": 5, "force": True}),
     "instance 101 stopped\n"),
    (["restart", "web1", "--timeout", "9"], ("web1", "restart", {"timeout": 9}), "instance web1 restarted\n"),
    (["suspend", "web1"], ("web1", "suspend", None), "instance web1 suspended\n"),
    (["resume", "web1"], ("web1", "resume", None), "instance web1 resumed\n"),
])
def test_lifecycle(stub, args, call, out):
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert stub.calls[0] == ("action", call, {}) and res.stdout == out


def test_destroy(stub):
    res = run("destroy", "web1", "--force")
    assert res.exit_code == 0 and stub.calls[0] == ("destroy", ("web1",), {"force": True})
    assert res.stdout == "instance web1 destroyed\n"
    assert run("destroy", "web2").exit_code == 0 and stub.calls[-2] == ("destroy", ("web2",), {"force": False})


@pytest.mark.parametrize("args,body,tail", [
    (["--ram", "1G", "--save"], {"limits": {"ram": "1G"}, "hostname": None, "save": True}, "updated and saved\n"),
    (["--cpus", "2", "--hostname", "h.example"], {"limits": {"cpus": "2"}, "hostname": "h.example", "save": False},
     "updated (live only; add --save to keep)\n"),
])
def test_set(stub, args, body, tail):
    res = run("set", "web1", *args)
    assert res.exit_code == 0, res.output
    assert stub.calls[0] == ("set", ("web1",), body) and res.stdout.endswith(tail)


# ------------------------------------------------------------------ exec
@pytest.mark.parametrize("args,argv,tty", [
    (["exec", "web1", "--", "sh", "-c", "exit 3"], ["sh", "-c", "exit 3"], False),
    (["exec", "web1", "ls", "-la"], ["ls", "-la"], False),        # options after the ident belong to the command
    (["exec", "-t", "web1", "--", "top"], ["top"], True),
])
def test_exec_exit_code(stub, args, argv, tty):
    stub.exec_code = 3
    res = run(*args)
    assert res.exit_code == 3
    assert stub.calls == [("exec", ("web1", argv), {"tty": tty})]


def test_exec_needs_a_command(stub):
    res = run("exec", "web1", "--")
    assert res.exit_code == 1 and "give a command after --" in res.stderr and stub.calls == []
    assert run("exec", "web1").exit_code == 2 and stub.calls == []


def test_exec_success_and_enter(stub):
    assert run("exec", "web1", "true").exit_code == 0
    stub.exec_code = 130
    assert run("enter", "web1").exit_code == 130
    assert stub.calls[-1] == ("exec", ("web1", []), {"tty": True})


# ------------------------------------------------------------------ list / status / templates
def test_list_columns_sort_and_json(stub):
    res = run("list", "-o", "name,ram", "-s", "name")
    assert res.exit_code == 0
    lines = [ln.split() for ln in res.stdout.splitlines() if ln.strip()]
    assert lines == [["NAME", "RAM"], ["a", "2G"], ["b", "512M"]]
    res = run("list", "-o", "name,bogus")
    assert res.exit_code == 1 and res.stderr.startswith("error: unknown column(s) bogus; choose from ctid, name")
    assert [i["name"] for i in json.loads(run("list", "--json").stdout)] == ["b", "a"]


def test_status(stub):
    res = run("status", "web1")
    assert res.exit_code == 0
    rows = dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in res.stdout.splitlines() if ln.strip())
    assert rows["state"] == "running" and rows["ram"] == "512M" and rows["live (unsaved)"] == "ram=1G"
    assert rows["memory used"] == "300M" and rows["processes"] == "12" and rows["init pid (node)"] == "4242"
    assert json.loads(run("status", "web1", "--json").stdout)["usage"]["pids"] == 12


def test_templates(stub):
    res = run("template", "build", "minimal", "--force")
    assert res.exit_code == 0 and stub.calls[0] == ("build_template", ("minimal",), {"force": True})
    assert res.stdout == "template minimal built: busybox 1.36, 3M\n"
    res = run("template", "remove", "minimal")
    assert res.exit_code == 0 and res.stdout == "template minimal removed\n"
    stub.fail = NotFound("no template 'x'")
    res = run("template", "remove", "x")
    assert res.exit_code == 1 and res.stderr == "error: no template 'x'\n"


# ------------------------------------------------------------------ render.py
def names_in(out: str) -> list[str]:
    return [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip()]


ITEMS = [inst("web", 103, limits={"ram": 512 * M}), inst("db", 101, "running", limits={"ram": 2 * G}),
         inst("cache", 102, limits={"ram": G + G // 2})]


@pytest.mark.parametrize("sort,order", [
    (None, ["web", "db", "cache"]), ("name", ["cache", "db", "web"]), ("-name", ["web", "db", "cache"]),
    ("ctid", ["db", "cache", "web"]), ("-ctid", ["web", "cache", "db"]),
    ("ram", ["web", "cache", "db"]),            # by bytes, not by the text "1.5G" < "2G" < "512M"
    ("-ram", ["db", "cache", "web"]), ("state", ["db", "web", "cache"]),
])
def test_render_sorting(capsys, sort, order):
    render.instances_table(ITEMS, "name,ctid,ram", sort)
    assert names_in(capsys.readouterr().out) == order


def test_render_columns(capsys):
    render.instances_table(ITEMS[:1], render.DEFAULT_COLUMNS, None)
    header, row = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert header == ["CTID", "NAME", "STATE", "TEMPLATE", "RAM", "SWAP", "IP"]
    assert row == ["103", "web", "stopped", "minimal", "512M", "512M", "-"]
    render.instances_table(ITEMS[:1], " cpus , cpulimit,pids,hostname ", None)
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines == [["CPUS", "CPULIMIT", "PIDS", "HOSTNAME"], ["all", "unlimited", "4096", "web"]]


@pytest.mark.parametrize("columns,sort,text", [
    ("name,nope", None, "unknown column(s) nope"), ("name", "nope", "cannot sort by 'nope'"),
    ("name", "-nope", "cannot sort by 'nope'"),
])
def test_render_unknown(capsys, columns, sort, text):
    with pytest.raises(ValueError) as e:
        render.instances_table(ITEMS, columns, sort)
    assert text in str(e.value) and capsys.readouterr().out == ""


def test_print_json_and_progress(capsys):
    render.print_json({"b": 1, "a": [1, 2]})
    out = capsys.readouterr().out
    assert out.index('"a"') < out.index('"b"') and json.loads(out) == {"a": [1, 2], "b": 1}
    with render.OpProgress("x", enabled=True) as bar:     # stderr is not a terminal under pytest
        assert bar.callback is None
        bar.update({"progress": 0.5})
