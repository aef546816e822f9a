"""Per-instance setup of a template-based rootfs: hostname, machine-id, ssh keys, root password.

The rootfs is an instance's merged overlay, which its tenant controls once it has run.
Every file access therefore walks the path one component at a time relative to
directory fds, never follows a symlink, and replaces files by rename (so a hard link or
a symlink planted by the tenant is replaced, not written through).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable

from .base import Manifest

try:  # deprecated since 3.11 (removed in 3.13); openssl is the fallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt
except ImportError:  # pragma: no cover - depends on the Python build
    _crypt = None

_DIR_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
MAX_READ = 16 * 1024 * 1024  # a tenant can make any file huge
HOST_KEY_TYPES = ("ed25519", "ecdsa")  # no RSA: it takes ~0.8 s to generate
SSH_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class UnsafePath(ValueError):
    """A path inside the rootfs is a symlink, or not the kind of file expected."""


class SetupError(Exception):
    """Per-instance setup failed for a reason outside the rootfs (a host tool failed)."""


class InvalidSSHKey(ValueError):
    """A string given as an authorized key is not an OpenSSH public key."""


class InvalidHostname(ValueError):
    """Not a valid host name."""


# -- safe file access ------------------------------------------------------------------------
def _parts(relpath: str) -> list[str]:
    parts = [p for p in str(relpath).split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafePath(f"bad path {relpath!r}: must name a file inside the rootfs without '..'")
    return parts


def _open_component(dir_fd: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except (NotADirectoryError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            raise e from None
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"refusing to follow symlink {shown} in the instance rootfs") from None
        raise UnsafePath(f"{shown} in the instance rootfs is not a directory") from None


def _walk(rootfs: Path, parts: list[str], *, create: bool, mode: int = 0o755,
          uid: int = 0, gid: int = 0) -> int | None:
    """O_PATH fd of the directory rootfs/parts, or None if missing and not create."""
    fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # rootfs itself is ours
    try:
        for i, name in enumerate(parts):
            shown = "/" + "/".join(parts[: i + 1])
            try:
                nxt = _open_component(fd, name, shown)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                    created = True
                except FileExistsError:  # raced with someone: open it, refusing links
                    created = False
                nxt = _open_component(fd, name, shown)
                if created:  # the umask may have cut mode; the magic link is the new dir
                    os.chmod(f"/proc/self/fd/{nxt}", mode)
                    if os.geteuid() == 0:
                        os.chown(f"/proc/self/fd/{nxt}", uid, gid)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def safe_makedirs(rootfs: Path, relpath: str, mode: int = 0o755, uid: int = 0,
                  gid: int = 0) -> None:
    """mkdir -p inside rootfs without following symlinks; the last dir gets mode/uid/gid."""
    parts = _parts(relpath)
    parent = _walk(rootfs, parts[:-1], create=True)
    assert parent is not None
    try:
        try:
            os.mkdir(parts[-1], mode, dir_fd=parent)
        except FileExistsError:
            pass
        fd = _open_component(parent, parts[-1], "/" + "/".join(parts))
        try:
            os.chmod(f"/proc/self/fd/{fd}", mode)
            if os.geteuid() == 0:
                os.chown(f"/proc/self/fd/{fd}", uid, gid)
        finally:
            os.close(fd)
    finally:
        os.close(parent)


def safe_write(rootfs: Path, relpath: str, data: bytes, mode: int = 0o644, uid: int = 0,
               gid: int = 0) -> None:
    """Atomically replace rootfs/relpath with data; missing parent dirs are made 0755."""
    parts = _parts(relpath)
    dir_fd = _walk(rootfs, parts[:-1], create=True)
    assert dir_fd is not None
    leaf, shown = parts[-1], "/" + "/".join(parts)
    try:
        try:
            st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"refusing to write through symlink {shown} in the instance rootfs")
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"cannot write {shown}: it is a directory")
        tmp = f".{leaf[:200]}.openvps-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if os.geteuid() == 0:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after chown, which clears set-id bits
            finally:
                os.close(fd)
            # No fsync: setup runs before the instance first starts, and a host crash
            # in between means the create operation is redone anyway. It keeps setup fast.
            # rename replaces whatever the name is now, even a freshly planted symlink.
            os.rename(tmp, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)


def _safe_read_stat(rootfs: Path, relpath: str,
                    max_bytes: int = MAX_READ) -> tuple[bytes, os.stat_result] | None:
    parts = _parts(relpath)
    dir_fd = _walk(rootfs, parts[:-1], create=False)
    if dir_fd is None:
        return None
    shown = "/" + "/".join(parts)
    try:
        try:
            pfd = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(pfd)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(f"refusing to read through symlink {shown} in the instance rootfs")
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device could block or act on open
                raise UnsafePath(f"{shown} in the instance rootfs is not a regular file")
            if st.st_size > max_bytes:
                raise UnsafePath(f"{shown} in the instance rootfs is too large "
                                 f"({st.st_size} bytes)")
            # Reopen the very inode we checked, through its O_PATH fd.
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        finally:
            os.close(pfd)
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UnsafePath(f"{shown} in the instance rootfs is too large")
        return data, st
    finally:
        os.close(dir_fd)


def safe_read(rootfs: Path, relpath: str, *, max_bytes: int = MAX_READ) -> bytes | None:
    """Contents of the regular file rootfs/relpath, None if it (or a parent) is missing."""
    found = _safe_read_stat(rootfs, relpath, max_bytes)
    return None if found is None else found[0]


def root_owner(rootfs: Path) -> tuple[int, int]:
    """New files belong to whoever owns the instance's /: host root for a privileged instance,
    the instance's own root (its shifted uid) for an unprivileged one."""
    st = os.stat(rootfs)
    return st.st_uid, st.st_gid


def _rewrite(rootfs: Path, relpath: str, transform, default_mode: int = 0o644) -> None:
    """Read-modify-replace a text file, keeping its owner and permissions if it exists."""
    found = _safe_read_stat(rootfs, relpath)
    if found is None:
        old, mode, (uid, gid) = "", default_mode, root_owner(rootfs)
    else:
        old = found[0].decode("utf-8", "replace")
        st = found[1]
        mode, uid, gid = stat.S_IMODE(st.st_mode) & 0o777, st.st_uid, st.st_gid
    safe_write(rootfs, relpath, transform(old).encode(), mode, uid, gid)


# -- hostname ---------------------------------------------------------------------------------
def validate_hostname(hostname: str) -> str:
    if (not isinstance(hostname, str) or not hostname or len(hostname) > 64
            or not all(_LABEL_RE.match(label) for label in hostname.split("."))):
        raise InvalidHostname(
            f"invalid hostname {hostname!r}: use dot-separated labels of letters, digits and '-' "
            "(not at a label's start or end), at most 64 characters in all")
    return hostname


def hosts_with_hostname(hosts: str, hostname: str) -> str:
    """/etc/hosts text with `127.0.0.1 localhost` ensured and the 127.0.1.1 line replaced."""
    short = hostname.split(".")[0]
    names = hostname if short == hostname else f"{hostname} {short}"
    own = f"127.0.1.1\t{names}"
    lines = [line for line in hosts.splitlines()
             if not (line.split() and line.split()[0] == "127.0.1.1")]
    loopback = next((i for i, line in enumerate(lines)
                     if line.split()[:1] == ["127.0.0.1"] and "localhost" in line.split()[1:]),
                    None)
    if loopback is None:
        lines.insert(0, "127.0.0.1\tlocalhost")
        loopback = 0
    lines.insert(loopback + 1, own)
    return "\n".join(lines) + "\n"


def set_hostname(rootfs: Path, hostname: str) -> None:
    """Write /etc/hostname and the 127.0.1.1 line of /etc/hosts (does not touch a running
    instance's kernel hostname: the runtime does that with `hostname` inside)."""
    validate_hostname(hostname)
    _rewrite(rootfs, "etc/hostname", lambda _old: hostname + "\n")
    _rewrite(rootfs, "etc/hosts", lambda old: hosts_with_hostname(old, hostname))


# -- ssh --------------------------------------------------------------------------------------
def validate_ssh_key(key: str) -> str:
    """One OpenSSH public key line `type base64 [comment]`, normalised; InvalidSSHKey if not."""
    if not isinstance(key, str):
        raise InvalidSSHKey("an SSH public key must be a string")
    line = key.strip()
    if any(c in line for c in "\r\n\0"):
        raise InvalidSSHKey("an SSH public key must be a single line")
    fields = line.split(None, 2)
    shown = (line[:40] + "...") if len(line) > 40 else line
    if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES:
        raise InvalidSSHKey(
            f"not an OpenSSH public key: {shown!r}; expected '<type> <base64> [comment]' with type "
            f"one of {', '.join(SSH_KEY_TYPES)} (options before the type are not accepted)")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSSHKey(f"SSH public key {shown!r}: the key data is not valid base64") from None
    # The blob starts with the length-prefixed key type; this catches pasted garbage.
    if len(blob) < 4:
        raise InvalidSSHKey(f"SSH public key {shown!r}: the key data is truncated")
    (n,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + n] != fields[0].encode():
        raise InvalidSSHKey(f"SSH public key {shown!r}: the key data does not match "
                            f"type {fields[0]}")
    return " ".join(fields)


def _start_host_keygen(tmpdir: str, hostname: str) -> list[tuple[str, subprocess.Popen]]:
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise SetupError("ssh-keygen not found, needed for instance host keys: "
                         "apt-get install openssh-client")
    procs = []
    for kind in HOST_KEY_TYPES:
        procs.append((kind, subprocess.Popen(
            [keygen, "-q", "-t", kind, "-N", "", "-C", f"root@{hostname}",
             "-f", os.path.join(tmpdir, f"ssh_host_{kind}_key")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    return procs


def _install_host_keys(rootfs: Path, tmpdir: str,
                       procs: list[tuple[str, subprocess.Popen]]) -> None:
    for kind, proc in procs:
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise SetupError(f"ssh-keygen -t {kind} failed: {err.decode(errors='replace').strip()}")
    for kind, _ in procs:
        base = os.path.join(tmpdir, f"ssh_host_{kind}_key")
        with open(base, "rb") as f:
            safe_write(rootfs, f"etc/ssh/ssh_host_{kind}_key", f.read(), 0o600, *root_owner(rootfs))
        with open(base + ".pub", "rb") as f:
            safe_write(rootfs, f"etc/ssh/ssh_host_{kind}_key.pub", f.read(), 0o644, *root_owner(rootfs))


def write_authorized_keys(rootfs: Path, keys: Iterable[str]) -> None:
    lines = [validate_ssh_key(k) for k in keys]
    owner = root_owner(rootfs)
    safe_makedirs(rootfs, "root/.ssh", 0o700, *owner)
    safe_write(rootfs, "root/.ssh/authorized_keys", "".join(k + "\n" for k in lines).encode(),
               0o600, *owner)


# -- root password ----------------------------------------------------------------------------
def hash_password(password: str) -> str:
    """SHA-512 crypt hash ($6$...) of password."""
    if not isinstance(password, str) or not password:
        raise ValueError("the root password must be a non-empty string")
    if any(c in password for c in "\n\r\0"):
        raise ValueError("the root password must not contain newlines or NUL characters")
    if _crypt is not None:
        hashed = _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_SHA512))
        if hashed and hashed.startswith("$6$"):
            return hashed
    if shutil.which("openssl") is None:
        raise SetupError("cannot hash the root password: no crypt module and no openssl "
                         "(apt-get install openssl)")
    res = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                         capture_output=True, text=True)  # stdin: never on a command line
    hashed = res.stdout.strip()
    if res.returncode != 0 or not hashed.startswith("$6$"):
        raise SetupError("openssl passwd -6 failed to hash the root password")
    return hashed


def shadow_with_root_hash(shadow: str, hashed: str, today: int | None = None) -> str:
    """/etc/shadow text with root's hash (and last-change day) replaced, or a root line added."""
    today = int(time.time() // 86400) if today is None else today
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root":
            fields += [""] * (9 - len(fields))
            fields[1], fields[2] = hashed, str(today)
            lines[i] = ":".join(fields)
            break
    else:
        lines.insert(0, f"root:{hashed}:{today}:0:99999:7:::")
    return "\n".join(lines) + "\n"


def set_root_password(rootfs: Path, password: str) -> None:
    hashed = hash_password(password)
    _rewrite(rootfs, "etc/shadow", lambda old: shadow_with_root_hash(old, hashed), 0o640)


# -- machine-id -------------------------------------------------------------------------------
def new_machine_id() -> str:
    return secrets.token_hex(16) + "\n"


# -- all together -----------------------------------------------------------------------------
def setup_instance(rootfs: Path, manifest: Manifest, *, hostname: str,
                   ssh_keys: Iterable[str] = (), root_password: str | None = None) -> None:
    """Make a fresh instance rootfs unique: hostname, machine-id, ssh host keys, root access.

    Everything is validated before the first write, so bad input changes nothing.
    """
    rootfs = Path(rootfs)
    validate_hostname(hostname)
    keys = [validate_ssh_key(k) for k in ssh_keys]
    hashed = hash_password(root_password) if root_password is not None else None
    if not rootfs.is_dir():
        raise SetupError(f"instance rootfs {rootfs} does not exist")

    tmpdir = procs = None
    if manifest.has_sshd:  # start key generation first; it runs while we write the rest
        tmpdir = tempfile.mkdtemp(prefix="openvps-hostkeys-")
    try:
        if tmpdir is not None:
            procs = _start_host_keygen(tmpdir, hostname)
        set_hostname(rootfs, hostname)
        if manifest.init == "systemd" or safe_read(rootfs, "etc/machine-id") is not None:
            _rewrite(rootfs, "etc/machine-id", lambda _old: new_machine_id(), 0o444)
        if keys:
            write_authorized_keys(rootfs, keys)
        if hashed is not None:
            _rewrite(rootfs, "etc/shadow", lambda old: shadow_with_root_hash(old, hashed), 0o640)
        if procs:
            _install_host_keys(rootfs, tmpdir, procs)
    finally:
        for _, proc in procs or ():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def clean_identity(rootfs: Path) -> None:
    """Remove what must be unique per instance from a tree that becomes a template (publish): ssh host
    keys and machine ids, so instances made from it get fresh ones (setup_instance writes them)."""
    rootfs = Path(rootfs)
    ssh = rootfs / "etc/ssh"
    if ssh.is_dir() and not ssh.is_symlink():
        for key in ssh.glob("ssh_host_*"):
            key.unlink()
    mid = rootfs / "etc/machine-id"
    if mid.is_file() and not mid.is_symlink():
        mid.write_text("")               # empty: systemd treats it as unset and setup_instance fills it
    dbus = rootfs / "var/lib/dbus/machine-id"
    if dbus.is_file() or dbus.is_symlink():
        dbus.unlink()
