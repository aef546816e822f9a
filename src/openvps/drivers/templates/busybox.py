"""The "minimal" template: a static busybox with busybox init, built offline in ~0.1 s."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from .base import BuildError, ProgressFn, register

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
INSTALL_HINT = "install a statically linked busybox: apt-get install busybox-static"

PT_INTERP = 3

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
SHADOW = "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
# No respawn/askfirst entries: they need a console, and the container has none.
# busybox init then only reaps; SIGTERM runs the shutdown actions and ends PID 1.
INITTAB = """\
::sysinit:/etc/init.d/rcS
::shutdown:/bin/true
"""
# runc already mounts /proc, /sys and /dev, so rcS mounts nothing.
RCS = """\
#!/bin/sh
[ -s /etc/hostname ] && hostname -F /etc/hostname
ip link set lo up 2>/dev/null || true
# Per-instance hook (network setup, user services).
[ -x /etc/rc.local ] && /etc/rc.local
exit 0
"""
PROFILE = """\
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\\u@\\h:\\w\\$ '
"""


def find_busybox() -> Path | None:
    for candidate in BUSYBOX_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def is_static_elf(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP header, i.e. needs no dynamic loader."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            raise BuildError(f"{path} is not an ELF executable; {INSTALL_HINT}")
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        header = f.read(48 if is64 else 36)
        if is64:
            phoff, = struct.unpack_from(endian + "Q", header, 16)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 38)
        else:
            phoff, = struct.unpack_from(endian + "I", header, 12)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 26)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, = struct.unpack(endian + "I", f.read(4))
            if p_type == PT_INTERP:
                return False
    return True


def busybox_version(busybox: Path) -> str:
    """'1.35' from the banner 'BusyBox v1.35.0 (Debian ...)'."""
    try:
        out = subprocess.run([str(busybox)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    m = re.search(r"BusyBox v(\d+)\.(\d+)", out)
    return f"{m.group(1)}.{m.group(2)}" if m else "unknown"


class BusyboxBuilder:
    os = "busybox"
    init = "busybox"
    stop_signal = "SIGTERM"
    has_sshd = False

    def __init__(self, name: str = "minimal", busybox: Path | None = None):
        self.name = name
        self._busybox = busybox
        self._release: str | None = None

    @property
    def busybox(self) -> Path:
        path = self._busybox or find_busybox()
        if path is None:
            raise BuildError(f"busybox not found; {INSTALL_HINT}")
        return path

    @property
    def release(self) -> str:
        if self._release is None:
            path = self._busybox or find_busybox()
            self._release = busybox_version(path) if path else "unknown"
        return self._release

    def check(self) -> None:
        busybox = self.busybox
        if not is_static_elf(busybox):
            raise BuildError(f"{busybox} is dynamically linked and would not run inside the "
                             f"container; {INSTALL_HINT}")

    def build(self, rootfs: Path, progress: ProgressFn) -> None:
        self.check()
        busybox = self.busybox
        progress(0.05, "creating directories")
        for d, mode in (("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                        ("etc/init.d", 0o755), ("etc/network", 0o755), ("root", 0o700),
                        ("tmp", 0o1777), ("dev", 0o755), ("proc", 0o555), ("sys", 0o555),
                        ("run", 0o755), ("var/log", 0o755), ("var/tmp", 0o1777), ("home", 0o755),
                        ("mnt", 0o755)):
            p = rootfs / d
            p.mkdir(parents=True, exist_ok=True)
            os.chmod(p, mode)  # mkdir's mode is cut by the umask; 1777 needs chmod anyway
        (rootfs / "var/run").symlink_to("../run")

        progress(0.2, "installing busybox")
        target = rootfs / "bin/busybox"
        shutil.copyfile(busybox, target)
        os.chmod(target, 0o755)

        progress(0.4, "linking applets")
        listing = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True)
        if listing.returncode != 0:
            raise BuildError(f"{busybox} --list-full failed: {listing.stderr.strip()}; "
                             f"{INSTALL_HINT}")
        for applet in listing.stdout.split():
            rel = applet.strip("/")
            if not rel or rel == "bin/busybox" or ".." in rel.split("/"):
                continue
            link = rootfs / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(link):
                link.symlink_to("/bin/busybox")
        init = rootfs / "sbin/init"
        if os.path.lexists(init):
            init.unlink()
        init.symlink_to("/bin/busybox")

        progress(0.8, "writing configuration")
        version = self.release
        files = {
            "etc/passwd": (PASSWD, 0o644),
            "etc/group": (GROUP, 0o644),
            "etc/shadow": (SHADOW, 0o600),
            "etc/hostname": ("localhost\n", 0o644),
            "etc/hosts": (HOSTS, 0o644),
            "etc/inittab": (INITTAB, 0o644),
            "etc/init.d/rcS": (RCS, 0o755),
            "etc/profile": (PROFILE, 0o644),
            "etc/shells": ("/bin/sh\n/bin/ash\n", 0o644),
            "etc/resolv.conf": ("", 0o644),
            "etc/network/interfaces": ("auto lo\niface lo inet loopback\n", 0o644),
            "etc/os-release": (
                'NAME="BusyBox"\nID=busybox\n'
                f'VERSION_ID="{version}"\nPRETTY_NAME="openvps minimal (BusyBox {version})"\n',
                0o644),
            "etc/openvps-template": (self.name + "\n", 0o644),
        }
        for rel, (text, mode) in files.items():
            path = rootfs / rel
            path.write_text(text)
            os.chmod(path, mode)
        progress(1.0, "minimal rootfs ready")


register(BusyboxBuilder())
