"""Overlay layer files: copy an upper dir faithfully, fold an upper onto a full tree, shift owners.

An instance's upper dir holds its own changes over the template: new and changed files (owned by the
instance's host uid range when it is unprivileged), whiteouts (char device 0:0 = "deleted") and
opaque dirs (xattr trusted.overlay.opaque=y = "hides the lower dir's entries"). Copies keep all of it
(`cp -a` as root keeps owners, modes, xattrs including trusted.*, device nodes and hard links)."""
from __future__ import annotations

import filecmp
import fnmatch
import os
import shutil
import stat
import subprocess
from pathlib import Path

from ..domain.errors import DriverError

OPAQUE = "trusted.overlay.opaque"
OVERLAY_XATTR = "trusted.overlay."


def copy_tree(src: Path, dst: Path) -> None:
    """dst (must not exist) becomes an exact copy of src; reflinks where the filesystem has them."""
    p = subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise DriverError(f"copying {src} failed: {p.stderr.strip()[-500:]}")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _shift(uid: int, base: int, size: int, delta: int) -> int:
    """uid moved by delta when it lies in [base, base+size); others are left alone."""
    return uid + delta if base <= uid < base + size else uid


def shift_owners(root: Path, base: int, size: int, delta: int) -> None:
    """Move every owner in [base, base+size) by delta (lchown: never follows links). Used when an
    upper comes back under another uid range (restore on a new CTID)."""
    if delta == 0:
        return
    _lchown_shift(str(root), base, size, delta)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            _lchown_shift(os.path.join(dirpath, name), base, size, delta)


def _lchown_shift(path: str, base: int, size: int, delta: int) -> None:
    st = os.lstat(path)
    uid, gid = _shift(st.st_uid, base, size, delta), _shift(st.st_gid, base, size, delta)
    if (uid, gid) != (st.st_uid, st.st_gid):
        mode = st.st_mode
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(mode))     # chown clears setuid/setgid bits: put them back


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _copy_xattrs(src: str, dst: str) -> None:
    for key in os.listxattr(src, follow_symlinks=False):
        if key.startswith(OVERLAY_XATTR):
            continue
        try:
            os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass                      # e.g. a security.* attribute the target filesystem refuses


def _copy_entry(src: str, dst: str, st: os.stat_result, base: int, size: int, delta: int) -> None:
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        subprocess.run(["cp", "-a", "--reflink=auto", src, dst], check=True, capture_output=True)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(dst)
    else:                             # fifo, socket, device
        os.mknod(dst, st.st_mode, st.st_rdev)
    os.lchown(dst, _shift(st.st_uid, base, size, delta), _shift(st.st_gid, base, size, delta))
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dst)


def apply_upper(upper: Path, target: Path, *, base: int = 0, size: int = 0, delta: int = 0,
                skip: tuple[str, ...] = ()) -> None:
    """Fold an overlay upper dir onto a plain full tree (what the merged view shows), turning owners in
    [base, base+size) back by delta. Whiteouts delete, opaque dirs replace. Times of dirs are kept.
    Files whose relative path matches a glob in skip are left as the tree has them."""
    dir_times: list[tuple[str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(upper):
        rel = os.path.relpath(dirpath, upper)
        tdir = os.path.normpath(os.path.join(target, rel))
        dst_st = os.lstat(dirpath)
        if rel != ".":
            if os.path.lexists(tdir) and not os.path.isdir(tdir) or os.path.islink(tdir):
                _remove(tdir)
            if not os.path.lexists(tdir):
                os.mkdir(tdir)
            elif _is_opaque(dirpath):
                for name in os.listdir(tdir):
                    _remove(os.path.join(tdir, name))
            os.lchown(tdir, _shift(dst_st.st_uid, base, size, delta), _shift(dst_st.st_gid, base, size, delta))
            os.chmod(tdir, stat.S_IMODE(dst_st.st_mode))
            _copy_xattrs(dirpath, tdir)
        dir_times.append((tdir, dst_st))
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            src, dst = os.path.join(dirpath, name), os.path.join(tdir, name)
            if skip and any(fnmatch.fnmatchcase(os.path.normpath(os.path.join(rel, name)), g) for g in skip):
                continue
            st = os.lstat(src)
            _remove(dst)
            if not is_whiteout(st):
                _copy_entry(src, dst, st, base, size, delta)
                if not stat.S_ISDIR(st.st_mode):
                    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    for tdir, st in reversed(dir_times):
        os.utime(tdir, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _same(a: str, b: str, sa: os.stat_result, sb: os.stat_result) -> bool:
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode) or sa.st_mode != sb.st_mode \
            or (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        return sa.st_size == sb.st_size and filecmp.cmp(a, b, shallow=False)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    return True


def diff_trees(old: Path, new: Path) -> list[tuple[str, str]]:
    """(relative path, added|removed|modified) from old to new; a whole added or removed directory is one
    entry; a directory whose own attributes changed is 'modified' and its children are compared too."""
    out: list[tuple[str, str]] = []

    def walk(rel: str) -> None:
        a, b = os.path.join(old, rel), os.path.join(new, rel)
        na, nb = set(os.listdir(a)), set(os.listdir(b))
        for name in sorted(na | nb):
            r = os.path.join(rel, name) if rel else name
            pa, pb = os.path.join(a, name), os.path.join(b, name)
            if name not in nb:
                out.append((r, "removed"))
                continue
            if name not in na:
                out.append((r, "added"))
                continue
            sa, sb = os.lstat(pa), os.lstat(pb)
            both_dirs = stat.S_ISDIR(sa.st_mode) and stat.S_ISDIR(sb.st_mode)
            if not _same(pa, pb, sa, sb):
                out.append((r, "modified"))
                if not both_dirs:
                    continue
            if both_dirs:
                walk(r)
    walk("")
    return out


def _parents(src_root: Path, rel: str, dst_root: Path, size: int, delta: int) -> None:
    """Make rel's missing parent directories in dst_root like src_root's (mode, owners moved by delta)."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        sub = "/".join(parts[:i])
        d = os.path.join(dst_root, sub)
        if not os.path.lexists(d):
            st = os.lstat(os.path.join(src_root, sub))
            os.mkdir(d)
            os.lchown(d, _shift(st.st_uid, 0, size, delta), _shift(st.st_gid, 0, size, delta))
            os.chmod(d, stat.S_IMODE(st.st_mode))


def copy_into(src_root: Path, rel: str, dst_root: Path, *, size: int = 0, delta: int = 0) -> None:
    """Copy src_root/rel (a whole subtree) to dst_root/rel, making missing parents like src_root's, owners
    in [0, size) moved up by delta (a template's ids into an instance's range)."""
    _parents(src_root, rel, dst_root, size, delta)
    src, dst = os.path.join(src_root, rel), os.path.join(dst_root, rel)
    _remove(dst)
    st = os.lstat(src)
    _copy_entry(src, dst, st, 0, size, delta)
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(src):
            for name in dirnames + filenames:
                s = os.path.join(dirpath, name)
                _copy_entry(s, os.path.join(dst, os.path.relpath(s, src)), os.lstat(s), 0, size, delta)


def whiteout(dst_root: Path, rel: str, src_root: Path, *, size: int = 0, delta: int = 0) -> None:
    """Hide rel in an overlay (a char device 0:0 in the upper), parents made like src_root's."""
    _parents(src_root, rel, dst_root, size, delta)
    dst = os.path.join(dst_root, rel)
    _remove(dst)
    os.mknod(dst, stat.S_IFCHR | 0o000, 0)
    os.lchown(dst, _shift(0, 0, size, delta), _shift(0, 0, size, delta))
