"""Backups: one tar+zstd archive per instance (backup.json + the instance's own layer) with a sha256 file
beside it, and restore as a new instance (vzdump/pct restore).

Modes (vzdump's): stop (stopped for the backup, started again if it ran), suspend (frozen for the
whole archive), snapshot (frozen only while its layer is copied on the node, then archived from the
copy). The layer keeps the owners it has on disk (the instance's host uid range); backup.json records
that range and restore moves the owners to the new instance's range."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from ..domain.errors import Forbidden, InvalidArgument, NotFound, OpenVPSError
from ..domain.instance import State, validate_ctid, validate_name
from ..drivers import layers
from ..drivers.templates.cache import remove_tree
from .images import idmap_of, still
from .instances import InstanceService
from .node import Node
from .ops import Operation, Progress, Reverter
from .users import ROOT, Actor
from .views import instance_view

MODES = ("stop", "suspend", "snapshot")
FORMAT = 1
META = "backup.json"
TAR_OPTS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--sparse"]
CHUNK = 1 << 20


def _stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_archive(out: Path, parts: list[tuple[Path, str]], level: int = 3) -> str:
    """tar of (dir, entry) pairs piped through zstd into out; returns its sha256 (hashed as written)."""
    cmd = ["tar", "--create", "--file", "-", *TAR_OPTS]
    for d, entry in parts:
        cmd += ["--directory", str(d), entry]
    h = hashlib.sha256()
    tar = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    zstd = subprocess.Popen(["zstd", "-T0", f"-{level}", "-q", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    tar.stdout.close()
    try:
        with open(out, "wb") as f:
            while chunk := zstd.stdout.read(CHUNK):
                h.update(chunk)
                f.write(chunk)
    finally:
        zstd.stdout.close()
        zrc, trc = zstd.wait(), tar.wait()
    if trc != 0 or zrc != 0:
        raise OpenVPSError(f"writing the archive failed: {tar.stderr.read().decode(errors='replace')[-500:]}"
                           f"{zstd.stderr.read().decode(errors='replace')[-300:]}")
    return h.hexdigest()


def read_meta(archive: Path) -> dict:
    p = subprocess.run(["tar", "--extract", "--to-stdout", "--occurrence=1", "--use-compress-program=zstd -d -q",
                        "--file", str(archive), META], stdin=subprocess.DEVNULL, capture_output=True)
    try:
        meta = json.loads(p.stdout) if p.returncode == 0 else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("instance"), dict):
        raise InvalidArgument(f"{archive} is not an openvps backup (no readable {META} inside)", archive=str(archive))
    return meta


class BackupService:
    def __init__(self, node: Node):
        self.node = node
        self.store = node.store
        self.instances = InstanceService(node)

    # ------------------------------------------------------------------ backup
    def backup(self, ident, *, mode: str = "snapshot", to: str, actor: Actor | None = None) -> dict:
        actor = actor or ROOT
        if not actor.admin:      # archives are written to a directory of the node: the operator's
            raise Forbidden("backups write to the node's directories: admins only")
        row = self.instances._row(ident, actor)
        if mode not in MODES:
            raise InvalidArgument(f"mode: one of {', '.join(MODES)}", field="mode")
        target = Path(to) if isinstance(to, str) and to else None
        if target is None or not target.is_absolute() or not target.is_dir():
            raise InvalidArgument(f"--to {to!r}: give an existing directory (absolute path on the node)", field="to")
        if row["state"] not in (State.STOPPED, State.RUNNING, State.SUSPENDED):
            raise InvalidArgument(f"cannot back up instance {row['name']}: it is {row['state']}")
        op = Operation("instance.backup", row["name"], {"ctid": row["ctid"], "mode": mode, "to": str(target)},
                       lock=f"instance:{row['ctid']}", owner=row.get("owner") or "admin")
        return self.node.runner.submit(op, lambda o, p: self._do_backup(o.args["ctid"], mode, target, p))

    def _meta(self, row: dict) -> dict:
        from .volumes import VolumeService
        manifest = self.node.templates.get(row["template"])
        mounts = [{k: m[k] for k in ("kind", "source", "target", "readonly")}
                  for m in VolumeService(self.node).mounts(row["ctid"])]
        inst = {k: row[k] for k in ("ctid", "name", "template", "hostname", "init", "stop_signal", "limits",
                                    "privileged", "uid_base", "owner", "description", "tags")}
        return {"format": FORMAT, "created_at": _stamp(), "instance": inst,
                "template_revision": manifest.revision if manifest else None,
                "idmap_size": self.node.config.idmap_size, "mounts": mounts}

    def _do_backup(self, ctid: int, mode: str, target: Path, p: Progress) -> dict:
        row = self.store.get_instance(ctid)
        name = f"openvps-backup-{ctid}-{row['name']}-{_stamp()}.tar.zst"
        final, partial = target / name, target / f".{name}.partial"
        staging = self.node.config.home_path / f".backup-{ctid}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        was = State(row["state"])
        try:
            meta = self._meta(row)
            (staging / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
            vols = [m["source"] for m in meta["mounts"] if m["kind"] == "volume"]
            parts = [(staging, META)] + ([(staging, "volumes")] if vols else [])
            if mode == "stop" and was != State.STOPPED:
                p(0.1, "stopping")
                self.instances._stop(ctid, self.node.config.stop_timeout, False, p)
                row = self.store.get_instance(ctid)
            try:
                if mode == "snapshot":
                    with still(self.node, row) as upper:
                        p(0.2, "copying the layer and volumes (frozen)")
                        layers.copy_tree(upper, staging / "upper")
                        self._stage_volumes(staging, vols, copy=True)
                    p(0.4, "archiving the copy")
                    digest = write_archive(partial, parts + [(staging, "upper")])
                else:
                    with still(self.node, row) as upper:
                        p(0.2, "archiving" + (" (frozen)" if row["state"] == State.RUNNING else ""))
                        self._stage_volumes(staging, vols, copy=False)
                        digest = write_archive(partial, parts + [(upper.parent, upper.name)])
            finally:
                if mode == "stop" and was in (State.RUNNING, State.SUSPENDED):
                    p(0.9, "starting again")
                    self.instances._start(ctid)
            os.rename(partial, final)
            (target / f"{name}.sha256").write_text(f"{digest}  {name}\n")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            remove_tree(staging)
        size = final.stat().st_size
        self.node.event("instance.backup", self.store.get_instance(ctid), archive=str(final), mode=mode)
        return {"backup": {"archive": str(final), "sha256": digest, "size_bytes": size, "mode": mode}}

    def _stage_volumes(self, staging: Path, names: list[str], copy: bool) -> None:
        """staging/volumes/NAME for each volume: a copy (snapshot mode) or a bind mount of it (read in place
        while the instance is frozen or stopped; remove_tree(staging) detaches it before removing)."""
        from .volumes import VolumeService
        if not names:
            return
        (staging / "volumes").mkdir()
        for name in names:
            src = VolumeService(self.node).path(name)
            if copy:
                layers.copy_tree(src, staging / "volumes" / name)
                continue
            (staging / "volumes" / name).mkdir()
            p = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(staging / "volumes" / name)],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if p.returncode != 0:
                raise OpenVPSError(f"could not reach volume {name}: {p.stderr.strip()}")

    # ------------------------------------------------------------------ restore
    def restore(self, archive: str, *, ctid: int | None = None, name: str | None = None,
                actor: Actor | None = None) -> dict:
        actor = actor or ROOT
        if not actor.admin:
            raise Forbidden("restore reads archives from the node's directories: admins only")
        path = Path(archive) if isinstance(archive, str) and archive else None
        if path is None or not path.is_absolute() or not path.is_file():
            raise InvalidArgument(f"archive {archive!r}: no such file (give an absolute path on the node)",
                                  field="archive")
        sums = path.with_name(path.name + ".sha256")
        if not sums.is_file():
            raise InvalidArgument(f"{sums} is missing: the checksum file is written beside every backup",
                                  field="archive")
        if ctid is not None:
            validate_ctid(ctid)
        meta = read_meta(path)
        inst = meta["instance"]
        name = validate_name(name or inst["name"])
        if self.store.find_instance(name) is not None:
            raise InvalidArgument(f"an instance named {name!r} exists; restore with --name NEW", field="name")
        if self.node.templates.get(inst["template"]) is None:
            raise NotFound(f"the backup needs template {inst['template']!r}, which this node lacks; build or "
                           "import it first", template=inst["template"])
        op = Operation("instance.restore", name, {"archive": str(path), "ctid": ctid}, lock=f"restore:{path}")
        return self.node.runner.submit(op, lambda o, p: self._do_restore(path, sums, meta, ctid, name, p))

    def _do_restore(self, path: Path, sums: Path, meta: dict, ctid: int | None, name: str, p: Progress) -> dict:
        p(0.05, "checking the checksum")
        want = sums.read_text().split()[0] if sums.read_text().split() else ""
        if sha256_file(path) != want:
            raise InvalidArgument(f"checksum mismatch: {path.name} is not the archive {sums.name} describes "
                                  "(damaged or changed); nothing was restored", archive=str(path))
        inst = meta["instance"]
        owner = inst.get("owner") or "admin"
        if owner != "admin" and self.store.find_user(owner) is None:
            owner = "admin"
        p(0.15, "creating the instance")
        from .volumes import VolumeService
        vols = VolumeService(self.node)
        renamed: dict[str, str] = {}        # a volume whose name is taken here comes back as NAME-restored[N]
        for m in meta.get("mounts") or []:
            if m["kind"] == "volume":
                new, i = m["source"], 1
                while vols.repo.find_volume(new) is not None or new in renamed.values():
                    new = f"{m['source'][:50]}-restored{i if i > 1 else ''}"
                    i += 1
                renamed[m["source"]] = new
        ro = lambda m: ":ro" if m["readonly"] else ""   # noqa: E731
        volumes = [f"{renamed[m['source']]}:{m['target']}{ro(m)}" for m in meta.get("mounts") or []
                   if m["kind"] == "volume"]
        binds = [f"{m['source']}:{m['target']}{ro(m)}" for m in meta.get("mounts") or []
                 if m["kind"] == "bind" and os.path.isdir(m["source"]) and owner == "admin"]  # node dirs: where they exist
        try:
            op = self.instances.create(name=name, template=inst["template"], ctid=ctid, hostname=inst["hostname"],
                                       volumes=volumes, mounts=binds,
                                       limits=inst["limits"], privileged=bool(inst["privileged"]),
                                       tags=inst.get("tags") or {}, description=inst.get("description") or "",
                                       actor=Actor(owner, owner == "admin"))
        except Exception:
            for new in renamed.values():
                self._drop_volume(new)
            raise
        done = self.node.runner.wait(op["id"], timeout=3600)
        if done["status"] != "success":
            for new in renamed.values():
                self._drop_volume(new)
            from ..domain.errors import from_dict
            raise from_dict(done.get("error") or {"message": "creating the instance failed"})
        new_ctid = done["result"]["instance"]["ctid"]
        with self.node.runner.lock(f"instance:{new_ctid}"), Reverter() as undo:
            for new in renamed.values():      # undone last, once the instance no longer holds them
                undo.add(f"delete volume {new}", lambda v=new: self._drop_volume(v))
            undo.add("destroy the half-restored instance", lambda: self._forget(new_ctid))
            row = self.store.get_instance(new_ctid)
            bundle = self.node.bundle(new_ctid)
            upper = self.node.storage.open_layer(bundle)
            try:
                p(0.3, "unpacking")
                self._unpack(path, upper, meta, row)
                for old, new in renamed.items():
                    self._unpack_volume(path, old, vols.path(new))
            finally:
                self.node.storage.unmount(bundle)
            undo.success()
        self.node.event("instance.restored", row, archive=str(path))
        return {"instance": instance_view(self.node, self.store.get_instance(new_ctid))}

    def _unpack(self, path: Path, upper: Path, meta: dict, row: dict) -> None:
        layer = upper.parent
        scratch = layer / f".restore-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o700)
        try:
            p = subprocess.run(["tar", "--extract", "--file", str(path), "--use-compress-program=zstd -d -q",
                                "--directory", str(scratch), *TAR_OPTS, "upper"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
            if p.returncode != 0 or not (scratch / "upper").is_dir():
                raise InvalidArgument(f"unpacking {path.name} failed: {p.stderr.strip()[-500:]}", archive=str(path))
            old_base = meta["instance"].get("uid_base")
            new = idmap_of(self.node, row)
            if old_base is not None and new is not None:
                layers.shift_owners(scratch / "upper", old_base, meta.get("idmap_size") or new[1], new[0] - old_base)
            old = layer / f".upper-old-{secrets.token_hex(4)}"
            os.rename(upper, old)
            os.rename(scratch / "upper", upper)
            remove_tree(old)
            work = layer / "work"
            for entry in os.listdir(work) if work.is_dir() else []:
                remove_tree(work / entry)
        finally:
            remove_tree(scratch)

    def _unpack_volume(self, path: Path, name: str, dest: Path) -> None:
        scratch = dest.parent / f".restore-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o700)
        try:
            p = subprocess.run(["tar", "--extract", "--file", str(path), "--use-compress-program=zstd -d -q",
                                "--directory", str(scratch), *TAR_OPTS, f"volumes/{name}"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise InvalidArgument(f"unpacking volume {name} from {path.name} failed: {p.stderr.strip()[-300:]}")
            os.rmdir(dest)                    # the empty directory create made
            os.rename(scratch / "volumes" / name, dest)
        finally:
            remove_tree(scratch)

    def _drop_volume(self, name: str) -> None:
        from .volumes import VolumeService
        vols = VolumeService(self.node)
        if not vols.repo.volume_users(name):
            vols.repo.delete_volume(name)
            shutil.rmtree(vols.path(name), ignore_errors=True)

    def _forget(self, ctid: int) -> None:
        self.node.runtime.delete(self.node.cid(ctid), force=True)
        self.node.networks.detach(ctid)
        self.node.storage.destroy(self.node.bundle(ctid))
        self.store.delete_instance(ctid)
        self.node.networks.rebuild()
