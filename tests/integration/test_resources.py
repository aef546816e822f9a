"""Resources the OpenVZ way on the real stack: vSwap OOM inside, beancounters, events, lxcfs,
CPU cap, pids limit, admission control."""
import json
import os
import signal
import subprocess
import time

import pytest

from daemon import OPENVPS
from openvps.domain.accounting import UNLIMITED

MIB = 1 << 20
OPENVPS_EXEC_TIMEOUT = 60


def wait_for(fn, timeout=10.0, step=0.2):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


def bc(daemon, ident) -> dict:
    return {r["resource"]: r for r in json.loads(daemon.ok("beancounters", str(ident), "--json"))["rows"]}


def test_vswap_oom_kills_inside_the_instance_keeps_running_and_an_event_names_the_process(daemon):
    daemon.ok("create", "101", "--name", "oom", "--ram", "64M", "--swap", "128M", "--start")
    # a 200 MB buffer, every page touched: more than RAM (64M) and, on this swapless host, the OOM killer acts
    p = daemon.cli("exec", "oom", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    assert p.returncode == 137, (p.returncode, p.stderr)
    # only the process died: the instance and its init live on
    assert json.loads(daemon.ok("status", "oom", "--json"))["state"] == "running"
    assert daemon.sh("oom", "echo alive") == "alive"

    rows = bc(daemon, "oom")
    assert rows["physpages"]["failcnt"] > 0
    assert rows["physpages"]["limit"] == 64 * MIB // 4096
    assert rows["swappages"]["limit"] == 128 * MIB // 4096
    assert rows["oomguarpages"]["failcnt"] >= 1          # OOM kills, from memory.oom_control
    assert rows["physpages"]["maxheld"] <= rows["physpages"]["limit"]

    def oom_events():
        return [e for e in json.loads(daemon.ok("events", "oom", "--json")) if e["kind"] == "oom_kill"]
    events = wait_for(oom_events, timeout=5)
    assert events, daemon.ok("events", "oom")
    e = events[0]
    assert e["resource"] == "oomguarpages" and e["ctid"] == 101 and "raise --ram or --swap" in e["advice"]
    if os.access("/dev/kmsg", os.R_OK):
        assert "dd (pid" in e["process"] and "dd" in e["message"]
    else:
        assert "unknown" in e["message"]
    # the node-wide list and the text view show it too
    assert any(x["kind"] == "oom_kill" for x in json.loads(daemon.ok("events", "--json")))
    assert "oomguarpages" in daemon.ok("events", "oom")


def test_beancounters_table_format_all_and_reset(daemon):
    daemon.ok("create", "102", "--name", "bc1", "--ram", "64M", "--swap", "64M", "--pids", "100", "--start")
    daemon.ok("create", "103", "--name", "bc2", "--start")
    daemon.ok("create", "104", "--name", "bc3")              # stopped: no counters
    p = daemon.cli("exec", "bc1", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
    assert p.returncode == 137

    out = daemon.ok("beancounters", "bc1")
    lines = out.splitlines()
    assert lines[0] == "Version: 2.5"
    assert lines[1].split() == ["uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt"]
    assert lines[2].split()[:2] == ["102:", "physpages"]
    resources = [ln.split()[-6] for ln in lines[2:]]
    assert resources[:2] == ["physpages", "swappages"] and "numproc" in resources and "kmemsize" in resources
    numproc = next(ln.split()[-6:] for ln in lines if " numproc " in ln)
    assert numproc[3] == numproc[4] == "100"
    kmem = next(ln.split()[-6:] for ln in lines if " kmemsize " in ln)
    assert kmem[4] == str(UNLIMITED)                          # no kmem limit: printed as LONG_MAX

    every = daemon.ok("beancounters", "--all")
    assert "102:" in every and "103:" in every and "104:" not in every
    assert len(json.loads(daemon.ok("beancounters", "--all", "--json"))) == 2

    before = bc(daemon, "bc1")
    assert before["physpages"]["failcnt"] > 0 and before["oomguarpages"]["failcnt"] == 1
    assert before["physpages"]["maxheld"] * 4096 > 32 * MIB
    res = json.loads(daemon.ok("beancounters", "bc1", "--reset", "--json"))
    assert "memory.failcnt" in res["reset"] and res["not_resettable"]
    after = {r["resource"]: r for r in res["beancounters"]["rows"]}
    assert after["physpages"]["failcnt"] == after["swappages"]["failcnt"] == 0
    assert after["physpages"]["maxheld"] < before["physpages"]["maxheld"]

    p = daemon.cli("beancounters", "bc3")
    assert p.returncode == 0 and "stopped" in p.stderr
    p = daemon.cli("beancounters")
    assert p.returncode == 1 and "--all" in p.stderr


def test_lxcfs_free_inside_shows_the_instance_ram_and_survives_an_lxcfs_restart(daemon):
    if not (daemon.home / "lxcfs.pid").exists():
        pytest.skip("lxcfs is not installed (scripts/setup-host.sh installs it)")
    daemon.ok("create", "105", "--name", "view", "--ram", "64M", "--swap", "32M", "--start")

    def mem_total_mib():
        # busybox `free` asks sysinfo(2); procps `free` (Debian) and top read /proc/meminfo, which lxcfs serves
        out = daemon.cli("exec", "view", "--", "grep", "MemTotal", "/proc/meminfo").stdout.split()
        return int(out[1]) // 1024 if len(out) > 1 else None
    free_total = mem_total_mib
    assert mem_total_mib() == 64
    swap = daemon.sh("view", "grep SwapTotal /proc/meminfo").split()[1]
    assert swap in ("32768", "0")          # lxcfs shows the instance's swap (0 when the host has none)
    assert daemon.sh("view", "grep -c ^processor /proc/cpuinfo").isdigit()
    assert float(daemon.sh("view", "cut -d' ' -f1 /proc/uptime")) < 60   # the instance's uptime, not the node's

    # lxcfs dies: the daemon starts it again and re-mounts its files into the running instance
    pid = int((daemon.home / "lxcfs.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: free_total() == 64, timeout=15), daemon.cli("exec", "view", "--", "free", "-m")
    assert json.loads(daemon.ok("status", "view", "--json"))["state"] == "running"
    assert int((daemon.home / "lxcfs.pid").read_text()) != pid

    # the daemon stops: lxcfs goes with it, its mountpoint is unmounted, the instance keeps running and
    # sees the kernel's own /proc/meminfo (not an error)
    daemon.stop()
    assert not any(m.endswith("/lxcfs") for m in daemon.mounts())
    cid = "105"
    p = subprocess.run(["runc", "--root", str(daemon.runc_root), "exec", cid, "cat", "/proc/meminfo"],
                       capture_output=True, text=True, timeout=OPENVPS_EXEC_TIMEOUT)
    assert p.returncode == 0 and "MemTotal" in p.stdout
    daemon.start()
    assert wait_for(lambda: free_total() == 64, timeout=10)


def test_cpulimit_caps_a_busy_loop(daemon):
    daemon.ok("create", "106", "--name", "cpu", "--cpulimit", "50", "--cpuguarantee", "20", "--start")
    cg = daemon.cgroups
    assert int(cg.read("cpu", "106", "cpu.cfs_quota_us")) == 50_000
    assert int(cg.read("cpu", "106", "cpu.shares")) >= 1024    # the guarantee raised the weight
    busy = subprocess.Popen([OPENVPS, "exec", "cpu", "--", "sh", "-c",
                                            "timeout 4 sh -c 'while :; do :; done' & "
                                            "timeout 4 sh -c 'while :; do :; done' & wait"],
                            env=daemon.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        u0, t0 = int(cg.read("cpuacct", "106", "cpuacct.usage")), time.monotonic()
        time.sleep(2.0)
        u1, t1 = int(cg.read("cpuacct", "106", "cpuacct.usage")), time.monotonic()
    finally:
        busy.wait(30)
    used = (u1 - u0) / 1e9 / (t1 - t0)
    assert 0.3 < used <= 0.55, used
    rows = bc(daemon, "cpu")
    assert rows["cputhrottle"]["failcnt"] > 0 and rows["cputhrottle"]["limit"] == 50


def test_pids_limit_stops_a_fork_bomb_and_the_node_stays_healthy(daemon):
    daemon.ok("create", "107", "--name", "bomb", "--pids", "64", "--ram", "128M", "--start")
    daemon.ok("create", "108", "--name", "neighbour", "--start")
    daemon.cli("exec", "bomb", "--", "sh", "-c",
               "exec </dev/null >/dev/null 2>&1; f() { f | f & }; f; sleep 1", timeout=60)
    time.sleep(3)
    cg = daemon.cgroups
    assert int(cg.read("pids", "107", "pids.current")) <= 64
    assert int(cg.read("pids", "107", "pids.events").split()[1]) > 0
    # the node and the neighbour are fine, the daemon answers
    assert daemon.sh("neighbour", "echo ok") == "ok"
    assert json.loads(daemon.ok("status", "bomb", "--json"))["state"] == "running"
    rows = bc(daemon, "bomb")
    assert rows["numproc"]["failcnt"] > 0 and rows["numproc"]["limit"] == 64
    assert wait_for(lambda: any(e["resource"] == "numproc"
                                for e in json.loads(daemon.ok("events", "bomb", "--json"))), timeout=5)
    daemon.ok("stop", "bomb", "--force")
    assert json.loads(daemon.ok("status", "bomb", "--json"))["state"] == "stopped"


def test_admission_control_refuses_the_instance_that_would_overcommit(make_daemon):
    d = make_daemon(env={"OPENVPS_OVERCOMMIT_RATIO": "0.01"}).start()
    cap = json.loads(d.ok("node", "capacity", "--json"))
    budget = cap["promisable"]
    assert cap["overcommit_ratio"] == 0.01 and budget == int((cap["ram"] + cap["swap"]) * 0.01)
    half = budget // 2 // MIB
    d.ok("create", "--name", "a", "--ram", f"{half}M")
    d.ok("create", "--name", "b", "--ram", f"{half // 2}M", "--guarantee", f"{half // 2}M")
    p = d.cli("create", "--name", "c", "--ram", f"{half}M")
    assert p.returncode == 1 and "free to promise" in p.stderr and "overcommit_ratio" in p.stderr, p.stderr
    assert [i["name"] for i in json.loads(d.ok("list", "--json"))] == ["a", "b"]
    # a change that raises a guarantee past the budget is refused too; lowering is fine
    p = d.cli("set", "a", "--ram", f"{half * 2}M", "--save")
    assert p.returncode == 1 and "free to promise" in p.stderr
    d.ok("set", "a", "--ram", f"{half // 2}M", "--save")
    cap = json.loads(d.ok("node", "capacity", "--json"))
    assert cap["guarantees"] == (half // 2 + half // 2) * MIB and cap["instances"] == 2
    assert cap["free_to_promise"] == budget - cap["guarantees"]
    text = d.ok("node", "capacity")
    assert "free to promise" in text and "guarantees" in text
    assert "hostname" in d.ok("node")                          # `node` alone still shows the node
    s = json.loads(d.ok("split", "4", "--json"))
    assert s["instances"] == 4 and s["ram"] > 0
    assert "openvps create" in d.ok("split", "4")


@pytest.mark.slow
def test_free_in_a_debian_instance_shows_its_ram(daemon, template_dir):
    if not (daemon.home / "lxcfs.pid").exists():
        pytest.skip("lxcfs is not installed (scripts/setup-host.sh installs it)")
    from openvps.drivers.templates.cache import TemplateCache
    TemplateCache(template_dir).build("debian-12")
    daemon.ok("create", "--name", "deb", "--template", "debian-12", "--ram", "64M", "--swap", "64M", "--start")
    out = daemon.ok("exec", "deb", "--", "free", "-m")
    mem = next(ln.split() for ln in out.splitlines() if ln.startswith("Mem:"))
    assert mem[1] == "64", out


def test_diskspace_quota_stops_a_writer_and_df_inside_shows_it(daemon):
    t = time.monotonic()
    daemon.ok("create", "109", "--name", "disk", "--diskspace", "64M", "--start")
    with_quota = time.monotonic() - t
    df = daemon.sh("disk", "df -k / | tail -1").split()
    assert 48 * 1024 < int(df[1]) <= 64 * 1024, df          # overlayfs reports its upper filesystem: the image
    p = daemon.cli("exec", "disk", "--", "dd", "if=/dev/zero", "of=/root/big", "bs=1M", "count=100")
    assert p.returncode != 0 and "No space left" in p.stderr + p.stdout, (p.returncode, p.stderr)
    size = int(daemon.sh("disk", "wc -c < /root/big"))
    assert 32 * MIB < size < 64 * MIB
    assert json.loads(daemon.ok("status", "disk", "--json"))["state"] == "running"
    assert daemon.sh("disk", "rm /root/big && echo freed") == "freed"
    daemon.sh("disk", "echo kept > /root/small")
    p = daemon.cli("set", "disk", "--diskspace", "1G", "--save")
    assert p.returncode == 1 and "fixed" in p.stderr
    daemon.ok("stop", "disk")
    assert daemon.residue()["mounts"] == []                  # overlay and the image's loop mount are gone
    daemon.ok("start", "disk")
    assert daemon.sh("disk", "cat /root/small") == "kept"
    daemon.ok("destroy", "disk", "--force")
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}
    t = time.monotonic()
    daemon.ok("create", "110", "--name", "plain", "--start")
    plain = time.monotonic() - t
    print(f"create+start with a 64M diskspace image {with_quota * 1000:.0f} ms, without {plain * 1000:.0f} ms")


def test_lxcfs_after_a_daemon_crash_is_replaced_and_remounted(daemon):
    if not (daemon.home / "lxcfs.pid").exists():
        pytest.skip("lxcfs is not installed (scripts/setup-host.sh installs it)")
    daemon.ok("create", "111", "--name", "crashview", "--ram", "96M", "--start")
    assert daemon.sh("crashview", "grep MemTotal /proc/meminfo").split()[1] == str(96 * 1024)
    old = int((daemon.home / "lxcfs.pid").read_text())
    daemon.kill9()                 # no clean-up ran: the old lxcfs still serves the instance
    p = subprocess.run(["runc", "--root", str(daemon.runc_root), "exec", "111", "grep", "MemTotal", "/proc/meminfo"],
                       capture_output=True, text=True, timeout=OPENVPS_EXEC_TIMEOUT)
    assert p.returncode == 0 and p.stdout.split()[1] == str(96 * 1024), p.stderr
    daemon.start()                 # replaces the orphaned lxcfs and re-mounts its files
    new = int((daemon.home / "lxcfs.pid").read_text())
    assert new != old
    assert wait_for(lambda: not os.path.exists(f"/proc/{old}"), timeout=5)
    assert daemon.sh("crashview", "grep MemTotal /proc/meminfo").split()[1] == str(96 * 1024)
    assert json.loads(daemon.ok("status", "crashview", "--json"))["state"] == "running"
