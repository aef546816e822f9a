"""On-disk template cache: build once, publish atomically, never show a half-made template.

Layout under root (may be shared by several daemons on one host):
    <name>/rootfs/            unpacked tree (lower layer of instance overlays)
    <name>/<name>.tar.zst     archive (export, other nodes)
    <name>/template.json      manifest; its presence marks a complete template
    .lock-<name>              flock: one builder/remover per template at a time
    .build-<name>-<token>/    work in progress  }  removed on failure, or later by
    .trash-<name>-<token>/    being deleted     }  cleanup_partial()
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Iterator

from .base import (BuildError, Manifest, ProgressFn, get_builder, noop_progress,
                   scaled_progress, validate_name)

log = logging.getLogger(__name__)

MANIFEST_FILE = "template.json"
PARTIAL_RE = re.compile(r"^\.(?:build|trash)-(?P<name>.+)-[0-9a-f]{8}$")
MNT_DETACH = 2
BUILD_SHARE = 0.9  # the builder gets 0..0.9 of the progress bar, packing the rest


def _token() -> str:
    return secrets.token_hex(4)


def apparent_size(path: Path) -> int:
    """Like `du -sb`: apparent sizes of all entries (dirs and links too), hard links once."""
    seen: set[tuple[int, int]] = set()
    total = os.lstat(path).st_size
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:  # each entry once, as its parent's child
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total


def _mounts_under(path: Path) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)  # deepest first


def remove_tree(path: Path) -> None:
    """rm -rf that first detaches mounts left inside (e.g. by an interrupted debootstrap),
    so it can never delete files of the host's /proc, /sys or /dev."""
    if not os.path.lexists(path):
        return
    mounts = _mounts_under(path)
    if mounts:
        libc = ctypes.CDLL(None, use_errno=True)
        for point in mounts:
            if libc.umount2(point.encode(), MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):
                    raise BuildError(f"cannot unmount {point} ({os.strerror(err)}); "
                                     f"unmount it by hand, then remove {path}")
        if _mounts_under(path):
            raise BuildError(f"mounts remain under {path}; unmount them, then remove it")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # fd-based on Linux: does not follow symlinks
    else:
        os.unlink(path)


def pack(rootfs: Path, archive: Path) -> None:
    """tar.zst of rootfs with numeric owners and xattrs; entries are ./path."""
    cmd = ["tar", "--create", "--file", str(archive), "--directory", str(rootfs),
           "--numeric-owner", "--xattrs", "--xattrs-include=*", "--one-file-system",
           "--use-compress-program=zstd -T0 -3 -q", "."]
    for tool, hint in (("tar", "apt-get install tar"), ("zstd", "apt-get install zstd")):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found, needed to pack templates: {hint}")
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"packing {archive.name} failed: {res.stderr.strip()[-2000:]}")


class TemplateCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- locking -------------------------------------------------------------------------
    def _lock_path(self, name: str) -> Path:
        return self.root / f".lock-{name}"

    @contextlib.contextmanager
    def _locked(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        fd = os.open(self._lock_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    # -- queries -------------------------------------------------------------------------
    def rootfs(self, name: str) -> Path:
        return self.root / validate_name(name) / "rootfs"

    def archive(self, name: str) -> Path:
        return self.root / validate_name(name) / f"{name}.tar.zst"

    def get(self, name: str) -> Manifest | None:
        path = self.root / validate_name(name) / MANIFEST_FILE
        try:
            return Manifest.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, OSError) as e:
            log.warning("ignoring template %s: unreadable %s: %s", name, path, e)
            return None

    def list(self) -> list[Manifest]:
        found = []
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith("."):
                continue
            try:
                manifest = self.get(entry)
            except BuildError:  # not a valid template name: not ours
                continue
            if manifest is not None:
                found.append(manifest)
        return found

    # -- build ---------------------------------------------------------------------------
    def build(self, name: str, progress: ProgressFn = noop_progress, *,
              force: bool = False) -> Manifest:
        validate_name(name)
        builder = get_builder(name)
        with self._locked(name):
            existing = self.get(name)
            if existing is not None and not force:
                progress(1.0, f"{name} already built")
                return existing
            builder.check()
            work = self.root / f".build-{name}-{_token()}"
            try:
                work.mkdir(mode=0o700)
                rootfs = work / "rootfs"
                rootfs.mkdir()
                os.chmod(rootfs, 0o755)
                progress(0.0, f"building {name}")
                builder.build(rootfs, scaled_progress(progress, 0.0, BUILD_SHARE))
                progress(BUILD_SHARE, f"packing {name}.tar.zst")
                archive = work / f"{name}.tar.zst"
                pack(rootfs, archive)
                manifest = Manifest(
                    name=name, os=builder.os, release=builder.release, init=builder.init,
                    stop_signal=builder.stop_signal, has_sshd=builder.has_sshd,
                    size_bytes=apparent_size(rootfs), archive_bytes=archive.stat().st_size,
                    created_at=datetime.datetime.now(datetime.timezone.utc)
                    .isoformat(timespec="seconds").replace("+00:00", "Z"),
                    builder=builder.name,
                )
                tmp = work / (MANIFEST_FILE + ".tmp")
                tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
                os.rename(tmp, work / MANIFEST_FILE)
                os.chmod(work, 0o755)
                self._publish(name, work)
            except BaseException:
                try:
                    remove_tree(work)
                except Exception as e:  # keep the original error; cleanup_partial retries
                    log.error("could not remove %s: %s", work, e)
                raise
            progress(1.0, f"{name} ready")
            log.info("template %s built: %d bytes, archive %d bytes", name,
                     manifest.size_bytes, manifest.archive_bytes)
            return manifest

    def add(self, name: str, fill, manifest: Manifest, progress: ProgressFn = noop_progress) -> Manifest:
        """A template made from a tree that fill(rootfs) writes (e.g. a published instance); the
        manifest's sizes and time are filled in here. Raises FileExistsError if the name is taken."""
        validate_name(name)
        with self._locked(name):
            if os.path.lexists(self.root / name):
                raise FileExistsError(name)
            work = self.root / f".build-{name}-{_token()}"
            try:
                work.mkdir(mode=0o700)
                rootfs = work / "rootfs"
                fill(rootfs)
                progress(BUILD_SHARE, f"packing {name}.tar.zst")
                archive = work / f"{name}.tar.zst"
                pack(rootfs, archive)
                manifest = dataclasses.replace(
                    manifest, name=name, size_bytes=apparent_size(rootfs), archive_bytes=archive.stat().st_size,
                    created_at=datetime.datetime.now(datetime.timezone.utc)
                    .isoformat(timespec="seconds").replace("+00:00", "Z"))
                (work / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
                os.chmod(work, 0o755)
                self._publish(name, work)
            except BaseException:
                try:
                    remove_tree(work)
                except Exception as e:
                    log.error("could not remove %s: %s", work, e)
                raise
            return manifest

    def _publish(self, name: str, work: Path) -> None:
        """Rename work -> <root>/<name>, moving an old version aside first (force)."""
        final = self.root / name
        trash = None
        if os.path.lexists(final):
            trash = self.root / f".trash-{name}-{_token()}"
            os.rename(final, trash)
        try:
            os.rename(work, final)
        except BaseException:
            if trash is not None:
                os.rename(trash, final)  # put the old one back
            raise
        if trash is not None:
            try:
                remove_tree(trash)
            except Exception as e:
                log.error("could not remove old %s: %s (cleanup_partial will retry)", trash, e)

    # -- removal -------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        """Delete a template; a no-op if it does not exist."""
        validate_name(name)
        with self._locked(name):
            final = self.root / name
            if not os.path.lexists(final):
                return
            trash = self.root / f".trash-{name}-{_token()}"
            os.rename(final, trash)  # invisible at once; deletion may take a while
            remove_tree(trash)

    def cleanup_partial(self) -> list[str]:
        """Remove .build-*/.trash-* dirs whose template lock nobody holds (left by a crash)."""
        removed = []
        for entry in sorted(os.listdir(self.root)):
            m = PARTIAL_RE.match(entry)
            if not m:
                continue
            name = m.group("name")
            try:
                validate_name(name)
            except BuildError:
                continue
            with self._locked(name, blocking=False) as acquired:
                if not acquired:  # a build or removal is running right now
                    continue
                path = self.root / entry
                if not os.path.lexists(path):
                    continue
                try:
                    remove_tree(path)
                except (OSError, BuildError) as e:
                    log.error("could not remove %s: %s", path, e)
                    continue
                removed.append(entry)
        return removed
