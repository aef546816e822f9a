"""Bad input: a clear error on stderr, a non-zero exit, a 4xx from the API, and nothing left behind."""
import json

import pytest

from openvps.domain.errors import Conflict, InvalidArgument, InvalidState, NotFound


@pytest.mark.parametrize("args, message", [
    (["--name", "x1", "--template", "nosuch"], "no template 'nosuch'"),
    (["--name", "Bad_Name"], "invalid name"),
    (["--name", "-x"], "invalid name"),
    (["--name", "12345"], "invalid name"),
    (["--name", "ok1", "--ram", "8M"], "below the minimum"),
    (["--name", "ok1", "--ram", "100T"], "more than this node has"),
    (["--name", "ok1", "--ram", "lots"], "is not a size"),
    (["--name", "ok1", "--cpuunits", "3"], "below the minimum"),
    (["--name", "ok1", "--hostname", "bad..host"], "invalid hostname"),
    (["5", "--name", "ok1"], "invalid CTID"),
    (["--name", "ok1", "--userpasswd", "bob:pw"], "root:PASSWORD"),
])
def test_create_refuses_bad_input_and_leaves_nothing(daemon, args, message):
    p = daemon.cli("create", *args)
    assert p.returncode == 1, p.stdout
    assert p.stderr.startswith("error: ") and message in p.stderr, p.stderr
    assert json.loads(daemon.ok("list", "--json")) == []
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


def test_bad_ssh_key_file_content_is_refused(daemon, tmp_path):
    key = tmp_path / "key.pub"
    key.write_text("this is not a key\n")
    p = daemon.cli("create", "--name", "k1", "--ssh-key", str(key))
    assert p.returncode == 1 and "ssh key" in p.stderr
    p = daemon.cli("create", "--name", "k1", "--ssh-key", str(tmp_path / "missing.pub"))
    assert p.returncode == 1 and "cannot read ssh key file" in p.stderr
    assert daemon.residue()["dirs"] == []


def test_duplicates_and_state_errors(daemon):
    daemon.ok("create", "200", "--name", "dup", "--start")
    for args, message in [
        (["create", "--name", "dup"], "exists already"),
        (["create", "200", "--name", "other"], "CTID 200 is taken"),
        (["start", "dup"], "already running"),
        (["destroy", "dup"], "stop it first, or pass --force"),
        (["resume", "dup"], "not suspended"),
        (["status", "nosuch"], "no instance 'nosuch'"),
        (["stop", "999"], "no instance 999"),
        (["set", "dup"], "nothing to change"),
        (["set", "dup", "--ram", "1"], "below the minimum"),
    ]:
        p = daemon.cli(*args)
        assert p.returncode == 1 and message in p.stderr, (args, p.stderr)
    daemon.ok("stop", "dup", "--force")
    for args, message in [
        (["exec", "dup", "--", "true"], "start it first"),
        (["stop", "dup"], "already stopped"),
        (["set", "dup", "--ram", "300M"], "add --save"),
        (["enter", "dup"], "start it first"),
    ]:
        p = daemon.cli(*args)
        assert p.returncode == 1 and message in p.stderr, (args, p.stderr)
    assert [i["name"] for i in daemon.client.instances()] == ["dup"]
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": ["200"]}


def test_api_errors_are_4xx_with_codes(daemon):
    c = daemon.client
    with pytest.raises(NotFound):
        c.instance("ghost")
    with pytest.raises(InvalidArgument) as e:
        c.create(name="x", template="minimal", limits={"ram": "0"})
    assert e.value.details["key"] == "ram"
    with pytest.raises(InvalidArgument):
        c.create(name="x", template="minimal", limits={"bogus": 1})
    with pytest.raises(InvalidArgument):
        c.request("POST", "/1.0/instances", {"template": "minimal"})
    with pytest.raises(NotFound):
        c.create(name="x", template="nosuch")
    c.wait(c.create(name="x", template="minimal"))
    with pytest.raises(Conflict):
        c.create(name="x", template="minimal")
    with pytest.raises(InvalidState):
        c.action("x", "resume")
    with pytest.raises(NotFound):
        c.request("GET", "/1.0/operations/00000000-0000-0000-0000-000000000000")


def test_a_failed_start_leaves_no_runtime_state_or_mount(daemon):
    daemon.ok("create", "210", "--name", "noinit")
    # break the instance: no init to run
    init = daemon.home / "instances" / "210" / "upper" / "sbin"
    init.mkdir(parents=True)
    (init / "init").symlink_to("/nonexistent")
    p = daemon.cli("start", "noinit")
    assert p.returncode == 1 and "runc could not start" in p.stderr
    assert json.loads(daemon.ok("status", "noinit", "--json"))["state"] == "stopped"
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": ["210"]}
    daemon.ok("destroy", "noinit")
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


def test_a_failed_create_with_start_leaves_nothing(make_daemon, tmp_path):
    from openvps.drivers.templates.base import Manifest
    tdir = tmp_path / "templates"
    root = tdir / "broken" / "rootfs"
    (root / "etc").mkdir(parents=True)
    (tdir / "broken" / "template.json").write_text(json.dumps(Manifest(
        name="broken", os="busybox", release="0", init="busybox", stop_signal="SIGTERM", has_sshd=False,
        size_bytes=0, archive_bytes=0, created_at="2026-01-01T00:00:00Z", builder="test").to_dict()))
    d = make_daemon(template_dir=tdir).start()
    p = d.cli("create", "300", "--name", "nope", "--template", "broken", "--start")
    assert p.returncode == 1 and "runc could not start" in p.stderr, p.stderr
    assert d.client.instances() == []
    assert d.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}
    # the name and CTID are free again
    assert d.client.request("GET", "/1.0/operations")[0]["status"] == "failure"
