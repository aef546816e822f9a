"""InstanceService / TemplateService / Node.reconcile on the fake runtime and storage."""
from __future__ import annotations

import shutil

import pytest

from openvps.domain.errors import Conflict, InvalidArgument, InvalidState, NotFound
from openvps.domain.limits import defaults

G, M = 1 << 30, 1 << 20


def rows(node):
    return [(r["ctid"], r["name"], r["state"]) for r in node.store.list_instances()]


def bundles(node):
    return sorted(p.name for p in node.config.instances_dir.iterdir())


# ------------------------------------------------------------------ create
def test_create_stopped(svc, node, wait, runtime, storage):
    op = svc.create(name="web1", template="minimal", limits={"ram": "1G"})
    assert op["status"] in ("pending", "running") and op["kind"] == "instance.create" and op["target"] == "web1"
    done = wait(op)
    assert done["status"] == "success" and done["error"] is None
    inst = done["result"]["instance"]
    assert (inst["ctid"], inst["name"], inst["state"], inst["hostname"]) == (100, "web1", "stopped", "web1")
    assert inst["limits"] == {**defaults(), "ram": G} and inst["limits_display"]["ram"] == "1G"
    assert runtime.containers == {} and storage.mounted == set()
    rootfs = node.bundle(100) / "rootfs"
    assert (rootfs / "etc" / "hostname").read_text() == "web1\n"
    assert "127.0.1.1\tweb1" in (rootfs / "etc" / "hosts").read_text()


def test_create_and_start(svc, node, wait, runtime, storage):
    done = wait(svc.create(name="web1", template="minimal", ctid=150, hostname="web1.example", start=True))
    assert done["status"] == "success"
    inst = svc.get(150)
    assert inst["state"] == "running" and inst["hostname"] == "web1.example"
    assert inst["live"]["hostname"] == "web1.example" and inst["started_at"]
    assert runtime.state("150")["status"] == "running"
    spec = runtime.runs[-1]
    assert spec.bundle == node.bundle(150) and spec.hostname == "web1.example" and spec.init == "busybox"
    assert spec.cgroup_path == node.cgroups.instance_path("150")
    assert node.bundle(150) in storage.mounted
    assert inst["usage"]["pid"] == runtime.state("150")["pid"]


def test_create_writes_ssh_keys_and_root_password(svc, node, wait):
    import base64, struct
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(32)
    key = "ssh-ed25519 " + base64.b64encode(blob).decode() + " me@laptop"
    assert wait(svc.create(name="web1", template="minimal", ssh_keys=[key], root_password="s3cret"))["status"] == "success"
    rootfs = node.bundle(100) / "rootfs"
    assert (rootfs / "root/.ssh/authorized_keys").read_text() == key + "\n"
    assert (rootfs / "etc/shadow").read_text().startswith("root:$6$")


def test_next_free_ctid(svc, make):
    assert make("a", ctid=100)["ctid"] == 100
    assert make("b", ctid=102)["ctid"] == 102
    assert make("c")["ctid"] == 101
    assert make("d")["ctid"] == 103


@pytest.mark.parametrize("kw,field", [({"name": "web1"}, "name"), ({"name": "other", "ctid": 100}, "ctid")])
def test_duplicate_leaves_nothing_behind(svc, node, make, kw, field):
    make("web1")
    before_ops = len(node.store.list_operations())
    with pytest.raises(Conflict) as e:
        svc.create(template="minimal", **kw)
    assert field in e.value.details
    assert rows(node) == [(100, "web1", "stopped")]
    assert bundles(node) == ["100"]
    assert len(node.store.list_operations()) == before_ops


def test_unknown_template(svc, node):
    with pytest.raises(NotFound) as e:
        svc.create(name="web1", template="nope")
    assert "minimal" in e.value.message and "openvps template build nope" in e.value.message
    assert rows(node) == [] and bundles(node) == []


@pytest.mark.parametrize("template", ["BAD", "../etc"])
def test_invalid_template_name_is_invalid_argument(svc, node, template):
    with pytest.raises((InvalidArgument, NotFound)):
        svc.create(name="web1", template=template)


@pytest.mark.parametrize("kw", [
    {"name": "Bad_Name"}, {"name": "123"}, {"name": "web1", "ctid": 5}, {"name": "web1", "hostname": "a..b"},
    {"name": "web1", "limits": {"ram": "lots"}}, {"name": "web1", "limits": {"ram": "1T"}},
    {"name": "web1", "limits": {"bogus": 1}}, {"name": "web1", "ssh_keys": ["not a key"]},
])
def test_bad_arguments_before_any_row(svc, node, kw):
    with pytest.raises(InvalidArgument):
        svc.create(template="minimal", **kw)
    assert rows(node) == [] and bundles(node) == [] and node.store.list_operations() == []


def test_bad_root_password_before_any_row(svc, node):
    with pytest.raises(InvalidArgument):
        svc.create(name="web1", template="minimal", root_password="a\nb")
    assert node.store.list_operations() == []


@pytest.mark.parametrize("knob", ["fail_run", "fail_mount"])
def test_create_and_start_failure_leaves_nothing(svc, node, wait, runtime, storage, knob):
    setattr(runtime if knob == "fail_run" else storage, knob, True)
    done = wait(svc.create(name="web1", template="minimal", start=True))
    assert done["status"] == "failure" and done["error"]["code"] == "driver_error"
    assert "fake" in done["error"]["message"]
    assert rows(node) == [] and bundles(node) == []
    assert runtime.containers == {} and storage.mounted == set()


@pytest.mark.parametrize("start", [False, True])
def test_create_setup_failure_leaves_nothing(svc, node, wait, runtime, storage, monkeypatch, start):
    # with --start the setup runs while the runtime creates the container: its failure undoes that too
    from openvps.drivers.templates import setup as tsetup

    def broken(*a, **kw):
        raise tsetup.SetupError("etc is read-only")
    monkeypatch.setattr(tsetup, "setup_instance", broken)
    done = wait(svc.create(name="web1", template="minimal", start=start))
    assert done["status"] == "failure" and done["error"]["code"] == "invalid_argument"
    assert "etc is read-only" in done["error"]["message"]
    assert rows(node) == [] and bundles(node) == []
    assert runtime.containers == {} and storage.mounted == set()


def test_create_start_events_and_final_row(svc, node, wait):
    op = svc.create(name="web1", template="minimal", start=True)
    done = wait(op)
    assert done["status"] == "success" and done["result"]["instance"]["state"] == "running"
    from openvps.service.operations import op_view    # what a waiter gets is what the store holds
    assert op_view(done) == op_view(node.store.get_operation(op["id"]))
    events = [(e["type"], e["data"].get("name")) for e in node.store.events_after(0)]
    assert events == [("operation.created", "web1"), ("instance.created", "web1"), ("instance.started", "web1"),
                      ("operation.finished", "web1")]


def test_create_does_not_adopt_an_orphan_directory(svc, node, make):
    orphan = node.bundle(100) / "upper"
    orphan.mkdir(parents=True)
    (orphan / "secret").write_text("a previous tenant's data")
    inst = make("web1")
    assert not (node.bundle(inst["ctid"]) / "upper" / "secret").exists()
    assert (orphan / "secret").exists()


# ------------------------------------------------------------------ lifecycle
def test_start_stop(svc, node, wait, make, runtime, storage):
    make("web1")
    assert wait(svc.start("web1"))["result"]["instance"]["state"] == "running"
    assert runtime.state("100")["status"] == "running" and storage.is_mounted(node.bundle(100))
    done = wait(svc.stop("web1", timeout=7))
    assert done["status"] == "success" and done["args"] == {"ctid": 100, "timeout": 7, "force": False}
    assert svc.get("web1")["state"] == "stopped" and node.store.get_instance(100)["live"] == {}
    assert runtime.kills == [("100", "SIGTERM")] and runtime.waits == [("100", 7)]
    assert runtime.containers == {} and not storage.is_mounted(node.bundle(100))


def test_stop_uses_the_templates_stop_signal(svc, node, wait, make, runtime, add_template):
    add_template("debian-12", init="systemd", stop_signal="SIGRTMIN+3")
    make("web1", template="debian-12", start=True)
    assert runtime.runs[-1].init == "systemd"
    assert wait(svc.stop("web1"))["status"] == "success"
    assert runtime.kills == [("100", "SIGRTMIN+3")]


def test_stop_timeout_kills(svc, wait, make, runtime):
    make("web1", start=True)
    runtime.ignore_term = True
    assert wait(svc.stop("web1", timeout=3))["status"] == "success"
    assert runtime.kills == [("100", "SIGTERM"), ("100", "SIGKILL")]
    assert runtime.waits[0] == ("100", 3)
    assert svc.get("web1")["state"] == "stopped" and runtime.containers == {}


@pytest.mark.parametrize("kw", [{"force": True}, {"timeout": 0}])
def test_stop_force_or_zero_timeout_kills_at_once(svc, wait, make, runtime, kw):
    make("web1", start=True)
    assert wait(svc.stop("web1", **kw))["status"] == "success"
    assert runtime.kills == [("100", "SIGKILL")]


def test_stop_negative_timeout(svc, make):
    make("web1", start=True)
    with pytest.raises(InvalidArgument):
        svc.stop("web1", timeout=-1)


def test_stop_when_the_init_already_died(svc, wait, make, runtime):
    make("web1", start=True)
    runtime.crash("100")
    assert wait(svc.stop("web1"))["status"] == "success"
    assert runtime.kills == [] and runtime.containers == {} and svc.get("web1")["state"] == "stopped"


def test_suspend_resume_and_stop_suspended(svc, wait, make, runtime):
    make("web1", start=True)
    assert wait(svc.suspend("web1"))["result"]["instance"]["state"] == "suspended"
    assert runtime.state("100")["status"] == "paused"
    assert wait(svc.resume("web1"))["result"]["instance"]["state"] == "running"
    assert runtime.state("100")["status"] == "running"
    wait(svc.suspend("web1"))
    assert wait(svc.stop("web1"))["status"] == "success"     # thawed first, then its stop signal works
    assert runtime.kills == [("100", "SIGTERM")] and svc.get("web1")["state"] == "stopped"


def test_restart(svc, wait, make, runtime):
    first = make("web1", start=True)
    done = wait(svc.restart("web1", timeout=4))
    assert done["status"] == "success" and done["result"]["instance"]["state"] == "running"
    assert len(runtime.runs) == 2 and runtime.kills == [("100", "SIGTERM")]
    assert svc.get("web1")["started_at"] >= first["started_at"]


def test_start_failure_stays_stopped(svc, node, wait, make, runtime, storage):
    make("web1")
    runtime.fail_run = True
    done = wait(svc.start("web1"))
    assert done["status"] == "failure" and done["error"]["code"] == "driver_error"
    assert svc.get("web1")["state"] == "stopped"
    assert runtime.containers == {} and storage.mounted == set()
    runtime.fail_run = False
    assert wait(svc.start("web1"))["status"] == "success"


def test_start_undoes_the_run_when_a_later_step_fails(svc, node, wait, make, runtime, storage, monkeypatch):
    from openvps.domain.errors import OpenVPSError
    make("web1")
    real = node.store.update_instance

    def update(ctid, **values):
        if values.get("state") == "running":
            raise OpenVPSError("database is locked")
        return real(ctid, **values)
    monkeypatch.setattr(node.store, "update_instance", update)
    done = wait(svc.start("web1"))
    assert done["status"] == "failure" and done["error"]["message"] == "database is locked"
    assert len(runtime.runs) == 1 and runtime.containers == {} and storage.mounted == set()
    assert svc.get("web1")["state"] == "stopped"


def test_start_with_the_template_gone(svc, node, wait, make, template_dir):
    make("web1")
    shutil.rmtree(template_dir / "minimal")
    done = wait(svc.start("web1"))
    assert done["error"]["code"] == "not_found" and "rebuild it" in done["error"]["message"]
    assert svc.get("web1")["state"] == "stopped"


@pytest.mark.parametrize("action,state", [
    ("start", "running"), ("suspend", "stopped"), ("resume", "running"), ("restart", "stopped"),
    ("stop", "stopped"), ("destroy", "running"),
])
def test_refused_transitions_make_no_operation(svc, node, wait, make, runtime, action, state):
    make("web1", start=state == "running")
    ops = len(node.store.list_operations())
    with pytest.raises(InvalidState) as e:
        getattr(svc, action)("web1")
    assert e.value.details == {"action": action, "state": state}
    assert len(node.store.list_operations()) == ops and svc.get("web1")["state"] == state


def test_state_is_rechecked_under_the_lock(svc, node, wait, make):
    make("web1")
    with node.runner.lock("instance:100"):
        first, second = svc.start("web1"), svc.start("web1")
    results = sorted((wait(first)["status"], wait(second)["status"]))
    assert results == ["failure", "success"]
    failed = next(o for o in (wait(first), wait(second)) if o["status"] == "failure")
    assert failed["error"]["code"] == "invalid_state"


def test_unknown_instance(svc):
    for call in (lambda: svc.get("nope"), lambda: svc.start("nope"), lambda: svc.destroy(999),
                 lambda: svc.set("nope", limits={"ram": "1G"}, save=True)):
        with pytest.raises(NotFound):
            call()


def test_destroy(svc, node, wait, make, runtime, storage):
    make("web1")
    done = wait(svc.destroy("web1"))
    assert done["status"] == "success" and done["result"] == {}
    assert rows(node) == [] and bundles(node) == []


def test_destroy_force_running(svc, node, wait, make, runtime, storage):
    make("web1", start=True)
    assert wait(svc.destroy("web1", force=True))["status"] == "success"
    assert runtime.kills == [("100", "SIGKILL")]
    assert rows(node) == [] and bundles(node) == [] and runtime.containers == {} and storage.mounted == set()


def test_destroy_refused_while_creating(svc, node):
    node.store.add_instance(ctid=100, name="web1", template="minimal", state="creating", hostname="web1",
                            limits=defaults(), live={})
    with pytest.raises(InvalidState):
        svc.destroy("web1", force=True)


def test_list(svc, make):
    make("b", ctid=200)
    make("a", ctid=101, start=True)
    assert [(i["ctid"], i["state"]) for i in svc.list()] == [(101, "running"), (200, "stopped")]


# ------------------------------------------------------------------ set
def test_set_stopped_needs_save(svc, make, runtime):
    make("web1")
    with pytest.raises(InvalidArgument) as e:
        svc.set("web1", limits={"ram": "1G"})
    assert "--save" in e.value.message
    assert svc.get("web1")["limits"]["ram"] == 512 * M


def test_set_stopped_with_save(svc, node, wait, make, runtime):
    make("web1")
    assert wait(svc.set("web1", limits={"ram": "1G"}, hostname="new.example", save=True))["status"] == "success"
    inst = svc.get("web1")
    assert inst["limits"]["ram"] == G and inst["hostname"] == "new.example"
    assert (node.bundle(100) / "rootfs/etc/hostname").read_text() == "new.example\n"
    assert runtime.updates == []
    wait(svc.start("web1"))
    assert runtime.runs[-1].limits["ram"] == G and runtime.runs[-1].hostname == "new.example"


def test_set_running_live_only(svc, wait, make, runtime):
    make("web1", start=True)
    assert wait(svc.set("web1", limits={"ram": "1G", "cpulimit": 50}))["status"] == "success"
    inst = svc.get("web1")
    assert inst["limits"] == defaults()                            # saved config untouched
    assert inst["live"]["ram"] == G and inst["live"]["cpulimit"] == 50
    assert runtime.updates[-1][1] == {**defaults(), "ram": G, "cpulimit": 50}
    assert runtime.containers["100"]["limits"]["ram"] == G
    wait(svc.set("web1", limits={"swap": "1G"}))                   # live changes stack up
    assert runtime.updates[-1][1] == {**defaults(), "ram": G, "cpulimit": 50, "swap": G}
    wait(svc.restart("web1"))                                      # ... and end with the run
    assert runtime.runs[-1].limits == defaults() and svc.get("web1")["live"]["ram"] == 512 * M


def test_set_running_with_save(svc, wait, make, runtime):
    make("web1", start=True)
    wait(svc.set("web1", limits={"pids": 100}, save=True))
    inst = svc.get("web1")
    assert inst["limits"]["pids"] == 100 and inst["live"]["pids"] == 100
    assert runtime.updates[-1][1]["pids"] == 100


def test_set_hostname_live(svc, node, wait, make, runtime):
    make("web1", start=True)
    assert wait(svc.set("web1", hostname="live.example"))["status"] == "success"
    inst = svc.get("web1")
    assert inst["live"]["hostname"] == "live.example" and inst["hostname"] == "web1"
    assert runtime.containers["100"]["hostname"] == "live.example"       # `hostname` ran inside
    assert ("100", ["hostname", "live.example"], False) in runtime.execs


@pytest.mark.parametrize("kw,exc", [
    ({}, InvalidArgument), ({"limits": {"ram": "8M"}}, InvalidArgument), ({"limits": {"nope": 1}}, InvalidArgument),
    ({"hostname": "-bad"}, InvalidArgument),
])
def test_set_bad_arguments(svc, node, make, runtime, kw, exc):
    make("web1", start=True)
    ops = len(node.store.list_operations())
    with pytest.raises(exc):
        svc.set("web1", **kw)
    assert runtime.updates == [] and len(node.store.list_operations()) == ops


def test_set_hostname_suspended_is_all_or_nothing(svc, wait, make, runtime):
    make("web1", start=True)
    wait(svc.suspend("web1"))
    try:
        op = svc.set("web1", limits={"ram": "1G"}, hostname="new")
    except InvalidState:
        assert runtime.updates == []
        return
    assert wait(op)["status"] == "success"
    assert svc.get("web1")["live"]["ram"] == G


def test_set_long_hostname_refused_up_front(svc, wait, make):
    make("web1", start=True)
    with pytest.raises(InvalidArgument):
        wait(svc.set("web1", hostname=".".join(["a" * 30] * 3)))


# ------------------------------------------------------------------ cpusets
def test_cpuset_spreads_pinned_instances(svc, wait, make, runtime):
    make("a", limits={"cpus": 2}, start=True)
    make("b", limits={"cpus": 2}, start=True)
    make("c", limits={"cpus": 1}, start=True)
    make("d", start=True)                                  # cpus=0: all CPUs, no pinning
    make("e", limits={"cpus": 4}, start=True)              # every CPU: no pinning either
    assert [s.cpuset for s in runtime.runs] == ["0,1", "2,3", "0", "", ""]
    assert svc.get("b")["live"]["cpuset"] == "2,3"
    wait(svc.set("a", limits={"cpus": 1}))                 # a moves off CPU 0 shared with c
    assert runtime.updates[-1][2] == "1" and svc.get("a")["live"]["cpuset"] == "1"


def test_stopped_instances_free_their_cpus(svc, wait, make, runtime):
    make("a", limits={"cpus": 2}, start=True)
    wait(svc.stop("a"))
    make("b", limits={"cpus": 2}, start=True)
    assert runtime.runs[-1].cpuset == "0,1"


def test_suspended_instances_keep_their_cpus(svc, wait, make, runtime):
    make("a", limits={"cpus": 2}, start=True)
    wait(svc.suspend("a"))
    make("b", limits={"cpus": 2}, start=True)
    assert runtime.runs[-1].cpuset == "2,3"


# ------------------------------------------------------------------ exec
def test_exec_process(svc, make):
    make("web1", start=True)
    import subprocess
    p = svc.exec_process("web1", ["sh", "-c", "cat etc/hostname; exit 3"], tty=False, stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 3 and out == b"web1\n"


def test_exec_refused(svc, make, wait):
    make("web1")
    with pytest.raises(InvalidState):
        svc.exec_process("web1", ["true"], tty=False)
    wait(svc.start("web1"))
    with pytest.raises(InvalidArgument):
        svc.exec_process("web1", [], tty=False)


# ------------------------------------------------------------------ templates
def test_templates(tsvc, make, wait, template_dir, add_template):
    add_template("spare")
    make("web1")
    assert {t["name"]: t["in_use_by"] for t in tsvc.list()} == {"minimal": ["web1"], "spare": []}
    assert tsvc.get("minimal")["path"] == str(template_dir / "minimal" / "rootfs")
    with pytest.raises(NotFound):
        tsvc.get("nope")
    with pytest.raises(Conflict) as e:
        tsvc.remove("minimal")
    assert e.value.details == {"in_use_by": ["web1"]}
    with pytest.raises(Conflict):
        tsvc.build("minimal", force=True)
    with pytest.raises(InvalidArgument) as e:
        tsvc.build("no-such-builder")
    assert "minimal" in e.value.details["known"]
    assert wait(tsvc.remove("spare"))["status"] == "success"
    assert not (template_dir / "spare").exists() and [t["name"] for t in tsvc.list()] == ["minimal"]


def test_template_get_invalid_name(tsvc):
    with pytest.raises((NotFound, InvalidArgument)):
        tsvc.get("BAD")


# ------------------------------------------------------------------ reconcile
def test_reconcile(node, svc, wait, make, runtime, storage):
    from openvps.drivers.runtime import Spec
    make("gone", start=True)                                # 100: its init died while we were away
    make("alive", start=True)                               # 101: still running
    make("resumed")                                         # 102: stopped in the store, running for real
    node.store.add_instance(ctid=103, name="half", template="minimal", state="creating", hostname="half",
                            limits=defaults(), live={})
    storage.create(node.bundle(103), node.templates.rootfs("minimal"))
    make("dying")                                           # 104: destroy was interrupted
    node.store.update_instance(104, state="destroying")
    runtime.crash("100")
    storage.mount(node.bundle(102), node.templates.rootfs("minimal"), storage.idmaps[node.bundle(102)])
    runtime.run(Spec(cid="102", bundle=node.bundle(102), hostname="resumed", limits=defaults(), cgroup_path="/x"))
    runtime.run(Spec(cid="999", bundle=node.bundle(101), hostname="x", limits=defaults(), cgroup_path="/x"))
    (node.config.instances_dir / "555").mkdir()
    pending = node.store.add_operation("instance.start", "gone")
    running = node.store.add_operation("instance.stop", "alive")
    node.store.update_operation(running["id"], status="running")

    report = node.reconcile()

    assert report == {"rolled_back": ["half"], "destroyed": ["dying"], "stopped": ["gone"], "adopted": ["resumed"],
                      "orphans": ["999"], "operations": 2}
    assert rows(node) == [(100, "gone", "stopped"), (101, "alive", "running"), (102, "resumed", "running")]
    assert set(runtime.containers) == {"101", "102", "999"}           # the orphan is NOT deleted
    assert bundles(node) == ["100", "101", "102", "555"]               # nor its directory
    assert not storage.is_mounted(node.bundle(100))
    for op in (pending, running):
        row = node.store.get_operation(op["id"])
        assert row["status"] == "failure" and row["error"]["code"] == "interrupted"
    info = node.info()
    assert any("999" in o for o in info["orphans"]) and any("555" in o for o in info["orphans"])
    assert info["runtime"] == "fake" and "freeze" in info["runtime_capabilities"]


def test_reconcile_keeps_finished_operations(node, svc, wait, make):
    make("web1")
    ops = node.store.list_operations()
    assert node.reconcile()["operations"] == 0
    assert node.store.list_operations() == ops
