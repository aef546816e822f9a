"""Golden images and snapshots on the real stack: runc, overlayfs, the cgroup freezer."""
import json
import os
import secrets
import socket

import pytest

from openvps.client import Client
from openvps.domain.errors import NotFound
from openvps.drivers.templates.cache import TemplateCache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def published(template_dir):
    """Names of templates a test publishes into the shared cache; removed whatever happens."""
    names = []
    try:
        yield names
    finally:
        for n in names:
            TemplateCache(template_dir).remove(n)


def test_publish_a_running_instance_then_create_from_it_finds_the_file(daemon, published):
    name = f"golden-{secrets.token_hex(3)}"
    published.append(name)
    daemon.ok("create", "201", "--name", "src", "--start")
    daemon.sh("src", "mkdir -p /srv/app && echo 'built once' > /srv/app/index.html && chown 33:33 /srv/app/index.html"
                     " && rm /etc/motd 2>/dev/null; echo gone > /root/note && rm /root/note && echo id > /etc/machine-id")
    out = daemon.ok("publish", "src", "--as", name, "--description", "web image")
    assert f"template {name} published" in out and "minimal@1" in out
    # the instance was only frozen for the copy: it runs on
    assert json.loads(daemon.ok("status", "src", "--json"))["state"] == "running"
    assert daemon.sh("src", "cat /srv/app/index.html") == "built once"

    tpl = next(t for t in json.loads(daemon.ok("template", "list", "--json")) if t["name"] == name)
    assert tpl["parent"] == "minimal@1" and tpl["revision"] == 1 and tpl["owner"] == "admin"
    assert tpl["description"] == "web image"
    # in the template the owners are the instance's own (0-based), not the node's shifted range
    rootfs = TemplateCache(daemon.template_dir).rootfs(name)
    st = (rootfs / "srv/app/index.html").stat()
    assert (st.st_uid, st.st_gid) == (33, 33)
    assert (rootfs / "etc/machine-id").read_text() == ""     # identity cleaned

    daemon.ok("create", "202", "--name", "clone", "--template", name, "--start")
    assert daemon.sh("clone", "cat /srv/app/index.html") == "built once"
    assert daemon.sh("clone", "stat -c %u:%g /srv/app/index.html") == "33:33"
    assert daemon.sh("clone", "test -e /root/note && echo yes || echo no") == "no"
    assert daemon.sh("clone", "hostname") == "clone"
    # a fresh machine-id of its own
    mid = daemon.sh("clone", "cat /etc/machine-id")
    assert len(mid) == 32 and mid != "id"

    # the template is in use: removing it is refused
    p = daemon.cli("template", "remove", name)
    assert p.returncode == 1 and "clone" in p.stderr


def test_publish_bad_input_is_refused_cleanly(daemon, published):
    from openvps.drivers.templates import BUILDERS
    unbuilt = next(b for b in sorted(BUILDERS) if not (daemon.template_dir / b).exists())
    daemon.ok("create", "203", "--name", "one")
    for args, words in ((["nope", "--as", "x1"], "no instance"),
                        (["one", "--as", "Bad Name"], "invalid template name"),
                        (["one", "--as", "minimal"], "exists"),
                        (["one", "--as", unbuilt], "buildable")):
        p = daemon.cli("publish", *args)
        assert p.returncode == 1 and words in p.stderr, (args, p.stderr)
    assert daemon.residue()["mounts"] == []
    assert not [n for n in os.listdir(daemon.template_dir) if n.startswith(".build-")]


def test_a_user_publishes_only_their_own_instance_and_owns_the_template(make_daemon, published):
    port = free_port()
    d = make_daemon(env={"OPENVPS_LISTEN": f"127.0.0.1:{port}"})
    d.start()
    url = f"http://127.0.0.1:{port}"
    tokens = {}
    for user in ("alice", "bob"):
        d.client.create_user(user)
        tokens[user] = d.client.create_token(user, "test")["token"]
    alice, bob = Client(url=url, token=tokens["alice"]), Client(url=url, token=tokens["bob"])
    alice.wait(alice.create(name="alices", template="minimal"))
    with pytest.raises(NotFound):
        bob.publish("alices", f"bobs-{secrets.token_hex(3)}")
    name = f"alices-{secrets.token_hex(3)}"
    published.append(name)
    done = alice.wait(alice.publish("alices", name))
    assert done["result"]["template"]["owner"] == "alice"


def test_snapshot_restore_brings_back_a_deleted_file(daemon):
    daemon.ok("create", "204", "--name", "snap", "--start")
    daemon.sh("snap", "echo precious > /root/data.txt && mkdir -p /opt/d && echo x > /opt/d/f && rm /etc/motd; true")
    daemon.ok("snapshot", "create", "snap", "before")       # running: frozen for the copy
    assert json.loads(daemon.ok("status", "snap", "--json"))["state"] == "running"
    snaps = json.loads(daemon.ok("snapshot", "list", "snap", "--json"))
    assert [s["name"] for s in snaps] == ["before"] and snaps[0]["state"] == "running"

    daemon.sh("snap", "rm /root/data.txt && rm -r /opt/d && echo later > /root/later.txt && rm /bin/ls")
    p = daemon.cli("snapshot", "create", "snap", "before")
    assert p.returncode == 1 and "already has a snapshot" in p.stderr

    # Proxmox's pct rollback: the running instance is stopped, rolled back, and (--start) started again
    daemon.ok("snapshot", "restore", "snap", "before", "--start")
    assert daemon.sh("snap", "cat /root/data.txt") == "precious"
    assert daemon.sh("snap", "cat /opt/d/f") == "x"
    assert daemon.sh("snap", "test -e /root/later.txt && echo yes || echo no") == "no"
    assert daemon.sh("snap", "test -e /bin/ls && echo yes || echo no") == "yes"    # whiteout undone
    # ownership as inside: root's file is root's
    assert daemon.sh("snap", "stat -c %u:%g /root/data.txt") == "0:0"

    # without --start it stays stopped
    daemon.ok("snapshot", "restore", "snap", "before")
    assert json.loads(daemon.ok("status", "snap", "--json"))["state"] == "stopped"
    daemon.ok("snapshot", "delete", "snap", "before")
    assert json.loads(daemon.ok("snapshot", "list", "snap", "--json")) == []
    p = daemon.cli("snapshot", "restore", "snap", "before")
    assert p.returncode == 1 and "no snapshot" in p.stderr
    p = daemon.cli("snapshot", "create", "snap", "../x")
    assert p.returncode == 1 and "invalid snapshot name" in p.stderr
    assert daemon.residue()["mounts"] == []


def test_snapshot_keeps_whiteouts_and_opaque_dirs_of_a_stopped_instance(daemon):
    daemon.ok("create", "205", "--name", "wo", "--start")
    # a dir of the template removed and made again: overlayfs marks it opaque (hides the template's files)
    daemon.sh("wo", "rm /bin/ls; rm -r /var/log; mkdir /var/log; echo n > /var/log/only; "
                    "rm -r /etc/network; mkdir /etc/network; echo mine > /etc/network/own")
    daemon.ok("stop", "wo")
    daemon.ok("snapshot", "create", "wo", "s1")
    daemon.ok("start", "wo")
    daemon.sh("wo", "echo back > /bin/ls; rm -r /etc/network /var/log")
    daemon.ok("snapshot", "restore", "wo", "s1", "--start")
    assert daemon.sh("wo", "test -e /bin/ls && echo yes || echo no") == "no"
    assert daemon.sh("wo", "ls /etc/network") == "own"          # the template's interfaces stays hidden
    assert daemon.sh("wo", "cat /var/log/only") == "n"
