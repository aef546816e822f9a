"""Debian and Ubuntu templates built with debootstrap, cleaned for use as system containers.

The mirror is never hard-coded: OPENVPS_DEBIAN_MIRROR / OPENVPS_UBUNTU_MIRROR win, else
(Debian only) the host's own apt sources are read at build time.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from .base import BuildError, ProgressFn, register

DEBOOTSTRAP = "debootstrap"
SCRIPTS_DIR = Path("/usr/share/debootstrap/scripts")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
KEYRINGS = {
    "debian": (Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
               "apt-get install debian-archive-keyring"),
    "ubuntu": (Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
               "apt-get install ubuntu-keyring"),
}
# Every Ubuntu suite uses the same debootstrap script; older debootstraps lack newer names.
FALLBACK_SCRIPT = {"debian": "sid", "ubuntu": "gutsy"}

BASE_PACKAGES = ("systemd-sysv", "openssh-server", "iproute2", "ifupdown", "procps")

# Masked (-> /dev/null) because a container must never run them. Under the runc config
# openvps uses, their own conditions skip them already (a Debian 12 boot reaches "running"
# with no failed unit either way); masking keeps it so if an instance is ever given more
# capabilities or a writable /sys: then udev would act on the host's devices and the
# kernel-* mounts would expose the host's debugfs/configfs/tracefs.
#  getty@tty1..6: containers have no virtual terminals. console-getty is NOT masked: it
#  starts only when the runtime gives the container a console (terminal=true).
MASKED_UNITS = (
    "getty@tty1.service", "getty@tty2.service", "getty@tty3.service",
    "getty@tty4.service", "getty@tty5.service", "getty@tty6.service",
    "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "systemd-modules-load.service",
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service",
)

INTERFACES = """\
# Interfaces are added by openvps in /etc/network/interfaces.d/.
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
"""
HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n" \
        "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
# Only the key types openvps generates per instance (see setup.py); without this sshd
# also looks for (and complains about) an RSA key.
SSHD_HOSTKEYS = """\
# openvps: per-instance host keys are written at instance creation.
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
"""
# Safety net for a rootfs started without per-instance setup: sshd refuses to start
# without a host key, so make one (ed25519 only: fast).
_KEY = "/etc/ssh/ssh_host_ed25519_key"
SSH_KEYGEN_DROPIN = f"""\
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s {_KEY} || /usr/bin/ssh-keygen -q -t ed25519 -N "" -f {_KEY}'
ExecStartPre=/usr/sbin/sshd -t
"""

# Debootstrap's stage lines -> (start, end) of the builder's 0..1, from a measured bookworm
# build (~50 s): resolving ~20%, downloading ~20%, extracting and unpacking most of the rest.
STAGES = (
    ("Retrieving InRelease", 0.0, 0.01), ("Retrieving Release", 0.0, 0.01),
    ("Checking Release signature", 0.01, 0.02), ("Retrieving Packages", 0.02, 0.03),
    ("Validating Packages", 0.02, 0.03),
    ("Resolving dependencies", 0.03, 0.20),
    ("Checking component", 0.20, 0.42),  # followed by "Retrieving/Validating <pkg>" lines
    ("Chosen extractor", 0.42, 0.50),  # followed by "Extracting <pkg>" lines
    ("Installing core packages", 0.50, 0.54),
    ("Unpacking required packages", 0.54, 0.66),
    ("Configuring required packages", 0.66, 0.72),
    ("Unpacking the base system", 0.72, 0.92),
    ("Configuring the base system", 0.92, 0.99),
    ("Base system installed", 1.0, 1.0),
)


class DebootstrapProgress:
    """Turns debootstrap's "I: ..." lines into a monotonic fraction.

    Stage lines jump to their stage; the per-package lines in between (package counts
    are not known up front) each move a fixed share of the way to the stage's end.
    """

    STEP = 0.025

    def __init__(self) -> None:
        self.fraction = 0.0
        self.end = 0.0

    def feed(self, line: str) -> tuple[float, str] | None:
        line = line.strip()
        if not line.startswith("I: "):
            return None
        message = line[3:].rstrip(".")
        for prefix, start, end in STAGES:
            if message.startswith(prefix) and (start >= self.fraction or end > self.end):
                self.fraction, self.end = max(self.fraction, start), max(self.end, end)
                return self.fraction, message
        self.fraction += (self.end - self.fraction) * self.STEP
        return self.fraction, message


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Paragraphs of a deb822 .sources file as {lower-case field: value} (comments dropped)."""
    entries: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                entries.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t" and key:
            current[key] += " " + raw.strip()
            continue
        if ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        entries.append(current)
    return entries


def host_apt_sources(sources_dir: Path = APT_SOURCES_DIR,
                     sources_list: Path = APT_SOURCES_LIST) -> list[tuple[str, list[str], str]]:
    """(uri, suites, signed-by) of every enabled `deb` source of the host, in apt's order."""
    found: list[tuple[str, list[str], str]] = []
    files = sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for entry in parse_deb822(text):
            if "deb" not in entry.get("types", "").split():
                continue
            if entry.get("enabled", "yes").lower() == "no":
                continue
            for uri in entry.get("uris", "").split():
                found.append((uri, entry.get("suites", "").split(), entry.get("signed-by", "")))
    lists = [sources_list] if sources_list.is_file() else []
    if sources_dir.is_dir():
        lists += sorted(sources_dir.glob("*.list"))
    for path in lists:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                found.append((m.group(1), [m.group(2)], ""))
    return found


def _is_os_archive(os_name: str, uri: str, suites: list[str], signed_by: str) -> bool:
    """A source of the main archive of os_name (not its security archive)."""
    if all(s.endswith("-security") or "/updates" in s for s in suites):
        return False
    hint = f"{uri} {signed_by}".lower()
    return os_name in hint


def find_mirror(os_name: str, suite: str, *, env: dict[str, str] | None = None,
                sources_dir: Path = APT_SOURCES_DIR,
                sources_list: Path = APT_SOURCES_LIST) -> str:
    env = os.environ if env is None else env
    var = f"OPENVPS_{os_name.upper()}_MIRROR"
    if env.get(var):
        return env[var].strip()
    if os_name != "debian":
        raise BuildError(f"no {os_name} mirror configured: set {var} to the URL of a {os_name} "
                         "archive mirror (for example the one your hosts already use)")
    sources = host_apt_sources(sources_dir, sources_list)
    for uri, suites, signed_by in sources:  # an entry for this very suite first
        if suite in suites and uri.startswith(("http://", "https://")):
            return uri
    for uri, suites, signed_by in sources:
        if (uri.startswith(("http://", "https://"))
                and _is_os_archive(os_name, uri, suites, signed_by)):
            return uri
    raise BuildError(f"no Debian mirror found in the host's apt sources ({sources_dir}/*.sources, "
                     f"{sources_list}); set {var} to a Debian archive URL")


def find_security_mirror(suite: str, sources_dir: Path = APT_SOURCES_DIR,
                         sources_list: Path = APT_SOURCES_LIST) -> str | None:
    """The host's Debian security archive URI, to give the template security updates."""
    for uri, suites, _ in host_apt_sources(sources_dir, sources_list):
        if any(s.endswith("-security") for s in suites) and uri.startswith(("http://", "https://")):
            return uri
    return None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    if path.is_symlink():  # e.g. a dangling link left by a package
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _empty_dir(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class DebootstrapBuilder:
    init = "systemd"
    stop_signal = "SIGRTMIN+3"
    has_sshd = True

    def __init__(self, name: str, os_name: str, release: str, suite: str,
                 packages: tuple[str, ...] = BASE_PACKAGES,
                 components: tuple[str, ...] = ("main",)):
        self.name = name
        self.os = os_name
        self.release = release
        self.suite = suite
        self.packages = packages
        self.components = components

    # -- host checks ---------------------------------------------------------------------
    def script(self) -> Path:
        own = SCRIPTS_DIR / self.suite
        return own if own.exists() else SCRIPTS_DIR / FALLBACK_SCRIPT[self.os]

    def check(self) -> None:
        if os.geteuid() != 0:
            raise BuildError(f"building {self.name} runs debootstrap, which needs root")
        if shutil.which(DEBOOTSTRAP) is None:
            raise BuildError("debootstrap not found: apt-get install debootstrap")
        if not self.script().exists():
            raise BuildError(f"this debootstrap knows no script for {self.suite}: "
                             "upgrade debootstrap (apt-get install debootstrap)")
        keyring, hint = KEYRINGS[self.os]
        if not keyring.exists():
            raise BuildError(f"{keyring} is missing, needed to verify {self.os} packages: {hint}")
        self.mirror()  # raises with the variable to set

    def mirror(self) -> str:
        return find_mirror(self.os, self.suite)

    # -- build ---------------------------------------------------------------------------
    def command(self, rootfs: Path, mirror: str) -> list[str]:
        keyring, _ = KEYRINGS[self.os]
        return [DEBOOTSTRAP, "--variant=minbase", f"--include={','.join(self.packages)}",
                f"--components={','.join(self.components)}", f"--keyring={keyring}",
                self.suite, str(rootfs), mirror, str(self.script())]

    def build(self, rootfs: Path, progress: ProgressFn) -> None:
        self.check()
        mirror = self.mirror()
        progress(0.0, f"debootstrap {self.suite}")
        self._debootstrap(rootfs, mirror, progress)
        progress(0.96, "cleaning up for containers")
        self.clean(rootfs)
        self.containerize(rootfs, mirror)
        progress(1.0, f"{self.name} rootfs ready")

    def _debootstrap(self, rootfs: Path, mirror: str, progress: ProgressFn) -> None:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LC_ALL": "C", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive",
               "HOME": "/root"}
        for var in ("http_proxy", "https_proxy", "no_proxy", "TMPDIR"):
            if var in os.environ:
                env[var] = os.environ[var]
        tracker = DebootstrapProgress()
        tail: collections.deque[str] = collections.deque(maxlen=30)
        # Own session: a Ctrl-C in our terminal must not hit debootstrap half-way through a
        # chroot; we stop it ourselves, then wait until it has unmounted what it mounted.
        proc = subprocess.Popen(self.command(rootfs, mirror), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=env, start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                step = tracker.feed(line)
                if step:
                    progress(step[0] * 0.95, step[1])
            rc = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        if rc != 0:
            log = rootfs / "debootstrap/debootstrap.log"
            detail = "\n".join(tail)
            if log.is_file():
                detail += "\n--- debootstrap.log (end) ---\n" + "\n".join(
                    log.read_text(errors="replace").splitlines()[-20:])
            raise BuildError(f"debootstrap {self.suite} from {mirror} failed (exit {rc}); check "
                             f"that the mirror is reachable and carries {self.suite}:\n{detail}")

    def clean(self, rootfs: Path) -> None:
        """Remove everything that must be unique per instance or is only download cache."""
        for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        _write(rootfs / "etc/machine-id", "", 0o444)  # empty: systemd treats it as unset
        dbus_id = rootfs / "var/lib/dbus/machine-id"
        if dbus_id.exists() or dbus_id.is_symlink():
            dbus_id.unlink()
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        for name in ("pkgcache.bin", "srcpkgcache.bin"):
            p = rootfs / "var/cache/apt" / name
            if p.exists():
                p.unlink()
        lists = rootfs / "var/lib/apt/lists"
        _empty_dir(lists)
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        _write(rootfs / "etc/hostname", "localhost\n")
        _write(rootfs / "etc/hosts", HOSTS)
        # debootstrap copies the host's resolver config; it means nothing in an instance.
        _write(rootfs / "etc/resolv.conf", "")

    def containerize(self, rootfs: Path, mirror: str) -> None:
        _write(rootfs / "etc/network/interfaces", INTERFACES)
        (rootfs / "etc/network/interfaces.d").mkdir(parents=True, exist_ok=True)
        units = rootfs / "etc/systemd/system"
        units.mkdir(parents=True, exist_ok=True)
        for unit in MASKED_UNITS:
            link = units / unit
            if link.exists() or link.is_symlink():
                link.unlink()
            link.symlink_to("/dev/null")
        # The enablement link of a masked unit only adds "unit is masked" noise at boot.
        for link in (units / "getty.target.wants").glob("getty@tty*.service"):
            link.unlink()
        if (rootfs / "usr/sbin/sshd").exists():
            _write(rootfs / "etc/ssh/sshd_config.d/openvps-hostkeys.conf", SSHD_HOSTKEYS)
            _write(units / "ssh.service.d/openvps-hostkey.conf", SSH_KEYGEN_DROPIN)
        _write(rootfs / "etc/apt/sources.list", self.apt_sources(mirror))
        _write(rootfs / "etc/openvps-template", self.name + "\n")

    def apt_sources(self, mirror: str) -> str:
        comps = " ".join(self.components)
        lines = [f"deb {mirror} {self.suite} {comps}", f"deb {mirror} {self.suite}-updates {comps}"]
        if self.os == "ubuntu":
            lines.append(f"deb {mirror} {self.suite}-security {comps}")
        elif not os.environ.get("OPENVPS_DEBIAN_MIRROR"):
            security = find_security_mirror(self.suite)
            if security:
                lines.append(f"deb {security} {self.suite}-security {comps}")
        return "\n".join(lines) + "\n"


def _stop(proc: subprocess.Popen) -> None:
    """Stop debootstrap gently (its exit trap unmounts /proc etc. in the target), then hard."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


for _name, _os, _release, _suite, _components in (
    ("debian-11", "debian", "11", "bullseye", ("main",)),
    ("debian-12", "debian", "12", "bookworm", ("main",)),
    # ifupdown lives in universe on Ubuntu.
    ("ubuntu-22.04", "ubuntu", "22.04", "jammy", ("main", "universe")),
    ("ubuntu-24.04", "ubuntu", "24.04", "noble", ("main", "universe")),
):
    register(DebootstrapBuilder(_name, _os, _release, _suite, components=_components))
