"""Overlay layer logic on real files (no mounts): diff of two trees, folding an upper onto a tree,
owner shifting, and the --volume/--mount spec rules."""
import os
import stat

import pytest

from openvps.domain.errors import InvalidArgument
from openvps.drivers import layers
from openvps.service.versions import _in_upper
from openvps.service.volumes import _split, check_target

ROOT = os.geteuid() == 0


def write(p, text="", mode=0o644):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)


def test_diff_trees_reports_added_removed_modified_once_per_new_or_gone_dir(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        write(root / "etc/same", "x")
        write(root / "etc/changed", "old" if root is a else "new")
        write(root / "etc/mode", "m", 0o644 if root is a else 0o600)
    write(a / "gone/deep/f", "1")
    write(b / "new/deep/f", "1")
    os.symlink("same", a / "etc/link")
    os.symlink("changed", b / "etc/link")
    got = dict(layers.diff_trees(a, b))
    assert got == {"etc/changed": "modified", "etc/mode": "modified", "etc/link": "modified",
                   "gone": "removed", "new": "added"}
    assert layers.diff_trees(a, a) == []


@pytest.mark.skipif(not ROOT, reason="whiteouts are device nodes: root only")
def test_apply_upper_deletes_whiteouts_replaces_opaque_dirs_and_shifts_owners(tmp_path):
    tree, upper = tmp_path / "tree", tmp_path / "upper"
    write(tree / "etc/keep", "k")
    write(tree / "etc/drop", "d")
    write(tree / "opaque/old", "o")
    write(upper / "etc/new", "n")
    os.mknod(upper / "etc/drop", stat.S_IFCHR, 0)                 # whiteout
    write(upper / "opaque/mine", "m")
    os.setxattr(upper / "opaque", "trusted.overlay.opaque", b"y")
    base = 100_000
    os.chown(upper / "etc/new", base + 33, base + 33)
    os.chown(upper / "opaque/mine", 5, 5)                          # outside the range: left alone
    layers.apply_upper(upper, tree, base=base, size=65536, delta=-base, skip=("etc/ski*",))
    assert sorted(os.listdir(tree / "etc")) == ["keep", "new"]
    assert os.listdir(tree / "opaque") == ["mine"]
    assert (os.stat(tree / "etc/new").st_uid, os.stat(tree / "opaque/mine").st_uid) == (33, 5)
    assert "trusted.overlay.opaque" not in os.listxattr(tree / "opaque")

    layers.shift_owners(tree, 0, 65536, 200_000)
    assert os.stat(tree / "etc/new").st_uid == 200_033


@pytest.mark.skipif(not ROOT, reason="whiteouts are device nodes: root only")
def test_in_upper_sees_own_files_and_whiteouts_and_opaque_parents(tmp_path):
    upper = tmp_path / "u"
    write(upper / "etc/profile", "mine")
    os.mknod(upper / "gone", stat.S_IFCHR, 0)
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    assert _in_upper(upper, "etc/profile") and _in_upper(upper, "gone") and _in_upper(upper, "gone/child")
    assert _in_upper(upper, "opq/anything")
    assert not _in_upper(upper, "etc/shells") and not _in_upper(upper, "usr/bin/x")


def test_volume_and_mount_specs():
    assert _split("data:/var/lib/mysql", "volume") == ("data", "/var/lib/mysql", False)
    assert _split("/srv/code:/var/www:ro", "mount") == ("/srv/code", "/var/www", True)
    for bad in ("data", "a:b:c", ":/x", "a:"):
        with pytest.raises(InvalidArgument):
            _split(bad, "volume")
    assert check_target("/var//www/", "mounts") == "/var/www"
    for bad in ("relative", "/", "/proc", "/sys/x", "/dev/shm", "/a/../b"):
        with pytest.raises(InvalidArgument):
            check_target(bad, "mounts")
