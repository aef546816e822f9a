"""Attacks from inside an instance. Each must fail with the expected error: a tenant's root is
not the node's root and cannot reach another tenant, the node's kernel or the daemon."""
import json
import os
import subprocess
import time

import pytest

MIB = 1 << 20


@pytest.fixture
def pair(daemon):
    daemon.ok("create", "501", "--name", "attacker", "--start", "--ram", "64M", "--swap", "0", "--pids", "64")
    daemon.ok("create", "502", "--name", "victim", "--start")
    return daemon


def attempt(d, script: str) -> subprocess.CompletedProcess:
    return d.cli("exec", "attacker", "--", "sh", "-c", script)


def test_root_inside_is_an_unprivileged_uid_on_the_node(pair):
    inst = pair.client.instance("attacker")
    base = inst["uid_base"]
    assert base and base >= 1_000_000 and not inst["privileged"]
    pid = inst["usage"]["pid"]
    assert open(f"/proc/{pid}/uid_map").read().split() == ["0", str(base), "65536"]
    assert open(f"/proc/{pid}/gid_map").read().split() == ["0", str(base), "65536"]
    assert os.stat(f"/proc/{pid}").st_uid == base          # the init runs as that uid on the node
    assert pair.sh("attacker", "id -u; touch /root/mine; stat -c %u /root/mine").split() == ["0", "0"]
    assert os.stat(pair.home / "instances" / "501" / "upper" / "root" / "mine").st_uid == base
    # and each instance has its own range
    assert pair.client.instance("victim")["uid_base"] != base


def test_cannot_read_the_nodes_or_another_instances_files(pair, tmp_path):
    secret = tmp_path / "node-secret"
    secret.write_text("node only")
    pair.sh("victim", "echo victim-data > /root/secret")
    victim_upper = pair.home / "instances" / "502" / "upper" / "root" / "secret"
    assert victim_upper.read_text() == "victim-data\n"
    for path in (secret, victim_upper, pair.home / "openvps.db", "/etc/shadow-node-marker"):
        p = attempt(pair, f"cat {path}")
        assert p.returncode != 0 and "No such file or directory" in p.stderr, (path, p.stdout)
    # the node's mounts are not visible: every mount point is the instance's own
    points = [line.split()[1] for line in pair.sh("attacker", "cat /proc/self/mounts").splitlines()]
    assert not any(p.startswith(("/work", "/var/lib", "/var/cache", str(pair.home))) for p in points), points
    p = attempt(pair, f"ls {pair.home}")
    assert p.returncode != 0 and "No such file or directory" in p.stderr


def test_cannot_see_or_signal_another_instances_processes(pair):
    pair.sh("victim", "sleep 4242 >/dev/null 2>&1 &")
    victim_sleep = [p for p in os.listdir("/proc") if p.isdigit() and _cmd(p) == "sleep 4242"]
    assert victim_sleep
    assert "4242" not in pair.sh("attacker", "ps")
    p = attempt(pair, f"kill -9 {victim_sleep[0]}")
    assert p.returncode != 0 and "No such process" in p.stderr
    assert "sleep 4242" in pair.sh("victim", "ps")


def _cmd(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_cannot_load_a_kernel_module(pair):
    p = attempt(pair, "head -c 4096 /dev/urandom > /tmp/evil.ko; insmod /tmp/evil.ko")
    assert p.returncode != 0 and "Operation not permitted" in p.stderr, p.stderr


def test_cannot_create_device_nodes_for_real_disks(pair):
    p = attempt(pair, "mknod /dev/sda b 8 0")
    assert p.returncode != 0 and "Operation not permitted" in p.stderr
    p = attempt(pair, "mknod /tmp/vda b 253 0")
    assert p.returncode != 0 and "Operation not permitted" in p.stderr


def test_cannot_mount_the_nodes_disk(pair):
    dev = os.stat("/").st_dev
    p = attempt(pair, f"ls /dev/vda /dev/sda 2>&1; mkdir -p /mnt/x; mount -t ext4 /dev/vda /mnt/x")
    assert p.returncode != 0
    assert "No such file" in p.stdout + p.stderr or "Permission denied" in p.stderr or "not permitted" in p.stderr
    assert os.major(dev) > 0   # the node's disk is a real block device the instance cannot reach


def test_cannot_write_proc_sys_or_sys(pair):
    before = open("/proc/sys/kernel/panic").read()
    p = attempt(pair, "echo 1 > /proc/sys/kernel/panic")
    assert p.returncode != 0 and "Read-only file system" in p.stderr
    assert open("/proc/sys/kernel/panic").read() == before
    p = attempt(pair, "echo /tmp/evil > /sys/kernel/uevent_helper")
    assert p.returncode != 0 and ("Read-only file system" in p.stderr or "Permission denied" in p.stderr)


def test_cannot_raise_its_own_cgroup_limits(pair):
    p = attempt(pair, "echo 1099511627776 > /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert p.returncode != 0 and ("Permission denied" in p.stderr or "Read-only" in p.stderr), p.stderr
    assert int(pair.cgroups.read("memory", "501", "memory.limit_in_bytes")) == 64 * MIB
    p = attempt(pair, "echo max > /sys/fs/cgroup/pids/pids.max")
    assert p.returncode != 0
    assert pair.cgroups.read("pids", "501", "pids.max") == "64"


def test_cannot_reach_the_daemons_api_socket(pair):
    sock = pair.home / "openvps.sock"
    assert sock.is_socket()
    p = attempt(pair, f"ls -l {sock}")
    assert p.returncode != 0 and "No such file or directory" in p.stderr
    # nor the node's loopback (its own network namespace)
    p = attempt(pair, "wget -T 2 -qO- http://127.0.0.1:8773/ ; nc -w 2 127.0.0.1 22 </dev/null")
    assert p.returncode != 0


def test_cannot_read_the_kernel_log_or_use_keyrings(pair):
    p = attempt(pair, "dmesg")
    assert p.returncode != 0 and "Operation not permitted" in p.stderr


def test_noisy_neighbour_is_contained(pair):
    hog = ("exec </dev/null >/dev/null 2>&1; (i=0; while [ $i -lt 20 ]; do dd if=/dev/zero of=/dev/null bs=100M count=2 2>/dev/null; i=$((i+1)); done) &"
           "(dd if=/dev/zero of=/root/fill bs=1M count=300 conv=fsync 2>/dev/null) &"
           "(while :; do :; done) & (while :; do :; done) &"
           "sleep 1; (bomb() { bomb | bomb & }; bomb) 2>/dev/null &"
           "sleep 1")
    attempt(pair, hog)
    import io
    latencies = []
    for _ in range(5):      # a request to the neighbour through the API (no CLI start-up in the number)
        out, t = io.BytesIO(), time.monotonic()
        assert pair.client.exec("victim", ["echo", "pong"], stdout=out, stderr=io.BytesIO(),
                                forward_stdin=False) == 0
        latencies.append(time.monotonic() - t)
        assert out.getvalue() == b"pong\n"
        time.sleep(0.3)
    assert max(latencies) < 1.0, latencies
    # the limits did the containing: the fork bomb hit pids.max, the hog hit the memory limit
    assert int(pair.cgroups.read("pids", "501", "pids.current")) <= 64
    oom = dict(line.split() for line in pair.cgroups.read("memory", "501", "memory.oom_control").splitlines())
    assert int(oom["oom_kill"]) > 0
    pair.ok("stop", "attacker", "--force")
    assert json.loads(pair.ok("status", "victim", "--json"))["state"] == "running"
