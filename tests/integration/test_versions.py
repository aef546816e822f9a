"""Template versions and sync on the real stack: an update script run in a throwaway instance makes
version 2; sync pushes it to an instance, sparing excluded paths and the instance's own changes."""
import json
import secrets

from openvps.drivers.templates.cache import TemplateCache

UPDATE = """set -e
echo v2-shell >> /etc/shells
echo v2-profile > /etc/profile
echo v2-new > /etc/newfile
mkdir -p /home/shared && echo v2 > /home/shared/new
echo v2-net > /etc/network/interfaces
"""


def test_update_makes_version_2_and_sync_spares_excludes_and_own_changes(daemon, template_dir, tmp_path):
    base = f"sb-{secrets.token_hex(3)}"
    cache = TemplateCache(template_dir)
    try:
        daemon.ok("create", "501", "--name", "seed")
        daemon.ok("publish", "seed", "--as", base)                # version 1 (a private copy of minimal)
        daemon.ok("destroy", "seed")
        daemon.ok("create", "502", "--name", "cl", "--template", base, "--start")
        daemon.sh("cl", "echo mine > /etc/profile")                 # the instance's own change
        net_before = daemon.sh("cl", "cat /etc/network/interfaces")
        shells_before = daemon.sh("cl", "cat /etc/shells")

        script = tmp_path / "update.sh"
        script.write_text(UPDATE)
        out = daemon.ok("template", "update", base, "--script", str(script))
        assert f"template {base}.v2 is version 2 of {base} (parent {base}@1)" in out
        assert daemon.residue()["dirs"] == ["502"]                  # the throwaway instance is gone
        vers = [t for t in json.loads(daemon.ok("template", "list", "--versions", "--json"))
                if (t.get("base") or t["name"]) == base]
        assert [(t["name"], t["revision"]) for t in vers] == [(base, 1), (f"{base}.v2", 2)]
        # the new version holds the script's result, not the throwaway's identity
        v2 = cache.rootfs(f"{base}.v2")
        assert (v2 / "etc/newfile").read_text() == "v2-new\n"
        assert (v2 / "etc/hostname").read_text() == (cache.rootfs(base) / "etc/hostname").read_text()

        args = ["sync", "cl", "--exclude", "/home", "--exclude", "/etc/network", "--json"]
        dry = json.loads(daemon.ok(*args, "--dry-run"))
        assert dry["from"] == f"{base}@1" and dry["to"] == f"{base}.v2@2"
        updated = {e["path"] for e in dry["updated"]}
        assert {"/etc/shells", "/etc/newfile"} <= updated
        assert {e["path"] for e in dry["conflicts"]} == {"/etc/profile"}
        assert {e["path"] for e in dry["excluded"]} >= {"/home/shared", "/etc/network/interfaces"}
        assert daemon.sh("cl", "cat /etc/shells") == shells_before   # a dry run changes nothing
        assert json.loads(daemon.ok("status", "cl", "--json"))["template"] == base

        done = json.loads(daemon.ok(*args))
        assert done["dry_run"] is False
        st = json.loads(daemon.ok("status", "cl", "--json"))
        assert st["template"] == f"{base}.v2" and st["state"] == "running"
        assert daemon.sh("cl", "tail -n1 /etc/shells") == "v2-shell"             # updated
        assert daemon.sh("cl", "cat /etc/newfile") == "v2-new"                    # added
        assert daemon.sh("cl", "cat /etc/profile") == "mine"                      # own change kept
        assert daemon.sh("cl", "cat /etc/network/interfaces") == net_before       # excluded: untouched
        assert daemon.sh("cl", "test -e /home/shared && echo yes || echo no") == "no"   # excluded add: hidden

        p = daemon.cli("sync", "cl", "--to", "9")
        assert p.returncode == 1 and "no version 9" in p.stderr
        p = daemon.cli("sync", "cl", "--exclude", "relative")
        assert p.returncode == 1 and "absolute path" in p.stderr
        daemon.ok("destroy", "cl", "--force")
    finally:
        daemon.cleanup()
        cache.remove(f"{base}.v2")
        cache.remove(base)
