"""A user's instance lifecycle on the real stack: CLI -> daemon -> runc/overlayfs/cgroups."""
import json
import time

import pytest

MIB = 1 << 20


def test_create_start_exec_limits_stop_destroy(daemon):
    out = daemon.ok("create", "101", "--name", "web1", "--ram", "256M", "--swap", "128M", "--start")
    assert "CTID 101" in out and "started" in out

    # the instance is its own machine: own hostname, its init is PID 1
    assert daemon.sh("web1", "hostname") == "web1"
    assert daemon.sh("101", "cat /proc/1/comm") == "init"
    assert daemon.sh("web1", "readlink /proc/1/exe") == "/bin/busybox"
    # only its own processes are visible (pid namespace)
    pids = [p for p in daemon.sh("web1", "ls /proc").split() if p.isdigit()]
    assert len(pids) <= 4

    # the kernel enforces --ram and --swap: the memory cgroup holds the limits
    cg = daemon.cgroups
    assert int(cg.read("memory", "101", "memory.limit_in_bytes")) == 256 * MIB
    assert int(cg.read("memory", "101", "memory.memsw.limit_in_bytes")) == (256 + 128) * MIB
    assert int(daemon.sh("web1", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")) == 256 * MIB

    # live change without --save: cgroup changes now, saved config does not
    daemon.ok("set", "web1", "--ram", "300M", "--cpulimit", "50")
    assert int(cg.read("memory", "101", "memory.limit_in_bytes")) == 300 * MIB
    assert int(cg.read("cpu", "101", "cpu.cfs_quota_us")) == 50_000
    st = json.loads(daemon.ok("status", "web1", "--json"))
    assert st["limits"]["ram"] == 256 * MIB and st["live"]["ram"] == 300 * MIB
    assert st["usage"]["memory"] > 0 and st["usage"]["pids"] >= 1

    # with --save it survives a restart
    daemon.ok("set", "web1", "--ram", "320M", "--save")
    daemon.ok("restart", "web1")
    assert int(cg.read("memory", "101", "memory.limit_in_bytes")) == 320 * MIB

    daemon.ok("stop", "web1")
    st = json.loads(daemon.ok("status", "web1", "--json"))
    assert st["state"] == "stopped"
    # stopped: no runc state, no mount, no cgroup
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": ["101"]}

    daemon.ok("start", "101")
    assert daemon.sh("101", "hostname") == "web1"
    daemon.ok("destroy", "web1", "--force")
    assert json.loads(daemon.ok("list", "--json")) == []
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


def test_files_written_inside_survive_stop_start_and_do_not_touch_the_template(daemon, template_dir):
    daemon.ok("create", "--name", "keep", "--start")
    daemon.sh("keep", "echo precious > /root/data.txt")
    daemon.ok("stop", "keep", "--force")
    daemon.ok("start", "keep")
    assert daemon.sh("keep", "cat /root/data.txt") == "precious"
    assert not (template_dir / "minimal" / "rootfs" / "root" / "data.txt").exists()


def test_copy_on_write_clones_are_independent(daemon):
    daemon.ok("create", "--name", "a", "--start")
    daemon.ok("create", "--name", "b", "--start")
    daemon.sh("a", "echo only-a > /etc/marker")
    assert daemon.sh("b", "cat /etc/marker 2>/dev/null || echo absent") == "absent"
    items = {i["name"]: i for i in json.loads(daemon.ok("list", "--json"))}
    assert items["a"]["ctid"] != items["b"]["ctid"]
    assert items["a"]["state"] == items["b"]["state"] == "running"


def test_suspend_resume_freezes_every_process(daemon):
    daemon.ok("create", "--name", "frz", "--start")
    daemon.ok("suspend", "frz")
    ctid = json.loads(daemon.ok("status", "frz", "--json"))["ctid"]
    assert daemon.cgroups.read("freezer", str(ctid), "freezer.state") == "FROZEN"
    p = daemon.cli("exec", "frz", "--", "true")
    assert p.returncode != 0 and "resume it first" in p.stderr
    daemon.ok("resume", "frz")
    assert daemon.cgroups.read("freezer", str(ctid), "freezer.state") == "THAWED"
    assert daemon.sh("frz", "echo alive") == "alive"
    # a suspended instance can still be stopped
    daemon.ok("suspend", "frz")
    daemon.ok("stop", "frz")
    assert json.loads(daemon.ok("status", "frz", "--json"))["state"] == "stopped"


def test_graceful_stop_uses_the_init_signal_and_force_kills_at_once(daemon):
    daemon.ok("create", "--name", "gs", "--start")
    t = time.monotonic()
    daemon.ok("stop", "gs", "--timeout", "30")
    graceful = time.monotonic() - t
    assert graceful < 25      # busybox init honoured SIGTERM; we did not wait for the kill
    daemon.ok("start", "gs")
    daemon.ok("stop", "gs", "--force")
    assert json.loads(daemon.ok("status", "gs", "--json"))["state"] == "stopped"


def test_stop_kills_after_timeout_when_init_ignores_its_signal(daemon):
    daemon.ok("create", "160", "--name", "stubborn")
    # an init with no SIGTERM handler: a pid-namespace init ignores the signal, as a hung init would
    init = daemon.home / "instances" / "160" / "upper" / "sbin" / "init"
    init.parent.mkdir(parents=True, exist_ok=True)
    init.write_text("#!/bin/sh\nexec sleep 1000000\n")
    init.chmod(0o755)
    daemon.ok("start", "stubborn")
    assert daemon.sh("stubborn", "cat /proc/1/comm") == "sleep"
    t = time.monotonic()
    daemon.ok("stop", "stubborn", "--timeout", "2")
    took = time.monotonic() - t
    assert 2 <= took < 15, took       # waited the timeout, then killed
    assert json.loads(daemon.ok("status", "stubborn", "--json"))["state"] == "stopped"
    assert daemon.runc_containers() == []


def test_list_columns_sort_and_json(daemon):
    daemon.ok("create", "150", "--name", "zz", "--ram", "64M")
    daemon.ok("create", "140", "--name", "aa", "--ram", "128M")
    out = daemon.ok("list")
    header = out.splitlines()[0].split()
    assert header == ["CTID", "NAME", "STATE", "TEMPLATE", "RAM", "SWAP", "IP"]
    assert out.index("140") < out.index("150")
    out = daemon.ok("list", "-o", "name,ram", "-s", "-ram")
    lines = [ln.split() for ln in out.splitlines()[1:] if ln.strip()]
    assert lines == [["aa", "128M"], ["zz", "64M"]]
    p = daemon.cli("list", "-o", "name,bogus")
    assert p.returncode == 1 and "unknown column" in p.stderr


def test_template_list_shows_users_and_remove_is_refused_while_used(daemon):
    daemon.ok("create", "--name", "user1")
    tpl = {t["name"]: t for t in json.loads(daemon.ok("template", "list", "--json"))}
    assert tpl["minimal"]["in_use_by"] == ["user1"] and tpl["minimal"]["init"] == "busybox"
    p = daemon.cli("template", "remove", "minimal")
    assert p.returncode == 1 and "user1" in p.stderr
    assert (daemon.template_dir / "minimal" / "rootfs").is_dir()


@pytest.mark.parametrize("n", [3])
def test_concurrent_creates_get_distinct_ctids(daemon, n):
    c = daemon.client
    ops = [c.create(name=f"par{i}", template="minimal", start=True) for i in range(n)]
    done = [c.wait(op, timeout=60) for op in ops]
    ctids = {d["result"]["instance"]["ctid"] for d in done}
    assert len(ctids) == n
    assert {i["state"] for i in c.instances()} == {"running"}
