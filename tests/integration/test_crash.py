"""Crash-only: instances outlive the daemon; a restarted daemon reconciles its store with runc."""
import json
import subprocess

import pytest


def test_instances_keep_running_when_the_daemon_is_killed(daemon):
    daemon.ok("create", "120", "--name", "survivor", "--start")
    pid_before = daemon.client.instance("survivor")["usage"]["pid"]
    daemon.kill9()
    # no resident per-instance process of ours: the init is still alive without the daemon
    assert subprocess.run(["runc", "--root", str(daemon.runc_root), "state", "120"],
                          capture_output=True, text=True).stdout.count('"running"') == 1
    daemon.start()
    inst = daemon.client.instance("survivor")
    assert inst["state"] == "running" and inst["usage"]["pid"] == pid_before
    assert daemon.sh("survivor", "echo still here") == "still here"


def test_instance_that_died_while_the_daemon_was_down_is_marked_stopped(daemon):
    daemon.ok("create", "121", "--name", "victim", "--start")
    daemon.stop()
    subprocess.run(["runc", "--root", str(daemon.runc_root), "kill", "121", "KILL"], check=True)
    daemon.start()
    assert daemon.client.instance("victim")["state"] == "stopped"
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": ["121"]}
    daemon.ok("start", "victim")
    assert daemon.sh("victim", "hostname") == "victim"


@pytest.mark.parametrize("fault, start", [("create.after_setup", False), ("create.after_setup", True)])
def test_kill_9_in_the_middle_of_create_leaves_nothing_after_restart(make_daemon, fault, start):
    d = make_daemon(env={"OPENVPS_FAULT": fault})
    d.start(env={"OPENVPS_FAULT": fault})
    args = ["create", "130", "--name", "halfmade"] + (["--start"] if start else [])
    p = d.cli(*args)
    assert p.returncode == 1 and "cannot reach the openvps daemon" in p.stderr or "daemon" in p.stderr, p.stderr
    d.proc.wait(10)   # it really died by SIGKILL
    assert d.proc.returncode == -9
    assert (d.home / "instances" / "130").exists()   # half-made files are there now...
    d.start()
    assert d.client.instances() == []                # ...and the next start rolled them back
    assert d.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}
    ops = d.client.operations()
    assert ops[0]["kind"] == "instance.create" and ops[0]["error"]["code"] == "interrupted"
    d.ok("create", "130", "--name", "halfmade", "--start")   # name and CTID are free again


def test_kill_9_after_runc_started_adopts_the_running_instance(make_daemon):
    d = make_daemon()
    d.start()
    d.ok("create", "131", "--name", "adopted")
    d.stop()
    d.start(env={"OPENVPS_FAULT": "start.after_run"})
    p = d.cli("start", "adopted")
    assert p.returncode == 1
    d.proc.wait(10)
    d.start()
    assert d.client.instance("adopted")["state"] == "running"
    assert d.sh("adopted", "hostname") == "adopted"


def test_runc_containers_without_a_row_are_reported_not_deleted(daemon):
    daemon.ok("create", "140", "--name", "row1", "--start")
    daemon.stop()
    # forget the instance in the store, behind the daemon's back
    import sqlite3
    db = sqlite3.connect(daemon.home / "openvps.db")
    db.execute("DELETE FROM instances WHERE ctid = 140")
    db.commit()
    db.close()
    daemon.start()
    node = json.loads(daemon.ok("node", "--json"))
    assert any("140" in o for o in node["orphans"])
    assert "140" in daemon.runc_containers()   # still there: never silently deleted
