"""drivers/mounts.py against real mounts: statx's mount-root bit agrees with /proc/self/mountinfo."""
import os
import shutil
import subprocess
import time

import pytest

from openvps.drivers.idmap import idmapped_mount
from openvps.drivers.mounts import _in_mountinfo, fuse_mounted, mounted


@pytest.fixture
def dirs(tmp_path):
    made = []

    def mkdir(name):
        d = tmp_path / name
        d.mkdir()
        made.append(d)
        return d
    try:
        yield mkdir
    finally:
        for d in reversed(made):
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_bind_idmapped_and_overlay_mounts_are_seen(dirs):
    src, bind, idm, upper, work, merged = (dirs(n) for n in ("src", "bind", "idm", "upper", "work", "merged"))
    assert not mounted(bind) and not mounted(src / "missing")
    subprocess.run(["mount", "--bind", str(src), str(bind)], check=True)   # same filesystem: same st_dev
    idmapped_mount(str(src), str(idm), 3_000_000, 65536)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={idm},upperdir={upper},workdir={work}", str(merged)], check=True)
    for d in (bind, idm, merged):
        assert mounted(d) and _in_mountinfo(str(d))
    assert not mounted(src) and not mounted(upper)
    for d in (merged, idm, bind):
        subprocess.run(["umount", str(d)], check=True)
        assert not mounted(d)


@pytest.mark.skipif(shutil.which("lxcfs") is None, reason="lxcfs is not installed")
def test_fuse_mount_alive_dead_and_gone(dirs):
    point = dirs("lxcfs")
    assert not fuse_mounted(point)
    proc = subprocess.Popen(["lxcfs", str(point)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not fuse_mounted(point) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fuse_mounted(point) and os.path.exists(point / "proc" / "meminfo")
        proc.kill()           # a dead server leaves its mount (ENOTCONN): still a FUSE mount there
        proc.wait()
        assert fuse_mounted(point)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
    assert not fuse_mounted(point)
