"""Named volumes and bind mounts on the real stack: idmapped into unprivileged instances."""
import json
import os
import shutil
import tempfile

import pytest


@pytest.fixture
def node_dir():
    d = tempfile.mkdtemp(prefix="ovps-code-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_volume_outlives_its_instance_and_delete_is_refused_while_in_use(daemon):
    daemon.ok("create", "401", "--name", "db", "--volume", "data:/var/lib/mysql", "--start")
    daemon.sh("db", "echo rows > /var/lib/mysql/table && mkdir /var/lib/mysql/sub && chown 999:999 /var/lib/mysql/sub")
    # root inside owns the volume's root; ids inside are the ids on the node (idmapped view)
    assert daemon.sh("db", "stat -c %u:%g /var/lib/mysql /var/lib/mysql/table /var/lib/mysql/sub") == \
        "0:0\n0:0\n999:999"
    vol = daemon.home / "volumes" / "data"
    assert (vol / "table").read_text() == "rows\n"
    assert (os.stat(vol / "sub").st_uid, os.stat(vol / "table").st_uid) == (999, 0)

    vols = json.loads(daemon.ok("volume", "list", "--json"))
    assert [(v["name"], v["in_use_by"]) for v in vols] == [("data", ["db"])]
    p = daemon.cli("volume", "delete", "data")
    assert p.returncode == 1 and "used by db" in p.stderr

    daemon.ok("destroy", "db", "--force")
    assert (vol / "table").read_text() == "rows\n"            # outlives the instance
    # another instance (another uid range) gets the same data with the same owners
    daemon.ok("create", "402", "--name", "db2", "--volume", "data:/srv/db:ro", "--start")
    assert daemon.sh("db2", "cat /srv/db/table; stat -c %u /srv/db/sub") == "rows\n999"
    p = daemon.cli("exec", "db2", "--", "sh", "-c", "echo x > /srv/db/new")
    assert p.returncode != 0                                   # read-only
    daemon.ok("stop", "db2")
    assert daemon.residue()["mounts"] == []                    # the idmapped views go with the stop
    daemon.ok("destroy", "db2")
    daemon.ok("volume", "delete", "data")
    assert not vol.exists() and json.loads(daemon.ok("volume", "list", "--json")) == []


def test_bind_mount_of_a_node_directory(daemon, node_dir):
    with open(os.path.join(node_dir, "index.php"), "w") as f:
        f.write("<?php echo 1;")
    os.chown(os.path.join(node_dir, "index.php"), 33, 33)
    daemon.ok("create", "403", "--name", "web", "--mount", f"{node_dir}:/var/www:ro", "--start")
    assert daemon.sh("web", "cat /var/www/index.php; stat -c %u:%g /var/www/index.php") == "<?php echo 1;33:33"
    assert daemon.cli("exec", "web", "--", "sh", "-c", "rm /var/www/index.php").returncode != 0
    daemon.ok("restart", "web")
    assert daemon.sh("web", "ls /var/www") == "index.php"
    daemon.ok("destroy", "web", "--force")
    assert os.path.exists(os.path.join(node_dir, "index.php"))  # destroy never touches the node's files
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


def test_bad_volume_and_mount_specs(daemon, node_dir):
    for args, words in ((["--volume", "data"], "write it as"),
                        (["--volume", "Bad!:/x"], "invalid volume name"),
                        (["--volume", "v:relative"], "must be absolute"),
                        (["--volume", "v:/proc/x"], "cannot mount on"),
                        (["--mount", "/nonexistent-dir:/x"], "not an existing directory"),
                        (["--mount", "/:/host"], "cannot share"),
                        (["--volume", "a:/x", "--volume", "b:/x"], "two mounts")):
        p = daemon.cli("create", "--name", "bad", *args)
        assert p.returncode == 1 and words in p.stderr, (args, p.stderr)
    assert json.loads(daemon.ok("list", "--json")) == []
    assert json.loads(daemon.ok("volume", "list", "--json")) == []
    p = daemon.cli("volume", "delete", "nope")
    assert p.returncode == 1 and "no volume" in p.stderr


def test_rebase_keeps_a_volumes_data_and_the_identity(daemon, template_dir):
    import secrets
    from openvps.drivers.templates.cache import TemplateCache
    golden = f"rebase-{secrets.token_hex(3)}"
    try:
        daemon.ok("create", "404", "--name", "gold", "--start")
        daemon.sh("gold", "mkdir -p /srv && echo v2 > /srv/marker")
        daemon.ok("publish", "gold", "--as", golden)

        daemon.ok("create", "405", "--name", "app", "--volume", "appdata:/data", "--start")
        daemon.sh("app", "echo keep > /data/db && echo junk > /root/junk && echo 0123abcd > /etc/machine-id")
        p = daemon.cli("rebase", "app", "--template", "nope")
        assert p.returncode == 1 and "no template" in p.stderr
        p = daemon.cli("rebase", "app", "--template", f"{golden}@7")
        assert p.returncode == 1 and "revision 1" in p.stderr

        daemon.ok("rebase", "app", "--template", f"{golden}@1")
        st = json.loads(daemon.ok("status", "app", "--json"))
        assert st["state"] == "running" and st["template"] == golden
        assert daemon.sh("app", "cat /data/db") == "keep"                 # the volume's data
        assert daemon.sh("app", "cat /srv/marker") == "v2"                # the new root
        assert daemon.sh("app", "test -e /root/junk && echo yes || echo no") == "no"
        assert daemon.sh("app", "hostname") == "app"
        assert daemon.sh("app", "cat /etc/machine-id /etc/hostname") == "0123abcd\napp"
        daemon.ok("destroy", "app", "--force")
        daemon.ok("destroy", "gold", "--force")
    finally:
        daemon.cleanup()
        TemplateCache(template_dir).remove(golden)


def test_a_failed_create_takes_the_volume_it_made_along(daemon):
    daemon.ok("volume", "create", "kept")
    # a directory mounted onto a file: runc refuses at start, in the create's operation, after the
    # volumes were made; the create is undone with the volume it made (not the one that was there)
    p = daemon.cli("create", "--name", "fails", "--volume", "fresh:/etc/passwd", "--volume", "kept:/b", "--start")
    assert p.returncode == 1 and "not a directory" in p.stderr, p.stderr
    assert json.loads(daemon.ok("list", "--json")) == []
    assert [v["name"] for v in json.loads(daemon.ok("volume", "list", "--json"))] == ["kept"]
    assert not (daemon.home / "volumes" / "fresh").exists()
