"""Template export/import between two nodes (two homes with their own template caches): a delta
against a base the other node has is much smaller than the full template and rebuilds it exactly."""
import json
import os
import secrets
import subprocess
import tempfile
from pathlib import Path

import pytest

from openvps.drivers.templates.cache import TemplateCache, remove_tree


def tree_listing(root: Path) -> str:
    """Every entry with type, mode, owner, size, mtime and content hash: what 'the exact tree' means."""
    p = subprocess.run(f"cd {root} && find . -printf '%y %m %U:%G %s %T@ %p %l\\n' | sort && "
                       "find . -type f -print0 | sort -z | xargs -0 sha256sum", shell=True,
                       capture_output=True, text=True, check=True)
    return p.stdout


@pytest.fixture
def other_cache():
    d = Path(tempfile.mkdtemp(prefix="ovps-other-tpl-"))
    try:
        yield d
    finally:
        remove_tree(d)


def test_delta_export_is_small_and_import_rebuilds_the_exact_tree(daemon, make_daemon, template_dir,
                                                                    other_cache, tmp_path):
    name = f"exp-{secrets.token_hex(3)}"
    try:
        daemon.ok("create", "601", "--name", "src", "--start")
        daemon.sh("src", "mkdir -p /srv && head -c 200000 /dev/urandom > /srv/blob && echo hi > /etc/motd")
        daemon.ok("publish", "src", "--as", name)
        full = json.loads(daemon.ok("template", "export", name, "--to", str(tmp_path / "full.ovt"), "--json"))
        delta = json.loads(daemon.ok("template", "export", name, "--base", "minimal", "--to",
                                     str(tmp_path / "delta.ovt"), "--json"))
        assert delta["base"]["name"] == "minimal"
        # the delta carries about the 200 kB of new data, not the whole tree
        assert delta["bytes"] < full["bytes"] / 3, (delta, full)
        assert delta["bytes"] < 260_000

        # the other node has its own copy of the base (same tree) and nothing else
        subprocess.run(["cp", "-a", str(template_dir / "minimal"), str(other_cache / "minimal")], check=True)
        other = make_daemon(template_dir=other_cache)
        other.start()
        out = other.ok("template", "import", str(tmp_path / "delta.ovt"))
        assert f"template {name} imported" in out
        assert tree_listing(other_cache / name / "rootfs") == tree_listing(template_dir / name / "rootfs")
        other.ok("create", "602", "--name", "there", "--template", name, "--start")
        assert other.sh("there", "cat /etc/motd; wc -c < /srv/blob") == "hi\n200000"
        p = other.cli("template", "import", str(tmp_path / "delta.ovt"))
        assert p.returncode == 1 and "exists" in p.stderr
        other.ok("destroy", "there", "--force")
        TemplateCache(other_cache).remove(name)

        # a base that differs on the other node: refused, nothing left
        (other_cache / "minimal/rootfs/etc/hostname").write_text("changed\n")
        p = other.cli("template", "import", str(tmp_path / "delta.ovt"))
        assert p.returncode == 1 and "not the base" in p.stderr
        assert not (other_cache / name).exists()
        assert not [n for n in os.listdir(other_cache) if n.startswith(".")
                    and not n.startswith(".lock-")]
        assert not [n for n in os.listdir(other.home) if n.startswith(".transfer-")]
        # a full export needs no base
        other.ok("template", "import", str(tmp_path / "full.ovt"))
        assert tree_listing(other_cache / name / "rootfs") == tree_listing(template_dir / name / "rootfs")

        junk = tmp_path / "junk.ovt"
        junk.write_bytes(b"junk")
        p = other.cli("template", "import", str(junk))
        assert p.returncode == 1 and "not an openvps template export" in p.stderr
    finally:
        daemon.cleanup()
        TemplateCache(template_dir).remove(name)
