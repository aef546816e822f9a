"""Moving templates between nodes: `template export NAME [--base BASE] --to FILE`, `template import FILE`.

The tree is made into a reproducible tar (sorted names, numeric owners, xattrs, no atime/ctime), so the
same tree gives the same bytes on every node. With a base the export holds only a binary delta of the
tar against the base's tar (`zstd --patch-from`): the receiving node rebuilds the base tar from its own
copy of the base (its sha256 must match), applies the delta and checks the result's sha256 before it
unpacks anything. The export file is a plain tar of export.json and payload.zst."""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import tarfile
from pathlib import Path

from ..domain.errors import Conflict, InvalidArgument, OpenVPSError
from ..drivers.templates import base as tbase
from ..drivers.templates.cache import remove_tree
from .backups import sha256_file
from .images import template_manifest
from .node import Node
from .ops import Operation, Progress

FORMAT = 1
WINDOW = "--long=30"      # a window as large as the base tar (up to 1 GiB): the delta finds matches anywhere


def repro_tar(rootfs: Path, out: Path) -> str:
    """A tar of rootfs that is the same bytes for the same tree; returns its sha256."""
    cmd = ["tar", "--create", "--file", str(out), "--directory", str(rootfs), "--sort=name", "--format=posix",
           "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
           "--numeric-owner", "--xattrs", "--xattrs-include=*", "--one-file-system", "."]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        raise OpenVPSError(f"tar of {rootfs} failed: {p.stderr.strip()[-500:]}")
    return sha256_file(out)


def _zstd(args: list[str]) -> None:
    p = subprocess.run(["zstd", "-q", "-f", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        raise OpenVPSError(f"zstd failed: {p.stderr.strip()[-500:]}")


class TransferService:
    def __init__(self, node: Node):
        self.node = node

    def _get(self, name: str) -> tbase.Manifest:
        return template_manifest(self.node, name, field="name")

    def _scratch(self) -> Path:
        d = self.node.config.home_path / f".transfer-{secrets.token_hex(4)}"
        d.mkdir(mode=0o700)
        return d

    # ------------------------------------------------------------------ export
    def export(self, name: str, *, to: str, base: str | None = None) -> dict:
        m = self._get(name)
        b = self._get(base) if base else None
        out = Path(to) if isinstance(to, str) and to else None
        if out is None or not out.is_absolute() or not out.parent.is_dir() or out.is_dir():
            raise InvalidArgument(f"--to {to!r}: a file path (absolute) in an existing directory", field="to")
        op = Operation("template.export", name, {"base": base, "to": str(out)}, lock=f"template:{name}")
        return self.node.runner.submit(op, lambda o, p: self._do_export(m, b, out, p))

    def _do_export(self, m: tbase.Manifest, b: tbase.Manifest | None, out: Path, p: Progress) -> dict:
        work = self._scratch()
        try:
            p(0.1, f"tar of {m.name}")
            digest = repro_tar(self.node.templates.rootfs(m.name), work / "tree.tar")
            meta = {"format": FORMAT, "manifest": m.to_dict(), "tree_sha256": digest,
                    "tree_bytes": (work / "tree.tar").stat().st_size, "base": None}
            if b is not None:
                p(0.4, f"tar of the base {b.name}")
                base_digest = repro_tar(self.node.templates.rootfs(b.name), work / "base.tar")
                meta["base"] = {"name": b.name, "revision": b.revision, "tar_sha256": base_digest}
                p(0.6, "delta (zstd --patch-from)")
                _zstd(["-9", "-T0", WINDOW, f"--patch-from={work / 'base.tar'}", str(work / "tree.tar"),
                       "-o", str(work / "payload.zst")])
            else:
                p(0.6, "compressing")
                _zstd(["-9", "-T0", WINDOW, str(work / "tree.tar"), "-o", str(work / "payload.zst")])
            (work / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
            partial = out.with_name(f".{out.name}.partial")
            with tarfile.open(partial, "w") as t:
                t.add(work / "export.json", "export.json")
                t.add(work / "payload.zst", "payload.zst")
            os.rename(partial, out)
            size = out.stat().st_size
        finally:
            remove_tree(work)
        return {"export": {"file": str(out), "bytes": size, "tree_bytes": meta["tree_bytes"],
                           "base": meta["base"], "tree_sha256": digest}}

    # ------------------------------------------------------------------ import
    def import_(self, file: str) -> dict:
        path = Path(file) if isinstance(file, str) and file else None
        if path is None or not path.is_absolute() or not path.is_file():
            raise InvalidArgument(f"{file!r}: no such file (give an absolute path on the node)", field="file")
        meta = self._read_meta(path)
        name = meta["manifest"]["name"]
        if self.node.templates.get(name) is not None:
            raise Conflict(f"template {name!r} exists on this node", template=name)
        if meta["base"]:
            self._get(meta["base"]["name"])
        op = Operation("template.import", name, {"file": str(path)}, lock=f"template:{name}")
        return self.node.runner.submit(op, lambda o, p: self._do_import(path, meta, p))

    @staticmethod
    def _read_meta(path: Path) -> dict:
        try:
            with tarfile.open(path, "r:") as t:
                meta = json.load(t.extractfile("export.json"))
            tbase.validate_name(meta["manifest"]["name"])
            if meta.get("format") != FORMAT:
                raise ValueError
            return meta
        except (tarfile.TarError, KeyError, ValueError, TypeError, AttributeError, tbase.BuildError):
            raise InvalidArgument(f"{path} is not an openvps template export", file=str(path)) from None

    def _do_import(self, path: Path, meta: dict, p: Progress) -> dict:
        work = self._scratch()
        try:
            with tarfile.open(path, "r:") as t:
                member = t.getmember("payload.zst")
                if not member.isfile():
                    raise InvalidArgument(f"{path} is not an openvps template export")
                with t.extractfile(member) as src, open(work / "payload.zst", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            base = meta["base"]
            if base:
                p(0.2, f"tar of the base {base['name']}")
                got = repro_tar(self.node.templates.rootfs(base["name"]), work / "base.tar")
                if got != base["tar_sha256"]:
                    raise Conflict(f"this node's template {base['name']} is not the base the export was made "
                                   "against (its content differs); export without --base", template=base["name"])
                p(0.4, "applying the delta")
                _zstd(["-d", WINDOW, f"--patch-from={work / 'base.tar'}", str(work / "payload.zst"),
                       "-o", str(work / "tree.tar")])
            else:
                _zstd(["-d", WINDOW, str(work / "payload.zst"), "-o", str(work / "tree.tar")])
            if sha256_file(work / "tree.tar") != meta["tree_sha256"]:
                raise InvalidArgument("the rebuilt tree's content hash does not match the export's: damaged file",
                                      file=str(path))

            def fill(rootfs: Path) -> None:
                rootfs.mkdir()
                p(0.7, "unpacking")
                r = subprocess.run(["tar", "--extract", "--file", str(work / "tree.tar"), "--directory", str(rootfs),
                                    "--numeric-owner", "--xattrs", "--xattrs-include=*", "--same-permissions"],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True)
                if r.returncode != 0:
                    raise OpenVPSError(f"unpacking failed: {r.stderr.strip()[-500:]}")
                if repro_tar(rootfs, work / "check.tar") != meta["tree_sha256"]:
                    raise OpenVPSError("the unpacked tree differs from the exported one")

            m = tbase.Manifest.from_dict(meta["manifest"])
            try:
                m = self.node.templates.add(m.name, fill, dataclasses.replace(m), p)
            except FileExistsError:
                raise Conflict(f"template {m.name!r} exists on this node") from None
        finally:
            remove_tree(work)
        from .templates import TemplateService
        return {"template": TemplateService(self.node).view(m)}
