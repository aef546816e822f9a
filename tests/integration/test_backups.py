"""Backups on the real stack: archive a running instance (suspend mode: frozen for the archive),
restore it on a new CTID with another uid range, and refuse damaged archives without residue."""
import json
import subprocess

import pytest

SUMS = "cd / && find /root /etc /srv /bin -xdev \\( -type f -o -type l \\) | sort | xargs md5sum 2>&1; " \
       "stat -c '%n %u:%g %a' /srv/data /srv/data/* /etc/motd-new"


def _prepare(daemon, ident):
    daemon.sh(ident, "mkdir -p /srv/data && echo hello > /srv/data/a && head -c 300000 /dev/urandom > /srv/data/blob"
                     " && chown 1000:100 /srv/data/a && chmod 640 /srv/data/a && rm /bin/ls "
                     "&& echo new > /etc/motd-new && chmod 4755 /etc/motd-new && ln -s /srv/data/a /root/link")


@pytest.mark.parametrize("mode", ["suspend", "snapshot"])
def test_backup_of_a_running_instance_restores_on_a_new_ctid_with_the_same_files(daemon, tmp_path, mode):
    daemon.ok("create", "301", "--name", "orig", "--start", "--ram", "200M", "--volume", "vdata:/data")
    _prepare(daemon, "orig")
    daemon.sh("orig", "echo in-volume > /data/v && chown 7:7 /data/v")
    before = daemon.sh("orig", SUMS)
    assert "/srv/data/blob" in before and "/srv/data/a 1000:100 640" in before and "/etc/motd-new 0:0 4755" in before
    out = daemon.ok("backup", "orig", "--mode", mode, "--to", str(tmp_path), "--json")
    b = json.loads(out)
    archive = b["archive"]
    # still running afterwards: only frozen while archiving/copying
    assert json.loads(daemon.ok("status", "orig", "--json"))["state"] == "running"
    # one archive, a sha256sum-style file beside it that sha256sum itself accepts
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.split("/")[-1],
                                                                  archive.split("/")[-1] + ".sha256"])
    subprocess.run(["sha256sum", "-c", archive.split("/")[-1] + ".sha256"], cwd=tmp_path, check=True,
                   capture_output=True)

    out = daemon.ok("restore", archive, "--ctid", "302", "--name", "copy")
    assert "CTID 302" in out
    st = json.loads(daemon.ok("status", "copy", "--json"))
    assert st["state"] == "stopped" and st["limits"]["ram"] == 200 << 20
    orig = json.loads(daemon.ok("status", "orig", "--json"))
    assert st["uid_base"] != orig["uid_base"]          # its own uid range: owners were shifted
    daemon.ok("start", "copy")
    assert daemon.sh("copy", SUMS) == before
    assert daemon.sh("copy", "hostname") == "orig"       # the backed-up config, hostname included
    # the volume comes back as a volume of its own (the name is taken by the original's here)
    assert daemon.sh("copy", "cat /data/v; stat -c %u:%g /data/v") == "in-volume\n7:7"
    vols = {v["name"]: v["in_use_by"] for v in json.loads(daemon.ok("volume", "list", "--json"))}
    assert vols == {"vdata": ["orig"], "vdata-restored": ["copy"]}
    daemon.ok("destroy", "copy", "--force")
    daemon.ok("destroy", "orig", "--force")
    daemon.ok("volume", "delete", "vdata")
    daemon.ok("volume", "delete", "vdata-restored")
    assert daemon.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


def test_damaged_or_foreign_archives_are_refused_and_leave_nothing(daemon, tmp_path):
    daemon.ok("create", "303", "--name", "src")
    b = json.loads(daemon.ok("backup", "src", "--mode", "stop", "--to", str(tmp_path), "--json"))
    archive = b["archive"]
    p = daemon.cli("restore", archive)            # the name is taken
    assert p.returncode == 1 and "restore with --name" in p.stderr

    data = bytearray(open(archive, "rb").read())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "damaged.tar.zst"
    bad.write_bytes(bytes(data))
    (tmp_path / "damaged.tar.zst.sha256").write_text(open(archive + ".sha256").read().replace(
        archive.split("/")[-1], "damaged.tar.zst"))
    p = daemon.cli("restore", str(bad), "--name", "x1")
    assert p.returncode == 1 and ("checksum mismatch" in p.stderr or "not an openvps backup" in p.stderr), p.stderr

    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"not an archive at all")
    subprocess.run(f"sha256sum junk.tar.zst > junk.tar.zst.sha256", shell=True, cwd=tmp_path, check=True)
    p = daemon.cli("restore", str(junk), "--name", "x2")
    assert p.returncode == 1 and "not an openvps backup" in p.stderr

    p = daemon.cli("restore", str(tmp_path / "missing.tar.zst"))
    assert p.returncode == 1 and "no such file" in p.stderr
    p = daemon.cli("backup", "src", "--mode", "hot", "--to", str(tmp_path))
    assert p.returncode == 1 and "mode" in p.stderr
    p = daemon.cli("backup", "src", "--to", str(tmp_path / "nodir"))
    assert p.returncode == 1 and "existing directory" in p.stderr

    assert [i["name"] for i in json.loads(daemon.ok("list", "--json"))] == ["src"]
    assert daemon.residue()["dirs"] == ["303"] and daemon.residue()["mounts"] == []
    assert not [n for n in (daemon.home).iterdir() if n.name.startswith(".backup-")]
