"""Unit tests for per-instance template setup and the debootstrap helpers (no root needed)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import struct
import tempfile
from pathlib import Path

import pytest

from openvps.drivers.templates import base, setup
from openvps.drivers.templates.base import Manifest, UnknownBuilder, get_builder, validate_name
from openvps.drivers.templates.debootstrap import DebootstrapProgress, find_mirror
from openvps.drivers.templates.setup import (InvalidHostname, InvalidSSHKey, UnsafePath,
                                             safe_read, safe_write, set_hostname)

# Placeholder URL on a reserved TLD: the mirror logic must work from config alone.
FAKE_MIRROR = "http://mirror.invalid/debian"
FAKE_SECURITY = "http://mirror.invalid/debian-security"


@pytest.fixture
def tmp():
    """A temporary directory removed even when the test fails."""
    d = Path(tempfile.mkdtemp(prefix="openvps-unit-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def rootfs(tmp):
    root = tmp / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    os.chmod(root / "etc/shadow", 0o640)
    return root


def ssh_key(kind: str = "ssh-ed25519", comment: str = "me@laptop") -> str:
    name = kind.encode()
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", 32) + os.urandom(32)
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".strip()


def manifest(**kw) -> Manifest:
    d = dict(name="minimal", os="busybox", release="1.35", init="busybox", stop_signal="SIGTERM",
             has_sshd=False, size_bytes=1, archive_bytes=1, created_at="2024-01-01T00:00:00Z",
             builder="minimal")
    d.update(kw)
    return Manifest(**d)


# -- safe_write / safe_read -----------------------------------------------------------------
def test_safe_write_creates_dirs_and_sets_mode(rootfs):
    safe_write(rootfs, "/var/lib/x/file", b"data", 0o600)
    path = rootfs / "var/lib/x/file"
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((rootfs / "var/lib/x").stat().st_mode) == 0o755
    assert safe_read(rootfs, "var/lib/x/file") == b"data"
    assert not [p for p in (rootfs / "var/lib/x").iterdir() if p.name != "file"]  # no temp left


def test_safe_write_replaces_existing_atomically(rootfs):
    hard = rootfs.parent / "outside-hardlink"
    os.link(rootfs / "etc/hostname", hard)  # a tenant's hard link must not be written through
    safe_write(rootfs, "etc/hostname", b"new\n")
    assert (rootfs / "etc/hostname").read_text() == "new\n"
    assert hard.read_text() == "localhost\n"


def test_symlinked_dir_is_refused(tmp):
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "hostname").write_text("host file\n")
    root = tmp / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symlink /etc"):
        safe_write(root, "etc/hostname", b"evil\n")
    with pytest.raises(UnsafePath):
        safe_read(root, "etc/hostname")
    with pytest.raises(UnsafePath):
        set_hostname(root, "box")
    assert (outside / "hostname").read_text() == "host file\n"
    assert sorted(p.name for p in outside.iterdir()) == ["hostname"]


def test_relative_symlinked_dir_deeper_is_refused(tmp):
    outside = tmp / "outside"
    (outside / "ssh").mkdir(parents=True)
    root = tmp / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/ssh").symlink_to("../../outside/ssh")
    with pytest.raises(UnsafePath, match="/etc/ssh"):
        safe_write(root, "etc/ssh/ssh_host_ed25519_key", b"k")
    assert list((outside / "ssh").iterdir()) == []


def test_symlinked_leaf_is_refused(tmp, rootfs):
    victim = tmp / "victim"
    victim.write_text("untouched\n")
    (rootfs / "etc/hostname").unlink()
    (rootfs / "etc/hostname").symlink_to(victim)
    with pytest.raises(UnsafePath, match="symlink"):
        safe_write(rootfs, "etc/hostname", b"evil\n")
    with pytest.raises(UnsafePath, match="symlink"):
        safe_read(rootfs, "etc/hostname")
    with pytest.raises(UnsafePath):
        set_hostname(rootfs, "box")
    assert victim.read_text() == "untouched\n"
    assert (rootfs / "etc/hostname").is_symlink()


def test_safe_read_missing_and_special_files(rootfs):
    assert safe_read(rootfs, "etc/nothing") is None
    assert safe_read(rootfs, "nodir/nothing") is None
    os.mkfifo(rootfs / "etc/fifo")
    with pytest.raises(UnsafePath, match="not a regular file"):
        safe_read(rootfs, "etc/fifo")  # must not block
    (rootfs / "etc/big").write_bytes(b"x" * 100)
    with pytest.raises(UnsafePath, match="too large"):
        safe_read(rootfs, "etc/big", max_bytes=10)


@pytest.mark.parametrize("bad", ["", "/", "../etc/passwd", "etc/../../x", "."])
def test_bad_relpaths(rootfs, bad):
    with pytest.raises(UnsafePath):
        safe_write(rootfs, bad, b"x")


def test_unsafe_path_is_value_error():
    assert issubclass(UnsafePath, ValueError)


# -- hostname -----------------------------------------------------------------------------
def test_set_hostname_fqdn(rootfs):
    set_hostname(rootfs, "web1.example.org")
    assert (rootfs / "etc/hostname").read_text() == "web1.example.org\n"
    hosts = (rootfs / "etc/hosts").read_text().splitlines()
    assert hosts[0] == "127.0.0.1\tlocalhost"
    assert hosts[1] == "127.0.1.1\tweb1.example.org web1"
    assert "::1\tlocalhost ip6-localhost" in hosts


def test_set_hostname_replaces_old_line(rootfs):
    (rootfs / "etc/hosts").write_text("# comment\n127.0.1.1 old.name old\n10.0.0.5 db\n")
    set_hostname(rootfs, "new")
    set_hostname(rootfs, "newer")
    text = (rootfs / "etc/hosts").read_text()
    assert text.count("127.0.1.1") == 1
    assert "127.0.1.1\tnewer\n" in text
    assert "old" not in text
    assert "127.0.0.1\tlocalhost" in text and "10.0.0.5 db" in text and "# comment" in text


def test_set_hostname_without_hosts_file(tmp):
    root = tmp / "r"
    root.mkdir()
    set_hostname(root, "solo")
    assert (root / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tsolo\n"


def test_hostname_keeps_file_mode(rootfs):
    os.chmod(rootfs / "etc/hosts", 0o600)
    set_hostname(rootfs, "box")
    assert stat.S_IMODE((rootfs / "etc/hosts").stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["", "-lead", "trail-", "a..b", "under_score", "x" * 65,
                                 "sp ace", "new\nline", "a.-b"])
def test_invalid_hostnames(rootfs, bad):
    with pytest.raises(InvalidHostname):
        set_hostname(rootfs, bad)
    assert (rootfs / "etc/hostname").read_text() == "localhost\n"


# -- ssh keys -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256",
                                  "sk-ssh-ed25519@openssh.com"])
def test_valid_ssh_keys(kind):
    key = ssh_key(kind)
    assert setup.validate_ssh_key("  " + key + "\n") == key


@pytest.mark.parametrize("bad", [
    "", "hello", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-ed25519 not-base64!",
    'command="rm -rf /" ' + "ssh-ed25519 AAAA",
])
def test_invalid_ssh_keys(bad):
    with pytest.raises(InvalidSSHKey):
        setup.validate_ssh_key(bad)


def test_ssh_key_type_must_match_blob():
    key = ssh_key("ssh-ed25519").replace("ssh-ed25519", "ssh-rsa", 1)
    with pytest.raises(InvalidSSHKey, match="does not match"):
        setup.validate_ssh_key(key)


def test_ssh_key_injection_of_second_line_refused():
    with pytest.raises(InvalidSSHKey, match="single line"):
        setup.validate_ssh_key(ssh_key() + "\n" + ssh_key())


def test_authorized_keys_written(rootfs):
    keys = [ssh_key(), ssh_key("ssh-rsa", "")]
    setup.setup_instance(rootfs, manifest(), hostname="box", ssh_keys=keys)
    ak = rootfs / "root/.ssh/authorized_keys"
    assert ak.read_text() == keys[0] + "\n" + keys[1] + "\n"
    assert stat.S_IMODE(ak.stat().st_mode) == 0o600
    assert stat.S_IMODE((rootfs / "root/.ssh").stat().st_mode) == 0o700


def test_bad_key_changes_nothing(rootfs):
    with pytest.raises(InvalidSSHKey):
        setup.setup_instance(rootfs, manifest(), hostname="box", ssh_keys=[ssh_key(), "junk"])
    assert (rootfs / "etc/hostname").read_text() == "localhost\n"
    assert not (rootfs / "root").exists()


# -- root password ------------------------------------------------------------------------
def test_shadow_root_line_updated(rootfs):
    setup.setup_instance(rootfs, manifest(), hostname="box", root_password="s3cret pass")
    lines = (rootfs / "etc/shadow").read_text().splitlines()
    fields = lines[0].split(":")
    assert fields[0] == "root" and fields[1].startswith("$6$") and len(fields) == 9
    assert int(fields[2]) > 19000 and fields[3:5] == ["0", "99999"]
    assert lines[1] == "daemon:*:19000:0:99999:7:::"
    assert stat.S_IMODE((rootfs / "etc/shadow").stat().st_mode) == 0o640
    assert "s3cret" not in (rootfs / "etc/shadow").read_text()
    if setup._crypt is not None:
        assert setup._crypt.crypt("s3cret pass", fields[1]) == fields[1]


def test_shadow_root_line_added():
    out = setup.shadow_with_root_hash("daemon:*:1:0:99999:7:::\n", "$6$abc$def", today=20000)
    assert out == "root:$6$abc$def:20000:0:99999:7:::\ndaemon:*:1:0:99999:7:::\n"


def test_password_hash_openssl_fallback(monkeypatch):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    monkeypatch.setattr(setup, "_crypt", None)
    hashed = setup.hash_password("pw")
    assert re.match(r"^\$6\$[^$]+\$[./A-Za-z0-9]{86}$", hashed)


@pytest.mark.parametrize("bad", ["", "a\nb", "a\0b"])
def test_bad_passwords(bad):
    with pytest.raises(ValueError):
        setup.hash_password(bad)


# -- machine-id ---------------------------------------------------------------------------
def test_machine_id_for_systemd(rootfs):
    (rootfs / "etc/machine-id").write_text("")
    setup.setup_instance(rootfs, manifest(init="systemd"), hostname="box")
    mid = (rootfs / "etc/machine-id").read_text()
    assert re.fullmatch(r"[0-9a-f]{32}\n", mid)
    setup.setup_instance(rootfs, manifest(init="systemd"), hostname="box")
    assert (rootfs / "etc/machine-id").read_text() != mid  # new each time


def test_no_machine_id_for_busybox(rootfs):
    setup.setup_instance(rootfs, manifest(), hostname="box")
    assert not (rootfs / "etc/machine-id").exists()


def test_host_keys_generated(rootfs):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    setup.setup_instance(rootfs, manifest(has_sshd=True, init="systemd"), hostname="h.example")
    for kind in ("ed25519", "ecdsa"):
        key = rootfs / f"etc/ssh/ssh_host_{kind}_key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()
        pub = Path(str(key) + ".pub")
        assert stat.S_IMODE(pub.stat().st_mode) == 0o644
        assert pub.read_text().strip().endswith("root@h.example")
    assert not (rootfs / "etc/ssh/ssh_host_rsa_key").exists()


# -- registry, manifest, debootstrap helpers -----------------------------------------------
def test_registry_and_names():
    assert {"minimal", "debian-11", "debian-12", "ubuntu-22.04", "ubuntu-24.04"} \
        <= set(base.BUILDERS)
    with pytest.raises(UnknownBuilder, match="minimal") as exc:
        get_builder("windows-95")
    assert isinstance(exc.value, KeyError)
    for bad in ["", "Upper", "-x", "a/b", "x" * 64, ".hidden"]:
        with pytest.raises(ValueError):
            validate_name(bad)
    assert get_builder("debian-12").init == "systemd"
    assert get_builder("minimal").stop_signal == "SIGTERM"


def test_manifest_roundtrip_ignores_unknown_keys():
    m = manifest()
    d = m.to_dict() | {"future_field": 1}
    assert Manifest.from_dict(d) == m
    with pytest.raises(ValueError):
        Manifest.from_dict({"name": "x"})


def test_progress_is_monotonic():
    packages = [f"pkg{i} 1.0" for i in range(130)]
    lines = (["I: Retrieving InRelease", "I: Checking Release signature",
              "I: Retrieving Packages", "I: Validating Packages",
              "I: Resolving dependencies of required packages...",
              "I: Checking component main on http://mirror.invalid/debian..."]
             + [f"I: {verb} {p}" for p in packages for verb in ("Retrieving", "Validating")]
             + ["I: Chosen extractor for .deb packages: dpkg-deb"]
             + [f"I: Extracting {p.split()[0]}..." for p in packages[:80]]
             + ["I: Installing core packages...", "I: Unpacking required packages...", "W: noise",
                "I: Unpacking libc6:amd64...", "I: Configuring required packages...",
                "I: Configuring libc6:amd64...", "I: Unpacking the base system...",
                "I: Unpacking openssh-server...", "I: Configuring the base system...",
                "I: Configuring ssh...", "I: Base system installed successfully."])
    tracker = DebootstrapProgress()
    steps = [step for step in map(tracker.feed, lines) if step]
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(steps) == len(lines) - 1  # only the W: line is not progress
    by_msg = dict((msg, f) for f, msg in steps)
    assert by_msg["Retrieving pkg129 1.0"] <= 0.42 < by_msg["Unpacking required packages"]
    assert by_msg["Configuring ssh"] < 1.0
    assert steps[0][1] == "Retrieving InRelease"


def test_mirror_from_env_wins(tmp):
    env = {"OPENVPS_DEBIAN_MIRROR": FAKE_MIRROR}
    assert find_mirror("debian", "bookworm", env=env, sources_dir=tmp, sources_list=tmp / "x") \
        == FAKE_MIRROR


def test_mirror_from_deb822(tmp):
    (tmp / "debian.sources").write_text(
        f"Types: deb\n# a comment\nURIs: {FAKE_MIRROR}\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {FAKE_SECURITY}\nSuites: bookworm-security\nComponents: main\n")
    kw = dict(env={}, sources_dir=tmp, sources_list=tmp / "none")
    assert find_mirror("debian", "bookworm", **kw) == FAKE_MIRROR
    assert find_mirror("debian", "bullseye", **kw) == FAKE_MIRROR  # first Debian archive
    with pytest.raises(base.BuildError, match="OPENVPS_UBUNTU_MIRROR"):
        find_mirror("ubuntu", "noble", **kw)


def test_mirror_from_sources_list(tmp):
    (tmp / "sources.list").write_text(
        f"# deb http://old.invalid/debian buster main\n"
        f"deb {FAKE_SECURITY} bookworm-security main\n"
        f"deb [arch=amd64] {FAKE_MIRROR} bookworm main\n")
    kw = dict(env={}, sources_dir=tmp / "d", sources_list=tmp / "sources.list")
    assert find_mirror("debian", "bookworm", **kw) == FAKE_MIRROR
    assert find_mirror("debian", "trixie", **kw) == FAKE_MIRROR


def test_no_mirror_is_a_clear_error(tmp):
    with pytest.raises(base.BuildError, match="OPENVPS_DEBIAN_MIRROR"):
        find_mirror("debian", "bookworm", env={}, sources_dir=tmp, sources_list=tmp / "none")
