"""Template builders and cache, for real: busybox "minimal" always, debootstrap debian-12 as slow.

Root is needed for chroot and mounts (those tests skip otherwise). Set
OPENVPS_TEST_TEMPLATE_CACHE to a directory to keep and reuse the debian-12 build.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from openvps.drivers.templates import (BUILDERS, BuildError, InvalidTemplateName, TemplateCache,
                                       UnknownBuilder, setup_instance)
from openvps.drivers.templates.cache import remove_tree

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")
needs_busybox = pytest.mark.skipif(not os.path.exists("/bin/busybox"),
                                   reason="needs busybox-static")


@pytest.fixture
def cache_root():
    d = Path(tempfile.mkdtemp(prefix="openvps-tpl-"))
    try:
        yield d
    finally:
        remove_tree(d)  # detaches any mount a failed test left inside first


@pytest.fixture
def cache(cache_root):
    return TemplateCache(cache_root / "templates")


def leftovers(cache: TemplateCache) -> list[str]:
    return sorted(n for n in os.listdir(cache.root) if n.startswith((".build-", ".trash-")))


def list_archive(archive: Path) -> list[str]:
    out = subprocess.run(["tar", "--use-compress-program=zstd -d", "-tf", str(archive)],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


class FakeBuilder:
    os = "busybox"
    release = "0"
    init = "busybox"
    stop_signal = "SIGTERM"
    has_sshd = False

    def __init__(self, name, fail=None, delay=0.0, mount=False):
        self.name, self.fail, self.delay, self.mount = name, fail, delay, mount
        self.builds = 0

    def check(self):
        pass

    def build(self, rootfs, progress):
        self.builds += 1
        (rootfs / "etc").mkdir()
        (rootfs / "etc/data").write_bytes(b"x" * 1000)
        progress(0.5, "half")
        if self.mount:
            (rootfs / "mnt").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(rootfs / "mnt")], check=True)
            (rootfs / "mnt/inside").write_text("on tmpfs")
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail


# -- minimal --------------------------------------------------------------------------------
@needs_busybox
def test_build_minimal(cache):
    steps = []
    t0 = time.perf_counter()
    m = cache.build("minimal", lambda f, msg: steps.append((f, msg)))
    elapsed = time.perf_counter() - t0
    print(f"minimal built in {elapsed:.2f}s: {m.size_bytes} bytes, archive {m.archive_bytes}")

    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("pack" in msg for _, msg in steps)

    assert (m.name, m.os, m.init, m.stop_signal, m.has_sshd, m.builder) == \
        ("minimal", "busybox", "busybox", "SIGTERM", False, "minimal")
    assert m.release[0].isdigit()
    assert 1_000_000 < m.size_bytes < 5_000_000
    assert m.created_at.endswith("Z")

    top = cache.root / "minimal"
    assert sorted(os.listdir(top)) == ["minimal.tar.zst", "rootfs", "template.json"]
    assert m.archive_bytes == (top / "minimal.tar.zst").stat().st_size
    assert leftovers(cache) == []
    assert cache.get("minimal") == m
    assert cache.list() == [m]

    root = cache.rootfs("minimal")
    assert root == top / "rootfs"
    assert os.access(root / "bin/busybox", os.X_OK)
    assert os.readlink(root / "sbin/init") == "/bin/busybox"
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert (root / "etc/shadow").read_text().startswith("root:*:")
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert "::sysinit:/etc/init.d/rcS" in (root / "etc/inittab").read_text()
    assert "respawn" not in (root / "etc/inittab").read_text()
    assert os.access(root / "etc/init.d/rcS", os.X_OK)
    assert "ID=busybox" in (root / "etc/os-release").read_text()
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    for d in ("dev", "proc", "sys", "run", "var/log", "root"):
        assert (root / d).is_dir()

    names = list_archive(top / "minimal.tar.zst")
    assert "./bin/busybox" in names and "./etc/inittab" in names


@needs_busybox
def test_build_again_is_cached_and_force_rebuilds(cache):
    first = cache.build("minimal")
    inode = cache.rootfs("minimal").stat().st_ino
    t0 = time.perf_counter()
    assert cache.build("minimal") == first
    assert time.perf_counter() - t0 < 0.5
    assert cache.rootfs("minimal").stat().st_ino == inode

    again = cache.build("minimal", force=True)
    assert again.name == "minimal"
    assert cache.rootfs("minimal").stat().st_ino != inode
    assert leftovers(cache) == []


@needs_root
@needs_busybox
def test_minimal_runs_in_chroot(cache):
    cache.build("minimal")
    root = cache.rootfs("minimal")
    out = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "echo ok"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"
    listing = subprocess.run(["tar", "--use-compress-program=zstd -d", "--numeric-owner", "-tvf",
                              str(cache.root / "minimal/minimal.tar.zst"), "./bin/busybox"],
                             capture_output=True, text=True, check=True).stdout
    assert " 0/0 " in listing


@needs_busybox
def test_setup_instance_on_minimal_copy(cache, cache_root):
    m = cache.build("minimal")
    inst = cache_root / "instance"
    shutil.copytree(cache.rootfs("minimal"), inst, symlinks=True)
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        setup_instance(inst, m, hostname=f"box{i}.example.org")
        times.append((time.perf_counter() - t0) * 1000)
    print("minimal setup_instance ms:", ", ".join(f"{t:.2f}" for t in times))
    assert min(times) < 50
    assert (inst / "etc/hostname").read_text() == "box4.example.org\n"
    assert "127.0.1.1\tbox4.example.org box4\n" in (inst / "etc/hosts").read_text()
    assert not (inst / "etc/machine-id").exists()
    assert not (inst / "etc/ssh").exists()
    # The template itself is untouched.
    assert (cache.rootfs("minimal") / "etc/hostname").read_text() == "localhost\n"
    if IS_ROOT:
        out = subprocess.run(["chroot", str(inst), "/bin/cat", "/etc/hostname"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == "box4.example.org\n"


# -- failures, locking, removal ------------------------------------------------------------
@pytest.mark.parametrize("exc", [BuildError("boom"), RuntimeError("bug"), KeyboardInterrupt()])
def test_failed_build_leaves_nothing(cache, monkeypatch, exc):
    monkeypatch.setitem(BUILDERS, "broken", FakeBuilder("broken", fail=exc))
    with pytest.raises(type(exc)):
        cache.build("broken")
    assert leftovers(cache) == []
    assert not (cache.root / "broken").exists()
    assert cache.get("broken") is None and cache.list() == []


@needs_root
def test_failed_build_detaches_mounts(cache, monkeypatch):
    monkeypatch.setitem(BUILDERS, "mounty", FakeBuilder("mounty", fail=BuildError("x"), mount=True))
    with pytest.raises(BuildError):
        cache.build("mounty")
    assert leftovers(cache) == []
    with open("/proc/self/mountinfo") as f:
        assert str(cache.root) not in f.read()


@needs_busybox
def test_failed_force_rebuild_keeps_old_template(cache, monkeypatch):
    old = cache.build("minimal")
    monkeypatch.setitem(BUILDERS, "minimal", FakeBuilder("minimal", fail=BuildError("no")))
    with pytest.raises(BuildError):
        cache.build("minimal", force=True)
    assert cache.get("minimal") == old
    assert (cache.rootfs("minimal") / "bin/busybox").exists()
    assert leftovers(cache) == []


def test_build_once_when_two_build_at_once(cache, monkeypatch):
    builder = FakeBuilder("slow", delay=0.5)
    monkeypatch.setitem(BUILDERS, "slow", builder)
    results, errors = [], []

    def run():
        try:
            results.append(TemplateCache(cache.root).build("slow"))
        except Exception as e:  # surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert builder.builds == 1
    assert len(results) == 2 and results[0] == results[1]


def test_remove(cache, monkeypatch):
    monkeypatch.setitem(BUILDERS, "fake", FakeBuilder("fake"))
    cache.build("fake")
    assert [m.name for m in cache.list()] == ["fake"]
    cache.remove("fake")
    assert cache.list() == [] and cache.get("fake") is None
    assert not (cache.root / "fake").exists()
    assert leftovers(cache) == []
    cache.remove("fake")  # idempotent


def test_cleanup_partial(cache):
    for entry in (".build-minimal-0123abcd", ".trash-debian-12-89abcdef", ".build-busy-00000000"):
        (cache.root / entry / "rootfs/etc").mkdir(parents=True)
        (cache.root / entry / "rootfs/etc/file").write_text("x")
    (cache.root / ".build-minimal-0123abcd/rootfs/link").symlink_to("/etc")
    (cache.root / "not-a-template").mkdir()  # no template.json: ignored by list()
    fd = os.open(cache.root / ".lock-busy", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # someone is building "busy" right now
        removed = cache.cleanup_partial()
    finally:
        os.close(fd)
    assert removed == [".build-minimal-0123abcd", ".trash-debian-12-89abcdef"]
    assert leftovers(cache) == [".build-busy-00000000"]
    assert os.path.exists("/etc/hostname") or os.path.exists("/etc/passwd")  # link not followed
    assert cache.list() == []
    assert cache.cleanup_partial() == [".build-busy-00000000"]


def test_unknown_and_invalid_names(cache):
    with pytest.raises(UnknownBuilder, match="minimal"):
        cache.build("windows-95")
    for bad in ("../etc", "Minimal", "", "a/b"):
        with pytest.raises(InvalidTemplateName):
            cache.build(bad)
        with pytest.raises(InvalidTemplateName):
            cache.rootfs(bad)
    assert leftovers(cache) == []


# -- debian-12 (debootstrap, ~50 s, needs the apt mirror) ----------------------------------
@pytest.fixture
def debian_cache():
    keep = os.environ.get("OPENVPS_TEST_TEMPLATE_CACHE")
    if keep:
        yield TemplateCache(Path(keep))
        return
    d = Path(tempfile.mkdtemp(prefix="openvps-tpl-deb-"))
    try:
        yield TemplateCache(d)
    finally:
        remove_tree(d)


@pytest.mark.slow
@needs_root
def test_build_debian_12(debian_cache):
    if shutil.which("debootstrap") is None:
        pytest.skip("needs debootstrap")
    steps = []
    m = debian_cache.build("debian-12", lambda f, msg: steps.append(f))
    assert steps == sorted(steps) and steps[-1] == 1.0
    assert (m.os, m.release, m.init, m.stop_signal, m.has_sshd) == \
        ("debian", "12", "systemd", "SIGRTMIN+3", True)

    root = debian_cache.rootfs("debian-12")
    assert (root / "usr/sbin/sshd").exists()
    assert (root / "lib/systemd/systemd").exists()
    assert list((root / "etc/ssh").glob("ssh_host_*")) == []
    assert (root / "etc/machine-id").exists() and (root / "etc/machine-id").stat().st_size == 0
    assert not (root / "var/lib/dbus/machine-id").exists()
    assert list((root / "var/cache/apt/archives").glob("*.deb")) == []
    assert [p.name for p in (root / "var/lib/apt/lists").iterdir()] == ["partial"]
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert (root / "etc/openvps-template").read_text() == "debian-12\n"
    interfaces = (root / "etc/network/interfaces").read_text()
    assert "iface lo inet loopback" in interfaces
    assert "source /etc/network/interfaces.d/*" in interfaces
    assert os.readlink(root / "etc/systemd/system/systemd-udevd.service") == "/dev/null"
    assert not (root / "etc/systemd/system/ssh.service").is_symlink() or \
        os.readlink(root / "etc/systemd/system/ssh.service") != "/dev/null"

    archive = debian_cache.root / "debian-12/debian-12.tar.zst"
    assert archive.stat().st_size == m.archive_bytes
    assert "./usr/sbin/sshd" in list_archive(archive)

    # Per-instance setup on a copy-on-write view of the template (how instances use it).
    work = Path(tempfile.mkdtemp(prefix="openvps-inst-"))
    merged = work / "merged"
    try:
        for d in ("upper", "work", "merged"):
            (work / d).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={root},upperdir={work / 'upper'},workdir={work / 'work'}",
                        str(merged)], check=True)
        times = []
        for i in range(3):
            t0 = time.perf_counter()
            setup_instance(merged, m, hostname="deb1.example.org", root_password="pw")
            times.append((time.perf_counter() - t0) * 1000)
        print("debian-12 setup_instance ms:", ", ".join(f"{t:.1f}" for t in times))
        assert {p.name for p in (merged / "etc/ssh").glob("ssh_host_*")} == {
            "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
            "ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub"}
        assert len((merged / "etc/machine-id").read_text()) == 33
        (merged / "run/sshd").mkdir(parents=True, exist_ok=True)  # systemd makes it at boot
        check = subprocess.run(["chroot", str(merged), "/usr/sbin/sshd", "-T"],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        hostkeys = sorted(line.split()[1] for line in check.stdout.splitlines()
                          if line.startswith("hostkey "))
        assert hostkeys == ["/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key"]
        assert list((root / "etc/ssh").glob("ssh_host_*")) == []  # template untouched
    finally:
        subprocess.run(["umount", str(merged)], capture_output=True)
        remove_tree(work)
