"""A Debian 12 system container: systemd boots, sshd runs, and the user's key logs in (real OpenSSH)."""
import json
import subprocess
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def debian(template_dir):
    from openvps.drivers.templates.cache import TemplateCache
    TemplateCache(template_dir).build("debian-12")     # cached between runs on this machine
    return "debian-12"


def _wait_running(d, name: str, timeout: float = 30) -> str:
    end = time.monotonic() + timeout
    state = ""
    while time.monotonic() < end:
        p = d.cli("exec", name, "--", "systemctl", "is-system-running")
        state = p.stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.25)
    return state


def test_debian_boots_systemd_and_sshd_accepts_the_users_key(daemon, debian, tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    t = time.monotonic()
    daemon.ok("create", "700", "--name", "deb1", "--template", debian, "--hostname", "deb1.example",
              "--ram", "512M", "--ssh-key", f"{key}.pub", "--userpasswd", "root:s3cret", "--start")
    state = _wait_running(daemon, "deb1")
    boot = time.monotonic() - t
    assert state in ("running", "degraded"), daemon.ok("exec", "deb1", "--", "systemctl", "--failed")
    assert boot < 30
    assert daemon.sh("deb1", "cat /proc/1/comm") == "systemd"
    assert daemon.sh("deb1", "systemctl is-active ssh") == "active"
    assert daemon.sh("deb1", "hostname") == "deb1.example"
    mid = daemon.sh("deb1", "cat /etc/machine-id")
    assert len(mid) == 32 and int(mid, 16)
    # fresh ed25519 + ecdsa host keys, no RSA
    keys = daemon.sh("deb1", "ls /etc/ssh/").split()
    assert "ssh_host_ed25519_key" in keys and "ssh_host_ecdsa_key" in keys and "ssh_host_rsa_key" not in keys
    assert daemon.sh("deb1", "grep -c '^root:\\$6\\$' /etc/shadow") == "1"

    # real OpenSSH: the host's ssh client, run inside the instance's network namespace only
    pid = daemon.client.instance("deb1")["usage"]["pid"]
    p = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ssh", "-i", str(key), "-o", "BatchMode=yes",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "ConnectTimeout=10", "root@127.0.0.1", "hostname; id -u"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["deb1.example", "0"]

    # a graceful stop: SIGRTMIN+3 lets systemd shut down cleanly, long before the kill timeout
    t = time.monotonic()
    daemon.ok("stop", "deb1", "--timeout", "25")
    assert time.monotonic() - t < 20
    assert json.loads(daemon.ok("status", "deb1", "--json"))["state"] == "stopped"
    daemon.ok("start", "deb1")
    assert _wait_running(daemon, "deb1") in ("running", "degraded")
    daemon.ok("destroy", "deb1", "--force")
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


def test_two_debian_instances_get_distinct_identities(daemon, debian):
    for n in ("d1", "d2"):
        daemon.ok("create", "--name", n, "--template", debian)
    ids = set()
    for n in ("d1", "d2"):
        daemon.ok("start", n)
        ids.add((daemon.sh(n, "cat /etc/machine-id"), daemon.sh(n, "cat /etc/ssh/ssh_host_ed25519_key.pub")))
    assert len(ids) == 2
